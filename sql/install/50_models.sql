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
    holdout_days         integer NOT NULL DEFAULT 90 CHECK (holdout_days BETWEEN 7 AND 3650),
    models               text[] NOT NULL DEFAULT '{bgnbd,heuristic}'
                         CHECK (models <@ '{bgnbd,mbgnbd,pareto_nbd,heuristic}' AND 'heuristic' = ANY (models)),
    refit_tolerance      float8 NOT NULL DEFAULT 0.01 CHECK (refit_tolerance >= 0 AND refit_tolerance <= 0.1)
);
INSERT INTO loyalty.model_settings DEFAULT VALUES;
COMMENT ON TABLE loyalty.model_settings IS 'Settings of the churn and lifetime value models';
SELECT pg_catalog.pg_extension_config_dump('loyalty.model_settings', '');
COMMENT ON COLUMN loyalty.model_settings.horizon_days IS 'horizon of expected purchases and CLV';
COMMENT ON COLUMN loyalty.model_settings.margin IS 'share of revenue that is profit, applied to CLV (1 = revenue CLV)';
COMMENT ON COLUMN loyalty.model_settings.annual_discount_rate IS 'yearly discount rate for CLV (0 = none)';
COMMENT ON COLUMN loyalty.model_settings.min_customers IS 'fewer customers than this: no fit, heuristic scores';
COMMENT ON COLUMN loyalty.model_settings.min_repeat_customers IS 'fewer repeat buyers than this: no fit, heuristic scores';
COMMENT ON COLUMN loyalty.model_settings.holdout_days IS 'holdout window of loyalty.model_validation';
COMMENT ON COLUMN loyalty.model_settings.models IS 'models refresh() fits and validate_models() compares on the holdout window; the best decides (heuristic is always one)';
COMMENT ON COLUMN loyalty.model_settings.refit_tolerance IS 'a refit the same UTC day whose every parameter is within this fraction of the fit in force confirms it: the fit, stored scores and lapse days stay (0: every refit comes into force)';

-- Change model settings (NULL keeps a setting); bad values get a clear error.
CREATE FUNCTION loyalty.configure_models(horizon_days integer DEFAULT NULL, margin numeric DEFAULT NULL,
                                         annual_discount_rate numeric DEFAULT NULL, min_customers integer DEFAULT NULL,
                                         min_repeat_customers integer DEFAULT NULL, holdout_days integer DEFAULT NULL,
                                         models text[] DEFAULT NULL, refit_tolerance float8 DEFAULT NULL)
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
    IF refit_tolerance IS NOT NULL AND NOT (refit_tolerance >= 0 AND refit_tolerance <= 0.1) THEN
        RAISE EXCEPTION 'refit_tolerance must be between 0 and 0.1, not %', refit_tolerance
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'A fraction of each parameter, e.g. 0.01 (the default); 0 puts every refit in force.';
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
           holdout_days = coalesce(configure_models.holdout_days, s.holdout_days),
           refit_tolerance = coalesce(configure_models.refit_tolerance, s.refit_tolerance)
    RETURNING * INTO st;
    -- stored scores follow the settings they are computed with
    IF configure_models.horizon_days IS NOT NULL OR configure_models.margin IS NOT NULL
       OR configure_models.annual_discount_rate IS NOT NULL OR configure_models.models IS NOT NULL THEN
        PERFORM loyalty._store_scores(now(), NULL);
    END IF;
    RETURN st;
END
$$;
COMMENT ON FUNCTION loyalty.configure_models(integer, numeric, numeric, integer, integer, integer, text[], float8) IS
'Change churn/CLV settings (NULL keeps a setting), including the models to fit and compare; returns the settings in force';

CREATE TABLE loyalty.model_fits (
    fit_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model      text NOT NULL CHECK (model IN ('bgnbd', 'gamma_gamma', 'heuristic', 'mbgnbd', 'pareto_nbd')),
    status     text NOT NULL CHECK (status IN ('fitted', 'confirmed', 'not_converged', 'too_little_data')),
    fitted_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    as_of      timestamptz NOT NULL,
    customers  bigint NOT NULL,
    params     jsonb,
    loglik     float8,
    iterations integer,
    note       text,
    inputs_hash bigint
);
CREATE INDEX model_fits_latest_idx ON loyalty.model_fits (model, fit_id DESC) WHERE status = 'fitted';
COMMENT ON TABLE loyalty.model_fits IS 'Every model fit with its diagnostics; scores use the newest fitted row per model (the fit in force)';
COMMENT ON COLUMN loyalty.model_fits.status IS 'fitted (in force until a later fitted row), confirmed (a refit the same UTC day within model_settings.refit_tolerance of the fit in force, which stays), not_converged, too_little_data';
COMMENT ON COLUMN loyalty.model_fits.inputs_hash IS 'fingerprint of the model inputs fitted (x, t_x, t, repeat_value; t moves with the UTC day), taken when MBG/NBD or Pareto/NBD is enabled: their refit the same day to the same inputs reuses this fit''s result';
SELECT pg_catalog.pg_extension_config_dump('loyalty.model_fits', '');

-- Per-customer model inputs in days (BTYD convention: one transaction per
-- purchase day; x = repeat purchase days, t_x = first to last purchase day,
-- t = first purchase day to as_of). The one definition: customer scores,
-- fits and the journeys' P(alive) and lapse days all derive them from these
-- helpers. An order dated after as_of (within the intake's clock-skew
-- tolerance) is clamped: t never below t_x, days since the last purchase
-- never negative (loyalty._utc_days, 00_base.sql), so P(alive) never rises
-- above the value at that order.

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

