-- Attacks on the new capture surface (fulfilment columns, carrier-events
-- tables) by a careless shop or a hostile writer: each must leave the shop's
-- write working, quarantine the bad row, and keep nothing an erasure removed.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- ---- a time beyond timestamptz's range (a date after 294276 AD, a timestamp
-- at its end in a zone west of UTC): converting it raises, which failed the
-- shop's INSERT in the trigger and the whole backfill or replay
SET TimeZone = 'America/New_York';
CREATE TABLE ac_orders (id text PRIMARY KEY, customer text, total numeric, placed_at date,
                        paid date, dispatched timestamp, promised date);
-- already there at attach: read by the backfill
INSERT INTO ac_orders VALUES ('b1', 'c1', 10, '300000-01-01', NULL, NULL, NULL),
                             ('b2', 'c1', 10, '2026-03-02', NULL, NULL, '300000-01-01'),
                             ('b3', 'c1', 10, '2026-03-02', NULL, '294276-12-31 23:00', NULL);
SELECT loyalty.track_orders('ac_orders', customer_column => 'customer', amount_column => 'total',
                            ordered_at_column => 'placed_at', order_id_column => 'id', paid_at_column => 'paid',
                            dispatched_at_column => 'dispatched', promised_at_column => 'promised');
-- written after: captured by the trigger, the shop's write goes through
SELECT pg_temp.err($$INSERT INTO ac_orders VALUES ('t1', 'c1', 10, '300000-01-01', NULL, NULL, NULL)$$);
SELECT pg_temp.err($$INSERT INTO ac_orders VALUES ('t2', 'c1', 10, '2026-03-02', '300000-01-01', NULL, NULL)$$);
SELECT pg_temp.err($$INSERT INTO ac_orders VALUES ('t3', 'c1', 10, '2026-03-02', NULL, '294276-12-31 23:00', NULL)$$);
SELECT pg_temp.err($$INSERT INTO ac_orders VALUES ('t4', 'c1', 10, '2026-03-02', NULL, NULL, '300000-01-01')$$);
SELECT pg_temp.err($$INSERT INTO ac_orders VALUES ('t5', 'c1', 10, '2026-03-02', NULL, NULL, NULL)$$);
SELECT pg_temp.err($$UPDATE ac_orders SET paid = '5874897-12-31' WHERE id = 't5'$$);
SELECT loyalty.apply_events() > 0 AS applied;
SELECT order_ref, reason FROM loyalty.rejected_rows WHERE resolved_at IS NULL ORDER BY order_ref;
-- none of them counts; a replay reads them again without failing
SELECT count(*) FILTER (WHERE counted) AS counted FROM loyalty.orders WHERE order_ref LIKE 'b%' OR order_ref LIKE 't%';
SELECT pg_temp.err($$SELECT loyalty.replay_rejected()$$);
SELECT count(*) AS still_rejected FROM loyalty.rejected_rows WHERE resolved_at IS NULL;
-- fixed by the shop: accepted
UPDATE ac_orders SET paid = '2026-03-03' WHERE id = 't5';
SELECT loyalty.apply_events() > 0 AS applied;
SELECT o.order_ref, o.counted, l.paid_at FROM loyalty.orders o JOIN loyalty.order_lifecycle l USING (order_ref)
 WHERE o.order_ref = 't5';
-- a carrier event at such a time: the same
CREATE TABLE ac_carrier (order_id text, event text, at date);
INSERT INTO ac_carrier VALUES ('t5', 'in_transit', '300000-01-01');
SELECT loyalty.track_shipment_events('ac_carrier', 'order_id', 'event', 'at');
SELECT pg_temp.err($$INSERT INTO ac_carrier VALUES ('t5', 'delivered', '300000-01-02')$$);
SELECT loyalty.apply_events() > 0 AS applied;
SELECT order_ref, reason FROM loyalty.rejected_rows r JOIN loyalty.shipment_sources s USING (source_id)
 WHERE r.resolved_at IS NULL ORDER BY reason;
