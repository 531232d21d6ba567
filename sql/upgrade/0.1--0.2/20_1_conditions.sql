-- Custom campaign conditions cannot escalate (issue 11, findings 1 and 8):
-- checked against an allowlist in C (src/condition.c) when saved and before
-- each run, run as the NOLOGIN role loyalty_condition, one campaign per
-- subtransaction, failures in loyalty.campaign_errors. Also creates
-- loyalty_support (staff, contact data; 82_privacy.sql).
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['loyalty_support', 'loyalty_condition']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;
GRANT USAGE ON SCHEMA loyalty TO loyalty_support, loyalty_condition;

-- (loyalty_admin's grants again after loyalty_condition's: a fresh install makes them in that order)
REVOKE ALL ON FUNCTION loyalty._journey_context(timestamptz) FROM loyalty_admin;
REVOKE ALL ON loyalty.customer_state, loyalty.profiles, loyalty.customer_rfm, loyalty.accounts, loyalty.customer_tiers
  FROM loyalty_admin;
GRANT EXECUTE ON FUNCTION loyalty._journey_context(timestamptz) TO loyalty_condition;
GRANT SELECT ON loyalty.customer_state, loyalty.profiles, loyalty.customer_rfm, loyalty.accounts, loyalty.customer_tiers
   TO loyalty_condition;
GRANT EXECUTE ON FUNCTION loyalty._journey_context(timestamptz) TO loyalty_admin;
GRANT SELECT, INSERT, UPDATE, DELETE
   ON loyalty.customer_state, loyalty.profiles, loyalty.customer_rfm, loyalty.accounts, loyalty.customer_tiers
   TO loyalty_admin;
