-- Service notices (issue 14, docs/operations.md "Telling customers and
-- holding marketing"): the campaign kinds order_delayed, parcel_stalled,
-- delivery_failed and refund_delayed (loyalty._occasions, one per order
-- issue) are service messages (campaigns.purpose). Here: what they need from
-- loyalty.order_issues, and the shop staff's copy of the issues a customer
-- cannot fix.

-- (the notices search loyalty.order_issues by opened_at, delivered_check_in
-- loyalty.order_lifecycle by delivered_at: indexed in 78_operations.sql)

-- A parcel returned to sender or lost (a delivery_failed issue with such a
-- carrier event, first or after a failed attempt) is for the shop to fix:
-- one message per issue to health_settings.ops_recipient (customer_id
-- 'loyalty:ops', as the watchdog's alerts), for the issues open at p_as_of
-- whose event came within the last 7 days (opened within 30); none while no
-- ops_recipient is set. Called by enqueue_due under its
-- lock; the dedupe key makes a rerun add nothing. Returns the messages written.
CREATE FUNCTION loyalty._ops_staff_alerts(p_as_of timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.health_settings;
    n bigint;
BEGIN
    SELECT * INTO s FROM loyalty.health_settings;
    IF s.ops_recipient IS NULL THEN
        RETURN 0;
    END IF;
    INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, payload, due_at)
    SELECT 'ops:issue:' || i.issue_id, NULL, 'loyalty:ops', s.ops_channel, s.ops_recipient, 'loyalty_ops_issue',
           jsonb_build_object('issue_id', i.issue_id, 'issue', i.kind, 'event', e.status,
                              'carrier_status', e.carrier_status, 'order_ref', i.order_ref,
                              'customer_id', i.customer_id, 'opened_at', i.opened_at, 'event_at', e.at,
                              'why', 'the parcel will not reach the customer: the shop must act (resend or refund)'),
           p_as_of
      FROM loyalty.order_issues i
      -- the first such event of the failed delivery: often a return or a
      -- loss follows a failed attempt, which opened the issue
     CROSS JOIN LATERAL (SELECT e.status, e.carrier_status, e.at FROM loyalty.shipment_events e
                          WHERE e.order_ref = i.order_ref AND e.status IN ('returned_to_sender', 'lost')
                            AND e.at >= i.opened_at AND e.at <= p_as_of
                          ORDER BY e.at, e.event_id LIMIT 1) e
     WHERE i.opened_at > p_as_of - interval '30 days' AND i.opened_at <= p_as_of
       AND (i.resolved_at IS NULL OR i.resolved_at > p_as_of)
       AND i.kind = 'delivery_failed' AND e.at > p_as_of - interval '7 days'
    ON CONFLICT (dedupe_key) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
