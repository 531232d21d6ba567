-- Watchdog: is the system itself alive? One row per check in the view
-- loyalty.health (evaluated when read); loyalty.check_health() evaluates the
-- same checks, records status changes in loyalty.health_history, NOTIFYs
-- loyalty_health, and writes alerts for the shop's operator into the outbox.
-- Retention of loyalty's own history: loyalty.purge_history().
-- docs/watchdog.md describes every check, threshold and who runs what.
-- Every function here pins search_path = pg_catalog, pg_temp, so plain
-- operators resolve to pg_catalog's whatever the caller's path.

CREATE TABLE loyalty.health_settings (
    id                   boolean PRIMARY KEY DEFAULT true CHECK (id),
    ops_recipient        text,
    ops_channel          text NOT NULL DEFAULT 'email' CHECK (btrim(ops_channel) <> ''),
    alert_after          interval NOT NULL DEFAULT '5 minutes' CHECK (alert_after >= '0'),
    remind_every         interval NOT NULL DEFAULT '1 day' CHECK (remind_every > '0'),
    heartbeat_recipient  text,
    heartbeat_channel    text NOT NULL DEFAULT 'webhook' CHECK (btrim(heartbeat_channel) <> ''),
    heartbeat_every      interval NOT NULL DEFAULT '5 minutes' CHECK (heartbeat_every >= '1 minute'),
    backlog_warning      interval NOT NULL DEFAULT '15 minutes' CHECK (backlog_warning > '0'),
    backlog_critical     interval NOT NULL DEFAULT '1 hour' CHECK (backlog_critical >= backlog_warning),
    job_grace            interval NOT NULL DEFAULT '10 minutes' CHECK (job_grace >= '0'),
    outbox_wait_warning  interval NOT NULL DEFAULT '30 minutes' CHECK (outbox_wait_warning > '0'),
    outbox_wait_critical interval NOT NULL DEFAULT '2 hours' CHECK (outbox_wait_critical >= outbox_wait_warning),
    dead_rate_warning    numeric NOT NULL DEFAULT 0.05 CHECK (dead_rate_warning > 0 AND dead_rate_warning <= 1),
    dead_rate_critical   numeric NOT NULL DEFAULT 0.25 CHECK (dead_rate_critical >= dead_rate_warning AND dead_rate_critical <= 1),
    silent_factor        numeric NOT NULL DEFAULT 3 CHECK (silent_factor >= 1),
    silent_min           interval NOT NULL DEFAULT '7 days' CHECK (silent_min > '0'),
    fit_max_age          interval NOT NULL DEFAULT '7 days' CHECK (fit_max_age > '0'),
    rejected_warning     integer NOT NULL DEFAULT 1 CHECK (rejected_warning >= 1),
    rejected_critical    integer NOT NULL DEFAULT 1000 CHECK (rejected_critical >= rejected_warning),
    growth_warning       bigint NOT NULL DEFAULT 1000000 CHECK (growth_warning >= 1000),
    retain_sent          interval NOT NULL DEFAULT '400 days' CHECK (retain_sent >= '90 days'),
    retain_history       interval NOT NULL DEFAULT '90 days' CHECK (retain_history >= '1 day'),
    retain_rejected      interval NOT NULL DEFAULT '90 days' CHECK (retain_rejected >= '1 day'),
    retain_cron_runs     interval NOT NULL DEFAULT '7 days' CHECK (retain_cron_runs >= '1 hour'),
    owner_recipient      text,
    owner_channel        text NOT NULL DEFAULT 'email' CHECK (btrim(owner_channel) <> ''),
    digest_hour          integer NOT NULL DEFAULT 8 CHECK (digest_hour BETWEEN 0 AND 23),
    validation_factor    numeric NOT NULL DEFAULT 2 CHECK (validation_factor > 1),
    validation_min_history integer NOT NULL DEFAULT 5 CHECK (validation_min_history >= 2),
    unreachable_warning  numeric NOT NULL DEFAULT 0.5 CHECK (unreachable_warning > 0 AND unreachable_warning <= 1),
    future_order_tolerance interval NOT NULL DEFAULT '1 day' CHECK (future_order_tolerance >= '0'),
    amount_factor        numeric NOT NULL DEFAULT 50 CHECK (amount_factor > 1),
    issue_overdue        interval NOT NULL DEFAULT '2 days' CHECK (issue_overdue >= '0'),
    overdue_warning      integer NOT NULL DEFAULT 1 CHECK (overdue_warning >= 1),
    overdue_critical     integer NOT NULL DEFAULT 25 CHECK (overdue_critical >= overdue_warning),
    on_time_drop         numeric NOT NULL DEFAULT 0.10 CHECK (on_time_drop > 0 AND on_time_drop <= 1),
    on_time_min          integer NOT NULL DEFAULT 20 CHECK (on_time_min >= 1),
    heartbeat_sent_at    timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now()
);
INSERT INTO loyalty.health_settings DEFAULT VALUES;
COMMENT ON TABLE loyalty.health_settings IS 'Watchdog settings (one row): where alerts go, when a problem alerts, the checks'' thresholds, retention; change with loyalty.configure_health()';
COMMENT ON COLUMN loyalty.health_settings.ops_recipient IS 'who gets alerts (the outbox row''s recipient); NULL: no alerts are written';
COMMENT ON COLUMN loyalty.health_settings.alert_after IS 'a check must stay warning or critical this long before it alerts (''0'': at once)';
COMMENT ON COLUMN loyalty.health_settings.remind_every IS 'while a check stays in trouble, one reminder per this interval';
COMMENT ON COLUMN loyalty.health_settings.heartbeat_recipient IS 'a dead man''s switch ping URL; NULL: no heartbeat';
COMMENT ON COLUMN loyalty.health_settings.validation_factor IS 'model_validation warns when the chosen model''s holdout error exceeds this many times its median over the last 30 comparisons';
COMMENT ON COLUMN loyalty.health_settings.unreachable_warning IS 'unreachable_customers warns from this share of customers with orders that marketing cannot reach';
COMMENT ON COLUMN loyalty.health_settings.amount_factor IS 'implausible_orders: an order of the last 7 days above this many times the median order amount';
COMMENT ON COLUMN loyalty.health_settings.issue_overdue IS 'issues_overdue counts open issues whose SLA was breached longer ago than this';
COMMENT ON COLUMN loyalty.health_settings.on_time_drop IS 'on_time_rate warns when the last 7 days'' on-time rate is this much (a share: 0.10 = 10 points) below the 4 weeks before';
COMMENT ON COLUMN loyalty.health_settings.owner_recipient IS 'who gets the weekly digest (Monday from digest_hour, journey_settings.default_time_zone); NULL: no digest';

-- The last evaluated status of each check and its alerting state.
CREATE TABLE loyalty.health_state (
    "check"        text PRIMARY KEY,
    status         text NOT NULL CHECK (status IN ('ok', 'warning', 'critical')),
    detail         text,
    hint           text,
    since          timestamptz NOT NULL,
    problem_since  timestamptz,
    alerted_status text,
    alerted_at     timestamptz,
    evaluated_at   timestamptz NOT NULL
);
COMMENT ON TABLE loyalty.health_state IS 'Internal: per check, the status loyalty.check_health() last saw, since when, and what was alerted';

CREATE TABLE loyalty.health_history (
    history_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "check"         text NOT NULL,
    status          text NOT NULL,
    previous_status text,
    detail          text,
    changed_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX health_history_changed_idx ON loyalty.health_history (changed_at);
COMMENT ON TABLE loyalty.health_history IS 'Every status change of a health check seen by loyalty.check_health()';

-- The holdout errors of the models' comparisons (loyalty.model_choice), one
-- row per comparison and model, appended by check_health(): the check
-- model_validation compares the newest with the median of the earlier ones.
CREATE TABLE loyalty.validation_history (
    history_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model        text NOT NULL,
    holdout_days integer NOT NULL,
    customers    bigint,
    mae          numeric NOT NULL,
    compared_at  timestamptz NOT NULL,
    UNIQUE (model, compared_at)
);
COMMENT ON TABLE loyalty.validation_history IS 'Holdout error (mean absolute error per customer) of each model at each comparison of loyalty.model_choice, as seen by loyalty.check_health()';

-- A cron schedule's period: how often a job whose schedule it is should start.
-- Covers pg_cron's forms ('N seconds', @hourly..., five fields with *, */N,
-- numbers and lists); anything else counts as monthly (late is then judged loosely).
CREATE FUNCTION loyalty._cron_period(schedule text)
RETURNS interval
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f text[];
    m text[];
