-- Journeys report: what each campaign sent, and whether it made customers buy.
--
-- The measure. A campaign's holdout group (outbox status 'held_out') is chosen
-- by the same rule as the treated group, minus the message, so the difference
-- between the two groups is what the message did (the uplift). Each customer
-- counts once per group, from their first message of the campaign (the
-- occasion that put them in the group): they "ordered" if they placed a
-- counted order (loyalty.orders.counts) in the attribution window after it,
-- and their revenue is the net amount (amount - refunded) of those orders.
--   treated: status 'sent', the window starts at sent_at;
--   holdout: status 'held_out', the window starts when the message would have
--            gone out, greatest(due_at, created_at) (due_at may lie in quiet
--            hours' future or, after downtime, in the past);
--   window:  [start, start + attribution window), default 30 days
--            (loyalty.journey_report_settings.attribution_window).
-- Only customers whose window has fully elapsed count, so a campaign that
-- started last week does not look worse than it is: every figure below is
-- about "matured" customers, while the message counts cover every row.
-- The uplift comes with a 95% interval (normal approximation: two proportions
-- for the order share, Welch for revenue per customer); the verdict only
-- calls an effect when the interval excludes zero and both groups have at
-- least 30 matured customers.

CREATE TABLE loyalty.journey_report_settings (
    id                 boolean PRIMARY KEY DEFAULT true CHECK (id),
    attribution_window interval NOT NULL DEFAULT '30 days'
                       CHECK (attribution_window > '0' AND attribution_window <= '365 days'),
    min_group_size     integer NOT NULL DEFAULT 30 CHECK (min_group_size >= 2)
);
INSERT INTO loyalty.journey_report_settings DEFAULT VALUES;
COMMENT ON TABLE loyalty.journey_report_settings IS 'Settings of loyalty.campaign_performance (one row; the shop may UPDATE it)';
COMMENT ON COLUMN loyalty.journey_report_settings.attribution_window IS 'orders within this long after a message count for it (default 30 days)';
COMMENT ON COLUMN loyalty.journey_report_settings.min_group_size IS 'matured customers each group needs before the verdict calls an effect';

CREATE VIEW loyalty.campaign_performance AS
WITH settings AS (
    SELECT s.attribution_window AS w, s.min_group_size AS min_n FROM loyalty.journey_report_settings s
), counts AS (
    SELECT o.campaign_id, count(*) AS messages,
           count(*) FILTER (WHERE o.status = 'sent') AS sent,
           count(*) FILTER (WHERE o.status = 'held_out') AS held_out,
           count(*) FILTER (WHERE o.status = 'dead') AS failed,
           count(*) FILTER (WHERE o.status = 'pending') AS pending,
           count(*) FILTER (WHERE o.status = 'expired') AS expired,
           count(*) FILTER (WHERE o.status = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE o.status IN ('no_consent', 'no_contact', 'cooldown', 'capped', 'superseded', 'ops_hold')) AS suppressed
      FROM loyalty.outbox o
     GROUP BY o.campaign_id
), exposed AS (
    -- each customer once per group: their first message of the campaign
    SELECT o.campaign_id, o.customer_id, o.status = 'sent' AS treated,
           min(CASE WHEN o.status = 'sent' THEN coalesce(o.sent_at, o.due_at)
                    ELSE greatest(o.due_at, o.created_at) END) AS started_at
      FROM loyalty.outbox o
     WHERE o.status = ANY (ARRAY['sent', 'held_out'])
     GROUP BY o.campaign_id, o.customer_id, o.status
), matured AS (
    SELECT e.campaign_id, e.treated, r.ordered, r.revenue
      FROM exposed e
     CROSS JOIN settings s
     CROSS JOIN LATERAL (
           SELECT count(*) > 0 AS ordered,
                  coalesce(sum(od.amount - od.refunded), 0) AS revenue
             FROM loyalty.orders od
            WHERE od.customer_id = e.customer_id AND od.counts
              AND od.ordered_at >= e.started_at
              AND od.ordered_at < e.started_at + s.w) r
     WHERE e.started_at + s.w <= now()
), groups AS (
    SELECT m.campaign_id,
           count(*) FILTER (WHERE m.treated) AS n1,
           avg(m.ordered::integer::numeric) FILTER (WHERE m.treated) AS p1,
           avg(m.revenue) FILTER (WHERE m.treated) AS r1,
           var_samp(m.revenue) FILTER (WHERE m.treated) AS v1,
           count(*) FILTER (WHERE NOT m.treated) AS n0,
           avg(m.ordered::integer::numeric) FILTER (WHERE NOT m.treated) AS p0,
           avg(m.revenue) FILTER (WHERE NOT m.treated) AS r0,
           var_samp(m.revenue) FILTER (WHERE NOT m.treated) AS v0
      FROM matured m
     GROUP BY m.campaign_id
), stats AS (
    SELECT g.*, g.p1 - g.p0 AS dp,
           1.96 * sqrt(
               g.p1 * (1 - g.p1) / g.n1
               + g.p0 * (1 - g.p0) / g.n0) AS dp_margin,
           g.r1 - g.r0 AS dr,
           1.96 * sqrt(g.v1 / g.n1
               + g.v0 / g.n0) AS dr_margin
      FROM groups g
)
SELECT c.campaign_id, c.name, c.kind, c.channel,
       coalesce(n.messages, 0) AS messages,
       coalesce(n.sent, 0) AS sent,
       coalesce(n.held_out, 0) AS held_out,
       coalesce(n.failed, 0) AS failed,
       coalesce(n.pending, 0) AS pending,
       coalesce(n.expired, 0) AS expired,
       coalesce(n.cancelled, 0) AS cancelled,
       coalesce(n.suppressed, 0) AS suppressed,
       (SELECT (date_part('epoch', s.w) / 86400)::numeric(8, 2) FROM settings s) AS window_days,
       coalesce(st.n1, 0) AS treated_customers,
       round(st.p1, 4) AS treated_ordered_share,
       round(st.r1, 2) AS treated_revenue_per_customer,
       coalesce(st.n0, 0) AS holdout_customers,
       round(st.p0, 4) AS holdout_ordered_share,
       round(st.r0, 2) AS holdout_revenue_per_customer,
       round(st.dp, 4) AS ordered_share_uplift,
       round(st.dp - st.dp_margin, 4) AS ordered_share_uplift_low,
       round(st.dp + st.dp_margin, 4) AS ordered_share_uplift_high,
       round(st.dr, 2) AS revenue_uplift_per_customer,
       round(st.dr - st.dr_margin, 2) AS revenue_uplift_low,
       round(st.dr + st.dr_margin, 2) AS revenue_uplift_high,
       CASE WHEN coalesce(n.sent, 0) = 0 THEN 'nothing sent yet'
            WHEN coalesce(n.held_out, 0) = 0 THEN 'no holdout group'
            WHEN coalesce(st.n1, 0) < (SELECT s.min_n FROM settings s)
              OR coalesce(st.n0, 0) < (SELECT s.min_n FROM settings s) THEN 'too early'
            WHEN st.dp - st.dp_margin > 0 THEN 'more customers ordered'
            WHEN st.dp + st.dp_margin < 0 THEN 'fewer customers ordered'
            ELSE 'no clear difference' END AS verdict
  FROM loyalty.campaigns c
  LEFT JOIN counts n ON n.campaign_id = c.campaign_id
  LEFT JOIN stats st ON st.campaign_id = c.campaign_id;
COMMENT ON VIEW loyalty.campaign_performance IS
'Per campaign: messages by status, and for customers whose attribution window has elapsed the share who ordered and the revenue per customer, treated (sent) against holdout, with the uplift and its 95% interval';
COMMENT ON COLUMN loyalty.campaign_performance.campaign_id IS 'the campaign (loyalty.campaigns)';
COMMENT ON COLUMN loyalty.campaign_performance.name IS 'the campaign''s name';
COMMENT ON COLUMN loyalty.campaign_performance.kind IS 'the campaign''s kind (welcome, win_back, ...)';
COMMENT ON COLUMN loyalty.campaign_performance.channel IS 'the campaign''s channel';
COMMENT ON COLUMN loyalty.campaign_performance.messages IS 'outbox rows of the campaign, any status';
COMMENT ON COLUMN loyalty.campaign_performance.suppressed IS 'occasions the policy decided not to send: no consent, no usable contact, cooldown, frequency cap, superseded by a contradicting message, or held while the customer had an order issue (statuses no_consent, no_contact, cooldown, capped, superseded, ops_hold)';
COMMENT ON COLUMN loyalty.campaign_performance.sent IS 'messages the sender delivered (status sent)';
COMMENT ON COLUMN loyalty.campaign_performance.held_out IS 'messages recorded for the holdout group and not sent (status held_out)';
COMMENT ON COLUMN loyalty.campaign_performance.failed IS 'messages the sender gave up on after the allowed attempts (status dead)';
COMMENT ON COLUMN loyalty.campaign_performance.pending IS 'messages waiting to be sent or being sent (status pending, also under a sender''s lease)';
COMMENT ON COLUMN loyalty.campaign_performance.expired IS 'occasions missed for longer than the campaign''s validity window (status expired)';
COMMENT ON COLUMN loyalty.campaign_performance.cancelled IS 'pending messages withdrawn because the customer opted out before they went out (status cancelled)';
COMMENT ON COLUMN loyalty.campaign_performance.window_days IS 'attribution window in days (loyalty.journey_report_settings)';
COMMENT ON COLUMN loyalty.campaign_performance.treated_customers IS 'customers sent a message whose window has elapsed (each once, from their first message)';
COMMENT ON COLUMN loyalty.campaign_performance.treated_ordered_share IS 'share of treated customers with a counted order in the window after sent_at';
COMMENT ON COLUMN loyalty.campaign_performance.treated_revenue_per_customer IS 'net order amount in the window per treated customer (customers without an order count as 0)';
COMMENT ON COLUMN loyalty.campaign_performance.holdout_customers IS 'held-out customers whose window has elapsed (each once, from their first held-out occasion)';
COMMENT ON COLUMN loyalty.campaign_performance.holdout_ordered_share IS 'share of held-out customers with a counted order in the window after the message would have gone out';
COMMENT ON COLUMN loyalty.campaign_performance.holdout_revenue_per_customer IS 'net order amount in the window per held-out customer';
COMMENT ON COLUMN loyalty.campaign_performance.ordered_share_uplift IS 'treated_ordered_share - holdout_ordered_share: the share of customers the message made order';
COMMENT ON COLUMN loyalty.campaign_performance.ordered_share_uplift_low IS 'lower end of the 95% interval of ordered_share_uplift';
COMMENT ON COLUMN loyalty.campaign_performance.ordered_share_uplift_high IS 'upper end of the 95% interval of ordered_share_uplift';
COMMENT ON COLUMN loyalty.campaign_performance.revenue_uplift_per_customer IS 'treated_revenue_per_customer - holdout_revenue_per_customer: revenue the message brought per customer messaged';
COMMENT ON COLUMN loyalty.campaign_performance.revenue_uplift_low IS 'lower end of the 95% interval of revenue_uplift_per_customer';
COMMENT ON COLUMN loyalty.campaign_performance.revenue_uplift_high IS 'upper end of the 95% interval of revenue_uplift_per_customer';
COMMENT ON COLUMN loyalty.campaign_performance.verdict IS
'nothing sent yet, no holdout group, too early (a group below min_group_size matured customers), more customers ordered / fewer customers ordered (the interval excludes zero), no clear difference';

SELECT pg_catalog.pg_extension_config_dump('loyalty.journey_report_settings', '');
