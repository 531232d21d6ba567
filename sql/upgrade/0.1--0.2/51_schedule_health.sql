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
-- @function loyalty._cron_jobs

-- @function loyalty.schedule

-- @function loyalty.unschedule

REVOKE ALL ON FUNCTION loyalty._cron_jobs(text, text, text, text, text, text, text, text),
                       loyalty.schedule(text, text, text, text, text, text, boolean, text, text, text),
                       loyalty.unschedule(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._cron_jobs(text, text, text, text, text, text, text, text),
                          loyalty.schedule(text, text, text, text, text, text, boolean, text, text, text),
                          loyalty.unschedule(text, boolean) TO loyalty_admin;
