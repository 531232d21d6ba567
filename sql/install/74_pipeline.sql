-- The pipeline: the one place that runs the steps in the order the data
-- flows, each step in the fragment of its component, which knows only the
-- steps before it:
--   captured changes -> orders            20_intake.sql  apply_events, record_order, record_refund, backfills
--   -> customer state                     10_state.sql   _recompute_state (returns the customers it recomputed)
--   -> tiers and points                   62_rewards.sql _recompute_tiers, _apply_order_points, _sync_recorded_order
--   -> deliveries, fulfilment             70_journeys.sql _apply_deliveries; 78_operations_capture.sql _apply_fulfilment
--   -> scores                             30_rfm.sql     _rfm_score; 50_models.sql _fit_models, _store_scores
--   -> the journeys' change log           71_journeys_due.sql journey_changes, _journeys_refitted
-- Entry points: loyalty.apply_events() drains the captured changes to their
-- components; the intake hands what it wrote to loyalty._orders_applied
-- (captured changes) or loyalty._order_recorded (the app's record_order and
-- record_refund); loyalty.refresh() (by hand, pg_cron or the worker),
-- loyalty.worker_tick() (the worker's round) and loyalty.fit_models() are
-- here.

-- Everything derived from the orders of the given customers, after the intake
-- changed them (in the intake's transaction). Locking: as in _recompute_state,
-- then (a backfill, which holds the intake's lock 74200/1 throughout) the
-- score_basis row, then customer_tiers rows (key order), then customer_rfm
-- rows; nothing locks these in another order.
CREATE FUNCTION loyalty._recompute_customers(p_customers text[], p_enqueue boolean)
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

-- Apply captured rows of tracked customers tables ('c': the profiles,
-- 70_journeys.sql) or carrier-events tables ('s': the shipment events,
-- 78_operations_capture.sql), in capture order. The batch is tried whole (one
-- subtransaction); when it fails, row by row, and a row that still fails is
-- quarantined under its key (the customer, or the carrier row's order), so
-- the others apply.
CREATE FUNCTION loyalty._apply_rows(p_events loyalty.events[], p_kind "char")
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e loyalty.events;
    msg text;
    one_by_one boolean := false;
BEGIN
    BEGIN
        FOREACH e IN ARRAY p_events LOOP
            PERFORM loyalty._apply_row(e, p_kind);
        END LOOP;
    EXCEPTION WHEN serialization_failure OR deadlock_detected OR lock_not_available THEN
        RAISE;
    WHEN OTHERS THEN
        one_by_one := true;
    END;
    IF one_by_one THEN
        FOREACH e IN ARRAY p_events LOOP
            BEGIN
                PERFORM loyalty._apply_row(e, p_kind);
            EXCEPTION WHEN serialization_failure OR deadlock_detected OR lock_not_available THEN
                RAISE;
            WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
                IF p_kind = 'c' THEN
                    PERFORM loyalty._quarantine(e.source_id, e.customer_id, 'could not be applied: ' || msg,
                                                jsonb_build_object('customer_id', left(e.customer_id, 1000)) || coalesce(e.fields, '{}'));
                ELSE
                    PERFORM loyalty._quarantine(e.source_id, e.order_ref, 'could not be applied: ' || msg,
                                                jsonb_build_object('order_id', left(e.order_ref, 1000), 'event', left(e.status, 1000))
                                                || coalesce(e.fields, '{}'));
                END IF;
            END;
        END LOOP;
    END IF;
    RETURN coalesce(cardinality(p_events), 0);
END
$$;

CREATE FUNCTION loyalty._apply_row(e loyalty.events, p_kind "char")
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_kind = 'c' THEN
        PERFORM loyalty._apply_customer_change(e);
    ELSE
        PERFORM loyalty._apply_shipment_change(e);
    END IF;
END
$$;

-- The first step: drain the captured changes, oldest first, each kind to the
-- component that owns it. The drain lock keeps one applier at a
-- time; events of one shop row are captured in commit order (the row lock
-- orders the writers), so applying them by event_id keeps the newest version.
-- Changes of tracked customers tables go to the profiles (70_journeys.sql),
-- rows of tracked carrier-events tables to the shipment events
-- (78_operations_capture.sql).
CREATE FUNCTION loyalty.apply_events(max_events integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch loyalty.order_change[];
    cust loyalty.events[];
    ship loyalty.events[];
    n bigint := 0;
BEGIN
    IF max_events IS NULL OR max_events < 1 THEN
        RAISE EXCEPTION 'max_events must be at least 1'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the largest number of captured changes to apply in this call.';
    END IF;
    PERFORM pg_advisory_xact_lock(74200, 1);
    WITH d AS (
        DELETE FROM loyalty.events
         WHERE event_id IN (SELECT event_id FROM loyalty.events ORDER BY event_id LIMIT max_events)
        RETURNING *
    )
    SELECT array_agg(ROW(d.source_id, d.op, d.order_ref, d.customer_id, d.amount, d.ordered_at, d.status, d.problem,
                         d.fields, d.captured_at)::loyalty.order_change ORDER BY d.event_id)
                FILTER (WHERE cs.source_id IS NULL AND ss.source_id IS NULL),
           array_agg(d ORDER BY d.event_id) FILTER (WHERE cs.source_id IS NOT NULL),
           array_agg(d ORDER BY d.event_id) FILTER (WHERE ss.source_id IS NOT NULL)
      INTO ch, cust, ship
      FROM d LEFT JOIN loyalty.customer_sources cs ON cs.source_id = d.source_id
             LEFT JOIN loyalty.shipment_sources ss ON ss.source_id = d.source_id;
    IF cust IS NOT NULL THEN
        n := loyalty._apply_rows(cust, 'c');
    END IF;
    IF ship IS NOT NULL THEN
        n := n + loyalty._apply_rows(ship, 's');
    END IF;
    RETURN n + loyalty._apply_or_split(ch);
END
$$;
COMMENT ON FUNCTION loyalty.apply_events(integer) IS 'Apply up to max_events captured order changes to orders and customer state';

-- Captured order changes the intake wrote to loyalty.orders (_apply_changes,
-- in its transaction and its subtransaction: a failure splits the batch):
-- what follows from them, in data-flow order. Points come last, after the
-- tiers they are earned at; not for a backfill (history earns nothing).
CREATE FUNCTION loyalty._orders_applied(p_affected text[], p_checked loyalty.order_change_checked[],
                                        p_changes loyalty.order_change[], p_enqueue boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF cardinality(p_affected) > 0 THEN
        PERFORM loyalty._recompute_customers(p_affected, p_enqueue);
    END IF;
    PERFORM loyalty._apply_deliveries(p_checked);              -- 70_journeys.sql
    PERFORM loyalty._apply_fulfilment(p_changes, p_checked);   -- 78_operations_capture.sql
    IF p_enqueue THEN
        PERFORM loyalty._apply_order_points(p_checked);        -- 62_rewards.sql
    END IF;
END
$$;

-- An order the app recorded or refunded (record_order, record_refund): its
-- points follow the order (or are reversed in proportion), then the
-- customer's state, tiers, scores and journey log.
CREATE FUNCTION loyalty._order_recorded(p_order_ref text, p_customer text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM loyalty._sync_recorded_order(p_order_ref);         -- 62_rewards.sql, if earn_on_orders
    PERFORM loyalty._recompute_customers(ARRAY[p_customer], true);
END
$$;

-- Fit the models (50_models.sql), then tell the journeys: a new fit (or model
-- choice) moves win-back lapse days (71_journeys_due.sql). The hook takes
-- the journeys' lock after the new fit is written and holds it until this
-- transaction commits, so no enqueue_due run searches with the old fit after
-- the hook read its last as_of.
CREATE FUNCTION loyalty.fit_models(OUT bgnbd_status text, OUT gamma_gamma_status text)
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

-- Every step for everyone: by hand, pg_cron or the worker.
CREATE FUNCTION loyalty.refresh(as_of timestamptz DEFAULT now(), fit_models boolean DEFAULT true,
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
            RAISE WARNING 'refresh failed (captured changes were applied): %: %', st, msg
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
            RAISE WARNING 'rescoring failed (captured changes were applied): %: %', st, msg
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
