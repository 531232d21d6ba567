-- refresh13 (issue 13: one orchestrator, sql/install/74_pipeline.sql; issue
-- 12: refresh() rescores only what changed). Functions copied from
-- sql/install/ (10_state.sql, 50_models.sql, 74_pipeline.sql) by the same text.

-- 50_models.sql: the basis of the stored scores
CREATE TABLE loyalty.score_basis (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    basis     jsonb
);
INSERT INTO loyalty.score_basis DEFAULT VALUES;
COMMENT ON TABLE loyalty.score_basis IS 'Model, parameters, settings and day every stored score was last computed with (NULL: rescore everyone)';
REVOKE ALL ON loyalty.score_basis FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.score_basis TO loyalty_admin;

-- 50_models.sql: a refit to the same rows reuses the fit's result
ALTER TABLE loyalty.model_fits ADD COLUMN inputs_hash bigint;
COMMENT ON COLUMN loyalty.model_fits.inputs_hash IS 'fingerprint of the customer state fitted (loyalty._fit_inputs_hash): a refit the same UTC day to the same state reuses this fit''s result';

-- _store_scores takes the queued customers (a new argument)
DROP FUNCTION loyalty._store_scores(timestamptz, text[]);
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
    -- also those left without state: their stored scores go with the entry
    IF p_enqueue THEN
        INSERT INTO loyalty.score_queue (customer_id) SELECT unnest(customers);
    END IF;
    RETURN customers;
END
$$;

CREATE FUNCTION loyalty._fit_inputs_hash()
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (SELECT sum(hash_record(ROW(s.first_order_at, s.last_order_at, s.purchase_days, s.net_spend, s.first_day_spend,
                                   s.avg_spend)))
          FROM loyalty.customer_state s);

CREATE FUNCTION loyalty._fit_reused(p_model text, p_inputs_hash bigint)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, loglik, iterations, note, inputs_hash)
    SELECT f.model, f.status, now(), f.customers, f.params, f.loglik, f.iterations, f.note, f.inputs_hash
      FROM (SELECT * FROM loyalty.model_fits mf WHERE mf.model = p_model ORDER BY mf.fit_id DESC LIMIT 1) f
     WHERE f.inputs_hash = p_inputs_hash AND f.params IS NOT NULL
       AND (f.as_of AT TIME ZONE 'UTC')::date = (now() AT TIME ZONE 'UTC')::date
    RETURNING status
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
    fp bigint;
    m text;
    lim boolean;
    mst text;
