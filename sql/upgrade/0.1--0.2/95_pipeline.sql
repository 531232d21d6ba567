-- refresh13 (issue 13: one orchestrator; issue 12: refresh() speed). The
-- functions are copied from sql/install/ (10_state.sql, 30_rfm.sql,
-- 50_models.sql, 74_pipeline.sql) by the same text.

CREATE FUNCTION loyalty._recompute_state(p_customers text[], p_enqueue boolean)
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    customers text[] := ARRAY(SELECT DISTINCT c FROM unnest(p_customers) AS c WHERE c IS NOT NULL ORDER BY 1);
BEGIN
    INSERT INTO loyalty.customer_state AS cs
        (customer_id, first_order_at, last_order_at, orders, repeat_orders, purchase_days,
         gross_spend, refunded, net_spend, avg_spend, first_day_spend)
    SELECT c, '-infinity', '-infinity', 0, 0, 0, 0, 0, 0, 0, 0
      FROM (SELECT DISTINCT c FROM unnest(p_customers) AS c WHERE c IS NOT NULL ORDER BY 1) s
    ON CONFLICT (customer_id) DO NOTHING;
    PERFORM 1 FROM loyalty.customer_state cs WHERE cs.customer_id = ANY (p_customers)
      ORDER BY cs.customer_id FOR UPDATE;

    INSERT INTO loyalty.customer_state AS cs
        (customer_id, first_order_at, last_order_at, orders, repeat_orders, purchase_days,
         gross_spend, refunded, net_spend, avg_spend, first_day_spend, updated_at)
    SELECT customer_id, min(ordered_at), max(ordered_at), count(*), count(*) - 1,
           count(DISTINCT d), sum(amount), sum(refunded), sum(amount - refunded),
           round(sum(amount - refunded) / count(*), 2),
           sum(amount - refunded) FILTER (WHERE d = first_d), now()
      FROM (SELECT o.customer_id, o.ordered_at, o.amount, o.refunded,
                   (o.ordered_at AT TIME ZONE 'UTC')::date AS d,
                   min((o.ordered_at AT TIME ZONE 'UTC')::date) OVER (PARTITION BY o.customer_id) AS first_d
              FROM loyalty.orders o
             WHERE o.customer_id = ANY (p_customers) AND o.counts) x
     GROUP BY customer_id
    ON CONFLICT (customer_id) DO UPDATE
       SET first_order_at = excluded.first_order_at, last_order_at = excluded.last_order_at,
           orders = excluded.orders, repeat_orders = excluded.repeat_orders,
           purchase_days = excluded.purchase_days, gross_spend = excluded.gross_spend,
           refunded = excluded.refunded, net_spend = excluded.net_spend,
           avg_spend = excluded.avg_spend, first_day_spend = excluded.first_day_spend,
           updated_at = excluded.updated_at
     WHERE cs.orders = 0 OR (cs.first_order_at, cs.last_order_at, cs.orders, cs.purchase_days, cs.net_spend, cs.refunded, cs.first_day_spend)
           IS DISTINCT FROM
           (excluded.first_order_at, excluded.last_order_at, excluded.orders, excluded.purchase_days, excluded.net_spend, excluded.refunded, excluded.first_day_spend);

    -- customers left with no counted order have no state (and no scores)
    DELETE FROM loyalty.customer_state cs
     WHERE cs.customer_id = ANY (p_customers)
       AND NOT EXISTS (SELECT 1 FROM loyalty.orders o WHERE o.customer_id = cs.customer_id AND o.counts);
    IF p_enqueue THEN
        INSERT INTO loyalty.score_queue (customer_id)
        SELECT c FROM unnest(customers) AS c
         WHERE EXISTS (SELECT 1 FROM loyalty.customer_state cs WHERE cs.customer_id = c);
    END IF;
    RETURN customers;
END
$$;

