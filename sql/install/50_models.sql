-- Churn and lifetime value in the shop's pipeline: fits kept with their
-- diagnostics, per-customer scores computed from the latest fit, and a
-- calibration/holdout check. The models themselves are in src/btyd.c.

CREATE TABLE loyalty.model_settings (
    singleton            boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    horizon_days         integer NOT NULL DEFAULT 90 CHECK (horizon_days BETWEEN 1 AND 3650),
    margin               numeric NOT NULL DEFAULT 1 CHECK (margin > 0 AND margin <= 1),
    annual_discount_rate numeric NOT NULL DEFAULT 0 CHECK (annual_discount_rate >= 0 AND annual_discount_rate < 1),
    min_customers        integer NOT NULL DEFAULT 200 CHECK (min_customers >= 10),
    min_repeat_customers integer NOT NULL DEFAULT 30 CHECK (min_repeat_customers >= 5),
    holdout_days         integer NOT NULL DEFAULT 90 CHECK (holdout_days BETWEEN 7 AND 3650)
);
INSERT INTO loyalty.model_settings DEFAULT VALUES;
COMMENT ON TABLE loyalty.model_settings IS 'Settings of the churn and lifetime value models';
COMMENT ON COLUMN loyalty.model_settings.horizon_days IS 'horizon of expected purchases and CLV';
COMMENT ON COLUMN loyalty.model_settings.margin IS 'share of revenue that is profit, applied to CLV (1 = revenue CLV)';
COMMENT ON COLUMN loyalty.model_settings.annual_discount_rate IS 'yearly discount rate for CLV (0 = none)';
COMMENT ON COLUMN loyalty.model_settings.min_customers IS 'fewer customers than this: no fit, heuristic scores';
COMMENT ON COLUMN loyalty.model_settings.min_repeat_customers IS 'fewer repeat buyers than this: no fit, heuristic scores';
COMMENT ON COLUMN loyalty.model_settings.holdout_days IS 'holdout window of loyalty.model_validation';

-- Change model settings (NULL keeps a setting); bad values get a clear error.
CREATE FUNCTION loyalty.configure_models(horizon_days integer DEFAULT NULL, margin numeric DEFAULT NULL,
                                         annual_discount_rate numeric DEFAULT NULL, min_customers integer DEFAULT NULL,
                                         min_repeat_customers integer DEFAULT NULL, holdout_days integer DEFAULT NULL)
RETURNS loyalty.model_settings
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st loyalty.model_settings;
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
    UPDATE loyalty.model_settings s
       SET horizon_days = coalesce(configure_models.horizon_days, s.horizon_days),
           margin = coalesce(configure_models.margin, s.margin),
           annual_discount_rate = coalesce(configure_models.annual_discount_rate, s.annual_discount_rate),
           min_customers = coalesce(configure_models.min_customers, s.min_customers),
           min_repeat_customers = coalesce(configure_models.min_repeat_customers, s.min_repeat_customers),
           holdout_days = coalesce(configure_models.holdout_days, s.holdout_days)
    RETURNING * INTO st;
    RETURN st;
END
$$;
COMMENT ON FUNCTION loyalty.configure_models(integer, numeric, numeric, integer, integer, integer) IS
'Change churn/CLV settings (NULL keeps a setting); returns the settings in force';

CREATE TABLE loyalty.model_fits (
    fit_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model      text NOT NULL CHECK (model IN ('bgnbd', 'gamma_gamma')),
    status     text NOT NULL CHECK (status IN ('fitted', 'not_converged', 'too_little_data')),
    fitted_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    as_of      timestamptz NOT NULL,
    customers  bigint NOT NULL,
    params     jsonb,
    loglik     float8,
    iterations integer,
    note       text
);
CREATE INDEX model_fits_latest_idx ON loyalty.model_fits (model, fit_id DESC) WHERE status = 'fitted';
COMMENT ON TABLE loyalty.model_fits IS 'Every model fit with its diagnostics; scores use the newest fitted row per model';

-- Per-customer model inputs in days (BTYD convention: one transaction per
-- purchase day; x = repeat purchase days, t_x = first to last purchase day,
-- t = first purchase day to as_of).
CREATE VIEW loyalty.model_inputs AS
SELECT s.customer_id,
       s.purchase_days - 1 AS x,
       ((s.last_order_at AT TIME ZONE 'UTC')::date - (s.first_order_at AT TIME ZONE 'UTC')::date)::float8 AS t_x,
       greatest((now() AT TIME ZONE 'UTC')::date - (s.first_order_at AT TIME ZONE 'UTC')::date,
                (s.last_order_at AT TIME ZONE 'UTC')::date - (s.first_order_at AT TIME ZONE 'UTC')::date)::float8 AS t,
       CASE WHEN s.purchase_days > 1 THEN (s.net_spend - s.first_day_spend) / (s.purchase_days - 1) END AS repeat_value,
       s.avg_spend,
       (now() AT TIME ZONE 'UTC')::date - (s.last_order_at AT TIME ZONE 'UTC')::date AS days_since_last
  FROM loyalty.customer_state s;
