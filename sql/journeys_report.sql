-- campaign_performance: message counts per status, and the treated group
-- against the holdout group over the attribution window, from hand-built
-- outbox rows (a sender simulated by plain UPDATEs) and orders. Every figure
-- is computed by hand in the comments.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
\set SHOW_CONTEXT never

-- four campaigns of the report's own (ids 101-104; the installed examples
-- have small ids and no messages), never switched on: the rows are hand-made
INSERT INTO loyalty.campaigns (campaign_id, name, kind, channel, template, holdout_share) VALUES
    (101, 'report: with holdout', 'welcome', 'email', 'tpl', 0.3),
    (102, 'report: big groups', 'post_purchase', 'email', 'tpl', 0.5),
    (103, 'report: no holdout', 'welcome', 'sms', 'tpl', 0),
    (104, 'report: nothing sent', 'birthday', 'email', 'tpl', 0.1);

-- one outbox row; the status and times a sender would have left
CREATE FUNCTION pg_temp.msg(p_campaign integer, p_customer text, p_occasion text, p_status text,
                            p_due timestamptz, p_created timestamptz, p_sent timestamptz DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$
    INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template,
                                status, due_at, created_at, sent_at, attempts)
    VALUES (p_campaign || ':' || p_customer || ':' || p_occasion, p_campaign, p_customer, 'email',
            p_customer || '@example.com', 'tpl', 'pending', p_due, p_created, NULL, 0);
    -- the sender's part: plain UPDATEs (claim/ack live elsewhere)
    UPDATE loyalty.outbox SET status = p_status, sent_at = p_sent,
                              attempts = CASE WHEN p_status IN ('sent', 'dead') THEN 1 ELSE 0 END
     WHERE dedupe_key = p_campaign || ':' || p_customer || ':' || p_occasion AND p_status <> 'pending';
    SELECT p_campaign || ':' || p_customer || ':' || p_occasion;
$$;

-- Campaign 101, messages of 1 March 2025 10:00 UTC (windows long elapsed):
--   treated t1..t4 (sent at 10:00), holdout h1, h2; t4's second message
--   (May) does not count: a customer counts once, from the first message.
--   h2 was decided late (catch-up after downtime): due in the past, written
--   on 3 March, so its window starts on 3 March 10:00, when it would have
--   gone out. Counted but not measured: t5 sent yesterday (window still
--   open), p1 pending, p2 claimed, d1 dead, e1 expired.
SELECT count(pg_temp.msg(101, c, occ, st, due, created, sent)) AS messages FROM (VALUES
    ('t1', 'a', 'sent', timestamptz '2025-03-01 10:00+00', timestamptz '2025-03-01 09:00+00', timestamptz '2025-03-01 10:00+00'),
    ('t2', 'a', 'sent', '2025-03-01 10:00+00', '2025-03-01 09:00+00', '2025-03-01 10:00+00'),
    ('t3', 'a', 'sent', '2025-03-01 10:00+00', '2025-03-01 09:00+00', '2025-03-01 10:00+00'),
    ('t4', 'a', 'sent', '2025-03-01 10:00+00', '2025-03-01 09:00+00', '2025-03-01 10:00+00'),
    ('t4', 'b', 'sent', '2025-05-01 10:00+00', '2025-05-01 09:00+00', '2025-05-01 10:00+00'),
    ('h1', 'a', 'held_out', '2025-03-01 10:00+00', '2025-03-01 09:00+00', NULL),
    ('h2', 'a', 'held_out', '2025-03-01 10:00+00', '2025-03-03 10:00+00', NULL),
    ('t5', 'a', 'sent', now() - interval '1 day', now() - interval '1 day', now() - interval '1 day'),
    ('p1', 'a', 'pending', now() + interval '1 hour', now(), NULL),
    ('p2', 'a', 'pending', now() - interval '1 hour', now() - interval '1 hour', NULL),
    ('d1', 'a', 'dead', '2025-03-01 10:00+00', '2025-03-01 09:00+00', NULL),
    ('e1', 'a', 'expired', '2025-01-01 10:00+00', '2025-03-01 09:00+00', NULL)) v(c, occ, st, due, created, sent);
-- p2 is due: a sender claims it (the only due pending message)
SELECT customer_id AS claimed FROM loyalty.claim_messages(10, interval '1 minute');

-- Orders (window: [start, start + 30 days)):
--   t1: 100 on 5 March                     -> ordered, 100
--   t2: 50 on 20 March, 20 refunded        -> ordered, 30
--       80 on 15 April (after 31 March 10:00: outside the window)
--   t3: 70 on 28 February (before the message) -> not ordered, 0
--   t4: 40 on 10 March, refunded in full (does not count) -> not ordered;
--       60 on 10 May (in the window of the second message only) -> 0
--   t5: 25 today (window not elapsed: not measured at all)
--   h1: 20 on 2 March                      -> ordered, 20
--   h2: 90 on 2 March (before its window)  -> not ordered, 0
SELECT count(loyalty.record_order(c, o, a, t)) AS orders FROM (VALUES
    ('t1', 'o-t1', 100, timestamptz '2025-03-05 12:00+00'),
    ('t2', 'o-t2a', 50, '2025-03-20 12:00+00'),
    ('t2', 'o-t2b', 80, '2025-04-15 12:00+00'),
    ('t3', 'o-t3', 70, '2025-02-28 12:00+00'),
    ('t4', 'o-t4a', 40, '2025-03-10 12:00+00'),
    ('t4', 'o-t4b', 60, '2025-05-10 12:00+00'),
    ('t5', 'o-t5', 25, now()),
    ('h1', 'o-h1', 20, '2025-03-02 12:00+00'),
    ('h2', 'o-h2', 90, '2025-03-02 12:00+00')) v(c, o, a, t);