SELECT untrack_orders, untrack_shipment_events
  FROM loyalty.untrack_orders('ac_orders'), loyalty.untrack_shipment_events('ac_carrier');
RESET TimeZone;

-- ---- erasure against carrier events: an event queued when the customer is
-- erased, a quarantined carrier row, and the shop's rows read again (a
-- re-attach, a replay) must not bring a tracking code or a detail back, nor
-- record an event twice
SET TimeZone = 'UTC';
CREATE TABLE ac_orders2 (id text PRIMARY KEY, customer text, total numeric, placed_at timestamptz);
SELECT loyalty.track_orders('ac_orders2', customer_column => 'customer', amount_column => 'total',
                            ordered_at_column => 'placed_at', order_id_column => 'id');
CREATE TABLE ac_events (order_id text, status text, at timestamptz, code text, detail jsonb);
SELECT loyalty.track_shipment_events('ac_events', 'order_id', 'status', 'at', 'code', 'detail');
INSERT INTO ac_orders2 VALUES ('e1', 'alice', 10, '2026-02-27 09:00+00');
INSERT INTO ac_events VALUES ('e1', 'in_transit', '2026-02-28 09:00+00', 'TRK1', '{"to": "Alice Smith, 1 Main St"}'),
                             ('e1', 'delivered', '1960-01-01', 'TRK1', '{"to": "Alice Smith, 1 Main St"}');
SELECT loyalty.apply_events() > 0 AS applied;
INSERT INTO ac_events VALUES ('e1', 'out_for_delivery', '2026-03-01 09:00+00', 'TRK1', '{"to": "Alice Smith, 1 Main St"}');
SELECT removed->'rejected_rows' AS rejected_rows_removed, removed->'shipment_events' AS shipment_events
  FROM loyalty.erase_customer('alice');
SELECT loyalty.apply_events() > 0 AS applied;
SELECT loyalty.replay_rejected('ac_events');
SELECT loyalty.track_shipment_events('ac_events', 'order_id', 'status', 'at', 'code', 'detail');
SELECT e.status, e.tracking_code LIKE 'erased:%' AS code_erased, e.tracking_code IS NULL AS no_code, e.detail
  FROM loyalty.shipment_events e WHERE e.order_ref = 'e1' ORDER BY e.at;
-- nothing of Alice's parcel anywhere
SELECT count(*) AS rows_naming_her
  FROM (SELECT row_data::text AS t FROM loyalty.rejected_rows
        UNION ALL SELECT fields::text FROM loyalty.events
        UNION ALL SELECT concat(tracking_code, detail::text) FROM loyalty.shipment_events) x
 WHERE x.t LIKE '%Alice%' OR x.t LIKE '%TRK1%';

-- ---- a carrier row quarantined for a detail over 8,000 characters keeps at
-- most 1,000 of it in rejected_rows (as every long value there)
INSERT INTO ac_orders2 VALUES ('e2', 'bob', 10, '2026-02-27 09:00+00');
INSERT INTO ac_events VALUES ('e2', 'in_transit', '2026-02-28 09:00+00', 'TRK2',
                              jsonb_build_object('log', repeat('x', 100000)));
SELECT loyalty.apply_events() > 0 AS applied;
SELECT reason, length(row_data::text) < 1200 AS row_data_cut FROM loyalty.rejected_rows WHERE order_ref = 'e2';

-- ---- the app's writers after the erasure: a carrier webhook still arriving,
-- a return with the customer's words
SELECT loyalty.record_shipment_event('e1', 'delivered', '2026-03-02 09:00+00', 'TRK1', '{"signed_by": "Alice Smith"}') IS NOT NULL AS recorded;
SELECT loyalty.record_shipment_event('e1', 'in_transit', '2026-02-28 09:00+00', 'TRK1', '{"to": "Alice Smith"}')
       = (SELECT min(event_id) FROM loyalty.shipment_events WHERE order_ref = 'e1') AS same_event;
