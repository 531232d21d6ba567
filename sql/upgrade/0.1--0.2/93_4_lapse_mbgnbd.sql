-- Issue 12: MBG/NBD's win-back lapse day in closed form
-- (loyalty._lapse_at_mbgnbd, src/journey_dates.c) instead of a search.
CREATE FUNCTION loyalty._lapse_at_mbgnbd(p_purchase_days integer, p_first timestamptz, p_last timestamptz, p_below float8,
                                         r float8, alpha float8, a float8, b float8)
RETURNS timestamptz
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'lapse_at_mbgnbd';

REVOKE ALL ON FUNCTION loyalty._lapse_at_mbgnbd(integer, timestamptz, timestamptz, float8, float8, float8, float8, float8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._lapse_at_mbgnbd(integer, timestamptz, timestamptz, float8, float8, float8, float8, float8) TO loyalty_admin;

CREATE OR REPLACE FUNCTION loyalty._lapse_day(p_model text, p_purchase_days integer, p_first timestamptz, p_last timestamptz,
                                   p_below float8, r float8, alpha float8, a float8, b float8, p_shop_gap float8)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE loyalty._p_alive_model(p_model, p_purchase_days - 1)
            WHEN 'bgnbd' THEN loyalty._lapse_at(p_purchase_days, p_first, p_last, p_below, r, alpha, a, b, p_shop_gap)
            WHEN 'bgnbd_limit' THEN loyalty._lapse_at(p_purchase_days, p_first, p_last, p_below, r, alpha, a, b, p_shop_gap)
            WHEN 'heuristic' THEN loyalty._lapse_at(p_purchase_days, p_first, p_last, p_below, NULL, NULL, NULL, NULL, p_shop_gap)
            WHEN 'mbgnbd' THEN loyalty._lapse_at_mbgnbd(p_purchase_days, p_first, p_last, p_below, r, alpha, a, b)
            ELSE loyalty._lapse_search(p_model, p_purchase_days, p_first, p_last, p_below, r, alpha, a, b, p_shop_gap) END;

