-- Custom campaign conditions are evaluated against loyalty._journey_context
-- (70_journeys.sql, inlinable); readers and the condition check see it through
-- loyalty.journey_context_at (SECURITY DEFINER). Both give the same columns
-- and rows; and a condition reaches into the one table it reads.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;

INSERT INTO loyalty.tiers (tier, min_spend) VALUES ('Silver', 100);
SELECT earn_on_orders FROM loyalty.configure_rewards(earn_on_orders => true, earn_orders_since => '2025-01-01', return_window => '0');
SELECT count(loyalty.record_order('c' || i, 'o' || i || '-' || j, 40 * i, timestamptz '2026-03-01' + (i * 9 + j) * interval '1 day'))
  FROM generate_series(1, 6) i, generate_series(1, i) j;
SELECT count(loyalty.upsert_customer('c' || i, 'Customer ' || i, 'c' || i || '@example.com', NULL, date '1990-01-01' + i, 'Europe/Berlin'))
  FROM generate_series(1, 4) i;
SELECT customers FROM loyalty.refresh(as_of => '2026-06-01');

-- same columns (names and types, in order)
SELECT pg_get_function_result('loyalty._journey_context(timestamptz)'::regprocedure)
     = pg_get_function_result('loyalty.journey_context_at(timestamptz)'::regprocedure) AS same_columns;
-- same rows, every column, at two times
SELECT t, (SELECT count(*) FROM loyalty.journey_context_at(t)) AS customers,
       (SELECT count(*) FROM (SELECT * FROM loyalty.journey_context_at(t) EXCEPT ALL SELECT * FROM loyalty._journey_context(t)) d) AS only_reader,
       (SELECT count(*) FROM (SELECT * FROM loyalty._journey_context(t) EXCEPT ALL SELECT * FROM loyalty.journey_context_at(t)) d) AS only_internal
  FROM (VALUES (timestamptz '2026-06-01'), ('2026-09-01')) v(t);
-- a few rows, to show the context is not empty of what conditions use
SELECT customer_id, name IS NOT NULL AS has_profile, orders, days_since_last_order, net_spend, points > 0 AS has_points, tier, segment IS NOT NULL AS scored
  FROM loyalty._journey_context(timestamptz '2026-06-01') ORDER BY customer_id;

-- inlined: a condition on customer state reads customer_state alone
CREATE FUNCTION pg_temp.plan(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text; p text := '';
BEGIN
    FOR r IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP p := p || r || E'\n'; END LOOP;
    RETURN p;
END $$;
SELECT pg_temp.plan($$SELECT customer_id FROM loyalty._journey_context(now()) WHERE net_spend > 500 AND days_since_last_order > 60$$)
       !~ '(Join|profiles|customer_rfm|accounts|customer_tiers|Function Scan)' AS reads_customer_state_only;

-- points: what the customer can spend (points) and what is still in the
-- return window (points_pending) apart (issue 12: the context said 495 where
-- 175 were usable). c7's recent order is inside a 14-day return window.
SELECT return_window FROM loyalty.configure_rewards(return_window => '14 days');
SELECT loyalty.record_order('c7', 'o7-0', 100, now() - interval '40 days') > 0 AS old_order,
       loyalty.record_order('c7', 'o7-1', 300, now() - interval '2 days') > 0 AS recent_order;
SELECT customer_id, points, points_pending FROM loyalty.journey_context WHERE customer_id = 'c7';
-- every customer, in the context, the staff view and loyalty.balance() alike
SELECT count(*) AS customers,
       count(*) FILTER (WHERE c.points = b.available AND c.points_pending = b.pending) AS context_agrees,
       count(*) FILTER (WHERE s.points = b.available AND s.points_pending = b.pending) AS customer_360_agrees,
       count(*) FILTER (WHERE c.points_pending > 0) AS with_pending
  FROM loyalty.journey_context c
  JOIN loyalty.customer_360 s USING (customer_id)
 CROSS JOIN LATERAL loyalty.balance(c.customer_id) b;
-- as of a time: pending until the window (from the order, 2 days ago) has passed
SELECT points, points_pending FROM loyalty._journey_context(now() + interval '11 days') WHERE customer_id = 'c7'
UNION ALL
SELECT points, points_pending FROM loyalty._journey_context(now() + interval '13 days') WHERE customer_id = 'c7';
-- a condition on points reads the point lots; one that does not, does not (above)
SELECT pg_temp.plan($$SELECT customer_id FROM loyalty._journey_context(now()) WHERE points > 100$$) ~ 'point_lots' AS points_read_lots;
