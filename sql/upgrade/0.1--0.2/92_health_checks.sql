-- 0.1 -> 0.2, issue 15 (health15): what schedule() installed is recorded in
-- loyalty.scheduled_jobs (the check jobs_edited compares cron.job with it),
-- and loyalty._cron_query reads pg_cron's tables in another database through
-- dblink for the job checks. The same definitions as
-- sql/install/75_schedule.sql; the checks themselves come with
-- 50_health.sql (a link to sql/install/85_health.sql).
-- @table loyalty.scheduled_jobs
SELECT pg_catalog.pg_extension_config_dump('loyalty.scheduled_jobs', '');
REVOKE ALL ON TABLE loyalty.scheduled_jobs FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE loyalty.scheduled_jobs TO loyalty_admin;
-- @function loyalty._cron_query
REVOKE ALL ON FUNCTION loyalty._cron_query(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._cron_query(text, text) TO loyalty_admin;