COMMENT ON VIEW loyalty.model_inputs IS 'Per-customer BG/NBD and Gamma-Gamma inputs, in days, as of now';
COMMENT ON COLUMN loyalty.model_inputs.x IS 'repeat purchase days';
COMMENT ON COLUMN loyalty.model_inputs.t_x IS 'days from first to last purchase day';
COMMENT ON COLUMN loyalty.model_inputs.t IS 'days from first purchase day to today';
COMMENT ON COLUMN loyalty.model_inputs.repeat_value IS 'mean net spend per repeat purchase day (NULL for one-time buyers)';
COMMENT ON COLUMN loyalty.model_inputs.avg_spend IS 'mean net spend per order';
COMMENT ON COLUMN loyalty.model_inputs.days_since_last IS 'days since the last purchase day';

-- Fit both models on the shop's customers (days); never raises for the data.
CREATE FUNCTION loyalty.fit_models(OUT bgnbd_status text, OUT gamma_gamma_status text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st loyalty.model_settings;
    n bigint;
    n_rep bigint;
    f record;
    g record;
    n_gg bigint;
BEGIN
    SELECT * INTO st FROM loyalty.model_settings;
    SELECT count(*), count(*) FILTER (WHERE x > 0) INTO n, n_rep FROM loyalty.model_inputs;
    IF n < st.min_customers OR n_rep < st.min_repeat_customers THEN
        INSERT INTO loyalty.model_fits (model, status, as_of, customers, note)
        VALUES ('bgnbd', 'too_little_data', now(), n,
                format('%s customers, %s repeat buyers: need %s and %s', n, n_rep, st.min_customers, st.min_repeat_customers)),
               ('gamma_gamma', 'too_little_data', now(), n_rep,
                format('%s repeat buyers: need %s', n_rep, st.min_repeat_customers));
        bgnbd_status := 'too_little_data';
        gamma_gamma_status := 'too_little_data';
        RETURN;
    END IF;

    SELECT (loyalty.bgnbd_fit(x, t_x, t)).* INTO f FROM loyalty.model_inputs;
    bgnbd_status := CASE WHEN f.converged THEN 'fitted' ELSE 'not_converged' END;
    INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, loglik, iterations, note)
    VALUES ('bgnbd', bgnbd_status, now(), n,
            jsonb_build_object('r', f.r, 'alpha', f.alpha, 'a', f.a, 'b', f.b), f.loglik, f.iterations,
            CASE WHEN NOT f.converged THEN 'optimiser did not converge; scores keep the last fitted parameters or the heuristic' END);
    IF f.converged THEN
        PERFORM loyalty._journeys_refitted();   -- win-back lapse days moved (71_journeys_due.sql)
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
    INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, loglik, iterations, note)
    VALUES ('gamma_gamma', gamma_gamma_status, now(), n_gg,
            jsonb_build_object('p', g.p, 'q', g.q, 'gamma', g.gamma), g.loglik, g.iterations,
            CASE WHEN NOT g.converged THEN 'optimiser did not converge; scores keep the last fitted parameters or the heuristic' END);
END
$$;
COMMENT ON FUNCTION loyalty.fit_models() IS 'Fit BG/NBD and Gamma-Gamma on the shop''s customers (days) into loyalty.model_fits';

-- The newest successful fit of each model, as one row (NULLs when none).
CREATE VIEW loyalty.current_fits AS
SELECT b.fit_id AS bgnbd_fit_id,
       (b.params->>'r')::float8 AS r, (b.params->>'alpha')::float8 AS alpha,
       (b.params->>'a')::float8 AS a, (b.params->>'b')::float8 AS b,
       g.fit_id AS gamma_gamma_fit_id,
       (g.params->>'p')::float8 AS p, (g.params->>'q')::float8 AS q, (g.params->>'gamma')::float8 AS gamma
  FROM (SELECT 1) one
  LEFT JOIN LATERAL (SELECT * FROM loyalty.model_fits WHERE model = 'bgnbd' AND status = 'fitted' ORDER BY fit_id DESC LIMIT 1) b ON true
  LEFT JOIN LATERAL (SELECT * FROM loyalty.model_fits WHERE model = 'gamma_gamma' AND status = 'fitted' ORDER BY fit_id DESC LIMIT 1) g ON true;
