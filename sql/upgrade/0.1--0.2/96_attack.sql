
-- ---------------------------------------------------------------- 96_attack
-- Backfill and replay read a tracked time column through loyalty._time_sql
-- (a value beyond timestamptz's range is quarantined, not an error that
-- fails the whole backfill); the functions using it are named elsewhere.
-- @function loyalty._time_sql
REVOKE ALL ON FUNCTION loyalty._time_sql(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._time_sql(text) TO loyalty_admin;
