-- 0.1 -> 0.2: a refit to the same rows reuses the fit's result
-- (sql/install/50_models.sql). The column comes before the fragments that
-- create views over model_fits (40_decisions.sql), so they see it.
ALTER TABLE loyalty.model_fits ADD COLUMN inputs_hash bigint;
COMMENT ON COLUMN loyalty.model_fits.inputs_hash IS 'fingerprint of the customer state fitted (loyalty._fit_inputs_hash): a refit the same UTC day to the same state reuses this fit''s result';
