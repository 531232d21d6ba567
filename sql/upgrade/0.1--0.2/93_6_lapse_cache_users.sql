-- Issue 12: the lapse-day cache (93_5, = 74_lapse_cache.sql): grants, and
-- its users in 71_journeys_due.sql (enqueue_due and _journeys_refitted fill
-- it, _occasions and _journeys_refitted read it).
REVOKE ALL ON FUNCTION loyalty._lapse_searched(text, integer),
    loyalty._lapse_day_cached(text, bigint, text, integer, timestamptz, timestamptz, float8, float8, float8, float8, float8, float8),
    loyalty._lapse_cache_fill(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._lapse_searched(text, integer),
    loyalty._lapse_day_cached(text, bigint, text, integer, timestamptz, timestamptz, float8, float8, float8, float8, float8, float8),
    loyalty._lapse_cache_fill(timestamptz) TO loyalty_admin;
REVOKE ALL ON loyalty.lapse_days FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.lapse_days TO loyalty_admin;

CREATE OR REPLACE FUNCTION loyalty._journeys_refitted()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
SET TimeZone = 'UTC'
AS $$
DECLARE
    f record;
    c record;
BEGIN
    -- as enqueue_due: no run may search with the old fit after this reads its
    -- last as_of and before the new fit commits (held until then)
    PERFORM pg_advisory_xact_lock(74200, 5);
    PERFORM loyalty._lapse_cache_fill(now());   -- the new fit's searched lapse days (74_lapse_cache.sql)
    SELECT * INTO f FROM loyalty.current_model;
    FOR c IN
        SELECT r.last_as_of, cp.valid_for, (cp.params->>'p_alive_below')::float8 AS below,
               make_interval(days => (cp.params->>'max_days_since_last')::integer) AS max_quiet,
               coalesce((cp.params->>'min_days_since_last')::integer, 30) AS min_days,
               loyalty._lapse_from(cp.active_from, cp.activated_at, r.last_as_of) AS lapse_from
          FROM loyalty.campaigns cp JOIN loyalty.journey_runs r ON r.campaign_id = cp.campaign_id
         WHERE cp.active AND cp.kind = 'win_back' AND cp.params ? 'p_alive_below'
    LOOP
        INSERT INTO loyalty.journey_changes (customer_id)
        SELECT s.customer_id
          FROM loyalty.customer_state s
         WHERE s.last_order_at >= c.last_as_of - c.max_quiet AND s.last_order_at <= c.last_as_of
           AND loyalty._win_back_at(loyalty._lapse_day_cached(s.customer_id, f.fit_id, f.model, s.purchase_days,
                                                              s.first_order_at, s.last_order_at, c.below,
                                                              f.r, f.alpha, f.a, f.b, f.shop_gap),
                                    s.last_order_at, c.min_days, c.lapse_from)
               BETWEEN c.last_as_of - c.valid_for AND c.last_as_of;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION loyalty._occasions(p_as_of timestamptz, p_changed text[] DEFAULT NULL)
RETURNS SETOF loyalty.journey_occasion
LANGUAGE plpgsql STABLE
ROWS 1000
SET search_path = pg_catalog, pg_temp
-- the customer filter is either absent (NULL) or a short list: plan each query for the one it gets
SET plan_cache_mode = force_custom_plan
-- days are 24 hours here whatever the caller's zone: two runs in sessions
-- with different zones search the same ranges (local times are explicit)
SET TimeZone = 'UTC'
AS $$
DECLARE
    c record;
    lo timestamptz;
    d interval;
    f record;
    gap float8;
    mds integer[];
    incr boolean;
    lo_new timestamptz;
    pass integer;
    r_lo timestamptz;   -- the range a pass searches, and the customers it looks at (NULL: all)
    r_hi timestamptz;
    among text[];
    lapse_from timestamptz;
    below float8;       -- win_back: p_alive_below and segments, if given
    min_days integer;
    segs text[];
BEGIN
    SELECT * INTO f FROM loyalty.current_model;
    gap := f.shop_gap;
    FOR c IN
        SELECT cp.*, coalesce(cp.active_from, cp.activated_at) AS start, r.last_as_of, r.campaign_updated_at
          FROM loyalty.campaigns cp LEFT JOIN loyalty.journey_runs r ON r.campaign_id = cp.campaign_id
         WHERE cp.active AND coalesce(cp.active_from, cp.activated_at) <= p_as_of
           AND (cp.active_until IS NULL OR cp.active_until > p_as_of - cp.valid_for)
         ORDER BY cp.campaign_id
    LOOP
        -- expiry range starts at the last run (first run: nothing to expire)
        lo := greatest(c.start, least(p_as_of - c.valid_for, coalesce(c.last_as_of, p_as_of - c.valid_for)));
        lapse_from := loyalty._lapse_from(c.active_from, c.activated_at, p_as_of);
        incr := p_changed IS NOT NULL AND c.last_as_of IS NOT NULL
                AND c.campaign_updated_at IS NOT DISTINCT FROM c.updated_at
                AND (c.kind IN ('welcome', 'repurchase_reminder', 'milestone')
                     OR (c.kind = 'post_purchase' AND NOT (c.params->>'after_delivery')::boolean)
                     -- lapse days move with the fits (logged by _journeys_refitted); a
                     -- shop gap computed from the customers before any fit moves unlogged
                     OR (c.kind = 'win_back' AND NOT c.params ? 'segments' AND f.heuristic_fit_id IS NOT NULL));
        lo_new := CASE WHEN incr THEN greatest(lo, c.last_as_of) ELSE lo END;
        FOR pass IN 1..2 LOOP
            IF pass = 1 THEN
                r_lo := lo_new;
                r_hi := p_as_of;
                among := NULL;
                -- reorder reminders and lapses fall on UTC midnights (a lapse also at
                -- a purchase: a changed customer): with no midnight and no campaign
                -- start since the last run, only changed customers can have a new one
                IF incr AND c.kind IN ('repurchase_reminder', 'win_back') AND lapse_from <= c.last_as_of
                   AND (c.last_as_of AT TIME ZONE 'UTC')::date = (p_as_of AT TIME ZONE 'UTC')::date THEN
                    -- and those whose last order is later than the last run's
                    -- as_of: a run may have taken their log entry while the
                    -- order still lay after its own as_of
                    among := p_changed || ARRAY(SELECT s.customer_id FROM loyalty.customer_state s
                                                 WHERE s.last_order_at > c.last_as_of);
                END IF;
            ELSE
                EXIT WHEN NOT incr OR lo >= lo_new;
                r_lo := lo;
                r_hi := lo_new - interval '1 microsecond';
                among := p_changed;
            END IF;
            CONTINUE WHEN cardinality(among) = 0;
            CASE c.kind
            WHEN 'welcome' THEN
                d := make_interval(secs => (c.params->>'delay_hours')::float8 * 3600);
                RETURN QUERY
                SELECT c.campaign_id, s.customer_id, 'first', s.first_order_at + d,
                       jsonb_build_object('order_ref', o.order_ref, 'amount', o.amount - o.refunded, 'ordered_at', o.ordered_at)
                  FROM loyalty.customer_state s
                  LEFT JOIN LATERAL (SELECT o.order_ref, o.amount, o.refunded, o.ordered_at FROM loyalty.orders o
                                      WHERE o.customer_id = s.customer_id AND o.counts ORDER BY o.ordered_at, o.order_id LIMIT 1) o ON true
                 WHERE s.first_order_at >= r_lo - d AND s.first_order_at <= r_hi - d
                   AND (among IS NULL OR s.customer_id = ANY (among));
            WHEN 'post_purchase' THEN
                d := make_interval(days => (c.params->>'days')::integer);
                IF (c.params->>'after_delivery')::boolean THEN
                    -- days after delivery; an order not delivered yet waits
                    RETURN QUERY
                    SELECT c.campaign_id, o.customer_id, 'order:' || o.order_ref, dl.delivered_at + d,
                           jsonb_build_object('order_ref', o.order_ref, 'amount', o.amount - o.refunded, 'ordered_at', o.ordered_at,
                                              'delivered_at', dl.delivered_at)
                      FROM loyalty.deliveries dl
                      JOIN loyalty.orders o ON o.order_ref = dl.order_ref AND o.counts
                     WHERE dl.delivered_at >= r_lo - d AND dl.delivered_at <= r_hi - d;
                    EXIT;
                END IF;
                RETURN QUERY
                SELECT c.campaign_id, o.customer_id, 'order:' || o.order_ref, o.ordered_at + d,
                       jsonb_build_object('order_ref', o.order_ref, 'amount', o.amount - o.refunded, 'ordered_at', o.ordered_at)
                  FROM loyalty.orders o
                 WHERE o.ordered_at >= r_lo - d AND o.ordered_at <= r_hi - d AND o.counts
                   AND (among IS NULL OR o.customer_id = ANY (among));
            WHEN 'repurchase_reminder' THEN
                -- the customer's own typical gap between purchase days, times
                -- factor, after the last order: due from the next UTC midnight on
                RETURN QUERY
                SELECT c.campaign_id, x.customer_id, 'after:' || to_char(x.last_order_at AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS'),
                       x.due, jsonb_build_object('last_order_at', x.last_order_at, 'orders', x.orders,
                                                 'typical_days', round((date_part('epoch', x.last_order_at - x.first_order_at)
                                                                        / (x.purchase_days - 1) / 86400)::numeric, 1))
                  FROM (SELECT s.customer_id, s.first_order_at, s.last_order_at, s.purchase_days, s.orders,
                               loyalty._reorder_at(s.purchase_days, s.first_order_at, s.last_order_at,
                                                   (c.params->>'factor')::float8) AS due
                          FROM loyalty.customer_state s
                         WHERE s.purchase_days >= (c.params->>'min_orders')::integer
                           AND (among IS NULL OR s.customer_id = ANY (among))) x
                 WHERE x.due >= r_lo AND x.due <= r_hi;
            WHEN 'win_back' THEN
                below := (c.params->>'p_alive_below')::float8;
                min_days := coalesce((c.params->>'min_days_since_last')::integer, 30);
                segs := ARRAY(SELECT jsonb_array_elements_text(c.params->'segments'));
                IF cardinality(segs) = 0 THEN
                    segs := NULL;
                END IF;
                -- One occasion per lapse (keyed by the last purchase day), dated
                -- when it began: the day P(alive) under the shop's model fell
                -- below p_alive_below (_lapse_day), or the last change of the
                -- customer's RFM scores when the segment is one of segments; never
                -- before min_days_since_last days after the last order, nor before
                -- lapse_from (_win_back_at). The detail shows what decided, at
                -- the decision time p_as_of.
                RETURN QUERY
                SELECT c.campaign_id, x.customer_id, 'lapse:' || to_char(x.last_order_at AT TIME ZONE 'UTC', 'YYYYMMDD'),
                       x.at, jsonb_build_object('last_order_at', x.last_order_at, 'lapsed_at', x.lapsed_at, 'segment', x.segment,
                                                'p_alive', round(x.p_alive::numeric, 4),
                                                'model', loyalty._p_alive_model(f.model, x.purchase_days - 1),
                                                'p_alive_below', below,
                                                'days_since_last_order', loyalty._utc_days(x.last_order_at, p_as_of),
                                                'min_days_since_last', min_days,
                                                'decided_by', CASE WHEN x.p_alive < below THEN 'p_alive_below' ELSE 'segments' END)
                  FROM (SELECT s.customer_id, s.purchase_days, s.first_order_at, s.last_order_at, rf.segment,
                               l.lapsed_at, loyalty._win_back_at(l.lapsed_at, s.last_order_at, min_days, lapse_from) AS at,
                               loyalty._p_alive(f.model, s.purchase_days, s.first_order_at, s.last_order_at, p_as_of,
                                                f.r, f.alpha, f.a, f.b, gap) AS p_alive
                          FROM loyalty.customer_state s
                          -- read only for a campaign with segments
                          LEFT JOIN LATERAL (SELECT rf.segment, rf.scored_at FROM loyalty.customer_rfm rf
                                              WHERE rf.customer_id = s.customer_id AND segs IS NOT NULL LIMIT 1) rf ON true
                         CROSS JOIN LATERAL (
                               -- either reason: least() of the two, a missing one ignored
                               SELECT least(CASE WHEN below IS NOT NULL
                                                 THEN loyalty._lapse_day_cached(s.customer_id, f.fit_id, f.model, s.purchase_days,
                                                                                s.first_order_at, s.last_order_at,
                                                                                below, f.r, f.alpha, f.a, f.b, gap) END,
                                            CASE WHEN rf.segment = ANY (segs) THEN rf.scored_at END) AS lapsed_at) l
                         WHERE s.last_order_at >= p_as_of - make_interval(days => (c.params->>'max_days_since_last')::integer)
                           AND s.last_order_at <= p_as_of - make_interval(days => min_days)
                           AND (among IS NULL OR s.customer_id = ANY (among))) x
                 WHERE x.at >= r_lo AND x.at <= r_hi;
            WHEN 'birthday' THEN
                -- local midnight, days_before the birthday, in the customer's zone;
                -- 29 February is celebrated on 28 February in other years
                d := make_interval(days => (c.params->>'days_before')::integer);
                SELECT array_agg(DISTINCT date_part('month', g)::integer * 100 + date_part('day', g)::integer) INTO mds
                  FROM generate_series((lo AT TIME ZONE 'UTC')::date - 1 + d,
                                       least((p_as_of AT TIME ZONE 'UTC')::date + 1, (lo AT TIME ZONE 'UTC')::date + 400) + d,
                                       interval '1 day') g;
                IF 228 = ANY (mds) THEN
                    mds := mds || 229;
                END IF;
                RETURN QUERY
                SELECT c.campaign_id, p.customer_id, 'birthday:' || y.y, (bd.day - d)::timestamp AT TIME ZONE z.zone,
                       jsonb_build_object('birthday', p.birthday, 'celebrated_on', bd.day)
                  FROM loyalty.profiles p
                 CROSS JOIN LATERAL (SELECT coalesce(p.time_zone, (SELECT js.default_time_zone FROM loyalty.journey_settings js)) AS zone) z
                 CROSS JOIN LATERAL generate_series(date_part('year', lo AT TIME ZONE 'UTC')::integer - 1,
                                                    date_part('year', p_as_of AT TIME ZONE 'UTC')::integer + 1) y(y)
                 CROSS JOIN LATERAL (SELECT CASE WHEN p.birthday_md = 229 AND NOT (y.y % 4 = 0 AND (y.y % 100 <> 0 OR y.y % 400 = 0))
                                                 THEN make_date(y.y, 2, 28)
                                                 ELSE make_date(y.y, p.birthday_md / 100, p.birthday_md % 100) END AS day) bd
                 WHERE p.birthday_md = ANY (mds)
                   AND (bd.day - d)::timestamp AT TIME ZONE z.zone >= lo
                   AND (bd.day - d)::timestamp AT TIME ZONE z.zone <= p_as_of;
            WHEN 'points_expiring' THEN
                -- per customer and expiry day (UTC), the points still left then
                d := make_interval(days => (c.params->>'days_before')::integer);
                RETURN QUERY
                SELECT c.campaign_id, l.customer_id, 'expiring:' || to_char(l.day, 'YYYYMMDD'), min(l.expires_at) - d,
                       jsonb_build_object('expiring_points', sum(l.remaining), 'expires_at', min(l.expires_at))
                  FROM (SELECT pl.customer_id, pl.remaining, pl.expires_at, (pl.expires_at AT TIME ZONE 'UTC')::date AS day
                          FROM loyalty.point_lots pl
                         WHERE pl.expires_at >= date_trunc('day', lo + d, 'UTC')
                           AND pl.expires_at < date_trunc('day', p_as_of + d, 'UTC') + interval '1 day') l
                 GROUP BY l.customer_id, l.day
                HAVING sum(l.remaining) >= (c.params->>'min_points')::bigint
                   AND min(l.expires_at) - d >= lo AND min(l.expires_at) - d <= p_as_of;
            WHEN 'tier_changed' THEN
                RETURN QUERY
                SELECT c.campaign_id, h.customer_id, 'tier:' || h.change_id, h.changed_at,
                       jsonb_build_object('from_tier', h.from_tier, 'to_tier', h.to_tier, 'change', h.reason)
                  FROM loyalty.tier_history h
                 WHERE h.changed_at >= lo AND h.changed_at <= p_as_of
                   AND CASE c.params->>'direction'
                           WHEN 'up' THEN h.reason = 'upgrade' AND h.to_tier IS NOT NULL
                           WHEN 'down' THEN h.reason = 'downgrade'
                           -- a first assignment is no change to celebrate or regret
                           ELSE h.reason <> 'assigned' END;
            WHEN 'milestone' THEN
                IF c.params ? 'orders' THEN
                    RETURN QUERY
                    SELECT c.campaign_id, o.customer_id, 'orders:' || (c.params->>'orders'), o.ordered_at,
                           jsonb_build_object('order_ref', o.order_ref, 'amount', o.amount - o.refunded, 'ordered_at', o.ordered_at,
                                              'orders', (c.params->>'orders')::integer)
                      FROM loyalty.orders o
                      JOIN loyalty.customer_state s ON s.customer_id = o.customer_id
                     WHERE o.ordered_at >= r_lo AND o.ordered_at <= r_hi AND o.counts
                       AND (among IS NULL OR o.customer_id = ANY (among))
                       AND s.orders >= (c.params->>'orders')::integer
                       AND (SELECT count(*) FROM loyalty.orders o2
                             WHERE o2.customer_id = o.customer_id AND o2.counts
                               AND (o2.ordered_at, o2.order_id) <= (o.ordered_at, o.order_id)) = (c.params->>'orders')::integer;
                ELSE
                    RETURN QUERY
                    SELECT c.campaign_id, o.customer_id, 'spend:' || (c.params->>'spend'), o.ordered_at,
                           jsonb_build_object('order_ref', o.order_ref, 'amount', o.amount - o.refunded, 'ordered_at', o.ordered_at,
                                              'lifetime_spend', cum.total)
                      FROM loyalty.orders o
                      JOIN loyalty.customer_state s ON s.customer_id = o.customer_id
                     CROSS JOIN LATERAL (SELECT sum(o2.amount - o2.refunded) AS total FROM loyalty.orders o2
                                          WHERE o2.customer_id = o.customer_id AND o2.counts
                                            AND (o2.ordered_at, o2.order_id) <= (o.ordered_at, o.order_id)) cum
                     WHERE o.ordered_at >= r_lo AND o.ordered_at <= r_hi AND o.counts
                       AND (among IS NULL OR o.customer_id = ANY (among))
                       AND s.net_spend >= (c.params->>'spend')::numeric
                       AND cum.total >= (c.params->>'spend')::numeric
                       AND cum.total - (o.amount - o.refunded) < (c.params->>'spend')::numeric;
                END IF;
            WHEN 'custom' THEN
                -- The condition holds now; one occasion per period. Most customers
                -- it holds for were decided by an earlier run of the period: one
                -- pass over the campaign's outbox keys written since the period
                -- began (an index-only scan, hashed) leaves them out, where a
                -- probe per customer costs several times more. (The exact check
                -- against the whole outbox follows in _due_messages.)
                d := CASE c.params->>'occasion' WHEN 'daily' THEN interval '1 day' WHEN 'weekly' THEN interval '7 days'
                                                WHEN 'monthly' THEN interval '31 days' ELSE interval '100 years' END;
                -- The condition is never executed here: _condition_customers
                -- (src/condition.c) checks it against the allowlist and runs it
                -- as loyalty_condition in a subtransaction of its own; a
                -- condition that fails yields nobody and is logged by enqueue_due.
                RETURN QUERY
                SELECT c.campaign_id, m.customer_id, k.occasion, p_as_of, jsonb_build_object('condition', c.condition)
                  FROM (SELECT CASE c.params->>'occasion'
                                   WHEN 'once' THEN 'once'
                                   WHEN 'daily' THEN 'day:' || to_char(p_as_of AT TIME ZONE 'UTC', 'YYYY-MM-DD')
                                   WHEN 'weekly' THEN 'week:' || to_char(p_as_of AT TIME ZONE 'UTC', 'IYYY-"W"IW')
                                   ELSE 'month:' || to_char(p_as_of AT TIME ZONE 'UTC', 'YYYY-MM') END AS occasion) k
                 CROSS JOIN loyalty._condition_customers(c.campaign_id, c.condition, p_as_of) m(customer_id)
                 WHERE loyalty._dedupe_key(c.campaign_id, m.customer_id, k.occasion) NOT IN
                       (SELECT ob.dedupe_key FROM loyalty.outbox ob
                         WHERE ob.campaign_id = c.campaign_id AND ob.created_at >= pg_catalog.now() - d);
            WHEN 'order_delayed', 'parcel_stalled', 'delivery_failed', 'refund_delayed' THEN
                -- service notices (issue 14, 79_notices.sql): one per order issue
                -- of the kind, due when it opened, while it is still open at
                -- p_as_of; the order's latest promise when it was revised
                -- (revision > 1) is the new expected date
                RETURN QUERY
                SELECT c.campaign_id, i.customer_id, 'issue:' || i.issue_id, i.opened_at,
                       jsonb_build_object('order_ref', i.order_ref, 'issue_id', i.issue_id, 'issue', i.kind,
                                          'opened_at', i.opened_at, 'message', c.params->>'message',
                                          'expected_at', pr.promised_at, 'expected_on', pr.promised_on,
                                          'event', i.detail->>'event')
                  FROM loyalty.order_issues i
                  LEFT JOIN LATERAL (SELECT p.promised_at, p.promised_on FROM loyalty.order_promises p
                                      WHERE p.order_ref = i.order_ref AND p.revision > 1
                                      ORDER BY p.revision DESC LIMIT 1) pr ON true
                 WHERE i.opened_at >= lo AND i.opened_at <= p_as_of
                   AND (i.resolved_at IS NULL OR i.resolved_at > p_as_of)
                   AND i.kind = ANY (CASE c.kind WHEN 'order_delayed' THEN ARRAY['late_dispatch', 'late_delivery']
                                                 WHEN 'parcel_stalled' THEN ARRAY['stalled_parcel']
                                                 WHEN 'delivery_failed' THEN ARRAY['delivery_failed']
                                                 ELSE ARRAY['slow_refund'] END);
                -- the second notice: remind_after_hours after the issue opened, if still open
                d := make_interval(hours => (c.params->>'remind_after_hours')::integer);
                IF d > '0' THEN
                    RETURN QUERY
                    SELECT c.campaign_id, i.customer_id, 'issue:' || i.issue_id || ':again', i.opened_at + d,
                           jsonb_build_object('order_ref', i.order_ref, 'issue_id', i.issue_id, 'issue', i.kind,
                                              'opened_at', i.opened_at, 'message', c.params->>'message',
                                              'expected_at', pr.promised_at, 'expected_on', pr.promised_on,
                                              'event', i.detail->>'event', 'second_notice', true)
                      FROM loyalty.order_issues i
                      LEFT JOIN LATERAL (SELECT p.promised_at, p.promised_on FROM loyalty.order_promises p
                                          WHERE p.order_ref = i.order_ref AND p.revision > 1
                                          ORDER BY p.revision DESC LIMIT 1) pr ON true
                     WHERE i.opened_at >= lo - d AND i.opened_at <= p_as_of - d
                       AND (i.resolved_at IS NULL OR i.resolved_at > p_as_of)
                       AND i.kind = ANY (CASE c.kind WHEN 'order_delayed' THEN ARRAY['late_dispatch', 'late_delivery']
                                                     WHEN 'parcel_stalled' THEN ARRAY['stalled_parcel']
                                                     WHEN 'delivery_failed' THEN ARRAY['delivery_failed']
                                                     ELSE ARRAY['slow_refund'] END);
                END IF;
            WHEN 'delivered_check_in' THEN
                -- service notice (issue 14): hours_after the delivery of an
                -- order that had a dispatch, transit or delivery issue first
                d := make_interval(hours => (c.params->>'hours_after')::integer);
                RETURN QUERY
                SELECT c.campaign_id, x.customer_id, 'delivered:' || l.order_ref, l.delivered_at + d,
                       jsonb_build_object('order_ref', l.order_ref, 'delivered_at', l.delivered_at, 'issues', x.kinds,
                                          'message', c.params->>'message')
                  FROM loyalty.order_lifecycle l
                 CROSS JOIN LATERAL (SELECT min(i.customer_id) AS customer_id, array_agg(i.kind ORDER BY i.opened_at, i.kind) AS kinds
                                       FROM loyalty.order_issues i
                                      WHERE i.order_ref = l.order_ref AND i.opened_at <= l.delivered_at
                                        AND i.kind IN ('late_dispatch', 'late_delivery', 'stalled_parcel', 'delivery_failed')) x
                 WHERE l.delivered_at >= lo - d AND l.delivered_at <= p_as_of - d AND x.customer_id IS NOT NULL;
            ELSE
                NULL;   -- the check trigger admits no other kind
            END CASE;
            EXIT WHEN NOT incr;
        END LOOP;
    END LOOP;
END
$$;

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
    PERFORM loyalty._lapse_cache_fill(enqueue_due.as_of);  -- searched lapse days, cached (74_lapse_cache.sql)
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
