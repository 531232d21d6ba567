-- One definition per rule (issue 13, docs/rules.md): where a rule has a SQL
-- and a C side, both give the answer worked out here by hand.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
SET TIME ZONE 'UTC';
\set SHOW_CONTEXT never

-- the SQLSTATE and message of a statement, 'ok' when it succeeds
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; m text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
    RETURN st || ': ' || m;
END $$;

-- ---- days: whole UTC calendar days, never negative (loyalty._utc_days, src/days.c)
SELECT loyalty._utc_days('2026-01-01 23:59+00', '2026-01-02 00:01+00') AS two_minutes_next_day,  -- 1
       loyalty._utc_days('2026-01-01 00:01+00', '2026-01-01 23:59+00') AS same_day,              -- 0
       loyalty._utc_days('2026-01-03 10:00+00', '2026-01-01 10:00+00') AS ahead,                 -- 0
       loyalty._utc_days('1999-12-31 23:00+00', '2000-01-01 01:00+00') AS across_2000,           -- 1
       loyalty._utc_days('2026-03-01 23:00+05', '2026-03-02 01:00+00') AS by_utc_date;           -- 1 (18:00 UTC)
-- the UTC date an order counts on (loyalty._utc_date, the same rule), against
-- PostgreSQL's own conversion over 10,000 times from 1901 to 2100, every
-- hour of the day, in a session zone that is not UTC
SET TIME ZONE 'America/St_Johns';
SELECT count(*) FILTER (WHERE loyalty._utc_date(t) = (t AT TIME ZONE 'UTC')::date) AS same_date, count(*) AS times
  FROM (SELECT timestamptz '1901-06-01 00:00+00' + (g * 631138.123456) * interval '1 second' AS t
          FROM generate_series(0, 9999) g) s;
SELECT loyalty._utc_date('2026-01-01 23:59:59.999999+00') AS last_microsecond,          -- 2026-01-01
       loyalty._utc_date('2026-01-01 23:30-05') AS evening_west,                         -- 2026-01-02
       loyalty._utc_date('1999-12-31 23:59:59.999999+00') AS before_2000,                -- 1999-12-31
       loyalty._utc_date('infinity') AS infinite, loyalty._utc_date(NULL) AS null_in;
SET TIME ZONE 'UTC';

-- RFM recency (rfm.c) counts the same days: at 01:00, an order of 23:00 the
-- day before is 1 day old (it was 0 in 24-hour periods), one of 00:30 too.
-- Fixed bounds: recency 0 scores 5, recency 1 scores 4.
SELECT (loyalty.configure_rfm(mode => 'fixed', recency_bounds => '{0.5,1.5,2.5,3.5}',
                              frequency_bounds => '{1,2,3,4}', monetary_bounds => '{10,20,30,40}')).mode;
SELECT loyalty.record_order('late', 'late-1', 10, '2026-03-01 23:00+00') > 0 AS late,
       loyalty.record_order('early', 'early-1', 10, '2026-03-01 00:30+00') > 0 AS early,
       loyalty.record_order('today', 'today-1', 10, '2026-03-02 00:10+00') > 0 AS today;
SELECT rescored FROM loyalty.refresh(as_of => '2026-03-02 01:00+00', fit_models => false);
SELECT customer_id, recency_days, r_score FROM loyalty.customer_segments ORDER BY customer_id;

-- ---- the reserved key prefix 'loyalty:' (src/capture.c; SQL loyalty._key_reserved)
SELECT loyalty._key_reserved('loyalty:x') AS prefixed, loyalty._key_reserved('loyalty:') AS bare_prefix,
       loyalty._key_reserved('loyalty') AS short, loyalty._key_reserved('Loyalty:x') AS other_case,
       loyalty._key_reserved('x:loyalty:') AS inside;
SELECT loyalty.earn('k', 5, 'first points', 'k-1') > 0 AS earned;   -- an account: the C path from here
SELECT pg_temp.err($$SELECT loyalty.earn('k', 5, 'x', 'loyalty:mine')$$) AS c_earn,
       pg_temp.err($$SELECT loyalty._earn_sql('k', 5, 'x', 'loyalty:mine')$$) AS sql_earn,
       pg_temp.err($$SELECT loyalty.redeem('k', 1, 'x', 'loyalty:mine')$$) AS c_redeem;
SELECT count(*) AS entries FROM loyalty.ledger WHERE customer_id = 'k';

-- ---- FIFO: first-expiring lots first, never-expiring last, then the oldest
-- lot (ledger.c LotCompare for the C redeem, loyalty._take_points in SQL).
-- Lots in order of writing: 100 expiring in 10 days, 50 in 5 days, 70 never,
-- 30 in 5 days. Redeeming 60 takes the 50, then 10 of the 30 (same expiry,
-- later lot): left 100, -, 70, 20. The same for both paths.
SELECT count(*) AS lots FROM (
    SELECT loyalty.earn(c, p, 'fifo', c || '-' || i, now() + e)
      FROM unnest(ARRAY['fifo_c', 'fifo_sql']) c,
           unnest(ARRAY[100, 50, 70, 30], ARRAY[interval '10 days', interval '5 days', NULL, interval '5 days'])
               WITH ORDINALITY AS l(p, e, i)
     ORDER BY c, i) x;
SELECT loyalty.redeem('fifo_c', 60, 'voucher', 'fifo_c-r') > 0 AS c_path,
       loyalty._redeem_sql('fifo_sql', 60, 'voucher', 'fifo_sql-r') > 0 AS sql_path;
SELECT l.customer_id, array_agg(l.remaining ORDER BY l.lot_id) AS remaining
  FROM loyalty.point_lots l WHERE l.customer_id LIKE 'fifo%' GROUP BY l.customer_id ORDER BY 1;
SELECT customer_id, balance, lifetime_earned, lifetime_redeemed FROM loyalty.accounts
 WHERE customer_id LIKE 'fifo%' ORDER BY 1;
SELECT count(*) AS ledger_mismatches FROM loyalty.verify_ledger();

-- leave a fresh install for the tests after this one
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