SELECT loyalty.record_refund('o-t2a', 20) AS refunded, loyalty.record_refund('o-t4a') AS refunded;

-- Campaign 102: 100 treated and 100 held out on 1 June 2025; 80 treated and 20
-- held-out customers ordered 10 within a week.
SELECT count(pg_temp.msg(102, 'x' || i, 'a', 'sent', '2025-06-01 10:00+00', '2025-06-01 09:00+00', '2025-06-01 10:05+00')),
       count(pg_temp.msg(102, 'y' || i, 'a', 'held_out', '2025-06-01 10:00+00', '2025-06-01 09:00+00'))
  FROM generate_series(1, 100) i;
SELECT count(loyalty.record_order('x' || i, 'o-x' || i, 10, '2025-06-05 10:00+00')) FILTER (WHERE i <= 80),
       count(loyalty.record_order('y' || i, 'o-y' || i, 10, '2025-06-05 10:00+00')) FILTER (WHERE i <= 20)
  FROM generate_series(1, 100) i;

-- Campaign 103: sent, no holdout group. Campaign 104: nothing yet.
SELECT pg_temp.msg(103, 't1', 'a', 'sent', '2025-03-01 10:00+00', '2025-03-01 09:00+00', '2025-03-01 10:00+00') AS written;

-- Counts per status, campaign 101: 6 sent (t1, t2, t3, t4 twice, t5), 2 held
-- out, 1 failed (dead), 2 pending (pending + claimed), 1 expired: 12 messages.
SELECT campaign_id, messages, sent, held_out, failed, pending, expired, window_days
  FROM loyalty.campaign_performance WHERE campaign_id > 100 ORDER BY campaign_id;

-- Campaign 101, 30 days:
--   treated: 4 matured customers (t5 not yet), ordered t1, t2: share 0.5;
--            revenue (100 + 30 + 0 + 0) / 4 = 32.50
--   holdout: 2 customers, ordered h1: share 0.5; revenue (20 + 0) / 2 = 10.00
--   uplift: share 0; revenue 22.50
--   share interval: 1.96 * sqrt(0.25/4 + 0.25/2) = 1.96 * 0.43301 = 0.8487
--   revenue interval: var treated = (67.5² + 2.5² + 32.5² + 32.5²) / 3 = 2225,
--     var holdout = (10² + 10²) / 1 = 200; 1.96 * sqrt(2225/4 + 200/2)
--     = 1.96 * 25.617 = 50.21 -> [-27.71, 72.71]
--   too few customers for a verdict (30 per group by default)
-- Campaign 102: treated 100, share 0.8, revenue 8.00; holdout 100, share 0.2,
--   revenue 2.00; uplift 0.6, interval 1.96 * sqrt(0.16/100 + 0.16/100)
--   = 0.1109 -> [0.4891, 0.7109]; revenue 6.00, var = 1600/99 in both groups,
--   1.96 * sqrt(2 * 16.1616 / 100) = 1.1143 -> [4.89, 7.11]: more customers ordered
\x on
SELECT campaign_id, treated_customers, treated_ordered_share, treated_revenue_per_customer,
       holdout_customers, holdout_ordered_share, holdout_revenue_per_customer,
       ordered_share_uplift, ordered_share_uplift_low, ordered_share_uplift_high,
       revenue_uplift_per_customer, revenue_uplift_low, revenue_uplift_high, verdict
  FROM loyalty.campaign_performance WHERE campaign_id > 100 ORDER BY campaign_id;
\x off

-- A 60-day window: t2's April order now counts (window to 30 April 10:00):
-- treated revenue (100 + 110 + 0 + 0) / 4 = 52.50, uplift 42.50; h2's window
-- (3 March to 2 May) still holds no order of h2. With groups of 2 allowed,
-- campaign 101 gets a verdict: no clear difference (the interval spans zero).
UPDATE loyalty.journey_report_settings SET attribution_window = '60 days', min_group_size = 2;
SELECT campaign_id, window_days, treated_customers, treated_revenue_per_customer, holdout_revenue_per_customer,
       revenue_uplift_per_customer, verdict
  FROM loyalty.campaign_performance WHERE campaign_id > 100 ORDER BY campaign_id;

-- bad settings are refused by the table's checks
UPDATE loyalty.journey_report_settings SET attribution_window = '0';
UPDATE loyalty.journey_report_settings SET min_group_size = 1;

-- BI tools read it through loyalty_reader; the view has a comment
SELECT has_table_privilege('loyalty_reader', 'loyalty.campaign_performance', 'SELECT') AS reader_can_read,
       has_table_privilege('loyalty_reader', 'loyalty.journey_report_settings', 'SELECT') AS reader_sees_settings,
       has_table_privilege('loyalty_reader', 'loyalty.journey_report_settings', 'UPDATE') AS reader_can_change,
       obj_description('loyalty.campaign_performance'::regclass) IS NOT NULL AS commented,
       (SELECT count(*) FROM pg_attribute a
         WHERE a.attrelid = 'loyalty.campaign_performance'::regclass AND a.attnum > 0
           AND col_description(a.attrelid, a.attnum) IS NULL) AS columns_without_comment;

-- the installed example campaigns are listed too, with nothing sent yet
SELECT count(*) AS examples, bool_and(messages = 0 AND verdict = 'nothing sent yet') AS all_empty
  FROM loyalty.campaign_performance WHERE campaign_id < 100;
