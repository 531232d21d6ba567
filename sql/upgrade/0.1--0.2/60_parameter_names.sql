-- Public functions take the argument names a caller writes (issue 13):
-- validate_models(holdout_days), worker_tick(refresh_interval, budget_ms),
-- no longer p_holdout_days, p_refresh_interval, p_budget_ms. A parameter
-- cannot be renamed in place: drop, create again (same text as
-- sql/install/50_models.sql and 60_refresh.sql), then the comments and the
-- grants of sql/install/90_grants.sql. validate_models now returns its own
-- row type (a column may not share a parameter's name), so its view is
-- dropped and created again too, with the same columns.
DROP VIEW loyalty.model_validation;
DROP FUNCTION loyalty.validate_models(integer);
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
            IF m = 'bgnbd' AND least(f.a, f.b) >= 1e6 AND f.loglik > '-Infinity' THEN
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
REVOKE ALL ON FUNCTION loyalty.validate_models(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty.validate_models(integer) TO loyalty_admin, loyalty_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.model_validation TO loyalty_admin;
GRANT SELECT ON loyalty.model_validation TO loyalty_reader;

DROP FUNCTION loyalty.worker_tick(integer, integer);
CREATE FUNCTION loyalty.worker_tick(refresh_interval integer DEFAULT 3600, budget_ms integer DEFAULT 2000)
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
            -- the churn/CLV scores of the customers this round rescores (the
            -- queue's oldest entries, which _rfm_score takes next); an entry
            -- committed out of order is scored by the next full refresh. Not in
            -- the order's own transaction: an order never waits for a refresh
            -- holding the scores' rows.
            PERFORM loyalty._store_scores(now(), ARRAY(SELECT DISTINCT q.customer_id
                                                         FROM (SELECT sq.customer_id FROM loyalty.score_queue sq
                                                                ORDER BY sq.seq LIMIT 10000) q))
              FROM loyalty.model_fits f WHERE f.model = 'heuristic' AND f.status = 'fitted' LIMIT 1;
            PERFORM loyalty._rfm_score(false, now(), 10000);
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
REVOKE ALL ON FUNCTION loyalty.worker_tick(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty.worker_tick(integer, integer) TO loyalty_admin;
