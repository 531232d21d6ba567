-- Issue 12: the lapse-day cache (93_5, = 74_lapse_cache.sql): grants, and
-- its users in 71_journeys_due.sql (enqueue_due and _journeys_refitted fill
-- it, _occasions and _journeys_refitted read it).
REVOKE ALL ON FUNCTION loyalty._lapse_searched(text, integer),
    loyalty._lapse_day_cached(text, bigint, text, integer, timestamptz, timestamptz, float8, float8, float8, float8, float8, float8),
    loyalty._lapse_cache_fill(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._lapse_searched(text, integer),
    loyalty._lapse_day_cached(text, bigint, text, integer, timestamptz, timestamptz, float8, float8, float8, float8, float8, float8),
    loyalty._lapse_cache_fill(timestamptz) TO loyalty_admin;
REVOKE ALL ON loyalty.lapse_days FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.lapse_days TO loyalty_admin;
