-- One definition of a day (loyalty._utc_days, src/days.c): RFM recency
-- counts whole UTC days, as the models and the journeys do (it counted
-- 24-hour periods), and customer_segments.recency_days with it.
CREATE OR REPLACE VIEW loyalty.customer_segments AS
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
COMMENT ON COLUMN loyalty.customer_segments.recency_days IS 'UTC days from the last counted order to computed_at (loyalty._utc_days)';
-- a view calls functions with the reader's rights
GRANT EXECUTE ON FUNCTION loyalty._utc_days(timestamptz, timestamptz) TO loyalty_app, loyalty_reader;
