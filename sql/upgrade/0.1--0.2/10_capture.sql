
-- ---------------------------------------------------------------- 10_capture
-- One C capture trigger (loyalty.capture_row) for every tracked table; order
-- points, delivery times and profiles follow the captured change; bounds on
-- what is accepted; poison rows quarantined; re-attach merges (docs/capture.md).

ALTER TABLE loyalty.events ADD COLUMN fields jsonb;
ALTER TABLE loyalty.events DROP CONSTRAINT events_op_check, ADD CONSTRAINT events_op_check CHECK (op IN ('u', 'd', 'k'));
COMMENT ON COLUMN loyalty.events.op IS 'u: the row as it is now; d: the row was deleted; k: a customer row left its key (key changed, table truncated): the profile goes, nothing is erased';
COMMENT ON COLUMN loyalty.events.fields IS 'the other tracked columns by field name (delivered_at; a customer''s name, email, phone, birthday, time_zone); a field absent is not tracked';
ALTER TYPE loyalty.order_change ADD ATTRIBUTE fields jsonb, ADD ATTRIBUTE captured_at timestamptz;
ALTER TYPE loyalty.order_change_checked ADD ATTRIBUTE fields jsonb;

-- the same rule with another length limit (the ledger's idempotency keys)
-- @function loyalty._key_problem

-- @function loyalty.capture_row

-- @function loyalty._capture_type_ok

-- @function loyalty.check_key

-- @function loyalty._amount_problem

-- @function loyalty._time_problem

-- @function loyalty._as_text

-- @function loyalty._capture_column

-- @function loyalty._attach_capture

-- @function loyalty._quarantine

-- @function loyalty._apply_changes

-- @function loyalty._apply_or_split

-- @function loyalty.apply_events

-- @function loyalty._source_read_check

-- @function loyalty._backfill

-- @procedure loyalty.backfill

-- @function loyalty._check_amount

-- @function loyalty.record_order

-- @function loyalty.record_refund

-- @function loyalty._replay_rejected

-- @function loyalty.order_points

-- @function loyalty._apply_order_points

-- @function loyalty._sync_earn_triggers

-- @function loyalty._track_deliveries

-- @function loyalty._store_profile

-- @function loyalty._customer_deleted

-- @function loyalty._apply_customer_change


-- @function loyalty.track_customers

-- @function loyalty.upsert_customer

-- @function loyalty._apply_deliveries

-- @function loyalty.set_consent


-- the new functions: nothing for PUBLIC, everything for loyalty_admin (as 90_grants.sql does at install)
REVOKE ALL ON FUNCTION loyalty.capture_row(), loyalty._capture_type_ok(regtype, text), loyalty._key_problem(text), loyalty._key_problem(text, integer),
                       loyalty.check_key(text, text), loyalty._amount_problem(numeric), loyalty._time_problem(timestamptz, timestamptz),
                       loyalty._as_text(anyelement), loyalty._capture_column(regclass, text, text, text),
                       loyalty._attach_capture(integer), loyalty._quarantine(integer, text, text, jsonb),
                       loyalty._apply_or_split(loyalty.order_change[]), loyalty._source_read_check(loyalty.sources),
                       loyalty._apply_order_points(loyalty.order_change_checked[]), loyalty._store_profile(integer, text, jsonb),
                       loyalty._customer_deleted(integer, text),
                       loyalty._apply_customer_change(loyalty.events),
                       loyalty._apply_deliveries(loyalty.order_change_checked[])
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty.capture_row(), loyalty._capture_type_ok(regtype, text), loyalty._key_problem(text), loyalty._key_problem(text, integer),
                       loyalty.check_key(text, text), loyalty._amount_problem(numeric), loyalty._time_problem(timestamptz, timestamptz),
                       loyalty._as_text(anyelement), loyalty._capture_column(regclass, text, text, text),
                       loyalty._attach_capture(integer), loyalty._quarantine(integer, text, text, jsonb),
                       loyalty._apply_or_split(loyalty.order_change[]), loyalty._source_read_check(loyalty.sources),
                       loyalty._apply_order_points(loyalty.order_change_checked[]), loyalty._store_profile(integer, text, jsonb),
                       loyalty._customer_deleted(integer, text),
                       loyalty._apply_customer_change(loyalty.events),
                       loyalty._apply_deliveries(loyalty.order_change_checked[])
  TO loyalty_admin;

-- The tracked tables are attached again with the one capture trigger, and
-- the 0.1 trigger functions dropped, at the end of the upgrade
-- (99_reattach.sql), when every function they call is final.