CREATE VIEW loyalty.model_inputs AS SELECT * FROM loyalty.model_inputs_at(pg_catalog.now());
COMMENT ON VIEW loyalty.model_inputs IS 'Per-customer BG/NBD and Gamma-Gamma inputs, in days, as of now';
COMMENT ON COLUMN loyalty.model_inputs.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.model_inputs.x IS 'repeat purchase days';
COMMENT ON COLUMN loyalty.model_inputs.t_x IS 'days from first to last purchase day';
COMMENT ON COLUMN loyalty.model_inputs.t IS 'days from first purchase day to today';
COMMENT ON COLUMN loyalty.model_inputs.repeat_value IS 'mean net spend per repeat purchase day (NULL for one-time buyers)';
COMMENT ON COLUMN loyalty.model_inputs.avg_spend IS 'mean net spend per order';
COMMENT ON COLUMN loyalty.model_inputs.days_since_last IS 'days since the last purchase day';

-- ------------------------------------------------------------ the models
--
-- Which model decides a customer's P(alive), and its value, from the inputs
-- above. p_model is the shop's model (loyalty.current_model.model); the four
-- parameters are the model's own in the order of its fit (r, alpha, a, b for
-- BG/NBD; r, alpha, s, beta for Pareto/NBD).
--   bgnbd        BG/NBD [FHL05 eq. 13] for customers with repeat purchases.
--   bgnbd_limit  a fit on the boundary a, b -> infinity with p = a/(a+b)
--                fixed: every customer drops out with the same probability p
--                after each purchase (no heterogeneity in dropout). The limit
--                of eq. 13 is 1 / (1 + p/(1-p) ((alpha+T)/(alpha+t_x))^(r+x)).
--   heuristic    exp(-d / gap), d days since the last purchase day, gap =
--                (t_x + G) / (x + 1): the customer's own gaps shrunk towards
--                the shop's mean gap G (loyalty.current_model.shop_gap) by one
--                pseudo-gap, the exponent floored at -700.
-- BG/NBD puts P(alive) = 1 for a one-time buyer by construction (it cannot
-- see them): under bgnbd and bgnbd_limit, one-time buyers get the heuristic,
-- and the model column says so.
-- MBG/NBD and Pareto/NBD (src/mbgnbd.c, src/pareto_nbd.c; Pareto/NBD's s and
-- beta travel in the a and b arguments) see one-time buyers themselves.
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

-- Expected purchase days in the next p_horizon days, by the same model.
--   bgnbd_limit: alive, with rate lambda ~ Gamma(r+x, alpha+T), a customer
--   buys at rate lambda until a purchase ends it (probability p): expected
--   (1 - e^(-lambda p h))/p, over lambda (1/p)(1 - ((alpha+T)/(alpha+T+p h))^(r+x)),
--   times P(alive); the limit of [FHL05 eq. 10] as a, b -> infinity.
--   heuristic: P(alive) * horizon / gap.
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
COMMENT ON COLUMN loyalty.current_fits.bgnbd_fit_id IS 'the loyalty.model_fits row of the newest fitted BG/NBD (NULL: none)';
COMMENT ON COLUMN loyalty.current_fits.r IS 'BG/NBD r: shape of the Gamma distribution of purchase rates (Fader, Hardie and Lee 2005)';
COMMENT ON COLUMN loyalty.current_fits.alpha IS 'BG/NBD alpha: scale of the Gamma distribution of purchase rates, in days';
COMMENT ON COLUMN loyalty.current_fits.a IS 'BG/NBD a: first shape of the Beta distribution of dropout probabilities';
COMMENT ON COLUMN loyalty.current_fits.b IS 'BG/NBD b: second shape of the Beta distribution of dropout probabilities';
COMMENT ON COLUMN loyalty.current_fits.gamma_gamma_fit_id IS 'the loyalty.model_fits row of the newest fitted Gamma-Gamma (NULL: none)';
COMMENT ON COLUMN loyalty.current_fits.p IS 'Gamma-Gamma p: shape of the Gamma distribution of a customer''s order values (Fader and Hardie 2013)';
COMMENT ON COLUMN loyalty.current_fits.q IS 'Gamma-Gamma q: shape of the Gamma distribution of the order-value scale across customers';
COMMENT ON COLUMN loyalty.current_fits.gamma IS 'Gamma-Gamma gamma: scale of the Gamma distribution of the order-value scale across customers';

-- The shop's mean gap between purchase days of repeat buyers (the heuristic's gap for customers without one of their own; also used by the journeys).
CREATE FUNCTION loyalty._shop_gap()
RETURNS float8
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(avg(t_x / x) FILTER (WHERE x > 0 AND t_x > 0), 90) FROM loyalty.model_inputs
$$;

-- A fit is deterministic (src/btyd_agg.c: a parallel fit equals the serial
-- one), so a refit to the same inputs (the newest fit of the model has the
-- same fingerprint of the model inputs, _fit_models) would return the same
-- result: that result is recorded again as this fit, and its status
-- returned; NULL when the inputs may differ. The inputs include t, which
-- moves with the UTC day. For the models fitted without a warm start
-- (MBG/NBD, Pareto/NBD).
CREATE FUNCTION loyalty._fit_reused(p_model text, p_inputs_hash bigint)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, loglik, iterations, note, inputs_hash)
    SELECT f.model, f.status, now(), f.customers, f.params, f.loglik, f.iterations, f.note, f.inputs_hash
      FROM (SELECT * FROM loyalty.model_fits mf WHERE mf.model = p_model ORDER BY mf.fit_id DESC LIMIT 1) f
     WHERE f.inputs_hash = p_inputs_hash AND f.params IS NOT NULL
       AND loyalty._utc_date(f.as_of) = loyalty._utc_date(now())
    RETURNING status
