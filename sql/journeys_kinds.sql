-- Journeys, every campaign kind with a fixed clock: due and not due, occasion
-- keys, occasions before the campaign started ignored, catch-up after
-- downtime within valid_for and expiry beyond it, reruns adding nothing.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
SET TIME ZONE 'UTC';
\set SHOW_CONTEXT never

-- no quiet hours and no cap here (journeys_policy tests them); holdout off
SELECT quiet_start = quiet_end AS no_quiet_hours
  FROM loyalty.configure_journeys(cap_messages => 100, quiet_start => '00:00', quiet_end => '00:00');
UPDATE loyalty.campaigns SET holdout_share = 0, cooldown = '0', active_from = '2026-01-01';

-- switch on exactly one campaign
-- (switched on as of active_from: the clock of these tests, not the real now)
CREATE FUNCTION pg_temp.only(p_name text) RETURNS void LANGUAGE sql AS $$
    UPDATE loyalty.campaigns SET active = (name = p_name);
    UPDATE loyalty.campaigns SET activated_at = active_from WHERE active;
$$;
-- what the policy decides (occasions not yet in the outbox)
CREATE FUNCTION pg_temp.due(p_as_of timestamptz)
RETURNS TABLE (customer_id text, occasion text, occasion_at timestamptz, decision text)
LANGUAGE sql AS $$
    SELECT customer_id, occasion, occasion_at, decision FROM loyalty.due_messages_at(p_as_of) ORDER BY 1, 2
$$;
CREATE FUNCTION pg_temp.enqueue(p_as_of timestamptz) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(format('%s: pending=%s delayed=%s held_out=%s expired=%s', campaign, pending, delayed, held_out, expired), '; ')
      FROM loyalty.enqueue_due(p_as_of)
$$;
CREATE FUNCTION pg_temp.customer(p_id text) RETURNS void LANGUAGE sql AS $$
    SELECT loyalty.upsert_customer(p_id, 'Name ' || p_id, p_id || '@example.com');
    SELECT loyalty.set_consent(p_id, 'email', true, 'test');
$$;
CREATE FUNCTION pg_temp.orders(p_customer text, VARIADIC p_at timestamptz[]) RETURNS void LANGUAGE sql AS $$
    SELECT pg_temp.customer(p_customer);
    SELECT loyalty.record_order(p_customer, p_customer || '-' || i, 40, t) FROM unnest(p_at) WITH ORDINALITY u(t, i);
$$;

-- ---- welcome: 1 hour after the first order; valid 3 days
SELECT pg_temp.orders('w0', '2025-12-01 10:00');   -- before the campaign started: never
SELECT pg_temp.orders('w1', '2026-06-14 10:00');   -- due 14 June 11:00
SELECT pg_temp.orders('w2', '2026-06-11 10:00');   -- due 11 June 11:00: over 3 days ago, first run: not looked at
SELECT pg_temp.orders('w5', '2026-06-15 11:30');   -- due 12:30: not yet (then missed: no run until 20 June)
SELECT pg_temp.only('welcome');
SELECT * FROM pg_temp.due('2026-06-15 12:00');
SELECT pg_temp.enqueue('2026-06-15 12:00');
SELECT pg_temp.enqueue('2026-06-15 12:00') AS rerun;
-- the server is down five days; meanwhile w3 and w4 place first orders
SELECT pg_temp.orders('w3', '2026-06-16 10:00');   -- due 16 June 11:00: missed for over 3 days -> expired
SELECT pg_temp.orders('w4', '2026-06-18 10:00');   -- due 18 June 11:00: still valid -> sent (catch-up)
SELECT * FROM pg_temp.due('2026-06-20 12:00');
SELECT pg_temp.enqueue('2026-06-20 12:00');
SELECT dedupe_key, customer_id, status, due_at, expires_at, recipient, payload->'occasion' AS occasion
  FROM loyalty.outbox ORDER BY customer_id;
-- a new order of w1 is no new welcome
SELECT loyalty.record_order('w1', 'w1-2', 10, '2026-06-20 10:00') > 0 AS ordered;
SELECT count(*) AS welcome_again FROM pg_temp.due('2026-06-20 12:00') WHERE customer_id = 'w1';

