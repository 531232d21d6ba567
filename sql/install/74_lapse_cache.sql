-- Journeys: the win-back lapse day, cached per customer for models without
-- a closed form (issue 12). BG/NBD, its boundary limit, MBG/NBD and the
-- heuristic have one (loyalty._lapse_at, _lapse_at_mbgnbd); Pareto/NBD's is
-- a search over days (loyalty._lapse_search: ~30 evaluations of P(alive),
-- each with hypergeometric series). Without a cache, every run that looks
-- at all customers (the first after a UTC midnight, a refit) searches every
-- customer in the win-back window again; with it, a run searches only the
-- customers whose inputs or fit changed.
--
-- A row is valid for one threshold and one fit (fit_id) of the customer's
-- inputs (purchase_days, first_order_at, last_order_at): a new fit or a new
-- order makes it stale, and the lookup then ignores it (and computes); the
-- next fill replaces it. The searched models' P(alive) uses neither the
-- shop gap nor anything else, so these keys are all it depends on.

CREATE TABLE loyalty.lapse_days (
    customer_id    text NOT NULL,
    below          float8 NOT NULL,
    fit_id         bigint NOT NULL,
    purchase_days  integer NOT NULL,
    first_order_at timestamptz NOT NULL,
    last_order_at  timestamptz NOT NULL,
    lapse_at       timestamptz NOT NULL,
    PRIMARY KEY (customer_id, below)
);
COMMENT ON TABLE loyalty.lapse_days IS
'Cache: per customer and P(alive) threshold, the win-back lapse day under a model without a closed form (Pareto/NBD), for one fit and the customer''s inputs';
COMMENT ON COLUMN loyalty.lapse_days.fit_id IS 'the loyalty.model_fits row it was searched with';
COMMENT ON COLUMN loyalty.lapse_days.lapse_at IS 'the first UTC midnight with P(alive) below the threshold; infinity: not within 10,000 years';

-- Whether the lapse day under p_model for a customer with p_x repeat
-- purchase days is searched (loyalty._lapse_day's ELSE branch).
CREATE FUNCTION loyalty._lapse_searched(p_model text, p_x integer)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN loyalty._p_alive_model(p_model, p_x) NOT IN ('bgnbd', 'bgnbd_limit', 'heuristic', 'mbgnbd');

-- loyalty._lapse_day, read from the cache when it holds a valid row (same
-- fit, same inputs), else computed.
CREATE FUNCTION loyalty._lapse_day_cached(p_customer text, p_fit_id bigint, p_model text, p_purchase_days integer,
                                          p_first timestamptz, p_last timestamptz, p_below float8,
                                          r float8, alpha float8, a float8, b float8, p_shop_gap float8)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN NOT loyalty._lapse_searched(p_model, p_purchase_days - 1)
            THEN loyalty._lapse_day(p_model, p_purchase_days, p_first, p_last, p_below, r, alpha, a, b, p_shop_gap)
            ELSE nullif(coalesce((SELECT l.lapse_at FROM loyalty.lapse_days l
                                   WHERE l.customer_id = p_customer AND l.below = p_below AND l.fit_id = p_fit_id
                                     AND l.purchase_days = p_purchase_days AND l.first_order_at = p_first
                                     AND l.last_order_at = p_last),
                                 loyalty._lapse_day(p_model, p_purchase_days, p_first, p_last, p_below,
                                                    r, alpha, a, b, p_shop_gap),
                                 'infinity'), 'infinity') END;

-- Bring the cache up to date for the model in force, as of p_as_of: for
-- each threshold of an active win-back campaign, search the customers whose
-- last order is within the campaign's max_days_since_last and whose row is
-- missing or stale; rows of other fits go. Returns the rows searched.
-- Called by enqueue_due and _journeys_refitted (both under the journeys'
-- advisory lock 74200/5, so fills do not overlap).
CREATE FUNCTION loyalty._lapse_cache_fill(p_as_of timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off   -- per-row model expressions: compiling them costs seconds, running them milliseconds
AS $$
DECLARE
    f record;
    c record;
    n bigint := 0;
    k bigint;
BEGIN
    SELECT * INTO f FROM loyalty.current_model;
    IF f.fit_id IS NULL OR NOT loyalty._lapse_searched(f.model, 1) THEN
        RETURN 0;
    END IF;
    DELETE FROM loyalty.lapse_days l WHERE l.fit_id <> f.fit_id;
    FOR c IN
        SELECT (cp.params->>'p_alive_below')::float8 AS below,
               max((cp.params->>'max_days_since_last')::integer) AS max_days
          FROM loyalty.campaigns cp
         WHERE cp.active AND cp.kind = 'win_back' AND cp.params ? 'p_alive_below'
         GROUP BY 1
    LOOP
        INSERT INTO loyalty.lapse_days AS l (customer_id, below, fit_id, purchase_days, first_order_at, last_order_at, lapse_at)
        SELECT s.customer_id, c.below, f.fit_id, s.purchase_days, s.first_order_at, s.last_order_at,
               coalesce(loyalty._lapse_day(f.model, s.purchase_days, s.first_order_at, s.last_order_at, c.below,
                                           f.r, f.alpha, f.a, f.b, f.shop_gap), 'infinity')
          FROM loyalty.customer_state s
          LEFT JOIN loyalty.lapse_days o ON o.customer_id = s.customer_id AND o.below = c.below
         WHERE s.last_order_at >= p_as_of - make_interval(days => c.max_days)
           AND (o.customer_id IS NULL OR o.fit_id <> f.fit_id OR o.purchase_days <> s.purchase_days
                OR o.first_order_at <> s.first_order_at OR o.last_order_at <> s.last_order_at)
        ON CONFLICT (customer_id, below) DO UPDATE
           SET fit_id = excluded.fit_id, purchase_days = excluded.purchase_days, first_order_at = excluded.first_order_at,
               last_order_at = excluded.last_order_at, lapse_at = excluded.lapse_at;
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION loyalty._lapse_cache_fill(timestamptz) IS
'Search and cache the win-back lapse days (Pareto/NBD) of the customers whose row is missing or stale; returns the rows searched';
