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
        BEGIN
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
