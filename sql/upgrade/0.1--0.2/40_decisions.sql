-- Decisions a shop can trust (issue 12): every win-back agrees with its P(alive);
-- one definition of the model inputs (model_inputs_at); BG/NBD's boundary
-- limit; the heuristic for one-time buyers; model choice by holdout; scores
-- stored; tier first assignment; points available and pending in payloads.

-- settings: the models to fit and compare
ALTER TABLE loyalty.model_settings
    ADD COLUMN models text[] NOT NULL DEFAULT '{bgnbd,heuristic}'
               CHECK (models <@ '{bgnbd,mbgnbd,pareto_nbd,heuristic}' AND 'heuristic' = ANY (models));
COMMENT ON COLUMN loyalty.model_settings.models IS 'models refresh() fits and validate_models() compares on the holdout window; the best decides (heuristic is always one)';
ALTER TABLE loyalty.model_fits DROP CONSTRAINT model_fits_model_check;
ALTER TABLE loyalty.model_fits ADD CONSTRAINT model_fits_model_check
    CHECK (model IN ('bgnbd', 'gamma_gamma', 'heuristic', 'mbgnbd', 'pareto_nbd'));

DROP FUNCTION loyalty.configure_models(integer, numeric, numeric, integer, integer, integer);
CREATE FUNCTION loyalty.configure_models(horizon_days integer DEFAULT NULL, margin numeric DEFAULT NULL,
                                         annual_discount_rate numeric DEFAULT NULL, min_customers integer DEFAULT NULL,
                                         min_repeat_customers integer DEFAULT NULL, holdout_days integer DEFAULT NULL,
                                         models text[] DEFAULT NULL)
RETURNS loyalty.model_settings
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st loyalty.model_settings;
    m text;
