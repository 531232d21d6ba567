-- 0.1 -> 0.2: one arbiter (issue 14, docs/operations.md "Telling customers
-- and holding marketing"): campaigns.purpose, journey_settings.ops_hold_after,
-- the ops_hold decision and status, cancelling held customers' pending
-- marketing messages. The functions carry their install bodies
-- (sql/install/71_0_ops_hold.sql, 70_journeys.sql, 71_journeys_due.sql,
-- 72_journeys_report.sql); _due_messages, enqueue_due and
-- campaign_performance were last redefined in 40_decisions.sql.

ALTER TABLE loyalty.campaigns ADD COLUMN purpose text NOT NULL DEFAULT 'marketing' CHECK (purpose IN ('marketing', 'service'));
COMMENT ON COLUMN loyalty.campaigns.purpose IS 'marketing (held while the customer has an order issue: ops_hold) or service';
ALTER TABLE loyalty.journey_settings ADD COLUMN ops_hold_after interval NOT NULL DEFAULT '7 days' CHECK (ops_hold_after >= '0');
COMMENT ON COLUMN loyalty.journey_settings.ops_hold_after IS 'marketing waits this long after a customer''s last order issue is resolved (ops_hold; 0: only while it is open)';

ALTER TABLE loyalty.outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE loyalty.outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('pending', 'sent', 'dead', 'held_out', 'expired', 'cancelled',
                      'no_consent', 'no_contact', 'cooldown', 'capped', 'superseded', 'ops_hold'));
