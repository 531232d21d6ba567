-- schedule() for a non-superuser loyalty_admin (issue 11, finding 2): pg_cron
-- lets only superusers read cron.database_name; the owner reads it for them.
-- @function loyalty._cron_database_name

REVOKE ALL ON FUNCTION loyalty._cron_database_name() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._cron_database_name() TO loyalty_admin;
-- @function loyalty._cron_database

