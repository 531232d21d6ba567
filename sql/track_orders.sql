-- track_orders: triggers, backfill, key types, rejected rows, bad input.
SET client_min_messages = warning;
SET TIME ZONE 'UTC';

CREATE TABLE shop_orders (
    id          bigint PRIMARY KEY,
    customer_id bigint,
    total       numeric(10,2),
    created_at  timestamptz,
    status      text,
    note        text
);
INSERT INTO shop_orders VALUES
    (1, 42, 10.00, '2026-01-01 10:00+00', 'paid', NULL),
    (2, 42, 20.00, '2026-01-02 10:00+00', 'paid', NULL),
    (3, 43, 30.00, '2026-01-03 10:00+00', 'pending', NULL),
    (4, 44, 40.00, '2026-01-04 10:00+00', 'paid', NULL);

SELECT loyalty.track_orders('public.shop_orders',
         customer_column   => 'customer_id',
         amount_column     => 'total',
         ordered_at_column => 'created_at',
         order_id_column   => 'id',
         status_column     => 'status',
         counted_statuses  => ARRAY['paid']) AS backfilled;
SELECT customer_id, orders, net_spend FROM loyalty.customer_state ORDER BY customer_id;

-- rerunning the attachment (and its backfill) never double counts
SELECT loyalty.track_orders('public.shop_orders', 'customer_id', 'total', 'created_at', 'id', 'status', ARRAY['paid']) AS backfilled_again;
CALL loyalty.backfill('public.shop_orders', 2);
SELECT customer_id, orders, net_spend FROM loyalty.customer_state ORDER BY customer_id;

-- the shop's writes are captured and applied in order
INSERT INTO shop_orders VALUES (5, 43, 5.00, '2026-01-05 10:00+00', 'paid', NULL);
UPDATE shop_orders SET status = 'paid' WHERE id = 3;          -- pending -> paid: now counts
UPDATE shop_orders SET note = 'gift wrap' WHERE id = 4;       -- untracked column: no event
SELECT count(*) AS events_queued FROM loyalty.events;
SELECT loyalty.apply_events() AS applied;
SELECT customer_id, orders, net_spend FROM loyalty.customer_state ORDER BY customer_id;
UPDATE shop_orders SET status = 'cancelled' WHERE id = 2;     -- out of the counted set: reversed
DELETE FROM shop_orders WHERE id = 4;                         -- delete: reversed
UPDATE shop_orders SET total = 15.00 WHERE id = 1;            -- amount change
UPDATE shop_orders SET customer_id = 45 WHERE id = 5;         -- order moves to another customer
SELECT loyalty.apply_events() AS applied;
SELECT customer_id, orders, net_spend FROM loyalty.customer_state ORDER BY customer_id;
-- a change of order id: the old order is gone, the new one counts
UPDATE shop_orders SET id = 50 WHERE id = 5;
SELECT loyalty.apply_events() AS applied;
SELECT order_ref, customer_id, counted FROM loyalty.orders WHERE order_ref IN ('5', '50') ORDER BY 1;
-- partial refund of a tracked order, then the shop re-sends the same row: no double effect
SELECT loyalty.record_refund('1', 5.00) AS refunded;
UPDATE shop_orders SET status = 'paid' WHERE id = 1;
SELECT loyalty.apply_events() AS applied;
SELECT customer_id, orders, net_spend FROM loyalty.customer_state WHERE customer_id = '42';

-- the shop's own role needs no privilege on loyalty's tables
CREATE ROLE shop_writer;
GRANT INSERT, UPDATE, SELECT ON shop_orders TO shop_writer;
SET ROLE shop_writer;
INSERT INTO shop_orders VALUES (12, 49, 12.00, '2026-01-06', 'paid', NULL);
RESET ROLE;
SELECT loyalty.apply_events() AS applied;
SELECT customer_id, orders, net_spend FROM loyalty.customer_state WHERE customer_id = '49';
-- with an index on the queue the trigger goes through SQL (as the table owner): same result
CREATE INDEX events_test_idx ON loyalty.events (event_id);
SET ROLE shop_writer;
UPDATE shop_orders SET total = 13.00 WHERE id = 12;
RESET ROLE;
SELECT order_ref, amount FROM loyalty.events;
DROP INDEX loyalty.events_test_idx;
SELECT loyalty.apply_events() AS applied;
SELECT customer_id, orders, net_spend FROM loyalty.customer_state WHERE customer_id = '49';
DROP OWNED BY shop_writer;
DROP ROLE shop_writer;

