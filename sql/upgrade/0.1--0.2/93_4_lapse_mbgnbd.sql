-- Issue 12: MBG/NBD's win-back lapse day in closed form
-- (loyalty._lapse_at_mbgnbd, src/journey_dates.c) instead of a search.
-- @function loyalty._lapse_at_mbgnbd
-- @function loyalty._lapse_day

REVOKE ALL ON FUNCTION loyalty._lapse_at_mbgnbd(integer, timestamptz, timestamptz, float8, float8, float8, float8, float8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._lapse_at_mbgnbd(integer, timestamptz, timestamptz, float8, float8, float8, float8, float8) TO loyalty_admin;

REVOKE ALL ON FUNCTION loyalty._lapse_day(text, integer, timestamptz, timestamptz, float8, float8, float8, float8, float8, float8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._lapse_day(text, integer, timestamptz, timestamptz, float8, float8, float8, float8, float8, float8) TO loyalty_admin;