BEGIN
    schedule := pg_catalog.lower(pg_catalog.btrim(schedule));
    m := pg_catalog.regexp_match(schedule, '^(\d+) seconds?$');
    IF m IS NOT NULL THEN
        RETURN pg_catalog.make_interval(secs => m[1]::integer);
    END IF;
    CASE schedule
        WHEN '@hourly' THEN RETURN '1 hour';
        WHEN '@daily' THEN RETURN '1 day';
        WHEN '@weekly' THEN RETURN '7 days';
        ELSE NULL;
    END CASE;
    f := pg_catalog.regexp_split_to_array(schedule, '\s+');
    IF pg_catalog.array_length(f, 1) IS DISTINCT FROM 5 THEN
        RETURN '31 days';
    END IF;
    IF f[1] = '*' THEN
        RETURN '1 minute';
    END IF;
    m := pg_catalog.regexp_match(f[1], '^\*/(\d+)$');
    IF m IS NOT NULL THEN
        RETURN pg_catalog.make_interval(mins => m[1]::integer);
    END IF;
    IF f[2] = '*' THEN
        RETURN '1 hour';
    END IF;
    m := pg_catalog.regexp_match(f[2], '^\*/(\d+)$');
    IF m IS NOT NULL THEN
        RETURN pg_catalog.make_interval(hours => m[1]::integer);
    END IF;
    IF f[3] = '*' AND f[4] = '*' AND f[5] = '*' THEN
        RETURN '1 day';
    END IF;
    IF f[3] = '*' THEN
        RETURN '7 days';
    END IF;
    RETURN '31 days';
END
$$;

-- a duration in words: 3.2 h, 12 min, 45 s (NULL for NULL)
CREATE FUNCTION loyalty._health_age(d interval)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN d < '1 minute' THEN pg_catalog.round(pg_catalog.date_part('epoch', d)::numeric) || ' s'
                WHEN d < '2 hours' THEN pg_catalog.round(pg_catalog.date_part('epoch', d)::numeric / 60) || ' min'
                WHEN d < '3 days' THEN pg_catalog.round(pg_catalog.date_part('epoch', d)::numeric / 3600, 1) || ' h'
                ELSE pg_catalog.round(pg_catalog.date_part('epoch', d)::numeric / 86400, 1) || ' days' END
$$;

