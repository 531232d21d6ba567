-- 41_btyd_models.sql — scoring: MBG/NBD (src/mbgnbd.c) and Pareto/NBD
-- (src/pareto_nbd.c), the same contract as BG/NBD in 40_btyd.sql. Pure math:
-- no table access, no search_path dependence, so no SET clause.
-- The fitting aggregates collect rows with loyalty.bgnbd_fit_trans and
-- aggregate in parallel with loyalty.btyd_fit_combine/_serial/_deserial.

CREATE TYPE loyalty.mbgnbd_fit_result AS (
    r double precision,
    alpha double precision,
    a double precision,
    b double precision,
    loglik double precision,
    converged boolean,
    iterations integer
);
COMMENT ON TYPE loyalty.mbgnbd_fit_result IS
    'MBG/NBD maximum-likelihood fit: parameters r, alpha (purchase rate ~ Gamma(r, alpha)), a, b (dropout at the first and every repeat purchase ~ Beta(a, b)), total log-likelihood, whether the optimiser converged, and its iteration count';

CREATE TYPE loyalty.pareto_nbd_fit_result AS (
    r double precision,
    alpha double precision,
    s double precision,
    beta double precision,
    loglik double precision,
    converged boolean,
    iterations integer
);
COMMENT ON TYPE loyalty.pareto_nbd_fit_result IS
    'Pareto/NBD maximum-likelihood fit: parameters r, alpha (purchase rate ~ Gamma(r, alpha)), s, beta (dropout rate ~ Gamma(s, beta)), total log-likelihood, whether the optimiser converged, and its iteration count';

-- per-customer MBG/NBD functions