CREATE FUNCTION loyalty._fit_models(OUT bgnbd_status text, OUT gamma_gamma_status text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off   -- per-row model expressions: compiling them costs seconds, running them milliseconds
AS $$
DECLARE
    st loyalty.model_settings;
    n bigint;
    n_rep bigint;
    gap float8;
    f record;
    g record;
    n_gg bigint;
    m text;
    lim boolean;
    mst text;
BEGIN
    SELECT * INTO st FROM loyalty.model_settings;
    SELECT count(*), count(*) FILTER (WHERE x > 0), avg(t_x / x) FILTER (WHERE x > 0 AND t_x > 0)
      INTO n, n_rep, gap FROM loyalty.model_inputs;
    INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, note)
    VALUES ('heuristic', 'fitted', now(), n, jsonb_build_object('shop_gap', coalesce(gap, 90)),
            CASE WHEN gap IS NULL THEN 'no repeat buyers yet: a gap of 90 days' END);
    bgnbd_status := CASE WHEN 'bgnbd' = ANY (st.models) THEN NULL ELSE 'not_enabled' END;
    IF n < st.min_customers OR n_rep < st.min_repeat_customers THEN
        INSERT INTO loyalty.model_fits (model, status, as_of, customers, note)
        SELECT u.m, 'too_little_data', now(), n,
               format('%s customers, %s repeat buyers: need %s and %s', n, n_rep, st.min_customers, st.min_repeat_customers)
          FROM unnest(st.models) u(m) WHERE u.m <> 'heuristic'
        UNION ALL
        SELECT 'gamma_gamma', 'too_little_data', now(), n_rep, format('%s repeat buyers: need %s', n_rep, st.min_repeat_customers);
        bgnbd_status := coalesce(bgnbd_status, 'too_little_data');
        gamma_gamma_status := 'too_little_data';
        PERFORM loyalty._choose_model(false);
        RETURN;
    END IF;

    IF 'bgnbd' = ANY (st.models) THEN
        SELECT (loyalty.bgnbd_fit(x, t_x, t)).* INTO f FROM loyalty.model_inputs;
        lim := least(f.a, f.b) >= 1e6 AND f.loglik > '-Infinity' AND f.r > 0 AND f.alpha > 0;
        bgnbd_status := CASE WHEN f.converged OR lim THEN 'fitted' ELSE 'not_converged' END;
        INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, loglik, iterations, note)
        VALUES ('bgnbd', bgnbd_status, now(), n,
                jsonb_build_object('r', f.r, 'alpha', f.alpha, 'a', f.a, 'b', f.b)
                || CASE WHEN lim THEN jsonb_build_object('limit', true, 'p', f.a / (f.a + f.b)) ELSE '{}' END,
                f.loglik, f.iterations,
                CASE WHEN lim THEN format('maximum on the boundary a, b -> infinity: every customer drops out with probability %s after a purchase (BG/NBD without heterogeneity in dropout); scored as that limit',
                                          round((f.a / (f.a + f.b))::numeric, 4))
                     WHEN NOT f.converged THEN 'optimiser did not converge; scores keep the last fitted parameters or the heuristic' END);
    END IF;
    -- the other BTYD models, when enabled and installed (same shape: x, t_x, t -> 4 parameters)
    FOREACH m IN ARRAY st.models LOOP
        CONTINUE WHEN m IN ('bgnbd', 'heuristic') OR NOT loyalty._model_available(m);
        EXECUTE format('SELECT (loyalty.%s_fit(x, t_x, t)).* FROM loyalty.model_inputs', m) INTO f;
        mst := CASE WHEN (to_jsonb(f)->>'converged')::boolean THEN 'fitted' ELSE 'not_converged' END;
        INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, loglik, iterations, note)
        VALUES (m, mst, now(), n, to_jsonb(f) - 'loglik' - 'converged' - 'iterations', f.loglik, f.iterations,
                CASE WHEN mst = 'not_converged' THEN 'optimiser did not converge' END);
    END LOOP;
    PERFORM loyalty._choose_model(false);

    SELECT count(*) INTO n_gg FROM loyalty.model_inputs WHERE x > 0 AND repeat_value > 0;
    IF n_gg < st.min_repeat_customers THEN
        gamma_gamma_status := 'too_little_data';
        INSERT INTO loyalty.model_fits (model, status, as_of, customers, note)
        VALUES ('gamma_gamma', gamma_gamma_status, now(), n_gg,
                format('%s repeat buyers with positive spend: need %s', n_gg, st.min_repeat_customers));
        RETURN;
    END IF;
    SELECT (loyalty.gamma_gamma_fit(x, repeat_value::float8)).* INTO g
      FROM loyalty.model_inputs WHERE x > 0 AND repeat_value > 0;
    gamma_gamma_status := CASE WHEN g.converged THEN 'fitted' ELSE 'not_converged' END;
    INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, loglik, iterations, note)
    VALUES ('gamma_gamma', gamma_gamma_status, now(), n_gg,
            jsonb_build_object('p', g.p, 'q', g.q, 'gamma', g.gamma), g.loglik, g.iterations,
            CASE WHEN NOT g.converged THEN 'optimiser did not converge; scores keep the last fitted parameters or the heuristic' END);