-- Evaluate every check now. SECURITY DEFINER so that a monitoring role with
-- loyalty_reader sees the whole truth (the queue, pg_stat_activity, cron.job);
-- it only reads, and never runs text anyone wrote.
CREATE FUNCTION loyalty._health_checks()
RETURNS TABLE ("check" text, status text, detail text, hint text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off   -- small index reads whose estimates look large: JIT would cost more than the reads
AS $$
#variable_conflict use_variable
DECLARE
    s loyalty.health_settings;
    here text := pg_catalog.current_database();
    cron_db text := loyalty._cron_database_name();
    cron_here boolean;
    worker boolean;
    active_campaigns boolean;
    oldest timestamptz;
    n bigint;
    m bigint;
    t timestamptz;
    t2 timestamptz;
    j record;
    job_row jsonb;
    names text[];
    q text;
    cron_jobs jsonb;
    cron_error text;
    t_sched text;
    edited text;
    period interval;
    refresh_job boolean := false;
    sev text;
    f record;
    k bigint;
    examples text;
    fell text;
    x1 numeric;
    x2 numeric;
    cm record;
    chosen text;
    label text;
BEGIN
    SELECT * INTO s FROM loyalty.health_settings;
    worker := EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                       WHERE a.backend_type = 'loyalty worker'
                         AND a.datname = here);
    active_campaigns := EXISTS (SELECT 1 FROM loyalty.campaigns c WHERE c.active);
    cron_here := cron_db IS NOT NULL AND cron_db = here
                 AND pg_catalog.to_regclass('cron.job') IS NOT NULL;

    -- pg_cron jobs that schedule() installs (one row each). pg_cron keeps
    -- them in the database cron.database_name names: read here, or there
    -- through dblink (as schedule() installs them there); one query either way.
    IF cron_db IS NOT NULL AND cron_db <> '' THEN
        SELECT pg_catalog.array_agg(CASE WHEN cron_db = here THEN x.job ELSE x.job || '@' || here END)
          INTO names FROM loyalty._cron_jobs('x', 'x', 'x', 'x', 'x', 'x', 'x', 'x') x;
        -- per job (its name without @database): the newest cron.job row and its last run
        q := pg_catalog.format($q$
            SELECT coalesce(pg_catalog.jsonb_object_agg(pg_catalog.split_part(j.jobname, '@', 1),
                       pg_catalog.jsonb_build_object('jobid', j.jobid, 'schedule', j.schedule, 'command', j.command,
                                                     'active', j.active, 'database', j.database, 'jobname', j.jobname,
                                                     'run_status', r.status, 'start_time', r.start_time, 'end_time', r.end_time,
                                                     'return_message', pg_catalog.left(r.return_message, 300))), '{}'::pg_catalog.jsonb)::pg_catalog.text
              FROM (SELECT DISTINCT ON (cj.jobname) cj.* FROM cron.job cj
                     WHERE cj.jobname OPERATOR(pg_catalog.=) ANY (%L::pg_catalog.text[])
                     ORDER BY cj.jobname, cj.jobid DESC) j
              LEFT JOIN LATERAL (SELECT d.status, d.start_time, d.end_time, d.return_message FROM cron.job_run_details d
                                  WHERE d.jobid OPERATOR(pg_catalog.=) j.jobid ORDER BY d.runid DESC LIMIT 1) r ON true
            $q$, names);
        BEGIN
            IF cron_here THEN
                EXECUTE q INTO q;
                cron_jobs := q::jsonb;
            ELSIF cron_db <> here THEN
                cron_jobs := loyalty._cron_query(q, cron_db)::jsonb;
                cron_error := CASE WHEN cron_jobs IS NULL THEN 'dblink is not installed here' END;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS cron_error = PG_EXCEPTION_DETAIL;
            cron_jobs := NULL;
            cron_error := SQLERRM || coalesce(' (' || pg_catalog.btrim(NULLIF(cron_error, ''), E' \n') || ')', '');
        END;
    END IF;
    IF cron_db IS NULL OR cron_db = '' THEN
        "check" := 'jobs'; status := 'warning';
        detail := 'pg_cron is not loaded: nothing runs enqueue_due, notify_due, expire_points, recompute_tiers, check_health or purge_history on a schedule';
        hint := 'Install pg_cron (shared_preload_libraries, cron.database_name) and run SELECT * FROM loyalty.schedule(); or call those functions from your own scheduler.';
        RETURN NEXT;
    ELSIF cron_jobs IS NULL AND cron_db = here THEN
        "check" := 'jobs'; status := 'warning';
        detail := pg_catalog.format('pg_cron is loaded with cron.database_name = %s, but cron.job cannot be read here%s', cron_db,
                                    CASE WHEN cron_error IS NOT NULL THEN ': ' || cron_error ELSE ' (CREATE EXTENSION pg_cron has not run)' END);
        hint := 'Run CREATE EXTENSION pg_cron; in this database, then SELECT * FROM loyalty.schedule();';
        RETURN NEXT;
    ELSIF cron_jobs IS NULL THEN
        -- pg_cron in another database and no way to read it from here
        "check" := 'jobs'; status := 'warning';
        detail := pg_catalog.format('pg_cron keeps its jobs in database %s (cron.database_name); they cannot be read from here: %s', cron_db, cron_error);
        hint := pg_catalog.format('CREATE EXTENSION dblink; here lets the checks read cron.job in %s (connecting as the extension''s owner over the local socket: pg_hba.conf must let it in, e.g. peer, or a ~/.pgpass of the server''s user). Else watch the jobs named loyalty-*@%s there (made with cron.schedule_in_database by loyalty.schedule()).', cron_db, here);
        RETURN NEXT;
    ELSE
        FOR j IN SELECT c.job, c.command FROM loyalty._cron_jobs('x', 'x', 'x', 'x', 'x', 'x', 'x', 'x') c LOOP
            "check" := 'job ' || j.job;
            -- enqueue_due with an active campaign: the customers' messages stop
            sev := CASE WHEN j.job = 'loyalty-enqueue' AND active_campaigns THEN 'critical' ELSE 'warning' END;
            job_row := cron_jobs -> j.job;
            IF job_row IS NULL THEN
                IF j.job = 'loyalty-refresh' AND worker THEN
                    status := 'ok'; detail := 'no job, and none needed: a loyalty worker serves this database'; hint := NULL;
                ELSE
                    status := sev; detail := pg_catalog.format('job %s is missing from cron.job%s', j.job,
                                                               CASE WHEN cron_db <> here THEN ' of database ' || cron_db ELSE '' END);
                    hint := 'Run SELECT * FROM loyalty.schedule(); to install the jobs.';
                END IF;
                RETURN NEXT; CONTINUE;
            END IF;
            -- edited by hand: schedule (against what schedule() recorded) or command (fixed) differs
            SELECT sj.schedule INTO t_sched FROM loyalty.scheduled_jobs sj WHERE sj.job_name = job_row->>'jobname';
            IF (t_sched IS NOT NULL AND t_sched IS DISTINCT FROM job_row->>'schedule')
               OR j.command IS DISTINCT FROM job_row->>'command'
               OR (job_row->>'database') IS DISTINCT FROM here THEN
                edited := coalesce(edited || '; ', '') || pg_catalog.format('%s: %s', job_row->>'jobname', pg_catalog.concat_ws(', ',
                    CASE WHEN t_sched IS NOT NULL AND t_sched IS DISTINCT FROM job_row->>'schedule'
                         THEN pg_catalog.format('schedule %L, schedule() installed %L', job_row->>'schedule', t_sched) END,
                    CASE WHEN j.command IS DISTINCT FROM job_row->>'command'
                         THEN pg_catalog.format('command %L, schedule() installs %L', pg_catalog.left(job_row->>'command', 200), j.command) END,
                    CASE WHEN (job_row->>'database') IS DISTINCT FROM here
                         THEN pg_catalog.format('runs in database %s', job_row->>'database') END));
            END IF;
            IF j.job = 'loyalty-refresh' THEN
                refresh_job := (job_row->>'active')::boolean;
            END IF;
            IF NOT (job_row->>'active')::boolean THEN
                status := sev; detail := pg_catalog.format('job %s is disabled (cron.job.active = false)', j.job);
                hint := pg_catalog.format('Run SELECT cron.alter_job(%s, active => true); %sor SELECT * FROM loyalty.schedule();', job_row->>'jobid',
                                          CASE WHEN cron_db <> here THEN 'in database ' || cron_db || ', ' ELSE '' END);
                RETURN NEXT; CONTINUE;
            END IF;
            period := loyalty._cron_period(job_row->>'schedule') + s.job_grace;
            t := (job_row->>'start_time')::timestamptz;
            IF job_row->>'run_status' IS NULL THEN
                status := 'ok'; detail := pg_catalog.format('job %s (%s) has no run recorded yet', j.job, job_row->>'schedule');
                hint := 'If it stays so past its schedule, check that cron.log_run is on and the pg_cron scheduler runs.';
            ELSIF job_row->>'run_status' = 'failed' THEN
                status := sev;
                detail := pg_catalog.format('job %s failed at %s: %s', j.job, (job_row->>'end_time')::timestamptz, job_row->>'return_message');
                hint := 'Read cron.job_run_details for the job; run its command by hand to see the error.';
            ELSIF job_row->>'run_status' IN ('running', 'starting', 'connecting', 'sending')
                  AND t < pg_catalog.now() - period THEN
                status := 'warning';
                detail := pg_catalog.format('job %s has been running for %s (its schedule %s allows %s)', j.job,
                                            loyalty._health_age(pg_catalog.now() - t), job_row->>'schedule', loyalty._health_age(period));
                hint := 'Look for locks or a slow query in pg_stat_activity; pg_cron does not start a job again while it runs.';
            ELSIF t < pg_catalog.now() - period THEN
                status := sev;
                detail := pg_catalog.format('job %s last started %s ago; its schedule %s plus the grace of %s allows %s', j.job,
                                            loyalty._health_age(pg_catalog.now() - t), job_row->>'schedule',
                                            loyalty._health_age(s.job_grace), loyalty._health_age(period));
                hint := 'Check that the pg_cron scheduler runs (pg_stat_activity, server log) and that cron.max_running_jobs is not exhausted.';
            ELSIF j.job = 'loyalty-enqueue' AND active_campaigns
                  AND coalesce((SELECT pg_catalog.max(r.last_run_at) FROM loyalty.journey_runs r), '-infinity') < pg_catalog.now() - period THEN
                status := sev;
                detail := pg_catalog.format('job %s reports success, but the last campaign run recorded is %s', j.job,
                                            coalesce(loyalty._health_age(pg_catalog.now() - (SELECT pg_catalog.max(r.last_run_at) FROM loyalty.journey_runs r)) || ' old', 'none'));
                hint := pg_catalog.format('The job''s command should be %s; compare with cron.job.', j.command);
            ELSE
                status := 'ok';
                detail := pg_catalog.format('job %s (%s) last started %s ago, %s', j.job, job_row->>'schedule',
                                            loyalty._health_age(pg_catalog.now() - t), job_row->>'run_status');
                hint := NULL;
            END IF;
            RETURN NEXT;
        END LOOP;

        -- a job edited by hand (cron.alter_job, an UPDATE of cron.job): its own finding
        "check" := 'jobs_edited';
        IF edited IS NOT NULL THEN
            status := 'warning';
            detail := 'edited by hand: ' || edited;
            hint := 'Run SELECT * FROM loyalty.schedule(...); with the schedules you want (it records them), instead of editing cron.job.';
        ELSE
            status := 'ok'; detail := 'every job runs the command and schedule loyalty.schedule() installed'; hint := NULL;
        END IF;
        RETURN NEXT;
    END IF;

    -- captured changes not applied
    SELECT pg_catalog.min(e.captured_at) INTO oldest FROM loyalty.events e;
    "check" := 'apply_backlog';
    IF NOT worker AND NOT refresh_job THEN
        status := CASE WHEN oldest IS NOT NULL THEN 'critical' ELSE 'warning' END;
        detail := pg_catalog.format('no loyalty worker serves database %s and no pg_cron job refreshes it; oldest unapplied change: %s',
                                    here, CASE WHEN oldest IS NULL THEN 'none' ELSE loyalty._health_age(pg_catalog.now() - oldest) || ' old' END);
        hint := 'Add loyalty to shared_preload_libraries (and this database to loyalty.database if that is set), or run SELECT * FROM loyalty.schedule();';
    ELSIF oldest IS NOT NULL AND oldest < pg_catalog.now() - s.backlog_warning THEN
        status := CASE WHEN oldest < pg_catalog.now() - s.backlog_critical THEN 'critical' ELSE 'warning' END;
        detail := pg_catalog.format('the oldest captured change has waited %s (warning after %s, critical after %s)',
                                    loyalty._health_age(pg_catalog.now() - oldest),
                                    loyalty._health_age(s.backlog_warning), loyalty._health_age(s.backlog_critical));
        hint := 'Look for errors of the loyalty worker or the loyalty-refresh job in the server log; SELECT loyalty.refresh(); applies them by hand.';
    ELSE
        status := 'ok';
        detail := pg_catalog.format('oldest captured change: %s (warning after %s)',
                                    CASE WHEN oldest IS NULL THEN 'none waiting' ELSE loyalty._health_age(pg_catalog.now() - oldest) || ' old' END,
                                    loyalty._health_age(s.backlog_warning));
        hint := NULL;
    END IF;
    RETURN NEXT;

    -- outbox: the oldest claimable message (due, or its lease ended) nobody took
    SELECT pg_catalog.min(q.visible_at),
           pg_catalog.count(*) FILTER (WHERE q.claim_token IS NOT NULL)
      INTO t, n
      FROM loyalty.outbox_queue q WHERE q.visible_at <= pg_catalog.now();
    "check" := 'outbox_waiting';
    IF t IS NOT NULL AND t < pg_catalog.now() - s.outbox_wait_warning THEN
        status := CASE WHEN t < pg_catalog.now() - s.outbox_wait_critical THEN 'critical' ELSE 'warning' END;
        detail := pg_catalog.format('the oldest due message has waited %s unclaimed (warning after %s, critical after %s)',
                                    loyalty._health_age(pg_catalog.now() - t),
                                    loyalty._health_age(s.outbox_wait_warning), loyalty._health_age(s.outbox_wait_critical));
        hint := 'The sender is down or too slow: check the process that calls loyalty.claim_messages().';
    ELSE
        status := 'ok';
        detail := pg_catalog.format('oldest due message: %s (warning after %s)',
                                    CASE WHEN t IS NULL THEN 'none waiting' ELSE loyalty._health_age(pg_catalog.now() - t) || ' old' END,
                                    loyalty._health_age(s.outbox_wait_warning));
        hint := NULL;
    END IF;
    RETURN NEXT;

    "check" := 'outbox_leases';
    IF n > 0 THEN
        status := 'warning';
        detail := pg_catalog.format('%s claimed messages'' leases ended without an ack or a fail (warning from 1)', n);
        hint := 'A sender claims messages and dies before acking: look at the sender''s log; the messages are claimable again.';
    ELSE
        status := 'ok'; detail := 'no lease ended without an ack or a fail'; hint := NULL;
    END IF;
    RETURN NEXT;

    -- outbox: outcomes of the last day among the messages created in the last
    -- two days (with the default backoff a message is sent or given up within
    -- a day), read per campaign through outbox_campaign_idx
    SELECT pg_catalog.count(*) FILTER (WHERE o.status = 'dead' AND o.due_at > pg_catalog.now() - '1 day'::interval),
           pg_catalog.count(*) FILTER (WHERE o.status = 'sent' AND o.sent_at > pg_catalog.now() - '1 day'::interval),
           pg_catalog.max(o.sent_at)
      INTO n, m, t2
      FROM loyalty.campaigns c
      JOIN LATERAL (SELECT o.status, o.due_at, o.sent_at FROM loyalty.outbox o
                     WHERE o.campaign_id = c.campaign_id
                       AND o.created_at > pg_catalog.now() - '2 days'::interval
                    OFFSET 0) o ON true;   -- OFFSET 0: one index range per campaign, never a scan of the outbox
    "check" := 'outbox_dead_letters';
    IF n > 0 AND n::numeric / (n + m) >= s.dead_rate_warning THEN
        status := CASE WHEN n::numeric / (n + m) >= s.dead_rate_critical THEN 'critical' ELSE 'warning' END;
        detail := pg_catalog.format('%s of %s messages finished in the last day were given up (%s%%; warning from %s%%, critical from %s%%)',
                                    n, n + m, pg_catalog.round(100 * n::numeric / (n + m), 1),
                                    pg_catalog.round(100 * s.dead_rate_warning, 1), pg_catalog.round(100 * s.dead_rate_critical, 1));
        hint := 'Read last_error in loyalty.dead_letters; after fixing the cause, SELECT loyalty.requeue_dead();';
    ELSE
        status := 'ok';
        detail := pg_catalog.format('%s of %s messages finished in the last day were given up (warning from %s%%)',
                                    n, n + m, pg_catalog.round(100 * s.dead_rate_warning, 1));
        hint := NULL;
    END IF;
    RETURN NEXT;

    "check" := 'outbox_acks';
    IF t IS NOT NULL AND t < pg_catalog.now() - '1 day'::interval
       AND (t2 IS NULL OR t2 < pg_catalog.now() - '1 day'::interval) THEN
        status := 'critical';
        detail := pg_catalog.format('no message acked for a day (last ack: %s) while messages have been due for %s',
                                    coalesce(t2::text, 'never'), loyalty._health_age(pg_catalog.now() - t));
        hint := 'No sender is delivering: start the sender (it calls loyalty.claim_messages() and loyalty.ack_message()).';
    ELSE
        status := 'ok'; detail := pg_catalog.format('last ack: %s', coalesce(t2::text, 'none of the messages of the last 2 days')); hint := NULL;
    END IF;
    RETURN NEXT;

    -- campaigns gone silent: no decision for silent_factor times the campaign's
    -- usual gap between decisions (over the 90 days before its last one), and
    -- for at least silent_min. The last decision is one index probe
    -- (outbox_campaign_idx); the rhythm is counted only for a campaign quiet
    -- for silent_min already.
    "check" := 'campaigns_silent';
    n := 0; detail := NULL;
    FOR f IN
        SELECT c.campaign_id, c.name, coalesce(x.last_at, c.activated_at, c.created_at) AS quiet_since, x.last_at
          FROM loyalty.campaigns c
          LEFT JOIN LATERAL (SELECT pg_catalog.max(o.created_at) AS last_at FROM loyalty.outbox o
                              WHERE o.campaign_id = c.campaign_id) x ON true
         WHERE c.active AND coalesce(x.last_at, c.activated_at, c.created_at) < pg_catalog.now() - s.silent_min
         ORDER BY c.name
    LOOP
        SELECT pg_catalog.count(*), pg_catalog.min(o.created_at) INTO m, t
          FROM loyalty.outbox o
         WHERE o.campaign_id = f.campaign_id AND o.created_at >= f.last_at - '90 days'::interval;
        CONTINUE WHEN m > 1 AND pg_catalog.now() - f.last_at < (f.last_at - t) / (m - 1)::float8 * s.silent_factor::float8;
        n := n + 1;
        detail := coalesce(detail || '; ', '') ||
                  pg_catalog.format('%s decided nothing for %s (%s decisions in the 90 days before)', f.name,
                                    loyalty._health_age(pg_catalog.now() - f.quiet_since), m);
    END LOOP;
    IF n > 0 THEN
        status := 'warning';
        detail := detail || pg_catalog.format(' (silent after %s times the usual gap, at least %s)', s.silent_factor, loyalty._health_age(s.silent_min));
        hint := 'Check the campaign''s audience and parameters (loyalty.due_messages) and that the loyalty-enqueue job runs.';
    ELSE
        status := 'ok'; detail := 'every active campaign decided something within its usual rhythm'; hint := NULL;
    END IF;
    RETURN NEXT;

    -- models: the model that decides (loyalty.current_model) and the newest
    -- fit of the model chosen (the holdout comparison's verdict, else BG/NBD
    -- when enabled: the rule of current_model): its age, not converged, or a
    -- fall back to the heuristic or to an earlier fit
    "check" := 'models';
    SELECT c.model, c.fit_id, c.reason, mf.fitted_at INTO cm
      FROM loyalty.current_model c LEFT JOIN loyalty.model_fits mf ON mf.fit_id = c.fit_id;
    SELECT coalesce((SELECT mc.model FROM loyalty.model_choice mc WHERE mc.model = ANY (ms.models)),
                    CASE WHEN 'bgnbd' = ANY (ms.models) THEN 'bgnbd' ELSE 'heuristic' END) INTO chosen
      FROM loyalty.model_settings ms;
    label := CASE chosen WHEN 'bgnbd' THEN 'BG/NBD' WHEN 'mbgnbd' THEN 'MBG/NBD' WHEN 'pareto_nbd' THEN 'Pareto/NBD'
                         ELSE chosen END;
    SELECT f2.status AS fit_status, f2.fitted_at, f2.note INTO f
      FROM loyalty.model_fits f2 WHERE f2.model = chosen ORDER BY f2.fit_id DESC LIMIT 1;
    sev := CASE WHEN FOUND THEN f.fit_status END;
    -- counted up to the fitting threshold only: the check stays cheap at any size
    SELECT pg_catalog.count(*) INTO n
      FROM (SELECT 1 FROM loyalty.customer_state LIMIT (SELECT ms.min_customers FROM loyalty.model_settings ms)) x;
    IF sev IS NULL OR sev = 'too_little_data' THEN
        IF n >= (SELECT ms.min_customers FROM loyalty.model_settings ms) THEN
            status := 'warning';
            detail := pg_catalog.format('%s scores in use: no %s fit although at least %s customers are known (fit from %s)',
                                        cm.model, label, n, (SELECT ms.min_customers FROM loyalty.model_settings ms));
            hint := 'Run SELECT * FROM loyalty.refresh(); (it fits the models) and read loyalty.model_fits.note.';
        ELSE
            status := 'ok'; detail := pg_catalog.format('%s scores: %s customers, too few to fit %s', cm.model, n, label); hint := NULL;
        END IF;
    ELSIF sev = 'not_converged' THEN
        status := 'warning';
        detail := pg_catalog.format('the last %s fit (%s) did not converge: %s; scores use %s', label, f.fitted_at, coalesce(f.note, ''),
                                    CASE WHEN cm.fit_id IS NULL THEN 'the heuristic'
                                         ELSE pg_catalog.format('%s from the earlier fit %s (%s)', cm.model, cm.fit_id, cm.fitted_at) END);
        hint := 'See loyalty.model_fits and loyalty.model_validation; loyalty.configure_models(models => ...) can enable a model that fits this shop.';
    ELSIF f.fitted_at < pg_catalog.now() - s.fit_max_age THEN
        status := 'warning';
        detail := pg_catalog.format('%s decides; the last %s fit is %s old (warning after %s)', cm.model, label,
                                    loyalty._health_age(pg_catalog.now() - f.fitted_at), loyalty._health_age(s.fit_max_age));
        hint := 'loyalty.refresh() refits; check that the worker or the loyalty-refresh job runs it.';
    ELSE
        status := 'ok';
        detail := pg_catalog.format('%s decides, %s fitted %s ago (warning after %s); %s', cm.model, label,
                                    loyalty._health_age(pg_catalog.now() - f.fitted_at), loyalty._health_age(s.fit_max_age), cm.reason);
        hint := NULL;
    END IF;
    RETURN NEXT;

    -- models: the holdout error (mean absolute error per customer) of the
    -- chosen model in the last comparison (loyalty.model_choice, at most daily)
    -- against the median of its earlier comparisons (validation_history, which
    -- check_health() appends to), same model and holdout window, last 30
    "check" := 'model_validation';
    SELECT c.model, (c.comparison -> c.model ->> 'mae')::numeric AS mae, c.holdout_days, c.chosen_at INTO f
      FROM loyalty.model_choice c;
    IF NOT FOUND OR f.mae IS NULL THEN
        status := 'ok'; detail := 'no holdout comparison yet (loyalty.refresh() compares the models at most daily)'; hint := NULL;
    ELSE
        SELECT pg_catalog.percentile_cont(0.5) WITHIN GROUP (ORDER BY v.mae)::numeric, pg_catalog.count(*) INTO x1, n
          FROM (SELECT v.mae FROM loyalty.validation_history v
                 WHERE v.model = f.model AND v.holdout_days = f.holdout_days AND v.compared_at < f.chosen_at
                 ORDER BY v.compared_at DESC LIMIT 30) v;
        IF n < s.validation_min_history THEN
            status := 'ok';
            detail := pg_catalog.format('%s holdout error %s; %s earlier comparisons recorded, %s needed to judge it', f.model,
                                        pg_catalog.round(f.mae, 3), n, s.validation_min_history);
            hint := NULL;
        ELSIF x1 > 0 AND f.mae > s.validation_factor * x1 THEN
            status := 'warning';
            detail := pg_catalog.format('%s holdout error (mean absolute error per customer over %s days) is %s, %s times its median %s over the last %s comparisons (warning above %s times)',
                                        f.model, f.holdout_days, pg_catalog.round(f.mae, 3), pg_catalog.round(f.mae / x1, 1),
                                        pg_catalog.round(x1, 3), n, s.validation_factor);
            hint := 'The customers'' behaviour or the data changed: look at loyalty.model_validation per bin and loyalty.model_choice.comparison; check recent orders (implausible_orders, rejected_rows) before trusting churn scores.';
        ELSE
            status := 'ok';
            detail := pg_catalog.format('%s holdout error %s, median of the last %s comparisons %s (warning above %s times)', f.model,
                                        pg_catalog.round(f.mae, 3), n, pg_catalog.round(x1, 3), s.validation_factor);
            hint := NULL;
        END IF;
    END IF;
    RETURN NEXT;

    -- data quality: shop rows rejected in the last day and still open
    SELECT pg_catalog.count(*) INTO n FROM loyalty.rejected_rows r
     WHERE r.resolved_at IS NULL AND r.rejected_at > pg_catalog.now() - '1 day'::interval;
    "check" := 'rejected_rows';
    IF n >= s.rejected_warning THEN
        status := CASE WHEN n >= s.rejected_critical THEN 'critical' ELSE 'warning' END;
        detail := pg_catalog.format('%s shop rows rejected in the last day (warning from %s, critical from %s)', n, s.rejected_warning, s.rejected_critical);
        hint := 'See loyalty.rejected_summary for the reasons; fix the rows and SELECT loyalty.replay_rejected();';
    ELSE
        status := 'ok'; detail := pg_catalog.format('%s shop rows rejected in the last day (warning from %s)', n, s.rejected_warning); hint := NULL;
    END IF;
    RETURN NEXT;

    -- data quality: customers with orders that marketing cannot reach (no
    -- usable email or phone number, or no opt-in on a channel they have: the
    -- rules of loyalty.due_messages), on a sample of about 5,000 customers
    -- (TABLESAMPLE SYSTEM, the same blocks all day) so the cost does not grow
    -- with the shop
    "check" := 'unreachable_customers';
    SELECT CASE WHEN c.reltuples > 5000 THEN 100 * 5000 / c.reltuples::numeric ELSE 100 END INTO x1
      FROM pg_catalog.pg_class c WHERE c.oid = 'loyalty.customer_state'::regclass;
    -- per sampled customer two probes: the profile, and every consent row
    -- (one range of consents_pkey)
    SELECT pg_catalog.count(*), pg_catalog.count(*) FILTER (WHERE NOT (y.ce OR y.cs OR y.cw)),
           pg_catalog.count(*) FILTER (WHERE (y.ce OR y.cs OR y.cw)
                                         AND NOT (y.g_all IS DISTINCT FROM false
                                                  AND ((y.ce AND coalesce(y.g_email, y.g_all))
                                                       OR (y.cs AND coalesce(y.g_sms, y.g_all))
                                                       OR (y.cw AND coalesce(y.g_whatsapp, y.g_all))) IS TRUE))
      INTO n, m, k
      FROM (SELECT loyalty._recipient('email', st.customer_id, p.email, p.phone) IS NOT NULL AS ce,
                   loyalty._recipient('sms', st.customer_id, p.email, p.phone) IS NOT NULL AS cs,
                   loyalty._recipient('whatsapp', st.customer_id, p.email, p.phone) IS NOT NULL AS cw,
                   g.g_all, g.g_email, g.g_sms, g.g_whatsapp
              FROM loyalty.customer_state st TABLESAMPLE SYSTEM (x1) REPEATABLE (pg_catalog.date_part('doy', pg_catalog.now()))
              -- OFFSET 0: one probe per sampled customer, never a join reading every profile
              LEFT JOIN LATERAL (SELECT p.email, p.phone FROM loyalty.profiles p WHERE p.customer_id = st.customer_id OFFSET 0) p ON true
              LEFT JOIN LATERAL (SELECT pg_catalog.bool_or(c.granted) FILTER (WHERE c.channel = 'all') AS g_all,
                                        pg_catalog.bool_or(c.granted) FILTER (WHERE c.channel = 'email') AS g_email,
                                        pg_catalog.bool_or(c.granted) FILTER (WHERE c.channel = 'sms') AS g_sms,
                                        pg_catalog.bool_or(c.granted) FILTER (WHERE c.channel = 'whatsapp') AS g_whatsapp
                                   FROM loyalty.consents c WHERE c.customer_id = st.customer_id) g ON true) y;
    IF n > 0 AND (m + k)::numeric / n >= s.unreachable_warning THEN
        status := 'warning';
        hint := 'Collect email addresses or phone numbers and opt-ins (loyalty.track_customers, loyalty.upsert_customer, loyalty.set_consent); loyalty.contact_quality counts per channel.';
    ELSE
        status := 'ok'; hint := NULL;
    END IF;
    detail := CASE WHEN n = 0 THEN 'no customers with orders'
                   ELSE pg_catalog.format('%s of %s customers with orders%s (%s%%) cannot be reached by marketing: %s without a usable email address or phone number, %s without an opt-in on a channel they have (warning from %s%%)',
                                          m + k, n, CASE WHEN x1 < 100 THEN ' in a sample' ELSE '' END,
                                          pg_catalog.round(100 * (m + k)::numeric / n, 1), m, k, pg_catalog.round(100 * s.unreachable_warning, 1)) END;
    RETURN NEXT;

    -- data quality: orders that count (not cancelled, not refunded in full)
    -- dated after now beyond future_order_tolerance (the capture refuses them
    -- past loyalty.future_tolerance: these came earlier, or the clock was set
    -- back), and those of the last 7 days above amount_factor times the
    -- shop's median order amount (the median of a sample of about 5,000
    -- orders). Both read orders_ordered_at_idx ranges.
    "check" := 'implausible_orders';
    SELECT pg_catalog.count(*), pg_catalog.string_agg(z.order_ref, ', ') FILTER (WHERE z.rn <= 3) INTO n, examples
      FROM (SELECT o.order_ref, pg_catalog.row_number() OVER (ORDER BY o.ordered_at DESC) AS rn
              FROM loyalty.orders o WHERE o.ordered_at > pg_catalog.now() + s.future_order_tolerance AND o.counts) z;
    SELECT CASE WHEN c.reltuples > 5000 THEN 100 * 5000 / c.reltuples::numeric ELSE 100 END INTO x1
      FROM pg_catalog.pg_class c WHERE c.oid = 'loyalty.orders'::regclass;
    SELECT pg_catalog.percentile_cont(0.5) WITHIN GROUP (ORDER BY o.amount)::numeric INTO x2
      FROM loyalty.orders o TABLESAMPLE SYSTEM (x1) REPEATABLE (pg_catalog.date_part('doy', pg_catalog.now()))
     WHERE o.counted AND o.amount > 0;
    SELECT pg_catalog.count(*), pg_catalog.string_agg(pg_catalog.format('%s (%s)', z.order_ref, z.amount), ', ') FILTER (WHERE z.rn <= 3)
      INTO m, q
      FROM (SELECT o.order_ref, o.amount, pg_catalog.row_number() OVER (ORDER BY o.amount DESC) AS rn
              FROM loyalty.orders o
             WHERE o.ordered_at > pg_catalog.now() - '7 days'::interval
               AND o.ordered_at <= pg_catalog.now() + s.future_order_tolerance
               AND o.amount > s.amount_factor * x2 AND o.counts) z;
    IF n > 0 OR m > 0 THEN
        status := 'warning';
        detail := pg_catalog.concat_ws('; ',
            CASE WHEN n > 0 THEN pg_catalog.format('%s orders dated more than %s after now (%s)', n,
                                                   loyalty._health_age(s.future_order_tolerance), examples) END,
            CASE WHEN m > 0 THEN pg_catalog.format('%s orders of the last 7 days above %s times the median order amount %s (%s)', m,
                                                   s.amount_factor, pg_catalog.round(x2, 2), q) END);
        hint := 'Correct the orders in the shop (a tracked table''s change updates loyalty.orders) or cancel them; a real large order stops counting here 7 days after it was placed (or raise configure_health(amount_factor => ...)).';
    ELSE
        status := 'ok';
        detail := pg_catalog.format('no order dated more than %s after now, none of the last 7 days above %s times the median order amount (%s)',
                                    loyalty._health_age(s.future_order_tolerance), s.amount_factor, coalesce(pg_catalog.round(x2, 2)::text, 'no orders'));
        hint := NULL;
    END IF;
    RETURN NEXT;

    -- operations: open issues past their SLA (order_issues.opened_at is the
    -- breach) for longer than issue_overdue, counted up to overdue_critical
    -- through order_issues_open_idx
    "check" := 'issues_overdue';
    SELECT pg_catalog.count(*) INTO n
      FROM (SELECT 1 FROM loyalty.order_issues i
             WHERE i.resolved_at IS NULL AND i.opened_at < pg_catalog.now() - s.issue_overdue
             LIMIT s.overdue_critical) i;
    SELECT pg_catalog.min(i.opened_at) INTO t FROM loyalty.order_issues i WHERE i.resolved_at IS NULL;
    IF n >= s.overdue_warning THEN
        status := CASE WHEN n >= s.overdue_critical THEN 'critical' ELSE 'warning' END;
        detail := pg_catalog.format('%s%s open issues breached their SLA more than %s ago, the oldest %s ago (warning from %s, critical from %s)',
                                    CASE WHEN n >= s.overdue_critical THEN 'at least ' ELSE '' END, n, loyalty._health_age(s.issue_overdue),
                                    loyalty._health_age(pg_catalog.now() - t), s.overdue_warning, s.overdue_critical);
        hint := 'Work through loyalty.open_issues (most valuable customers first); an issue resolves when its stage is recorded (loyalty.record_fulfilment, record_shipment_event, record_refund).';
    ELSE
        status := 'ok';
        detail := pg_catalog.format('no open issue breached its SLA more than %s ago (oldest open issue: %s)', loyalty._health_age(s.issue_overdue),
                                    coalesce(loyalty._health_age(pg_catalog.now() - t) || ' old', 'none'));
        hint := NULL;
    END IF;
    RETURN NEXT;

    -- operations: the on-time rate of dispatch and delivery deadlines due in
    -- the last 7 days against the 4 weeks before (loyalty.order_deadlines, an
    -- index range on due_at; on time: the stage completed by the deadline, as
    -- in loyalty.sla_summary)
    "check" := 'on_time_rate';
    detail := NULL; fell := NULL;
    FOR f IN
        SELECT CASE d.kind WHEN 'late_dispatch' THEN 'dispatch' ELSE 'delivery' END AS stage,
               pg_catalog.count(*) FILTER (WHERE d.due_at > pg_catalog.now() - '7 days'::interval) AS n_recent,
               pg_catalog.count(*) FILTER (WHERE d.due_at > pg_catalog.now() - '7 days'::interval AND d.done_at <= d.due_at) AS ok_recent,
               pg_catalog.count(*) FILTER (WHERE d.due_at <= pg_catalog.now() - '7 days'::interval) AS n_before,
               pg_catalog.count(*) FILTER (WHERE d.due_at <= pg_catalog.now() - '7 days'::interval AND d.done_at <= d.due_at) AS ok_before
          FROM loyalty.order_deadlines d
         WHERE d.due_at > pg_catalog.now() - '35 days'::interval AND d.due_at <= pg_catalog.now()
           AND d.kind IN ('late_dispatch', 'late_delivery')
           -- an order that does not count (cancelled) has no on-time rate, as in sla_summary
           AND NOT EXISTS (SELECT 1 FROM loyalty.orders o WHERE o.order_ref = d.order_ref AND NOT o.counted)
         GROUP BY 1 ORDER BY 1
    LOOP
        x1 := CASE WHEN f.n_recent > 0 THEN f.ok_recent::numeric / f.n_recent END;
        x2 := CASE WHEN f.n_before > 0 THEN f.ok_before::numeric / f.n_before END;
        q := pg_catalog.format('%s on time %s of %s deadlines in the last 7 days, %s of %s in the 4 weeks before', f.stage,
                               coalesce(pg_catalog.round(100 * x1, 1) || '%', '-'), f.n_recent,
                               coalesce(pg_catalog.round(100 * x2, 1) || '%', '-'), f.n_before);
        detail := coalesce(detail || '; ', '') || q;
        IF f.n_recent >= s.on_time_min AND f.n_before >= s.on_time_min AND x1 < x2 - s.on_time_drop THEN
            fell := coalesce(fell || '; ', '') || q;
        END IF;
    END LOOP;
    IF fell IS NOT NULL THEN
        status := 'warning';
        detail := fell || pg_catalog.format(' (warning when %s points lower, from %s deadlines in each period)', pg_catalog.round(100 * s.on_time_drop, 1), s.on_time_min);
        hint := 'See loyalty.sla_summary per week and loyalty.open_issues: a warehouse or carrier is slower than before.';
    ELSE
        status := 'ok';
        detail := coalesce(detail, 'no dispatch or delivery deadline in the last 5 weeks')
                  || pg_catalog.format(' (warning when %s points lower, from %s deadlines in each period)', pg_catalog.round(100 * s.on_time_drop, 1), s.on_time_min);
        hint := NULL;
    END IF;
    RETURN NEXT;

    -- the installed version against the library's (the control file on disk)
    "check" := 'extension_version';
    SELECT e.extversion AS installed, a.default_version AS available INTO f
      FROM pg_catalog.pg_extension e, pg_catalog.pg_available_extensions a
     WHERE e.extname = 'loyalty' AND a.name = 'loyalty';
    IF f.installed IS DISTINCT FROM f.available THEN
        status := 'warning';
        detail := pg_catalog.format('installed version %s, the library on the server is %s', f.installed, f.available);
        hint := 'Run ALTER EXTENSION loyalty UPDATE; (read the upgrade notes first).';
    ELSE
        status := 'ok'; detail := pg_catalog.format('version %s, as the library', f.installed); hint := NULL;
    END IF;
    RETURN NEXT;

    -- tables that only grow when their consumer stops (counted up to the threshold)
    "check" := 'table_growth';
    SELECT pg_catalog.count(*) INTO n FROM (SELECT 1 FROM loyalty.events LIMIT s.growth_warning) x;
    SELECT pg_catalog.count(*) INTO m FROM (SELECT 1 FROM loyalty.journey_changes LIMIT s.growth_warning) x;
    IF n >= s.growth_warning OR m >= s.growth_warning THEN
        status := 'warning';
        detail := pg_catalog.format('loyalty.events holds %s%s rows, loyalty.journey_changes %s%s (warning from %s)',
                                    CASE WHEN n >= s.growth_warning THEN 'at least ' ELSE '' END, n,
                                    CASE WHEN m >= s.growth_warning THEN 'at least ' ELSE '' END, m, s.growth_warning);
        hint := 'events drain through the worker or loyalty.refresh(); journey_changes through loyalty.enqueue_due(): check they run.';
    ELSE
        status := 'ok';
        detail := pg_catalog.format('loyalty.events %s rows, loyalty.journey_changes %s (warning from %s)', n, m, s.growth_warning);
        hint := NULL;
    END IF;
    RETURN NEXT;

    -- capture triggers the shop disabled (ALTER TABLE ... DISABLE TRIGGER [ALL],
    -- e.g. for a bulk load): the rows written meanwhile are never captured
    "check" := 'capture_triggers';
    SELECT pg_catalog.count(*), pg_catalog.string_agg(pg_catalog.format('%s (%s)', t.tgrelid::regclass, t.tgname), ', ')
      INTO n, examples
      FROM pg_catalog.pg_trigger t
     WHERE t.tgfoid = 'loyalty.capture_row()'::regprocedure AND t.tgenabled = 'D';
    IF n > 0 THEN
        status := 'critical';
        detail := pg_catalog.format('%s capture triggers are disabled: %s; rows written to these tables are not captured', n, examples);
        hint := 'ALTER TABLE ... ENABLE TRIGGER ...; then read the rows written meanwhile again by calling loyalty.track_orders / track_customers / track_shipment_events once more with backfill => true (idempotent).';
    ELSE
        status := 'ok';
        detail := 'no capture trigger is disabled';
        hint := NULL;
    END IF;
    RETURN NEXT;
