-- Service notices (issue 14) with a fixed clock: order_delayed,
-- parcel_stalled, delivery_failed and refund_delayed send one message per
-- order issue, due when it opened, with the order, the issue, the shop's
-- message and a revised promise; they are service messages: no opt-in
-- needed, an opt-out of the channel or of everything stops them, the
-- frequency cap neither stops them nor counts them, holdout applies. A
-- parcel returned or lost also reaches the shop's staff (ops_recipient).
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

-- cap 1 message a week, no quiet hours, marketing held only while an issue is open
SELECT cap_messages, ops_hold_after
  FROM loyalty.configure_journeys(cap_messages => 1, cap_window => '7 days', quiet_start => '00:00', quiet_end => '00:00',
                                  ops_hold_after => '0');
SELECT dispatch_within, stall_after, refund_within
  FROM loyalty.configure_operations(dispatch_within => '1 day', stall_after => '2 days', refund_within => '3 days');
SELECT ops_recipient FROM loyalty.configure_health(ops_recipient => 'ops@shop.example');

-- campaigns: the service kinds (purpose service whatever is asked), a
-- welcome (marketing, from 4 May 09:00) and an order follow-up (marketing,
-- from 6 May 13:00)
UPDATE loyalty.campaigns SET active = false;
UPDATE loyalty.campaigns SET active = true, active_from = '2026-05-04 09:00', params = '{"delay_hours": 0}', holdout_share = 0
 WHERE name = 'welcome';
UPDATE loyalty.campaigns SET active = true, active_from = '2026-05-06 13:00', params = '{"days": 0}', holdout_share = 0,
                             cooldown = '0'
 WHERE name = 'order follow-up';
INSERT INTO loyalty.campaigns (name, kind, channel, template, params, active, active_from, purpose, holdout_share) VALUES
    ('late', 'order_delayed', 'email', 'order_late', '{"message": "We have put your order at the front of the queue."}', true,
     '2026-01-01', 'marketing', 0),
    ('stalled', 'parcel_stalled', 'email', 'parcel_stalled', '{"remind_after_hours": 48}', true, '2026-01-01', DEFAULT, 0),
    ('failed', 'delivery_failed', 'email', 'delivery_failed', '{}', true, '2026-01-01', DEFAULT, 0),
    ('refund', 'refund_delayed', 'email', 'refund_late', '{}', true, '2026-01-01', DEFAULT, 0.99),
    ('check in', 'delivered_check_in', 'email', 'check_in', '{"hours_after": 24}', true, '2026-01-01', DEFAULT, 0);
SELECT name, kind, purpose, params->>'message' AS message FROM loyalty.campaigns WHERE active ORDER BY campaign_id;
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, params) VALUES ('x', 'order_delayed', 'email', 't', '{"message": ""}')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, params) VALUES ('x', 'parcel_stalled', 'email', 't', '{"message": 5}')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, params) VALUES ('x', 'refund_delayed', 'email', 't', '{"days": 5}')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, params) VALUES ('x', 'order_delayed', 'email', 't', '{"remind_after_hours": -1}')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, params) VALUES ('x', 'delivered_check_in', 'email', 't', '{"hours_after": "soon"}')$$);

