-- One arbiter (issue 14, docs/operations.md "Telling customers and holding
-- marketing"): while a customer has an order issue (loyalty.order_issues,
-- 78_operations.sql) open, and for journey_settings.ops_hold_after after it
-- is resolved, marketing campaigns (campaigns.purpose) decide ops_hold for
-- that customer (recorded, never sent), and enqueue_due cancels the
-- customer's pending marketing messages. Before 71_journeys_due.sql, whose
-- _due_messages calls this; plpgsql, so order_issues may come later.

-- Why the customer's marketing waits as of p_as_of (the earliest issue that
-- holds it), or NULL: an issue holds from opened_at until ops_hold_after past
-- resolved_at (an issue resolved after p_as_of was open then). Reads the
-- customer's issues by order_issues_customer_idx.
CREATE FUNCTION loyalty._ops_hold(p_customer text, p_as_of timestamptz)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    after interval := coalesce((SELECT s.ops_hold_after FROM loyalty.journey_settings s LIMIT 1), '7 days');
    i record;
BEGIN
    SELECT o.issue_id, o.kind, o.order_ref, o.opened_at, o.resolved_at INTO i
      FROM loyalty.order_issues o
     WHERE o.customer_id = p_customer AND o.opened_at <= p_as_of
       AND (o.resolved_at IS NULL OR o.resolved_at + after > p_as_of)
     ORDER BY o.opened_at, o.issue_id
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF i.resolved_at IS NULL OR i.resolved_at > p_as_of THEN
        RETURN format('ops_hold: %s on order %s (issue %s) open since %s', i.kind, i.order_ref, i.issue_id, i.opened_at);
    END IF;
    RETURN format('ops_hold: %s on order %s (issue %s) resolved at %s; marketing waits until %s (ops_hold_after %s)',
                  i.kind, i.order_ref, i.issue_id, i.resolved_at, i.resolved_at + after, after);
END
$$;

-- Cancel the pending marketing messages of customers held as of p_as_of
-- (status cancelled, last_error the hold's reason). Called by enqueue_due
-- under its lock. Queue rows are locked first, then outbox rows, in the
-- order ack/fail lock them (as set_consent), so a sender's ack racing this
-- waits instead of deadlocking; an ack of a message cancelled meanwhile is
-- refused ("was cancelled"). Reads the pending messages only (few).
CREATE FUNCTION loyalty._ops_hold_cancel(p_as_of timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM 1 FROM loyalty.outbox_queue q
     WHERE q.message_id IN (SELECT o.message_id FROM loyalty.outbox o
                              JOIN loyalty.campaigns cp ON cp.campaign_id = o.campaign_id
                             WHERE o.status = 'pending' AND cp.purpose = 'marketing'
                               AND loyalty._ops_hold(o.customer_id, p_as_of) IS NOT NULL)
     ORDER BY q.message_id
       FOR UPDATE OF q;
    UPDATE loyalty.outbox o
       SET status = 'cancelled', last_error = h.reason
      FROM (SELECT m.message_id, loyalty._ops_hold(m.customer_id, p_as_of) AS reason
              FROM loyalty.outbox m
              JOIN loyalty.campaigns cp ON cp.campaign_id = m.campaign_id
             WHERE m.status = 'pending' AND cp.purpose = 'marketing') h
     WHERE o.message_id = h.message_id AND h.reason IS NOT NULL AND o.status = 'pending';
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
