-- Intake API: record_order / record_refund, idempotency, bad input.
SET client_min_messages = warning;
SET TIME ZONE 'UTC';

-- a first order and its customer state
SELECT loyalty.record_order('c1', 'o1', 100.00, '2026-01-10 10:00+00') > 0 AS recorded;
SELECT customer_id, orders, repeat_orders, purchase_days, net_spend, avg_spend, first_order_at, last_order_at
  FROM loyalty.customer_state WHERE customer_id = 'c1';

-- replay: same values return the first result and change nothing
SELECT loyalty.record_order('c1', 'o1', 100.00, '2026-01-10 10:00+00') = (SELECT order_id FROM loyalty.orders WHERE order_ref = 'o1') AS same_id;
SELECT loyalty.record_order('c1', 'o1', 100.00) = (SELECT order_id FROM loyalty.orders WHERE order_ref = 'o1') AS same_id_default_time;
SELECT count(*) AS orders FROM loyalty.orders WHERE order_ref = 'o1';
-- same ref, other values: refused
SELECT loyalty.record_order('c1', 'o1', 99.00, '2026-01-10 10:00+00');
SELECT loyalty.record_order('c2', 'o1', 100.00, '2026-01-10 10:00+00');

-- more orders: two on one day count as one purchase day
SELECT loyalty.record_order('c1', 'o2', 50, '2026-01-20 09:00+00') > 0 AS ok;
SELECT loyalty.record_order('c1', 'o3', 25.50, '2026-01-20 18:00+00') > 0 AS ok;
SELECT orders, repeat_orders, purchase_days, net_spend, avg_spend, first_day_spend, last_order_at
  FROM loyalty.customer_state WHERE customer_id = 'c1';

-- bad input: each a clear error, nothing written
\set VERBOSITY default
SELECT loyalty.record_order(NULL, 'x1', 10);
SELECT loyalty.record_order('  ', 'x1', 10);
SELECT loyalty.record_order('c9', NULL, 10);
SELECT loyalty.record_order('c9', 'x1', NULL);
SELECT loyalty.record_order('c9', 'x1', -5);
SELECT loyalty.record_order('c9', 'x1', 'NaN');
SELECT loyalty.record_order('c9', 'x1', 'Infinity');
SELECT loyalty.record_order('c9', 'x1', 10, 'infinity');
SELECT count(*) AS nothing_written FROM loyalty.orders WHERE order_ref = 'x1' OR customer_id = 'c9';
\set VERBOSITY terse

-- refunds: partial, replay, the rest, too much
SELECT loyalty.record_refund('o2', 20) AS refunded;
SELECT loyalty.record_refund('o2', 20) AS replayed_not_doubled;
SELECT refunded FROM loyalty.orders WHERE order_ref = 'o2';
SELECT loyalty.record_refund('o2', 20, 'refund-2') AS second_refund_with_own_key;
SELECT loyalty.record_refund('o2', 20, 'refund-3');
SELECT loyalty.record_refund('o2', 5, 'refund-2');
SELECT loyalty.record_refund('o2') AS rest;
SELECT loyalty.record_refund('o2') AS rest_replayed;
SELECT loyalty.record_refund('o2', 1, 'refund-4');
SELECT refunded, counts FROM loyalty.orders WHERE order_ref = 'o2';
-- a fully refunded order no longer counts
SELECT orders, purchase_days, net_spend, refunded FROM loyalty.customer_state WHERE customer_id = 'c1';
SELECT loyalty.record_refund('nope', 1);
SELECT loyalty.record_refund(NULL);
SELECT loyalty.record_refund('o1', 0);
SELECT loyalty.record_refund('o1', -3);
SELECT loyalty.record_refund('o1', 'NaN');
SELECT loyalty.record_refund('o1', 1, '');
SELECT loyalty.record_refund('o1', 100.01);
SELECT count(*) AS refunds_of_o1 FROM loyalty.refunds WHERE order_ref = 'o1';

-- a customer whose only order is refunded in full leaves customer state
SELECT loyalty.record_order('c3', 'o30', 10, '2026-01-05') > 0 AS ok;
SELECT loyalty.record_refund('o30') AS refunded;
SELECT count(*) AS c3_state FROM loyalty.customer_state WHERE customer_id = 'c3';

-- zero-amount orders (free samples) count
SELECT loyalty.record_order('c4', 'o40', 0, '2026-01-05') > 0 AS ok;
SELECT orders, net_spend FROM loyalty.customer_state WHERE customer_id = 'c4';

-- privileges: nothing for PUBLIC, the app role gets the API
SELECT has_function_privilege('public', 'loyalty.record_order(text,text,numeric,timestamptz)', 'EXECUTE') AS public_can_record;
SELECT has_function_privilege('loyalty_app', 'loyalty.record_order(text,text,numeric,timestamptz)', 'EXECUTE') AS app_can_record;
SELECT has_function_privilege('loyalty_app', 'loyalty.track_orders(text,text,text,text,text,text,text[],boolean,integer,text,text,text,text,text)', 'EXECUTE') AS app_can_track;
SELECT has_table_privilege('loyalty_reader', 'loyalty.segment_summary', 'SELECT') AS reader_sees_summary;
SELECT has_table_privilege('loyalty_reader', 'loyalty.orders', 'SELECT') AS reader_sees_orders;
-- every function pins search_path, except plain C math, SQL-standard bodies
-- (RETURN ...: names are bound when created, so the caller's search_path plays
-- no part; they stay inlinable) and these schema-qualified entry points (they
-- resolve the shop's table name as the caller means it)
SELECT p.proname, l.lanname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
 WHERE n.nspname = 'loyalty' AND p.prokind IN ('f', 'p') AND p.proconfig IS NULL
   AND NOT (l.lanname = 'c' AND p.provolatile = 'i') AND p.prosqlbody IS NULL
 ORDER BY 1;
-- SECURITY DEFINER functions all pin search_path
SELECT count(*) AS definer_unpinned FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'loyalty' AND p.prosecdef AND p.proconfig IS NULL;

-- the app role can record without any table privilege
CREATE ROLE intake_app_user LOGIN IN ROLE loyalty_app;
SET ROLE intake_app_user;
SELECT loyalty.record_order('c5', 'o50', 12.5, '2026-01-06') > 0 AS app_recorded;
SELECT count(*) FROM loyalty.orders;
RESET ROLE;
DROP ROLE intake_app_user;