END
$$;

CREATE VIEW loyalty.health AS
SELECT c."check", c.status, c.detail,
       CASE WHEN h.status = c.status THEN h.since ELSE now() END AS since,
       c.hint
  FROM loyalty._health_checks() c
  LEFT JOIN loyalty.health_state h ON h."check" = c."check";
COMMENT ON VIEW loyalty.health IS 'Is loyalty itself alive? One row per check, evaluated when read: status ok, warning or critical, the measured value and threshold, since when, and what to do';
COMMENT ON COLUMN loyalty.health."check" IS 'the check''s name, e.g. jobs, apply_backlog, outbox_waiting, models, rejected_rows';
COMMENT ON COLUMN loyalty.health.status IS 'ok, warning or critical';
COMMENT ON COLUMN loyalty.health.detail IS 'the measured value and the threshold, in words';
COMMENT ON COLUMN loyalty.health.since IS 'when the check entered this status (as recorded by loyalty.check_health(); now if it has just changed)';
COMMENT ON COLUMN loyalty.health.hint IS 'what to do about it';

-- One message for the operator (or the heartbeat) in the outbox: pending, due
-- now, no campaign, so consent, caps, quiet hours and holdout never touch it.
CREATE FUNCTION loyalty._health_message(p_channel text, p_recipient text, p_template text, p_key text, p_payload jsonb)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, payload)
    VALUES ('health:' || p_key, NULL, 'loyalty:ops', p_channel, p_recipient, p_template, p_payload)
    ON CONFLICT (dedupe_key) DO NOTHING
