-- One arbiter (issue 14) with a fixed clock: while a customer has an order
-- issue open, and for journey_settings.ops_hold_after after it is resolved,
-- marketing occasions are decided ops_hold (recorded, never sent) and the
-- customer's pending marketing messages are cancelled by enqueue_due; a
-- customer without an issue, and service campaigns, are not held.
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
CREATE FUNCTION pg_temp.outbox()
RETURNS TABLE (campaign text, customer_id text, occasion text, status text, due_at timestamptz, why text)
LANGUAGE sql AS $$
    SELECT c.name, o.customer_id, split_part(o.dedupe_key, ':', 3) || ':' || split_part(o.dedupe_key, ':', 4),
           o.status, o.due_at, coalesce(o.last_error, o.payload->>'reason')
      FROM loyalty.outbox o JOIN loyalty.campaigns c ON c.campaign_id = o.campaign_id
     ORDER BY o.customer_id, o.due_at, c.name
$$;

-- ---- settings: no quiet hours, a cap that never bites, hold 7 days after
SELECT cap_messages, ops_hold_after
  FROM loyalty.configure_journeys(cap_messages => 50, quiet_start => '00:00', quiet_end => '00:00', ops_hold_after => '7 days');
SELECT pg_temp.err($$SELECT loyalty.configure_journeys(ops_hold_after => '-1 day')$$);
SELECT ops_hold_after FROM loyalty.journey_settings;
SELECT stall_after FROM loyalty.configure_operations(stall_after => '2 days');
SELECT pg_temp.err($$UPDATE loyalty.campaigns SET purpose = 'promo' WHERE name = 'welcome'$$);
SELECT count(*) FILTER (WHERE purpose = 'marketing') AS marketing, count(*) AS campaigns FROM loyalty.campaigns;

-- the promo: a follow-up on every order, at once; and a service receipt
UPDATE loyalty.campaigns SET active = false;
UPDATE loyalty.campaigns SET active = true, active_from = '2026-01-01', params = '{"days": 0}', cooldown = '0',
                             holdout_share = 0
 WHERE name = 'order follow-up';
INSERT INTO loyalty.campaigns (name, kind, channel, template, params, active, active_from, purpose)
VALUES ('order receipt', 'post_purchase', 'email', 'receipt', '{"days": 0}', true, '2026-01-01', 'service');

SELECT count(*) AS profiles FROM (
    SELECT loyalty.upsert_customer('stuck', 'Stu', 'stu@example.com'),
           loyalty.upsert_customer('calm', 'Cal', 'cal@example.com')) p;
SELECT loyalty.set_consent('stuck', 'email', true, 'signup') > 0 AND loyalty.set_consent('calm', 'email', true, 'signup') > 0 AS consents;

-- Fri 1 May: both order, paid and dispatched at noon; the promo goes to the
-- outbox (the sender is down: it stays pending)
SELECT loyalty.record_order(c, c || '-1', 40, '2026-05-01 10:00') > 0 AS ordered FROM unnest(ARRAY['stuck', 'calm']) c;
SELECT count(loyalty.record_fulfilment(c || '-1', paid_at => '2026-05-01 10:05', dispatched_at => '2026-05-01 12:00'))
  FROM unnest(ARRAY['stuck', 'calm']) c;
SELECT campaign, pending, held_out, suppressed FROM loyalty.enqueue_due('2026-05-01 11:00') WHERE campaign_id IS NOT NULL ORDER BY 1;
-- calm's parcel is scanned and delivered; stuck's is never scanned
SELECT loyalty.record_shipment_event('calm-1', 'InTransit', '2026-05-02 08:00', 'TRK-calm') IS NOT NULL AS scanned;
SELECT count(loyalty.record_fulfilment('calm-1', delivered_at => '2026-05-03 12:00'));

-- Mon 4 May: the scan opens stalled_parcel for stuck (2 days after dispatch)
SELECT opened, resolved, open_issues FROM loyalty.scan_operations('2026-05-04 12:00');
SELECT customer_id, order_ref, kind, opened_at, resolved_at FROM loyalty.order_issues ORDER BY issue_id;
-- both order again at 13:00: the decisions before enqueueing
SELECT loyalty.record_order(c, c || '-2', 25, '2026-05-04 13:00') > 0 AS ordered FROM unnest(ARRAY['stuck', 'calm']) c;
SELECT campaign, customer_id, occasion, decision, reason, due_at IS NULL AS never_due
  FROM loyalty.due_messages_at('2026-05-04 13:30') ORDER BY customer_id, campaign;
SELECT campaign, pending, suppressed FROM loyalty.enqueue_due('2026-05-04 13:30') WHERE campaign_id IS NOT NULL ORDER BY 1;
-- stuck's pending promo of 1 May is cancelled with the reason; calm's is not;
-- the new promo is recorded as ops_hold with the reason in its payload
SELECT * FROM pg_temp.outbox();
SELECT payload FROM loyalty.outbox WHERE status = 'ops_hold';
-- a rerun adds and cancels nothing
SELECT sum(pending) AS pending, sum(suppressed) AS suppressed FROM loyalty.enqueue_due('2026-05-04 13:30');
SELECT count(*) AS messages FROM loyalty.outbox;

-- Tue 5 May 09:00 the carrier scans the parcel: the issue is resolved, but
-- marketing waits 7 days more (until 12 May 09:00)
SELECT loyalty.record_shipment_event('stuck-1', 'InTransit', '2026-05-05 09:00', 'TRK-stuck') IS NOT NULL AS scanned;
SELECT opened, resolved, open_issues FROM loyalty.scan_operations('2026-05-05 10:00');
SELECT kind, resolved_at FROM loyalty.order_issues;
SELECT loyalty.record_order('stuck', 'stuck-3', 30, '2026-05-12 08:00') > 0 AS ordered;
SELECT campaign, customer_id, occasion, decision, reason FROM loyalty.due_messages_at('2026-05-12 08:30') ORDER BY campaign;
SELECT campaign, pending, suppressed FROM loyalty.enqueue_due('2026-05-12 08:30') WHERE campaign_id IS NOT NULL ORDER BY 1;
-- after the quiet period it flows again
SELECT loyalty.record_order('stuck', 'stuck-4', 30, '2026-05-12 09:30') > 0 AS ordered;
SELECT campaign, pending, suppressed FROM loyalty.enqueue_due('2026-05-12 10:00') WHERE campaign_id IS NOT NULL ORDER BY 1;
SELECT * FROM pg_temp.outbox() WHERE customer_id = 'stuck';

-- ops_hold_after 0: only an open issue holds
SELECT ops_hold_after FROM loyalty.configure_journeys(ops_hold_after => '0');
SELECT loyalty._ops_hold('stuck', '2026-05-05 08:59') IS NOT NULL AS held_while_open,
       loyalty._ops_hold('stuck', '2026-05-05 09:00') IS NOT NULL AS held_at_resolution,
       loyalty._ops_hold('stuck', '2026-05-03 11:59') IS NOT NULL AS held_before_opened,
       loyalty._ops_hold('calm', '2026-05-04 12:00') IS NOT NULL AS calm_held;

-- the report counts ops_hold as suppressed, the cancelled promo as cancelled
SELECT name, messages, pending, cancelled, suppressed FROM loyalty.campaign_performance
 WHERE name IN ('order follow-up', 'order receipt') ORDER BY name;
