-- Scheduling with pg_cron (preloaded in the test instance, cron.database_name =
-- this database): jobs created, a rerun updates them in place, a NULL schedule
-- leaves a job out, dry_run only shows the statements, unschedule removes them.
-- The other-database path (dblink, schedule_in_database) is in test/t/005_sender.pl.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE h text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ': ' || SQLERRM || ' (' || h || ')';
END $$;
CREATE FUNCTION pg_temp.jobs() RETURNS TABLE (jobname name, schedule text, command text, database text, active boolean)
LANGUAGE sql AS $$
    SELECT jobname, schedule, command, database = current_database(), active FROM cron.job
     WHERE jobname LIKE 'loyalty-%' ORDER BY jobname $$;

-- nothing scheduled yet; dry_run shows what would be run and changes nothing
SELECT count(*) AS jobs FROM cron.job;
SELECT job_name, action, statement FROM loyalty.schedule(dry_run => true);
SELECT count(*) AS jobs FROM cron.job;

-- schedule: five jobs, run in this database
SELECT job_name, schedule, command, jobid IS NOT NULL AS has_jobid, action FROM loyalty.schedule();
SELECT * FROM pg_temp.jobs();
CREATE TEMP TABLE first_ids AS SELECT jobname, jobid FROM cron.job;

-- a rerun with other schedules updates the same jobs (same ids, no new job)
SELECT job_name, schedule, action FROM loyalty.schedule(refresh => '*/30 * * * *', expire => '0 4 * * *');
SELECT count(*) AS jobs, bool_and(j.jobid = f.jobid) AS same_ids
  FROM cron.job j JOIN first_ids f USING (jobname);
SELECT jobname, schedule FROM pg_temp.jobs() WHERE jobname IN ('loyalty-refresh', 'loyalty-expire');

-- a NULL schedule leaves a job out (and removes it); a rerun of that is a no-op
SELECT job_name, action FROM loyalty.schedule(tiers => NULL) WHERE job_name = 'loyalty-tiers';
SELECT job_name, action FROM loyalty.schedule(tiers => NULL) WHERE job_name = 'loyalty-tiers';
SELECT jobname FROM pg_temp.jobs();

-- bad input: refused, nothing changed; pg_cron's own check of the expression applies
SELECT pg_temp.err($$SELECT * FROM loyalty.schedule(enqueue => ' ')$$);
SELECT pg_temp.err($$SELECT * FROM loyalty.schedule(enqueue => 'every minute')$$);
SELECT jobname, schedule FROM pg_temp.jobs() WHERE jobname = 'loyalty-enqueue';

-- unschedule: all of loyalty's jobs go, other jobs stay; a rerun finds nothing
SELECT cron.schedule('shop-own-job', '0 0 * * *', 'SELECT 1') > 0 AS other_job;
SELECT job_name, action FROM loyalty.unschedule();
SELECT job_name, action FROM loyalty.unschedule();
SELECT jobname FROM cron.job ORDER BY jobname;
SELECT cron.unschedule('shop-own-job');

-- pg_cron loaded but not created in this database: a clear error
DROP EXTENSION pg_cron;
SELECT pg_temp.err($$SELECT * FROM loyalty.schedule()$$);
SELECT pg_temp.err($$SELECT * FROM loyalty.unschedule()$$);
CREATE EXTENSION pg_cron;

-- only loyalty_admin may schedule
SELECT has_function_privilege('loyalty_admin', 'loyalty.schedule(text, text, text, text, text, text, boolean, text)', 'EXECUTE') AS admin,
       has_function_privilege('loyalty_app', 'loyalty.schedule(text, text, text, text, text, text, boolean, text)', 'EXECUTE') AS app,
       has_function_privilege('loyalty_sender', 'loyalty.unschedule(text, boolean)', 'EXECUTE') AS sender;
