-- 0.1 -> 0.2: a refit to the same rows reuses the fit's result
-- (sql/install/50_models.sql). The column comes before the fragments that
-- create views over model_fits (40_decisions.sql), so they see it.
ALTER TABLE loyalty.model_fits ADD COLUMN inputs_hash bigint;
COMMENT ON COLUMN loyalty.model_fits.inputs_hash IS 'fingerprint of the model inputs fitted (x, t_x, t, repeat_value; t moves with the UTC day), taken when MBG/NBD or Pareto/NBD is enabled: their refit the same day to the same inputs reuses this fit''s result';
-- a refit within model_settings.refit_tolerance of the fit in force confirms it
ALTER TABLE loyalty.model_fits DROP CONSTRAINT model_fits_status_check;
ALTER TABLE loyalty.model_fits ADD CONSTRAINT model_fits_status_check
    CHECK (status IN ('fitted', 'confirmed', 'not_converged', 'too_little_data'));
COMMENT ON COLUMN loyalty.model_fits.status IS 'fitted (in force until a later fitted row), confirmed (a refit the same UTC day within model_settings.refit_tolerance of the fit in force, which stays), not_converged, too_little_data';
COMMENT ON TABLE loyalty.model_fits IS 'Every model fit with its diagnostics; scores use the newest fitted row per model (the fit in force)';