$$;

-- Whether two fits' parameters (model_fits.params) agree: the same keys,
-- every number within p_tolerance of the old one relative to it, every
-- other value (the boundary's limit flag) equal.
CREATE FUNCTION loyalty._params_within(p_old jsonb, p_new jsonb, p_tolerance float8)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN NOT EXISTS (
    SELECT 1
      FROM jsonb_each(p_old) o FULL JOIN jsonb_each(p_new) n ON n.key = o.key
     WHERE o.key IS NULL OR n.key IS NULL
        OR CASE WHEN jsonb_typeof(o.value) = 'number' AND jsonb_typeof(n.value) = 'number'
                THEN abs(n.value::float8 - o.value::float8) > p_tolerance * abs(o.value::float8)
                ELSE o.value IS DISTINCT FROM n.value END);

-- Record a fit of p_model. A converged refit the same UTC day as the fit in
-- force (the model's newest 'fitted' row, which current_model and
-- current_fits read) whose every parameter is within
-- model_settings.refit_tolerance of it is recorded as 'confirmed': the fit
-- in force stays, and so do the stored scores and the win-back lapse days
-- computed with it (a refit after a few new orders moves every parameter a
-- little, and would otherwise rescore every customer). The first fit of a
-- UTC day always comes into force: the day moved every customer's inputs.
-- Returns the status recorded.
CREATE FUNCTION loyalty._record_fit(p_model text, p_status text, p_customers bigint, p_params jsonb, p_loglik float8,
                                    p_iterations integer, p_note text, p_inputs_hash bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kept bigint;
    tol float8;
BEGIN
    IF p_status = 'fitted' THEN
        SELECT f.fit_id, st.refit_tolerance INTO kept, tol
          FROM (SELECT mf.fit_id, mf.as_of, mf.params FROM loyalty.model_fits mf
                 WHERE mf.model = p_model AND mf.status = 'fitted' ORDER BY mf.fit_id DESC LIMIT 1) f,
               loyalty.model_settings st
         WHERE st.refit_tolerance > 0
           AND loyalty._utc_date(f.as_of) = loyalty._utc_date(now())
           AND loyalty._params_within(f.params, p_params, st.refit_tolerance);
        IF kept IS NOT NULL THEN
            p_status := 'confirmed';
            p_note := concat_ws('; ', p_note, format('every parameter within %s%% of fit %s, which stays in force',
                                                    round((tol * 100)::numeric, 4)::float8, kept));
        END IF;
    END IF;
    INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, loglik, iterations, note, inputs_hash)
    VALUES (p_model, p_status, now(), p_customers, p_params, p_loglik, p_iterations, p_note, p_inputs_hash);
    RETURN p_status;
END
$$;

-- Fit the enabled models on the shop's customers (days) into
-- loyalty.model_fits (_record_fit: a refit within the tolerance of the fit
-- in force confirms it); never raises for the data. The heuristic's one
-- parameter is the shop's mean gap between purchase days of repeat buyers
-- (90 without any). A BG/NBD maximum on the boundary (a and b beyond 1e6
-- with a/(a+b) settled: dropout without heterogeneity) is a fit of the limit
-- model, kept as fitted with params.limit = true (see _p_alive_days).
-- Then the holdout comparison picks the model that decides, when stale.
-- One pass over the model inputs counts them, takes the shop gap, and fits
-- BG/NBD and Gamma-Gamma, each started at its fit in force (a refit after
-- new orders takes a few passes over the compressed rows, not twenty); the
-- other enabled models are fitted one pass each, and reuse their fit when
-- the fingerprint of the inputs is unchanged (_fit_reused).
-- (loyalty.fit_models, 74_pipeline.sql, then tells the journeys.)
CREATE FUNCTION loyalty._fit_models(OUT bgnbd_status text, OUT gamma_gamma_status text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off   -- per-row model expressions: compiling them costs seconds, running them milliseconds
AS $$
DECLARE
    st loyalty.model_settings;
    cf loyalty.current_fits;
    n bigint;
    n_rep bigint;
    gap float8;
    fits record;
    f loyalty.bgnbd_fit_result;
    g loyalty.gamma_gamma_fit_result;
    o record;
    n_gg bigint;
    fp bigint;
    fit_bg boolean;
    others boolean;
    bg_start float8[];
    gg_start float8[];
    m text;
    lim boolean;
    plim boolean;
    mst text;
BEGIN
    SELECT * INTO st FROM loyalty.model_settings;
    SELECT * INTO cf FROM loyalty.current_fits;
    fit_bg := 'bgnbd' = ANY (st.models);
    others := st.models && '{mbgnbd,pareto_nbd}'::text[];
    bg_start := CASE WHEN cf.bgnbd_fit_id IS NOT NULL THEN ARRAY[cf.r, cf.alpha, cf.a, cf.b] END;
    gg_start := CASE WHEN cf.gamma_gamma_fit_id IS NOT NULL THEN ARRAY[cf.p, cf.q, cf.gamma] END;
    -- the gap rounded to 1e-9 days: a parallel scan sums in another order each
    -- time. The fingerprint is a sum of row hashes: the order of a (parallel)
    -- scan does not change it.
    SELECT count(*) AS n, count(*) FILTER (WHERE i.x > 0) AS n_rep,
           round(avg(i.t_x / i.x) FILTER (WHERE i.x > 0 AND i.t_x > 0)::numeric, 9) AS gap,
           count(*) FILTER (WHERE i.x > 0 AND i.repeat_value > 0) AS n_gg,
           sum(hash_record(ROW(i.x, i.t_x, i.t, i.repeat_value))) FILTER (WHERE others) AS fp,
           loyalty.bgnbd_fit(i.x, i.t_x, i.t, bg_start) FILTER (WHERE fit_bg) AS bg,
           loyalty.gamma_gamma_fit(i.x, i.repeat_value::float8, gg_start) FILTER (WHERE i.x > 0 AND i.repeat_value > 0) AS gg
      INTO fits FROM loyalty.model_inputs i;
    n := fits.n; n_rep := fits.n_rep; gap := fits.gap; n_gg := fits.n_gg; fp := fits.fp; f := fits.bg; g := fits.gg;
    PERFORM loyalty._record_fit('heuristic', 'fitted', n, jsonb_build_object('shop_gap', coalesce(gap, 90)), NULL, NULL,
                                CASE WHEN gap IS NULL THEN 'no repeat buyers yet: a gap of 90 days' END, fp);
    bgnbd_status := CASE WHEN fit_bg THEN NULL ELSE 'not_enabled' END;
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

    IF fit_bg THEN
        lim := least(f.a, f.b) >= 1e6 AND f.loglik > '-Infinity' AND f.r > 0 AND f.alpha > 0;
        bgnbd_status := loyalty._record_fit('bgnbd', CASE WHEN f.converged OR lim THEN 'fitted' ELSE 'not_converged' END, n,
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
        EXECUTE format('SELECT (loyalty.%s_fit(x, t_x, t)).* FROM loyalty.model_inputs', m) INTO o;
        mst := CASE WHEN (to_jsonb(o)->>'converged')::boolean THEN 'fitted' ELSE 'not_converged' END;
        -- MBG/NBD on its boundary a, b -> infinity: mbgnbd_fit fits that limit
        -- and reports it with min(a, b) = 1e12, a/(a+b) = p (src/btyd.c)
        lim := m = 'mbgnbd' AND mst = 'fitted' AND least((to_jsonb(o)->>'a')::float8, (to_jsonb(o)->>'b')::float8) >= 1e6;
        -- Pareto/NBD on its boundary s, beta -> infinity: one dropout rate
        -- mu = s/beta for everyone, fitted as that limit by pareto_nbd_fit and
        -- reported with min(s, beta) = 1e12 (src/pareto_nbd.c)
        plim := m = 'pareto_nbd' AND mst = 'fitted' AND least((to_jsonb(o)->>'s')::float8, (to_jsonb(o)->>'beta')::float8) >= 1e6;
        PERFORM loyalty._record_fit(m, mst, n,
                to_jsonb(o) - 'loglik' - 'converged' - 'iterations'
                || CASE WHEN lim THEN jsonb_build_object('limit', true, 'p', (to_jsonb(o)->>'a')::float8
                                                           / ((to_jsonb(o)->>'a')::float8 + (to_jsonb(o)->>'b')::float8))
                        WHEN plim THEN jsonb_build_object('limit', true, 'mu', (to_jsonb(o)->>'s')::float8 / (to_jsonb(o)->>'beta')::float8)
                        ELSE '{}' END,
                o.loglik, o.iterations,
                CASE WHEN lim THEN format('maximum on the boundary a, b -> infinity: every customer drops out with probability %s at each purchase, the first included (MBG/NBD without heterogeneity in dropout); fitted and scored as that limit',
                                          round(((to_jsonb(o)->>'a')::float8 / ((to_jsonb(o)->>'a')::float8 + (to_jsonb(o)->>'b')::float8))::numeric, 4))
                     WHEN plim THEN format('maximum on the boundary s, beta -> infinity: every customer drops out at the same rate %s per day, a mean lifetime of %s days (Pareto/NBD without heterogeneity in dropout); fitted and scored as that limit',
                                           round(((to_jsonb(o)->>'s')::float8 / (to_jsonb(o)->>'beta')::float8)::numeric, 5),
                                           round(((to_jsonb(o)->>'beta')::float8 / (to_jsonb(o)->>'s')::float8)::numeric))
                     WHEN mst = 'not_converged' THEN 'optimiser did not converge' END,
                fp);
    END LOOP;
    PERFORM loyalty._choose_model(false);

    IF n_gg < st.min_repeat_customers THEN
        gamma_gamma_status := 'too_little_data';
        INSERT INTO loyalty.model_fits (model, status, as_of, customers, note)
        VALUES ('gamma_gamma', gamma_gamma_status, now(), n_gg,
                format('%s repeat buyers with positive spend: need %s', n_gg, st.min_repeat_customers));
    ELSE
        gamma_gamma_status := loyalty._record_fit('gamma_gamma', CASE WHEN g.converged THEN 'fitted' ELSE 'not_converged' END, n_gg,
                jsonb_build_object('p', g.p, 'q', g.q, 'gamma', g.gamma), g.loglik, g.iterations,
                CASE WHEN NOT g.converged THEN 'optimiser did not converge; scores keep the last fitted parameters or the heuristic' END,
                fp);
    END IF;
END
$$;

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
COMMENT ON VIEW loyalty.current_model IS 'The model that decides P(alive), expected purchases and win-back lapse days now, with its parameters (bgnbd, bgnbd_limit, mbgnbd, pareto_nbd, heuristic); one-time buyers under BG/NBD are judged by the heuristic';
COMMENT ON COLUMN loyalty.current_model.r IS 'the model''s r (shape of the purchase-rate distribution); NULL for the heuristic';
COMMENT ON COLUMN loyalty.current_model.alpha IS 'the model''s alpha (scale of the purchase-rate distribution, in days); NULL for the heuristic';
COMMENT ON COLUMN loyalty.current_model.heuristic_fit_id IS 'the loyalty.model_fits row of the newest heuristic fit (its shop_gap); NULL before any fit';
COMMENT ON COLUMN loyalty.current_model.model IS 'bgnbd, bgnbd_limit (BG/NBD fit on its boundary: dropout without heterogeneity), mbgnbd, pareto_nbd (both also when fitted on their boundary, model_fits.params.limit), or heuristic (chosen, or no usable fit of the chosen model)';
COMMENT ON COLUMN loyalty.current_model.fit_id IS 'the loyalty.model_fits row of the model (NULL for the heuristic)';
COMMENT ON COLUMN loyalty.current_model.a IS 'BG/NBD and MBG/NBD a, Pareto/NBD s; NULL for the heuristic';
COMMENT ON COLUMN loyalty.current_model.b IS 'BG/NBD and MBG/NBD b, Pareto/NBD beta; NULL for the heuristic';
COMMENT ON COLUMN loyalty.current_model.shop_gap IS 'the heuristic''s mean gap between purchase days of repeat buyers, in days';
COMMENT ON COLUMN loyalty.current_model.reason IS 'why this model (loyalty.model_choice)';

-- Scores, stored: written for every customer by loyalty.refresh() (after the
-- fits) and for the customers an order changed (loyalty._recompute_customers),
-- so reading them is a scan. P(alive) and expected purchases come from
-- loyalty.current_model per customer (_p_alive_days, _expected_days: the
-- heuristic for one-time buyers under BG/NBD); without a Gamma-Gamma fit the
-- expected order value is the customer's mean order value.
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
) WITH (fillfactor = 45);   -- a rescore rewrites every row: room on its page for a HOT update (see _store_scores)
COMMENT ON TABLE loyalty.stored_scores IS 'Per-customer scores as last computed (read them through loyalty.customer_scores)';
-- derived, but dumped, so that a restored database has its scores at once
SELECT pg_catalog.pg_extension_config_dump('loyalty.stored_scores', '');

-- What everyone's stored scores were last computed with: the model and its
-- parameters, the Gamma-Gamma fit, the settings, and the UTC day of as_of
-- (the inputs are whole UTC days, so within a day they change only with the
-- customer's state). While it holds, a refresh rescores only the customers
-- whose state changed (queued in loyalty.score_queue). NULL: not known (a
-- backfill changes customers without queueing them), so the next refresh
-- rescores everyone. Not dumped: a restored database rescores everyone once.
CREATE TABLE loyalty.score_basis (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    basis     jsonb
);
INSERT INTO loyalty.score_basis DEFAULT VALUES;
COMMENT ON TABLE loyalty.score_basis IS 'Model, parameters, settings and day every stored score was last computed with (NULL: rescore everyone)';

-- One customer's stored values from the customer's loyalty.customer_state
-- columns as of as_of, under the model p_model with its parameters (as in
-- loyalty.current_model) and, when gamma_gamma, the Gamma-Gamma fit p, q,
-- gamma: the deciding model (loyalty._p_alive_model), P(alive)
-- (_p_alive_days), expected purchase days in 90 days (e90) and in horizon
-- days (eh) (_expected_days, the inputs as loyalty.model_inputs_at derives
-- them), and the expected order value (Gamma-Gamma for repeat buyers with a
-- positive repeat spend, else its population mean; without a fit the mean
-- order value). Those SQL definitions written out in C (src/scores.c),
-- operation for operation, so the values are the same bit for bit: a pass
-- over a million customers costs a fraction of the SQL expressions.
CREATE FUNCTION loyalty._score_values(first_order_at timestamptz, last_order_at timestamptz, purchase_days integer,
                                      net_spend numeric, first_day_spend numeric, avg_spend numeric,
                                      as_of timestamptz, p_model text, r float8, alpha float8, a float8, b float8,
                                      shop_gap float8, gamma_gamma boolean, p float8, q float8, gamma float8,
                                      horizon float8,
                                      OUT model text, OUT p_alive float8, OUT e90 float8, OUT eh float8, OUT eov float8)
RETURNS record
AS 'MODULE_PATHNAME', 'score_values'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- The rows loyalty._store_scores writes for the customers of p_customers
-- (NULL: everyone with state) as of p_as_of, under the model p_model with
-- its parameters and fit ids (loyalty.current_model), the Gamma-Gamma fit
-- p_gg_fit_id (p, q, gamma; NULL: none) and the settings horizon, margin
-- and yearly discount rate (loyalty.model_settings).
CREATE FUNCTION loyalty._score_rows(p_as_of timestamptz, p_customers text[],
                                    p_model text, r float8, alpha float8, a float8, b float8, p_shop_gap float8,
                                    p_fit_id bigint, p_heuristic_fit_id bigint,
                                    p_gg_fit_id bigint, p float8, q float8, gamma float8,
                                    p_horizon integer, p_margin numeric, p_rate numeric)
RETURNS SETOF loyalty.stored_scores
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT i.customer_id, (i.v).model, (i.v).p_alive, (i.v).e90, (i.v).eov,
           -- (the default horizon is the 90 days already computed)
           round((p_margin * (i.v).eov::numeric * (CASE WHEN p_horizon = 90 THEN (i.v).e90 ELSE (i.v).eh END)::numeric
                  / power(1 + p_rate, p_horizon / 365.0 / 2))::numeric, 2),
           p_horizon,
           CASE WHEN (i.v).model = 'heuristic' THEN p_heuristic_fit_id ELSE p_fit_id END,
           p_gg_fit_id, p_as_of
      -- one call per customer, its row a column of a subquery (OFFSET 0)
      FROM (SELECT s.customer_id,
                   loyalty._score_values(s.first_order_at, s.last_order_at, s.purchase_days, s.net_spend,
                                         s.first_day_spend, s.avg_spend, p_as_of, p_model, r, alpha, a, b,
                                         p_shop_gap, p_gg_fit_id IS NOT NULL, p, q, gamma, p_horizon) AS v
              FROM loyalty.customer_state s
             WHERE p_customers IS NULL OR s.customer_id = ANY (p_customers) OFFSET 0) i;
END;

-- Compute and store the scores of p_customers as of p_as_of
-- (loyalty._score_rows); a row is rewritten only when a value changes.
-- p_customers NULL: everyone (and drop the rows of customers without
-- state), unless p_queued is given and the basis still holds (same model,
-- parameters, settings and UTC day as the last pass over everyone): then
-- only the customers of p_queued, the queue entries the caller's RFM pass
-- consumed, and everyone after all when that leaves another number of rows
-- than the customers the RFM pass counted. Returns the rows written.
-- Speed (1,000,000 customers, test/bench/bench_rescore.sh): the pass over
-- everyone is one MERGE, a hash join of the computed rows with the stored
-- keys (no sort, no index probe per row), and the table's fillfactor leaves
-- each row room for a HOT update on its page (the primary key never
-- changes), so a rewrite adds no index entry.
-- Locking: every call locks the basis row first: a pass over everyone FOR
-- UPDATE, a call for given customers FOR KEY SHARE (these two conflict, two
-- KEY SHAREs do not). A pass over everyone therefore runs alone among the
-- writers of stored_scores (every writer is this function: refresh() and
-- worker_tick(), serialised by the advisory lock 74200/2, and
-- configure_models(), which is not): it holds no row of stored_scores while
-- it waits for the basis, and once it has it no other writer holds or takes
-- one until it commits; so it may write its rows in any order. Calls for
-- given customers lock their rows in key order (ORDER BY), so two of them
-- never wait on each other in a cycle either. A backfill clears the basis
-- under a row lock that conflicts with FOR UPDATE only
-- (loyalty._recompute_customers), so it either commits before a pass over
-- everyone reads anything (and the pass sees its customers or the cleared
-- basis) or waits until the pass commits.
CREATE FUNCTION loyalty._store_scores(p_as_of timestamptz, p_customers text[], p_queued text[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off   -- per-row model expressions: compiling them costs seconds, running them milliseconds
SET work_mem = '128MB'   -- a pass over everyone hashes every stored key (about 50 MB a million): in memory, not on disk
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
    ELSE
        PERFORM 1 FROM loyalty.score_basis sb FOR KEY SHARE;
    END IF;
    -- the model, read once
    SELECT * INTO m FROM loyalty.current_model;
    SELECT cf.gamma_gamma_fit_id, cf.p, cf.q, cf.gamma INTO g FROM loyalty.current_fits cf;
    SELECT * INTO st FROM loyalty.model_settings;
    -- fit ids left out: a refit to the same parameters changes no score
    cur_basis := jsonb_build_object('model', m.model, 'r', m.r, 'alpha', m.alpha, 'a', m.a, 'b', m.b, 'shop_gap', m.shop_gap,
                                'p', g.p, 'q', g.q, 'gamma', g.gamma, 'horizon_days', st.horizon_days, 'margin', st.margin,
                                'annual_discount_rate', st.annual_discount_rate, 'day', loyalty._utc_date(p_as_of));
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
        -- only values that changed are written: a refit to the same parameters
        -- (nothing new since the last refresh) rewrites nothing, and the row
        -- keeps the id of the earlier, equal fit
        MERGE INTO loyalty.stored_scores sc
        -- the values as columns of a subquery (OFFSET 0): computed once per
        -- row, not again in the comparison and in the update
        USING (SELECT * FROM loyalty._score_rows(p_as_of, NULL, m.model, m.r, m.alpha, m.a, m.b, m.shop_gap, m.fit_id,
                                                 m.heuristic_fit_id, g.gamma_gamma_fit_id, g.p, g.q, g.gamma,
                                                 st.horizon_days, st.margin, st.annual_discount_rate) OFFSET 0) v
           ON sc.customer_id = v.customer_id
         WHEN MATCHED AND (sc.model, sc.p_alive, sc.expected_purchases_90d, sc.expected_order_value, sc.predicted_clv,
                           sc.horizon_days)
                          IS DISTINCT FROM
                          (v.model, v.p_alive, v.expected_purchases_90d, v.expected_order_value, v.predicted_clv,
                           v.horizon_days) THEN
              UPDATE SET model = v.model, p_alive = v.p_alive, expected_purchases_90d = v.expected_purchases_90d,
                         expected_order_value = v.expected_order_value, predicted_clv = v.predicted_clv,
                         horizon_days = v.horizon_days, fit_id = v.fit_id, gamma_gamma_fit_id = v.gamma_gamma_fit_id,
                         as_of = v.as_of
         WHEN NOT MATCHED THEN
              INSERT (customer_id, model, p_alive, expected_purchases_90d, expected_order_value, predicted_clv,
                      horizon_days, fit_id, gamma_gamma_fit_id, as_of)
              VALUES (v.customer_id, v.model, v.p_alive, v.expected_purchases_90d, v.expected_order_value,
                      v.predicted_clv, v.horizon_days, v.fit_id, v.gamma_gamma_fit_id, v.as_of);
        GET DIAGNOSTICS n = ROW_COUNT;
        UPDATE loyalty.score_basis SET basis = cur_basis;
        RETURN n;
    END IF;
    DELETE FROM loyalty.stored_scores sc
     WHERE sc.customer_id = ANY (todo)
       AND NOT EXISTS (SELECT 1 FROM loyalty.customer_state s WHERE s.customer_id = sc.customer_id);
    INSERT INTO loyalty.stored_scores AS sc
    SELECT v.*
      FROM loyalty._score_rows(p_as_of, todo, m.model, m.r, m.alpha, m.a, m.b, m.shop_gap, m.fit_id, m.heuristic_fit_id,
                               g.gamma_gamma_fit_id, g.p, g.q, g.gamma,
                               st.horizon_days, st.margin, st.annual_discount_rate) v
     -- rows of given customers are locked in key order (see Locking above)
     ORDER BY v.customer_id
    ON CONFLICT (customer_id) DO UPDATE
       SET model = excluded.model, p_alive = excluded.p_alive, expected_purchases_90d = excluded.expected_purchases_90d,
           expected_order_value = excluded.expected_order_value, predicted_clv = excluded.predicted_clv,
           horizon_days = excluded.horizon_days, fit_id = excluded.fit_id, gamma_gamma_fit_id = excluded.gamma_gamma_fit_id,
           as_of = excluded.as_of
     -- only values that changed are written (as in the pass over everyone)
     WHERE (sc.model, sc.p_alive, sc.expected_purchases_90d, sc.expected_order_value, sc.predicted_clv, sc.horizon_days)
           IS DISTINCT FROM
           (excluded.model, excluded.p_alive, excluded.expected_purchases_90d, excluded.expected_order_value,
            excluded.predicted_clv, excluded.horizon_days);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF p_customers IS NULL
       AND (SELECT count(*) FROM loyalty.stored_scores) IS DISTINCT FROM (SELECT b.customers FROM loyalty.rfm_bounds b) THEN
        -- not a row for every customer the caller's RFM pass counted (rows
        -- truncated, a backfill's new customers): everyone after all
        RETURN n + loyalty._store_scores(p_as_of, NULL);
    END IF;
    RETURN n;
END
$$;

CREATE VIEW loyalty.customer_scores AS
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
COMMENT ON VIEW loyalty.customer_scores IS 'Churn risk and lifetime value per customer, as stored by the last refresh or order (the model that decided in model: BG/NBD or its boundary limit, MBG/NBD, Pareto/NBD, or the heuristic)';
COMMENT ON COLUMN loyalty.customer_scores.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.customer_scores.p_alive IS 'probability the customer is still a customer (will buy again at their own rate)';
COMMENT ON COLUMN loyalty.customer_scores.churn_risk IS '1 - p_alive';
COMMENT ON COLUMN loyalty.customer_scores.expected_purchases_90d IS 'expected purchase days in the next 90 days';
COMMENT ON COLUMN loyalty.customer_scores.expected_order_value IS 'expected spend per purchase (Gamma-Gamma, shrunk towards the shop mean)';
COMMENT ON COLUMN loyalty.customer_scores.predicted_clv IS 'margin * expected purchases in horizon_days * expected order value, discounted to mid-horizon';
COMMENT ON COLUMN loyalty.customer_scores.horizon_days IS 'the horizon used';
COMMENT ON COLUMN loyalty.customer_scores.model IS 'the model that decided this customer''s scores: bgnbd, bgnbd_limit (BG/NBD on its boundary), mbgnbd, pareto_nbd (both also when fitted on their boundary), or heuristic (too little data, the heuristic was chosen, or a one-time buyer under BG/NBD)';
COMMENT ON COLUMN loyalty.customer_scores.bgnbd_fit_id IS 'the loyalty.model_fits row used, when a BG/NBD model decided';
COMMENT ON COLUMN loyalty.customer_scores.gamma_gamma_fit_id IS 'the loyalty.model_fits row used for order value';
COMMENT ON COLUMN loyalty.customer_scores.fit_id IS 'the loyalty.model_fits row of the model that decided (heuristic: its shop gap); a later fit with the same parameters leaves it';
COMMENT ON COLUMN loyalty.customer_scores.scored_as_of IS 'the time these values were computed for (a row is rewritten only when a value changes)';

-- Calibration/holdout check of every enabled model: refit each on the data up
-- to holdout_days ago, predict each customer's repeat purchase days in the
-- holdout window as the model would decide (one-time buyers under BG/NBD by
-- the heuristic, as in scoring) and compare with what happened, per
-- calibration frequency (0..6, 7+): mean absolute error per customer (mae)
-- and the bin's aggregate error (predicted_total - actual_total). The result
-- is a row type of its own, so that the argument a caller names,
-- holdout_days, can also be a column of the result.
CREATE TYPE loyalty.holdout_check AS (
    model text, calibration_repeats text, customers bigint, predicted_avg float8, actual_avg float8,
    predicted_total float8, actual_total bigint, holdout_days integer, fit_converged boolean, mae float8);
CREATE FUNCTION loyalty.validate_models(holdout_days integer DEFAULT NULL)
RETURNS SETOF loyalty.holdout_check
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off   -- per-row model expressions: compiling them costs seconds, running them milliseconds
AS $$
DECLARE
    st loyalty.model_settings;
    h integer;
    cal_end date;
    m text;
    f record;
    fj jsonb;
    ok boolean;
    nm text;
    gap float8;
    cx integer[];
    ctx float8[];
    ct float8[];
    cact bigint[];
BEGIN
    SELECT * INTO st FROM loyalty.model_settings;
    h := coalesce(validate_models.holdout_days, st.holdout_days);
    IF h < 1 THEN
        RAISE EXCEPTION 'holdout_days must be at least 1'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pick a window the shop can wait for, e.g. 90 days.';
    END IF;
    cal_end := loyalty._utc_date(now()) - h;
    -- the calibration inputs, read once (arrays: no temp table, so a reader in
    -- a read-only transaction can run this too)
    WITH days AS (
        SELECT DISTINCT o.customer_id, loyalty._utc_date(o.ordered_at) AS d
          FROM loyalty.orders o WHERE o.counts
    ), cal AS (
        SELECT count(*) FILTER (WHERE d < cal_end) - 1 AS x,
               (max(d) FILTER (WHERE d < cal_end) - min(d))::float8 AS t_x,
               (cal_end - min(d))::float8 AS t,
               count(*) FILTER (WHERE d >= cal_end) AS actual
          FROM days GROUP BY customer_id HAVING min(d) < cal_end
    )
    SELECT array_agg(cal.x::integer), array_agg(cal.t_x), array_agg(cal.t), array_agg(cal.actual),
           coalesce(avg(cal.t_x / cal.x) FILTER (WHERE cal.x > 0 AND cal.t_x > 0), 90)
      INTO cx, ctx, ct, cact, gap
      FROM cal;
    FOREACH m IN ARRAY st.models LOOP
        CONTINUE WHEN NOT loyalty._model_available(m);
        fj := '{}';
        nm := m;
        ok := true;
        IF m <> 'heuristic' THEN
            EXECUTE format('SELECT (loyalty.%s_fit(c.x, c.t_x, c.t)).* FROM unnest($1, $2, $3) c(x, t_x, t)', m)
               INTO f USING cx, ctx, ct;
            fj := to_jsonb(f);
            -- (through fj: f has no field a when m is pareto_nbd, and PL/pgSQL
            -- resolves every field of the condition, whatever m is)
            IF m = 'bgnbd' AND least((fj->>'a')::float8, (fj->>'b')::float8) >= 1e6 AND (fj->>'loglik')::float8 > '-Infinity' THEN
                nm := 'bgnbd_limit';
            ELSE
                ok := (fj->>'converged')::boolean;
            END IF;
        END IF;
        RETURN QUERY
        SELECT m, CASE WHEN c.x >= 7 THEN '7+' ELSE c.x::text END,
               count(*), avg(p.pred), avg(c.actual)::float8, sum(p.pred), sum(c.actual)::bigint, h, coalesce(ok, false),
               avg(abs(p.pred - c.actual))
          FROM unnest(cx, ctx, ct, cact) c(x, t_x, t, actual)
         CROSS JOIN LATERAL (SELECT loyalty._expected_days(nm, h, c.x, c.t_x, c.t, c.t - c.t_x,
                                                           (fj->>'r')::float8, (fj->>'alpha')::float8,
                                                           coalesce(fj->>'a', fj->>'s')::float8,
                                                           coalesce(fj->>'b', fj->>'beta')::float8,
                                                           gap) AS pred) p
         GROUP BY 2 ORDER BY min(c.x);
    END LOOP;
END
$$;
COMMENT ON FUNCTION loyalty.validate_models(integer) IS
'Per enabled model: predicted vs actual repeat purchase days in a holdout window, per calibration frequency, with the mean absolute error per customer';

CREATE VIEW loyalty.model_validation AS SELECT * FROM loyalty.validate_models();
COMMENT ON VIEW loyalty.model_validation IS 'Is the churn model trustworthy here? Per enabled model, predicted vs actual repeat purchases over the last holdout_days, per frequency bin';
COMMENT ON COLUMN loyalty.model_validation.model IS 'the model compared (bgnbd also covers its boundary limit)';
COMMENT ON COLUMN loyalty.model_validation.calibration_repeats IS 'repeat purchase days before the holdout window (bin)';
COMMENT ON COLUMN loyalty.model_validation.customers IS 'customers in the bin';
COMMENT ON COLUMN loyalty.model_validation.predicted_avg IS 'mean predicted purchase days in the holdout window';
COMMENT ON COLUMN loyalty.model_validation.actual_avg IS 'mean actual purchase days in the holdout window';
COMMENT ON COLUMN loyalty.model_validation.predicted_total IS 'predicted purchase days, summed';
COMMENT ON COLUMN loyalty.model_validation.actual_total IS 'actual purchase days, summed';
COMMENT ON COLUMN loyalty.model_validation.holdout_days IS 'the holdout window';
COMMENT ON COLUMN loyalty.model_validation.fit_converged IS 'whether the calibration fit is usable (converged, or on the BG/NBD boundary; always true for the heuristic)';
COMMENT ON COLUMN loyalty.model_validation.mae IS 'mean absolute error per customer of the bin';

-- Pick the model that decides: the lowest mean absolute error per customer
-- over the holdout window among the enabled models whose calibration fit is
-- usable (ties: the heuristic, the simpler). p_force: compare now; else only
-- when the last comparison is a day old or the enabled models changed.
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