BEGIN
    SELECT * INTO st FROM loyalty.model_settings;
    -- the gap rounded to 1e-9 days: a parallel scan sums in another order each
    -- time, and a refit on the same data must give the same parameters (or
    -- every stored score is rewritten, see _store_scores)
    SELECT count(*), count(*) FILTER (WHERE x > 0), round(avg(t_x / x) FILTER (WHERE x > 0 AND t_x > 0)::numeric, 9)
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

    fp := loyalty._fit_inputs_hash();
    IF 'bgnbd' = ANY (st.models) THEN
        bgnbd_status := loyalty._fit_reused('bgnbd', fp);
    END IF;
    IF 'bgnbd' = ANY (st.models) AND bgnbd_status IS NULL THEN
        SELECT (loyalty.bgnbd_fit(x, t_x, t)).* INTO f FROM loyalty.model_inputs;
        lim := least(f.a, f.b) >= 1e6 AND f.loglik > '-Infinity' AND f.r > 0 AND f.alpha > 0;
        bgnbd_status := CASE WHEN f.converged OR lim THEN 'fitted' ELSE 'not_converged' END;
        INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, loglik, iterations, note, inputs_hash)
        VALUES ('bgnbd', bgnbd_status, now(), n,
                jsonb_build_object('r', f.r, 'alpha', f.alpha, 'a', f.a, 'b', f.b)
                || CASE WHEN lim THEN jsonb_build_object('limit', true, 'p', f.a / (f.a + f.b)) ELSE '{}' END,
                f.loglik, f.iterations,
                CASE WHEN lim THEN format('maximum on the boundary a, b -> infinity: every customer drops out with probability %s after a purchase (BG/NBD without heterogeneity in dropout); scored as that limit',
                                          round((f.a / (f.a + f.b))::numeric, 4))
                     WHEN NOT f.converged THEN 'optimiser did not converge; scores keep the last fitted parameters or the heuristic' END,
                fp);
    END IF;
    -- the other BTYD models, when enabled and installed (same shape: x, t_x, t -> 4 parameters)
    FOREACH m IN ARRAY st.models LOOP
        CONTINUE WHEN m IN ('bgnbd', 'heuristic') OR NOT loyalty._model_available(m)
                      OR loyalty._fit_reused(m, fp) IS NOT NULL;
        EXECUTE format('SELECT (loyalty.%s_fit(x, t_x, t)).* FROM loyalty.model_inputs', m) INTO f;
        mst := CASE WHEN (to_jsonb(f)->>'converged')::boolean THEN 'fitted' ELSE 'not_converged' END;
        INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, loglik, iterations, note, inputs_hash)
        VALUES (m, mst, now(), n, to_jsonb(f) - 'loglik' - 'converged' - 'iterations', f.loglik, f.iterations,
                CASE WHEN mst = 'not_converged' THEN 'optimiser did not converge' END, fp);
    END LOOP;
    PERFORM loyalty._choose_model(false);

    gamma_gamma_status := loyalty._fit_reused('gamma_gamma', fp);
    IF gamma_gamma_status IS NOT NULL THEN
        RETURN;
    END IF;
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
    INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, loglik, iterations, note, inputs_hash)
    VALUES ('gamma_gamma', gamma_gamma_status, now(), n_gg,
            jsonb_build_object('p', g.p, 'q', g.q, 'gamma', g.gamma), g.loglik, g.iterations,
            CASE WHEN NOT g.converged THEN 'optimiser did not converge; scores keep the last fitted parameters or the heuristic' END,
            fp);
END
$$;

