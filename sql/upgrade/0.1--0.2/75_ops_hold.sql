-- 0.1 -> 0.2: one arbiter (issue 14, docs/operations.md "Telling customers
-- and holding marketing"): campaigns.purpose, journey_settings.ops_hold_after,
-- the ops_hold decision and status, cancelling held customers' pending
-- marketing messages. The functions carry their install bodies
-- (sql/install/71_0_ops_hold.sql, 70_journeys.sql, 71_journeys_due.sql,
-- 72_journeys_report.sql); _due_messages and enqueue_due were last
-- redefined in 40_decisions.sql.

ALTER TABLE loyalty.campaigns ADD COLUMN purpose text NOT NULL DEFAULT 'marketing' CHECK (purpose IN ('marketing', 'service'));
COMMENT ON COLUMN loyalty.campaigns.purpose IS 'marketing (held while the customer has an order issue: ops_hold) or service';
ALTER TABLE loyalty.journey_settings ADD COLUMN ops_hold_after interval NOT NULL DEFAULT '7 days' CHECK (ops_hold_after >= '0');
COMMENT ON COLUMN loyalty.journey_settings.ops_hold_after IS 'marketing waits this long after a customer''s last order issue is resolved (ops_hold; 0: only while it is open)';

ALTER TABLE loyalty.outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE loyalty.outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('pending', 'sent', 'dead', 'held_out', 'expired', 'cancelled',
                      'no_consent', 'no_contact', 'cooldown', 'capped', 'superseded', 'ops_hold'));
COMMENT ON COLUMN loyalty.outbox.status IS 'pending (also while a sender holds a lease on it), sent, dead (gave up after the allowed attempts), held_out (holdout group, never sent), expired (missed its validity window), cancelled (the customer opted out before it went out); suppressed by the journeys policy, recorded and never sent: no_consent, no_contact, cooldown, capped, superseded, ops_hold (marketing while the customer has an order issue; a pending marketing message is cancelled then, last_error says why)';

-- @function loyalty._ops_hold

-- @function loyalty._ops_hold_cancel
REVOKE ALL ON FUNCTION loyalty._ops_hold(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION loyalty._ops_hold_cancel(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._ops_hold(text, timestamptz) TO loyalty_admin;
GRANT EXECUTE ON FUNCTION loyalty._ops_hold_cancel(timestamptz) TO loyalty_admin;

DROP FUNCTION loyalty.configure_journeys(integer, interval, time, time, text);
-- @function loyalty.configure_journeys
REVOKE ALL ON FUNCTION loyalty.configure_journeys(integer, interval, time, time, text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty.configure_journeys(integer, interval, time, time, text, interval) TO loyalty_admin;

-- @function loyalty._due_messages
COMMENT ON VIEW loyalty.due_messages IS
'What loyalty.enqueue_due() would do now: each occasion not yet in the outbox with its decision (send and quiet_hours become pending messages; held_out, expired, no_consent, no_contact, cooldown, capped, superseded and ops_hold are recorded with that status and never sent) and why';
COMMENT ON COLUMN loyalty.due_messages.decision IS 'send, quiet_hours (pending, due at due_at), held_out, expired, capped, cooldown, no_consent, no_contact, superseded (a tier upgrade when a win-back of the customer is due in the same run), ops_hold (marketing while the customer has an order issue)';

-- @function loyalty.enqueue_due
-- @view loyalty.campaign_performance
