-- Journeys policy with a fixed clock: consent (global unsubscribe wins),
-- usable contact and the data-quality view, frequency cap with priority,
-- cooldown, quiet hours across DST changes, 29 February birthdays, holdout
-- determinism and share, reruns without duplicates.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
SET client_min_messages = notice;
SET TIME ZONE 'UTC';
\set SHOW_CONTEXT never

UPDATE loyalty.campaigns SET holdout_share = 0, cooldown = '0', active_from = '2026-01-01';
SELECT quiet_start = quiet_end AS no_quiet_hours
  FROM loyalty.configure_journeys(cap_messages => 2, cap_window => '7 days', quiet_start => '00:00', quiet_end => '00:00');
CREATE FUNCTION pg_temp.due(p_as_of timestamptz)
RETURNS TABLE (campaign text, customer_id text, decision text, reason text, due_at timestamptz)
LANGUAGE sql AS $$
    SELECT campaign, customer_id, decision, reason, due_at FROM loyalty.due_messages_at(p_as_of) ORDER BY 2, 1, occasion
$$;

-- ---- consent and contact (welcome by email, and an SMS copy of it)
INSERT INTO loyalty.campaigns (name, kind, channel, template, active, active_from, params)
VALUES ('welcome sms', 'welcome', 'sms', 'welcome_sms', true, '2026-01-01', '{"delay_hours": 1}');
UPDATE loyalty.campaigns SET active = true WHERE name = 'welcome';
SELECT count(loyalty.record_order(c, c || '-1', 30, '2026-06-14 10:00')) AS orders
  FROM unnest(ARRAY['c1', 'c2', 'c3', 'c4', 'c5', 'c6']) c;
SELECT count(*) AS one_row FROM (
    SELECT loyalty.upsert_customer('c1', 'One', 'one@example.com', '+49 170 1111111'),
           loyalty.upsert_customer('c2', 'Two', 'two@example.com', '+49 170 2222222'),
           loyalty.upsert_customer('c3', 'Three', 'three@example.com'),
           loyalty.upsert_customer('c4', 'Four', 'not-an-address', '12'),
           loyalty.upsert_customer('c5', 'Five', 'five@example.com', '+1 212 555 0105')) p;
SELECT count(*) AS profiles FROM loyalty.profiles;
-- c6 has no profile at all
SELECT loyalty.set_consent('c1', 'email', true, 'signup') > 0, loyalty.set_consent('c1', 'sms', true, 'checkout') > 0,
       loyalty.set_consent('c2', 'email', true, 'signup') > 0, loyalty.set_consent('c2', 'all', false, 'unsubscribe link') > 0,
       loyalty.set_consent('c3', 'all', true, 'signup: everything') > 0, loyalty.set_consent('c3', 'sms', false, 'STOP') > 0,
       loyalty.set_consent('c4', 'all', true, 'signup') > 0, loyalty.set_consent('c6', 'all', true, 'signup') > 0,
       loyalty.set_consent('c5', 'email', false, 'preferences') > 0;
SELECT * FROM pg_temp.due('2026-06-15 12:00');
-- opting in again after a global unsubscribe changes nothing until 'all' is granted again
SELECT loyalty.set_consent('c2', 'sms', true, 'checkout') > 0 AS ok;
SELECT campaign, decision FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id = 'c2';
SELECT loyalty.set_consent('c2', 'all', true, 'resubscribed') > 0 AS ok;
SELECT campaign, decision FROM pg_temp.due('2026-06-15 12:00') WHERE customer_id = 'c2';
SELECT channel, customers, no_profile, unusable_contact, reachable, no_time_zone FROM loyalty.contact_quality ORDER BY 1;
UPDATE loyalty.campaigns SET active = false;

-- ---- frequency cap (2 per 7 days) with priority; cooldown
-- customer f1 is due for three campaigns at once; one message already went out 3 days ago
SELECT loyalty.record_order('f1', 'f1-1', 50, '2026-05-01 10:00') > 0, loyalty.record_order('f1', 'f1-2', 50, '2026-06-08 09:00') > 0,
       loyalty.record_order('f1', 'f1-3', 50, '2026-06-08 10:00') > 0;
SELECT (loyalty.upsert_customer('f1', 'Eff', 'f1@example.com')).name, loyalty.set_consent('f1', 'email', true) > 0;
INSERT INTO loyalty.campaigns (name, kind, channel, template, priority, active, active_from, params, condition) VALUES
    ('pp high', 'post_purchase', 'email', 'pp', 5, true, '2026-01-01', '{"days": 7}', NULL),
    ('third order', 'milestone', 'email', 'm3', 20, true, '2026-01-01', '{"orders": 3}', NULL),
    ('anyone', 'custom', 'email', 'c', 30, true, '2026-01-01', '{"occasion": "once"}', 'orders >= 1');