COMMENT ON VIEW loyalty.current_fits IS 'Parameters of the newest fitted BG/NBD and Gamma-Gamma models';

-- The shop's mean gap between purchase days of repeat buyers (the heuristic's gap for customers without one of their own; also used by the journeys).
CREATE FUNCTION loyalty._shop_gap()
RETURNS float8
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(avg(t_x / x) FILTER (WHERE x > 0 AND t_x > 0), 90) FROM loyalty.model_inputs
$$;

-- Scores, computed when read from the current state and fits.
-- Heuristic (no BG/NBD fit yet): the customer's typical gap between purchase
-- days (their own mean gap, else the shop's mean gap of repeat buyers, else
-- 90 days); p_alive = exp(-days since last purchase / gap), the exponent
-- floored at -700 so that it never underflows; expected purchases
-- = p_alive * horizon / gap. Without a Gamma-Gamma fit the expected order
-- value is the customer's mean order value.
CREATE VIEW loyalty.customer_scores AS
WITH st AS (SELECT * FROM loyalty.model_settings),
     f AS (SELECT * FROM loyalty.current_fits),
     shop_gap AS (SELECT loyalty._shop_gap() AS gap)
SELECT i.customer_id,
       sc.p_alive,
       1 - sc.p_alive AS churn_risk,
       sc.expected_90d AS expected_purchases_90d,
       sc.expected_order_value,
       round((st.margin * sc.expected_order_value::numeric * sc.expected_horizon::numeric
              / power(1 + st.annual_discount_rate, st.horizon_days / 365.0 / 2))::numeric, 2) AS predicted_clv,
       st.horizon_days,
       CASE WHEN f.bgnbd_fit_id IS NOT NULL THEN 'bgnbd' ELSE 'heuristic' END AS model,
       f.bgnbd_fit_id,
       f.gamma_gamma_fit_id
  FROM loyalty.model_inputs i
 CROSS JOIN st CROSS JOIN f CROSS JOIN shop_gap
 CROSS JOIN LATERAL (SELECT CASE WHEN i.x > 0 AND i.t_x > 0 THEN i.t_x / i.x ELSE shop_gap.gap END AS gap) g
 CROSS JOIN LATERAL (
    SELECT CASE WHEN f.bgnbd_fit_id IS NOT NULL
                THEN loyalty.bgnbd_p_alive(i.x, i.t_x, i.t, f.r, f.alpha, f.a, f.b)
                ELSE exp(greatest(-700, -i.days_since_last / g.gap)) END AS p_alive,
           CASE WHEN f.bgnbd_fit_id IS NOT NULL
                THEN loyalty.bgnbd_expected(90, i.x, i.t_x, i.t, f.r, f.alpha, f.a, f.b)
                ELSE exp(greatest(-700, -i.days_since_last / g.gap)) * 90 / g.gap END AS expected_90d,
           CASE WHEN f.bgnbd_fit_id IS NOT NULL
                THEN loyalty.bgnbd_expected(st.horizon_days, i.x, i.t_x, i.t, f.r, f.alpha, f.a, f.b)
                ELSE exp(greatest(-700, -i.days_since_last / g.gap)) * st.horizon_days / g.gap END AS expected_horizon,
           CASE WHEN f.gamma_gamma_fit_id IS NOT NULL AND i.x > 0 AND i.repeat_value > 0
                THEN loyalty.gamma_gamma_mean(i.x, i.repeat_value::float8, f.p, f.q, f.gamma)
                WHEN f.gamma_gamma_fit_id IS NOT NULL AND f.q > 1
                THEN f.p * f.gamma / (f.q - 1)
                ELSE i.avg_spend::float8 END AS expected_order_value
 ) sc;