END
$$;

CREATE OR REPLACE FUNCTION loyalty._recompute_customers(p_customers text[], p_enqueue boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    changed text[];
BEGIN
    -- customer state (and the score queue, unless a backfill)
    changed := loyalty._recompute_state(p_customers, p_enqueue);
    -- tiers move with spend
    PERFORM loyalty._recompute_tiers(changed, now());
    -- scores: a customer left without state has no RFM scores (stored churn/CLV
    -- scores go at the next refresh or worker round)
    DELETE FROM loyalty.customer_rfm r
     WHERE r.customer_id = ANY (changed)
       AND NOT EXISTS (SELECT 1 FROM loyalty.customer_state cs WHERE cs.customer_id = r.customer_id);
    -- the journeys look again at these customers' occasions (loyalty.journey_changes);
    -- always, also while no campaign is active: a campaign switched on before
    -- this transaction commits must find the change (refresh() trims the log
    -- while no campaign is active)
    INSERT INTO loyalty.journey_changes (customer_id) SELECT unnest(changed);
END
$$;

CREATE OR REPLACE FUNCTION loyalty.fit_models(OUT bgnbd_status text, OUT gamma_gamma_status text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT f.bgnbd_status, f.gamma_gamma_status INTO fit_models.bgnbd_status, fit_models.gamma_gamma_status
      FROM loyalty._fit_models() f;
    PERFORM loyalty._journeys_refitted();
END
$$;
COMMENT ON FUNCTION loyalty.fit_models() IS 'Fit the enabled churn models (heuristic, BG/NBD or its boundary limit, ...) and Gamma-Gamma on the shop''s customers (days) into loyalty.model_fits, then pick the model that decides';

CREATE OR REPLACE FUNCTION loyalty.refresh(as_of timestamptz DEFAULT now(), fit_models boolean DEFAULT true,
                                OUT events_applied bigint, OUT customers bigint, OUT rescored bigint,
                                OUT bgnbd text, OUT gamma_gamma text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF as_of IS NULL OR NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Omit it to refresh as of now().';
    END IF;
    -- one refresh at a time; a second caller waits and then refreshes again
    PERFORM pg_advisory_xact_lock(74200, 2);
    events_applied := 0;
    LOOP
        n := loyalty.apply_events(50000);
        events_applied := events_applied + n;
        EXIT WHEN n = 0;
    END LOOP;
    rescored := loyalty._rfm_score(true, as_of, NULL);   -- scores: RFM (30_rfm.sql)
    -- the customers just scored: the pass stores their count with the bounds
    customers := coalesce((SELECT b.customers FROM loyalty.rfm_bounds b), 0);
    -- scores: the fits, then every customer's churn and CLV scores with the
    -- fits in force (50_models.sql)
    IF fit_models THEN
        SELECT m.bgnbd_status, m.gamma_gamma_status INTO bgnbd, gamma_gamma FROM loyalty._fit_models() m;
    END IF;
    PERFORM loyalty._store_scores(as_of, NULL);
    -- the journeys' change log: the customers whose lapse days the new fit moved
    -- (see loyalty.fit_models for the locking argument)
    IF fit_models THEN
        PERFORM loyalty._journeys_refitted();
    END IF;
    -- Nobody reads the journeys' change log while no campaign is active. One
    -- statement, one snapshot: every row it deletes was committed before any
    -- campaign was switched on, so the first (full) run of that campaign sees
    -- its data anyway.
    DELETE FROM loyalty.journey_changes WHERE NOT EXISTS (SELECT 1 FROM loyalty.campaigns cp WHERE cp.active);
END
$$;
COMMENT ON FUNCTION loyalty.refresh(timestamptz, boolean) IS
'Apply captured changes, recompute RFM bounds and every customer''s scores, refit the churn/CLV models and store the churn/CLV scores; returns counts and fit status';

-- new functions: the install's blanket privileges (90_grants.sql), repeated
REVOKE ALL ON FUNCTION loyalty._recompute_state(text[], boolean), loyalty._fit_models() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._recompute_state(text[], boolean), loyalty._fit_models() TO loyalty_admin;
