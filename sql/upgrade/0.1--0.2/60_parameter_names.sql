-- Public functions take the argument names a caller writes (issue 13):
-- validate_models(holdout_days), worker_tick(refresh_interval, budget_ms),
-- no longer p_holdout_days, p_refresh_interval, p_budget_ms. A parameter
-- cannot be renamed in place: drop, create again (same text as
-- sql/install/50_models.sql and 60_refresh.sql), then the comments and the
-- grants of sql/install/90_grants.sql. validate_models now returns its own
-- row type (a column may not share a parameter's name), so its view is
-- dropped and created again too, with the same columns.
DROP VIEW loyalty.model_validation;
DROP FUNCTION loyalty.validate_models(integer);
-- @type loyalty.holdout_check
-- @function loyalty.validate_models
-- @view loyalty.model_validation
REVOKE ALL ON FUNCTION loyalty.validate_models(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty.validate_models(integer) TO loyalty_admin, loyalty_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.model_validation TO loyalty_admin;
GRANT SELECT ON loyalty.model_validation TO loyalty_reader;

DROP FUNCTION loyalty.worker_tick(integer, integer);
-- @function loyalty.worker_tick
REVOKE ALL ON FUNCTION loyalty.worker_tick(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty.worker_tick(integer, integer) TO loyalty_admin;
