-- The pipeline: loyalty.refresh() (by hand, pg_cron or the worker) and the worker's round.

CREATE FUNCTION loyalty.refresh(as_of timestamptz DEFAULT now(), fit_models boolean DEFAULT true,
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

-- One worker round: apply changes, rescore queued customers, and run a full
-- refresh when the last one is older than refresh_interval seconds. Under a
-- burst of orders a round keeps applying and rescoring batches for up to
-- budget_ms, so the queue drains as fast as it fills (one transaction; the
-- changes become visible when the round commits).
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