-- rows loyalty cannot use never fail the shop's write: they are kept
INSERT INTO shop_orders VALUES (6, NULL, 10.00, '2026-01-06', 'paid', NULL);
INSERT INTO shop_orders VALUES (7, 46, -10.00, '2026-01-06', 'paid', NULL);
INSERT INTO shop_orders VALUES (8, 46, NULL, '2026-01-06', 'paid', NULL);
INSERT INTO shop_orders VALUES (9, 46, 10.00, NULL, 'paid', NULL);
INSERT INTO shop_orders VALUES (10, 46, 10.00, 'infinity', 'paid', NULL);
SELECT count(*) AS shop_rows FROM shop_orders;
SELECT loyalty.apply_events() AS applied;
SELECT order_ref, reason FROM loyalty.rejected_rows WHERE resolved_at IS NULL ORDER BY order_ref::int;
SELECT source, reason, rows FROM loyalty.rejected_summary ORDER BY reason;
SELECT count(*) AS customer_46 FROM loyalty.customer_state WHERE customer_id = '46';
-- a valid order that turns invalid stops counting, and is rejected
UPDATE shop_orders SET total = -1 WHERE id = 50;
SELECT loyalty.apply_events() AS applied;
SELECT order_ref, counted FROM loyalty.orders WHERE order_ref = '50';
-- the shop fixes the rows; replay accepts them
UPDATE shop_orders SET customer_id = 47 WHERE id = 6;
UPDATE shop_orders SET total = 10.00 WHERE id IN (7, 8, 50);
UPDATE shop_orders SET created_at = '2026-01-06' WHERE id IN (9, 10);
SELECT loyalty.apply_events() AS applied;
SELECT count(*) AS still_open FROM loyalty.rejected_rows WHERE resolved_at IS NULL;
-- replay covers rows fixed while the triggers were off
INSERT INTO shop_orders VALUES (11, NULL, 11.00, '2026-01-07', 'paid', NULL);
SELECT loyalty.apply_events() AS applied;
ALTER TABLE shop_orders DISABLE TRIGGER loyalty_capture_orders;
UPDATE shop_orders SET customer_id = 48 WHERE id = 11;
ALTER TABLE shop_orders ENABLE TRIGGER loyalty_capture_orders;
SELECT loyalty.replay_rejected('public.shop_orders') AS accepted_now;
SELECT customer_id, orders, net_spend FROM loyalty.customer_state WHERE customer_id IN ('46', '47', '48') ORDER BY 1;

-- TRUNCATE of the shop table reverses everything from it
CREATE TABLE trunc_orders (id int PRIMARY KEY, cust text, amount numeric, at timestamptz);
INSERT INTO trunc_orders VALUES (201, 't1', 5, '2026-01-01'), (202, 't2', 6, '2026-01-01');
SELECT loyalty.track_orders('trunc_orders', 'cust', 'amount', 'at', 'id') AS backfilled;
SELECT count(*) AS t_customers_before FROM loyalty.customer_state WHERE customer_id IN ('t1', 't2');
TRUNCATE trunc_orders;
SELECT loyalty.apply_events() AS applied;
SELECT count(*) AS t_customers FROM loyalty.customer_state WHERE customer_id IN ('t1', 't2');

-- customer keys of type integer, uuid and text; amounts int/float; time as timestamp/date
CREATE TABLE k_int (id int PRIMARY KEY, cust integer, amount integer, at timestamp);
CREATE TABLE k_uuid (id uuid PRIMARY KEY, cust uuid, amount double precision, at date);
CREATE TABLE k_text (id text PRIMARY KEY, cust text, amount real, at timestamptz);
INSERT INTO k_int VALUES (100, 7, 12, '2026-01-01 08:00');
INSERT INTO k_uuid VALUES ('00000000-0000-0000-0000-00000000000a', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 9.5, '2026-01-02');
INSERT INTO k_text VALUES ('T-1', 'alice@example.com', 3.25, '2026-01-03 08:00+00');
SELECT loyalty.track_orders('k_int', 'cust', 'amount', 'at', 'id') + loyalty.track_orders('k_uuid', 'cust', 'amount', 'at', 'id')
     + loyalty.track_orders('k_text', 'cust', 'amount', 'at', 'id') AS backfilled;
