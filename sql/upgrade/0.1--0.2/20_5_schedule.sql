-- schedule() for a non-superuser loyalty_admin (issue 11, finding 2): pg_cron
-- lets only superusers read cron.database_name; the owner reads it for them.
CREATE FUNCTION loyalty._cron_database_name()
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.current_setting('cron.database_name', true)
$$;

REVOKE ALL ON FUNCTION loyalty._cron_database_name() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._cron_database_name() TO loyalty_admin;
CREATE OR REPLACE FUNCTION loyalty._cron_database()
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

