
-- ---------------------------------------------------------------- 90_1_capture_fulfilment
-- Issue 14, the capture side: the fulfilment columns of loyalty.track_orders
-- and tracked carrier-events tables read by the one C capture trigger and
-- applied through the operations writers (the new objects are in
-- 90_0_operations_capture.sql = install/78_operations_capture.sql);
-- track_deliveries is the delivery column of track_orders; untrack_* no
-- longer fail when another tracked table was dropped. The functions below
-- as in sql/install/ (20_intake.sql, 62_rewards.sql, 70_journeys.sql).

DROP FUNCTION loyalty.track_orders(text, text, text, text, text, text, text[], boolean, integer);
DROP FUNCTION loyalty._track_orders(regclass, text, text, text, text, text, text, text[], boolean, integer);
-- @function loyalty._track_orders

COMMENT ON COLUMN loyalty.events.fields IS 'the other tracked columns by field name (an order''s delivered_at, paid_at, dispatched_at, promised_at or promised_on, dispatch_by; a customer''s name, email, phone, birthday, time_zone; a carrier event''s at, tracking_code, detail); a field absent is not tracked';
COMMENT ON FUNCTION loyalty.capture_row() IS 'Trigger attached by loyalty.track_orders(), loyalty.track_customers() and loyalty.track_shipment_events(); do not call directly';

-- Apply order changes (latest per order wins). Invalid rows are rejected, and an
-- order that becomes invalid stops counting. Returns the number of changes.

-- Drain the captured changes, oldest first. The drain lock keeps one applier at a
-- time; events of one shop row are captured in commit order (the row lock
-- orders the writers), so applying them by event_id keeps the newest version.
-- Changes of tracked customers tables go to the profiles (70_journeys.sql),
-- rows of tracked carrier-events tables to the shipment events
-- (78_operations_capture.sql).

-- Check a tracked column's type at track_* time (a domain, enum or type of the
-- shop's for a key, amount or time column is refused), returning it.

-- (Re)create the capture trigger of a tracked orders table from its sources row.

-- Backfill one source's existing rows in batches of p_batch, in order id order.
-- Rerun-safe: an order already known with the same values changes nothing.
-- Ordering: each batch first drains the queue (holding the drain lock), then
-- reads its rows with a newer snapshot. A change committed before that read is
-- either already applied or read here; one committed later is queued and
-- applied after this transaction, so an older row version never wins.
-- Before SQL reads a tracked table's rows (backfill, replay): lock it against
-- ALTER TABLE and check its tracked columns are still of types loyalty reads
-- (the capture trigger checks every row; this is the same rule for SQL).
-- Returns the order id column's type, for keyset comparisons.

-- The events.fields of a tracked orders row as an SQL expression over the
-- table's columns: what the capture trigger writes (src/intake.c's
-- OrderFields), read the same way, for backfill and replay. Only built-in
-- conversions of the built-in time types loyalty._source_read_check
-- confirmed; a date promise stays a date (promised_on).
-- @function loyalty._order_fields_sql

-- Public entry points that name a shop table resolve it in the caller's
-- search_path (so 'orders' works as the caller means it) and hand the oid to
-- the implementation, which runs with a pinned search_path.
-- @function loyalty.track_orders

-- Re-capture the shop rows behind open rejections (after the shop fixed them).
-- Returns the number of rows accepted now.

-- Is source (as the caller wrote it: 'schema.table' or 'table') a tracked
-- table of p_sources (loyalty.sources or loyalty.shipment_sources) that no
-- longer exists? An unqualified name matches when one tracked table has it.
-- @function loyalty._dropped_source

-- Stop tracking a table: removes the triggers; orders already captured stay.
-- @function loyalty._untrack_orders

-- 0.1's API, now the delivery column of loyalty.track_orders (one code path:
-- the trigger, backfill, points, loyalty.deliveries and the operations facts
-- follow it). NULL stops tracking the delivery time.
-- @function loyalty.untrack_customers
