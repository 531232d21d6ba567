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