COMMENT ON COLUMN loyalty.outbox.status IS 'pending (also while a sender holds a lease on it), sent, dead (gave up after the allowed attempts), held_out (holdout group, never sent), expired (missed its validity window), cancelled (the customer opted out before it went out); suppressed by the journeys policy, recorded and never sent: no_consent, no_contact, cooldown, capped, superseded, ops_hold (marketing while the customer has an order issue; a pending marketing message is cancelled then, last_error says why)';

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
REVOKE ALL ON FUNCTION loyalty._ops_hold(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION loyalty._ops_hold_cancel(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._ops_hold(text, timestamptz) TO loyalty_admin;
GRANT EXECUTE ON FUNCTION loyalty._ops_hold_cancel(timestamptz) TO loyalty_admin;

DROP FUNCTION loyalty.configure_journeys(integer, interval, time, time, text);
CREATE FUNCTION loyalty.configure_journeys(cap_messages integer DEFAULT NULL, cap_window interval DEFAULT NULL,
                                           quiet_start time DEFAULT NULL, quiet_end time DEFAULT NULL,
                                           default_time_zone text DEFAULT NULL, ops_hold_after interval DEFAULT NULL)
RETURNS loyalty.journey_settings
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st loyalty.journey_settings;
    zone text;
BEGIN
    IF cap_messages IS NOT NULL AND cap_messages < 1 THEN
        RAISE EXCEPTION 'cap_messages must be at least 1, not %', cap_messages
              USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. 2 messages per cap_window; pause campaigns to send none.';
    END IF;
    IF cap_window IS NOT NULL AND (cap_window <= '0' OR NOT isfinite(cap_window)) THEN
        RAISE EXCEPTION 'cap_window must be a positive interval, not %', cap_window
              USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. ''7 days''.';
    END IF;
    IF ops_hold_after IS NOT NULL AND (ops_hold_after < '0' OR NOT isfinite(ops_hold_after)) THEN
        RAISE EXCEPTION 'ops_hold_after must be a finite interval of at least 0, not %', ops_hold_after
              USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. ''7 days''; 0 holds marketing only while an issue is open.';
    END IF;
    IF default_time_zone IS NOT NULL THEN
        zone := loyalty._time_zone(default_time_zone);
        IF zone IS NULL THEN
            RAISE EXCEPTION 'unknown time zone %', quote_literal(default_time_zone)
                  USING ERRCODE = 'invalid_parameter_value', HINT = 'Use an IANA zone name such as ''Europe/Berlin''.';
        END IF;
    END IF;
    UPDATE loyalty.journey_settings s
       SET cap_messages = coalesce(configure_journeys.cap_messages, s.cap_messages),
           cap_window = coalesce(configure_journeys.cap_window, s.cap_window),
           quiet_start = coalesce(configure_journeys.quiet_start, s.quiet_start),
           quiet_end = coalesce(configure_journeys.quiet_end, s.quiet_end),
           default_time_zone = coalesce(zone, s.default_time_zone),
           ops_hold_after = coalesce(configure_journeys.ops_hold_after, s.ops_hold_after),
           updated_at = now()
    RETURNING * INTO st;
    RETURN st;
END
$$;
COMMENT ON FUNCTION loyalty.configure_journeys(integer, interval, time, time, text, interval) IS
'Change the journey policy: frequency cap, quiet hours, default time zone, marketing hold after an order issue (NULL keeps a setting); returns the settings in force';
REVOKE ALL ON FUNCTION loyalty.configure_journeys(integer, interval, time, time, text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty.configure_journeys(integer, interval, time, time, text, interval) TO loyalty_admin;

CREATE OR REPLACE FUNCTION loyalty._due_messages(as_of timestamptz, p_changed text[] DEFAULT NULL)
RETURNS TABLE (campaign_id integer, campaign text, kind text, channel text, customer_id text, occasion text,
               occasion_at timestamptz, dedupe_key text, decision text, reason text, due_at timestamptz,
               expires_at timestamptz, recipient text, template text, priority integer, payload jsonb)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'   -- as in _occasions: ranges and validity in 24-hour days
SET jit = off          -- compiling this plan costs far more than running it
SET work_mem = '256MB' -- one run sorts every candidate: in memory, not on disk
AS $$
WITH st AS (
    SELECT * FROM loyalty.journey_settings LIMIT 1
), f AS (
    SELECT * FROM loyalty.current_model LIMIT 1
), occ AS (
    SELECT o.*, cp.name AS campaign, cp.kind, cp.channel, cp.template, cp.priority, cp.cooldown, cp.holdout_share,
           cp.valid_for, cp.params, cp.condition, cp.purpose,
           loyalty._dedupe_key(o.campaign_id, o.customer_id, o.occasion) AS dedupe_key
      FROM loyalty._occasions(as_of, p_changed) o
      JOIN loyalty.campaigns cp ON cp.campaign_id = o.campaign_id
     WHERE o.occasion_at <= as_of
       AND o.occasion_at >= coalesce(cp.active_from, cp.activated_at)
       AND (cp.active_until IS NULL OR o.occasion_at < cp.active_until)
), fresh AS (
    -- Every lookup per candidate below is a LATERAL subquery with LIMIT 1 or
    -- OFFSET 0, which the planner cannot turn into a join: it probes a unique
    -- index once per candidate. Most runs have few candidates left after the
    -- outbox probe, and a hash join would read whole tables (profiles,
    -- consents, the ever-growing outbox) on every run instead.
    SELECT occ.* FROM occ
     WHERE NOT EXISTS (SELECT 1 FROM loyalty.outbox ob WHERE ob.dedupe_key = occ.dedupe_key)
), checked AS (
    -- each per-row expression once (OFFSET 0 keeps the inner query from being flattened)
    SELECT y.*,
           CASE WHEN y.all_granted = false THEN 'no_consent'
                WHEN y.ch_granted = false THEN 'no_consent'
                -- service (issue 14): no opt-in needed, an opt-out (above) stops it
                WHEN y.purpose = 'marketing' AND coalesce(y.ch_granted, y.all_granted) IS NOT true THEN 'no_consent'
                WHEN y.rcpt IS NULL THEN 'no_contact'
                WHEN y.occasion_at < as_of - y.valid_for THEN 'expired'
                WHEN y.hold IS NOT NULL THEN 'ops_hold'   -- ops_hold (issue 14)
                WHEN y.superseded THEN 'superseded'
                WHEN y.draw < y.holdout_share THEN 'held_out'
           END AS early,
           CASE WHEN y.all_granted = false THEN format('unsubscribed from all channels (%s)', coalesce(y.all_source, 'no source'))
                WHEN y.ch_granted = false THEN format('opted out of %s (%s)', y.channel, coalesce(y.ch_source, 'no source'))
                WHEN y.purpose = 'marketing' AND coalesce(y.ch_granted, y.all_granted) IS NOT true THEN format('no opt-in for %s', y.channel)
                WHEN y.rcpt IS NULL
                     THEN CASE WHEN y.channel = 'email' THEN 'no usable email address' ELSE 'no usable phone number' END
                WHEN y.occasion_at < as_of - y.valid_for
                     THEN format('occasion of %s missed for longer than valid_for (%s)', y.occasion_at, y.valid_for)
                WHEN y.hold IS NOT NULL THEN y.hold
                WHEN y.superseded
                     THEN 'a win-back is due in the same run: "you reached a new tier" would contradict "we miss you"; the win-back goes (its payload carries the tier)'
                WHEN y.draw < y.holdout_share
                     THEN format('holdout group (%s of customers): recorded, not sent', y.holdout_share)
           END AS early_reason
      FROM (SELECT x.*, p.name,
                   coalesce(p.time_zone, st.default_time_zone) AS zone,
                   loyalty._recipient(x.channel, x.customer_id, p.email, p.phone) AS rcpt,
                   loyalty._holdout_draw(x.campaign_id, x.customer_id) AS draw,
                   loyalty._after_quiet_hours(as_of, coalesce(p.time_zone, st.default_time_zone), st.quiet_start, st.quiet_end) AS after_quiet,
                   ga.granted AS all_granted, ga.source AS all_source, gc.granted AS ch_granted, gc.source AS ch_source,
                   -- two messages that contradict each other never go out in one run:
                   -- a tier upgrade gives way to a win-back of the same customer
                   (x.kind = 'tier_changed' AND x.detail->>'change' = 'upgrade'
                    AND EXISTS (SELECT 1 FROM fresh w WHERE w.customer_id = x.customer_id AND w.kind = 'win_back')) AS superseded,
                   -- ops_hold (issue 14): no marketing while the customer has an order issue
                   CASE WHEN x.purpose = 'marketing' THEN loyalty._ops_hold(x.customer_id, as_of) END AS hold
              FROM fresh x
             CROSS JOIN st
              LEFT JOIN LATERAL (SELECT p.name, p.email, p.phone, p.time_zone FROM loyalty.profiles p
                                  WHERE p.customer_id = x.customer_id LIMIT 1) p ON true
              LEFT JOIN LATERAL (SELECT ga.granted, ga.source FROM loyalty.consents ga
                                  WHERE ga.customer_id = x.customer_id AND ga.channel = 'all' LIMIT 1) ga ON true
              LEFT JOIN LATERAL (SELECT gc.granted, gc.source FROM loyalty.consents gc
                                  WHERE gc.customer_id = x.customer_id AND gc.channel = x.channel LIMIT 1) gc ON true
            OFFSET 0) y
), competing AS (
    -- eligible so far: cooldown, then the cap by priority; the outbox rows
    -- that count for both are read per candidate, by customer
    SELECT k.*,
           (k.cooldown > '0' AND (
               coalesce(rc.last_due > as_of - k.cooldown, false)
               OR row_number() OVER (PARTITION BY k.customer_id, k.campaign_id ORDER BY k.occasion_at, k.occasion) > 1)) AS cooling,
           rc.recent
      FROM checked k
     CROSS JOIN st
     CROSS JOIN LATERAL (SELECT count(*) FILTER (WHERE ob.due_at > as_of - st.cap_window
                                                   -- service messages (issue 14) do not count
                                                   AND NOT EXISTS (SELECT 1 FROM loyalty.campaigns oc
                                                                    WHERE oc.campaign_id = ob.campaign_id
                                                                      AND oc.purpose = 'service')) AS recent,
                                max(ob.due_at) FILTER (WHERE ob.campaign_id = k.campaign_id) AS last_due
                           FROM loyalty.outbox ob
                          WHERE ob.customer_id = k.customer_id
                            AND ob.due_at > as_of - greatest(st.cap_window, k.cooldown)
                            AND ob.status IN ('pending', 'sent', 'dead')) rc
     WHERE k.early IS NULL
), ranked AS (
    SELECT k.*, row_number() OVER (PARTITION BY k.customer_id, k.cooling, k.purpose
                                   ORDER BY k.priority, k.occasion_at, k.campaign_id, k.occasion) AS rank
      FROM competing k
), decided AS (
    SELECT k.campaign_id, k.customer_id, k.occasion, k.occasion_at, k.detail, k.campaign, k.kind, k.channel, k.template,
           k.priority, k.valid_for, k.params, k.condition, k.dedupe_key, k.name, k.zone, k.rcpt, k.after_quiet,
           CASE WHEN k.cooling THEN 'cooldown'
                WHEN k.purpose = 'marketing' AND k.recent + k.rank > st.cap_messages THEN 'capped'
                WHEN k.after_quiet > as_of THEN 'quiet_hours'
                ELSE 'send' END AS decision,
           CASE WHEN k.cooling THEN format('cooldown: at most one %s message per %s', k.campaign, k.cooldown)
                WHEN k.purpose = 'marketing' AND k.recent + k.rank > st.cap_messages
                     THEN format('frequency cap: %s messages per %s (%s already, %s of higher priority in this run)',
                                 st.cap_messages, st.cap_window, k.recent, k.rank - 1)
                WHEN k.after_quiet > as_of
                     THEN format('quiet hours (%s-%s in %s): due at %s local', st.quiet_start, st.quiet_end, k.zone,
                                 k.after_quiet AT TIME ZONE k.zone)
                ELSE 'consent, contact, cooldown, cap and quiet hours allow it' END AS reason
      FROM ranked k CROSS JOIN st
    UNION ALL
    SELECT k.campaign_id, k.customer_id, k.occasion, k.occasion_at, k.detail, k.campaign, k.kind, k.channel, k.template,
           k.priority, k.valid_for, k.params, k.condition, k.dedupe_key, k.name, k.zone, k.rcpt, k.after_quiet,
           k.early, k.early_reason
      FROM checked k
     WHERE k.early IS NOT NULL
)
SELECT d.campaign_id, d.campaign, d.kind, d.channel, d.customer_id, d.occasion, d.occasion_at, d.dedupe_key,
       d.decision, d.reason, w.due_at, w.due_at + d.valid_for, d.rcpt, d.template, d.priority,
       CASE WHEN NOT wr.message THEN jsonb_build_object('occasion', d.detail, 'reason', d.reason) ELSE
       jsonb_build_object(
           'customer_id', d.customer_id,
           'name', d.name,
           -- what the customer can spend now, and what is still pending (return window)
           'points', coalesce(pt.available, 0),
           'points_pending', coalesce(pt.pending, 0),
           'tier', ct.tier,
           'occasion', d.detail,
           'why', jsonb_build_object(
               'campaign', d.campaign, 'campaign_id', d.campaign_id, 'kind', d.kind,
               'rule', CASE WHEN d.condition IS NULL THEN d.params ELSE d.params || jsonb_build_object('condition', d.condition) END,
               'occasion', d.occasion, 'occasion_at', d.occasion_at, 'as_of', as_of,
               -- P(alive) at the decision time (as_of) with the model that
               -- decides it for this customer (as loyalty.customer_scores)
               'scores', jsonb_build_object(
                   'r', rf.r_score, 'f', rf.f_score, 'm', rf.m_score, 'segment', rf.segment,
                   'p_alive', round(CASE WHEN cs.customer_id IS NOT NULL THEN
                                    loyalty._p_alive(f.model, cs.purchase_days, cs.first_order_at, cs.last_order_at, as_of,
                                                     f.r, f.alpha, f.a, f.b, f.shop_gap) END::numeric, 4),
                   'model', CASE WHEN cs.customer_id IS NOT NULL THEN loyalty._p_alive_model(f.model, cs.purchase_days - 1) END)))
       END
  FROM decided d
 CROSS JOIN st
 CROSS JOIN f
 -- the decisions that make a message (sent, or recorded as not sent for the
 -- holdout group or as missed): their payload says what a template needs
 CROSS JOIN LATERAL (SELECT d.decision IN ('send', 'quiet_hours', 'held_out', 'expired') AS message) wr
 CROSS JOIN LATERAL (SELECT CASE d.decision
                                WHEN 'expired' THEN d.occasion_at
                                WHEN 'send' THEN as_of
                                WHEN 'capped' THEN NULL
                                WHEN 'cooldown' THEN NULL
                                WHEN 'no_consent' THEN NULL
                                WHEN 'no_contact' THEN NULL
                                WHEN 'superseded' THEN NULL
                                WHEN 'ops_hold' THEN NULL
                                ELSE d.after_quiet END AS due_at) w
  -- the payload's tables are read by key for those only
  LEFT JOIN LATERAL (SELECT coalesce(sum(l.remaining) FILTER (WHERE l.available_at <= as_of), 0)::bigint
                             - coalesce((SELECT a.debt FROM loyalty.accounts a WHERE a.customer_id = d.customer_id), 0) AS available,
                             sum(l.remaining) FILTER (WHERE l.available_at > as_of)::bigint AS pending
                        FROM loyalty.point_lots l
                       WHERE l.customer_id = d.customer_id AND wr.message AND l.remaining > 0
                         AND (l.expires_at IS NULL OR l.expires_at > as_of)) pt ON true
  LEFT JOIN LATERAL (SELECT t.tier FROM loyalty.customer_tiers t
                      WHERE t.customer_id = d.customer_id AND wr.message LIMIT 1) ct ON true
  LEFT JOIN LATERAL (SELECT r.r_score, r.f_score, r.m_score, r.segment FROM loyalty.customer_rfm r
                      WHERE r.customer_id = d.customer_id AND wr.message LIMIT 1) rf ON true
  LEFT JOIN LATERAL (SELECT s.customer_id, s.purchase_days, s.first_order_at, s.last_order_at FROM loyalty.customer_state s
                      WHERE s.customer_id = d.customer_id AND wr.message LIMIT 1) cs ON true
$$;
COMMENT ON VIEW loyalty.due_messages IS
'What loyalty.enqueue_due() would do now: each occasion not yet in the outbox with its decision (send and quiet_hours become pending messages; held_out, expired, no_consent, no_contact, cooldown, capped, superseded and ops_hold are recorded with that status and never sent) and why';
COMMENT ON COLUMN loyalty.due_messages.decision IS 'send, quiet_hours (pending, due at due_at), held_out, expired, capped, cooldown, no_consent, no_contact, superseded (a tier upgrade when a win-back of the customer is due in the same run), ops_hold (marketing while the customer has an order issue)';

CREATE OR REPLACE FUNCTION loyalty.enqueue_due(as_of timestamptz DEFAULT now())
RETURNS TABLE (campaign_id integer, campaign text, pending bigint, delayed bigint, held_out bigint, expired bigint,
               suppressed bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    changed text[];   -- NULL: search every window
BEGIN
    IF as_of IS NULL OR NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Omit it to enqueue what is due now.';
    END IF;
    PERFORM pg_advisory_xact_lock(74200, 5);
    PERFORM loyalty._ops_hold_cancel(enqueue_due.as_of);   -- ops_hold (issue 14)
    PERFORM loyalty._ops_staff_alerts(enqueue_due.as_of);  -- service notices (issue 14)
    -- the customers whose occasions may have changed since the last run (see
    -- loyalty._occasions); a run at an as_of before an earlier run's searches
    -- every window and leaves the log to the next run
    IF NOT EXISTS (SELECT 1 FROM loyalty.journey_runs r JOIN loyalty.campaigns cp ON cp.campaign_id = r.campaign_id
                    WHERE cp.active AND r.last_as_of > enqueue_due.as_of) THEN
        WITH seen AS (DELETE FROM loyalty.journey_changes RETURNING customer_id)
        SELECT coalesce(array_agg(DISTINCT seen.customer_id), '{}') INTO changed FROM seen;
    END IF;
    RETURN QUERY
    WITH ins AS (
        INSERT INTO loyalty.outbox AS ob (dedupe_key, campaign_id, customer_id, channel, recipient, template, payload,
                                          status, due_at, expires_at)
        SELECT d.dedupe_key, d.campaign_id, d.customer_id, d.channel, d.recipient, d.template, d.payload,
               CASE WHEN d.decision IN ('send', 'quiet_hours') THEN 'pending' ELSE d.decision END,
               coalesce(d.due_at, enqueue_due.as_of), d.expires_at
          FROM loyalty._due_messages(enqueue_due.as_of, changed) d
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING ob.campaign_id, ob.status, ob.due_at > enqueue_due.as_of AS later
    ), runs AS (
        INSERT INTO loyalty.journey_runs AS r (campaign_id, last_as_of, last_run_at, campaign_updated_at)
        SELECT cp.campaign_id, enqueue_due.as_of, now(), cp.updated_at FROM loyalty.campaigns cp WHERE cp.active
        ON CONFLICT ON CONSTRAINT journey_runs_pkey DO UPDATE
           SET last_as_of = greatest(r.last_as_of, excluded.last_as_of), last_run_at = excluded.last_run_at,
               -- a run at an earlier as_of searched only its own window: the
               -- campaign version the last as_of was searched with stands
               campaign_updated_at = CASE WHEN excluded.last_as_of >= r.last_as_of THEN excluded.campaign_updated_at
                                          ELSE r.campaign_updated_at END
        RETURNING r.campaign_id
    )
    SELECT cp.campaign_id, cp.name,
           count(i.status) FILTER (WHERE i.status = 'pending'),
           count(i.status) FILTER (WHERE i.status = 'pending' AND i.later),
           count(i.status) FILTER (WHERE i.status = 'held_out'),
           count(i.status) FILTER (WHERE i.status = 'expired'),
           count(i.status) FILTER (WHERE i.status IN ('no_consent', 'no_contact', 'cooldown', 'capped', 'superseded', 'ops_hold'))
      FROM loyalty.campaigns cp
      LEFT JOIN ins i ON i.campaign_id = cp.campaign_id
     WHERE cp.active OR i.campaign_id IS NOT NULL
     GROUP BY cp.campaign_id, cp.name
     ORDER BY cp.campaign_id;
    -- custom conditions that failed in this run (the other campaigns ran)
    INSERT INTO loyalty.campaign_errors (campaign_id, as_of, sqlstate, message)
    SELECT e.campaign_id, enqueue_due.as_of, e.sqlstate, e.message FROM loyalty._condition_errors() e;
END
$$;
COMMENT ON FUNCTION loyalty.enqueue_due(timestamptz) IS
'Write what is due as of as_of into loyalty.outbox (each occasion decided once, ever); returns per active campaign: pending (of which delayed by quiet hours), held_out, expired, suppressed (no consent, no contact, cooldown, capped, superseded, ops_hold)';

CREATE OR REPLACE VIEW loyalty.campaign_performance AS
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
COMMENT ON COLUMN loyalty.campaign_performance.suppressed IS 'occasions the policy decided not to send: no consent, no usable contact, cooldown, frequency cap, superseded by a contradicting message, or held while the customer had an order issue (statuses no_consent, no_contact, cooldown, capped, superseded, ops_hold)';