INSERT INTO k_int VALUES (101, 7, 8, '2026-01-04 08:00');
INSERT INTO k_int VALUES (1, 7, 99, '2026-01-04 08:00');   -- id 1 is shop_orders' order 1
INSERT INTO k_uuid VALUES ('00000000-0000-0000-0000-00000000000b', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'NaN', '2026-01-05');
SELECT loyalty.apply_events() AS applied;
SELECT customer_id, orders, net_spend, first_order_at FROM loyalty.customer_state
 WHERE customer_id IN ('7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'alice@example.com') ORDER BY 1;
SELECT order_ref, reason FROM loyalty.rejected_rows WHERE order_ref IN ('00000000-0000-0000-0000-00000000000b', '1') ORDER BY 1;
-- the same customer through the app API
SELECT loyalty.record_order('7', 'app-1', 1, '2026-01-09') > 0 AS ok;
SELECT orders, net_spend FROM loyalty.customer_state WHERE customer_id = '7';
-- an order id tracked from one table is refused from another source
SELECT loyalty.record_order('7', '1', 1, '2026-01-09');

-- bad input to track_orders: clear errors, nothing attached
\set VERBOSITY default
SELECT loyalty.track_orders('public.nope', 'customer_id', 'total', 'created_at', 'id');
SELECT loyalty.track_orders(NULL, 'customer_id', 'total', 'created_at', 'id');
SELECT loyalty.track_orders('shop_orders', 'customer', 'total', 'created_at', 'id');
SELECT loyalty.track_orders('shop_orders', 'customer_id', 'note', 'created_at', 'id');
SELECT loyalty.track_orders('shop_orders', 'customer_id', 'total', 'note', 'id');
SELECT loyalty.track_orders('shop_orders', 'customer_id', 'total', 'created_at', 'customer_id');
SELECT loyalty.track_orders('shop_orders', 'customer_id', 'total', 'created_at', 'id', 'status');
SELECT loyalty.track_orders('shop_orders', 'customer_id', 'total', 'created_at', 'id', NULL, ARRAY['paid']);
SELECT loyalty.track_orders('shop_orders', 'customer_id', 'total', 'created_at', 'id', 'status', ARRAY['paid', NULL]);
SELECT loyalty.track_orders('shop_orders', 'customer_id', 'total', 'created_at', 'id', batch_size => 0);
SELECT loyalty.track_orders('loyalty.orders', 'customer_id', 'amount', 'ordered_at', 'order_ref');
CREATE VIEW v_orders AS SELECT * FROM shop_orders;
SELECT loyalty.track_orders('v_orders', 'customer_id', 'total', 'created_at', 'id');
-- identifiers crafted for SQL injection are just names that do not exist
SELECT loyalty.track_orders('shop_orders; DROP TABLE shop_orders; --', 'customer_id', 'total', 'created_at', 'id');
SELECT loyalty.track_orders('shop_orders', 'customer_id"; DROP TABLE shop_orders; --', 'total', 'created_at', 'id');
SELECT loyalty.track_orders('shop_orders', 'customer_id', 'total', 'created_at', 'id', 'status'')); DROP TABLE shop_orders; --', ARRAY['paid']);
\set VERBOSITY terse
SELECT count(*) AS shop_rows_intact FROM shop_orders;
SELECT relation_name FROM loyalty.sources ORDER BY source_id;
-- a column the shop renames later: rows are kept as rejected, the write succeeds
ALTER TABLE k_text RENAME COLUMN amount TO amount_eur;
INSERT INTO k_text VALUES ('T-2', 'alice@example.com', 4, '2026-01-08');
SELECT loyalty.apply_events() AS applied;
SELECT reason FROM loyalty.rejected_rows WHERE order_ref = 'T-2';
SELECT loyalty.track_orders('k_text', 'cust', 'amount_eur', 'at', 'id') AS backfilled;
SELECT count(*) AS t2_open FROM loyalty.rejected_rows WHERE order_ref = 'T-2' AND resolved_at IS NULL;
-- untrack: triggers gone, orders stay
SELECT loyalty.untrack_orders('k_text');
INSERT INTO k_text VALUES ('T-3', 'alice@example.com', 4, '2026-01-08');
SELECT count(*) AS events_after_untrack FROM loyalty.events;
SELECT count(*) AS k_text_orders FROM loyalty.orders WHERE source_id = (SELECT source_id FROM loyalty.sources WHERE relation_name = 'k_text');
SELECT loyalty.untrack_orders('v_orders');
-- the trigger function is not for direct calls
SELECT loyalty.capture_row();
