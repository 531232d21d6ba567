-- The small settings tables keep statistics that follow their size (issue
-- 12: unanalysed, a view over them was planned for hundreds of rows and
-- JIT-compiled on a tiny shop). Analysed at install (89_analyze.sql), and
-- again after every change: a configure_* call or the shop's own edit.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;

-- every settings table has statistics after install: reltuples is its row count
SELECT c.relname, c.reltuples >= 0 AS analysed
  FROM pg_class c
 WHERE c.oid IN ('loyalty.rfm_config'::regclass, 'loyalty.segment_rules'::regclass, 'loyalty.model_settings'::regclass,
                 'loyalty.tiers'::regclass, 'loyalty.earn_rules'::regclass, 'loyalty.campaigns'::regclass)
 ORDER BY 1;

CREATE FUNCTION pg_temp.stats(t regclass) RETURNS TABLE (analyses bigint, reltuples real, rows bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_stat_clear_snapshot();
    RETURN QUERY EXECUTE format('SELECT (SELECT analyze_count FROM pg_stat_user_tables WHERE relid = %L::regclass),
                                        (SELECT c.reltuples FROM pg_class c WHERE c.oid = %L::regclass), count(*) FROM %s',
                                t, t, t);
END $$;

-- the shop adds tiers: the planner knows there are three, not none
SELECT analyses AS before FROM pg_temp.stats('loyalty.tiers') \gset
INSERT INTO loyalty.tiers (tier, min_spend) VALUES ('Silver', 100), ('Gold', 500), ('Platinum', 2000);
SELECT analyses - :before AS new_analyses, reltuples, rows FROM pg_temp.stats('loyalty.tiers');
DELETE FROM loyalty.tiers WHERE tier = 'Platinum';
SELECT reltuples, rows FROM pg_temp.stats('loyalty.tiers');

-- campaigns, and a settings table changed by its configure_* function
SELECT analyses AS before FROM pg_temp.stats('loyalty.campaigns') \gset
UPDATE loyalty.campaigns SET priority = priority + 1 WHERE kind = 'welcome';
SELECT analyses - :before AS new_analyses, reltuples = rows AS follows_rows FROM pg_temp.stats('loyalty.campaigns');
SELECT analyses AS before FROM pg_temp.stats('loyalty.model_settings') \gset
SELECT horizon_days FROM loyalty.configure_models(horizon_days => 180);
SELECT analyses - :before AS new_analyses FROM pg_temp.stats('loyalty.model_settings');
SELECT analyses AS before FROM pg_temp.stats('loyalty.rfm_config') \gset
SELECT loyalty.configure_rfm(bins => 5);
SELECT analyses - :before AS new_analyses FROM pg_temp.stats('loyalty.rfm_config');
SELECT analyses AS before FROM pg_temp.stats('loyalty.journey_settings') \gset
SELECT cap_messages FROM loyalty.configure_journeys(cap_messages => 3);
SELECT analyses - :before AS new_analyses FROM pg_temp.stats('loyalty.journey_settings');

-- an edit by loyalty_admin (not the owner): analysed all the same, as the owner
SELECT analyses AS before FROM pg_temp.stats('loyalty.segment_rules') \gset
SET ROLE loyalty_admin;
UPDATE loyalty.segment_rules SET segment = segment;
RESET ROLE;
SELECT analyses - :before AS new_analyses FROM pg_temp.stats('loyalty.segment_rules');

-- every settings table carries the trigger
SELECT count(*) AS tables_with_trigger FROM pg_trigger WHERE tgname = 'analyze_settings';
-- attached to a table outside loyalty, it analyses nothing (it runs as the owner)
CREATE TABLE sa_elsewhere (v int);
CREATE TRIGGER analyze_settings AFTER INSERT ON sa_elsewhere FOR EACH STATEMENT EXECUTE FUNCTION loyalty._analyze_settings();
INSERT INTO sa_elsewhere VALUES (1), (2);
SELECT analyses AS elsewhere_analyses, reltuples FROM pg_temp.stats('sa_elsewhere');
DROP TABLE sa_elsewhere;