SELECT * FROM pg_temp.due('2026-06-15 12:00');
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, template, status, due_at)
VALUES ('manual:f1', NULL, 'f1', 'email', 'manual', 'sent', '2026-06-12 12:00');
SELECT * FROM pg_temp.due('2026-06-15 12:00');
-- held-out and expired rows do not count against the cap
UPDATE loyalty.outbox SET status = 'held_out' WHERE dedupe_key = 'manual:f1';
SELECT campaign, decision FROM pg_temp.due('2026-06-15 12:00');
-- cooldown: one pp high message per 14 days: the second order's follow-up waits
UPDATE loyalty.campaigns SET cooldown = '14 days' WHERE name = 'pp high';
SELECT campaign, decision, reason FROM pg_temp.due('2026-06-15 12:00') WHERE campaign = 'pp high';
SELECT campaign, pending, suppressed FROM loyalty.enqueue_due('2026-06-15 12:00') WHERE pending + suppressed > 0;
-- every decision is recorded once: the suppressed occasions are in the outbox
-- with their reason, and nothing is left to decide half an hour later
SELECT c.name, o.customer_id, o.status, o.payload->>'reason' AS reason
  FROM loyalty.outbox o JOIN loyalty.campaigns c USING (campaign_id) ORDER BY 1, 2, o.dedupe_key;
SELECT count(*) AS still_to_decide FROM pg_temp.due('2026-06-15 12:30');
UPDATE loyalty.campaigns SET active = false;
DELETE FROM loyalty.outbox;

-- ---- quiet hours 21:00-09:00 local, across DST changes
SELECT quiet_start, quiet_end FROM loyalty.configure_journeys(quiet_start => '21:00', quiet_end => '09:00', cap_messages => 10);
-- Berlin goes from UTC+1 to UTC+2 on 29 March 2026 (02:00 local)
SELECT loyalty._after_quiet_hours('2026-03-28 21:30+00', 'Europe/Berlin', '21:00', '09:00') AS berlin_2230_local,
       loyalty._after_quiet_hours('2026-03-28 12:00+00', 'Europe/Berlin', '21:00', '09:00') AS berlin_1300_local,
       loyalty._after_quiet_hours('2026-03-29 06:00+00', 'Europe/Berlin', '21:00', '09:00') AS berlin_0800_local;
-- New York from UTC-5 to UTC-4 on 8 March 2026; back to UTC-5 on 1 November 2026
SELECT loyalty._after_quiet_hours('2026-03-08 03:00+00', 'America/New_York', '21:00', '09:00') AS ny_spring,
       loyalty._after_quiet_hours('2026-11-01 03:00+00', 'America/New_York', '21:00', '09:00') AS ny_autumn;
-- the same through the policy: one customer in each zone, one without a zone (default: UTC)
SELECT count(loyalty.record_order(c, c || '-1', 30, '2026-03-28 19:00')) FROM unnest(ARRAY['q1', 'q2', 'q3']) c;
SELECT (loyalty.upsert_customer('q1', 'Q1', 'q1@example.com', NULL, NULL, 'Europe/Berlin')).time_zone,
       (loyalty.upsert_customer('q2', 'Q2', 'q2@example.com', NULL, NULL, 'America/New_York')).time_zone,
       (loyalty.upsert_customer('q3', 'Q3', 'q3@example.com')).time_zone;
SELECT loyalty.set_consent(c, 'email', true) > 0 FROM unnest(ARRAY['q1', 'q2', 'q3']) c;
UPDATE loyalty.campaigns SET active = true WHERE name = 'welcome';
SELECT customer_id, decision, due_at, reason FROM pg_temp.due('2026-03-28 21:30') WHERE customer_id LIKE 'q%';
SELECT campaign, pending, delayed FROM loyalty.enqueue_due('2026-03-28 21:30') WHERE pending > 0;
SELECT customer_id, status, due_at FROM loyalty.outbox WHERE customer_id LIKE 'q%' ORDER BY 1;
UPDATE loyalty.campaigns SET active = false;

