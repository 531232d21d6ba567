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

-- ---------------------------------------------------------------- checks of issue 15's last review
-- Each is broken, seen by check_health() with exactly one alert (a second run
-- repeats nothing), then mended with exactly one recovery message.
CREATE FUNCTION pg_temp.cycle(c text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; a bigint; r bigint;
BEGIN
    SELECT h.status INTO st FROM loyalty.check_health() h WHERE h."check" = c;
    PERFORM count(*) FROM loyalty.check_health();
    SELECT count(*) FILTER (WHERE o.template = 'loyalty_health_alert'), count(*) FILTER (WHERE o.template = 'loyalty_health_recovered')
      INTO a, r FROM loyalty.outbox o WHERE o.dedupe_key LIKE 'health:%' AND o.payload->>'check' = c;
    RETURN format('%s, %s alert(s), %s recovery message(s)', st, a, r);
END $$;
CREATE FUNCTION pg_temp.detail(c text) RETURNS text LANGUAGE sql AS
$$ SELECT detail FROM loyalty.health WHERE "check" = c $$;
-- the ten customers of the models part get an email address and an opt-in:
-- every customer with orders can be reached (the contact check starts ok)
INSERT INTO loyalty.profiles (customer_id, email) SELECT customer_id, customer_id || '@example.com' FROM loyalty.customer_state;
SELECT count(loyalty.set_consent(customer_id, 'email', true, 'test')) FROM loyalty.customer_state;
SELECT count(*) FROM loyalty.check_health();
DELETE FROM loyalty.outbox WHERE dedupe_key LIKE 'health:%';
SELECT "check", status FROM loyalty.health WHERE status <> 'ok' AND "check" NOT LIKE 'job%' ORDER BY 1;

-- model_validation: the holdout error against the median of its earlier comparisons
INSERT INTO loyalty.model_choice (model, models, holdout_days, chosen_at, comparison, reason)
VALUES ('heuristic', '{heuristic}', 90, now() - interval '1 hour', '{"heuristic": {"customers": 100, "mae": 0.95}}', 'test')
ON CONFLICT (singleton) DO UPDATE SET model = EXCLUDED.model, models = EXCLUDED.models, holdout_days = EXCLUDED.holdout_days,
                                      chosen_at = EXCLUDED.chosen_at, comparison = EXCLUDED.comparison;
SELECT pg_temp.st('model_validation') AS no_history_yet, pg_temp.detail('model_validation');
INSERT INTO loyalty.validation_history (model, holdout_days, customers, mae, compared_at)
SELECT 'heuristic', 90, 100, 0.30 + i / 100.0, now() - make_interval(days => i) FROM generate_series(1, 6) i;
SELECT pg_temp.cycle('model_validation') AS error_far_above_median, pg_temp.detail('model_validation');
-- the next comparison is back to usual (the 0.95 is history now, recorded by check_health)
UPDATE loyalty.model_choice SET chosen_at = now(), comparison = '{"heuristic": {"customers": 100, "mae": 0.33}}';
SELECT pg_temp.cycle('model_validation') AS error_usual_again, pg_temp.detail('model_validation');
SELECT count(*) AS comparisons_recorded, max(mae) FROM loyalty.validation_history;
DELETE FROM loyalty.model_choice;

-- models follows the model that decides (loyalty.current_model), not BG/NBD
-- alone: BG/NBD's fit stays fresh here while the chosen Pareto/NBD's breaks
SELECT pg_temp.st('models') AS bgnbd_decides, pg_temp.detail('models') LIKE 'bgnbd decides, BG/NBD fitted % ago (warning after 7.0 days); no holdout comparison yet%' AS says_which;
UPDATE loyalty.model_settings SET models = '{bgnbd,heuristic,pareto_nbd}';
INSERT INTO loyalty.model_choice (model, models, holdout_days, chosen_at, comparison, reason)
VALUES ('pareto_nbd', '{bgnbd,heuristic,pareto_nbd}', 90, now(), '{}', 'test: the lowest holdout error');
-- its only fit did not converge: the heuristic decides in its place
INSERT INTO loyalty.model_fits (model, status, as_of, customers, note) VALUES ('pareto_nbd', 'not_converged', now(), 11, 'test');
SELECT (SELECT model FROM loyalty.current_model) AS deciding, pg_temp.cycle('models') AS chosen_not_converged,
       pg_temp.detail('models') LIKE 'the last Pareto/NBD fit (%) did not converge: test; scores use the heuristic' AS says_fallback;
-- fitted: one recovery message
INSERT INTO loyalty.model_fits (model, status, as_of, customers, params) VALUES ('pareto_nbd', 'fitted', now(), 11, '{"r": 1, "alpha": 2, "s": 3, "beta": 4}');
SELECT (SELECT model FROM loyalty.current_model) AS deciding, pg_temp.cycle('models') AS chosen_fitted,
       pg_temp.detail('models') LIKE 'pareto_nbd decides, Pareto/NBD fitted % ago (warning after 7.0 days); test: the lowest holdout error' AS says_which;
-- its next fit fails: scores keep the earlier fit, and the check says so
INSERT INTO loyalty.model_fits (model, status, as_of, customers, note) VALUES ('pareto_nbd', 'not_converged', now(), 11, 'again');
SELECT pg_temp.st('models') AS not_converged_again,
       pg_temp.detail('models') LIKE 'the last Pareto/NBD fit (%) did not converge: again; scores use pareto_nbd from the earlier fit %' AS says_earlier_fit;
-- the chosen model's fit is old while BG/NBD's is fresh
DELETE FROM loyalty.model_fits WHERE model = 'pareto_nbd' AND status = 'not_converged';
UPDATE loyalty.model_fits SET fitted_at = now() - interval '8 days' WHERE model = 'pareto_nbd';
SELECT pg_temp.st('models') AS chosen_fit_8_days_old,
       pg_temp.detail('models') LIKE 'pareto_nbd decides; the last Pareto/NBD fit is 8.0 days old (warning after 7.0 days)' AS says_age;
DELETE FROM loyalty.model_fits WHERE model = 'pareto_nbd';
DELETE FROM loyalty.model_choice;
UPDATE loyalty.model_settings SET models = '{bgnbd,heuristic}';
SELECT count(*) > 0 AS checked FROM loyalty.check_health();
SELECT pg_temp.st('models') AS bgnbd_decides_again;
DELETE FROM loyalty.outbox WHERE dedupe_key LIKE 'health:%';

-- unreachable_customers: 6 of the 11 customers unsubscribe from everything (54.5%, warning from 50%)
SELECT count(loyalty.set_consent('m' || i, 'all', false, 'test')) FROM generate_series(1, 6) i;
SELECT pg_temp.cycle('unreachable_customers') AS six_of_eleven, pg_temp.detail('unreachable_customers');
-- 2 of them come back, and one of the rest has no usable email address any more: 5 of 11 (45.5%)
SELECT count(loyalty.set_consent('m' || i, 'all', true, 'test')) FROM generate_series(1, 2) i;
UPDATE loyalty.profiles SET email = 'not an address' WHERE customer_id = 'm7';
SELECT pg_temp.cycle('unreachable_customers') AS five_of_eleven, pg_temp.detail('unreachable_customers');

-- implausible_orders: an order dated three days ahead; an order 1000 times the median
UPDATE loyalty.orders SET ordered_at = now() + interval '3 days' WHERE order_ref = 'mo1';
SELECT pg_temp.cycle('implausible_orders') AS future_dated, pg_temp.detail('implausible_orders');
UPDATE loyalty.orders SET ordered_at = now() WHERE order_ref = 'mo1';
SELECT pg_temp.cycle('implausible_orders') AS dated_now;
SELECT loyalty.record_order('m2', 'typo', 10000) IS NOT NULL AS recorded;
SELECT pg_temp.st('implausible_orders') AS huge_amount, pg_temp.detail('implausible_orders');
-- a second problem: a second alert
SELECT pg_temp.cycle('implausible_orders') AS huge_amount_alerts;
SELECT loyalty.record_refund('typo', 10000, 'typo-refund') IS NOT NULL AS refunded;
-- refunded in full, it counts no more: a second recovery
SELECT pg_temp.cycle('implausible_orders') AS refunded_in_full;

-- issues_overdue: an open issue whose SLA was breached 3 days ago (warning after 2 days)
INSERT INTO loyalty.order_issues (order_ref, customer_id, kind, opened_at) VALUES ('mo3', 'm3', 'late_dispatch', now() - interval '3 days');
SELECT pg_temp.cycle('issues_overdue') AS overdue_3_days, pg_temp.detail('issues_overdue');
UPDATE loyalty.order_issues SET resolved_at = now();
SELECT pg_temp.cycle('issues_overdue') AS resolved;

-- on_time_rate: dispatch on time 100% of 30 deadlines in the 4 weeks before, 50% of 30 in the last 7 days
INSERT INTO loyalty.order_deadlines (order_ref, kind, due_at, done_at)
SELECT 'd' || i, 'late_dispatch', now() - make_interval(days => 10 + i % 20), now() - make_interval(days => 11 + i % 20) FROM generate_series(1, 30) i
UNION ALL
SELECT 'e' || i, 'late_dispatch', now() - make_interval(hours => 1 + i), CASE WHEN i % 2 = 0 THEN now() - make_interval(hours => 2 + i) END FROM generate_series(1, 30) i;
SELECT pg_temp.cycle('on_time_rate') AS dispatch_on_time_falling, pg_temp.detail('on_time_rate');
UPDATE loyalty.order_deadlines SET done_at = due_at - interval '1 hour' WHERE order_ref LIKE 'e%' AND order_ref NOT IN ('e1', 'e3');
SELECT pg_temp.cycle('on_time_rate') AS on_time_again, pg_temp.detail('on_time_rate');
-- a cancelled order's missed deadline is not a late dispatch (still 30 deadlines, as sla_summary counts)
INSERT INTO loyalty.orders (order_ref, customer_id, amount, ordered_at, status, counted)
VALUES ('x1', 'hx', 10, now() - interval '2 days', 'cancelled', false);
INSERT INTO loyalty.order_deadlines (order_ref, kind, due_at, done_at) VALUES ('x1', 'late_dispatch', now() - interval '1 day', NULL);
SELECT pg_temp.detail('on_time_rate') AS cancelled_not_counted;
DELETE FROM loyalty.orders WHERE order_ref = 'x1';
DELETE FROM loyalty.order_deadlines;

-- jobs_edited: a job's schedule and another's command changed by hand; schedule() mends
SELECT pg_temp.st('jobs_edited') AS as_installed;
SELECT cron.alter_job(jobid, schedule => '*/2 * * * *') FROM cron.job WHERE jobname = 'loyalty-health';
SELECT cron.alter_job(jobid, command => 'SELECT 1') FROM cron.job WHERE jobname = 'loyalty-purge';
SELECT pg_temp.cycle('jobs_edited') AS edited, pg_temp.detail('jobs_edited');
-- a schedule chosen with schedule() is no edit
SELECT count(*) FROM loyalty.schedule(health => '*/2 * * * *');
SELECT pg_temp.cycle('jobs_edited') AS rescheduled;
SELECT job_name, schedule FROM loyalty.scheduled_jobs WHERE job_name = 'loyalty-health';

-- extension_version (a stub: the catalog says 0.1 while the library is 0.2;
-- test/t/017_health_elsewhere.pl runs the real ALTER EXTENSION UPDATE)
UPDATE pg_catalog.pg_extension SET extversion = '0.1' WHERE extname = 'loyalty';
SELECT pg_temp.cycle('extension_version') AS update_pending, pg_temp.detail('extension_version');
UPDATE pg_catalog.pg_extension SET extversion = '0.2' WHERE extname = 'loyalty';
SELECT pg_temp.cycle('extension_version') AS updated;

-- thresholds are settings
SELECT (c).validation_factor, (c).unreachable_warning, (c).amount_factor, (c).issue_overdue, (c).on_time_drop
  FROM (SELECT loyalty.configure_health(validation_factor => 3, unreachable_warning => 0.8, amount_factor => 20,
                                        issue_overdue => '1 day', on_time_drop => 0.2) c) x;
SELECT loyalty.configure_health(overdue_warning => 30);

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
