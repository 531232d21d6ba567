-- Upgrade of the capture path: a shop at 0.1 with tracked orders (delivery
-- column, order points on) and a tracked customers table is re-attached to
-- the one C capture trigger by ALTER EXTENSION ... UPDATE; the 0.1 PL/pgSQL
-- triggers (to_jsonb of the shop's row) are gone and capture keeps working.
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty VERSION '0.1';
CREATE TABLE uc_orders (id int PRIMARY KEY, cust text, total numeric, at timestamptz, st text, dl timestamptz);
CREATE TABLE uc_people (id text PRIMARY KEY, name text, phone text);
INSERT INTO uc_orders VALUES (1, 'a', 10, '2026-01-01', 'paid', NULL);
INSERT INTO uc_people VALUES ('a', 'Ann', '123');
SELECT loyalty.track_orders('uc_orders', 'cust', 'total', 'at', 'id', 'st', ARRAY['paid']) AS backfilled;
SELECT loyalty.track_deliveries('uc_orders', 'dl');
SELECT loyalty.configure_rewards(earn_on_orders => true, earn_orders_since => '2025-01-01') IS NOT NULL AS earning;
SELECT loyalty.track_customers('uc_people', 'id', name_column => 'name', phone_column => 'phone') AS read;
INSERT INTO uc_orders VALUES (2, 'a', 20, '2026-01-02', 'paid', '2026-01-03');   -- captured by 0.1's triggers
ALTER EXTENSION loyalty UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'loyalty';
SELECT c.relname, t.tgname, p.proname
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid
 WHERE c.relname IN ('uc_orders', 'uc_people') AND NOT t.tgisinternal ORDER BY 1, 2;
SELECT count(*) AS old_trigger_functions FROM pg_proc
 WHERE pronamespace = 'loyalty'::regnamespace
   AND proname IN ('earn_order_points', 'capture_customer', 'capture_delivery', 'capture_order', 'capture_truncate',
                   'capture_customer_truncate');
-- capture works after the upgrade: orders, deliveries, points and profiles follow
INSERT INTO uc_orders VALUES (3, 'a', 30, '2026-01-04', 'paid', '2026-01-05');
UPDATE uc_people SET phone = '456' WHERE id = 'a';
SELECT loyalty.apply_events() AS applied;
SELECT order_ref, amount, counted FROM loyalty.orders ORDER BY 1;
SELECT order_ref, delivered_at FROM loyalty.deliveries ORDER BY 1;
SELECT kind, points, order_ref FROM loyalty.ledger ORDER BY entry_id;
SELECT customer_id, name, phone FROM loyalty.profiles;
TRUNCATE uc_orders;
TRUNCATE uc_people;
SELECT loyalty.apply_events() AS applied;
SELECT count(*) FILTER (WHERE counted) AS counted, (SELECT count(*) FROM loyalty.profiles) AS profiles FROM loyalty.orders;
SELECT sum(points) AS net_points FROM loyalty.ledger;
DROP TABLE uc_orders, uc_people;
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
