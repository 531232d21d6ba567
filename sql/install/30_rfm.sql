-- RFM: settings, bounds in force, segment rules, per-customer scores, views.

CREATE TABLE loyalty.rfm_config (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    bins             integer NOT NULL DEFAULT 5 CHECK (bins BETWEEN 2 AND 10),
    mode             text NOT NULL DEFAULT 'quantile' CHECK (mode IN ('quantile', 'fixed')),
    recency_bounds   float8[],
    frequency_bounds float8[],
    monetary_bounds  float8[]
);
INSERT INTO loyalty.rfm_config DEFAULT VALUES;
COMMENT ON TABLE loyalty.rfm_config IS 'RFM settings; change them with loyalty.configure_rfm()';
SELECT pg_catalog.pg_extension_config_dump('loyalty.rfm_config', '');

CREATE TABLE loyalty.rfm_bounds (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    bins             integer NOT NULL,
    mode             text NOT NULL,
    recency_bounds   float8[] NOT NULL,
    frequency_bounds float8[] NOT NULL,
    monetary_bounds  float8[] NOT NULL,
    customers        bigint NOT NULL,
    computed_at      timestamptz NOT NULL
);
COMMENT ON TABLE loyalty.rfm_bounds IS 'RFM bin bounds in force (written by loyalty.refresh())';
-- derived, but dumped too, so that a restored database works at once
SELECT pg_catalog.pg_extension_config_dump('loyalty.rfm_bounds', '');
COMMENT ON COLUMN loyalty.rfm_bounds.recency_bounds IS 'days since last order; a customer at or below the k-th bound is in the k-th most recent bin';

CREATE TABLE loyalty.segment_rules (
    position integer PRIMARY KEY,
    segment  text NOT NULL CHECK (btrim(segment) <> ''),
    r_min    integer NOT NULL CHECK (r_min >= 1),
    r_max    integer NOT NULL,
    f_min    integer NOT NULL CHECK (f_min >= 1),
    f_max    integer NOT NULL,
    m_min    integer NOT NULL CHECK (m_min >= 1),
    m_max    integer NOT NULL,
    CHECK (r_min <= r_max AND f_min <= f_max AND m_min <= m_max)
);
COMMENT ON TABLE loyalty.segment_rules IS 'Named RFM segments: the first rule (by position) whose score ranges hold wins; no match is ''Other''';
SELECT pg_catalog.pg_extension_config_dump('loyalty.segment_rules', '');

-- Default rules: the rfm R package (rsquaredacademy), vignette
-- 'rfm-customer-level-data', ranges inclusive on 1..5 scores.
INSERT INTO loyalty.segment_rules VALUES
    (1,  'Champions',          4, 5, 4, 5, 4, 5),
    (2,  'Loyal Customers',    2, 4, 3, 4, 4, 5),
    (3,  'Potential Loyalist', 3, 5, 1, 3, 1, 3),
    (4,  'New Customers',      4, 5, 1, 1, 1, 1),
    (5,  'Promising',          3, 4, 1, 1, 1, 1),
    (6,  'Need Attention',     3, 4, 3, 4, 3, 4),
    (7,  'About To Sleep',     2, 3, 1, 2, 1, 2),
    (8,  'At Risk',            1, 2, 2, 5, 2, 5),
    (9,  'Can''t Lose Them',   1, 1, 4, 5, 4, 5),
    (10, 'Hibernating',        2, 3, 2, 3, 2, 3),
    (11, 'Lost',               1, 1, 1, 1, 1, 1);

CREATE TABLE loyalty.customer_rfm (
    customer_id text PRIMARY KEY,
    r_score     smallint NOT NULL,
    f_score     smallint NOT NULL,
    m_score     smallint NOT NULL,
    segment     text NOT NULL,
    scored_at   timestamptz NOT NULL
);
COMMENT ON TABLE loyalty.customer_rfm IS 'RFM scores per customer; a row is rewritten only when its scores change';
-- derived, but dumped too, so that a restored database works at once
SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_rfm', '');

