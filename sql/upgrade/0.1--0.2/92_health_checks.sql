-- 0.1 -> 0.2, issue 15 (health15): what schedule() installed is recorded in
-- loyalty.scheduled_jobs (the check jobs_edited compares cron.job with it),
-- and loyalty._cron_query reads pg_cron's tables in another database through
-- dblink for the job checks. The same definitions as
-- sql/install/75_schedule.sql; the checks themselves come with
-- 50_health.sql (a link to sql/install/85_health.sql).

CREATE TABLE loyalty.scheduled_jobs (
    job_name     text PRIMARY KEY,
    schedule     text NOT NULL,
    command      text NOT NULL,
    scheduled_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE loyalty.scheduled_jobs IS 'The pg_cron jobs loyalty.schedule() last installed, with their schedule and command (the health check jobs_edited compares cron.job with them)';
SELECT pg_catalog.pg_extension_config_dump('loyalty.scheduled_jobs', '');
REVOKE ALL ON TABLE loyalty.scheduled_jobs FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE loyalty.scheduled_jobs TO loyalty_admin;

CREATE FUNCTION loyalty._cron_query(stmt text, cron_db text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dblink_schema name;
    conn text;
    sockdir text;
    result text;
BEGIN
    SELECT n.nspname INTO dblink_schema
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
     WHERE e.extname OPERATOR(pg_catalog.=) 'dblink';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    sockdir := pg_catalog.btrim(pg_catalog.split_part(pg_catalog.current_setting('unix_socket_directories'), ',', 1));
    conn := pg_catalog.format('dbname=%s port=%s host=%s user=%s',
                              loyalty._conninfo_quote(cron_db), pg_catalog.current_setting('port'),
                              loyalty._conninfo_quote(CASE WHEN sockdir OPERATOR(pg_catalog.=) '' THEN 'localhost' ELSE sockdir END),
                              loyalty._conninfo_quote(current_user));
    EXECUTE pg_catalog.format('SELECT r.v FROM %I.dblink($1, $2) AS r(v text)', dblink_schema)
       INTO result USING conn, stmt;
    RETURN result;
END
$$;
REVOKE ALL ON FUNCTION loyalty._cron_query(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._cron_query(text, text) TO loyalty_admin;

CREATE OR REPLACE FUNCTION loyalty.schedule(
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
                DELETE FROM loyalty.scheduled_jobs sj WHERE sj.job_name OPERATOR(pg_catalog.=) schedule.job_name;
            ELSE
                action := 'scheduled';
                INSERT INTO loyalty.scheduled_jobs AS sj (job_name, schedule, command)
                VALUES (schedule.job_name, j.schedule, j.command)
                ON CONFLICT ON CONSTRAINT scheduled_jobs_pkey DO UPDATE
                   SET schedule = EXCLUDED.schedule, command = EXCLUDED.command, scheduled_at = pg_catalog.now();
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