CREATE FUNCTION loyalty._store_scores(p_as_of timestamptz, p_customers text[], p_queued text[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off   -- per-row model expressions: compiling them costs seconds, running them milliseconds
AS $$
DECLARE
    n bigint;
    m record;
    g record;
    st loyalty.model_settings;
    cur_basis jsonb;
    held boolean;
    todo text[] := p_customers;
BEGIN
    IF p_customers IS NULL THEN
        PERFORM 1 FROM loyalty.score_basis sb FOR UPDATE;
    END IF;
    -- the model, read once: constants in the per-row expressions below, so the
    -- planner inlines the model functions into them (an argument that is a
    -- per-row expression used more than once would keep them calls)
    SELECT * INTO m FROM loyalty.current_model;
    SELECT cf.gamma_gamma_fit_id, cf.p, cf.q, cf.gamma INTO g FROM loyalty.current_fits cf;
    SELECT * INTO st FROM loyalty.model_settings;
    -- fit ids left out: a refit to the same parameters changes no score
    cur_basis := jsonb_build_object('model', m.model, 'r', m.r, 'alpha', m.alpha, 'a', m.a, 'b', m.b, 'shop_gap', m.shop_gap,
                                'p', g.p, 'q', g.q, 'gamma', g.gamma, 'horizon_days', st.horizon_days, 'margin', st.margin,
                                'annual_discount_rate', st.annual_discount_rate, 'day', (p_as_of AT TIME ZONE 'UTC')::date);
    SELECT sb.basis = cur_basis INTO held FROM loyalty.score_basis sb;
    IF p_customers IS NULL AND p_queued IS NOT NULL AND coalesce(held, false) THEN
        todo := p_queued;
    ELSIF p_customers IS NOT NULL AND NOT coalesce(held, true) THEN
        -- these rows get another basis than everyone's: the next refresh rescores everyone
        UPDATE loyalty.score_basis SET basis = NULL;
    END IF;
    IF todo IS NULL THEN
        DELETE FROM loyalty.stored_scores sc
         WHERE NOT EXISTS (SELECT 1 FROM loyalty.customer_state s WHERE s.customer_id = sc.customer_id);
    ELSE
        DELETE FROM loyalty.stored_scores sc
         WHERE sc.customer_id = ANY (todo)
           AND NOT EXISTS (SELECT 1 FROM loyalty.customer_state s WHERE s.customer_id = sc.customer_id);
    END IF;
    INSERT INTO loyalty.stored_scores AS sc (customer_id, model, p_alive, expected_purchases_90d, expected_order_value,
                                              predicted_clv, horizon_days, fit_id, gamma_gamma_fit_id, as_of)
    SELECT i.customer_id, v.model, v.p_alive, v.e90, v.eov,
           -- (the default horizon is the 90 days already computed)
           round((st.margin * v.eov::numeric * (CASE WHEN st.horizon_days = 90 THEN v.e90 ELSE v.eh END)::numeric
                  / power(1 + st.annual_discount_rate, st.horizon_days / 365.0 / 2))::numeric, 2),
           st.horizon_days,
           CASE WHEN v.model = 'heuristic' THEN m.heuristic_fit_id ELSE m.fit_id END,
           g.gamma_gamma_fit_id, p_as_of
      -- inputs as columns of a subquery (OFFSET 0): plain values, not expressions
      FROM (SELECT * FROM loyalty.model_inputs_at(p_as_of) mi
             WHERE todo IS NULL OR mi.customer_id = ANY (todo) OFFSET 0) i
     CROSS JOIN LATERAL (
        SELECT loyalty._p_alive_model(m.model, i.x) AS model,
               loyalty._p_alive_days(m.model, i.x, i.t_x, i.t, i.days_since_last, m.r, m.alpha, m.a, m.b, m.shop_gap) AS p_alive,
               loyalty._expected_days(m.model, 90, i.x, i.t_x, i.t, i.days_since_last, m.r, m.alpha, m.a, m.b, m.shop_gap) AS e90,
               loyalty._expected_days(m.model, st.horizon_days, i.x, i.t_x, i.t, i.days_since_last,
                                      m.r, m.alpha, m.a, m.b, m.shop_gap) AS eh,
               CASE WHEN g.gamma_gamma_fit_id IS NOT NULL AND i.x > 0 AND i.repeat_value > 0
                    THEN loyalty.gamma_gamma_mean(i.x, i.repeat_value::float8, g.p, g.q, g.gamma)
                    WHEN g.gamma_gamma_fit_id IS NOT NULL AND g.q > 1
                    THEN g.p * g.gamma / (g.q - 1)
                    ELSE i.avg_spend::float8 END AS eov
     ) v
     -- rows are locked in key order by every caller (refresh, the worker's
     -- round, configure_models), so no two ever wait on each other in a cycle
     ORDER BY i.customer_id
    ON CONFLICT (customer_id) DO UPDATE
       SET model = excluded.model, p_alive = excluded.p_alive, expected_purchases_90d = excluded.expected_purchases_90d,
           expected_order_value = excluded.expected_order_value, predicted_clv = excluded.predicted_clv,
           horizon_days = excluded.horizon_days, fit_id = excluded.fit_id, gamma_gamma_fit_id = excluded.gamma_gamma_fit_id,
           as_of = excluded.as_of
     -- only values that changed are written: a refit to the same parameters
     -- (nothing new since the last refresh) rewrites nothing, and the row
     -- keeps the id of the earlier, equal fit
     WHERE (sc.model, sc.p_alive, sc.expected_purchases_90d, sc.expected_order_value, sc.predicted_clv, sc.horizon_days)
           IS DISTINCT FROM
           (excluded.model, excluded.p_alive, excluded.expected_purchases_90d, excluded.expected_order_value,
            excluded.predicted_clv, excluded.horizon_days);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF todo IS NULL THEN
        UPDATE loyalty.score_basis SET basis = cur_basis;
    ELSIF p_customers IS NULL
          AND (SELECT count(*) FROM loyalty.stored_scores) IS DISTINCT FROM (SELECT b.customers FROM loyalty.rfm_bounds b) THEN
        -- not a row for every customer the caller's RFM pass counted (rows
        -- truncated, a backfill's new customers): everyone after all
        RETURN n + loyalty._store_scores(p_as_of, NULL);
    END IF;
    RETURN n;
END
$$;

CREATE OR REPLACE VIEW loyalty.current_fits AS
SELECT b.fit_id AS bgnbd_fit_id,
       (b.params->>'r')::float8 AS r, (b.params->>'alpha')::float8 AS alpha,
       (b.params->>'a')::float8 AS a, (b.params->>'b')::float8 AS b,
       g.fit_id AS gamma_gamma_fit_id,
       (g.params->>'p')::float8 AS p, (g.params->>'q')::float8 AS q, (g.params->>'gamma')::float8 AS gamma
  FROM (SELECT 1) one
  LEFT JOIN LATERAL (SELECT * FROM loyalty.model_fits WHERE model = 'bgnbd' AND status = 'fitted' ORDER BY fit_id DESC LIMIT 1) b ON true
  LEFT JOIN LATERAL (SELECT * FROM loyalty.model_fits WHERE model = 'gamma_gamma' AND status = 'fitted' ORDER BY fit_id DESC LIMIT 1) g ON true;

CREATE OR REPLACE VIEW loyalty.current_model AS
SELECT CASE WHEN f.fit_id IS NULL THEN 'heuristic'
            WHEN f.model = 'bgnbd' AND (f.params->>'limit')::boolean THEN 'bgnbd_limit'
            ELSE f.model END AS model,
       f.fit_id,
       (f.params->>'r')::float8 AS r, (f.params->>'alpha')::float8 AS alpha,
       coalesce(f.params->>'a', f.params->>'s')::float8 AS a, coalesce(f.params->>'b', f.params->>'beta')::float8 AS b,
       h.fit_id AS heuristic_fit_id,
       coalesce((h.params->>'shop_gap')::float8, (SELECT loyalty._shop_gap())) AS shop_gap,
       w.reason
  FROM (SELECT coalesce(ch.model, CASE WHEN 'bgnbd' = ANY (st.models) THEN 'bgnbd' ELSE 'heuristic' END) AS model,
               coalesce(ch.reason, 'no holdout comparison yet: BG/NBD when it is fitted, else the heuristic') AS reason
          FROM loyalty.model_settings st
          LEFT JOIN loyalty.model_choice ch ON ch.model = ANY (st.models)) w
  LEFT JOIN LATERAL (SELECT mf.* FROM loyalty.model_fits mf
                      WHERE mf.model = w.model AND w.model <> 'heuristic' AND mf.status = 'fitted'
                      ORDER BY mf.fit_id DESC LIMIT 1) f ON true
  LEFT JOIN LATERAL (SELECT mf.* FROM loyalty.model_fits mf
                      WHERE mf.model = 'heuristic' AND mf.status = 'fitted'
                      ORDER BY mf.fit_id DESC LIMIT 1) h ON true;

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
    IF NOT p_enqueue THEN
        -- scores: not queued, so the next refresh rescores everyone (always
        -- updated, also when already NULL: the row lock orders this against a
        -- pass over everyone, see _store_scores)
        UPDATE loyalty.score_basis SET basis = NULL;
    END IF;
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
    queued text[];
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
    -- scores: RFM (30_rfm.sql), and the customers of the queue entries it
    -- consumes (one statement, one snapshot: the same entries)
    SELECT loyalty._rfm_score(true, as_of, NULL), ARRAY(SELECT DISTINCT q.customer_id FROM loyalty.score_queue q)
      INTO rescored, queued;
    -- the customers just scored: the pass stores their count with the bounds
    customers := coalesce((SELECT b.customers FROM loyalty.rfm_bounds b), 0);
    -- scores: the fits, then every customer's churn and CLV scores with the
    -- fits in force (50_models.sql)
    IF fit_models THEN
        SELECT m.bgnbd_status, m.gamma_gamma_status INTO bgnbd, gamma_gamma FROM loyalty._fit_models() m;
    END IF;
    -- everyone's, or only the queued customers' while the fits, settings and
    -- day are those of the last pass over everyone
    PERFORM loyalty._store_scores(as_of, NULL, queued);
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

CREATE OR REPLACE FUNCTION loyalty.worker_tick(refresh_interval integer DEFAULT 3600, budget_ms integer DEFAULT 2000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last timestamptz;
    n bigint := 0;
    got bigint;
    msg text;
    st text;
    queued text[];
    rescored bigint;
    deadline timestamptz := clock_timestamp() + make_interval(secs => worker_tick.budget_ms / 1000.0);
BEGIN
    IF NOT pg_try_advisory_xact_lock(74200, 2) THEN
        RETURN 0;   -- a refresh is running; it does this round's work
    END IF;
    SELECT computed_at INTO last FROM loyalty.rfm_bounds;
    IF last IS NULL AND NOT EXISTS (SELECT 1 FROM loyalty.customer_state) AND NOT EXISTS (SELECT 1 FROM loyalty.events) THEN
        RETURN 0;
    END IF;
    -- Applying changes never waits for scoring: scoring runs in a
    -- subtransaction, and when it fails (logged each round) the changes
    -- applied in this round still commit, so the queue drains.
    IF last IS NULL OR last < now() - make_interval(secs => worker_tick.refresh_interval) THEN
        LOOP
            got := loyalty.apply_events(50000);
            n := n + got;
            EXIT WHEN got = 0;
        END LOOP;
        BEGIN
            PERFORM loyalty.refresh();
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, st = RETURNED_SQLSTATE;
            RAISE WARNING 'loyalty: refresh failed (captured changes were applied): %: %', st, msg
                  USING HINT = 'Run SELECT loyalty.refresh() to see the error in full.';
        END;
        RETURN n;
    END IF;
    LOOP
        got := loyalty.apply_events(10000);
        n := n + got;
        -- scoring in a subtransaction: when it fails (logged each round) the
        -- changes applied in this round still commit, so the queue drains
        BEGIN
            -- RFM scores of the queue's oldest entries, and the churn/CLV scores
            -- of their customers (one statement, one snapshot: the entries the
            -- RFM pass consumes; all of them when it has no bounds for the bins
            -- in force and scores everyone). Not in the order's own
            -- transaction: an order never waits for a refresh holding the
            -- scores' rows.
            SELECT loyalty._rfm_score(false, now(), 10000),
                   ARRAY(SELECT DISTINCT q.customer_id
                           FROM (SELECT sq.customer_id FROM loyalty.score_queue sq ORDER BY sq.seq
                                  LIMIT CASE WHEN EXISTS (SELECT 1 FROM loyalty.rfm_bounds b JOIN loyalty.rfm_config c
                                                                  ON c.bins = b.bins) THEN 10000 END) q)
              INTO rescored, queued;
            PERFORM loyalty._store_scores(now(), queued)
              FROM loyalty.model_fits f WHERE f.model = 'heuristic' AND f.status = 'fitted' LIMIT 1;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, st = RETURNED_SQLSTATE;
            RAISE WARNING 'loyalty: rescoring failed (captured changes were applied): %: %', st, msg
                  USING HINT = 'Run SELECT loyalty.refresh() to see the error in full.';
            EXIT WHEN got < 10000 OR clock_timestamp() > deadline;
            CONTINUE;
        END;
        EXIT WHEN (got < 10000 AND NOT EXISTS (SELECT 1 FROM loyalty.score_queue)) OR clock_timestamp() > deadline;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION loyalty.worker_tick(integer, integer) IS 'One background worker round (also callable by hand or pg_cron)';

-- new functions: the install's blanket privileges (90_grants.sql), repeated
REVOKE ALL ON FUNCTION loyalty._recompute_state(text[], boolean), loyalty._fit_models(),
                       loyalty._fit_inputs_hash(), loyalty._fit_reused(text, bigint),
                       loyalty._store_scores(timestamptz, text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._recompute_state(text[], boolean), loyalty._fit_models(),
                          loyalty._fit_inputs_hash(), loyalty._fit_reused(text, bigint),
                          loyalty._store_scores(timestamptz, text[], text[]) TO loyalty_admin;