-- Score customers in C (src/rfm.c). p_full: recompute bounds (quantile mode)
-- and score everyone; else score up to p_limit queued customers.
CREATE FUNCTION loyalty._rfm_score(p_full boolean, p_as_of timestamptz, p_limit integer)
RETURNS bigint
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'rfm_score';

-- Score of value v against ascending bounds b: 1 + number of bounds below v
-- (equal values always get equal scores); reverse for recency (fewer days = better).
CREATE FUNCTION loyalty.rfm_bin(v float8, bounds float8[], reverse boolean DEFAULT false)
RETURNS integer
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'rfm_bin';
COMMENT ON FUNCTION loyalty.rfm_bin(float8, float8[], boolean) IS
'RFM score of a value against ascending bin bounds: 1 + bounds strictly below it (reverse: bins - that + 1)';

CREATE FUNCTION loyalty.configure_rfm(bins integer DEFAULT 5, mode text DEFAULT 'quantile',
                                      recency_bounds float8[] DEFAULT NULL,
                                      frequency_bounds float8[] DEFAULT NULL,
                                      monetary_bounds float8[] DEFAULT NULL)
RETURNS loyalty.rfm_config
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b float8[];
    nm text;
    top integer;
BEGIN
    IF bins IS NULL OR bins < 2 OR bins > 10 THEN
        RAISE EXCEPTION 'bins must be between 2 and 10, not %', coalesce(bins::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Five bins (scores 1 to 5) is the usual RFM setting.';
    END IF;
    IF mode IS NULL OR mode NOT IN ('quantile', 'fixed') THEN
        RAISE EXCEPTION 'mode must be ''quantile'' or ''fixed'', not %', coalesce(quote_literal(mode), 'NULL')
              USING ERRCODE = 'invalid_parameter_value', HINT = '''quantile'' splits customers into equal shares; ''fixed'' uses your thresholds.';
    END IF;
    IF mode = 'fixed' THEN
        FOREACH nm IN ARRAY ARRAY['recency_bounds', 'frequency_bounds', 'monetary_bounds'] LOOP
            b := CASE nm WHEN 'recency_bounds' THEN recency_bounds WHEN 'frequency_bounds' THEN frequency_bounds ELSE monetary_bounds END;
            IF b IS NULL OR cardinality(b) <> bins - 1 OR array_position(b, NULL) IS NOT NULL
               OR EXISTS (SELECT 1 FROM unnest(b) WITH ORDINALITY x(v, i) JOIN unnest(b) WITH ORDINALITY y(v, i) ON y.i = x.i + 1 WHERE y.v <= x.v)
               OR EXISTS (SELECT 1 FROM unnest(b) v WHERE v = 'NaN' OR v IN ('Infinity', '-Infinity')) THEN
                RAISE EXCEPTION '% must hold % finite thresholds in ascending order', nm, bins - 1
                      USING ERRCODE = 'invalid_parameter_value',
                            HINT = 'For 5 bins, e.g. recency_bounds => ''{30,90,180,365}'' (days), frequency_bounds => ''{1,2,4,8}''.';
            END IF;
        END LOOP;
    ELSIF recency_bounds IS NOT NULL OR frequency_bounds IS NOT NULL OR monetary_bounds IS NOT NULL THEN
        RAISE EXCEPTION 'thresholds are only used in fixed mode'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass mode => ''fixed'' with the thresholds.';
    END IF;
    -- The segment rules name score ranges (the defaults 1 to 5): with another
    -- number of bins they would silently match other customers or none (no
    -- Champions with 3 bins). Refused rather than rescaled: a rescaled rule is
    -- not the rule the shop wrote.
    SELECT max(greatest(r.r_max, r.f_max, r.m_max)) INTO top FROM loyalty.segment_rules r;
    IF top IS NOT NULL AND top <> bins THEN
        RAISE EXCEPTION 'the segment rules are written for scores 1 to %, not 1 to %', top, bins
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = format('Rewrite loyalty.segment_rules for scores 1 to %s first (UPDATE their r/f/m ranges), then change bins; or keep %s bins.', bins, top);
    END IF;
    UPDATE loyalty.rfm_config c
       SET bins = configure_rfm.bins, mode = configure_rfm.mode, recency_bounds = configure_rfm.recency_bounds,
           frequency_bounds = configure_rfm.frequency_bounds, monetary_bounds = configure_rfm.monetary_bounds;
    -- bounds of the old setting no longer apply
    DELETE FROM loyalty.rfm_bounds;
    RETURN (SELECT c FROM loyalty.rfm_config c);
END
$$;
COMMENT ON FUNCTION loyalty.configure_rfm(integer, text, float8[], float8[], float8[]) IS
'Set RFM bins and mode (quantile, or fixed thresholds); refused when the segment rules are written for another number of bins; takes effect at the next loyalty.refresh(); returns the settings in force';

CREATE VIEW loyalty.customer_segments AS
SELECT s.customer_id,
       loyalty._utc_days(s.last_order_at, greatest(r.scored_at, b.computed_at)) AS recency_days,
       s.orders AS frequency,
       s.net_spend AS monetary,
       r.r_score, r.f_score, r.m_score,
       r.segment,
       greatest(r.scored_at, b.computed_at) AS computed_at
  FROM loyalty.customer_state s
  JOIN loyalty.customer_rfm r USING (customer_id)
  LEFT JOIN loyalty.rfm_bounds b ON true;
COMMENT ON VIEW loyalty.customer_segments IS 'RFM scores and named segment per customer';
COMMENT ON COLUMN loyalty.customer_segments.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.customer_segments.recency_days IS 'UTC days from the last counted order to computed_at (loyalty._utc_days)';
COMMENT ON COLUMN loyalty.customer_segments.frequency IS 'counted orders';
COMMENT ON COLUMN loyalty.customer_segments.monetary IS 'net spend (orders less refunds)';
COMMENT ON COLUMN loyalty.customer_segments.r_score IS 'recency score, 1 (longest ago) to bins (most recent)';
COMMENT ON COLUMN loyalty.customer_segments.f_score IS 'frequency score, 1 (fewest orders) to bins';
COMMENT ON COLUMN loyalty.customer_segments.m_score IS 'monetary score, 1 (lowest spend) to bins';
COMMENT ON COLUMN loyalty.customer_segments.segment IS 'named segment from loyalty.segment_rules (Other when no rule matches)';
COMMENT ON COLUMN loyalty.customer_segments.computed_at IS 'when these scores were evaluated';

CREATE VIEW loyalty.segment_summary AS
SELECT segment,
       count(*) AS customers,
       round(100.0 * count(*) / sum(count(*)) OVER (), 2) AS share_pct,
       sum(monetary) AS revenue,
       round(sum(monetary) / nullif(sum(frequency), 0), 2) AS avg_order_value,
       round(avg(recency_days), 1) AS avg_recency_days
  FROM loyalty.customer_segments
 GROUP BY segment;
COMMENT ON VIEW loyalty.segment_summary IS 'Customers, share, revenue, average order value and recency per RFM segment';
COMMENT ON COLUMN loyalty.segment_summary.segment IS 'named segment from loyalty.segment_rules (Other when no rule matches)';
COMMENT ON COLUMN loyalty.segment_summary.customers IS 'scored customers in the segment';
COMMENT ON COLUMN loyalty.segment_summary.share_pct IS 'percent of scored customers';
COMMENT ON COLUMN loyalty.segment_summary.revenue IS 'net spend of the segment''s customers';
COMMENT ON COLUMN loyalty.segment_summary.avg_order_value IS 'revenue / counted orders';
COMMENT ON COLUMN loyalty.segment_summary.avg_recency_days IS 'mean days since last order';
