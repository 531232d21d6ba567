-- Issue 12: the small settings tables are analysed after every change
-- (configure_* or the shop's own edits), not only at install (89_analyze.sql).
CREATE FUNCTION loyalty._analyze_settings()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- only loyalty's own tables (attached elsewhere by an admin, it does nothing)
    IF TG_TABLE_SCHEMA OPERATOR(pg_catalog.=) 'loyalty' THEN
        EXECUTE format('ANALYZE %I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION loyalty._analyze_settings() IS
'Statement trigger on the small settings tables: analyse the table after a change, so its statistics follow its size';
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
