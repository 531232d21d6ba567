-- Operations over a realistic lifecycle with a fixed clock: a shop's orders
-- table (inserted when placed, updated as the status moves on) and its
-- fulfilment facts arriving as they happen (record_fulfilment, carrier
-- events, returns), scanned every six hours. After every scan the recorded
-- issues equal what the deadlines say; the expected issues are worked out by
-- hand below (Europe/Berlin, Monday to Friday, cut-off 14:00, Good Friday
-- and Easter Monday closed; DST starts on Sunday 29 March 2026).
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

-- ---- settings
SELECT time_zone, working_days, cutoff, dispatch_within, deliver_within, stall_after, refund_within, payment_within
  FROM loyalty.configure_operations(time_zone => 'europe/berlin', dispatch_within => '1 day', deliver_within => '2 days',
                                    stall_after => '2 days', refund_within => '3 days', payment_within => '1 day',
                                    working_days => ARRAY[5, 4, 3, 2, 1], cutoff => '14:00');
INSERT INTO loyalty.business_holidays VALUES ('2026-04-03', 'Good Friday'), ('2026-04-06', 'Easter Monday');
-- bad settings are refused and change nothing
SELECT pg_temp.err($$SELECT loyalty.configure_operations(time_zone => 'Mars/Olympus')$$);
SELECT pg_temp.err($$SELECT loyalty.configure_operations(stall_after => '0')$$);
SELECT pg_temp.err($$SELECT loyalty.configure_operations(dispatch_within => '-1 day')$$);
SELECT pg_temp.err($$SELECT loyalty.configure_operations(working_days => ARRAY[0, 8])$$);
SELECT pg_temp.err($$SELECT loyalty.configure_operations(unset => ARRAY['time_zone'])$$);
SELECT time_zone, dispatch_within, stall_after, working_days FROM loyalty.operations_settings;
-- service recovery: 100 points when a parcel stalls for more than a day
INSERT INTO loyalty.recovery_rules (kind, after, points, reason) VALUES ('stalled_parcel', '1 day', 100, 'sorry for the wait');

-- ---- the shop's orders table
CREATE TABLE ops_shop_orders (id text PRIMARY KEY, customer text, total numeric, created_at timestamptz, status text);
SELECT loyalty.track_orders('ops_shop_orders', customer_column => 'customer', amount_column => 'total',
                            ordered_at_column => 'created_at', order_id_column => 'id', status_column => 'status',
                            counted_statuses => ARRAY['placed', 'paid', 'shipped', 'delivered']);

-- The script: what happens when (shop table writes and fulfilment facts).
CREATE TEMP TABLE script (id serial, at timestamptz, stmt text, done boolean DEFAULT false);
CREATE FUNCTION pg_temp.at(p_at timestamptz, p_stmt text) RETURNS void LANGUAGE sql AS $$
    INSERT INTO script (at, stmt) VALUES (p_at, p_stmt);
$$;
CREATE FUNCTION pg_temp.place(p_at timestamptz, p_id text, p_customer text, p_total numeric) RETURNS void LANGUAGE sql AS $$
    SELECT pg_temp.at(p_at, format('INSERT INTO ops_shop_orders VALUES (%L, %L, %s, %L, ''placed'')', p_id, p_customer, p_total, p_at));
    SELECT pg_temp.at(p_at, format('SELECT loyalty.record_fulfilment(%L)', p_id));