COMMENT ON VIEW loyalty.customer_scores IS 'Churn risk and lifetime value per customer (BG/NBD + Gamma-Gamma, or a heuristic when there is too little data)';
COMMENT ON COLUMN loyalty.customer_scores.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.customer_scores.p_alive IS 'probability the customer is still a customer (will buy again at their own rate)';
COMMENT ON COLUMN loyalty.customer_scores.churn_risk IS '1 - p_alive';
COMMENT ON COLUMN loyalty.customer_scores.expected_purchases_90d IS 'expected purchase days in the next 90 days';
COMMENT ON COLUMN loyalty.customer_scores.expected_order_value IS 'expected spend per purchase (Gamma-Gamma, shrunk towards the shop mean)';
COMMENT ON COLUMN loyalty.customer_scores.predicted_clv IS 'margin * expected purchases in horizon_days * expected order value, discounted to mid-horizon';
COMMENT ON COLUMN loyalty.customer_scores.horizon_days IS 'the horizon used';
COMMENT ON COLUMN loyalty.customer_scores.model IS 'bgnbd, or heuristic while there is too little data to fit';
COMMENT ON COLUMN loyalty.customer_scores.bgnbd_fit_id IS 'the loyalty.model_fits row used';
COMMENT ON COLUMN loyalty.customer_scores.gamma_gamma_fit_id IS 'the loyalty.model_fits row used for order value';

-- Calibration/holdout check: refit BG/NBD on the data up to holdout_days ago,
-- predict each customer's repeat purchase days in the holdout window and
-- compare with what happened, per calibration frequency (0..6, 7+). The
-- result is a row type of its own, so that the argument a caller names,
-- holdout_days, can also be a column of the result.
CREATE TYPE loyalty.holdout_check AS (
    calibration_repeats text, customers bigint, predicted_avg float8, actual_avg float8,
    predicted_total float8, actual_total bigint, holdout_days integer, fit_converged boolean);
CREATE FUNCTION loyalty.validate_models(holdout_days integer DEFAULT NULL)
RETURNS SETOF loyalty.holdout_check
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h integer := coalesce(validate_models.holdout_days, (SELECT s.holdout_days FROM loyalty.model_settings s));
    cal_end date;
    f record;
BEGIN
    IF h < 1 THEN
        RAISE EXCEPTION 'holdout_days must be at least 1'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pick a window the shop can wait for, e.g. 90 days.';
    END IF;
    cal_end := (now() AT TIME ZONE 'UTC')::date - h;
    RETURN QUERY
    WITH days AS (
        SELECT DISTINCT o.customer_id, (o.ordered_at AT TIME ZONE 'UTC')::date AS d
          FROM loyalty.orders o WHERE o.counts
    ), cal AS (
        SELECT customer_id, count(*) FILTER (WHERE d < cal_end) - 1 AS x,
               (max(d) FILTER (WHERE d < cal_end) - min(d))::float8 AS t_x,
               (cal_end - min(d))::float8 AS t,
               count(*) FILTER (WHERE d >= cal_end) AS actual
          FROM days GROUP BY customer_id HAVING min(d) < cal_end
    ), fit AS (
        SELECT (loyalty.bgnbd_fit(x::int, t_x, t)).* FROM cal
    )
    SELECT CASE WHEN c.x >= 7 THEN '7+' ELSE c.x::text END,
           count(*), avg(p.pred), avg(c.actual)::float8, sum(p.pred), sum(c.actual)::bigint, h, bool_and(fit.converged)
      FROM cal c CROSS JOIN fit
     CROSS JOIN LATERAL (SELECT loyalty.bgnbd_expected(h, c.x::int, c.t_x, c.t, fit.r, fit.alpha, fit.a, fit.b) AS pred) p
     GROUP BY 1 ORDER BY min(c.x);
END
$$;
COMMENT ON FUNCTION loyalty.validate_models(integer) IS 'Predicted vs actual repeat purchase days in a holdout window, per calibration frequency';

CREATE VIEW loyalty.model_validation AS SELECT * FROM loyalty.validate_models();
COMMENT ON VIEW loyalty.model_validation IS 'Is the churn model trustworthy here? Predicted vs actual repeat purchases over the last holdout_days, per frequency bin';
COMMENT ON COLUMN loyalty.model_validation.calibration_repeats IS 'repeat purchase days before the holdout window (bin)';
COMMENT ON COLUMN loyalty.model_validation.customers IS 'customers in the bin';
COMMENT ON COLUMN loyalty.model_validation.predicted_avg IS 'mean predicted purchase days in the holdout window';
COMMENT ON COLUMN loyalty.model_validation.actual_avg IS 'mean actual purchase days in the holdout window';
COMMENT ON COLUMN loyalty.model_validation.predicted_total IS 'predicted purchase days, summed';
COMMENT ON COLUMN loyalty.model_validation.actual_total IS 'actual purchase days, summed';
COMMENT ON COLUMN loyalty.model_validation.holdout_days IS 'the holdout window';
COMMENT ON COLUMN loyalty.model_validation.fit_converged IS 'whether the calibration fit converged';
