-- 40_btyd.sql — scoring: BG/NBD and Gamma-Gamma models (src/btyd.c).
-- Pure math: no table access, no search_path dependence, so no SET clause
-- (it would also defeat per-row speed); EXECUTE stays with the roles.

CREATE TYPE loyalty.bgnbd_fit_result AS (
    r double precision,
    alpha double precision,
    a double precision,
    b double precision,
    loglik double precision,
    converged boolean,
    iterations integer
);
COMMENT ON TYPE loyalty.bgnbd_fit_result IS
    'BG/NBD maximum-likelihood fit: parameters r, alpha (purchase rate ~ Gamma(r, alpha)), a, b (dropout ~ Beta(a, b)), total log-likelihood, whether the optimiser converged, and its iteration count';

CREATE TYPE loyalty.gamma_gamma_fit_result AS (
    p double precision,
    q double precision,
    gamma double precision,
    loglik double precision,
    converged boolean,
    iterations integer
);
COMMENT ON TYPE loyalty.gamma_gamma_fit_result IS
    'Gamma-Gamma maximum-likelihood fit: parameters p, q, gamma, total log-likelihood, whether the optimiser converged, and its iteration count';

-- per-customer BG/NBD functions

CREATE FUNCTION loyalty.bgnbd_loglik(x integer, t_x double precision, t double precision,
                                     r double precision, alpha double precision,
                                     a double precision, b double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'bgnbd_loglik'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.bgnbd_loglik(integer, double precision, double precision, double precision, double precision, double precision, double precision) IS
    'BG/NBD log-likelihood of one customer with x repeat purchases, last at t_x, observed for t since the first purchase (Fader, Hardie & Lee 2005, eq. 6)';

CREATE FUNCTION loyalty.bgnbd_p_alive(x integer, t_x double precision, t double precision,
                                      r double precision, alpha double precision,
                                      a double precision, b double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'bgnbd_p_alive'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.bgnbd_p_alive(integer, double precision, double precision, double precision, double precision, double precision, double precision) IS
    'BG/NBD probability that a customer with history (x, t_x, t) is still active at t';

CREATE FUNCTION loyalty.bgnbd_expected(horizon double precision, x integer,
                                       t_x double precision, t double precision,
                                       r double precision, alpha double precision,
                                       a double precision, b double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'bgnbd_expected'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.bgnbd_expected(double precision, integer, double precision, double precision, double precision, double precision, double precision, double precision) IS
    'BG/NBD expected number of purchases in (t, t + horizon] for a customer with history (x, t_x, t) (Fader, Hardie & Lee 2005, eq. 10)';

CREATE FUNCTION loyalty.bgnbd_expected_new(horizon double precision,
                                           r double precision, alpha double precision,
                                           a double precision, b double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'bgnbd_expected_new'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.bgnbd_expected_new(double precision, double precision, double precision, double precision, double precision) IS
    'BG/NBD expected number of repeat purchases in the first horizon after a customer''s first purchase (Fader, Hardie & Lee 2005, eq. 9)';

-- parallel aggregation (src/btyd_agg.c): workers collect and sort their rows,
-- the leader merges them; shared by every BTYD fitting aggregate

CREATE FUNCTION loyalty.btyd_fit_combine(internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'btyd_fit_combine'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.btyd_fit_combine(internal, internal) IS
    'combine function of the BTYD fitting aggregates: merges the collected rows of two partial states';

CREATE FUNCTION loyalty.btyd_fit_serial(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'btyd_fit_serial'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.btyd_fit_serial(internal) IS
    'serialisation function of the BTYD fitting aggregates: a partial state''s rows, sorted';

CREATE FUNCTION loyalty.btyd_fit_deserial(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'btyd_fit_deserial'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.btyd_fit_deserial(bytea, internal) IS
    'deserialisation function of the BTYD fitting aggregates';

-- BG/NBD fitting aggregate

CREATE FUNCTION loyalty.bgnbd_fit_trans(internal, integer, double precision, double precision)
RETURNS internal
AS 'MODULE_PATHNAME', 'bgnbd_fit_trans'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.bgnbd_fit_trans(internal, integer, double precision, double precision) IS
    'transition function of loyalty.bgnbd_fit';

CREATE FUNCTION loyalty.bgnbd_fit_final(internal)
RETURNS loyalty.bgnbd_fit_result
AS 'MODULE_PATHNAME', 'bgnbd_fit_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.bgnbd_fit_final(internal) IS
    'final function of loyalty.bgnbd_fit';

CREATE AGGREGATE loyalty.bgnbd_fit(x integer, t_x double precision, t double precision) (
    SFUNC = loyalty.bgnbd_fit_trans,
    STYPE = internal,
    FINALFUNC = loyalty.bgnbd_fit_final,
    COMBINEFUNC = loyalty.btyd_fit_combine,
    SERIALFUNC = loyalty.btyd_fit_serial,
    DESERIALFUNC = loyalty.btyd_fit_deserial,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE loyalty.bgnbd_fit(integer, double precision, double precision) IS
    'maximum-likelihood BG/NBD fit over customers (x repeat purchases, last at t_x, observed for t); rows with a NULL are skipped; NULL for no rows';

-- The same fit, started at the parameters of an earlier fit (r, alpha, a, b):
-- a refit after a few new rows takes a few passes instead of twenty.
CREATE FUNCTION loyalty.bgnbd_fit_start_trans(internal, integer, double precision, double precision, double precision[])
RETURNS internal
AS 'MODULE_PATHNAME', 'bgnbd_fit_start_trans'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.bgnbd_fit_start_trans(internal, integer, double precision, double precision, double precision[]) IS
    'transition function of loyalty.bgnbd_fit with a warm start';

CREATE AGGREGATE loyalty.bgnbd_fit(x integer, t_x double precision, t double precision, start double precision[]) (
    SFUNC = loyalty.bgnbd_fit_start_trans,
    STYPE = internal,
    FINALFUNC = loyalty.bgnbd_fit_final,
    COMBINEFUNC = loyalty.btyd_fit_combine,
    SERIALFUNC = loyalty.btyd_fit_serial,
    DESERIALFUNC = loyalty.btyd_fit_deserial,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE loyalty.bgnbd_fit(integer, double precision, double precision, double precision[]) IS
    'BG/NBD fit as bgnbd_fit(x, t_x, t), the optimiser started at start = {r, alpha, a, b} (an earlier fit; NULL: the usual start)';

-- Gamma-Gamma functions

CREATE FUNCTION loyalty.gamma_gamma_loglik(x integer, mean_value double precision,
                                           p double precision, q double precision,
                                           gamma double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'gamma_gamma_loglik'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.gamma_gamma_loglik(integer, double precision, double precision, double precision, double precision) IS
    'Gamma-Gamma log-likelihood of a repeat buyer''s mean transaction value over x transactions (Fader & Hardie 2013)';

CREATE FUNCTION loyalty.gamma_gamma_mean(x integer, mean_value double precision,
                                         p double precision, q double precision,
                                         gamma double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'gamma_gamma_mean'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.gamma_gamma_mean(integer, double precision, double precision, double precision, double precision) IS
    'Gamma-Gamma expected spend per transaction of a customer with x repeat transactions averaging mean_value; x = 0 gives the population mean (Fader & Hardie 2013)';

CREATE FUNCTION loyalty.gamma_gamma_fit_trans(internal, integer, double precision)
RETURNS internal
AS 'MODULE_PATHNAME', 'gamma_gamma_fit_trans'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.gamma_gamma_fit_trans(internal, integer, double precision) IS
    'transition function of loyalty.gamma_gamma_fit';

CREATE FUNCTION loyalty.gamma_gamma_fit_final(internal)
RETURNS loyalty.gamma_gamma_fit_result
AS 'MODULE_PATHNAME', 'gamma_gamma_fit_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.gamma_gamma_fit_final(internal) IS
    'final function of loyalty.gamma_gamma_fit';

CREATE AGGREGATE loyalty.gamma_gamma_fit(x integer, mean_value double precision) (
    SFUNC = loyalty.gamma_gamma_fit_trans,
    STYPE = internal,
    FINALFUNC = loyalty.gamma_gamma_fit_final,
    COMBINEFUNC = loyalty.btyd_fit_combine,
    SERIALFUNC = loyalty.btyd_fit_serial,
    DESERIALFUNC = loyalty.btyd_fit_deserial,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE loyalty.gamma_gamma_fit(integer, double precision) IS
    'maximum-likelihood Gamma-Gamma fit of spend per transaction over repeat buyers (x > 0, mean_value > 0); rows with x = 0 or a NULL are skipped; NULL for no rows';

CREATE FUNCTION loyalty.gamma_gamma_fit_start_trans(internal, integer, double precision, double precision[])
RETURNS internal
AS 'MODULE_PATHNAME', 'gamma_gamma_fit_start_trans'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.gamma_gamma_fit_start_trans(internal, integer, double precision, double precision[]) IS
    'transition function of loyalty.gamma_gamma_fit with a warm start';

CREATE AGGREGATE loyalty.gamma_gamma_fit(x integer, mean_value double precision, start double precision[]) (
    SFUNC = loyalty.gamma_gamma_fit_start_trans,
    STYPE = internal,
    FINALFUNC = loyalty.gamma_gamma_fit_final,
    COMBINEFUNC = loyalty.btyd_fit_combine,
    SERIALFUNC = loyalty.btyd_fit_serial,
    DESERIALFUNC = loyalty.btyd_fit_deserial,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE loyalty.gamma_gamma_fit(integer, double precision, double precision[]) IS
    'Gamma-Gamma fit as gamma_gamma_fit(x, mean_value), the optimiser started at start = {p, q, gamma} (an earlier fit; NULL: the usual start)';

GRANT USAGE ON TYPE loyalty.bgnbd_fit_result, loyalty.gamma_gamma_fit_result
    TO loyalty_admin, loyalty_app, loyalty_reader;
GRANT EXECUTE ON FUNCTION
    loyalty.bgnbd_loglik(integer, double precision, double precision, double precision, double precision, double precision, double precision),
    loyalty.bgnbd_p_alive(integer, double precision, double precision, double precision, double precision, double precision, double precision),
    loyalty.bgnbd_expected(double precision, integer, double precision, double precision, double precision, double precision, double precision, double precision),
    loyalty.bgnbd_expected_new(double precision, double precision, double precision, double precision, double precision),
    loyalty.bgnbd_fit(integer, double precision, double precision),
    loyalty.bgnbd_fit_trans(internal, integer, double precision, double precision),
    loyalty.bgnbd_fit(integer, double precision, double precision, double precision[]),
    loyalty.bgnbd_fit_start_trans(internal, integer, double precision, double precision, double precision[]),
    loyalty.bgnbd_fit_final(internal),
    loyalty.gamma_gamma_loglik(integer, double precision, double precision, double precision, double precision),
    loyalty.gamma_gamma_mean(integer, double precision, double precision, double precision, double precision),
    loyalty.gamma_gamma_fit(integer, double precision),
    loyalty.gamma_gamma_fit_trans(internal, integer, double precision),
    loyalty.gamma_gamma_fit(integer, double precision, double precision[]),
    loyalty.gamma_gamma_fit_start_trans(internal, integer, double precision, double precision[]),
    loyalty.gamma_gamma_fit_final(internal),
    loyalty.btyd_fit_combine(internal, internal),
    loyalty.btyd_fit_serial(internal),
    loyalty.btyd_fit_deserial(bytea, internal)
    TO loyalty_admin, loyalty_app, loyalty_reader;