$$;
CREATE FUNCTION pg_temp.pay(p_at timestamptz, p_id text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_temp.at(p_at, format('UPDATE ops_shop_orders SET status = ''paid'' WHERE id = %L', p_id));
    SELECT pg_temp.at(p_at, format('SELECT loyalty.record_fulfilment(%L, paid_at => %L)', p_id, p_at));
$$;
CREATE FUNCTION pg_temp.ship(p_at timestamptz, p_id text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_temp.at(p_at, format('UPDATE ops_shop_orders SET status = ''shipped'' WHERE id = %L', p_id));
    SELECT pg_temp.at(p_at, format('SELECT loyalty.record_fulfilment(%L, dispatched_at => %L)', p_id, p_at));
$$;
CREATE FUNCTION pg_temp.deliver(p_at timestamptz, p_id text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_temp.at(p_at, format('UPDATE ops_shop_orders SET status = ''delivered'' WHERE id = %L', p_id));
    SELECT pg_temp.at(p_at, format('SELECT loyalty.record_fulfilment(%L, delivered_at => %L)', p_id, p_at));
$$;
CREATE FUNCTION pg_temp.carrier(p_at timestamptz, p_id text, p_event text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_temp.at(p_at, format('SELECT loyalty.record_shipment_event(%L, %L, %L, ''TRK-'' || %L)', p_id, p_event, p_at, p_id));
$$;

-- A1 (ann): paid Mon 23 Mar 10:05 local, before the cut-off: dispatch by the
-- end of Tue 24 (23:00 UTC); dispatched Tue, delivered Wed: no issue.
SELECT pg_temp.place('2026-03-23 09:00', 'A1', 'ann', 80);
SELECT pg_temp.pay('2026-03-23 09:05', 'A1');
SELECT pg_temp.ship('2026-03-24 15:00', 'A1');
SELECT pg_temp.carrier('2026-03-24 18:00', 'A1', 'InTransit');
SELECT pg_temp.deliver('2026-03-25 12:00', 'A1');
-- A2 (bob): paid Mon 14:30 local, after the cut-off: counts from Tue, dispatch
-- by the end of Wed 25 (23:00 UTC); dispatched Thu 10:00 UTC:
-- late_dispatch opened 25 Mar 23:00, resolved 26 Mar 10:00. Delivery within
-- 2 working days of Thu: end of Mon 30 Mar (CEST: 22:00 UTC); delivered Fri.
SELECT pg_temp.place('2026-03-23 13:00', 'A2', 'bob', 120);
SELECT pg_temp.pay('2026-03-23 13:30', 'A2');
SELECT pg_temp.ship('2026-03-26 10:00', 'A2');
SELECT pg_temp.carrier('2026-03-26 14:00', 'A2', 'in transit');
SELECT pg_temp.deliver('2026-03-27 09:00', 'A2');
-- A3 (cat), A4 (dan): paid Fri 27 Mar 11:00 local; the weekend is skipped and
-- DST starts on Sunday: dispatch by the end of Mon 30 Mar = 22:00 UTC (not
-- 23:00). A3 dispatched 21:30 UTC (on time), A4 22:30 UTC (late by 30 min).
SELECT pg_temp.place('2026-03-27 09:55', 'A3', 'cat', 40);
SELECT pg_temp.pay('2026-03-27 10:00', 'A3');
SELECT pg_temp.ship('2026-03-30 21:30', 'A3');
SELECT pg_temp.carrier('2026-03-31 06:00', 'A3', 'picked_up');
SELECT pg_temp.deliver('2026-03-31 15:00', 'A3');
SELECT pg_temp.place('2026-03-27 09:55', 'A4', 'dan', 45);
SELECT pg_temp.pay('2026-03-27 10:00', 'A4');
SELECT pg_temp.ship('2026-03-30 22:30', 'A4');
SELECT pg_temp.carrier('2026-03-31 06:00', 'A4', 'picked_up');
SELECT pg_temp.deliver('2026-04-01 10:00', 'A4');
-- A5 (eve): paid Thu 2 Apr 14:00 local = the cut-off: counts from the next
-- working day; Good Friday, the weekend and Easter Monday are closed: Tue 7
-- Apr; dispatch by the end of Wed 8 Apr (22:00 UTC). Never dispatched.
SELECT pg_temp.place('2026-04-02 11:50', 'A5', 'eve', 300);
SELECT pg_temp.pay('2026-04-02 12:00', 'A5');
-- A6 (fay): the order's own deadlines and a date promise. Dispatch by Tue 24
-- Mar 12:00 UTC (its own dispatch_by wins over the rule): dispatched 11:00.
-- Promised for 26 Mar (by the end of that day in Berlin: 23:00 UTC), revised
-- on 26 Mar to 28 Mar; delivered 27 Mar 10:00: late against the first
-- promise: late_delivery opened 26 Mar 23:00, resolved 27 Mar 10:00. The
-- carrier's last scan was Tue 13:00: stalled_parcel from Thu 13:00 until
-- the delivery.
SELECT pg_temp.place('2026-03-23 08:00', 'A6', 'fay', 60);
SELECT pg_temp.pay('2026-03-23 08:00', 'A6');
SELECT pg_temp.at('2026-03-23 08:00', $$SELECT loyalty.record_fulfilment('A6', dispatch_by => '2026-03-24 12:00', promised_on => '2026-03-26', noted_at => '2026-03-23 08:00')$$);
SELECT pg_temp.ship('2026-03-24 11:00', 'A6');
SELECT pg_temp.carrier('2026-03-24 13:00', 'A6', 'confirmed');
SELECT pg_temp.at('2026-03-26 16:00', $$SELECT loyalty.record_fulfilment('A6', promised_on => '2026-03-28', noted_at => '2026-03-26 16:00')$$);
SELECT pg_temp.deliver('2026-03-27 10:00', 'A6');
-- A7 (gus): dispatched Tue 24 Mar 10:00, scanned at 16:00 and Wed 08:00,
-- then silent until Sat 28 Mar 09:00: stalled_parcel opened Fri 27 08:00
-- (2 days after the last scan), resolved Sat 09:00. Delivery due end of Thu
-- 26 Mar (23:00 UTC), delivered Sat 15:00: late_delivery too.
SELECT pg_temp.place('2026-03-23 07:00', 'A7', 'gus', 90);
SELECT pg_temp.pay('2026-03-23 07:00', 'A7');
SELECT pg_temp.ship('2026-03-24 10:00', 'A7');
SELECT pg_temp.carrier('2026-03-24 16:00', 'A7', 'picked_up');
SELECT pg_temp.carrier('2026-03-25 08:00', 'A7', 'in_transit');
SELECT pg_temp.carrier('2026-03-28 09:00', 'A7', 'in_transit');
SELECT pg_temp.deliver('2026-03-28 15:00', 'A7');
-- A8 (hal): a failed attempt (AfterShip AttemptFail) Thu 26 Mar 10:00:
-- delivery_failed opened then, resolved by the carrier's delivered event
-- (AfterShip Delivered_001) Fri 12:00; the shop never sets delivered_at.
SELECT pg_temp.place('2026-03-23 07:30', 'A8', 'hal', 35);
SELECT pg_temp.pay('2026-03-23 07:30', 'A8');
SELECT pg_temp.ship('2026-03-24 09:00', 'A8');
SELECT pg_temp.carrier('2026-03-24 12:00', 'A8', 'InTransit');
SELECT pg_temp.carrier('2026-03-26 10:00', 'A8', 'AttemptFail');
SELECT pg_temp.carrier('2026-03-27 12:00', 'A8', 'Delivered_001');
-- A9 (ivy): a carrier status loyalty cannot map: unknown, never a failure;
-- in transit Wed 12:00, then silent (stalled_parcel from Fri 12:00) until
-- returned to sender (17TRACK Exception_Returned) on Mon 30 Mar 10:00:
-- delivery_failed, still open; never delivered: late_delivery (due end of
-- Thu 26) open.
SELECT pg_temp.place('2026-03-23 07:40', 'A9', 'ivy', 55);
SELECT pg_temp.pay('2026-03-23 07:40', 'A9');
SELECT pg_temp.ship('2026-03-24 09:00', 'A9');
SELECT pg_temp.carrier('2026-03-24 12:00', 'A9', 'Parcel has a funny smell');
SELECT pg_temp.carrier('2026-03-25 12:00', 'A9', 'in_transit');
SELECT pg_temp.carrier('2026-03-30 10:00', 'A9', 'Exception_Returned');
-- A10 (jon): placed Tue 24 Mar 09:00, never paid: payment_pending opened
-- Wed 25 Mar 09:00 (1 day, elapsed time), never resolved.
SELECT pg_temp.place('2026-03-24 09:00', 'A10', 'jon', 25);
-- A11 (kim): placed and paid, then cancelled on Thu 26 Mar 08:00 after its
-- dispatch deadline (end of Wed 25) passed: the issue opened by a scan is
-- withdrawn once the order no longer counts; an order that does not count
-- has no issues.
SELECT pg_temp.place('2026-03-24 09:00', 'A11', 'kim', 70);
SELECT pg_temp.pay('2026-03-24 09:00', 'A11');
SELECT pg_temp.at('2026-03-26 08:00', $$UPDATE ops_shop_orders SET status = 'cancelled' WHERE id = 'A11'$$);
-- A12 (lea): delivered, return requested Mon 30 Mar, received Tue 31 Mar
-- 09:00: refund within 3 working days after Tue: Wed 1, Thu 2, (Good Friday,
-- weekend, Easter Monday) Tue 7 Apr: by 22:00 UTC. Refunded Wed 8 Apr 09:00:
-- slow_refund opened 7 Apr 22:00, resolved 8 Apr 09:00.
SELECT pg_temp.place('2026-03-23 06:00', 'A12', 'lea', 150);
SELECT pg_temp.pay('2026-03-23 06:00', 'A12');
SELECT pg_temp.ship('2026-03-23 15:00', 'A12');
SELECT pg_temp.carrier('2026-03-23 18:00', 'A12', 'in_transit');
SELECT pg_temp.deliver('2026-03-24 12:00', 'A12');
SELECT pg_temp.at('2026-03-30 10:00', $$SELECT loyalty.record_return('A12', '2026-03-30 10:00', reason => 'too small')$$);
SELECT pg_temp.at('2026-03-31 09:00', $$SELECT loyalty.record_return('A12', '2026-03-30 10:00', received_at => '2026-03-31 09:00')$$);
SELECT pg_temp.at('2026-04-08 09:00', $$SELECT loyalty.record_return('A12', '2026-03-30 10:00', refunded_at => '2026-04-08 09:00')$$);

-- Advance the clock: everything that happened by p_to, then a scan as of
-- p_to. Returns whether the recorded issues equal the ones the deadlines
-- imply (and, checked by hand below, the deadlines are right).
CREATE FUNCTION pg_temp.advance(p_to timestamptz) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT * FROM script WHERE NOT done AND at <= p_to ORDER BY at, id LOOP
        EXECUTE s.stmt;
        UPDATE script SET done = true WHERE id = s.id;
    END LOOP;
    PERFORM loyalty.apply_events();
    PERFORM loyalty.scan_operations(p_to);
    RETURN NOT EXISTS (
        (SELECT order_ref, kind, opened_at, resolved_at FROM loyalty.order_issues
         EXCEPT SELECT order_ref, kind, opened_at, resolved_at FROM loyalty.issues_as_of(p_to))
        UNION ALL
        (SELECT order_ref, kind, opened_at, resolved_at FROM loyalty.issues_as_of(p_to)
         EXCEPT SELECT order_ref, kind, opened_at, resolved_at FROM loyalty.order_issues));
END $$;
CREATE FUNCTION pg_temp.issues() RETURNS TABLE (order_ref text, kind text, opened_at timestamptz, resolved_at timestamptz)
LANGUAGE sql AS $$
    SELECT order_ref, kind, opened_at, resolved_at FROM loyalty.order_issues ORDER BY opened_at, order_ref, kind
$$;

-- every six hours from Mon 23 Mar to Fri 10 Apr: always consistent
SELECT bool_and(ok) AS always_consistent, count(*) AS scans
  FROM (SELECT pg_temp.advance(t) AS ok
          FROM generate_series(timestamptz '2026-03-23 06:00', '2026-04-10 06:00', interval '6 hours') t) s;

-- the outcome: each issue at its breach, resolved when the stage completed
SELECT * FROM pg_temp.issues();
-- A11 was cancelled: no issue, though a scan saw its dispatch late
SELECT count(*) AS a11_issues FROM loyalty.order_issues WHERE order_ref = 'A11';

-- the deadlines of the calendar cases, in local time
SELECT order_ref, kind, due_at, due_at AT TIME ZONE 'Europe/Berlin' AS local_due, detail->>'rule' AS rule
  FROM loyalty.order_deadlines
 WHERE (order_ref, kind) IN (('A1', 'late_dispatch'), ('A2', 'late_dispatch'), ('A3', 'late_dispatch'),
                             ('A4', 'late_dispatch'), ('A5', 'late_dispatch'), ('A6', 'late_dispatch'),
                             ('A6', 'late_delivery'), ('A2', 'late_delivery'), ('A12', 'slow_refund'))
 ORDER BY order_ref, kind;

-- the carrier vocabulary: mapped, raw text kept, unknown never guessed
SELECT order_ref, status, carrier_status FROM loyalty.shipment_events WHERE order_ref IN ('A6', 'A8', 'A9') ORDER BY order_ref, at;
-- the promise ledger keeps both promises; lateness used the first
SELECT revision, promised_on, noted_at FROM loyalty.order_promises WHERE order_ref = 'A6' ORDER BY revision;

-- ---- a scan at an earlier as_of sees only what was known then: it adds
-- nothing and reopens nothing
SELECT opened, resolved, withdrawn FROM loyalty.scan_operations('2026-03-26 12:00');
SELECT count(*) AS resolved_still FROM loyalty.order_issues WHERE resolved_at IS NOT NULL;
-- and what was known then: A2's late dispatch open, A7 not yet stalled
SELECT order_ref, kind, opened_at, resolved_at FROM loyalty.issues_as_of('2026-03-26 00:00') ORDER BY 1, 2;

-- ---- reruns change nothing
SELECT opened, resolved, withdrawn FROM loyalty.scan_operations('2026-04-10 06:00');
SELECT opened, resolved, withdrawn FROM loyalty.scan_operations('2026-04-10 06:00');

-- ---- catch-up after downtime: the same facts, one scan at the end, give
-- the same issues, dated at the breach (not at the scan)
CREATE TEMP TABLE incremental AS SELECT * FROM pg_temp.issues();
TRUNCATE loyalty.order_issues;
DELETE FROM loyalty.operations_runs;
SELECT opened, resolved, withdrawn, open_issues FROM loyalty.scan_operations('2026-04-10 06:00');
SELECT count(*) AS differences FROM ((TABLE incremental EXCEPT SELECT * FROM pg_temp.issues())
                                     UNION ALL (SELECT * FROM pg_temp.issues() EXCEPT TABLE incremental)) d;
-- and a scan that only runs after the end of the lifecycle dates the open ones right too
SELECT order_ref, kind, opened_at FROM loyalty.order_issues WHERE resolved_at IS NULL ORDER BY 1, 2;

-- ---- recovery points, granted once: A7 stalled 25 hours, A9 70 hours (A6
-- only 21: none); neither the reruns nor the catch-up granted them again
SELECT g.order_ref, g.customer_id, g.points, l.points AS ledger_points, l.reason, a.balance
  FROM loyalty.recovery_grants g
  JOIN loyalty.ledger l ON l.entry_id = g.ledger_entry
  JOIN loyalty.accounts a ON a.customer_id = g.customer_id
 ORDER BY 1;
SELECT count(*) AS recovery_entries FROM loyalty.ledger WHERE idempotency_key LIKE 'recovery:%';

-- ---- late data: a delivery reported after a scan opened late_delivery,
-- dated before the deadline, withdraws the issue (it was never late)
SELECT loyalty.record_order('mia', 'B1', 30, '2026-04-06 08:00') > 0 AS ordered;
SELECT (loyalty.record_fulfilment('B1', paid_at => '2026-04-06 08:00', dispatched_at => '2026-04-07 08:00')).order_ref;
-- delivery due: end of the 2nd working day after Tue 7 Apr = Thu 9 Apr, 22:00
-- UTC; no carrier scan since dispatch: stalled from Thu 08:00
SELECT opened FROM loyalty.scan_operations('2026-04-10 07:00');
SELECT kind, opened_at, resolved_at FROM loyalty.order_issues WHERE order_ref = 'B1';
SELECT (loyalty.record_fulfilment('B1', delivered_at => '2026-04-09 17:00')).delivered_at;
SELECT withdrawn FROM loyalty.scan_operations('2026-04-10 08:00');
SELECT kind, opened_at, resolved_at FROM loyalty.order_issues WHERE order_ref = 'B1';

-- ---- idempotent writers
SELECT loyalty.record_shipment_event('A7', 'in_transit', '2026-03-28 09:00', 'TRK-A7')
     = loyalty.record_shipment_event('A7', 'in_transit', '2026-03-28 09:00', 'TRK-A7') AS same_event;
SELECT count(*) AS a7_events FROM loyalty.shipment_events WHERE order_ref = 'A7';
SELECT count(*) AS logged_before FROM loyalty.operations_changes;
SELECT (loyalty.record_fulfilment('A1', paid_at => '2026-03-23 09:05')).paid_at;   -- same value: not logged
SELECT (loyalty.record_fulfilment('A1')).delivered_at;                              -- NULL keeps what is stored
SELECT count(*) AS logged_after FROM loyalty.operations_changes;
SELECT loyalty.record_contact('ann', 'WISMO', '2026-03-24 10:00') = loyalty.record_contact('ann', 'wismo', '2026-03-24 10:00') AS same_contact;

-- ---- bad input: refused, nothing changes
SELECT pg_temp.err($$SELECT loyalty.record_fulfilment(NULL)$$);
-- the one key rule: an order id loyalty could never have captured is refused
SELECT pg_temp.err($$SELECT loyalty.record_shipment_event(E'A-1\t', 'in_transit', '2026-03-23 10:00+00')$$);
SELECT pg_temp.err($$SELECT loyalty.record_fulfilment('A1', paid_at => 'infinity')$$);
SELECT pg_temp.err($$SELECT loyalty.record_fulfilment('A1', promised_at => '2026-04-01', promised_on => '2026-04-01')$$);
SELECT pg_temp.err($$SELECT loyalty.record_shipment_event('A1', ' ', '2026-04-01')$$);
SELECT pg_temp.err($$SELECT loyalty.record_shipment_event('A1', 'delivered', NULL)$$);
SELECT pg_temp.err($$SELECT loyalty.record_shipment_event('A1', 'delivered', '2026-04-01', NULL, '[1]')$$);
SELECT pg_temp.err($$SELECT loyalty.record_return('A1', NULL)$$);
SELECT pg_temp.err($$SELECT loyalty.record_return('A1', '2026-04-02', received_at => '2026-04-01')$$);
SELECT pg_temp.err($$SELECT loyalty.record_contact('ann', '')$$);
SELECT pg_temp.err($$SELECT loyalty.scan_operations('infinity')$$);
SELECT pg_temp.err($$SELECT loyalty.issue_notified(-1)$$);
SELECT count(*) AS a1_returns FROM loyalty.order_returns WHERE order_ref = 'A1';

-- ---- views
SELECT order_ref, kind, customer_id, age, customer_value, order_amount
  FROM loyalty.open_issues_at('2026-04-10 06:00');
SELECT at, what, detail FROM loyalty.order_timeline('A6');
SELECT order_ref, dispatched_at, delivered_at, dispatch_due, delivery_due, first_promise, promise_revisions, last_status
  FROM loyalty.order_stages WHERE order_ref IN ('A6', 'A8') ORDER BY 1;
SELECT * FROM loyalty.sla_summary_at('2026-04-10 06:00');

-- ---- experience impact. The Wilson interval against published values
-- (Newcombe 1998, Stat Med 17:857, table I, method 3)
SELECT x, n, round(w[1]::numeric, 4) AS low, round(w[2]::numeric, 4) AS high
  FROM (VALUES (81, 263), (15, 148), (0, 20), (1, 29)) v(x, n), LATERAL (SELECT loyalty._wilson(x, n) AS w) l;
-- Experiences as of 1 Sep 2026 (delivered by 3 June): on time A1 (ann), A3
-- (cat), A12 (lea: its refund issue came after delivery); late A2, A4, A6,
-- A7, A8, B1. ann and lea order again within 90 days of delivery, bob (A2)
-- too: on time 2 of 3, late 1 of 6. gus (A7) was told about his stalled
-- parcel. WISMO contacts: ann's (above) while A1 was under way, gus's.
SELECT loyalty.record_order(c, c || '-again', 20, '2026-05-01 10:00') > 0 AS reordered FROM unnest(ARRAY['ann', 'lea', 'bob']) c;
SELECT loyalty.record_order('cat', 'cat-late', 20, '2026-09-01 10:00') > 0 AS reordered_too_late;
SELECT (loyalty.issue_notified(issue_id, '2026-03-27 09:00')).kind FROM loyalty.order_issues WHERE order_ref = 'A7' AND kind = 'stalled_parcel';
SELECT loyalty.record_contact('gus', 'wismo', '2026-03-27 08:30') > 0 AS contact;
SELECT loyalty.record_contact('gus', 'damaged', '2026-03-29 08:30') > 0 AS other_contact;
SELECT * FROM loyalty.experience_impact_at('2026-09-01');

-- ---- privileges: the app records facts, BI reads the views, nobody else scans
SELECT has_function_privilege('loyalty_app', 'loyalty.record_fulfilment(text, timestamptz, timestamptz, timestamptz, timestamptz, timestamptz, date, timestamptz)', 'EXECUTE') AS app_records,
       has_function_privilege('loyalty_app', 'loyalty.scan_operations(timestamptz)', 'EXECUTE') AS app_scans,
       has_function_privilege('loyalty_reader', 'loyalty.scan_operations(timestamptz)', 'EXECUTE') AS reader_scans,
       has_table_privilege('loyalty_reader', 'loyalty.open_issues', 'SELECT') AS reader_dashboard,
       has_function_privilege('public', 'loyalty.record_return(text, timestamptz, timestamptz, timestamptz, text)', 'EXECUTE') AS public_returns;

-- ---- bounds on what the API takes (a far-future promise broke every later
-- scan for everyone; free text is bounded), and order_timeline is for staff
SELECT loyalty.record_order('bnd', 'bnd-1', 10, '2026-03-01') > 0 AS ordered;
SELECT pg_temp.err($$SELECT loyalty.record_fulfilment('bnd-1', promised_on => '5874897-12-31')$$);
SELECT pg_temp.err($$SELECT loyalty.record_fulfilment('bnd-1', delivered_at => '294275-01-01')$$);
SELECT pg_temp.err($$SELECT loyalty.record_fulfilment('bnd-1', paid_at => '4713-01-01 BC')$$);
SELECT pg_temp.err($$SELECT loyalty.record_return('bnd-1', '2026-03-05', reason => repeat('x', 1001))$$);
SELECT pg_temp.err($$SELECT loyalty.record_shipment_event('bnd-1', 'in_transit', '2026-03-02', detail => jsonb_build_object('x', repeat('y', 9000)))$$);
SELECT pg_temp.err($$SELECT loyalty.record_contact('bnd', repeat('r', 1001))$$);
SELECT count(*) AS nothing_stored FROM loyalty.order_promises WHERE order_ref = 'bnd-1';
SELECT has_function_privilege('loyalty_reader', 'loyalty.order_timeline(text)', 'execute') AS reader_timeline,
       has_function_privilege('loyalty_support', 'loyalty.order_timeline(text)', 'execute') AS support_timeline;