CREATE FUNCTION loyalty.mbgnbd_loglik(x integer, t_x double precision, t double precision,
                                      r double precision, alpha double precision,
                                      a double precision, b double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'mbgnbd_loglik'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.mbgnbd_loglik(integer, double precision, double precision, double precision, double precision, double precision, double precision) IS
    'MBG/NBD log-likelihood of one customer with x repeat purchases, last at t_x, observed for t since the first purchase (Batislam, Denizel & Filiztekin 2007)';

CREATE FUNCTION loyalty.mbgnbd_p_alive(x integer, t_x double precision, t double precision,
                                       r double precision, alpha double precision,
                                       a double precision, b double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'mbgnbd_p_alive'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.mbgnbd_p_alive(integer, double precision, double precision, double precision, double precision, double precision, double precision) IS
    'MBG/NBD probability that a customer with history (x, t_x, t) is still active at t; below 1 also for one-time buyers (x = 0)';

CREATE FUNCTION loyalty.mbgnbd_expected(horizon double precision, x integer,
                                        t_x double precision, t double precision,
                                        r double precision, alpha double precision,
                                        a double precision, b double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'mbgnbd_expected'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.mbgnbd_expected(double precision, integer, double precision, double precision, double precision, double precision, double precision, double precision) IS
    'MBG/NBD expected number of purchases in (t, t + horizon] for a customer with history (x, t_x, t) (Batislam, Denizel & Filiztekin 2007)';

-- per-customer Pareto/NBD functions

CREATE FUNCTION loyalty.pareto_nbd_loglik(x integer, t_x double precision, t double precision,
                                          r double precision, alpha double precision,
                                          s double precision, beta double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'pareto_nbd_loglik'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.pareto_nbd_loglik(integer, double precision, double precision, double precision, double precision, double precision, double precision) IS
    'Pareto/NBD log-likelihood of one customer with x repeat purchases, last at t_x, observed for t since the first purchase (Schmittlein, Morrison & Colombo 1987; Fader & Hardie 2005)';

CREATE FUNCTION loyalty.pareto_nbd_p_alive(x integer, t_x double precision, t double precision,
                                           r double precision, alpha double precision,
                                           s double precision, beta double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'pareto_nbd_p_alive'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.pareto_nbd_p_alive(integer, double precision, double precision, double precision, double precision, double precision, double precision) IS
    'Pareto/NBD probability that a customer with history (x, t_x, t) is still active at t';

CREATE FUNCTION loyalty.pareto_nbd_expected(horizon double precision, x integer,
                                            t_x double precision, t double precision,
                                            r double precision, alpha double precision,
                                            s double precision, beta double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'pareto_nbd_expected'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.pareto_nbd_expected(double precision, integer, double precision, double precision, double precision, double precision, double precision, double precision) IS
    'Pareto/NBD expected number of purchases in (t, t + horizon] for a customer with history (x, t_x, t) (Schmittlein, Morrison & Colombo 1987)';

-- fitting aggregates

CREATE FUNCTION loyalty.mbgnbd_fit_final(internal)
RETURNS loyalty.mbgnbd_fit_result
AS 'MODULE_PATHNAME', 'mbgnbd_fit_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.mbgnbd_fit_final(internal) IS
    'final function of loyalty.mbgnbd_fit';

CREATE AGGREGATE loyalty.mbgnbd_fit(x integer, t_x double precision, t double precision) (
    SFUNC = loyalty.bgnbd_fit_trans,
    STYPE = internal,
    FINALFUNC = loyalty.mbgnbd_fit_final,
    COMBINEFUNC = loyalty.btyd_fit_combine,
    SERIALFUNC = loyalty.btyd_fit_serial,
    DESERIALFUNC = loyalty.btyd_fit_deserial,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE loyalty.mbgnbd_fit(integer, double precision, double precision) IS
    'maximum-likelihood MBG/NBD fit over customers (x repeat purchases, last at t_x, observed for t); rows with a NULL are skipped; NULL for no rows';

CREATE FUNCTION loyalty.pareto_nbd_fit_final(internal)
RETURNS loyalty.pareto_nbd_fit_result
AS 'MODULE_PATHNAME', 'pareto_nbd_fit_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.pareto_nbd_fit_final(internal) IS
    'final function of loyalty.pareto_nbd_fit';

CREATE AGGREGATE loyalty.pareto_nbd_fit(x integer, t_x double precision, t double precision) (
    SFUNC = loyalty.bgnbd_fit_trans,
    STYPE = internal,
    FINALFUNC = loyalty.pareto_nbd_fit_final,
    COMBINEFUNC = loyalty.btyd_fit_combine,
    SERIALFUNC = loyalty.btyd_fit_serial,
    DESERIALFUNC = loyalty.btyd_fit_deserial,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE loyalty.pareto_nbd_fit(integer, double precision, double precision) IS
    'maximum-likelihood Pareto/NBD fit over customers (x repeat purchases, last at t_x, observed for t); rows with a NULL are skipped; NULL for no rows';

GRANT USAGE ON TYPE loyalty.mbgnbd_fit_result, loyalty.pareto_nbd_fit_result
    TO loyalty_admin, loyalty_app, loyalty_reader;
GRANT EXECUTE ON FUNCTION
    loyalty.mbgnbd_loglik(integer, double precision, double precision, double precision, double precision, double precision, double precision),
    loyalty.mbgnbd_p_alive(integer, double precision, double precision, double precision, double precision, double precision, double precision),
    loyalty.mbgnbd_expected(double precision, integer, double precision, double precision, double precision, double precision, double precision, double precision),
    loyalty.mbgnbd_fit(integer, double precision, double precision),
    loyalty.mbgnbd_fit_final(internal),
    loyalty.pareto_nbd_loglik(integer, double precision, double precision, double precision, double precision, double precision, double precision),
    loyalty.pareto_nbd_p_alive(integer, double precision, double precision, double precision, double precision, double precision, double precision),
    loyalty.pareto_nbd_expected(double precision, integer, double precision, double precision, double precision, double precision, double precision, double precision),
    loyalty.pareto_nbd_fit(integer, double precision, double precision),
    loyalty.pareto_nbd_fit_final(internal)
    TO loyalty_admin, loyalty_app, loyalty_reader;