-- ---- 29 February birthdays: 28 February in other years, 29 February in leap years
SELECT (loyalty.upsert_customer('leap', 'Leap', 'leap@example.com', NULL, '2000-02-29', 'UTC')).birthday;
SELECT loyalty.set_consent('leap', 'email', true) > 0;
UPDATE loyalty.campaigns SET active = true, valid_for = '1 day' WHERE name = 'happy birthday';
SELECT configure_journeys IS NOT NULL FROM loyalty.configure_journeys(quiet_start => '00:00', quiet_end => '00:00');
SELECT '2027-02-28 12:00' AS as_of, occasion, occasion_at, decision FROM loyalty.due_messages_at('2027-02-28 12:00') WHERE customer_id = 'leap'
UNION ALL
SELECT '2028-02-28 12:00', occasion, occasion_at, decision FROM loyalty.due_messages_at('2028-02-28 12:00') WHERE customer_id = 'leap'
UNION ALL
SELECT '2028-02-29 12:00', occasion, occasion_at, decision FROM loyalty.due_messages_at('2028-02-29 12:00') WHERE customer_id = 'leap'
UNION ALL
SELECT '2100-02-28 12:00', occasion, occasion_at, decision FROM loyalty.due_messages_at('2100-02-28 12:00') WHERE customer_id = 'leap';
UPDATE loyalty.campaigns SET active = false;

-- ---- holdout: deterministic by campaign and customer, about the share asked for
SELECT count(*) FILTER (WHERE loyalty._holdout_draw(1, i::text) < 0.2)::float8 / 10000 BETWEEN 0.19 AND 0.21 AS share_near_20pct,
       count(*) FILTER (WHERE loyalty._holdout_draw(1, i::text) < 0.2) = count(*) FILTER (WHERE loyalty._holdout_draw(1, i::text) < 0.2) AS stable,
       count(*) FILTER (WHERE (loyalty._holdout_draw(1, i::text) < 0.2) <> (loyalty._holdout_draw(2, i::text) < 0.2)) > 0 AS differs_per_campaign
  FROM generate_series(1, 10000) i;
SELECT count(loyalty.record_order('h' || i, 'h' || i || '-1', 30, '2026-06-14 10:00')) AS orders,
       count(loyalty.upsert_customer('h' || i, NULL, 'h' || i || '@example.com')) AS profiles,
       count(loyalty.set_consent('h' || i, 'email', true)) AS consents
  FROM generate_series(1, 300) i;
UPDATE loyalty.campaigns SET active = true, holdout_share = 0.2 WHERE name = 'welcome';
SELECT decision, count(*) FROM loyalty.due_messages_at('2026-06-15 12:00') WHERE customer_id LIKE 'h%' GROUP BY 1 ORDER BY 1;
-- the same customers every time: the view's holdout equals the recorded one
CREATE TEMP TABLE held AS SELECT customer_id FROM loyalty.due_messages_at('2026-06-15 12:00') WHERE decision = 'held_out';
SELECT campaign, pending, held_out FROM loyalty.enqueue_due('2026-06-15 12:00') WHERE pending + held_out > 0;
SELECT (SELECT array_agg(customer_id ORDER BY customer_id) FROM held)
     = (SELECT array_agg(customer_id ORDER BY customer_id) FROM loyalty.outbox WHERE status = 'held_out' AND customer_id LIKE 'h%') AS same_holdout,
       (SELECT count(*) FROM loyalty.outbox WHERE status = 'held_out' AND payload ? 'why') = (SELECT count(*) FROM held) AS held_rows_have_payload;

-- ---- reruns and a second writer add nothing
SELECT count(*) AS rows_before FROM loyalty.outbox \gset
SELECT sum(pending + held_out + expired) AS rerun_rows FROM loyalty.enqueue_due('2026-06-15 12:00');
SELECT sum(pending + held_out + expired) AS later_rerun_rows FROM loyalty.enqueue_due('2026-06-15 13:00');
SELECT count(*) = :rows_before AS unchanged, count(DISTINCT dedupe_key) = count(*) AS keys_unique FROM loyalty.outbox;
DO $$ BEGIN PERFORM loyalty.enqueue_due('infinity'); EXCEPTION WHEN invalid_parameter_value THEN RAISE NOTICE 'refused: %', SQLERRM; END $$;

-- ---- an opt-out withdraws what is queued and not sent yet
-- h1..h300 have pending welcomes (email); give h1 and h2 an sms too, and mark one of h3's sent
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template)
VALUES ('t:h1:sms', NULL, 'h1', 'sms', '+49 30 1234567', 'hi'), ('t:h2:sms', NULL, 'h2', 'sms', '+49 30 1234568', 'hi');
UPDATE loyalty.outbox SET status = 'sent', sent_at = now() WHERE customer_id = 'h3' AND status = 'pending';
SELECT loyalty.set_consent('h1', 'email', false, 'unsubscribe link') > 0 AS h1_email_out,
       loyalty.set_consent('h2', 'all', false, 'account closed') > 0 AS h2_all_out,
       loyalty.set_consent('h3', 'all', false) > 0 AS h3_all_out;
SELECT customer_id, channel, status, last_error FROM loyalty.outbox
 WHERE customer_id IN ('h1', 'h2', 'h3') ORDER BY customer_id, channel, status;
