-- The order lifecycle from the shop's own tables (issue 14): the fulfilment
-- columns of loyalty.track_orders and a tracked carrier-events table, read
-- by the one C capture trigger and applied through the operations writers.
-- The shop's system inserts an order when it is placed and updates it when it
-- is paid, dispatched and delivered; its carrier integration inserts one row
-- per tracking event. Nothing here calls record_fulfilment or
-- record_shipment_event. Scans at fixed clocks show the issues the deadlines
-- say (worked out by hand below: Europe/Berlin, Monday to Friday, cut-off
-- 14:00, dispatch within 1 working day, delivery within 2, stall after 2 days;
-- Berlin is UTC+1 until Sunday 29 March 2026).
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
SET TIME ZONE 'UTC';
\set SHOW_CONTEXT never

CREATE FUNCTION pg_temp.err(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

SELECT time_zone, dispatch_within, deliver_within, stall_after
  FROM loyalty.configure_operations(time_zone => 'Europe/Berlin', working_days => ARRAY[1, 2, 3, 4, 5], cutoff => '14:00',
                                    dispatch_within => '1 day', deliver_within => '2 days', stall_after => '2 days');

-- The issues recorded, and whether they are exactly those the deadlines say.
CREATE FUNCTION pg_temp.issues() RETURNS TABLE (order_ref text, kind text, opened_at timestamptz, resolved_at timestamptz)
LANGUAGE sql AS $$
    SELECT i.order_ref, i.kind, i.opened_at, i.resolved_at FROM loyalty.order_issues i ORDER BY 1, 2
$$;
-- Apply what was captured (the worker's job), scan at a fixed clock, and
-- check the recorded issues equal those the deadlines say.
CREATE FUNCTION pg_temp.scan(p_as_of timestamptz)
RETURNS TABLE (opened bigint, resolved bigint, open_issues bigint, as_deadlines_say boolean)
LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    PERFORM loyalty.apply_events();
    SELECT * INTO s FROM loyalty.scan_operations(p_as_of);
    -- a statement of its own: it sees what the scan wrote
    RETURN QUERY
    SELECT s.opened, s.resolved, s.open_issues,
           NOT EXISTS ((SELECT i.order_ref, i.kind, i.opened_at, i.resolved_at FROM loyalty.order_issues i
                        EXCEPT SELECT a.order_ref, a.kind, a.opened_at, a.resolved_at FROM loyalty.issues_as_of(p_as_of) a)
                       UNION ALL
                       (SELECT a.order_ref, a.kind, a.opened_at, a.resolved_at FROM loyalty.issues_as_of(p_as_of) a
                        EXCEPT SELECT i.order_ref, i.kind, i.opened_at, i.resolved_at FROM loyalty.order_issues i));
END
$$;

-- ---- the shop's orders table; one order is there before loyalty is attached
CREATE TABLE tf_orders (
    id           text PRIMARY KEY,
    customer     text NOT NULL,
    total        numeric NOT NULL,
    placed_at    timestamptz NOT NULL,
    status       text NOT NULL DEFAULT 'placed',
    paid_at      timestamptz,
    shipped_at   timestamp,          -- the shop's system writes UTC without a zone
    delivered_at timestamptz,
    promised_on  date,               -- a date promise: by the end of that day in Berlin
    ship_by      timestamptz,        -- the order's own dispatch deadline
    note         text
);
INSERT INTO tf_orders VALUES ('T0', 'zoe', 25, '2026-03-16 08:00', 'delivered', '2026-03-16 08:00', '2026-03-16 15:00',
                              '2026-03-18 10:00', '2026-03-19', NULL, NULL);

-- only typed columns: a text, a domain over timestamptz, a missing column are refused
CREATE DOMAIN tf_moment AS timestamptz;
ALTER TABLE tf_orders ADD COLUMN paid_domain tf_moment;
SELECT pg_temp.err($$SELECT loyalty.track_orders('tf_orders', 'customer', 'total', 'placed_at', 'id', paid_at_column => 'note')$$);
SELECT pg_temp.err($$SELECT loyalty.track_orders('tf_orders', 'customer', 'total', 'placed_at', 'id', paid_at_column => 'paid_domain')$$);
SELECT pg_temp.err($$SELECT loyalty.track_orders('tf_orders', 'customer', 'total', 'placed_at', 'id', promised_at_column => 'promise')$$);
SELECT count(*) AS sources_after_refusals FROM loyalty.sources;

SELECT loyalty.track_orders('tf_orders', 'customer', 'total', 'placed_at', 'id', 'status',
                            ARRAY['placed', 'paid', 'shipped', 'delivered'],
                            paid_at_column => 'paid_at', dispatched_at_column => 'shipped_at',
                            delivered_at_column => 'delivered_at', promised_at_column => 'promised_on',
                            dispatch_by_column => 'ship_by') AS backfilled;
-- the backfill filled the existing order's stages, its promise and its delivery
SELECT order_ref, paid_at, dispatched_at, delivered_at, dispatch_by FROM loyalty.order_lifecycle ORDER BY 1;
SELECT order_ref, revision, promised_at, promised_on FROM loyalty.order_promises ORDER BY 1, 2;
SELECT order_ref, delivered_at FROM loyalty.deliveries ORDER BY 1;

-- ---- the carrier integration's table (one event there already)
CREATE TABLE tf_tracking (
    id          bigserial PRIMARY KEY,
    order_no    text,
    status      text,
    happened_at timestamptz,
    tracking_no text,
    payload     jsonb
);
INSERT INTO tf_tracking (order_no, status, happened_at, tracking_no, payload)
VALUES ('T0', 'Delivered_001', '2026-03-18 09:30', 'TRK-0', '{"location": "Leipzig"}');
SELECT pg_temp.err($$SELECT loyalty.track_shipment_events('tf_tracking', 'order_no', 'status', 'tracking_no')$$);
SELECT pg_temp.err($$SELECT loyalty.track_shipment_events('tf_tracking', 'order_no', 'status', 'happened_at', detail_column => 'id')$$);
SELECT loyalty.track_shipment_events('tf_tracking', 'order_no', 'status', 'happened_at',
                                     tracking_code_column => 'tracking_no', detail_column => 'payload') AS events_read;
SELECT order_ref, status, carrier_status, at, tracking_code, detail FROM loyalty.shipment_events ORDER BY event_id;

-- a label column of the shop's own type is read through its output function,
-- never through a cast the type's owner may define (docs/capture.md)
CREATE TYPE tf_carrier_status AS ENUM ('InTransit', 'Delivered_001');
CREATE FUNCTION tf_no_cast(tf_carrier_status) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the shop''s cast was called';
END $$;
CREATE CAST (tf_carrier_status AS text) WITH FUNCTION tf_no_cast(tf_carrier_status);
CREATE TABLE tf_enum_tracking (order_no text, status tf_carrier_status, at timestamptz);
INSERT INTO tf_enum_tracking VALUES ('T0', 'InTransit', '2026-03-17 08:00');
SELECT loyalty.track_shipment_events('tf_enum_tracking', 'order_no', 'status', 'at') AS read;
INSERT INTO tf_enum_tracking VALUES ('T0', 'InTransit', '2026-03-17 12:00');
SELECT loyalty.apply_events() AS applied;
SELECT order_ref, status, carrier_status, at FROM loyalty.shipment_events WHERE at < '2026-03-18' ORDER BY at;
SELECT loyalty.untrack_shipment_events('tf_enum_tracking');

-- ---- Monday 23 March
-- T1 (ann): the checkout promised Fri 27; the shop's system corrected it to
-- Thu 26 before loyalty applied the first: both are in the ledger, revision
-- 1 is Fri 27. Paid 10:30 local, before the cut-off: dispatch by the end of
-- Tue 24 (23:00 UTC).
-- T2 (bob): promised for Wed 25 (later revised to Fri 27).
-- T3 (cat): its own dispatch deadline, Mon 16:00 UTC.
INSERT INTO tf_orders (id, customer, total, placed_at, promised_on) VALUES ('T1', 'ann', 80, '2026-03-23 09:00', '2026-03-27');
UPDATE tf_orders SET promised_on = '2026-03-26' WHERE id = 'T1';
INSERT INTO tf_orders (id, customer, total, placed_at, promised_on) VALUES ('T2', 'bob', 120, '2026-03-23 10:00', '2026-03-25');
INSERT INTO tf_orders (id, customer, total, placed_at, ship_by) VALUES ('T3', 'cat', 40, '2026-03-23 11:00', '2026-03-23 16:00');
UPDATE tf_orders SET status = 'paid', paid_at = '2026-03-23 09:30' WHERE id = 'T1';
UPDATE tf_orders SET status = 'paid', paid_at = '2026-03-23 10:05' WHERE id = 'T2';
UPDATE tf_orders SET status = 'paid', paid_at = '2026-03-23 11:00' WHERE id = 'T3';
UPDATE tf_orders SET note = 'gift wrap' WHERE id = 'T1';       -- an untracked column: nothing captured
SELECT count(*) AS captured FROM loyalty.events;
-- Mon 18:00 UTC: T3 missed its own dispatch deadline
SELECT * FROM pg_temp.scan('2026-03-23 18:00');
SELECT * FROM pg_temp.issues();
SELECT order_ref, revision, promised_on FROM loyalty.order_promises WHERE order_ref = 'T1' ORDER BY revision;
SELECT order_ref, paid_at, dispatched_at, dispatch_by FROM loyalty.order_lifecycle WHERE order_ref LIKE 'T_' ORDER BY 1;

-- ---- Tuesday 24 March: dispatched (T3 late); the carrier scans T1 and T2
UPDATE tf_orders SET status = 'shipped', shipped_at = '2026-03-24 08:00' WHERE id = 'T3';
UPDATE tf_orders SET status = 'shipped', shipped_at = '2026-03-24 10:00' WHERE id = 'T1';
UPDATE tf_orders SET status = 'shipped', shipped_at = '2026-03-24 16:00' WHERE id = 'T2';
-- T4 (dan) comes in already paid; T5 (eve) is paid and dispatched at once
INSERT INTO tf_orders (id, customer, total, placed_at, status, paid_at) VALUES ('T4', 'dan', 45, '2026-03-24 09:00', 'paid', '2026-03-24 09:00');
INSERT INTO tf_orders (id, customer, total, placed_at, status, paid_at, shipped_at)
VALUES ('T5', 'eve', 60, '2026-03-24 09:30', 'shipped', '2026-03-24 09:30', '2026-03-24 12:00');
INSERT INTO tf_tracking (order_no, status, happened_at, tracking_no, payload) VALUES
    ('T1', 'InTransit', '2026-03-24 14:00', 'TRK-1', '{"location": "Berlin hub"}'),
    ('T2', 'in transit', '2026-03-24 18:00', 'TRK-2', NULL),
    ('T5', 'picked_up', '2026-03-24 17:00', 'TRK-5', '"collected"');
SELECT * FROM pg_temp.scan('2026-03-24 20:00');
SELECT * FROM pg_temp.issues();

-- ---- Wednesday 25 March
-- T2's promise is revised to Fri 27: a new revision; lateness stays measured
-- against the first promise (end of Wed 25 in Berlin = 23:00 UTC).
UPDATE tf_orders SET promised_on = '2026-03-27' WHERE id = 'T2';
-- T4: the shop's system writes a nonsense dispatch time. The write succeeds;
-- the row is quarantined (and does not count while it is).
UPDATE tf_orders SET status = 'shipped', shipped_at = '2200-01-01 00:00' WHERE id = 'T4';
SELECT count(*) AS t4_in_shop FROM tf_orders WHERE id = 'T4' AND shipped_at = '2200-01-01';
SELECT loyalty.apply_events() > 0 AS applied;
SELECT order_ref, reason FROM loyalty.rejected_rows WHERE resolved_at IS NULL ORDER BY 1;
SELECT counted FROM loyalty.orders WHERE order_ref = 'T4';
SELECT order_ref, revision, promised_on FROM loyalty.order_promises WHERE order_ref = 'T2' ORDER BY revision;
-- the shop fixes the row (dispatched Wed 10:00): applied, the rejection resolved
UPDATE tf_orders SET shipped_at = '2026-03-25 10:00' WHERE id = 'T4';
SELECT loyalty.apply_events() > 0 AS applied;
SELECT count(*) AS open_rejections FROM loyalty.rejected_rows WHERE resolved_at IS NULL;
SELECT counted FROM loyalty.orders WHERE order_ref = 'T4';
-- Thu 06:00 UTC: T2 not delivered by its first promise
SELECT * FROM pg_temp.scan('2026-03-26 06:00');
SELECT * FROM pg_temp.issues();

-- ---- Thursday 26 and Friday 27 March
-- T1: out for delivery and delivered by the carrier (AfterShip), the shop's
-- row follows later: delivered at the earlier time, before its promise.
-- A neighbour's delivery in the carrier's own words: unknown, never guessed.
-- T2: no carrier scan since Tue 18:00: stalled from Thu 18:00 until the scan
-- of Fri 08:00; delivered Fri 09:00, late against the first promise.
-- T5: returned to sender (17TRACK) Thu 10:00: delivery_failed; its delivery
-- was due by the end of Thu 26 (two working days after Tue): late_delivery.
-- T3 and T4 are never scanned by the carrier: stalled two days after their
-- dispatch (T3 Thu 08:00, T4 Fri 10:00); T3 is not delivered by the end of
-- Thu (two working days after Tue): late_delivery. T4's delivery is due by
-- the end of Fri (23:00 UTC): not late at 18:00.
INSERT INTO tf_tracking (order_no, status, happened_at, tracking_no, payload) VALUES
    ('T1', 'OutForDelivery', '2026-03-26 08:00', 'TRK-1', NULL),
    ('T1', 'Delivered_001', '2026-03-26 12:00', 'TRK-1', '{"signed_by": "A. Ann"}'),
    ('T1', 'Zugestellt beim Nachbarn', '2026-03-26 12:05', 'TRK-1', NULL),
    ('T5', 'Exception_Returned', '2026-03-26 10:00', 'TRK-5', NULL),
    ('T2', 'OutForDelivery', '2026-03-27 08:00', 'TRK-2', NULL);
UPDATE tf_orders SET status = 'delivered', delivered_at = '2026-03-26 15:00' WHERE id = 'T1';
UPDATE tf_orders SET status = 'delivered', delivered_at = '2026-03-27 09:00' WHERE id = 'T2';
-- bad carrier rows are quarantined; the integration's inserts never fail
-- (one open rejection per order and table, with the newest reason:
-- replay_rejected() reads every row of the order again)
INSERT INTO tf_tracking (order_no, status, happened_at, tracking_no) VALUES
    ('T4', '   ', '2026-03-26 09:00', 'TRK-4'),
    ('T4', 'in_transit', NULL, 'TRK-4'),
    ('T4', 'in_transit', '1900-01-01 00:00', 'TRK-4');
SELECT count(*) AS tracking_rows FROM tf_tracking;
-- a webhook delivered twice: the same event again changes nothing
INSERT INTO tf_tracking (order_no, status, happened_at, tracking_no, payload)
VALUES ('T1', 'InTransit', '2026-03-24 14:00', 'TRK-1', '{"location": "Berlin hub"}');
SELECT * FROM pg_temp.scan('2026-03-27 18:00');
SELECT * FROM pg_temp.issues();
SELECT order_ref, status, carrier_status, at, detail FROM loyalty.shipment_events WHERE order_ref <> 'T0' ORDER BY order_ref, at;
SELECT order_ref, reason FROM loyalty.rejected_rows WHERE resolved_at IS NULL ORDER BY rejected_id;
SELECT order_ref, dispatched_at, delivered_at, first_promise, promise_revisions, last_status
  FROM loyalty.order_stages ORDER BY 1;

-- ---- replays change nothing: the whole table captured again (re-attach with
-- its backfill, the batch-committing backfill, the carrier table read again)
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM loyalty.order_promises) AS promises,
       (SELECT count(*) FROM loyalty.shipment_events) AS carrier_events,
       (SELECT max(updated_at) FROM loyalty.order_lifecycle) AS lifecycle_changed,
       (SELECT string_agg(order_ref || kind || opened_at || coalesce(resolved_at::text, '-'), ',' ORDER BY order_ref, kind)
          FROM loyalty.order_issues) AS issues;
SELECT loyalty.track_orders('tf_orders', 'customer', 'total', 'placed_at', 'id') AS backfilled_again;
CALL loyalty.backfill('tf_orders', 2);
SELECT loyalty.track_shipment_events('tf_tracking', 'order_no', 'status', 'happened_at') AS read_again;
SELECT count(*) AS operations_changes FROM loyalty.operations_changes;
SELECT * FROM pg_temp.scan('2026-03-27 18:05');
SELECT (SELECT count(*) FROM loyalty.order_promises) = b.promises AS same_promises,
       (SELECT count(*) FROM loyalty.shipment_events) = b.carrier_events AS same_carrier_events,
       (SELECT max(updated_at) FROM loyalty.order_lifecycle) = b.lifecycle_changed AS lifecycle_untouched,
       (SELECT string_agg(order_ref || kind || opened_at || coalesce(resolved_at::text, '-'), ',' ORDER BY order_ref, kind)
          FROM loyalty.order_issues) = b.issues AS same_issues
  FROM before b;
-- re-attaching without naming the columns kept them; '' stops tracking one
SELECT paid_at_column, dispatched_at_column, delivered_at_column, promised_at_column, dispatch_by_column
  FROM loyalty.sources WHERE relation_name = 'tf_orders';
SELECT loyalty.track_orders('tf_orders', 'customer', 'total', 'placed_at', 'id', dispatch_by_column => '', backfill => false);
SELECT dispatch_by_column IS NULL AS dispatch_by_untracked FROM loyalty.sources WHERE relation_name = 'tf_orders';
UPDATE tf_orders SET ship_by = '2026-03-28 10:00', note = 'x' WHERE id = 'T3';
SELECT count(*) AS captured_for_ship_by FROM loyalty.events;

-- ---- a timestamp promise means by that moment; track_deliveries (0.1's API)
-- is the delivery column of track_orders
CREATE TABLE tf_spare (id bigint PRIMARY KEY, customer bigint, total numeric, placed timestamptz,
                       promise timestamptz, delivered timestamptz);
INSERT INTO tf_spare VALUES (7, 70, 10, '2026-03-23 12:00', '2026-03-25 12:00', '2026-03-25 18:00');
SELECT loyalty.track_orders('tf_spare', 'customer', 'total', 'placed', 'id', promised_at_column => 'promise') AS backfilled;
SELECT loyalty.track_deliveries('tf_spare', 'delivered');
SELECT order_ref, revision, promised_at, promised_on FROM loyalty.order_promises WHERE order_ref = '7';
SELECT order_ref, delivered_at FROM loyalty.order_lifecycle WHERE order_ref = '7';
SELECT order_ref, delivered_at FROM loyalty.deliveries WHERE order_ref = '7';
-- delivered on the promised day but after the promised moment: late. No
-- dispatch time: it counts as dispatched at delivery (dispatch was due by
-- the end of Tue 24 in Berlin, from the order time); no stall after delivery.
SELECT * FROM pg_temp.scan('2026-03-28 00:00');
SELECT order_ref, kind, opened_at, resolved_at FROM loyalty.order_issues WHERE order_ref = '7';
SELECT loyalty.track_deliveries('tf_spare', NULL);
SELECT delivered_at_column IS NULL AS delivery_untracked, promised_at_column FROM loyalty.sources WHERE relation_name = 'tf_spare';

-- ---- another tracked table dropped: untrack and replay still work, and a
-- dropped table itself can be untracked
CREATE TABLE tf_gone (id text PRIMARY KEY, customer text, total numeric, placed timestamptz);
SELECT loyalty.track_orders('tf_gone', 'customer', 'total', 'placed', 'id') AS backfilled;
CREATE TABLE tf_gone_tracking (order_no text, status text, at timestamptz);
SELECT loyalty.track_shipment_events('tf_gone_tracking', 'order_no', 'status', 'at') AS read;
CREATE TABLE tf_after (id text PRIMARY KEY, customer text, total numeric, placed timestamptz);
SELECT loyalty.track_orders('tf_after', 'customer', 'total', 'placed', 'id') AS backfilled;
DROP TABLE tf_gone;
DROP TABLE tf_gone_tracking;
SELECT pg_temp.err($$SELECT loyalty.untrack_orders('tf_after')$$) AS untrack_other;
SELECT count(*) AS after_triggers FROM pg_trigger WHERE tgrelid = 'tf_after'::regclass AND NOT tgisinternal;
SELECT pg_temp.err($$SELECT loyalty.replay_rejected('tf_after')$$) AS replay_other;
SELECT pg_temp.err($$SELECT loyalty.untrack_orders('tf_spare')$$) AS untrack_spare;
SELECT pg_temp.err($$SELECT loyalty.untrack_orders('tf_gone')$$) AS untrack_dropped;
SELECT pg_temp.err($$SELECT loyalty.untrack_shipment_events('public.tf_gone_tracking')$$) AS untrack_dropped_events;
SELECT pg_temp.err($$SELECT loyalty.replay_rejected('tf_orders')$$) AS replay_one;
SELECT pg_temp.err($$SELECT loyalty.replay_rejected()$$) AS replay_all;
SELECT pg_temp.err($$SELECT loyalty.untrack_orders('tf_never')$$) AS untrack_unknown;
SELECT pg_temp.err($$SELECT loyalty.untrack_shipment_events('tf_orders')$$) AS untrack_not_events;
-- the carrier table detached: its rows are no longer captured
SELECT loyalty.untrack_shipment_events('tf_tracking');
INSERT INTO tf_tracking (order_no, status, happened_at) VALUES ('T3', 'delivered', '2026-03-28 10:00');
SELECT count(*) AS captured_after_untrack FROM loyalty.events WHERE source_id = (SELECT source_id FROM loyalty.shipment_sources WHERE relation_name = 'tf_tracking');
SELECT source, reason, rows FROM loyalty.rejected_summary ORDER BY source, reason;
