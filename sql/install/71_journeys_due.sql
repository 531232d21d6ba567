-- Journeys, part 2: occasions of the active campaigns, the policy applied to
-- each (consent, contact, validity, holdout, cooldown, frequency cap, quiet
-- hours), the loyalty.due_messages view and loyalty.enqueue_due(), which
-- writes the outcome into loyalty.outbox exactly once per occasion.
--
-- An occasion is one reason to message one customer: (campaign, customer,
-- occasion key), e.g. (welcome, 42, 'first') or (post_purchase, 42,
-- 'order:A-1001'). Its dedupe key campaign_id:customer:occasion is the
-- outbox's unique key, so an occasion yields at most one outbox row, ever.
-- Each occasion has a time (occasion_at: when it became due). Occasions are
-- only looked for in index-backed time ranges:
--   [greatest(start, as_of - valid_for), as_of]       -> still valid: policy decides
--   [greatest(start, last run's as_of), as_of - valid_for) -> missed while nothing
--                                                          ran: recorded as expired
-- where start = coalesce(active_from, activated_at): occasions before the
-- campaign was switched on are never messaged.

-- (the occasion ranges use orders_ordered_at_idx, customer_state_first_order_idx
-- and customer_state_last_order_idx, created with their tables)

-- Per campaign, the as_of of the last enqueue_due run (the lower end of the
-- expiry range: occasions before it were seen by that run).
CREATE TABLE loyalty.journey_runs (
    campaign_id         integer PRIMARY KEY,
    last_as_of          timestamptz NOT NULL,
    last_run_at         timestamptz NOT NULL,
    campaign_updated_at timestamptz
);
COMMENT ON TABLE loyalty.journey_runs IS 'Per campaign: as_of and time of the last loyalty.enqueue_due() run, and the campaign''s updated_at it ran with';
SELECT pg_catalog.pg_extension_config_dump('loyalty.journey_runs', '');

-- Customers whose orders changed (loyalty._recompute_customers) or whose
-- win-back lapse moved with a new fit (loyalty._journeys_refitted), since
-- enqueue_due last looked. Insert-only: a writer never waits for a run; a
-- run deletes exactly the rows it saw (rows committed later stay for the next).
CREATE TABLE loyalty.journey_changes (
    customer_id text NOT NULL
);
COMMENT ON TABLE loyalty.journey_changes IS 'Customers whose occasions may have changed since the last loyalty.enqueue_due() run';
SELECT pg_catalog.pg_extension_config_dump('loyalty.journey_changes', '');

CREATE TYPE loyalty.journey_occasion AS (
    campaign_id integer,
    customer_id text,
    occasion    text,
    occasion_at timestamptz,
    detail      jsonb
);

-- campaign:customer:occasion; ':' and '\' in the customer key are escaped, so
-- two different (customer, occasion) pairs never share a key.
-- The small helpers below are SQL-standard bodies (RETURN ...) without a SET
-- clause: names are bound when the extension is created (pg_catalog first),
-- and the planner can inline them into the per-candidate query, where a
-- function call per row would cost more than the whole check.
CREATE FUNCTION loyalty._dedupe_key(p_campaign integer, p_customer text, p_occasion text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_campaign::text || ':' || replace(replace(p_customer, '\', '\\'), ':', '\:') || ':' || p_occasion;

-- Deterministic holdout draw in [0, 1) from campaign and customer (53 bits of a 64-bit hash).
CREATE FUNCTION loyalty._holdout_draw(p_campaign integer, p_customer text)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (hashtextextended(p_campaign::text || ':' || p_customer, 74200) & 9007199254740991)::float8 / 9007199254740992.0;

-- P(alive) as of a time with the shop's model (loyalty.current_model: model,
-- its parameters and the heuristic's shop gap), from the model inputs of
-- 50_models.sql: the same value loyalty.customer_scores stores.
CREATE FUNCTION loyalty._p_alive(p_model text, p_purchase_days integer, p_first timestamptz, p_last timestamptz,
                                 p_as_of timestamptz, r float8, alpha float8, a float8, b float8, p_shop_gap float8)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN loyalty._p_alive_days(p_model, p_purchase_days - 1, loyalty._utc_days(p_first, p_last)::float8,
                             loyalty._utc_days(p_first, greatest(p_as_of, p_last))::float8,
                             loyalty._utc_days(p_last, p_as_of)::float8, r, alpha, a, b, p_shop_gap);

-- When a reorder reminder is due: the first UTC midnight at or after the last
-- order + p_factor * the customer's mean gap between purchase days (NULL
-- below two). In C (src/journey_dates.c): evaluated for every customer daily.
CREATE FUNCTION loyalty._reorder_at(p_purchase_days integer, p_first timestamptz, p_last timestamptz, p_factor float8)
RETURNS timestamptz
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'reorder_at';

-- When a customer lapses: the first moment at which _p_alive(...) is below
-- p_below (NULL: never, a single purchase day under BG/NBD), in closed form
-- so that win-back occasions can be dated without evaluating P(alive) per
-- customer and day. BG/NBD (Fader, Hardie & Lee 2005, eq. 13) when r is
-- given, else the heuristic (p_shop_gap NULL: 90 days). The formulas are
-- with the code, in src/journey_dates.c.
CREATE FUNCTION loyalty._lapse_at(p_purchase_days integer, p_first timestamptz, p_last timestamptz, p_below float8,
                                  r float8, alpha float8, a float8, b float8, p_shop_gap float8)
RETURNS timestamptz
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'lapse_at';

-- MBG/NBD's lapse day in closed form (Batislam, Denizel & Filiztekin 2007,
-- eq. 6; src/journey_dates.c), one-time buyers included.
CREATE FUNCTION loyalty._lapse_at_mbgnbd(p_purchase_days integer, p_first timestamptz, p_last timestamptz, p_below float8,
                                         r float8, alpha float8, a float8, b float8)
RETURNS timestamptz
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'lapse_at_mbgnbd';

-- The first UTC midnight at which P(alive) under a model without a closed
-- form for its lapse day is below p_below: bisection over whole days since
-- the first purchase day (P(alive) only falls while the customer does not
-- buy, so the days below the threshold are an interval reaching to infinity).
-- NULL: not within 10,000 years.
CREATE FUNCTION loyalty._lapse_search(p_model text, p_purchase_days integer, p_first timestamptz, p_last timestamptz,
                                      p_below float8, r float8, alpha float8, a float8, b float8, p_shop_gap float8)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    x integer := p_purchase_days - 1;
    tx integer := loyalty._utc_days(p_first, p_last);
    lo integer;
    hi integer;
    mid integer;
BEGIN
    IF p_purchase_days IS NULL OR p_purchase_days < 1 OR NOT isfinite(p_first) OR NOT isfinite(p_last) OR p_last < p_first THEN
        RETURN NULL;
    END IF;
    IF loyalty._p_alive_days(p_model, x, tx, tx, 0, r, alpha, a, b, p_shop_gap) < p_below THEN
        RETURN p_last;
    END IF;
    -- lo: still above; hi: below (doubling the distance until it is)
    lo := tx;
    hi := tx + 1;
    WHILE loyalty._p_alive_days(p_model, x, tx, hi, hi - tx, r, alpha, a, b, p_shop_gap) >= p_below LOOP
        lo := hi;
        IF hi - tx > 3652500 THEN
            RETURN NULL;
        END IF;
        hi := tx + 2 * (hi - tx);
    END LOOP;
    WHILE hi - lo > 1 LOOP
        mid := lo + (hi - lo) / 2;
        IF loyalty._p_alive_days(p_model, x, tx, mid, mid - tx, r, alpha, a, b, p_shop_gap) < p_below THEN
            hi := mid;
        ELSE
            lo := mid;
        END IF;
    END LOOP;
    RETURN greatest((((p_first AT TIME ZONE 'UTC')::date + hi)::timestamp AT TIME ZONE 'UTC'), p_last);
END
$$;

-- The lapse day under the shop's model: the closed forms of _lapse_at for
-- BG/NBD, its boundary limit (the large a, b give p/(1-p) to 1e-9) and the
-- heuristic (one-time buyers under BG/NBD too), of _lapse_at_mbgnbd for
-- MBG/NBD (and its limit), else the search above (Pareto/NBD; cached per
-- customer by loyalty._lapse_day_cached, 74_lapse_cache.sql).
CREATE FUNCTION loyalty._lapse_day(p_model text, p_purchase_days integer, p_first timestamptz, p_last timestamptz,
                                   p_below float8, r float8, alpha float8, a float8, b float8, p_shop_gap float8)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE loyalty._p_alive_model(p_model, p_purchase_days - 1)
            WHEN 'bgnbd' THEN loyalty._lapse_at(p_purchase_days, p_first, p_last, p_below, r, alpha, a, b, p_shop_gap)
            WHEN 'bgnbd_limit' THEN loyalty._lapse_at(p_purchase_days, p_first, p_last, p_below, r, alpha, a, b, p_shop_gap)
            WHEN 'heuristic' THEN loyalty._lapse_at(p_purchase_days, p_first, p_last, p_below, NULL, NULL, NULL, NULL, p_shop_gap)
            WHEN 'mbgnbd' THEN loyalty._lapse_at_mbgnbd(p_purchase_days, p_first, p_last, p_below, r, alpha, a, b)
            ELSE loyalty._lapse_search(p_model, p_purchase_days, p_first, p_last, p_below, r, alpha, a, b, p_shop_gap) END;

-- When a win-back occasion is dated: when the lapse began (p_lapsed_at: the
-- lapse day, or the segment change of a campaign with segments), but not
-- before min_days_since_last days after the last order nor before the
-- campaign's lapse_from. No lapse (NULL) is no occasion: the NULL must not
-- be lost in greatest(), which ignores NULLs.
CREATE FUNCTION loyalty._win_back_at(p_lapsed_at timestamptz, p_last timestamptz, p_min_days integer, p_lapse_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_lapsed_at IS NOT NULL
            THEN greatest(p_lapsed_at, p_last + make_interval(days => p_min_days), p_lapse_from) END;

-- The earliest a win-back occasion is dated as of as_of: customers lapsed
-- before the campaign was switched on are due when it was (also when
-- active_from was set back to catch up other occasions); a clock set before
-- that moment (tests) counts as it. Used by _occasions and the refit hook,
-- which must date occasions alike.
CREATE FUNCTION loyalty._lapse_from(p_active_from timestamptz, p_activated_at timestamptz, p_as_of timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN greatest(coalesce(p_active_from, p_activated_at), least(coalesce(p_activated_at, p_active_from), p_as_of));

-- A new fit (or model choice) moves lapse days. enqueue_due looks for
-- lapses before a campaign's last as_of among logged customers only
-- (loyalty._occasions), so log those whose win-back date under the model now
-- in force falls in the stretch each active win-back campaign has passed
-- already: [last as_of - valid_for, last as_of]. Called by loyalty.fit_models
-- (the scan costs less than the fit).
CREATE FUNCTION loyalty._journeys_refitted()
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

-- Occasions of the active campaigns that may need a decision as of as_of
-- (both ranges above). One index-backed query per campaign.
--
-- p_changed (enqueue_due): the customers in loyalty.journey_changes. Every
-- occasion up to a campaign's last as_of was decided by that run, unless
-- the data behind it changed or arrived since. For the kinds read from
-- customer_state and orders, whose every change is logged there, the range
-- before the last as_of is therefore searched among the changed customers
-- only, and all customers only from the last as_of on: a run costs what is
-- new, not the whole validity window again. The other kinds (birthdays,
-- point lots, tier history, deliveries, RFM segments, custom conditions),
-- a campaign edited since its last run, and loyalty.due_messages (p_changed
-- NULL) search the whole window.
CREATE FUNCTION loyalty._occasions(p_as_of timestamptz, p_changed text[] DEFAULT NULL)
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
                  FROM (SELECT pl.customer_id, pl.remaining, pl.expires_at, loyalty._utc_date(pl.expires_at) AS day
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

-- Usable contact for a channel: email needs a plausible address, sms and
-- whatsapp a phone number with at least 6 digits; push and other channels are
-- addressed by the customer key (the sender resolves the device).
CREATE FUNCTION loyalty._recipient(p_channel text, p_customer text, p_email text, p_phone text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_channel = 'email' THEN CASE WHEN p_email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' THEN p_email END
            WHEN p_channel IN ('sms', 'whatsapp')
                 THEN CASE WHEN length(regexp_replace(p_phone, '[^0-9]', '', 'g')) >= 6
                            AND p_phone ~ '^\+?[0-9][0-9 ()./-]*$' THEN p_phone END
            ELSE p_customer END;

-- Next allowed local time: as_of itself outside quiet hours, else the end of
-- the quiet hours in the customer's zone (local wall-clock time, so a DST
-- change in between moves the UTC instant, not the local hour).
CREATE FUNCTION loyalty._after_quiet_hours(p_as_of timestamptz, p_zone text, p_start time, p_end time)
RETURNS timestamptz
LANGUAGE sql STABLE
RETURN CASE WHEN p_start = p_end THEN p_as_of
            WHEN p_start < p_end AND (p_as_of AT TIME ZONE p_zone)::time >= p_start AND (p_as_of AT TIME ZONE p_zone)::time < p_end
                 THEN ((p_as_of AT TIME ZONE p_zone)::date + p_end) AT TIME ZONE p_zone
            WHEN p_start > p_end AND (p_as_of AT TIME ZONE p_zone)::time >= p_start
                 THEN ((p_as_of AT TIME ZONE p_zone)::date + 1 + p_end) AT TIME ZONE p_zone
            WHEN p_start > p_end AND (p_as_of AT TIME ZONE p_zone)::time < p_end
                 THEN ((p_as_of AT TIME ZONE p_zone)::date + p_end) AT TIME ZONE p_zone
            ELSE p_as_of END;

-- Every occasion not yet in the outbox with the policy's decision as of
-- as_of. Order of the checks: consent, contact, validity (expired), holdout,
-- cooldown, frequency cap (priority decides), quiet hours. enqueue_due records
-- every decision in the outbox, so each occasion is decided once: a
-- suppressed one (no consent, no contact, cooldown, capped) is not sent later
-- when the cap frees up or consent arrives, and the outbox says why it was not.
-- Only quiet hours delay a message (pending, due when they end).
-- p_changed: see loyalty._occasions (NULL: search every campaign's whole window).
CREATE FUNCTION loyalty._due_messages(as_of timestamptz, p_changed text[] DEFAULT NULL)
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

CREATE FUNCTION loyalty.due_messages_at(as_of timestamptz)
RETURNS TABLE (campaign_id integer, campaign text, kind text, channel text, customer_id text, occasion text,
               occasion_at timestamptz, dedupe_key text, decision text, reason text, due_at timestamptz,
               expires_at timestamptz, recipient text, template text, priority integer, payload jsonb)
LANGUAGE sql STABLE
SECURITY DEFINER   -- read-only; lets loyalty_reader see decisions without the tables behind them
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM loyalty._due_messages(as_of)
$$;
COMMENT ON FUNCTION loyalty.due_messages_at(timestamptz) IS
'Every occasion of the active campaigns not yet in the outbox, as of a time, with the policy''s decision and reason';

CREATE VIEW loyalty.due_messages AS SELECT * FROM loyalty.due_messages_at(pg_catalog.now());
COMMENT ON VIEW loyalty.due_messages IS
'What loyalty.enqueue_due() would do now: each occasion not yet in the outbox with its decision (send and quiet_hours become pending messages; held_out, expired, no_consent, no_contact, cooldown, capped, superseded and ops_hold are recorded with that status and never sent) and why';
COMMENT ON COLUMN loyalty.due_messages.campaign_id IS 'the campaign (loyalty.campaigns)';
COMMENT ON COLUMN loyalty.due_messages.campaign IS 'the campaign''s name';
COMMENT ON COLUMN loyalty.due_messages.kind IS 'the campaign''s kind (welcome, post_purchase, win_back, ...)';
COMMENT ON COLUMN loyalty.due_messages.channel IS 'the channel the message goes out on';
COMMENT ON COLUMN loyalty.due_messages.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.due_messages.dedupe_key IS 'campaign:customer:occasion, the outbox''s unique key';
COMMENT ON COLUMN loyalty.due_messages.expires_at IS 'after this the message is not sent (recorded as expired)';
COMMENT ON COLUMN loyalty.due_messages.template IS 'the template the sender renders';
COMMENT ON COLUMN loyalty.due_messages.priority IS 'the campaign''s priority (lower wins under the frequency cap)';
COMMENT ON COLUMN loyalty.due_messages.occasion IS 'the occasion key (first, order:<ref>, birthday:<year>, ...); with campaign and customer it is the dedupe key';
COMMENT ON COLUMN loyalty.due_messages.occasion_at IS 'when the occasion became due';
COMMENT ON COLUMN loyalty.due_messages.decision IS 'send, quiet_hours (pending, due at due_at), held_out, expired, capped, cooldown, no_consent, no_contact, superseded (a tier upgrade when a win-back of the customer is due in the same run), ops_hold (marketing while the customer has an order issue)';
COMMENT ON COLUMN loyalty.due_messages.reason IS 'why, in words';
COMMENT ON COLUMN loyalty.due_messages.due_at IS 'when the message may go out (after quiet hours); NULL when it will not be sent';
COMMENT ON COLUMN loyalty.due_messages.recipient IS 'email address or phone number for the channel (the customer key for push and other channels)';
COMMENT ON COLUMN loyalty.due_messages.payload IS 'what the template needs (name, points available now, points pending, tier, occasion details) and why (campaign, rule, the scores with P(alive) at the decision time and the model that decided it); for a suppressed occasion its details and the reason';

-- Write the due occasions into the outbox: send and quiet_hours as pending,
-- every other decision as a status of its own (never sent). Safe at any frequency and concurrently: runs
-- are serialised by a transaction-level advisory lock (74200, 5), so the cap
-- and cooldown counts of one run include everything earlier runs wrote; the
-- outbox's unique dedupe key (ON CONFLICT DO NOTHING) makes a rerun, or a
-- writer outside the lock, add nothing twice. Returns per active campaign the
-- rows written.
CREATE FUNCTION loyalty.enqueue_due(as_of timestamptz DEFAULT now())
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
COMMENT ON FUNCTION loyalty.enqueue_due(timestamptz) IS
'Write what is due as of as_of into loyalty.outbox (each occasion decided once, ever); returns per active campaign: pending (of which delayed by quiet hours), held_out, expired, suppressed (no consent, no contact, cooldown, capped, superseded, ops_hold)';

-- Data quality: customers (with orders) a channel cannot reach.
CREATE VIEW loyalty.contact_quality AS
SELECT ch.channel,
       count(*) AS customers,
       count(*) FILTER (WHERE p.customer_id IS NULL) AS no_profile,
       count(*) FILTER (WHERE p.customer_id IS NOT NULL
                          AND loyalty._recipient(ch.channel, s.customer_id, p.email, p.phone) IS NULL) AS unusable_contact,
       count(*) FILTER (WHERE loyalty._recipient(ch.channel, s.customer_id, p.email, p.phone) IS NOT NULL) AS reachable,
       count(*) FILTER (WHERE p.customer_id IS NOT NULL AND p.time_zone IS NULL) AS no_time_zone
  FROM (VALUES ('email'), ('sms'), ('whatsapp')) ch(channel)
 CROSS JOIN loyalty.customer_state s
  LEFT JOIN loyalty.profiles p ON p.customer_id = s.customer_id
 GROUP BY ch.channel;
COMMENT ON VIEW loyalty.contact_quality IS 'Per channel: customers with orders, and how many have no profile, no usable contact (missing or malformed), or can be reached';
COMMENT ON COLUMN loyalty.contact_quality.channel IS 'email, sms or whatsapp';
COMMENT ON COLUMN loyalty.contact_quality.customers IS 'customers with orders';
COMMENT ON COLUMN loyalty.contact_quality.no_profile IS 'customers with orders but no profile (no contact data at all)';
COMMENT ON COLUMN loyalty.contact_quality.reachable IS 'customers with a usable recipient on this channel';
COMMENT ON COLUMN loyalty.contact_quality.unusable_contact IS 'profile without a usable email (email) or phone number (sms, whatsapp)';
COMMENT ON COLUMN loyalty.contact_quality.no_time_zone IS 'profiles without a time zone (journey_settings.default_time_zone applies)';
