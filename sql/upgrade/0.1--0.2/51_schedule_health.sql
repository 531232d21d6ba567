-- 0.1 -> 0.2: schedule() with every job of 0.2 (operations, issue 14; the
-- health check and the purge of loyalty's own history, issue 15; the refresh
-- job shares the full refresh with the worker through worker_tick). The same
-- definitions as sql/install/75_schedule.sql.
DROP FUNCTION loyalty.unschedule(text, boolean);
DROP FUNCTION loyalty.schedule(text, text, text, text, text, text, boolean);
DROP FUNCTION loyalty._cron_jobs(text, text, text, text, text);

-- The jobs: name, schedule (NULL: not wanted), command. The refresh job and
-- the worker share the work through worker_tick's staleness test: whichever
-- comes first after refresh_interval does the full refresh, the other only
-- applies changes. check_health runs from the worker and from the health job
-- on purpose (each watches the other; an advisory lock serialises them).
CREATE FUNCTION loyalty._cron_jobs(enqueue text, notify text, expire text, tiers text, refresh text,
                                   operations text, health text, purge text)
RETURNS TABLE (job text, schedule text, command text)
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('loyalty-enqueue', enqueue, 'SELECT loyalty.enqueue_due()'),
           ('loyalty-notify',  notify,  'SELECT loyalty.notify_due()'),
           ('loyalty-expire',  expire,  'SELECT loyalty.expire_points()'),
           ('loyalty-tiers',   tiers,   'SELECT loyalty.recompute_tiers()'),
           ('loyalty-refresh', refresh, 'SELECT loyalty.worker_tick(3000)'),
           ('loyalty-operations', operations, 'SELECT loyalty.scan_operations()'),
           ('loyalty-health',  health,  'SELECT pg_catalog.count(*) FROM loyalty.check_health()'),
           ('loyalty-purge',   purge,   'SELECT loyalty.purge_history()')
$$;

CREATE FUNCTION loyalty.schedule(
    enqueue text DEFAULT '* * * * *',
    notify  text DEFAULT '* * * * *',
    expire  text DEFAULT '15 3 * * *',
    tiers   text DEFAULT '30 3 * * *',
    refresh text DEFAULT '5 * * * *',
    cron_connection text DEFAULT NULL,
    dry_run boolean DEFAULT false,
    operations text DEFAULT '*/5 * * * *',
    health  text DEFAULT '*/5 * * * *',
    purge   text DEFAULT '40 4 * * *')
RETURNS TABLE (job_name text, schedule text, command text, jobid bigint, action text, statement text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    cron_db text := loyalty._cron_database();
    here text := pg_catalog.current_database();
    in_cron_db boolean := cron_db OPERATOR(pg_catalog.=) here;
    j record;
BEGIN
    FOR j IN SELECT * FROM loyalty._cron_jobs(enqueue, notify, expire, tiers, refresh, operations, health, purge) LOOP
        IF j.schedule IS NOT NULL AND pg_catalog.btrim(j.schedule) OPERATOR(pg_catalog.=) '' THEN
            RAISE EXCEPTION 'the schedule of % must not be empty', j.job
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Pass a cron expression such as ''* * * * *'', or NULL to leave that job out (and remove it).';
        END IF;
        job_name := CASE WHEN in_cron_db THEN j.job ELSE j.job OPERATOR(pg_catalog.||) '@' OPERATOR(pg_catalog.||) here END;
        schedule := j.schedule;
        command := j.command;
        IF j.schedule IS NOT NULL THEN
            statement := CASE WHEN in_cron_db
                              THEN pg_catalog.format('SELECT cron.schedule(%L, %L, %L)', job_name, j.schedule, j.command)
                              ELSE pg_catalog.format('SELECT cron.schedule_in_database(%L, %L, %L, %L)', job_name, j.schedule, j.command, here) END;
            action := 'schedule';
        ELSE
            statement := pg_catalog.format('SELECT count(cron.unschedule(jobid)) FROM cron.job WHERE jobname = %L AND username = current_user', job_name);
            action := 'unschedule';
        END IF;
        jobid := NULL;
        IF NOT dry_run THEN
            jobid := loyalty._cron_exec(statement, in_cron_db, cron_db, cron_connection);
            IF j.schedule IS NULL THEN
                -- the statement counts the jobs it removed; there is no job id any more
                action := CASE WHEN jobid OPERATOR(pg_catalog.>) 0 THEN 'unscheduled' ELSE 'absent' END;
                jobid := NULL;
            ELSE
                action := 'scheduled';
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION loyalty.schedule(text, text, text, text, text, text, boolean, text, text, text) IS
'Install or update the pg_cron jobs (enqueue, notify, expire, tiers, refresh, operations, health, purge; a NULL schedule leaves a job out), in this database or in pg_cron''s through dblink; dry_run => true only returns the statements';

CREATE FUNCTION loyalty.unschedule(cron_connection text DEFAULT NULL, dry_run boolean DEFAULT false)
RETURNS TABLE (job_name text, action text, statement text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    RETURN QUERY
    SELECT s.job_name, CASE s.action WHEN 'unschedule' THEN 'planned' ELSE s.action END, s.statement
      FROM loyalty.schedule(NULL, NULL, NULL, NULL, NULL, cron_connection, dry_run, NULL, NULL, NULL) s;
END
$$;
COMMENT ON FUNCTION loyalty.unschedule(text, boolean) IS
'Remove loyalty''s pg_cron jobs (those of this database); dry_run => true only returns the statements';

REVOKE ALL ON FUNCTION loyalty._cron_jobs(text, text, text, text, text, text, text, text),
                       loyalty.schedule(text, text, text, text, text, text, boolean, text, text, text),
                       loyalty.unschedule(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._cron_jobs(text, text, text, text, text, text, text, text),
                          loyalty.schedule(text, text, text, text, text, text, boolean, text, text, text),
                          loyalty.unschedule(text, boolean) TO loyalty_admin;
