-- One definition of a day (loyalty._utc_days, src/days.c): RFM recency
-- counts whole UTC days, as the models and the journeys do (it counted
-- 24-hour periods), and customer_segments.recency_days with it.
-- @view loyalty.customer_segments
-- a view calls functions with the reader's rights
GRANT EXECUTE ON FUNCTION loyalty._utc_days(timestamptz, timestamptz) TO loyalty_app, loyalty_reader;
