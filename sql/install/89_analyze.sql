-- Statistics for the small settings tables: unanalysed, the planner takes
-- each for hundreds of rows, and a view over a few of them crosses the JIT
-- threshold on a tiny shop (hundreds of milliseconds compiling a plan that
-- runs in one). Analysed once, their estimates follow their size.
ANALYZE loyalty.rfm_config, loyalty.segment_rules, loyalty.model_settings, loyalty.model_fits, loyalty.model_choice,
        loyalty.rewards_settings, loyalty.tiers, loyalty.earn_rules, loyalty.outbox_settings, loyalty.journey_settings,
        loyalty.journey_report_settings, loyalty.campaigns, loyalty.journey_runs;

-- ... and analysed again after every change: a configure_* call or the shop's
-- own edit of a rules table (tiers, campaigns, ...). A statement trigger runs
-- ANALYZE on the changed table (a few rows: well under a millisecond). It
-- runs with the extension owner's rights (ANALYZE needs the owner); it names
-- only the table it fires on. ANALYZE takes a SHARE UPDATE EXCLUSIVE lock:
-- two transactions changing the same settings table take turns, which
-- settings changes can afford.
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
