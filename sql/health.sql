-- Watchdog: every check is broken on purpose and seen in loyalty.health;
-- check_health() records changes, alerts once after alert_after, reminds
-- after remind_every, sends one recovery; the heartbeat; purge_history().
-- (The worker is off in this instance: "no worker" is part of the picture.)
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
SELECT count(*) FROM cron.job;
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.st(c text) RETURNS text LANGUAGE sql AS
$$ SELECT status FROM loyalty.health WHERE "check" = c $$;
CREATE FUNCTION pg_temp.alerts() RETURNS TABLE (template text, recipient text, channel text, chk text, status text, reminder boolean)
LANGUAGE sql AS $$
    SELECT template, recipient, channel, payload->>'check', payload->>'status', (payload->>'reminder')::boolean
      FROM loyalty.outbox WHERE dedupe_key LIKE 'health:%' AND template <> 'loyalty_heartbeat' ORDER BY message_id $$;

-- every check has a row, with a detail; hints only where something is wrong
SELECT "check", status, detail IS NOT NULL AS has_detail, (hint IS NOT NULL) = (status <> 'ok') AS hint_iff_problem
  FROM loyalty.health ORDER BY "check";

-- ---------------------------------------------------------------- apply_backlog
-- no worker, no job: warning with an empty queue, critical with a change waiting
SELECT pg_temp.st('apply_backlog') AS no_worker_no_job;
CREATE TABLE public.health_orders (id bigint PRIMARY KEY, customer_id bigint, total numeric, created_at timestamptz DEFAULT now());
SELECT loyalty.track_orders('public.health_orders', 'customer_id', 'total', 'created_at', 'id') IS NOT NULL AS tracked;
INSERT INTO public.health_orders VALUES (1, 1, 10, now() - interval '3 days');
SELECT pg_temp.st('apply_backlog') AS no_worker_change_waiting;
SELECT count(*) AS jobs FROM loyalty.schedule();
SELECT pg_temp.st('apply_backlog') AS job_installed_fresh_change;
UPDATE loyalty.events SET captured_at = now() - interval '20 minutes';
SELECT pg_temp.st('apply_backlog') AS waited_20_min;
UPDATE loyalty.events SET captured_at = now() - interval '2 hours';
SELECT pg_temp.st('apply_backlog') AS waited_2_hours,
       (SELECT detail FROM loyalty.health WHERE "check" = 'apply_backlog') LIKE '%waited 2.0 h (warning after 15 min, critical after 60 min)' AS detail_in_words;
SELECT events_applied FROM loyalty.refresh(fit_models => false);
SELECT pg_temp.st('apply_backlog') AS applied;

-- ---------------------------------------------------------------- jobs
SELECT pg_temp.st('job loyalty-enqueue') AS scheduled_no_run_yet;
-- late: the last start is older than the schedule (every minute) plus the grace (10 min)
INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, return_message, start_time, end_time)
SELECT jobid, (SELECT coalesce(max(runid), 0) + 1 FROM cron.job_run_details), 0, current_database(), current_user, command, 'succeeded', '1 row', now() - interval '20 minutes', now() - interval '20 minutes'
  FROM cron.job WHERE jobname = 'loyalty-enqueue';
SELECT pg_temp.st('job loyalty-enqueue') AS late;
-- with an active campaign, a late enqueue job is critical
UPDATE loyalty.campaigns SET active = true WHERE campaign_id = (SELECT min(campaign_id) FROM loyalty.campaigns);
SELECT pg_temp.st('job loyalty-enqueue') AS late_with_active_campaign;
-- a recent success that did no work (no campaign run recorded since)
INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, return_message, start_time, end_time)
SELECT jobid, (SELECT coalesce(max(runid), 0) + 1 FROM cron.job_run_details), 0, current_database(), current_user, command, 'succeeded', '1 row', now() - interval '1 minute', now() - interval '1 minute'
  FROM cron.job WHERE jobname = 'loyalty-enqueue';
SELECT pg_temp.st('job loyalty-enqueue') AS success_without_work,
       (SELECT detail FROM loyalty.health WHERE "check" = 'job loyalty-enqueue') LIKE '%reports success, but the last campaign run recorded is none' AS says_so;