-- cancelled messages are no longer claimable
SELECT count(*) FILTER (WHERE q.message_id IS NOT NULL) AS cancelled_still_queued
  FROM loyalty.outbox o LEFT JOIN loyalty.outbox_queue q USING (message_id) WHERE o.status = 'cancelled';
-- a renewed opt-in does not bring the cancelled occasion back (one row per occasion, ever)
SELECT loyalty.set_consent('h1', 'email', true, 'signed up again') > 0 AS h1_back;
SELECT decision, reason FROM loyalty.due_messages_at('2026-06-15 14:00') WHERE customer_id = 'h1';
SELECT name, pending, cancelled FROM loyalty.campaign_performance WHERE name = 'welcome';

-- ---- quiet hours within one day (12:00-14:00 local): the same-day branch
SELECT loyalty._after_quiet_hours('2026-06-10 11:59:59+00', 'UTC', '12:00', '14:00') AS before_start,
       loyalty._after_quiet_hours('2026-06-10 12:00+00', 'UTC', '12:00', '14:00') AS at_start,
       loyalty._after_quiet_hours('2026-06-10 13:59:59+00', 'UTC', '12:00', '14:00') AS just_before_end,
       loyalty._after_quiet_hours('2026-06-10 14:00+00', 'UTC', '12:00', '14:00') AS at_end,
       loyalty._after_quiet_hours('2026-06-10 23:30+00', 'UTC', '12:00', '14:00') AS late_evening,
       loyalty._after_quiet_hours('2026-06-10 10:30+00', 'Europe/Berlin', '12:00', '14:00') AS berlin_1230_local;
-- the same through the policy, on campaigns of their own; then the frequency
-- cap (1 per 7 days) counting a pending (leased) and a dead message written
-- by real runs, not rows inserted by hand (valid for 50 years: a sender
-- claims them on the real clock)
UPDATE loyalty.campaigns SET active = false;
DELETE FROM loyalty.outbox;
SELECT quiet_start, quiet_end, cap_messages, cap_window
  FROM loyalty.configure_journeys(quiet_start => '12:00', quiet_end => '14:00', cap_messages => 1, cap_window => '7 days');
INSERT INTO loyalty.campaigns (name, kind, channel, template, priority, active, active_from, params, cooldown, holdout_share, valid_for)
VALUES ('noon welcome', 'welcome', 'email', 'w', 10, true, '2026-07-01', '{"delay_hours": 1}', '0', 0, '50 years'),
       ('noon second order', 'milestone', 'email', 'm2', 20, true, '2026-07-01', '{"orders": 2}', '0', 0, '50 years');
SELECT count(loyalty.record_order(c, c || '-1', 30, '2026-07-01 10:00')) AS orders,
       count(loyalty.upsert_customer(c, NULL, c || '@example.com', NULL, NULL, 'UTC')) AS profiles,
       count(loyalty.set_consent(c, 'email', true)) AS consents
  FROM unnest(ARRAY['k1', 'k2', 'k3']) c;
SELECT customer_id, campaign, decision, due_at FROM pg_temp.due('2026-07-01 12:30') WHERE customer_id LIKE 'k%';
SELECT campaign, pending, delayed FROM loyalty.enqueue_due('2026-07-01 12:30') WHERE pending > 0;
SELECT customer_id, status, due_at FROM loyalty.outbox WHERE customer_id LIKE 'k%' ORDER BY 1;
-- a sender claims all three (due at 14:00 on 1 July): k1's stays leased (pending),
-- k2's fails for good (dead), k3's is delivered
SELECT max_attempts FROM loyalty.configure_outbox(max_attempts => 1);
CREATE TEMP TABLE k_claims AS SELECT * FROM loyalty.claim_messages(10, '1 hour');
SELECT customer_id, CASE customer_id WHEN 'k2' THEN loyalty.fail_message(message_id, claim_token, 'mailbox gone')
                                     WHEN 'k3' THEN loyalty.ack_message(message_id, claim_token)::text END AS result
  FROM k_claims ORDER BY 1;
SELECT customer_id, status FROM loyalty.outbox WHERE customer_id LIKE 'k%' ORDER BY 1;
-- second orders the next day: every milestone is capped (pending, dead and sent all count)
SELECT count(loyalty.record_order(c, c || '-2', 30, '2026-07-02 09:00')) AS orders FROM unnest(ARRAY['k1', 'k2', 'k3']) c;
SELECT customer_id, campaign, decision, reason FROM pg_temp.due('2026-07-02 10:00') WHERE customer_id LIKE 'k%';
-- a week after the first messages they no longer count
SELECT customer_id, campaign, decision FROM pg_temp.due('2026-07-08 15:00') WHERE customer_id LIKE 'k%';
SELECT max_attempts FROM loyalty.configure_outbox(max_attempts => 5);
UPDATE loyalty.campaigns SET active = false;