$$;

CREATE FUNCTION loyalty.check_health()
RETURNS TABLE ("check" text, status text, detail text, since timestamptz, hint text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    s loyalty.health_settings;
    c record;
    h loyalty.health_state;
    ts timestamptz := pg_catalog.now();
    stamp text := pg_catalog.to_char(pg_catalog.now() AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS.US');
    payload jsonb;
    n bigint;
BEGIN
    -- one evaluation at a time (the worker and the loyalty-health job may meet)
    PERFORM pg_catalog.pg_advisory_xact_lock(74200, 15);
    SELECT * INTO s FROM loyalty.health_settings;
    -- the models' newest holdout comparison, for model_validation's median
    -- (recorded before the checks: the newest is compared with the earlier ones)
    INSERT INTO loyalty.validation_history (model, holdout_days, customers, mae, compared_at)
    SELECT e.key, mc.holdout_days, (e.value ->> 'customers')::bigint, (e.value ->> 'mae')::numeric, mc.chosen_at
      FROM loyalty.model_choice mc, pg_catalog.jsonb_each(mc.comparison) e
     WHERE pg_catalog.jsonb_typeof(e.value -> 'mae') = 'number'
    ON CONFLICT (model, compared_at) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN   -- the newest 100 comparisons per model are plenty (the check reads 30)
        DELETE FROM loyalty.validation_history v
         WHERE v.history_id IN (SELECT w.history_id
                                  FROM (SELECT w.history_id, pg_catalog.row_number() OVER (PARTITION BY w.model ORDER BY w.compared_at DESC) AS rn
                                          FROM loyalty.validation_history w) w
                                 WHERE w.rn > 100);
    END IF;
    FOR c IN SELECT * FROM loyalty._health_checks() LOOP
        SELECT * INTO h FROM loyalty.health_state x WHERE x."check" = c."check" FOR UPDATE;
        IF NOT FOUND OR h.status IS DISTINCT FROM c.status THEN
            INSERT INTO loyalty.health_history ("check", status, previous_status, detail)
            VALUES (c."check", c.status, h.status, c.detail);
            PERFORM pg_catalog.pg_notify('loyalty_health',
                pg_catalog.jsonb_build_object('check', c."check", 'status', c.status, 'previous_status', h.status)::text);
            h."check" := c."check";
            h.problem_since := CASE WHEN c.status = 'ok' THEN NULL
                                    WHEN h.status IS NULL OR h.status = 'ok' THEN ts
                                    ELSE h.problem_since END;
            h.since := ts;
        END IF;
        h.status := c.status; h.detail := c.detail; h.hint := c.hint; h.evaluated_at := ts;

        payload := pg_catalog.jsonb_build_object('check', c."check", 'status', c.status, 'detail', c.detail, 'hint', c.hint,
                                                 'since', h.since, 'problem_since', h.problem_since,
                                                 'database', pg_catalog.current_database());
        IF s.ops_recipient IS NOT NULL THEN
            IF c.status <> 'ok'
               AND ts - h.problem_since >= s.alert_after
               AND (h.alerted_status IS DISTINCT FROM c.status
                    OR ts - h.alerted_at >= s.remind_every) THEN
                PERFORM loyalty._health_message(s.ops_channel, s.ops_recipient, 'loyalty_health_alert',
                                                c."check" || ':' || stamp,
                                                payload || pg_catalog.jsonb_build_object('reminder', h.alerted_status IS NOT DISTINCT FROM c.status));
                h.alerted_status := c.status; h.alerted_at := ts;
            ELSIF c.status = 'ok' AND h.alerted_status IS NOT NULL THEN
                PERFORM loyalty._health_message(s.ops_channel, s.ops_recipient, 'loyalty_health_recovered',
                                                c."check" || ':' || stamp, payload);
                h.alerted_status := NULL; h.alerted_at := NULL;
            END IF;
        END IF;
        INSERT INTO loyalty.health_state VALUES (h.*)
        ON CONFLICT ON CONSTRAINT health_state_pkey DO UPDATE
           SET status = EXCLUDED.status, detail = EXCLUDED.detail, hint = EXCLUDED.hint, since = EXCLUDED.since,
               problem_since = EXCLUDED.problem_since, alerted_status = EXCLUDED.alerted_status,
               alerted_at = EXCLUDED.alerted_at, evaluated_at = EXCLUDED.evaluated_at;
        "check" := c."check"; status := c.status; detail := c.detail; since := h.since; hint := c.hint;
        RETURN NEXT;
    END LOOP;

    -- a check that no longer applies (pg_cron moved, a job renamed): forget it,
    -- closing an open alert with a recovery message
    FOR h IN DELETE FROM loyalty.health_state x WHERE x.evaluated_at < ts RETURNING * LOOP
        INSERT INTO loyalty.health_history ("check", status, previous_status, detail)
        VALUES (h."check", 'ok', h.status, 'the check no longer applies');
        IF h.alerted_status IS NOT NULL AND s.ops_recipient IS NOT NULL THEN
            PERFORM loyalty._health_message(s.ops_channel, s.ops_recipient, 'loyalty_health_recovered', h."check" || ':' || stamp,
                                            pg_catalog.jsonb_build_object('check', h."check", 'status', 'ok', 'detail', 'the check no longer applies',
                                                                          'database', pg_catalog.current_database()));
        END IF;
    END LOOP;

    -- the heartbeat for an external dead man's switch
    IF s.heartbeat_recipient IS NOT NULL
       AND (s.heartbeat_sent_at IS NULL OR ts - s.heartbeat_sent_at >= s.heartbeat_every) THEN
        PERFORM loyalty._health_message(s.heartbeat_channel, s.heartbeat_recipient, 'loyalty_heartbeat', 'heartbeat:' || stamp,
                                        pg_catalog.jsonb_build_object('database', pg_catalog.current_database(), 'at', ts,
                                            'worst', (SELECT x.status FROM loyalty.health_state x
                                                       ORDER BY pg_catalog.array_position(ARRAY['ok', 'warning', 'critical'], x.status) DESC LIMIT 1)));
        UPDATE loyalty.health_settings SET heartbeat_sent_at = ts;
    END IF;

    PERFORM loyalty.send_digest(ts);
END
$$;
COMMENT ON FUNCTION loyalty.check_health() IS
'Evaluate every health check, record status changes in loyalty.health_history, NOTIFY loyalty_health, and write alerts, reminders, recoveries and the heartbeat into the outbox';

CREATE FUNCTION loyalty.configure_health(
    ops_recipient        text DEFAULT NULL,
    ops_channel          text DEFAULT NULL,
    alert_after          interval DEFAULT NULL,
    remind_every         interval DEFAULT NULL,
    heartbeat_recipient  text DEFAULT NULL,
    heartbeat_channel    text DEFAULT NULL,
    heartbeat_every      interval DEFAULT NULL,
    backlog_warning      interval DEFAULT NULL,
    backlog_critical     interval DEFAULT NULL,
    job_grace            interval DEFAULT NULL,
    outbox_wait_warning  interval DEFAULT NULL,
    outbox_wait_critical interval DEFAULT NULL,
    dead_rate_warning    numeric DEFAULT NULL,
    dead_rate_critical   numeric DEFAULT NULL,
    silent_factor        numeric DEFAULT NULL,
    silent_min           interval DEFAULT NULL,
    fit_max_age          interval DEFAULT NULL,
    rejected_warning     integer DEFAULT NULL,
    rejected_critical    integer DEFAULT NULL,
    growth_warning       bigint DEFAULT NULL,
    retain_sent          interval DEFAULT NULL,
    retain_history       interval DEFAULT NULL,
    retain_rejected      interval DEFAULT NULL,
    retain_cron_runs     interval DEFAULT NULL,
    owner_recipient      text DEFAULT NULL,
    owner_channel        text DEFAULT NULL,
    digest_hour          integer DEFAULT NULL,
    validation_factor    numeric DEFAULT NULL,
    validation_min_history integer DEFAULT NULL,
    unreachable_warning  numeric DEFAULT NULL,
    future_order_tolerance interval DEFAULT NULL,
    amount_factor        numeric DEFAULT NULL,
    issue_overdue        interval DEFAULT NULL,
    overdue_warning      integer DEFAULT NULL,
    overdue_critical     integer DEFAULT NULL,
    on_time_drop         numeric DEFAULT NULL,
    on_time_min          integer DEFAULT NULL)
RETURNS loyalty.health_settings
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st loyalty.health_settings;
BEGIN
    -- '' clears a recipient (no alerts, no heartbeat); NULL keeps every setting
    UPDATE loyalty.health_settings x
       SET ops_recipient = CASE WHEN configure_health.ops_recipient IS NULL THEN x.ops_recipient
                                ELSE NULLIF(pg_catalog.btrim(configure_health.ops_recipient), '') END,
           ops_channel = coalesce(configure_health.ops_channel, x.ops_channel),
           alert_after = coalesce(configure_health.alert_after, x.alert_after),
           remind_every = coalesce(configure_health.remind_every, x.remind_every),
           heartbeat_recipient = CASE WHEN configure_health.heartbeat_recipient IS NULL THEN x.heartbeat_recipient
                                      ELSE NULLIF(pg_catalog.btrim(configure_health.heartbeat_recipient), '') END,
           heartbeat_channel = coalesce(configure_health.heartbeat_channel, x.heartbeat_channel),
           heartbeat_every = coalesce(configure_health.heartbeat_every, x.heartbeat_every),
           backlog_warning = coalesce(configure_health.backlog_warning, x.backlog_warning),
           backlog_critical = coalesce(configure_health.backlog_critical, x.backlog_critical),
           job_grace = coalesce(configure_health.job_grace, x.job_grace),
           outbox_wait_warning = coalesce(configure_health.outbox_wait_warning, x.outbox_wait_warning),
           outbox_wait_critical = coalesce(configure_health.outbox_wait_critical, x.outbox_wait_critical),
           dead_rate_warning = coalesce(configure_health.dead_rate_warning, x.dead_rate_warning),
           dead_rate_critical = coalesce(configure_health.dead_rate_critical, x.dead_rate_critical),
           silent_factor = coalesce(configure_health.silent_factor, x.silent_factor),
           silent_min = coalesce(configure_health.silent_min, x.silent_min),
           fit_max_age = coalesce(configure_health.fit_max_age, x.fit_max_age),
           rejected_warning = coalesce(configure_health.rejected_warning, x.rejected_warning),
           rejected_critical = coalesce(configure_health.rejected_critical, x.rejected_critical),
           growth_warning = coalesce(configure_health.growth_warning, x.growth_warning),
           retain_sent = coalesce(configure_health.retain_sent, x.retain_sent),
           retain_history = coalesce(configure_health.retain_history, x.retain_history),
           retain_rejected = coalesce(configure_health.retain_rejected, x.retain_rejected),
           retain_cron_runs = coalesce(configure_health.retain_cron_runs, x.retain_cron_runs),
           owner_recipient = CASE WHEN configure_health.owner_recipient IS NULL THEN x.owner_recipient
                                  ELSE NULLIF(pg_catalog.btrim(configure_health.owner_recipient), '') END,
           owner_channel = coalesce(configure_health.owner_channel, x.owner_channel),
           digest_hour = coalesce(configure_health.digest_hour, x.digest_hour),
           validation_factor = coalesce(configure_health.validation_factor, x.validation_factor),
           validation_min_history = coalesce(configure_health.validation_min_history, x.validation_min_history),
           unreachable_warning = coalesce(configure_health.unreachable_warning, x.unreachable_warning),
           future_order_tolerance = coalesce(configure_health.future_order_tolerance, x.future_order_tolerance),
           amount_factor = coalesce(configure_health.amount_factor, x.amount_factor),
           issue_overdue = coalesce(configure_health.issue_overdue, x.issue_overdue),
           overdue_warning = coalesce(configure_health.overdue_warning, x.overdue_warning),
           overdue_critical = coalesce(configure_health.overdue_critical, x.overdue_critical),
           on_time_drop = coalesce(configure_health.on_time_drop, x.on_time_drop),
           on_time_min = coalesce(configure_health.on_time_min, x.on_time_min),
           updated_at = pg_catalog.now()
    RETURNING * INTO st;
    RETURN st;
EXCEPTION WHEN check_violation THEN
    RAISE EXCEPTION 'invalid health setting: %', SQLERRM
          USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Warning thresholds must not exceed critical ones, rates lie in (0, 1], retain_sent is at least 90 days; see docs/watchdog.md.';
END
$$;
COMMENT ON FUNCTION loyalty.configure_health(text, text, interval, interval, text, text, interval, interval, interval, interval, interval, interval, numeric, numeric, numeric, interval, interval, integer, integer, bigint, interval, interval, interval, interval, text, text, integer, numeric, integer, numeric, interval, numeric, interval, integer, integer, numeric, integer) IS
'Change where alerts and the weekly digest go, the health checks'' thresholds and retention (NULL keeps a setting, '''' clears a recipient); returns the settings in force';

-- Purge loyalty's own history past the retention settings: finished outbox
-- messages (never pending ones; retain_sent is at least 90 days, longer than
-- any cooldown or report window a shop sets in practice), health history,
-- rejected rows resolved long ago, and the cron.job_run_details rows of
-- loyalty's jobs (in pg_cron's database, through dblink when that is another
-- one; cron_runs is NULL when it cannot be reached). Applied events leave
-- loyalty.events as they are applied: there is nothing to purge there.
CREATE FUNCTION loyalty.purge_history(OUT outbox bigint, OUT health_history bigint, OUT rejected_rows bigint, OUT cron_runs bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.health_settings;
BEGIN
    SELECT * INTO s FROM loyalty.health_settings;
    DELETE FROM loyalty.outbox o
     WHERE o.status <> 'pending'
       AND o.created_at < pg_catalog.now() - s.retain_sent
       AND coalesce(o.sent_at, o.due_at) < pg_catalog.now() - s.retain_sent;
    GET DIAGNOSTICS outbox = ROW_COUNT;
    DELETE FROM loyalty.health_history h
     WHERE h.changed_at < pg_catalog.now() - s.retain_history;
    GET DIAGNOSTICS health_history = ROW_COUNT;
    DELETE FROM loyalty.rejected_rows r
     WHERE r.resolved_at < pg_catalog.now() - s.retain_rejected;
    GET DIAGNOSTICS rejected_rows = ROW_COUNT;
    cron_runs := 0;
    IF loyalty._cron_database_name() = pg_catalog.current_database()
       AND pg_catalog.to_regclass('cron.job_run_details') IS NOT NULL THEN
        DELETE FROM cron.job_run_details d
         USING cron.job j
         WHERE j.jobid = d.jobid AND j.jobname LIKE 'loyalty-%'
           AND d.end_time < pg_catalog.now() - s.retain_cron_runs;
        GET DIAGNOSTICS cron_runs = ROW_COUNT;
    ELSIF loyalty._cron_database_name() <> pg_catalog.current_database() THEN
        -- pg_cron in another database: this database's loyalty jobs there,
        -- through the dblink connection schedule() uses (a fixed statement;
        -- only the retention, an interval, is put in). Without dblink, or
        -- when the connection is refused, the rest is purged all the same.
        BEGIN
            cron_runs := loyalty._cron_query(pg_catalog.format(
                'WITH d AS (DELETE FROM cron.job_run_details d USING cron.job j'
                '            WHERE j.jobid = d.jobid AND j.jobname LIKE ''loyalty-%%'' AND j.database = %L'
                '              AND d.end_time < now() - %L::interval RETURNING 1)'
                ' SELECT count(*)::text FROM d', pg_catalog.current_database(), s.retain_cron_runs),
                loyalty._cron_database_name())::bigint;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'run details of pg_cron in database % not purged: %', loyalty._cron_database_name(), SQLERRM
                  USING HINT = 'CREATE EXTENSION dblink in this database, and run the loyalty-purge job as a superuser.';
            cron_runs := NULL;
        END;
    END IF;
END
$$;
COMMENT ON FUNCTION loyalty.purge_history() IS
'Delete loyalty''s own history past the retention settings of loyalty.configure_health(): finished outbox messages, health history, long-resolved rejected rows, run details of loyalty''s pg_cron jobs; returns the counts';

REVOKE ALL ON TABLE loyalty.health_settings, loyalty.health_state, loyalty.health_history, loyalty.health, loyalty.validation_history FROM PUBLIC;
REVOKE ALL ON FUNCTION loyalty._cron_period(text), loyalty._health_age(interval), loyalty._health_checks(),
                       loyalty._health_message(text, text, text, text, jsonb), loyalty.check_health(),
                       loyalty.configure_health(text, text, interval, interval, text, text, interval, interval, interval, interval, interval, interval, numeric, numeric, numeric, interval, interval, integer, integer, bigint, interval, interval, interval, interval, text, text, integer, numeric, integer, numeric, interval, numeric, interval, integer, integer, numeric, integer),
                       loyalty.purge_history() FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE loyalty.health_settings, loyalty.health_state, loyalty.health_history,
                                             loyalty.health, loyalty.validation_history TO loyalty_admin;
GRANT ALL ON SEQUENCE loyalty.health_history_history_id_seq, loyalty.validation_history_history_id_seq TO loyalty_admin;
GRANT EXECUTE ON FUNCTION loyalty._cron_period(text), loyalty._health_age(interval), loyalty._health_checks(),
                          loyalty._health_message(text, text, text, text, jsonb), loyalty.check_health(),
                          loyalty.configure_health(text, text, interval, interval, text, text, interval, interval, interval, interval, interval, interval, numeric, numeric, numeric, interval, interval, integer, integer, bigint, interval, interval, interval, interval, text, text, integer, numeric, integer, numeric, interval, numeric, interval, integer, integer, numeric, integer),
                          loyalty.purge_history() TO loyalty_admin;
-- monitoring reads the view (Prometheus exporters, check_postgres-style scripts)
GRANT SELECT ON loyalty.health, loyalty.health_history TO loyalty_reader;
GRANT EXECUTE ON FUNCTION loyalty._health_checks() TO loyalty_reader;
SELECT pg_catalog.pg_extension_config_dump('loyalty.health_settings', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.health_history', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.health_history_history_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.validation_history', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.validation_history_history_id_seq', '');
