-- 0.1 -> 0.2: service notices (issue 14, docs/operations.md "Telling
-- customers and holding marketing"): the campaign kinds order_delayed,
-- parcel_stalled, delivery_failed and refund_delayed (purpose service), and
-- the staff's copy of the issues a customer cannot fix. Needs
-- 75_ops_hold.sql (campaigns.purpose; its _due_messages and enqueue_due are
-- the final ones and call what this defines). _campaign_params and
-- _occasions were last redefined in 40_decisions.sql. Bodies as in
-- sql/install/70_journeys.sql, 71_journeys_due.sql, 79_notices.sql.

COMMENT ON COLUMN loyalty.campaigns.kind IS 'welcome, post_purchase, repurchase_reminder, win_back, birthday, points_expiring, tier_changed, milestone, custom; service notices (one per order issue): order_delayed, parcel_stalled, delivery_failed, refund_delayed; delivered_check_in (one per delivered order that had an issue)';

-- @function loyalty._campaign_params

-- @function loyalty._campaign_check

-- @function loyalty._occasions

-- (order_issues_opened_idx and order_lifecycle_delivered_idx: with their tables, 70_operations.sql)

-- @function loyalty._ops_staff_alerts
REVOKE ALL ON FUNCTION loyalty._ops_staff_alerts(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._ops_staff_alerts(timestamptz) TO loyalty_admin;