SELECT (loyalty.record_return('e1', '2026-03-05 09:00+00', reason => 'Alice Smith: wrong size')).reason;
SELECT e.status, e.tracking_code IS NULL OR e.tracking_code LIKE 'erased:%' AS no_code, e.detail
  FROM loyalty.shipment_events e WHERE e.order_ref = 'e1' ORDER BY e.at;

-- ---- a careless bulk load: the shop disables triggers, its rows are never
-- captured; the health check says so while the trigger is off
ALTER TABLE ac_orders2 DISABLE TRIGGER ALL;
INSERT INTO ac_orders2 VALUES ('bulk1', 'carol', 10, '2026-03-01 09:00+00');
SELECT "check", status, detail FROM loyalty.health WHERE "check" = 'capture_triggers';
ALTER TABLE ac_orders2 ENABLE TRIGGER ALL;
SELECT "check", status, detail FROM loyalty.health WHERE "check" = 'capture_triggers';
-- the hint's remedy: attach again with the backfill, which reads the row (once)
SELECT loyalty.track_orders('ac_orders2', customer_column => 'customer', amount_column => 'total',
                            ordered_at_column => 'placed_at', order_id_column => 'id') > 0 AS read_again;
SELECT order_ref, customer_id, counted FROM loyalty.orders WHERE order_ref = 'bulk1';

-- ---- a tracked table renamed while it has quarantined rows: replay cannot
-- read it under its stored name, and says so instead of replaying nothing
INSERT INTO ac_orders2 VALUES ('neg1', 'carol', -5, '2026-03-01 09:00+00');
SELECT loyalty.apply_events() > 0 AS applied;
ALTER TABLE ac_orders2 RENAME TO ac_orders2_renamed;
SELECT loyalty.replay_rejected() AS replayed;
ALTER TABLE ac_orders2_renamed RENAME TO ac_orders2;
SELECT loyalty.replay_rejected() AS replayed_under_its_name;
SELECT reason, resolved_at IS NULL AS still_open FROM loyalty.rejected_rows WHERE order_ref = 'neg1' ORDER BY rejected_at;

-- ---- a row of a tracked customers or carrier-events table that cannot be
-- applied (a fault injected by a trigger on loyalty's own table): the batch
-- falls back to row by row, the failing row is quarantined with the error,
-- the others apply
CREATE FUNCTION pg_temp.fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF to_jsonb(NEW)->>'customer_id' = 'boom' OR to_jsonb(NEW)->>'order_ref' = 'boom-order' THEN
        RAISE EXCEPTION 'injected fault';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fault BEFORE INSERT ON loyalty.profiles FOR EACH ROW EXECUTE FUNCTION pg_temp.fault();
CREATE TRIGGER fault BEFORE INSERT ON loyalty.shipment_events FOR EACH ROW EXECUTE FUNCTION pg_temp.fault();
CREATE TABLE ac_people (id text PRIMARY KEY, name text);
SELECT loyalty.track_customers('ac_people', 'id', name_column => 'name') IS NOT NULL AS tracked;
INSERT INTO ac_people VALUES ('p1', 'One'), ('boom', 'Fault'), ('p2', 'Two');
INSERT INTO ac_events VALUES ('e1', 'in_transit', '2026-03-03 09:00+00', NULL, NULL),
                             ('boom-order', 'in_transit', '2026-03-03 09:00+00', NULL, NULL),
                             ('e1', 'out_for_delivery', '2026-03-03 12:00+00', NULL, NULL);
SELECT loyalty.apply_events() AS applied;
SELECT customer_id FROM loyalty.profiles WHERE customer_id IN ('p1', 'p2', 'boom') ORDER BY 1;
SELECT order_ref, status FROM loyalty.shipment_events WHERE at >= '2026-03-03' ORDER BY order_ref, at;
SELECT order_ref, reason FROM loyalty.rejected_rows
 WHERE reason LIKE 'could not be applied%' AND resolved_at IS NULL ORDER BY order_ref;
DROP TRIGGER fault ON loyalty.profiles;
DROP TRIGGER fault ON loyalty.shipment_events;