CREATE FUNCTION loyalty._check_condition(condition text)
RETURNS void
LANGUAGE c STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', '_check_condition';
REVOKE ALL ON FUNCTION loyalty._check_condition(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._check_condition(text) TO loyalty_admin;

CREATE OR REPLACE FUNCTION loyalty._campaign_params(p_kind text, p_params jsonb, p_condition text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    defaults jsonb;
    allowed text[];
    p jsonb;
    k text;
    msg text;
    hint text;
BEGIN
    defaults := CASE p_kind
        WHEN 'welcome' THEN '{"delay_hours": 0}'
        WHEN 'post_purchase' THEN '{"days": 7, "after_delivery": false}'
        WHEN 'repurchase_reminder' THEN '{"factor": 1.0, "min_orders": 2}'
        WHEN 'win_back' THEN '{"max_days_since_last": 365}'
        WHEN 'birthday' THEN '{"days_before": 0}'
        WHEN 'points_expiring' THEN '{"days_before": 14, "min_points": 1}'
        WHEN 'tier_changed' THEN '{"direction": "up"}'
        WHEN 'milestone' THEN '{}'
        WHEN 'custom' THEN '{"occasion": "once"}'
    END::jsonb;
    IF defaults IS NULL THEN
        RAISE EXCEPTION 'unknown campaign kind %', coalesce(quote_literal(p_kind), 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Kinds: welcome, post_purchase, repurchase_reminder, win_back, birthday, points_expiring, tier_changed, milestone, custom.';
    END IF;
    IF p_params IS NULL OR jsonb_typeof(p_params) <> 'object' THEN
        RAISE EXCEPTION 'params of a % campaign must be a JSON object', p_kind
              USING ERRCODE = 'invalid_parameter_value', HINT = format('For example %s.', defaults);
    END IF;
    allowed := CASE p_kind WHEN 'win_back' THEN ARRAY['max_days_since_last', 'p_alive_below', 'segments']
                           WHEN 'milestone' THEN ARRAY['orders', 'spend']
                           ELSE ARRAY(SELECT jsonb_object_keys(defaults)) END;
    SELECT k2 INTO k FROM jsonb_object_keys(p_params) k2 WHERE k2 <> ALL (allowed) LIMIT 1;
    IF k IS NOT NULL THEN
        RAISE EXCEPTION 'unknown parameter "%" for a % campaign', k, p_kind
              USING ERRCODE = 'invalid_parameter_value', HINT = format('Parameters of %s: %s.', p_kind, array_to_string(allowed, ', '));
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_each(p_params) e WHERE jsonb_typeof(e.value) = 'null') THEN
        RAISE EXCEPTION 'params of a % campaign must not hold null values', p_kind
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Leave a parameter out to get its default.';
    END IF;
    p := defaults || p_params;
    IF p_kind = 'win_back' AND NOT (p ? 'p_alive_below' OR p ? 'segments') THEN
        p := p || '{"p_alive_below": 0.3}';
    END IF;
    IF p_kind = 'custom' AND (p_condition IS NULL OR btrim(p_condition) = '') THEN
        RAISE EXCEPTION 'a custom campaign needs a condition'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'A boolean SQL expression over loyalty.journey_context, e.g. ''net_spend > 500 AND days_since_last_order > 60''.';
    ELSIF p_kind <> 'custom' AND p_condition IS NOT NULL THEN
        RAISE EXCEPTION 'only custom campaigns have a condition'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Use kind ''custom'', or set condition to NULL.';
    END IF;

    -- every parameter's type and range
    BEGIN
        IF p_kind = 'welcome' AND NOT ((p->>'delay_hours')::numeric BETWEEN 0 AND 720) THEN
            msg := 'delay_hours must be between 0 and 720';
        ELSIF p_kind = 'post_purchase' AND NOT ((p->>'days')::integer BETWEEN 0 AND 365) THEN
            msg := 'days must be between 0 and 365';
        ELSIF p_kind = 'post_purchase' AND jsonb_typeof(p->'after_delivery') <> 'boolean' THEN
            msg := 'after_delivery must be true or false';
        ELSIF p_kind = 'repurchase_reminder' AND NOT ((p->>'factor')::numeric > 0 AND (p->>'factor')::numeric <= 10) THEN
            msg := 'factor must be above 0 and at most 10';
        ELSIF p_kind = 'repurchase_reminder' AND NOT ((p->>'min_orders')::integer BETWEEN 2 AND 1000) THEN
            msg := 'min_orders must be between 2 and 1000';
        ELSIF p_kind = 'win_back' AND NOT ((p->>'max_days_since_last')::integer BETWEEN 1 AND 3650) THEN
            msg := 'max_days_since_last must be between 1 and 3650';
        ELSIF p_kind = 'win_back' AND p ? 'p_alive_below'
              AND NOT ((p->>'p_alive_below')::float8 > 0 AND (p->>'p_alive_below')::float8 < 1) THEN
            msg := 'p_alive_below must be above 0 and below 1';
        ELSIF p_kind = 'win_back' AND p ? 'segments'
              AND (jsonb_typeof(p->'segments') <> 'array' OR jsonb_array_length(p->'segments') = 0
                   OR EXISTS (SELECT 1 FROM jsonb_array_elements(p->'segments') e WHERE jsonb_typeof(e) <> 'string'
                                 OR NOT EXISTS (SELECT 1 FROM loyalty.segment_rules r WHERE r.segment = e #>> '{}'))) THEN
            msg := 'segments must be a non-empty array of segment names from loyalty.segment_rules';
        ELSIF p_kind IN ('birthday') AND NOT ((p->>'days_before')::integer BETWEEN 0 AND 60) THEN
            msg := 'days_before must be between 0 and 60';
        ELSIF p_kind = 'points_expiring' AND NOT ((p->>'days_before')::integer BETWEEN 0 AND 365) THEN
            msg := 'days_before must be between 0 and 365';
        ELSIF p_kind = 'points_expiring' AND NOT ((p->>'min_points')::bigint >= 1) THEN
            msg := 'min_points must be at least 1';
        ELSIF p_kind = 'tier_changed' AND NOT coalesce(p->>'direction' IN ('up', 'down', 'any'), false) THEN
            msg := 'direction must be up, down or any';
        ELSIF p_kind = 'milestone' AND (p ? 'orders') = (p ? 'spend') THEN
            msg := 'give exactly one of orders (the Nth order) and spend (a lifetime net spend threshold)';
        ELSIF p_kind = 'milestone' AND p ? 'orders' AND NOT ((p->>'orders')::integer BETWEEN 1 AND 100000) THEN
            msg := 'orders must be between 1 and 100000';
        ELSIF p_kind = 'milestone' AND p ? 'spend' AND NOT ((p->>'spend')::numeric > 0 AND (p->>'spend')::numeric < 'Infinity') THEN
            msg := 'spend must be a positive amount';
        ELSIF p_kind = 'custom' AND NOT coalesce(p->>'occasion' IN ('once', 'daily', 'weekly', 'monthly'), false) THEN
            msg := 'occasion must be once, daily, weekly or monthly';
        END IF;
    EXCEPTION WHEN data_exception THEN
        msg := 'a parameter has the wrong type: ' || SQLERRM;
    END;
    IF msg IS NOT NULL THEN
        RAISE EXCEPTION 'invalid params for a % campaign: %', p_kind, msg
              USING ERRCODE = 'invalid_parameter_value', HINT = format('Parameters with their defaults: %s.', defaults);
    END IF;

    IF p_kind = 'custom' THEN
        -- the allowlist (never executed here), then planned against the
        -- context as loyalty_condition (nothing is read: LIMIT 0)
        BEGIN
            PERFORM loyalty._check_condition(p_condition);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
            IF coalesce(hint, '') = '' THEN
                SELECT 'Write a boolean SQL expression over the columns of loyalty.journey_context: '
                       || string_agg(a.attname, ', ' ORDER BY a.attnum) || '.' INTO hint
                  FROM pg_attribute a
                 WHERE a.attrelid = 'loyalty.journey_context'::regclass AND a.attnum > 0;
            END IF;
            RAISE EXCEPTION '%', CASE WHEN msg LIKE 'condition % is not allowed: %' THEN msg
                                      ELSE format('condition %s is not valid: %s', quote_literal(p_condition), msg) END
                  USING ERRCODE = 'invalid_parameter_value', HINT = hint;
        END;
    END IF;
    RETURN p;
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
    segs text[];
BEGIN
    SELECT cf.r, cf.alpha, cf.a, cf.b INTO f FROM loyalty.current_fits cf;
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
                     -- lapse days move with the fit (logged) and the heuristic's shop gap (not)
                     OR (c.kind = 'win_back' AND NOT c.params ? 'segments' AND f.r IS NOT NULL));
        lo_new := CASE WHEN incr THEN greatest(lo, c.last_as_of) ELSE lo END;
        IF c.kind = 'win_back' AND f.r IS NULL AND c.params ? 'p_alive_below' THEN
            gap := loyalty._shop_gap();
        END IF;
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
                segs := ARRAY(SELECT jsonb_array_elements_text(c.params->'segments'));
                IF cardinality(segs) = 0 THEN
                    segs := NULL;
                END IF;
                -- One occasion per lapse (keyed by the last purchase day), dated
                -- when it began: the day P(alive) fell below p_alive_below
                -- (_lapse_at), or the last change of the customer's RFM scores when
                -- the segment is one of segments; never before lapse_from.
                RETURN QUERY
                SELECT c.campaign_id, x.customer_id, 'lapse:' || to_char(x.last_order_at AT TIME ZONE 'UTC', 'YYYYMMDD'),
                       x.at, jsonb_build_object('last_order_at', x.last_order_at, 'lapsed_at', x.lapsed_at, 'segment', x.segment,
                                                'p_alive', round(loyalty._p_alive(x.purchase_days, x.first_order_at, x.last_order_at, p_as_of,
                                                                                  f.r, f.alpha, f.a, f.b, gap)::numeric, 4))
                  FROM (SELECT s.customer_id, s.purchase_days, s.first_order_at, s.last_order_at, rf.segment,
                               l.lapsed_at, greatest(l.lapsed_at, lapse_from) AS at
                          FROM loyalty.customer_state s
                          -- read only for a campaign with segments
                          LEFT JOIN LATERAL (SELECT rf.segment, rf.scored_at FROM loyalty.customer_rfm rf
                                              WHERE rf.customer_id = s.customer_id AND segs IS NOT NULL LIMIT 1) rf ON true
                         CROSS JOIN LATERAL (
                               SELECT least(CASE WHEN below IS NOT NULL
                                                 THEN loyalty._lapse_at(s.purchase_days, s.first_order_at, s.last_order_at,
                                                                        below, f.r, f.alpha, f.a, f.b, gap) END,
                                            CASE WHEN rf.segment = ANY (segs) THEN rf.scored_at END) AS lapsed_at) l
                         WHERE s.last_order_at >= p_as_of - make_interval(days => (c.params->>'max_days_since_last')::integer)
                           AND s.last_order_at <= p_as_of
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
                           ELSE true END;
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
           count(i.status) FILTER (WHERE i.status IN ('no_consent', 'no_contact', 'cooldown', 'capped'))
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


-- The customers a campaign's condition holds for as of a time (none, with a
-- WARNING and a record for _condition_errors, when it fails).
CREATE FUNCTION loyalty._condition_customers(campaign_id integer, condition text, as_of timestamptz)
RETURNS SETOF text
LANGUAGE c STABLE STRICT
ROWS 1000
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', '_condition_customers';

-- The conditions that failed in this transaction, one row per campaign; reading forgets them.
CREATE FUNCTION loyalty._condition_errors()
RETURNS TABLE (campaign_id integer, sqlstate text, message text)
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', '_condition_errors';

-- One row per campaign whose condition ever failed: the last failure.
CREATE TABLE loyalty.campaign_errors (
    campaign_id     integer PRIMARY KEY,
    failures        bigint NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_failed_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    as_of           timestamptz NOT NULL,
    sqlstate        text NOT NULL,
    message         text NOT NULL,
    condition       text
);
COMMENT ON TABLE loyalty.campaign_errors IS
'Custom campaigns whose condition failed in a loyalty.enqueue_due() run: the last failure per campaign (the others ran)';
COMMENT ON COLUMN loyalty.campaign_errors.failures IS 'runs in which the condition failed, in all';
COMMENT ON COLUMN loyalty.campaign_errors.sqlstate IS 'the error''s SQLSTATE, e.g. 22012 division by zero';
COMMENT ON COLUMN loyalty.campaign_errors.condition IS 'the condition as it was when it failed';

-- enqueue_due inserts loyalty._condition_errors() rows; this keeps one row per campaign.
CREATE FUNCTION loyalty._campaign_error_upsert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.condition := (SELECT cp.condition FROM loyalty.campaigns cp WHERE cp.campaign_id = NEW.campaign_id);
    UPDATE loyalty.campaign_errors e
       SET failures = e.failures + 1, last_failed_at = now(), as_of = NEW.as_of, sqlstate = NEW.sqlstate,
           message = NEW.message, condition = NEW.condition
     WHERE e.campaign_id = NEW.campaign_id;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER campaign_error_upsert BEFORE INSERT ON loyalty.campaign_errors
    FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_error_upsert();

CREATE VIEW loyalty.failing_campaigns AS
SELECT cp.campaign_id, cp.name AS campaign, cp.active, e.first_failed_at, e.last_failed_at, e.failures,
       e.sqlstate, e.message, cp.condition
  FROM loyalty.campaign_errors e
  JOIN loyalty.campaigns cp ON cp.campaign_id = e.campaign_id
  LEFT JOIN loyalty.journey_runs r ON r.campaign_id = e.campaign_id
 WHERE cp.active AND (r.last_run_at IS NULL OR e.last_failed_at >= r.last_run_at);
COMMENT ON VIEW loyalty.failing_campaigns IS
'Active custom campaigns whose condition failed in the last loyalty.enqueue_due() run (they sent nothing then; the other campaigns ran)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_errors', '');
REVOKE ALL ON FUNCTION loyalty._condition_customers(integer, text, timestamptz), loyalty._condition_errors(),
                       loyalty._campaign_error_upsert() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._condition_customers(integer, text, timestamptz), loyalty._condition_errors(),
                          loyalty._campaign_error_upsert() TO loyalty_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.campaign_errors, loyalty.failing_campaigns TO loyalty_admin;
