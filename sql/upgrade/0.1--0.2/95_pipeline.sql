-- refresh13 (issue 13: one orchestrator, sql/install/74_pipeline.sql; issue
-- 12: refresh() rescores only what changed). Functions copied from
-- sql/install/ (10_state.sql, 50_models.sql, 74_pipeline.sql) by the same text.

-- 50_models.sql: the basis of the stored scores
-- @table loyalty.score_basis
INSERT INTO loyalty.score_basis DEFAULT VALUES;
REVOKE ALL ON loyalty.score_basis FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.score_basis TO loyalty_admin;

-- (model_fits.inputs_hash: 35_model_fits_inputs_hash.sql, before the views
-- over model_fits are created; _store_scores with its new argument is
-- created by 40_decisions.sql, where it is new)
-- @function loyalty._recompute_state
-- @function loyalty._fit_reused
-- @function loyalty._params_within
-- @function loyalty._record_fit

-- @function loyalty._fit_models
-- @view loyalty.current_fits
-- @function loyalty._recompute_customers

-- new functions: the install's blanket privileges (90_grants.sql), repeated
REVOKE ALL ON FUNCTION loyalty._recompute_state(text[], boolean), loyalty._fit_models(),
                       loyalty._fit_reused(text, bigint), loyalty._params_within(jsonb, jsonb, float8),
                       loyalty._record_fit(text, text, bigint, jsonb, float8, integer, text, bigint),
                       loyalty._store_scores(timestamptz, text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._recompute_state(text[], boolean), loyalty._fit_models(),
                          loyalty._fit_reused(text, bigint), loyalty._params_within(jsonb, jsonb, float8),
                          loyalty._record_fit(text, text, bigint, jsonb, float8, integer, text, bigint),
                          loyalty._store_scores(timestamptz, text[], text[]) TO loyalty_admin;
