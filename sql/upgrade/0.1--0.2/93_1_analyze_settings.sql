-- Issue 12: the small settings tables are analysed after every change
-- (configure_* or the shop's own edits), not only at install (89_analyze.sql).
-- @function loyalty._analyze_settings
REVOKE ALL ON FUNCTION loyalty._analyze_settings() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._analyze_settings() TO loyalty_admin;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['rfm_config', 'segment_rules', 'model_settings', 'rewards_settings', 'tiers', 'earn_rules',
                             'outbox_settings', 'journey_settings', 'journey_report_settings', 'campaigns',
                             'operations_settings', 'recovery_rules', 'privacy_settings', 'health_settings']
    LOOP
        EXECUTE format('CREATE TRIGGER analyze_settings AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.%I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION loyalty._analyze_settings()', t);
    END LOOP;
END
$$;