-- customers: a (no consent given at all), b (opted out of email), c
-- (unsubscribed from everything), d, e, f, g, h (opted in), k (opted in, first order before the welcome)
SELECT count(*) AS profiles FROM (
    SELECT loyalty.upsert_customer(c, upper(c), c || '@example.com')
      FROM unnest(ARRAY['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'k']) c) p;
SELECT count(loyalty.set_consent(c, 'email', true, 'signup')) AS opt_ins FROM unnest(ARRAY['d', 'e', 'f', 'g', 'h', 'k']) c;
SELECT loyalty.set_consent('b', 'email', false, 'preferences') > 0 AS b_out, loyalty.set_consent('c', 'all', false, 'unsubscribe link') > 0 AS c_out;

-- k: ordered and paid Fri 1 May 10:00: dispatch by the end of Sat 2 May, late from Sun 3 May 00:00
SELECT loyalty.record_order('k', 'k-1', 30, '2026-05-01 10:00') > 0 AS ordered;
SELECT (loyalty.record_fulfilment('k-1', paid_at => '2026-05-01 10:00')).order_ref;
SELECT opened FROM loyalty.scan_operations('2026-05-03 05:00');
SELECT campaign, customer_id, occasion, decision FROM loyalty.due_messages_at('2026-05-03 06:00') ORDER BY campaign, customer_id;
SELECT sum(pending) AS pending FROM loyalty.enqueue_due('2026-05-03 06:00');
SELECT (loyalty.record_fulfilment('k-1', dispatched_at => '2026-05-03 12:00')).order_ref;
SELECT loyalty.record_shipment_event('k-1', 'InTransit', '2026-05-03 14:00', 'TRK-k') IS NOT NULL AS scanned;
SELECT (loyalty.record_fulfilment('k-1', delivered_at => '2026-05-04 12:00')).order_ref;
SELECT resolved FROM loyalty.scan_operations('2026-05-03 13:00');

-- Mon 4 May 10:00: a, b, c, d order and pay (late from Wed 6 May 00:00); a's
-- delivery was promised for 7 May, then for 9 May
SELECT count(loyalty.record_order(c, c || '-1', 40, '2026-05-04 10:00')) AS orders FROM unnest(ARRAY['a', 'b', 'c', 'd']) c;
SELECT count(loyalty.record_fulfilment(c || '-1', paid_at => '2026-05-04 10:00')) FROM unnest(ARRAY['a', 'b', 'c', 'd']) c;
SELECT (loyalty.record_fulfilment('a-1', promised_on => '2026-05-07', noted_at => '2026-05-04 10:00')).order_ref,
       (loyalty.record_fulfilment('a-1', promised_on => '2026-05-09', noted_at => '2026-05-05 09:00')).order_ref;
-- e: dispatched 4 May 12:00, never scanned (stalled from 6 May 12:00); f: lost;
-- g: a failed delivery attempt the carrier reports as a failure; h: a return
-- received 1 May, not refunded within 3 days (late from 5 May 00:00)
SELECT count(loyalty.record_order(c, c || '-1', 40, '2026-05-04 10:00')) AS orders FROM unnest(ARRAY['e', 'f', 'g', 'h']) c;
SELECT count(loyalty.record_fulfilment(c || '-1', paid_at => '2026-05-04 10:00', dispatched_at => '2026-05-04 12:00'))
  FROM unnest(ARRAY['e', 'f', 'g', 'h']) c;
SELECT loyalty.record_shipment_event('f-1', 'shipment_lost', '2026-05-05 10:00', 'TRK-f') IS NOT NULL,
       loyalty.record_shipment_event('g-1', 'delivery_failed', '2026-05-05 11:00', 'TRK-g') IS NOT NULL,
       loyalty.record_shipment_event('h-1', 'delivered', '2026-05-04 18:00', 'TRK-h') IS NOT NULL;
SELECT (loyalty.record_return('h-1', '2026-05-04 19:00', received_at => '2026-05-04 20:00')).order_ref;
-- the welcome goes to everyone opted in (d to h): the cap is reached
SELECT campaign, pending, suppressed FROM loyalty.enqueue_due('2026-05-04 11:00') WHERE pending + suppressed > 0 ORDER BY 1;

SELECT opened FROM loyalty.scan_operations('2026-05-08 06:00');
SELECT customer_id, kind, opened_at, detail->>'event' AS event FROM loyalty.order_issues WHERE resolved_at IS NULL ORDER BY customer_id, kind;
-- the decisions on Fri 8 May 06:30: one notice per issue, whatever the cap
SELECT campaign, customer_id, occasion, decision, reason, occasion_at
  FROM loyalty.due_messages_at('2026-05-08 06:30') ORDER BY campaign, customer_id;
SELECT campaign, pending, held_out, suppressed FROM loyalty.enqueue_due('2026-05-08 06:30') WHERE campaign_id IS NOT NULL ORDER BY 1;
-- what the template gets: the order, the issue, the shop's message, the new promise
SELECT customer_id, payload->'occasion' AS occasion FROM loyalty.outbox o JOIN loyalty.campaigns c USING (campaign_id)
 WHERE c.purpose = 'service' AND o.status = 'pending' ORDER BY customer_id, (payload->'occasion'->>'issue_id')::integer NULLS LAST;
-- the shop's staff hear of the lost parcel (f), not of g's failed attempt
SELECT customer_id, channel, recipient, template, status, due_at, payload->>'order_ref' AS order_ref, payload->>'event' AS event
  FROM loyalty.outbox WHERE campaign_id IS NULL;
-- a rerun adds nothing
SELECT sum(pending) AS pending, sum(suppressed) AS suppressed FROM loyalty.enqueue_due('2026-05-08 06:30');
SELECT count(*) AS staff_messages FROM loyalty.outbox WHERE customer_id = 'loyalty:ops';

-- k's notice of 3 May does not count against the cap: after the issue was
-- resolved k orders again and the follow-up goes
SELECT loyalty.record_order('k', 'k-2', 20, '2026-05-08 07:00') > 0 AS ordered;
SELECT campaign, customer_id, decision, reason FROM loyalty.due_messages_at('2026-05-08 07:30') WHERE customer_id = 'k';
SELECT c.name, o.customer_id, o.status, o.due_at FROM loyalty.outbox o JOIN loyalty.campaigns c USING (campaign_id)
 WHERE o.customer_id = 'k' ORDER BY o.due_at;

-- The second notice (stalled: 48 hours after the issue opened, if still
-- open) and the check-in after delivery (24 hours after an order that had a
-- dispatch, transit or delivery issue is delivered). d's order leaves on
-- 8 May and arrives on 9 May 10:00; e's parcel moves on 9 May 09:00 (its
-- reminder, due 8 May 12:00, is no longer sent); g's is still stalled.
SELECT (loyalty.record_fulfilment('d-1', dispatched_at => '2026-05-08 08:00')).order_ref;
SELECT loyalty.record_shipment_event('d-1', 'InTransit', '2026-05-08 12:00', 'TRK-d') IS NOT NULL AS scanned;
SELECT (loyalty.record_fulfilment('d-1', delivered_at => '2026-05-09 10:00')).order_ref;
SELECT loyalty.record_shipment_event('e-1', 'InTransit', '2026-05-09 09:00', 'TRK-e') IS NOT NULL AS scanned;
SELECT opened, resolved FROM loyalty.scan_operations('2026-05-10 10:30');
SELECT campaign, customer_id, occasion, decision, occasion_at, payload->'occasion'->>'issues' AS issues,
       payload->'occasion'->>'second_notice' AS second_notice
  FROM loyalty.due_messages_at('2026-05-10 11:00') ORDER BY campaign, customer_id;
SELECT campaign, pending, suppressed FROM loyalty.enqueue_due('2026-05-10 11:00') WHERE pending + suppressed > 0 ORDER BY 1;
SELECT c.name, o.customer_id, o.payload->'occasion'->>'order_ref' AS order_ref, o.payload->'occasion'->>'issue_id' AS issue_id,
       o.payload->'occasion'->>'second_notice' AS second_notice, o.status, o.due_at
  FROM loyalty.outbox o JOIN loyalty.campaigns c USING (campaign_id)
 WHERE c.name IN ('check in', 'stalled') ORDER BY c.name, o.customer_id, o.due_at;

-- The staff also hear of a return that follows a failed attempt: g's
-- parcel (a failure on 5 May, not for the staff) goes back to the sender on
-- 11 May 09:00: one staff message for g's issue, with the return; a rerun
-- adds nothing.
SELECT loyalty.record_shipment_event('g-1', 'Exception_Returned', '2026-05-11 09:00', 'TRK-g') IS NOT NULL AS returned;
SELECT opened, resolved FROM loyalty.scan_operations('2026-05-11 10:00');
SELECT kind, detail->>'event' AS first_event FROM loyalty.order_issues WHERE order_ref = 'g-1' AND kind = 'delivery_failed';
SELECT sum(pending) >= 0 AS ran FROM loyalty.enqueue_due('2026-05-11 10:00');
SELECT sum(pending) >= 0 AS ran FROM loyalty.enqueue_due('2026-05-11 10:05');
SELECT payload->>'order_ref' AS order_ref, payload->>'event' AS event, payload->>'carrier_status' AS carrier_status,
       payload->>'event_at' AS event_at, due_at
  FROM loyalty.outbox WHERE customer_id = 'loyalty:ops' ORDER BY message_id;