-- ---- post_purchase: 7 days after each counted order
SELECT pg_temp.orders('p1', '2026-06-01 09:00', '2026-06-08 09:00', '2026-06-09 09:00');
SELECT pg_temp.orders('p2', '2026-06-07 09:00');
SELECT loyalty.record_refund('p2-1') AS refunded;    -- refunded in full: no longer counts
SELECT pg_temp.only('order follow-up');
SELECT * FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id LIKE 'p%';
SELECT * FROM pg_temp.due('2026-06-16 12:00') WHERE customer_id LIKE 'p%';

-- after delivery: 7 days after the delivery time of a tracked orders table
CREATE TABLE jr_orders (id text PRIMARY KEY, customer text, total numeric, placed timestamptz, delivered timestamptz);
INSERT INTO jr_orders VALUES ('d-1', 'd1', 20, '2026-06-01 10:00', '2026-06-08 08:00'),   -- follow-up 15 June 08:00
                             ('d-2', 'd1', 20, '2026-06-05 10:00', NULL);                 -- not delivered: waits
SELECT loyalty.track_orders('jr_orders', 'customer', 'total', 'placed', 'id') AS backfilled;
SELECT loyalty.track_deliveries('jr_orders', 'delivered');
SELECT pg_temp.customer('d1');
UPDATE loyalty.campaigns SET params = '{"days": 7, "after_delivery": true}' WHERE name = 'order follow-up';
SELECT * FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id LIKE 'd%';
UPDATE jr_orders SET delivered = '2026-06-09 09:00' WHERE id = 'd-2';              -- captured by the trigger
SELECT loyalty.apply_events() AS applied;                                          -- applied with the order
SELECT * FROM pg_temp.due('2026-06-16 12:00') WHERE customer_id LIKE 'd%';
SELECT payload #>> '{occasion,delivered_at}' AS delivered_at FROM loyalty.due_messages_at('2026-06-16 12:00') WHERE occasion = 'order:d-2';
UPDATE loyalty.campaigns SET params = '{"days": 7}' WHERE name = 'order follow-up';
DROP TABLE jr_orders;

-- ---- repurchase_reminder: the customer's own gap between purchase days times factor
SELECT pg_temp.orders('r1', '2026-04-15 00:00', '2026-05-05 00:00', '2026-05-25 00:00');   -- gap 20 days: due 14 June
SELECT pg_temp.orders('r2', '2026-01-25 00:00', '2026-05-25 00:00');                       -- gap 120 days: due 22 September
SELECT pg_temp.orders('r3', '2026-06-01 00:00');                                           -- one order: no gap
SELECT pg_temp.orders('r4', '2026-05-01 10:00', '2026-05-21 10:00');                       -- gap 20 days: 10 June 10:00
UPDATE loyalty.campaigns SET params = '{"factor": 1.0}' WHERE name = 'time to reorder';
SELECT pg_temp.only('time to reorder');
-- a reminder is due from the UTC midnight after that moment
SELECT * FROM pg_temp.due('2026-06-10 23:59:59') WHERE customer_id = 'r4';
SELECT * FROM pg_temp.due('2026-06-11 00:00') WHERE customer_id = 'r4';
-- the date itself (src/journey_dates.c): the next UTC midnight, or that
-- moment when it is one; none below two purchase days; a bad factor refused
SELECT loyalty._reorder_at(2, '2026-05-01 10:00', '2026-05-21 10:00', 1.0) AS next_midnight,
       loyalty._reorder_at(2, '2026-05-01 00:00', '2026-05-21 00:00', 1.0) AS exact_midnight,
       loyalty._reorder_at(1, '2026-05-01', '2026-05-01', 1.0) AS one_day,
       loyalty._reorder_at(2, '1999-12-20 10:00', '1999-12-25 10:00', 1.0) AS before_2000;
