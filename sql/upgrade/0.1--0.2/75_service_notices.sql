-- 0.1 -> 0.2: service notices (issue 14, docs/operations.md "Telling
-- customers and holding marketing"): the campaign kinds order_delayed,
-- parcel_stalled, delivery_failed and refund_delayed (purpose service), and
-- the staff's copy of the issues a customer cannot fix. Needs
-- 75_ops_hold.sql (campaigns.purpose; its _due_messages and enqueue_due are
-- the final ones and call what this defines). _campaign_params and
-- _occasions were last redefined in 40_decisions.sql. Bodies as in
-- sql/install/70_journeys.sql, 71_journeys_due.sql, 79_notices.sql.

COMMENT ON COLUMN loyalty.campaigns.kind IS 'welcome, post_purchase, repurchase_reminder, win_back, birthday, points_expiring, tier_changed, milestone, custom; service notices (one per order issue): order_delayed, parcel_stalled, delivery_failed, refund_delayed; delivered_check_in (one per delivered order that had an issue)';

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
        WHEN 'win_back' THEN '{"max_days_since_last": 365, "min_days_since_last": 30}'
        WHEN 'birthday' THEN '{"days_before": 0}'
        WHEN 'points_expiring' THEN '{"days_before": 14, "min_points": 1}'
        WHEN 'tier_changed' THEN '{"direction": "up"}'
        WHEN 'milestone' THEN '{}'
        WHEN 'custom' THEN '{"occasion": "once"}'
        -- service notices (issue 14, docs/operations.md): one per order issue
        WHEN 'order_delayed' THEN '{"message": "Your order is running late. We are on it and will keep you posted.", "remind_after_hours": 0}'
        WHEN 'parcel_stalled' THEN '{"message": "Your parcel has not moved for a while. We have asked the carrier to trace it.", "remind_after_hours": 0}'
        WHEN 'delivery_failed' THEN '{"message": "Your parcel could not be delivered. We are sorting it out with the carrier.", "remind_after_hours": 0}'
        WHEN 'refund_delayed' THEN '{"message": "Your refund is taking longer than we promised. We are processing it now.", "remind_after_hours": 0}'
        WHEN 'delivered_check_in' THEN '{"message": "Your order has arrived at last. Is everything all right?", "hours_after": 24}'
    END::jsonb;
    IF defaults IS NULL THEN
        RAISE EXCEPTION 'unknown campaign kind %', coalesce(quote_literal(p_kind), 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Kinds: welcome, post_purchase, repurchase_reminder, win_back, birthday, points_expiring, tier_changed, milestone, custom; service notices: order_delayed, parcel_stalled, delivery_failed, refund_delayed, delivered_check_in.';
    END IF;
    IF p_params IS NULL OR jsonb_typeof(p_params) <> 'object' THEN
        RAISE EXCEPTION 'params of a % campaign must be a JSON object', p_kind
              USING ERRCODE = 'invalid_parameter_value', HINT = format('For example %s.', defaults);
    END IF;
    allowed := CASE p_kind WHEN 'win_back' THEN ARRAY['max_days_since_last', 'min_days_since_last', 'p_alive_below', 'segments']
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
        ELSIF p_kind = 'win_back' AND NOT ((p->>'min_days_since_last')::integer BETWEEN 0 AND (p->>'max_days_since_last')::integer) THEN
            msg := 'min_days_since_last must be between 0 and max_days_since_last';
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
        ELSIF p_kind IN ('order_delayed', 'parcel_stalled', 'delivery_failed', 'refund_delayed', 'delivered_check_in')
              AND (jsonb_typeof(p->'message') <> 'string' OR length(btrim(p->>'message')) NOT BETWEEN 1 AND 1000) THEN
            msg := 'message must be a text of 1 to 1000 characters (what the shop does about it)';
        ELSIF p_kind IN ('order_delayed', 'parcel_stalled', 'delivery_failed', 'refund_delayed')
              AND NOT ((p->>'remind_after_hours')::integer BETWEEN 0 AND 2160) THEN
            msg := 'remind_after_hours must be between 0 (no second notice) and 2160';
        ELSIF p_kind = 'delivered_check_in' AND NOT ((p->>'hours_after')::integer BETWEEN 0 AND 720) THEN
            msg := 'hours_after must be between 0 and 720';
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

CREATE OR REPLACE FUNCTION loyalty._campaign_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.kind := lower(btrim(NEW.kind));
    NEW.channel := lower(btrim(NEW.channel));
    NEW.params := loyalty._campaign_params(NEW.kind, NEW.params, NEW.condition);
    -- service notices (issue 14) are service messages whatever was asked:
    -- as marketing they would always be held (their customer has an issue)
    IF NEW.kind IN ('order_delayed', 'parcel_stalled', 'delivery_failed', 'refund_delayed', 'delivered_check_in') THEN
        NEW.purpose := 'service';
    END IF;
    IF loyalty._restoring() THEN
        RETURN NEW;      -- pg_restore: the dumped times stand
    END IF;
    IF NEW.active AND (TG_OP = 'INSERT' OR NOT OLD.active) THEN
        NEW.activated_at := now();
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
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
                                                 THEN loyalty._lapse_day(f.model, s.purchase_days, s.first_order_at, s.last_order_at,
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
                           -- a first assignment is no change to celebrate or regret, nor is
                           -- a tier override starting or ending (its notice or staff say it)
                           ELSE h.reason NOT IN ('assigned', 'override', 'override ended') END;
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
                       || loyalty._issue_recovery(i.order_ref, i.kind)
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
                           || loyalty._issue_recovery(i.order_ref, i.kind)
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

CREATE INDEX order_issues_opened_idx ON loyalty.order_issues (opened_at);
CREATE INDEX order_lifecycle_delivered_idx ON loyalty.order_lifecycle (delivered_at);

CREATE FUNCTION loyalty._ops_staff_alerts(p_as_of timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.health_settings;
    n bigint;
BEGIN
    SELECT * INTO s FROM loyalty.health_settings;
    IF s.ops_recipient IS NULL THEN
        RETURN 0;
    END IF;
    INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, payload, due_at)
    SELECT 'ops:issue:' || i.issue_id, NULL, 'loyalty:ops', s.ops_channel, s.ops_recipient, 'loyalty_ops_issue',
           jsonb_build_object('issue_id', i.issue_id, 'issue', i.kind, 'event', e.status,
                              'carrier_status', e.carrier_status, 'order_ref', i.order_ref,
                              'customer_id', i.customer_id, 'opened_at', i.opened_at, 'event_at', e.at,
                              'why', 'the parcel will not reach the customer: the shop must act (resend or refund)'),
           p_as_of
      FROM loyalty.order_issues i
      -- the first such event of the failed delivery: often a return or a
      -- loss follows a failed attempt, which opened the issue
     CROSS JOIN LATERAL (SELECT e.status, e.carrier_status, e.at FROM loyalty.shipment_events e
                          WHERE e.order_ref = i.order_ref AND e.status IN ('returned_to_sender', 'lost')
                            AND e.at >= i.opened_at AND e.at <= p_as_of
                          ORDER BY e.at, e.event_id LIMIT 1) e
     WHERE i.opened_at > p_as_of - interval '30 days' AND i.opened_at <= p_as_of
       AND (i.resolved_at IS NULL OR i.resolved_at > p_as_of)
       AND i.kind = 'delivery_failed' AND e.at > p_as_of - interval '7 days'
    ON CONFLICT (dedupe_key) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION loyalty._ops_staff_alerts(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._ops_staff_alerts(timestamptz) TO loyalty_admin;
