-- 30_btyd_parallel.sql — the BTYD fitting aggregates aggregate in parallel
-- (src/btyd_agg.c; sql/install/40_btyd.sql). An aggregate's support functions
-- cannot be altered: bgnbd_fit and gamma_gamma_fit are recreated with the
-- same signature (plpgsql callers are not dependencies), comments and grants.
-- @function loyalty.btyd_fit_combine

-- @function loyalty.btyd_fit_serial

-- @function loyalty.btyd_fit_deserial

DROP AGGREGATE loyalty.bgnbd_fit(integer, double precision, double precision);
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

DROP AGGREGATE loyalty.gamma_gamma_fit(integer, double precision);
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

REVOKE ALL ON FUNCTION
    loyalty.bgnbd_fit(integer, double precision, double precision),
    loyalty.gamma_gamma_fit(integer, double precision),
    loyalty.btyd_fit_combine(internal, internal),
    loyalty.btyd_fit_serial(internal),
    loyalty.btyd_fit_deserial(bytea, internal)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    loyalty.bgnbd_fit(integer, double precision, double precision),
    loyalty.gamma_gamma_fit(integer, double precision),
    loyalty.btyd_fit_combine(internal, internal),
    loyalty.btyd_fit_serial(internal),
    loyalty.btyd_fit_deserial(bytea, internal)
    TO loyalty_admin, loyalty_app, loyalty_reader;
