-- 30_btyd_parallel.sql — the BTYD fitting aggregates aggregate in parallel
-- (src/btyd_agg.c; sql/install/40_btyd.sql). An aggregate's support functions
-- cannot be altered: bgnbd_fit and gamma_gamma_fit are recreated with the
-- same signature (plpgsql callers are not dependencies), comments and grants.
-- @function loyalty.btyd_fit_combine

-- @function loyalty.btyd_fit_serial

-- @function loyalty.btyd_fit_deserial

-- (and the warm-started overloads, new in 0.2, with their transition functions)
-- @function loyalty.bgnbd_fit_start_trans

-- @function loyalty.gamma_gamma_fit_start_trans

DROP AGGREGATE loyalty.bgnbd_fit(integer, double precision, double precision);
-- @aggregate loyalty.bgnbd_fit

DROP AGGREGATE loyalty.gamma_gamma_fit(integer, double precision);
-- @aggregate loyalty.gamma_gamma_fit

REVOKE ALL ON FUNCTION
    loyalty.bgnbd_fit(integer, double precision, double precision),
    loyalty.gamma_gamma_fit(integer, double precision),
    loyalty.bgnbd_fit(integer, double precision, double precision, double precision[]),
    loyalty.gamma_gamma_fit(integer, double precision, double precision[]),
    loyalty.bgnbd_fit_start_trans(internal, integer, double precision, double precision, double precision[]),
    loyalty.gamma_gamma_fit_start_trans(internal, integer, double precision, double precision[]),
    loyalty.btyd_fit_combine(internal, internal),
    loyalty.btyd_fit_serial(internal),
    loyalty.btyd_fit_deserial(bytea, internal)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    loyalty.bgnbd_fit(integer, double precision, double precision),
    loyalty.gamma_gamma_fit(integer, double precision),
    loyalty.bgnbd_fit(integer, double precision, double precision, double precision[]),
    loyalty.gamma_gamma_fit(integer, double precision, double precision[]),
    loyalty.bgnbd_fit_start_trans(internal, integer, double precision, double precision, double precision[]),
    loyalty.gamma_gamma_fit_start_trans(internal, integer, double precision, double precision[]),
    loyalty.btyd_fit_combine(internal, internal),
    loyalty.btyd_fit_serial(internal),
    loyalty.btyd_fit_deserial(bytea, internal)
    TO loyalty_admin, loyalty_app, loyalty_reader;
