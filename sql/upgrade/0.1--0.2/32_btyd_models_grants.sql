-- MBG/NBD and Pareto/NBD (31_btyd_models.sql links sql/install/41_btyd_models.sql):
-- the install's blanket REVOKE (90_grants.sql), repeated for the new functions.
REVOKE ALL ON FUNCTION
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
    FROM PUBLIC;