BEGIN
    IF horizon_days IS NOT NULL AND (horizon_days < 1 OR horizon_days > 3650) THEN
        RAISE EXCEPTION 'horizon_days must be between 1 and 3650, not %', horizon_days
              USING ERRCODE = 'invalid_parameter_value', HINT = 'CLV is usually taken over 90, 180 or 365 days.';
    END IF;
    IF margin IS NOT NULL AND (margin <= 0 OR margin > 1 OR margin = 'NaN') THEN
        RAISE EXCEPTION 'margin must be above 0 and at most 1, not %', margin
              USING ERRCODE = 'invalid_parameter_value', HINT = 'The share of revenue that is profit, e.g. 0.3; 1 gives revenue CLV.';
    END IF;
    IF annual_discount_rate IS NOT NULL AND (annual_discount_rate < 0 OR annual_discount_rate >= 1 OR annual_discount_rate = 'NaN') THEN
        RAISE EXCEPTION 'annual_discount_rate must be at least 0 and below 1, not %', annual_discount_rate
              USING ERRCODE = 'invalid_parameter_value', HINT = 'A yearly rate such as 0.1 for 10 percent; 0 for none.';
    END IF;
    IF min_customers IS NOT NULL AND min_customers < 10 THEN
        RAISE EXCEPTION 'min_customers must be at least 10, not %', min_customers
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Below a few hundred customers the fit is not worth trusting; the default is 200.';
    END IF;
    IF min_repeat_customers IS NOT NULL AND min_repeat_customers < 5 THEN
        RAISE EXCEPTION 'min_repeat_customers must be at least 5, not %', min_repeat_customers
              USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 30 repeat buyers.';
    END IF;
    IF holdout_days IS NOT NULL AND (holdout_days < 7 OR holdout_days > 3650) THEN
        RAISE EXCEPTION 'holdout_days must be between 7 and 3650, not %', holdout_days
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pick a window the shop can wait for, e.g. 90 days.';
    END IF;
    IF models IS NOT NULL THEN
        IF cardinality(models) IS NULL OR array_position(models, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'models must be a non-empty list of model names'
                  USING ERRCODE = 'invalid_parameter_value', HINT = 'Models: bgnbd, mbgnbd, pareto_nbd, heuristic.';
        END IF;
        FOREACH m IN ARRAY models LOOP
            IF m NOT IN ('bgnbd', 'mbgnbd', 'pareto_nbd', 'heuristic') THEN
                RAISE EXCEPTION 'unknown model %', quote_literal(m)
                      USING ERRCODE = 'invalid_parameter_value', HINT = 'Models: bgnbd, mbgnbd, pareto_nbd, heuristic.';
            END IF;
            IF NOT loyalty._model_available(m) THEN
                RAISE EXCEPTION 'model % is not available in this version of loyalty', m
                      USING ERRCODE = 'feature_not_supported', HINT = 'Enable bgnbd and heuristic.';
            END IF;
        END LOOP;
        -- the heuristic is the fallback of every other model: always enabled
        models := ARRAY(SELECT DISTINCT u FROM unnest(models || '{heuristic}'::text[]) u ORDER BY 1);
    END IF;
    UPDATE loyalty.model_settings s
       SET models = coalesce(configure_models.models, s.models),
           horizon_days = coalesce(configure_models.horizon_days, s.horizon_days),
           margin = coalesce(configure_models.margin, s.margin),
           annual_discount_rate = coalesce(configure_models.annual_discount_rate, s.annual_discount_rate),
           min_customers = coalesce(configure_models.min_customers, s.min_customers),
           min_repeat_customers = coalesce(configure_models.min_repeat_customers, s.min_repeat_customers),
           holdout_days = coalesce(configure_models.holdout_days, s.holdout_days)
    RETURNING * INTO st;
    -- stored scores follow the settings they are computed with
    IF configure_models.horizon_days IS NOT NULL OR configure_models.margin IS NOT NULL
       OR configure_models.annual_discount_rate IS NOT NULL OR configure_models.models IS NOT NULL THEN
        PERFORM loyalty._store_scores(now(), NULL);
    END IF;
    RETURN st;
END
$$;
COMMENT ON FUNCTION loyalty.configure_models(integer, numeric, numeric, integer, integer, integer, text[]) IS
'Change churn/CLV settings (NULL keeps a setting), including the models to fit and compare; returns the settings in force';
REVOKE ALL ON FUNCTION loyalty.configure_models(integer, numeric, numeric, integer, integer, integer, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty.configure_models(integer, numeric, numeric, integer, integer, integer, text[]) TO loyalty_admin;

CREATE FUNCTION loyalty._utc_days(p_from timestamptz, p_to timestamptz)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN greatest((p_to AT TIME ZONE 'UTC')::date - (p_from AT TIME ZONE 'UTC')::date, 0);
CREATE FUNCTION loyalty.model_inputs_at(as_of timestamptz)
RETURNS TABLE (customer_id text, x integer, t_x float8, t float8, repeat_value numeric, avg_spend numeric,
               days_since_last integer)
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT s.customer_id,
           s.purchase_days - 1,
           loyalty._utc_days(s.first_order_at, s.last_order_at)::float8,
           loyalty._utc_days(s.first_order_at, greatest(as_of, s.last_order_at))::float8,
           CASE WHEN s.purchase_days > 1 THEN (s.net_spend - s.first_day_spend) / (s.purchase_days - 1) END,
           s.avg_spend,
           loyalty._utc_days(s.last_order_at, as_of)
      FROM loyalty.customer_state s;
END;
COMMENT ON FUNCTION loyalty.model_inputs_at(timestamptz) IS
'Per-customer BG/NBD and Gamma-Gamma inputs in whole UTC days as of a time (future-dated orders clamped: t >= t_x, days_since_last >= 0)';

CREATE OR REPLACE VIEW loyalty.model_inputs AS SELECT * FROM loyalty.model_inputs_at(pg_catalog.now());

CREATE FUNCTION loyalty._model_registered()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN '{bgnbd,heuristic,mbgnbd,pareto_nbd}'::text[];

-- Whether a model can be enabled: registered, and its C functions installed.
CREATE FUNCTION loyalty._model_available(p_model text)
RETURNS boolean
LANGUAGE sql STABLE
RETURN p_model = ANY (loyalty._model_registered())
       AND (p_model IN ('bgnbd', 'heuristic')
            OR to_regprocedure('loyalty.' || p_model || '_p_alive(integer,float8,float8,float8,float8,float8,float8)') IS NOT NULL);

CREATE FUNCTION loyalty._p_alive_model(p_model text, p_x integer)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_model IN ('bgnbd', 'bgnbd_limit') AND p_x > 0 THEN p_model
            WHEN p_model IN ('mbgnbd', 'pareto_nbd') THEN p_model   -- both see one-time buyers
            ELSE 'heuristic' END;

CREATE FUNCTION loyalty._p_alive_days(p_model text, p_x integer, p_t_x float8, p_t float8, p_days_since float8,
                                      r float8, alpha float8, a float8, b float8, p_shop_gap float8)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE loyalty._p_alive_model(p_model, p_x)
            WHEN 'bgnbd' THEN least(loyalty.bgnbd_p_alive(p_x, p_t_x, p_t, r, alpha, a, b), 1)
            WHEN 'bgnbd_limit' THEN 1 / (1 + a / b * power((alpha + p_t) / (alpha + p_t_x), r + p_x))
            WHEN 'mbgnbd' THEN least(loyalty.mbgnbd_p_alive(p_x, p_t_x, p_t, r, alpha, a, b), 1)
            WHEN 'pareto_nbd' THEN least(loyalty.pareto_nbd_p_alive(p_x, p_t_x, p_t, r, alpha, a, b), 1)
            ELSE exp(greatest(-700, -p_days_since * (p_x + 1) / (p_t_x + coalesce(p_shop_gap, 90)))) END;

CREATE FUNCTION loyalty._expected_days(p_model text, p_horizon float8, p_x integer, p_t_x float8, p_t float8,
                                       p_days_since float8, r float8, alpha float8, a float8, b float8, p_shop_gap float8)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE loyalty._p_alive_model(p_model, p_x)
            WHEN 'bgnbd' THEN loyalty.bgnbd_expected(p_horizon, p_x, p_t_x, p_t, r, alpha, a, b)
            WHEN 'bgnbd_limit'
                 THEN loyalty._p_alive_days(p_model, p_x, p_t_x, p_t, p_days_since, r, alpha, a, b, p_shop_gap)
                      * (a + b) / a * (1 - power((alpha + p_t) / (alpha + p_t + a / (a + b) * p_horizon), r + p_x))
            WHEN 'mbgnbd' THEN loyalty.mbgnbd_expected(p_horizon, p_x, p_t_x, p_t, r, alpha, a, b)
            WHEN 'pareto_nbd' THEN loyalty.pareto_nbd_expected(p_horizon, p_x, p_t_x, p_t, r, alpha, a, b)
            ELSE loyalty._p_alive_days(p_model, p_x, p_t_x, p_t, p_days_since, r, alpha, a, b, p_shop_gap)
                 * p_horizon * (p_x + 1) / (p_t_x + coalesce(p_shop_gap, 90)) END;

CREATE OR REPLACE FUNCTION loyalty.fit_models(OUT bgnbd_status text, OUT gamma_gamma_status text)
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
        PERFORM loyalty._journeys_refitted();   -- the shop gap moved lapse days (71_journeys_due.sql)
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
    PERFORM loyalty._journeys_refitted();   -- win-back lapse days moved (71_journeys_due.sql)

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
COMMENT ON FUNCTION loyalty.fit_models() IS 'Fit the enabled churn models (heuristic, BG/NBD or its boundary limit, ...) and Gamma-Gamma on the shop''s customers (days) into loyalty.model_fits, then pick the model that decides';

-- The holdout comparison's verdict (loyalty._choose_model), kept until the
-- next comparison (at most daily, and when the enabled models change).
CREATE TABLE loyalty.model_choice (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    model        text NOT NULL,
    models       text[] NOT NULL,
    holdout_days integer NOT NULL,
    chosen_at    timestamptz NOT NULL,
    comparison   jsonb NOT NULL,
    reason       text NOT NULL
);
COMMENT ON TABLE loyalty.model_choice IS 'Which enabled model decides P(alive) and expected purchases, and the holdout comparison that chose it';
COMMENT ON COLUMN loyalty.model_choice.models IS 'the enabled models that were compared';
COMMENT ON COLUMN loyalty.model_choice.comparison IS 'per model: customers, mean absolute error per customer, predicted and actual purchase days in the holdout window, whether the calibration fit was usable';
COMMENT ON COLUMN loyalty.model_choice.reason IS 'why this model, in words';
SELECT pg_catalog.pg_extension_config_dump('loyalty.model_choice', '');

-- The model that decides now, with its parameters, as one row: the chosen
-- model's newest fit (BG/NBD on the boundary: bgnbd_limit), else the
-- heuristic. shop_gap is the heuristic's parameter, which one-time buyers
-- under BG/NBD also use (from the newest heuristic fit; before any fit,
-- computed from the customers).
CREATE VIEW loyalty.current_model AS
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
COMMENT ON VIEW loyalty.current_model IS 'The model that decides P(alive), expected purchases and win-back lapse days now, with its parameters (bgnbd, bgnbd_limit, heuristic); one-time buyers under BG/NBD are judged by the heuristic';
COMMENT ON COLUMN loyalty.current_model.model IS 'bgnbd, bgnbd_limit (BG/NBD fit on its boundary: dropout without heterogeneity), or heuristic';
COMMENT ON COLUMN loyalty.current_model.fit_id IS 'the loyalty.model_fits row of the model (NULL for the heuristic)';
COMMENT ON COLUMN loyalty.current_model.a IS 'BG/NBD a (Pareto/NBD s)';
COMMENT ON COLUMN loyalty.current_model.b IS 'BG/NBD b (Pareto/NBD beta)';
COMMENT ON COLUMN loyalty.current_model.shop_gap IS 'the heuristic''s mean gap between purchase days of repeat buyers, in days';
COMMENT ON COLUMN loyalty.current_model.reason IS 'why this model (loyalty.model_choice)';

CREATE TABLE loyalty.stored_scores (
    customer_id            text PRIMARY KEY,
    model                  text NOT NULL,
    p_alive                float8 NOT NULL,
    expected_purchases_90d float8 NOT NULL,
    expected_order_value   float8,
    predicted_clv          numeric,
    horizon_days           integer NOT NULL,
    fit_id                 bigint,
    gamma_gamma_fit_id     bigint,
    as_of                  timestamptz NOT NULL
);
COMMENT ON TABLE loyalty.stored_scores IS 'Per-customer scores as last computed (read them through loyalty.customer_scores)';
-- derived, but dumped, so that a restored database has its scores at once
SELECT pg_catalog.pg_extension_config_dump('loyalty.stored_scores', '');

-- Compute and store the scores of p_customers (NULL: everyone, and drop the
-- rows of customers without state) as of p_as_of; a row is rewritten only
-- when a value changes. Returns the rows written.
CREATE FUNCTION loyalty._store_scores(p_as_of timestamptz, p_customers text[])
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
BEGIN
    -- the model, read once: constants in the per-row expressions below, so the
    -- planner inlines the model functions into them (an argument that is a
    -- per-row expression used more than once would keep them calls)
    SELECT * INTO m FROM loyalty.current_model;
    SELECT cf.gamma_gamma_fit_id, cf.p, cf.q, cf.gamma INTO g FROM loyalty.current_fits cf;
    SELECT * INTO st FROM loyalty.model_settings;
    IF p_customers IS NULL THEN
        DELETE FROM loyalty.stored_scores sc
         WHERE NOT EXISTS (SELECT 1 FROM loyalty.customer_state s WHERE s.customer_id = sc.customer_id);
    ELSE
        DELETE FROM loyalty.stored_scores sc
         WHERE sc.customer_id = ANY (p_customers)
           AND NOT EXISTS (SELECT 1 FROM loyalty.customer_state s WHERE s.customer_id = sc.customer_id);
    END IF;
    INSERT INTO loyalty.stored_scores AS sc (customer_id, model, p_alive, expected_purchases_90d, expected_order_value,
                                              predicted_clv, horizon_days, fit_id, gamma_gamma_fit_id, as_of)
    SELECT i.customer_id, v.model, v.p_alive, v.e90, v.eov,
           round((st.margin * v.eov::numeric * v.eh::numeric
                  / power(1 + st.annual_discount_rate, st.horizon_days / 365.0 / 2))::numeric, 2),
           st.horizon_days,
           CASE WHEN v.model = 'heuristic' THEN m.heuristic_fit_id ELSE m.fit_id END,
           g.gamma_gamma_fit_id, p_as_of
      -- inputs as columns of a subquery (OFFSET 0): plain values, not expressions
      FROM (SELECT * FROM loyalty.model_inputs_at(p_as_of) mi
             WHERE p_customers IS NULL OR mi.customer_id = ANY (p_customers) OFFSET 0) i
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
    RETURN n;
END
$$;

CREATE OR REPLACE VIEW loyalty.customer_scores AS
SELECT sc.customer_id,
       sc.p_alive,
       1 - sc.p_alive AS churn_risk,
       sc.expected_purchases_90d,
       sc.expected_order_value,
       sc.predicted_clv,
       sc.horizon_days,
       sc.model,
       CASE WHEN sc.model IN ('bgnbd', 'bgnbd_limit') THEN sc.fit_id END AS bgnbd_fit_id,
       sc.gamma_gamma_fit_id,
       sc.fit_id,
       sc.as_of AS scored_as_of
  FROM loyalty.stored_scores sc;
COMMENT ON VIEW loyalty.customer_scores IS 'Churn risk and lifetime value per customer, as stored by the last refresh or order (the model that decided in model: BG/NBD, its boundary limit, or the heuristic)';
COMMENT ON COLUMN loyalty.customer_scores.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.customer_scores.p_alive IS 'probability the customer is still a customer (will buy again at their own rate)';
COMMENT ON COLUMN loyalty.customer_scores.churn_risk IS '1 - p_alive';
COMMENT ON COLUMN loyalty.customer_scores.expected_purchases_90d IS 'expected purchase days in the next 90 days';
COMMENT ON COLUMN loyalty.customer_scores.expected_order_value IS 'expected spend per purchase (Gamma-Gamma, shrunk towards the shop mean)';
COMMENT ON COLUMN loyalty.customer_scores.predicted_clv IS 'margin * expected purchases in horizon_days * expected order value, discounted to mid-horizon';
COMMENT ON COLUMN loyalty.customer_scores.horizon_days IS 'the horizon used';
COMMENT ON COLUMN loyalty.customer_scores.model IS 'the model that decided this customer''s scores: bgnbd, bgnbd_limit (BG/NBD on its boundary), or heuristic (too little data, the heuristic was chosen, or a one-time buyer under BG/NBD)';
COMMENT ON COLUMN loyalty.customer_scores.bgnbd_fit_id IS 'the loyalty.model_fits row used, when a BG/NBD model decided';
COMMENT ON COLUMN loyalty.customer_scores.gamma_gamma_fit_id IS 'the loyalty.model_fits row used for order value';
COMMENT ON COLUMN loyalty.customer_scores.fit_id IS 'the loyalty.model_fits row of the model that decided (heuristic: its shop gap); a later fit with the same parameters leaves it';
COMMENT ON COLUMN loyalty.customer_scores.scored_as_of IS 'the time these values were computed for (a row is rewritten only when a value changes)';


CREATE FUNCTION loyalty._choose_model(p_force boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off   -- per-row model expressions: compiling them costs seconds, running them milliseconds
AS $$
DECLARE
    st loyalty.model_settings;
    ch loyalty.model_choice;
    cmp jsonb;
    best text;
BEGIN
    SELECT * INTO st FROM loyalty.model_settings;
    SELECT * INTO ch FROM loyalty.model_choice;
    IF NOT p_force AND ch.model IS NOT NULL AND ch.models = st.models AND ch.holdout_days = st.holdout_days
       AND ch.chosen_at > now() - interval '1 day'
       -- and no model the comparison could not use has been fitted since
       AND NOT EXISTS (SELECT 1 FROM loyalty.model_fits mf
                        WHERE mf.model = ANY (st.models) AND mf.status = 'fitted' AND mf.fitted_at > ch.chosen_at
                          AND NOT coalesce((ch.comparison->mf.model->>'usable')::boolean, false)) THEN
        RETURN ch.model;
    END IF;
    SELECT jsonb_object_agg(v.model, jsonb_build_object('customers', v.n, 'mae', round(v.mae::numeric, 6),
                                                        'predicted', round(v.pred::numeric, 2), 'actual', v.act,
                                                        'usable', v.usable)),
           (array_agg(v.model ORDER BY v.mae, v.model = 'heuristic' DESC) FILTER (WHERE v.usable))[1]
      INTO cmp, best
      FROM (SELECT mv.model, sum(mv.customers) AS n, sum(mv.mae * mv.customers) / nullif(sum(mv.customers), 0) AS mae,
                   sum(mv.predicted_total) AS pred, sum(mv.actual_total) AS act, bool_and(mv.fit_converged) AS usable
              FROM loyalty.validate_models(st.holdout_days) mv GROUP BY mv.model) v;
    INSERT INTO loyalty.model_choice AS c (model, models, holdout_days, chosen_at, comparison, reason)
    VALUES (coalesce(best, CASE WHEN 'bgnbd' = ANY (st.models) THEN 'bgnbd' ELSE 'heuristic' END), st.models, st.holdout_days, now(),
            coalesce(cmp, '{}'),
            CASE WHEN best IS NULL THEN format('no customers before the %s-day holdout window: BG/NBD when it is fitted, else the heuristic', st.holdout_days)
                 ELSE format('lowest mean absolute error per customer over the last %s days: %s', st.holdout_days,
                             (SELECT string_agg(format('%s %s', e.key, e.value->>'mae'), ', ' ORDER BY (e.value->>'mae')::float8)
                                FROM jsonb_each(cmp) e)) END)
    ON CONFLICT (singleton) DO UPDATE
       SET model = excluded.model, models = excluded.models, holdout_days = excluded.holdout_days,
           chosen_at = excluded.chosen_at, comparison = excluded.comparison, reason = excluded.reason
    RETURNING c.model INTO best;
    RETURN best;
END
$$;

REVOKE ALL ON loyalty.model_choice, loyalty.current_model, loyalty.stored_scores FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.model_choice, loyalty.current_model, loyalty.stored_scores TO loyalty_admin;
GRANT SELECT ON loyalty.current_model, loyalty.model_choice TO loyalty_reader;

-- the pipeline stores the scores
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
    rescored := loyalty._rfm_score(true, as_of, NULL);
    -- Nobody reads the journeys' change log while no campaign is active. One
    -- statement, one snapshot: every row it deletes was committed before any
    -- campaign was switched on, so the first (full) run of that campaign sees
    -- its data anyway.
    DELETE FROM loyalty.journey_changes WHERE NOT EXISTS (SELECT 1 FROM loyalty.campaigns cp WHERE cp.active);
    -- the customers just scored: the pass stores their count with the bounds
    customers := coalesce((SELECT b.customers FROM loyalty.rfm_bounds b), 0);
    IF fit_models THEN
        SELECT m.bgnbd_status, m.gamma_gamma_status INTO bgnbd, gamma_gamma FROM loyalty.fit_models() m;
    END IF;
    -- every customer's churn and CLV scores with the fits in force (50_models.sql)
    PERFORM loyalty._store_scores(as_of, NULL);
END
$$;
COMMENT ON FUNCTION loyalty.refresh(timestamptz, boolean) IS
'Apply captured changes, recompute RFM bounds and every customer''s scores, refit the churn/CLV models and store the churn/CLV scores; returns counts and fit status';

COMMENT ON FUNCTION loyalty.worker_tick(integer, integer) IS 'One background worker round (also callable by hand or pg_cron)';

-- tiers: a first assignment is not an upgrade
CREATE OR REPLACE FUNCTION loyalty._recompute_tiers(p_customers text[], p_as_of timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.rewards_settings;
    c record;
    changes bigint := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM loyalty.tiers) AND NOT EXISTS (SELECT 1 FROM loyalty.customer_tiers WHERE tier IS NOT NULL) THEN
        RETURN 0;
    END IF;
    SELECT * INTO s FROM loyalty.rewards_settings;
    PERFORM 1 FROM loyalty.customer_tiers ct WHERE ct.customer_id = ANY (p_customers) ORDER BY ct.customer_id FOR UPDATE;
    FOR c IN
        WITH spend AS (
            SELECT x.customer_id,
                   coalesce((SELECT sum(o.amount - o.refunded) FROM loyalty.orders o
                              WHERE o.customer_id = x.customer_id AND o.counts
                                AND o.ordered_at > p_as_of - s.tier_window AND o.ordered_at <= p_as_of), 0) AS spend
              FROM (SELECT DISTINCT u AS customer_id FROM unnest(p_customers) u WHERE u IS NOT NULL) x
        )
        SELECT sp.customer_id, sp.spend, q.tier AS qual, coalesce(q.min_spend, -1) AS qual_rank,
               ct.customer_id IS NOT NULL AS known, ct.tier AS cur, coalesce(cur.min_spend, -1) AS cur_rank,
               ct.downgrade_at, ct.qualifying_spend
          FROM spend sp
          LEFT JOIN LATERAL (SELECT t.tier, t.min_spend FROM loyalty.tiers t WHERE t.min_spend <= sp.spend
                              ORDER BY t.min_spend DESC LIMIT 1) q ON true
          LEFT JOIN loyalty.customer_tiers ct ON ct.customer_id = sp.customer_id
          LEFT JOIN loyalty.tiers cur ON cur.tier = ct.tier
         ORDER BY sp.customer_id
    LOOP
        IF NOT c.known THEN
            INSERT INTO loyalty.customer_tiers (customer_id, tier, qualifying_spend, since, evaluated_at)
            VALUES (c.customer_id, c.qual, c.spend, p_as_of, p_as_of);
            -- the first evaluation assigns a tier: not an upgrade (tier_changed
            -- campaigns do not congratulate it)
            IF c.qual IS NOT NULL THEN
                INSERT INTO loyalty.tier_history (customer_id, from_tier, to_tier, qualifying_spend, changed_at, reason)
                VALUES (c.customer_id, NULL, c.qual, c.spend, p_as_of, 'assigned');
                changes := changes + 1;
            END IF;
        ELSIF c.qual_rank > c.cur_rank OR (c.cur IS NOT NULL AND c.cur_rank = -1) THEN
            -- up at once (or the tier was deleted from loyalty.tiers: move to what qualifies)
            UPDATE loyalty.customer_tiers SET tier = c.qual, qualifying_spend = c.spend, since = p_as_of,
                   downgrade_at = NULL, evaluated_at = p_as_of
             WHERE customer_id = c.customer_id;
            INSERT INTO loyalty.tier_history (customer_id, from_tier, to_tier, qualifying_spend, changed_at, reason)
            VALUES (c.customer_id, c.cur, c.qual, c.spend,
                    p_as_of, CASE WHEN c.cur IS NOT NULL AND c.cur_rank = -1 THEN 'tier removed' ELSE 'upgrade' END);
            changes := changes + 1;
        ELSIF c.qual_rank = c.cur_rank THEN
            UPDATE loyalty.customer_tiers SET qualifying_spend = c.spend, downgrade_at = NULL, evaluated_at = p_as_of
             WHERE customer_id = c.customer_id AND (qualifying_spend, downgrade_at) IS DISTINCT FROM (c.spend, NULL);
        ELSIF p_as_of >= coalesce(c.downgrade_at, p_as_of + s.tier_grace) THEN
            UPDATE loyalty.customer_tiers SET tier = c.qual, qualifying_spend = c.spend, since = p_as_of,
                   downgrade_at = NULL, evaluated_at = p_as_of
             WHERE customer_id = c.customer_id;
            INSERT INTO loyalty.tier_history (customer_id, from_tier, to_tier, qualifying_spend, changed_at, reason)
            VALUES (c.customer_id, c.cur, c.qual, c.spend, p_as_of, 'downgrade');
            changes := changes + 1;
        ELSE
            UPDATE loyalty.customer_tiers
               SET qualifying_spend = c.spend, downgrade_at = coalesce(c.downgrade_at, p_as_of + s.tier_grace),
                   evaluated_at = p_as_of
             WHERE customer_id = c.customer_id;
        END IF;
    END LOOP;
    RETURN changes;
END
$$;
COMMENT ON TABLE loyalty.tier_history IS 'Every tier change (assigned: the first evaluation of a customer; upgrade; downgrade after the grace period; tier removed)';

-- win-back: a minimum time since the last order
-- loyalty._campaign_params: its final body is in 75_service_notices.sql / 75_ops_hold.sql

-- (win-back campaigns saved before 0.2 get min_days_since_last = 30 in the
-- code until they are saved again: the upgrade leaves the shop's rows alone)

-- journeys: the shop's model decides P(alive) and lapse days
DROP FUNCTION loyalty._p_alive(integer, timestamptz, timestamptz, timestamptz, float8, float8, float8, float8, float8);
CREATE FUNCTION loyalty._p_alive(p_model text, p_purchase_days integer, p_first timestamptz, p_last timestamptz,
                                 p_as_of timestamptz, r float8, alpha float8, a float8, b float8, p_shop_gap float8)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN loyalty._p_alive_days(p_model, p_purchase_days - 1, loyalty._utc_days(p_first, p_last)::float8,
                             loyalty._utc_days(p_first, greatest(p_as_of, p_last))::float8,
                             loyalty._utc_days(p_last, p_as_of)::float8, r, alpha, a, b, p_shop_gap);

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

CREATE FUNCTION loyalty._lapse_day(p_model text, p_purchase_days integer, p_first timestamptz, p_last timestamptz,
                                   p_below float8, r float8, alpha float8, a float8, b float8, p_shop_gap float8)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE loyalty._p_alive_model(p_model, p_purchase_days - 1)
            WHEN 'bgnbd' THEN loyalty._lapse_at(p_purchase_days, p_first, p_last, p_below, r, alpha, a, b, p_shop_gap)
            WHEN 'bgnbd_limit' THEN loyalty._lapse_at(p_purchase_days, p_first, p_last, p_below, r, alpha, a, b, p_shop_gap)
            WHEN 'heuristic' THEN loyalty._lapse_at(p_purchase_days, p_first, p_last, p_below, NULL, NULL, NULL, NULL, p_shop_gap)
            ELSE loyalty._lapse_search(p_model, p_purchase_days, p_first, p_last, p_below, r, alpha, a, b, p_shop_gap) END;

CREATE FUNCTION loyalty._win_back_at(p_lapsed_at timestamptz, p_last timestamptz, p_min_days integer, p_lapse_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_lapsed_at IS NOT NULL
            THEN greatest(p_lapsed_at, p_last + make_interval(days => p_min_days), p_lapse_from) END;

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
           AND loyalty._win_back_at(loyalty._lapse_day(f.model, s.purchase_days, s.first_order_at, s.last_order_at, c.below,
                                                       f.r, f.alpha, f.a, f.b, f.shop_gap),
                                    s.last_order_at, c.min_days, c.lapse_from)
               BETWEEN c.last_as_of - c.valid_for AND c.last_as_of;
    END LOOP;
END
$$;

-- loyalty._occasions: its final body is in 75_service_notices.sql / 75_ops_hold.sql


-- loyalty._due_messages: its final body is in 75_service_notices.sql / 75_ops_hold.sql


COMMENT ON COLUMN loyalty.due_messages.payload IS 'what the template needs (name, points available now, points pending, tier, occasion details) and why (campaign, rule, the scores with P(alive) at the decision time and the model that decided it); for a suppressed occasion its details and the reason';

-- new functions: admin only, as the install's blanket grants do
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'loyalty'::regnamespace AND p.proname = ANY (ARRAY['_utc_days', 'model_inputs_at', '_model_registered', '_model_available', '_p_alive_model', '_p_alive_days', '_expected_days', '_store_scores', '_choose_model', '_p_alive', '_lapse_search', '_lapse_day', '_win_back_at'])
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO loyalty_admin', f);
    END LOOP;
END
$$;

-- RFM: bins must match the segment rules
CREATE OR REPLACE FUNCTION loyalty.configure_rfm(bins integer DEFAULT 5, mode text DEFAULT 'quantile',
                                      recency_bounds float8[] DEFAULT NULL,
                                      frequency_bounds float8[] DEFAULT NULL,
                                      monetary_bounds float8[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b float8[];
    nm text;
    top integer;
BEGIN
    IF bins IS NULL OR bins < 2 OR bins > 10 THEN
        RAISE EXCEPTION 'bins must be between 2 and 10, not %', coalesce(bins::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Five bins (scores 1 to 5) is the usual RFM setting.';
    END IF;
    IF mode IS NULL OR mode NOT IN ('quantile', 'fixed') THEN
        RAISE EXCEPTION 'mode must be ''quantile'' or ''fixed'', not %', coalesce(quote_literal(mode), 'NULL')
              USING ERRCODE = 'invalid_parameter_value', HINT = '''quantile'' splits customers into equal shares; ''fixed'' uses your thresholds.';
    END IF;
    IF mode = 'fixed' THEN
        FOREACH nm IN ARRAY ARRAY['recency_bounds', 'frequency_bounds', 'monetary_bounds'] LOOP
            b := CASE nm WHEN 'recency_bounds' THEN recency_bounds WHEN 'frequency_bounds' THEN frequency_bounds ELSE monetary_bounds END;
            IF b IS NULL OR cardinality(b) <> bins - 1 OR array_position(b, NULL) IS NOT NULL
               OR EXISTS (SELECT 1 FROM unnest(b) WITH ORDINALITY x(v, i) JOIN unnest(b) WITH ORDINALITY y(v, i) ON y.i = x.i + 1 WHERE y.v <= x.v)
               OR EXISTS (SELECT 1 FROM unnest(b) v WHERE v = 'NaN' OR v IN ('Infinity', '-Infinity')) THEN
                RAISE EXCEPTION '% must hold % finite thresholds in ascending order', nm, bins - 1
                      USING ERRCODE = 'invalid_parameter_value',
                            HINT = 'For 5 bins, e.g. recency_bounds => ''{30,90,180,365}'' (days), frequency_bounds => ''{1,2,4,8}''.';
            END IF;
        END LOOP;
    ELSIF recency_bounds IS NOT NULL OR frequency_bounds IS NOT NULL OR monetary_bounds IS NOT NULL THEN
        RAISE EXCEPTION 'thresholds are only used in fixed mode'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass mode => ''fixed'' with the thresholds.';
    END IF;
    -- The segment rules name score ranges (the defaults 1 to 5): with another
    -- number of bins they would silently match other customers or none (no
    -- Champions with 3 bins). Refused rather than rescaled: a rescaled rule is
    -- not the rule the shop wrote.
    SELECT max(greatest(r.r_max, r.f_max, r.m_max)) INTO top FROM loyalty.segment_rules r;
    IF top IS NOT NULL AND top <> bins THEN
        RAISE EXCEPTION 'the segment rules are written for scores 1 to %, not 1 to %', top, bins
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = format('Rewrite loyalty.segment_rules for scores 1 to %s first (UPDATE their r/f/m ranges), then change bins; or keep %s bins.', bins, top);
    END IF;
    UPDATE loyalty.rfm_config c
       SET bins = configure_rfm.bins, mode = configure_rfm.mode, recency_bounds = configure_rfm.recency_bounds,
           frequency_bounds = configure_rfm.frequency_bounds, monetary_bounds = configure_rfm.monetary_bounds;
    -- bounds of the old setting no longer apply
    DELETE FROM loyalty.rfm_bounds;
END
$$;
COMMENT ON FUNCTION loyalty.configure_rfm(integer, text, float8[], float8[], float8[]) IS
'Set RFM bins and mode (quantile, or fixed thresholds); refused when the segment rules are written for another number of bins; takes effect at the next loyalty.refresh()';

-- a tier upgrade gives way to a win-back due in the same run: status superseded
ALTER TABLE loyalty.outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE loyalty.outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('pending', 'sent', 'dead', 'held_out', 'expired', 'cancelled',
                      'no_consent', 'no_contact', 'cooldown', 'capped', 'superseded'));
COMMENT ON COLUMN loyalty.outbox.status IS 'pending (also while a sender holds a lease on it), sent, dead (gave up after the allowed attempts), held_out (holdout group, never sent), expired (missed its validity window), cancelled (the customer opted out before it went out); suppressed by the journeys policy, recorded and never sent: no_consent, no_contact, cooldown, capped, superseded';
-- loyalty.enqueue_due: its final body is in 75_service_notices.sql / 75_ops_hold.sql

COMMENT ON FUNCTION loyalty.enqueue_due(timestamptz) IS
'Write what is due as of as_of into loyalty.outbox (each occasion decided once, ever); returns per active campaign: pending (of which delayed by quiet hours), held_out, expired, suppressed (no consent, no contact, cooldown, capped, superseded)';
COMMENT ON VIEW loyalty.due_messages IS
'What loyalty.enqueue_due() would do now: each occasion not yet in the outbox with its decision (send and quiet_hours become pending messages; held_out, expired, no_consent, no_contact, cooldown, capped and superseded are recorded with that status and never sent) and why';
COMMENT ON COLUMN loyalty.due_messages.occasion IS 'the occasion key (first, order:<ref>, birthday:<year>, ...); with campaign and customer it is the dedupe key';
COMMENT ON COLUMN loyalty.due_messages.occasion_at IS 'when the occasion became due';
COMMENT ON COLUMN loyalty.due_messages.decision IS 'send, quiet_hours (pending, due at due_at), held_out, expired, capped, cooldown, no_consent, no_contact, superseded (a tier upgrade when a win-back of the customer is due in the same run)';
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
           count(*) FILTER (WHERE o.status IN ('no_consent', 'no_contact', 'cooldown', 'capped', 'superseded')) AS suppressed
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
COMMENT ON COLUMN loyalty.campaign_performance.suppressed IS 'occasions the policy decided not to send: no consent, no usable contact, cooldown, frequency cap, or superseded by a contradicting message (statuses no_consent, no_contact, cooldown, capped, superseded)';

-- Statistics for the small settings tables: unanalysed, the planner takes
-- each for hundreds of rows, and a view over a few of them crosses the JIT
-- threshold on a tiny shop (hundreds of milliseconds compiling a plan that
-- runs in one). Analysed once, their estimates follow their size.
ANALYZE loyalty.rfm_config, loyalty.segment_rules, loyalty.model_settings, loyalty.model_fits, loyalty.model_choice,
        loyalty.rewards_settings, loyalty.tiers, loyalty.earn_rules, loyalty.outbox_settings, loyalty.journey_settings,
        loyalty.journey_report_settings, loyalty.campaigns, loyalty.journey_runs;