SELECT loyalty._reorder_at(2, '2026-05-01', '2026-05-21', 0);
SELECT * FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id LIKE 'r%';
SELECT payload->'occasion' AS occasion FROM loyalty.due_messages_at('2026-06-15 12:00') WHERE customer_id = 'r1';
-- factor 1.5: r1 is due 30 days after the last order
UPDATE loyalty.campaigns SET params = '{"factor": 1.5}' WHERE name = 'time to reorder';
SELECT * FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id LIKE 'r%';
SELECT * FROM pg_temp.due('2026-06-24 12:00') WHERE customer_id LIKE 'r%';

-- ---- win_back: P(alive) below the threshold (heuristic while there is no fit), or an RFM segment;
-- the occasion is dated when the lapse began, never before the campaign started
SELECT pg_temp.orders('l1', '2025-10-01 10:00', '2025-11-01 10:00');   -- lapsed 9 December: before the start
SELECT pg_temp.orders('l2', '2024-01-01 10:00', '2024-02-01 10:00');   -- lapsed beyond max_days_since_last
SELECT pg_temp.orders('l3', '2026-05-01 10:00', '2026-06-01 10:00');   -- active
SELECT pg_temp.orders('l4', '2026-04-03 10:00', '2026-05-03 10:00');   -- gap 30 days, shrunk towards the shop's: lapses 8 June (36 quiet days)
SELECT pg_temp.only('we miss you');
UPDATE loyalty.campaigns SET active_from = '2026-06-12', activated_at = '2026-06-12' WHERE name = 'we miss you';
SELECT d.customer_id, d.occasion, d.occasion_at, d.decision, d.payload #>> '{occasion,lapsed_at}' AS lapsed_at,
       (d.payload #>> '{why,scores,p_alive}')::float8 < 0.3 AS p_alive_low
  FROM loyalty.due_messages_at('2026-06-15 12:00') d WHERE d.customer_id LIKE 'l%' ORDER BY 1;
-- active_from set back (to catch up other occasions) does not date earlier
-- lapses earlier: they are due when the campaign was switched on
UPDATE loyalty.campaigns SET active_from = '2026-01-01' WHERE name = 'we miss you';
SELECT * FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id LIKE 'l%';
-- l4 crosses 0.3 at midnight UTC of 8 June: not due the second before
UPDATE loyalty.campaigns SET activated_at = '2026-01-01' WHERE name = 'we miss you';
SELECT * FROM pg_temp.due('2026-06-07 23:59:59') WHERE customer_id LIKE 'l%';
SELECT * FROM pg_temp.due('2026-06-08 00:00') WHERE customer_id LIKE 'l%';
SELECT loyalty._p_alive('heuristic', 2, '2026-04-03 10:00', '2026-05-03 10:00', t, NULL, NULL, NULL, NULL, m.shop_gap) < 0.3 AS below
  FROM unnest(ARRAY[timestamptz '2026-06-07 23:59:59', '2026-06-08 00:00']) t CROSS JOIN loyalty.current_model m;
UPDATE loyalty.campaigns SET params = '{"segments": ["At Risk", "Can''t Lose Them", "Hibernating"], "min_days_since_last": 0}' WHERE name = 'we miss you';
INSERT INTO loyalty.customer_rfm VALUES ('l3', 1, 3, 3, 'At Risk', '2026-06-10'), ('l1', 5, 3, 3, 'Champions', '2026-06-10');
SELECT * FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id LIKE 'l%';
-- the lapse day in closed form agrees with P(alive) day by day: below the
-- threshold on that day, not on the day before; x = 0 under BG/NBD lapses by the heuristic.
-- Over histories of 1..30 purchase days, four thresholds, a BG/NBD fit in days
-- (CDNOW's weekly fit rescaled) and the heuristic.
WITH h AS (
    SELECT pd, timestamptz '2025-01-01 09:00' AS first_at,
           timestamptz '2025-01-01 09:00' + (CASE WHEN pd = 1 THEN 0 ELSE pd * span END) * interval '1 day' AS last_at,
           th, fit
      FROM generate_series(1, 30) pd, unnest(ARRAY[1, 7, 40]) span, unnest(ARRAY[0.05, 0.3, 0.5, 0.9]) th,
           unnest(ARRAY['bgnbd', 'heuristic']) fit
), l AS (
    SELECT h.*, CASE WHEN fit = 'bgnbd' THEN ARRAY[0.2426, 4.4136 * 7, 0.7929, 2.4259] END AS p,
           loyalty._lapse_at(pd, first_at, last_at, th,
                             CASE WHEN fit = 'bgnbd' THEN 0.2426 END, 4.4136 * 7, 0.7929, 2.4259, 60) AS lapse
      FROM h
)
SELECT fit, count(*) AS histories,
       count(*) FILTER (WHERE lapse IS NULL) AS never,
       count(*) FILTER (WHERE lapse IS NULL) AS never_wrongly,
       count(*) FILTER (WHERE lapse IS NOT NULL
                          AND NOT (loyalty._p_alive(fit, pd, first_at, last_at, lapse, p[1], p[2], p[3], p[4], 60) < th
                                   AND (lapse - interval '1 microsecond' < last_at
                                        OR loyalty._p_alive(fit, pd, first_at, last_at, lapse - interval '1 microsecond',
                                                            p[1], p[2], p[3], p[4], 60) >= th))) AS disagree
  FROM l GROUP BY fit ORDER BY fit;
-- edges: days are UTC days also before 2000 (gap (1 + 90) / 3 days: lapsed
-- 37 days after 31 December 1999); no usable history gives NULL; an overflowing power is capped 10,000
-- years on; a threshold outside (0, 1) is refused
SELECT loyalty._lapse_at(3, '1999-12-30 10:00', '1999-12-31 23:00', 0.3, NULL, NULL, NULL, NULL, NULL) AS before_2000,
       loyalty._lapse_at(2, '-infinity', '2026-01-01', 0.3, NULL, NULL, NULL, NULL, NULL) AS infinite_first,
       loyalty._lapse_at(NULL, '2026-01-01', '2026-01-02', 0.3, NULL, NULL, NULL, NULL, NULL) AS no_days,
       loyalty._lapse_at(2, '2026-01-01', '2026-01-02', 0.3, 0.001, 10, 1e-300, 2, NULL) > '9999-01-01' AS capped;
SELECT loyalty._lapse_at(2, '2026-01-01', '2026-01-02', 1.5, NULL, NULL, NULL, NULL, NULL);

-- ---- birthday: local midnight in the customer's zone, days_before earlier
SELECT (loyalty.upsert_customer('b1', 'B1', 'b1@example.com', NULL, '1990-06-15', 'Europe/Berlin')).time_zone,
       (loyalty.upsert_customer('b2', 'B2', 'b2@example.com', NULL, '1990-06-16', 'America/New_York')).time_zone,
       (loyalty.upsert_customer('b3', 'B3', 'b3@example.com', NULL, '1992-06-20', NULL)).time_zone;
SELECT loyalty.set_consent(c, 'email', true) > 0 FROM unnest(ARRAY['b1', 'b2', 'b3']) c;
SELECT pg_temp.only('happy birthday');
-- 15 June 00:00 Berlin = 14 June 22:00 UTC: due; 16 June 00:00 New York = 04:00 UTC: not yet
SELECT * FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id LIKE 'b%';
SELECT * FROM pg_temp.due('2026-06-16 04:00') WHERE customer_id LIKE 'b%';
UPDATE loyalty.campaigns SET params = '{"days_before": 5}' WHERE name = 'happy birthday';
SELECT * FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id LIKE 'b%';

-- ---- points_expiring: per expiry day, days_before earlier
-- (lots written directly: loyalty.earn() only takes expiry times after the real now)
INSERT INTO loyalty.point_lots (lot_id, customer_id, points, remaining, available_at, expires_at) VALUES
    (1, 'x1', 30, 30, '2025-06-25', '2026-06-25 10:00'), (2, 'x1', 40, 20, '2025-06-25', '2026-06-25 18:00'),
    (3, 'x1', 99, 99, '2025-08-01', '2026-08-01 10:00'), (4, 'x2', 5, 5, '2025-06-26', '2026-06-26 10:00');
INSERT INTO loyalty.accounts (customer_id, balance) VALUES ('x1', 149), ('x2', 5);
SELECT pg_temp.customer('x1'), pg_temp.customer('x2');
UPDATE loyalty.campaigns SET params = '{"days_before": 14, "min_points": 10}' WHERE name = 'points expiring';
SELECT pg_temp.only('points expiring');
SELECT * FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id LIKE 'x%';
SELECT payload->'occasion' AS occasion, payload->'points' AS points FROM loyalty.due_messages_at('2026-06-15 12:00') WHERE customer_id = 'x1';

-- ---- tier_changed: tier_history rows (upgrades by default)
INSERT INTO loyalty.tier_history (customer_id, from_tier, to_tier, qualifying_spend, changed_at, reason) VALUES
    ('t1', NULL, 'Gold', 600, '2026-06-14 08:00', 'upgrade'),
    ('t2', 'Gold', 'Silver', 250, '2026-06-14 08:00', 'downgrade'),
    ('t3', NULL, 'Gold', 600, '2025-06-14 08:00', 'upgrade');
SELECT pg_temp.customer(c) FROM unnest(ARRAY['t1', 't2', 't3']) c;
SELECT pg_temp.only('new tier');
SELECT customer_id, regexp_replace(occasion, '[0-9]+$', 'N') AS occasion, occasion_at, decision FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id LIKE 't%';
UPDATE loyalty.campaigns SET params = '{"direction": "any"}' WHERE name = 'new tier';
SELECT customer_id, payload->'occasion' AS occasion FROM loyalty.due_messages_at('2026-06-15 12:00') WHERE customer_id LIKE 't%' ORDER BY 1;

-- ---- milestone: the 3rd order; lifetime spend of 100
SELECT pg_temp.orders('m1', '2026-05-01 10:00', '2026-06-01 10:00', '2026-06-14 10:00');   -- 3rd order 14 June
SELECT pg_temp.orders('m2', '2026-01-01 10:00', '2026-02-01 10:00', '2026-03-01 10:00', '2026-06-14 10:00');   -- 3rd long ago
UPDATE loyalty.campaigns SET params = '{"orders": 3}' WHERE name = '5th order';
SELECT pg_temp.only('5th order');
SELECT * FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id LIKE 'm%';
-- 40 per order: m1 crosses 100 with its 3rd order, m2 crossed it in March
UPDATE loyalty.campaigns SET params = '{"spend": 100}' WHERE name = '5th order';
SELECT * FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id LIKE 'm%';

-- ---- custom: a condition over loyalty.journey_context, one occasion per week
UPDATE loyalty.campaigns SET condition = 'orders >= 4 AND net_spend >= 160', params = '{"occasion": "weekly"}'
 WHERE name = 'big spender, quiet lately';
SELECT pg_temp.only('big spender, quiet lately');
SELECT * FROM pg_temp.due('2026-06-15 12:00');
SELECT pg_temp.enqueue('2026-06-15 12:00');
SELECT count(*) AS same_week_again FROM pg_temp.due('2026-06-17 12:00');
SELECT * FROM pg_temp.due('2026-06-22 12:00');

-- ---- all kinds at once: every dedupe key unique, a rerun adds nothing
-- (l3's scores were rewritten on 20 June, still At Risk: its lapse is in the window)
UPDATE loyalty.customer_rfm SET scored_at = '2026-06-20' WHERE customer_id = 'l3';
UPDATE loyalty.campaigns SET active = true;
UPDATE loyalty.campaigns SET activated_at = active_from;
SELECT pg_temp.enqueue('2026-06-24 12:00') AS ran;
SELECT count(*) AS rows_before FROM loyalty.outbox \gset
SELECT pg_temp.enqueue('2026-06-24 12:00') AS rerun;
SELECT count(*) = :rows_before AS no_new_rows, count(DISTINCT dedupe_key) = count(*) AS keys_unique FROM loyalty.outbox;
SELECT c.kind, count(*) AS rows, string_agg(DISTINCT o.status, ',') AS statuses
  FROM loyalty.outbox o JOIN loyalty.campaigns c USING (campaign_id) GROUP BY c.kind ORDER BY 1;