SELECT count(*) > 0 AS ran FROM loyalty.enqueue_due();
SELECT pg_temp.st('job loyalty-enqueue') AS did_its_work;
-- failing
INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, return_message, start_time, end_time)
SELECT jobid, (SELECT coalesce(max(runid), 0) + 1 FROM cron.job_run_details), 0, current_database(), current_user, command, 'failed', 'ERROR:  boom', now(), now()
  FROM cron.job WHERE jobname = 'loyalty-expire';
SELECT pg_temp.st('job loyalty-expire') AS failing,
       (SELECT detail FROM loyalty.health WHERE "check" = 'job loyalty-expire') LIKE '%failed at%ERROR:  boom' AS detail_has_error;
-- running too long (a daily job running for two days)
INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, return_message, start_time, end_time)
SELECT jobid, (SELECT coalesce(max(runid), 0) + 1 FROM cron.job_run_details), 0, current_database(), current_user, command, 'running', NULL, now() - interval '2 days', NULL
  FROM cron.job WHERE jobname = 'loyalty-tiers';
SELECT pg_temp.st('job loyalty-tiers') AS running_too_long;
-- disabled, then missing
SELECT cron.alter_job(jobid, active => false) FROM cron.job WHERE jobname = 'loyalty-notify';
SELECT pg_temp.st('job loyalty-notify') AS disabled;
SELECT cron.unschedule('loyalty-notify');
SELECT pg_temp.st('job loyalty-notify') AS missing;
SELECT count(*) FROM loyalty.schedule();
SELECT pg_temp.st('job loyalty-notify') AS rescheduled;
-- the refresh job is the fallback of the worker: without both, apply_backlog says so
SELECT cron.unschedule('loyalty-refresh');
SELECT pg_temp.st('job loyalty-refresh') AS refresh_missing, pg_temp.st('apply_backlog') AS nobody_applies;
SELECT count(*) FROM loyalty.schedule();
SELECT loyalty._cron_period(p) FROM unnest(ARRAY['* * * * *', '*/5 * * * *', '5 * * * *', '15 3 * * *', '0 9 * * 1', '30 seconds', '@daily', 'weird']) p;

-- ---------------------------------------------------------------- outbox
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, due_at)
VALUES ('t:1', 1, 'c1', 'email', 'c1@example.com', 'x', now() - interval '40 minutes');
SELECT pg_temp.st('outbox_waiting') AS due_40_min;
UPDATE loyalty.outbox SET due_at = now() - interval '3 hours' WHERE dedupe_key = 't:1';
SELECT pg_temp.st('outbox_waiting') AS due_3_hours, pg_temp.st('outbox_acks') AS acks_3_hours;
UPDATE loyalty.outbox SET due_at = now() - interval '2 days' WHERE dedupe_key = 't:1';
SELECT pg_temp.st('outbox_acks') AS no_ack_for_2_days;
-- a sender claims it and dies: the lease ends without an ack
SELECT count(*) AS claimed FROM loyalty.claim_messages(10, '1 minute');
SELECT pg_temp.st('outbox_waiting') AS claimed_not_waiting, pg_temp.st('outbox_leases') AS lease_running;
UPDATE loyalty.outbox_queue SET visible_at = now() - interval '1 minute';
SELECT pg_temp.st('outbox_leases') AS lease_ended;
SELECT count(*) AS acked FROM loyalty.claim_messages(10, '1 minute') c, LATERAL loyalty.ack_message(c.message_id, c.claim_token) a;
SELECT pg_temp.st('outbox_waiting') AS drained, pg_temp.st('outbox_leases') AS leases, pg_temp.st('outbox_acks') AS acks;
-- dead letters: 1 of 10 finished in the last day is 10% (warning from 5%), 3 of 12 is 25% (critical)
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, status, sent_at)
SELECT 't:s' || i, 1, 'c' || i, 'email', 'x', 'x', 'sent', now() FROM generate_series(2, 9) i;
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, status)
VALUES ('t:d1', 1, 'c10', 'email', 'x', 'x', 'dead');
SELECT pg_temp.st('outbox_dead_letters') AS dead_10_pct;
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, status)
VALUES ('t:d2', 1, 'c11', 'email', 'x', 'x', 'dead'), ('t:d3', 1, 'c12', 'email', 'x', 'x', 'dead');
SELECT pg_temp.st('outbox_dead_letters') AS dead_25_pct;
DELETE FROM loyalty.outbox WHERE dedupe_key LIKE 't:%';

