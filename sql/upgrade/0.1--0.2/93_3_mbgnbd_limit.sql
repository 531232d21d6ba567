-- Issue 12: MBG/NBD on its boundary a, b -> infinity (dropout without
-- heterogeneity) is fitted as that limit by mbgnbd_fit (src/btyd.c) and
-- recorded by fit_models as fitted, params.limit = true and p, with a note,
-- as BG/NBD's boundary is (50_models.sql).
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
        -- MBG/NBD on its boundary a, b -> infinity: mbgnbd_fit fits that limit
        -- and reports it with min(a, b) = 1e12, a/(a+b) = p (src/btyd.c)
        lim := m = 'mbgnbd' AND mst = 'fitted' AND least((to_jsonb(f)->>'a')::float8, (to_jsonb(f)->>'b')::float8) >= 1e6;
        INSERT INTO loyalty.model_fits (model, status, as_of, customers, params, loglik, iterations, note)
        VALUES (m, mst, now(), n,
                to_jsonb(f) - 'loglik' - 'converged' - 'iterations'
                || CASE WHEN lim THEN jsonb_build_object('limit', true, 'p', (to_jsonb(f)->>'a')::float8
                                                           / ((to_jsonb(f)->>'a')::float8 + (to_jsonb(f)->>'b')::float8))
                        ELSE '{}' END,
                f.loglik, f.iterations,
                CASE WHEN lim THEN format('maximum on the boundary a, b -> infinity: every customer drops out with probability %s at each purchase, the first included (MBG/NBD without heterogeneity in dropout); fitted and scored as that limit',
                                          round(((to_jsonb(f)->>'a')::float8 / ((to_jsonb(f)->>'a')::float8 + (to_jsonb(f)->>'b')::float8))::numeric, 4))
                     WHEN mst = 'not_converged' THEN 'optimiser did not converge' END);
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

-- validate_models with Pareto/NBD enabled and BG/NBD not: f.a was resolved
-- for every model and raised "record f has no field a" (fit_models failed).
CREATE OR REPLACE FUNCTION loyalty.validate_models(holdout_days integer DEFAULT NULL)
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
    cal_end := (now() AT TIME ZONE 'UTC')::date - h;
    -- the calibration inputs, read once (arrays: no temp table, so a reader in
    -- a read-only transaction can run this too)
    WITH days AS (
        SELECT DISTINCT o.customer_id, (o.ordered_at AT TIME ZONE 'UTC')::date AS d
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
