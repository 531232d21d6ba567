-- Scheduling: loyalty.schedule() installs (or updates) the pg_cron jobs that keep
-- loyalty running, loyalty.unschedule() removes them. pg_cron stays optional:
-- nothing here is needed to install or use loyalty.
--
-- pg_cron keeps its jobs in the one database named by cron.database_name and
-- runs each job in the database stored with it. When that is this database,
-- the jobs are made with cron.schedule (an upsert by job name and user, so a
-- rerun updates them in place). When it is another database, the jobs are
-- made there with cron.schedule_in_database(..., this database), through a
-- dblink connection if dblink is installed here; otherwise dry_run => true
-- returns the statements to run there by hand. Jobs made from another
-- database are named 'loyalty-<job>@<database>', so several shop databases
-- can share one pg_cron database.

-- cron.database_name, which pg_cron lets only superusers read: as the
-- extension's owner, so that a non-superuser loyalty_admin can schedule
CREATE FUNCTION loyalty._cron_database_name()
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.current_setting('cron.database_name', true)
$$;

-- pg_cron's database, or an error saying how to get pg_cron
CREATE FUNCTION loyalty._cron_database()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    db text := loyalty._cron_database_name();
BEGIN
    IF db IS NULL OR db OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'pg_cron is not installed'
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Install postgresql-15-cron, add pg_cron to shared_preload_libraries, set cron.database_name, restart, and run CREATE EXTENSION pg_cron in that database. Without pg_cron, call the jobs'' functions yourself.';
    END IF;
    IF db OPERATOR(pg_catalog.=) pg_catalog.current_database()
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is loaded but not installed in this database'
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Run CREATE EXTENSION pg_cron; in this database (cron.database_name).';
    END IF;
    RETURN db;
END
$$;

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

-- What schedule() last installed, per job (its name in cron.job), so that the
-- watchdog can tell a job edited by hand (schedule or command changed in
-- cron.job) from one that schedule() made.
CREATE TABLE loyalty.scheduled_jobs (
    job_name     text PRIMARY KEY,
    schedule     text NOT NULL,
    command      text NOT NULL,
    scheduled_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE loyalty.scheduled_jobs IS 'The pg_cron jobs loyalty.schedule() last installed, with their schedule and command (the health check jobs_edited compares cron.job with them)';
SELECT pg_catalog.pg_extension_config_dump('loyalty.scheduled_jobs', '');

-- Run one statement returning a bigint in pg_cron's database: here, or through dblink.
CREATE FUNCTION loyalty._cron_exec(stmt text, in_cron_db boolean, cron_db text, cron_connection text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dblink_schema name;
    conn text := cron_connection;
    sockdir text;
    result bigint;
BEGIN
    IF in_cron_db THEN
        EXECUTE stmt INTO result;
        RETURN result;
    END IF;
    SELECT n.nspname INTO dblink_schema
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
     WHERE e.extname OPERATOR(pg_catalog.=) 'dblink';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pg_cron lives in database "%", and dblink is not installed here to reach it', cron_db
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = pg_catalog.format('Run CREATE EXTENSION dblink; here, or run the statements of SELECT statement FROM loyalty.schedule(dry_run => true) in database %s.', cron_db);
    END IF;
    IF conn IS NULL THEN
        -- this server, as the current user: the first socket directory, else TCP on localhost
        sockdir := pg_catalog.btrim(pg_catalog.split_part(pg_catalog.current_setting('unix_socket_directories'), ',', 1));
        conn := pg_catalog.format('dbname=%s port=%s host=%s user=%s',
                                  loyalty._conninfo_quote(cron_db), pg_catalog.current_setting('port'),
                                  loyalty._conninfo_quote(CASE WHEN sockdir OPERATOR(pg_catalog.=) '' THEN 'localhost' ELSE sockdir END),
                                  loyalty._conninfo_quote(current_user));
    END IF;
    EXECUTE pg_catalog.format('SELECT r.v FROM %I.dblink($1, $2) AS r(v bigint)', dblink_schema)
       INTO result USING conn, stmt;
    RETURN result;
END
$$;

-- Run one query returning one text value in pg_cron's database, through
-- dblink (the health checks read cron.job there); NULL when dblink is not
-- installed here. Connects as _cron_exec does by default (the local socket,
-- as the current user), never with a connection string a role wrote: the
-- checks run it as the extension's owner.
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

-- a value for a libpq connection string: single-quoted, \ and ' escaped
CREATE FUNCTION loyalty._conninfo_quote(v text)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '''' OPERATOR(pg_catalog.||) pg_catalog.replace(pg_catalog.replace(v, '\', '\\'), '''', '\''')
                OPERATOR(pg_catalog.||) ''''
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