-- ---------------------------------------------------------------- campaigns gone silent
SELECT pg_temp.st('campaigns_silent') AS active_campaign_just_started;
UPDATE loyalty.campaigns SET activated_at = now() - interval '30 days' WHERE active;
SELECT pg_temp.st('campaigns_silent') AS silent_for_30_days;
-- a campaign that decided every day, last 10 days ago: 3 x its 1-day rhythm, and 7 days at least
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, status, created_at)
SELECT 't:r' || i, (SELECT campaign_id FROM loyalty.campaigns WHERE active), 'c' || i, 'email', 'x', 'x', 'sent', now() - make_interval(days => 10 + i)
  FROM generate_series(0, 20) i;
SELECT pg_temp.st('campaigns_silent') AS silent_10_days_after_daily;
UPDATE loyalty.outbox SET created_at = created_at + interval '7 days' WHERE dedupe_key LIKE 't:r%';
SELECT pg_temp.st('campaigns_silent') AS last_decision_3_days_ago;
DELETE FROM loyalty.outbox WHERE dedupe_key LIKE 't:%';
UPDATE loyalty.campaigns SET active = false;

-- ---------------------------------------------------------------- models
SELECT pg_temp.st('models') AS few_customers_heuristic;
SELECT count(loyalty.record_order('m' || i, 'mo' || i, 10)) FROM generate_series(1, 10) i;
SELECT count(*) FROM loyalty.refresh(fit_models => false);
UPDATE loyalty.model_settings SET min_customers = 10;
SELECT pg_temp.st('models') AS enough_customers_no_fit;
INSERT INTO loyalty.model_fits (model, status, as_of, customers, note) VALUES ('bgnbd', 'not_converged', now(), 11, 'test');
SELECT pg_temp.st('models') AS not_converged;
INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, fitted_at) VALUES ('bgnbd', 'fitted', now(), 11, '{}', now() - interval '10 days');
SELECT pg_temp.st('models') AS fit_10_days_old;
UPDATE loyalty.model_fits SET fitted_at = now() WHERE status = 'fitted';
SELECT pg_temp.st('models') AS fit_fresh;

-- ---------------------------------------------------------------- data quality, growth
INSERT INTO loyalty.rejected_rows (source_id, order_ref, reason) VALUES (1, 'bad', 'no customer');
SELECT pg_temp.st('rejected_rows') AS one_rejected;
UPDATE loyalty.rejected_rows SET rejected_at = now() - interval '2 days';
SELECT pg_temp.st('rejected_rows') AS rejected_before_yesterday;
SELECT (loyalty.configure_health(growth_warning => 1000)).growth_warning;
INSERT INTO loyalty.journey_changes SELECT 'g' || i FROM generate_series(1, 1000) i;
SELECT pg_temp.st('table_growth') AS journey_changes_1000;
DELETE FROM loyalty.journey_changes;
SELECT pg_temp.st('table_growth') AS emptied;
SELECT pg_temp.st('extension_version') AS version;

-- ---------------------------------------------------------------- history and alerts
SELECT count(*) > 0 AS first_run_recorded FROM loyalty.check_health();
SELECT count(*) = (SELECT count(*) FROM loyalty.health) AS one_history_row_per_check FROM loyalty.health_history;
SELECT count(*) AS no_recipient_no_alerts FROM pg_temp.alerts();
SELECT (c).ops_recipient, (c).ops_channel, (c).alert_after, (c).remind_every
  FROM (SELECT loyalty.configure_health(ops_recipient => 'ops@shop.example', alert_after => '5 minutes') c) x;
-- break one thing: it does not alert before alert_after
INSERT INTO loyalty.rejected_rows (source_id, order_ref, reason) VALUES (1, 'bad2', 'no customer');
SELECT status FROM loyalty.check_health() WHERE "check" = 'rejected_rows';
SELECT "check", status, previous_status FROM loyalty.health_history ORDER BY history_id DESC LIMIT 1;
SELECT * FROM pg_temp.alerts();
-- the problem has held for 6 minutes: exactly one alert
UPDATE loyalty.health_state SET problem_since = now() - interval '6 minutes' WHERE "check" = 'rejected_rows';
SELECT count(*) FROM loyalty.check_health();
SELECT count(*) FROM loyalty.check_health();
SELECT * FROM pg_temp.alerts();
SELECT payload->>'detail' LIKE '1 shop rows rejected in the last day (warning from 1, critical from 1000)'  AS payload_has_detail, payload->>'hint' IS NOT NULL AS payload_has_hint,
       customer_id, campaign_id IS NULL AS no_campaign, status, due_at <= now() AS due_now
  FROM loyalty.outbox WHERE template = 'loyalty_health_alert';
-- still broken a day later: one reminder
UPDATE loyalty.health_state SET alerted_at = now() - interval '25 hours' WHERE "check" = 'rejected_rows';
SELECT count(*) FROM loyalty.check_health();
SELECT count(*) FROM loyalty.check_health();
SELECT * FROM pg_temp.alerts();
-- mended: one recovery message
UPDATE loyalty.rejected_rows SET resolved_at = now();
SELECT count(*) FROM loyalty.check_health();
SELECT count(*) FROM loyalty.check_health();
SELECT * FROM pg_temp.alerts();
SELECT "check", status, previous_status FROM loyalty.health_history WHERE "check" = 'rejected_rows' ORDER BY history_id;
-- a problem that already held: alert_after '0' alerts at the first run that sees it
SELECT (loyalty.configure_health(alert_after => '0')).alert_after;
UPDATE loyalty.model_fits SET fitted_at = now() - interval '8 days';
SELECT count(*) FROM loyalty.check_health();
SELECT * FROM pg_temp.alerts() WHERE chk = 'models';
UPDATE loyalty.model_fits SET fitted_at = now();
-- a check that no longer applies is forgotten, its open alert closed
INSERT INTO loyalty.health_state VALUES ('old check', 'critical', 'x', NULL, now(), now(), 'critical', now(), now() - interval '1 hour');
SELECT count(*) FROM loyalty.check_health();
SELECT count(*) AS forgotten FROM loyalty.health_state WHERE "check" = 'old check';
SELECT * FROM pg_temp.alerts() WHERE chk = 'old check';
-- the heartbeat: one per heartbeat_every
SELECT (loyalty.configure_health(heartbeat_recipient => 'https://hc-ping.example/abc')).heartbeat_channel;
SELECT count(*) FROM loyalty.check_health();
SELECT count(*) FROM loyalty.check_health();
SELECT recipient, channel, payload ? 'worst' AS has_worst FROM loyalty.outbox WHERE template = 'loyalty_heartbeat';
-- bad settings are refused and change nothing
SELECT loyalty.configure_health(backlog_warning => '2 hours');
SELECT loyalty.configure_health(retain_sent => '1 day');
SELECT backlog_warning, retain_sent FROM loyalty.health_settings;

-- ---------------------------------------------------------------- purge
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, status, sent_at, created_at, due_at)
VALUES ('p:old_sent', 1, 'c1', 'email', 'x', 'x', 'sent', now() - interval '500 days', now() - interval '500 days', now() - interval '500 days'),
       ('p:old_pending', 1, 'c1', 'email', 'x', 'x', 'pending', NULL, now() - interval '500 days', now() + interval '1 day'),
       ('p:new_sent', 1, 'c1', 'email', 'x', 'x', 'sent', now(), now(), now());
INSERT INTO loyalty.health_history ("check", status, changed_at) VALUES ('x', 'ok', now() - interval '100 days');
INSERT INTO loyalty.rejected_rows (source_id, order_ref, reason, rejected_at, resolved_at)
VALUES (1, 'old', 'x', now() - interval '200 days', now() - interval '100 days');
SELECT cron.schedule('not-loyalty', '* * * * *', 'SELECT 1') > 0 AS scheduled;
INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, start_time, end_time)
SELECT jobid, (SELECT coalesce(max(runid), 0) FROM cron.job_run_details) + row_number() OVER (), 0, current_database(), current_user, command, 'succeeded', now() - interval '30 days', now() - interval '30 days'
  FROM cron.job;
SELECT * FROM loyalty.purge_history();
SELECT dedupe_key FROM loyalty.outbox WHERE dedupe_key LIKE 'p:%' ORDER BY 1;
SELECT count(*) AS old_runs_kept_of_other_jobs FROM cron.job_run_details d JOIN cron.job j USING (jobid) WHERE j.jobname = 'not-loyalty';
SELECT * FROM loyalty.purge_history();
SELECT cron.unschedule('not-loyalty');
SELECT count(*) FROM loyalty.unschedule();
DROP TABLE public.health_orders;
