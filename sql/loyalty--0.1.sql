-- loyalty 0.1: base objects (roles, settings helpers). Assembled into loyalty--0.1.sql.
\echo Use "CREATE EXTENSION loyalty" to load this file. \quit

-- The four roles of DESIGN.md. Roles are cluster-wide, so they may exist already
-- (another database, or a previous install); they are never dropped by us.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['loyalty_admin', 'loyalty_app', 'loyalty_sender', 'loyalty_reader']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA loyalty TO loyalty_admin, loyalty_app, loyalty_sender, loyalty_reader;
COMMENT ON SCHEMA loyalty IS 'Customer loyalty system: intake, customer state, RFM segments, models, rewards, journeys';

-- Advisory lock keys (first key 74200 = loyalty's class):
--   (74200, 1) event drain: one applier of captured changes at a time, so changes apply in capture order
--   (74200, 2) refresh: one scoring run at a time
--   (74200, 5) enqueue_due: one journeys run at a time, so cap and cooldown counts include what earlier runs wrote;
--              an opt-out (set_consent(..., false)) takes it shared, so it never misses a run's pending rows


-- Is this statement a restore's COPY? pg_dump's scripts (and pg_restore) run
-- with check_function_bodies off and load table data with COPY; see
-- loyalty._restore_replaces (90_grants.sql).
CREATE FUNCTION loyalty._restoring()
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.current_setting('check_function_bodies') OPERATOR(pg_catalog.=) 'off'
       AND pg_catalog.current_query() OPERATOR(pg_catalog.~*) '^\s*copy\s'
$$;
-- Customer state: per-customer aggregates, recomputed for the customers an
-- intake change touched (from loyalty.orders, never from the shop's tables).

CREATE TABLE loyalty.customer_state (
    customer_id     text PRIMARY KEY,
    first_order_at  timestamptz NOT NULL,
    last_order_at   timestamptz NOT NULL,
    orders          integer NOT NULL,
    repeat_orders   integer NOT NULL,
    purchase_days   integer NOT NULL,
    gross_spend     numeric NOT NULL,
    refunded        numeric NOT NULL,
    net_spend       numeric NOT NULL,
    avg_spend       numeric NOT NULL,
    first_day_spend numeric NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE loyalty.customer_state IS 'Per-customer aggregates over counted orders, kept current from loyalty.orders';
COMMENT ON COLUMN loyalty.customer_state.orders IS 'counted orders (status in the counted set, not fully refunded)';
COMMENT ON COLUMN loyalty.customer_state.repeat_orders IS 'counted orders after the first';
COMMENT ON COLUMN loyalty.customer_state.purchase_days IS 'distinct UTC days with a counted order (the BTYD transaction unit)';
COMMENT ON COLUMN loyalty.customer_state.net_spend IS 'order amounts less refunds';
COMMENT ON COLUMN loyalty.customer_state.avg_spend IS 'net_spend / orders';
COMMENT ON COLUMN loyalty.customer_state.first_day_spend IS 'net spend on the first purchase day (repeat spend = net_spend - first_day_spend)';

-- Customers whose scores are stale. Insert-only: an enqueue never waits for a
-- scorer (a unique key would make it wait for any transaction deleting the
-- same customer's entry); scorers delete exactly the entries they read.
CREATE TABLE loyalty.score_queue (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL
);
COMMENT ON TABLE loyalty.score_queue IS 'Customers whose state changed since they were last scored';

-- Recompute the state of the given customers from loyalty.orders.
-- Locking: callers have already written their loyalty.orders rows. Each
-- customer's state row is locked (created first if new; key order, so no two
-- callers wait on each other in a cycle) before the recomputing statement takes
-- its snapshot. Of two transactions touching one customer the later one waits
-- for the earlier to commit and then sees both changes: no lost update. Order
-- rows are always locked before state rows, so no lock cycle can form across
-- the two either. Row locks, unlike advisory locks, cost no shared memory, so
-- a backfill may lock a million customers in one transaction.
CREATE FUNCTION loyalty._recompute_customers(p_customers text[], p_enqueue boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
    DELETE FROM loyalty.customer_rfm r
     WHERE r.customer_id = ANY (p_customers)
       AND NOT EXISTS (SELECT 1 FROM loyalty.customer_state cs WHERE cs.customer_id = r.customer_id);

    -- tiers move with spend (see 62_rewards.sql)
    PERFORM loyalty._recompute_tiers(p_customers, now());

    -- the journeys look again at these customers' occasions (loyalty.journey_changes);
    -- always, also while no campaign is active: a campaign switched on before
    -- this transaction commits must find the change (refresh() trims the log
    -- while no campaign is active)
    INSERT INTO loyalty.journey_changes (customer_id)
    SELECT DISTINCT c FROM unnest(p_customers) AS c WHERE c IS NOT NULL;

    IF p_enqueue THEN
        INSERT INTO loyalty.score_queue (customer_id)
        SELECT DISTINCT c FROM unnest(p_customers) AS c
         WHERE c IS NOT NULL AND EXISTS (SELECT 1 FROM loyalty.customer_state cs WHERE cs.customer_id = c);
    END IF;
END
$$;
-- Intake: attached shop tables, the queue of captured changes, orders and refunds.

CREATE TABLE loyalty.sources (
    source_id         serial PRIMARY KEY,
    relation_schema   text NOT NULL,
    relation_name     text NOT NULL,
    customer_column   text NOT NULL,
    amount_column     text NOT NULL,
    ordered_at_column text NOT NULL,
    order_id_column   text NOT NULL,
    status_column     text,
    counted_statuses  text[],
    attached_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    backfilled_rows   bigint NOT NULL DEFAULT 0,
    backfilled_at     timestamptz,
    UNIQUE (relation_schema, relation_name)
);
COMMENT ON TABLE loyalty.sources IS 'Shop tables attached with loyalty.track_orders()';

-- Changes captured by the triggers (and backfill), applied in capture order by
-- loyalty.apply_events(). Each event is a snapshot of the order row, not a
-- delta, so applying one twice changes nothing. No index on purpose: the C
-- trigger writes rows straight into the heap (see src/intake.c); the queue is
-- short, and the drain sorts it.
CREATE TABLE loyalty.events (
    event_id    bigserial,
    source_id   integer NOT NULL,
    op          "char" NOT NULL CHECK (op IN ('u', 'd')),
    order_ref   text,
    customer_id text,
    amount      numeric,
    ordered_at  timestamptz,
    status      text,
    problem     text,
    captured_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE loyalty.events IS 'Captured order changes not yet applied (the worker or loyalty.refresh() drains it)';

CREATE TYPE loyalty.order_change AS (
    source_id   integer,
    op          "char",
    order_ref   text,
    customer_id text,
    amount      numeric,
    ordered_at  timestamptz,
    status      text,
    problem     text
);

-- an order_change after validation
CREATE TYPE loyalty.order_change_checked AS (
    source_id   integer,
    op          "char",
    order_ref   text,
    customer_id text,
    amount      numeric,
    ordered_at  timestamptz,
    status      text,
    counted     boolean,
    reason      text,
    old_customer text
);

CREATE TABLE loyalty.orders (
    order_ref   text PRIMARY KEY,
    order_id    bigint GENERATED ALWAYS AS IDENTITY,
    source_id   integer,
    customer_id text NOT NULL,
    amount      numeric NOT NULL CHECK (amount >= 0),
    refunded    numeric NOT NULL DEFAULT 0 CHECK (refunded >= 0),
    ordered_at  timestamptz NOT NULL,
    status      text,
    counted     boolean NOT NULL,
    counts      boolean GENERATED ALWAYS AS (counted AND NOT (amount > 0 AND refunded >= amount)) STORED,
    recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX orders_customer_idx ON loyalty.orders (customer_id);
COMMENT ON TABLE loyalty.orders IS 'Every order loyalty knows, from tracked tables (source_id) or the app (source_id NULL)';
COMMENT ON COLUMN loyalty.orders.counted IS 'status is in the counted set and the row still exists in the shop';
COMMENT ON COLUMN loyalty.orders.counts IS 'counted and not fully refunded: contributes to customer state';

CREATE TABLE loyalty.refunds (
    idempotency_key text PRIMARY KEY,
    order_ref       text NOT NULL,
    amount          numeric NOT NULL CHECK (amount > 0),
    recorded_at     timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX refunds_order_idx ON loyalty.refunds (order_ref);
COMMENT ON TABLE loyalty.refunds IS 'Refunds recorded with loyalty.record_refund()';

CREATE TABLE loyalty.rejected_rows (
    rejected_id bigserial PRIMARY KEY,
    source_id   integer NOT NULL,
    order_ref   text,
    reason      text NOT NULL,
    row_data    jsonb,
    rejected_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    resolved_at timestamptz
);
CREATE UNIQUE INDEX rejected_rows_open_idx ON loyalty.rejected_rows (source_id, order_ref) WHERE resolved_at IS NULL;
COMMENT ON TABLE loyalty.rejected_rows IS 'Shop rows loyalty could not use (kept, never blocking the shop); replay with loyalty.replay_rejected()';

CREATE VIEW loyalty.rejected_summary AS
SELECT s.source_id, s.relation_schema || '.' || s.relation_name AS source, r.reason,
       count(*) AS rows, min(r.rejected_at) AS first_rejected_at, max(r.rejected_at) AS last_rejected_at
  FROM loyalty.rejected_rows r JOIN loyalty.sources s USING (source_id)
 WHERE r.resolved_at IS NULL
 GROUP BY s.source_id, s.relation_schema, s.relation_name, r.reason;
COMMENT ON VIEW loyalty.rejected_summary IS 'Open rejected shop rows per source and reason';
COMMENT ON COLUMN loyalty.rejected_summary.rows IS 'rows waiting to be fixed and replayed';

-- Apply order changes (latest per order wins). Invalid rows are rejected, and an
-- order that becomes invalid stops counting. Returns the number of changes.
CREATE FUNCTION loyalty._apply_changes(p_changes loyalty.order_change[], p_enqueue boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    affected text[];
    checked loyalty.order_change_checked[];
BEGIN
    IF coalesce(cardinality(p_changes), 0) = 0 THEN
        RETURN 0;
    END IF;

    SELECT array_agg(ROW(c.source_id, c.op, c.order_ref, c.customer_id, c.amount, c.ordered_at, c.status,
           (s.status_column IS NULL OR c.status = ANY (s.counted_statuses)),
           CASE WHEN c.op = 'd' THEN NULL
                WHEN c.problem IS NOT NULL THEN c.problem
                WHEN c.order_ref IS NULL THEN 'order id is null'
                WHEN c.customer_id IS NULL THEN 'customer is null'
                WHEN btrim(c.customer_id) = '' THEN 'customer is empty'
                WHEN c.amount IS NULL THEN 'amount is null'
                WHEN c.amount = 'NaN'::numeric THEN 'amount is NaN'
                WHEN c.amount IN ('Infinity'::numeric, '-Infinity'::numeric) THEN 'amount is infinite'
                WHEN c.amount < 0 THEN 'amount is negative'
                WHEN c.ordered_at IS NULL THEN 'order time is null'
                WHEN NOT isfinite(c.ordered_at) THEN 'order time is infinite'
                WHEN o.order_ref IS NOT NULL AND o.source_id IS DISTINCT FROM c.source_id
                     THEN 'order id already recorded by another source'
           END,
           o.customer_id)::loyalty.order_change_checked)
      INTO checked
      FROM (SELECT DISTINCT ON (ch.order_ref) ch.*
              FROM unnest(p_changes) WITH ORDINALITY AS ch(source_id, op, order_ref, customer_id, amount, ordered_at, status, problem, ord)
             ORDER BY ch.order_ref, ch.ord DESC) c
      JOIN loyalty.sources s ON s.source_id = c.source_id
      LEFT JOIN loyalty.orders o ON o.order_ref = c.order_ref;

    -- rejections: keep the newest reason per open row
    INSERT INTO loyalty.rejected_rows (source_id, order_ref, reason, row_data)
    SELECT source_id, order_ref, reason,
           jsonb_build_object('customer_id', customer_id, 'amount', amount::text, 'ordered_at', ordered_at, 'status', status)
      FROM unnest(checked) WHERE reason IS NOT NULL
    ON CONFLICT (source_id, order_ref) WHERE resolved_at IS NULL
    DO UPDATE SET reason = excluded.reason, row_data = excluded.row_data, rejected_at = excluded.rejected_at;

    -- valid upserts; an existing row of another source is never touched
    WITH up AS (
        INSERT INTO loyalty.orders AS o (order_ref, source_id, customer_id, amount, ordered_at, status, counted)
        SELECT order_ref, source_id, customer_id, amount, ordered_at, status, counted
          FROM unnest(checked) WHERE op = 'u' AND reason IS NULL
        ON CONFLICT (order_ref) DO UPDATE
           SET customer_id = excluded.customer_id, amount = excluded.amount, ordered_at = excluded.ordered_at,
               status = excluded.status, counted = excluded.counted, updated_at = now()
         WHERE o.source_id IS NOT DISTINCT FROM excluded.source_id
           AND (o.customer_id, o.amount, o.ordered_at, o.status, o.counted)
               IS DISTINCT FROM (excluded.customer_id, excluded.amount, excluded.ordered_at, excluded.status, excluded.counted)
        RETURNING o.customer_id
    )
    SELECT array_agg(DISTINCT customer_id) INTO affected FROM up;
    -- an order that moved to another customer changes the old one too
    affected := coalesce(affected, '{}') || ARRAY(
        SELECT old_customer FROM unnest(checked)
         WHERE op = 'u' AND reason IS NULL AND old_customer IS DISTINCT FROM customer_id AND old_customer IS NOT NULL);

    -- deletes and rows that became invalid stop counting (the row is kept: refunds may refer to it)
    WITH gone AS (
        UPDATE loyalty.orders o SET counted = false, updated_at = now()
          FROM unnest(checked) a
         WHERE o.order_ref = a.order_ref AND o.source_id IS NOT DISTINCT FROM a.source_id
           AND (a.op = 'd' OR a.reason IS NOT NULL) AND o.counted
        RETURNING o.customer_id
    )
    SELECT coalesce(affected, '{}') || coalesce(array_agg(customer_id), '{}') INTO affected FROM gone;

    -- a row that is valid again resolves its rejection
    UPDATE loyalty.rejected_rows r SET resolved_at = now()
      FROM unnest(checked) a
     WHERE r.resolved_at IS NULL AND r.source_id = a.source_id AND r.order_ref = a.order_ref
       AND (a.reason IS NULL);

    IF cardinality(affected) > 0 THEN
        PERFORM loyalty._recompute_customers(affected, p_enqueue);
    END IF;
    RETURN cardinality(p_changes);
END
$$;

-- Drain the captured changes, oldest first. The drain lock keeps one applier at a
-- time; events of one shop row are captured in commit order (the row lock
-- orders the writers), so applying them by event_id keeps the newest version.
CREATE FUNCTION loyalty.apply_events(max_events integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch loyalty.order_change[];
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
    SELECT array_agg(ROW(source_id, op, order_ref, customer_id, amount, ordered_at, status, problem)::loyalty.order_change
                     ORDER BY event_id)
      INTO ch FROM d;
    RETURN loyalty._apply_changes(ch, true);
END
$$;
COMMENT ON FUNCTION loyalty.apply_events(integer) IS 'Apply up to max_events captured order changes to orders and customer state';

-- Row trigger in C: captures a tracked table's row as a loyalty.events row.
-- Never raises for a bad row: problems travel with the event and end in rejected_rows.
-- No SECURITY DEFINER or SET clause on purpose (per-row cost); see src/intake.c.
CREATE FUNCTION loyalty.capture_order()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'capture_order';
COMMENT ON FUNCTION loyalty.capture_order() IS 'Trigger attached by loyalty.track_orders(); do not call directly';

-- TRUNCATE of a tracked table: every order of that source stops counting.
CREATE FUNCTION loyalty.capture_truncate()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO loyalty.events (source_id, op, order_ref)
    SELECT o.source_id, 'd', o.order_ref FROM loyalty.orders o
     WHERE o.source_id = TG_ARGV[0]::integer AND o.counted;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION loyalty.capture_truncate() IS 'Statement trigger attached by loyalty.track_orders(); do not call directly';

-- A table name resolved in the caller's search_path (no SET clause on purpose;
-- everything is qualified), NULL when it does not exist or is not a valid name.
CREATE FUNCTION loyalty._lookup_table(p_source text)
RETURNS regclass
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN pg_catalog.to_regclass(p_source);
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$;

-- Check a source table, resolved by the public wrapper in the caller's
-- search_path (p_rel, NULL when not found), or fail with a clear error.
CREATE FUNCTION loyalty._resolve_table(p_rel regclass, p_source text)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass := p_rel;
    kind "char";
BEGIN
    IF p_source IS NULL OR btrim(p_source) = '' THEN
        RAISE EXCEPTION 'source table must not be empty'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the shop''s table, e.g. ''public.orders''.';
    END IF;
    IF rel IS NULL THEN
        RAISE EXCEPTION 'relation "%" does not exist', p_source
              USING ERRCODE = 'undefined_table', HINT = 'Pass an existing table, schema-qualified, e.g. ''public.orders''.';
    END IF;
    SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = rel;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '"%" is not a table', p_source
              USING ERRCODE = 'wrong_object_type', HINT = 'Attach the base table that holds the rows, not a view or sequence.';
    END IF;
    IF (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel) = 'loyalty' THEN
        RAISE EXCEPTION 'cannot track loyalty''s own table "%"', p_source
              USING ERRCODE = 'wrong_object_type', HINT = 'Attach the shop''s table.';
    END IF;
    RETURN rel;
END
$$;

-- Type of a column of rel, or a clear error naming the columns there are.
CREATE FUNCTION loyalty._column_type(rel regclass, p_role text, p_column text)
RETURNS regtype
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t regtype;
BEGIN
    IF p_column IS NULL OR p_column = '' THEN
        RAISE EXCEPTION '% must not be empty', p_role
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Name a column of ' || rel::text || '.';
    END IF;
    SELECT a.atttypid::regtype INTO t FROM pg_attribute a
     WHERE a.attrelid = rel AND a.attname = p_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF t IS NULL THEN
        RAISE EXCEPTION 'column "%" of relation "%" does not exist', p_column, rel::text
              USING ERRCODE = 'undefined_column',
                    HINT = format('%s must be one of: %s.', p_role,
                                  (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
                                    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped));
    END IF;
    -- a domain counts as its base type
    SELECT CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END::regtype INTO t
      FROM pg_type ty WHERE ty.oid = t;
    RETURN t;
END
$$;

-- Backfill one source's existing rows in batches of p_batch, in order id order.
-- Rerun-safe: an order already known with the same values changes nothing.
-- Ordering: each batch first drains the queue (holding the drain lock), then
-- reads its rows with a newer snapshot. A change committed before that read is
-- either already applied or read here; one committed later is queued and
-- applied after this transaction, so an older row version never wins.
CREATE FUNCTION loyalty._backfill(p_source_id integer, p_batch integer,
                                  p_after text DEFAULT NULL, p_max_batches integer DEFAULT NULL,
                                  OUT n_rows bigint, OUT last_key text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.sources;
    id_type text;
    q text;
    ch loyalty.order_change[];
    n bigint := 0;
    got integer;
    batches integer := 0;
    last_notice timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO STRICT s FROM loyalty.sources WHERE source_id = p_source_id;
    SELECT format_type(a.atttypid, a.atttypmod) INTO id_type
      FROM pg_attribute a
     WHERE a.attrelid = format('%I.%I', s.relation_schema, s.relation_name)::regclass AND a.attname = s.order_id_column;
    q := format(
        'SELECT array_agg(ROW(%s, ''u'', k::text, c::text, m::numeric, t::timestamptz, st::text, NULL)::loyalty.order_change ORDER BY k)
           FROM (SELECT %I AS k, %I AS c, %I AS m, %I AS t, %s AS st FROM %I.%I
                  WHERE $1 IS NULL OR %I > CAST($1 AS %s) ORDER BY %I LIMIT %s) b',
        s.source_id, s.order_id_column, s.customer_column, s.amount_column, s.ordered_at_column,
        CASE WHEN s.status_column IS NULL THEN 'NULL' ELSE quote_ident(s.status_column) END,
        s.relation_schema, s.relation_name, s.order_id_column, id_type, s.order_id_column, p_batch);
    last_key := p_after;
    PERFORM pg_advisory_xact_lock(74200, 1);
    LOOP
        PERFORM loyalty.apply_events(100000);
        EXECUTE q INTO ch USING last_key;
        got := coalesce(cardinality(ch), 0);
        EXIT WHEN got = 0;
        last_key := ch[got].order_ref;   -- keyset position: the batch is in key order
        PERFORM loyalty._apply_changes(ch, false);
        n := n + got;
        IF clock_timestamp() - last_notice > interval '5 seconds' THEN
            RAISE NOTICE 'loyalty: backfilled % rows of %.%', n, s.relation_schema, s.relation_name;
            last_notice := clock_timestamp();
        END IF;
        batches := batches + 1;
        EXIT WHEN got < p_batch OR batches = p_max_batches;
    END LOOP;
    IF p_max_batches IS NULL THEN
        UPDATE loyalty.sources SET backfilled_rows = n, backfilled_at = now() WHERE source_id = p_source_id;
    END IF;
    n_rows := n;
END
$$;

CREATE FUNCTION loyalty._track_orders(
    p_rel             regclass,
    source            text,
    customer_column   text,
    amount_column     text,
    ordered_at_column text,
    order_id_column   text,
    status_column     text DEFAULT NULL,
    counted_statuses  text[] DEFAULT NULL,
    backfill          boolean DEFAULT true,
    batch_size        integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass := loyalty._resolve_table(p_rel, source);
    sch text;
    tbl text;
    t regtype;
    sid integer;
    n bigint := 0;
BEGIN
    SELECT n2.nspname, c.relname INTO sch, tbl
      FROM pg_class c JOIN pg_namespace n2 ON n2.oid = c.relnamespace WHERE c.oid = rel;

    PERFORM loyalty._column_type(rel, 'customer_column', customer_column);

    t := loyalty._column_type(rel, 'amount_column', amount_column);
    IF t NOT IN ('numeric'::regtype, 'smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'real'::regtype, 'double precision'::regtype) THEN
        RAISE EXCEPTION 'amount column "%" is of type %, not a number', amount_column, t
              USING ERRCODE = 'datatype_mismatch', HINT = 'The amount column must be numeric, an integer type or a float type.';
    END IF;

    t := loyalty._column_type(rel, 'ordered_at_column', ordered_at_column);
    IF t NOT IN ('timestamp with time zone'::regtype, 'timestamp without time zone'::regtype, 'date'::regtype) THEN
        RAISE EXCEPTION 'order time column "%" is of type %, not a timestamp', ordered_at_column, t
              USING ERRCODE = 'datatype_mismatch', HINT = 'The order time column must be timestamptz, timestamp or date.';
    END IF;

    PERFORM loyalty._column_type(rel, 'order_id_column', order_id_column);
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i
         WHERE i.indrelid = rel AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL
           AND i.indkey[0] = (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = order_id_column)) THEN
        RAISE EXCEPTION 'order id column "%" of "%" is not unique', order_id_column, rel::text
              USING ERRCODE = 'invalid_table_definition',
                    HINT = 'Track a column with a primary key or unique constraint of its own; it identifies the order.';
    END IF;

    IF status_column IS NOT NULL THEN
        PERFORM loyalty._column_type(rel, 'status_column', status_column);
        IF counted_statuses IS NULL OR cardinality(counted_statuses) = 0 OR array_position(counted_statuses, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'counted_statuses must list the statuses that count as a purchase'
                  USING ERRCODE = 'invalid_parameter_value', HINT = 'For example counted_statuses => ARRAY[''paid'', ''shipped''].';
        END IF;
    ELSIF counted_statuses IS NOT NULL THEN
        RAISE EXCEPTION 'counted_statuses needs a status_column'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Name the column holding the order status.';
    END IF;

    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'The default of 10000 rows per batch suits most shops.';
    END IF;

    INSERT INTO loyalty.sources AS s (relation_schema, relation_name, customer_column, amount_column,
                                      ordered_at_column, order_id_column, status_column, counted_statuses)
    VALUES (sch, tbl, customer_column, amount_column, ordered_at_column, order_id_column, status_column, counted_statuses)
    ON CONFLICT (relation_schema, relation_name) DO UPDATE
       SET customer_column = excluded.customer_column, amount_column = excluded.amount_column,
           ordered_at_column = excluded.ordered_at_column, order_id_column = excluded.order_id_column,
           status_column = excluded.status_column, counted_statuses = excluded.counted_statuses
    RETURNING s.source_id INTO sid;

    EXECUTE format('CREATE OR REPLACE TRIGGER loyalty_capture_orders AFTER INSERT OR UPDATE OR DELETE ON %I.%I '
                   'FOR EACH ROW EXECUTE FUNCTION loyalty.capture_order(%L, %L, %L, %L, %L, %L)',
                   sch, tbl, sid, customer_column, amount_column, ordered_at_column, order_id_column,
                   coalesce(status_column, ''));
    EXECUTE format('CREATE OR REPLACE TRIGGER loyalty_capture_truncate AFTER TRUNCATE ON %I.%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION loyalty.capture_truncate(%L)', sch, tbl, sid);

    PERFORM loyalty._sync_earn_triggers();   -- order points (src 62_rewards.sql), if switched on

    IF backfill THEN
        n := (loyalty._backfill(sid, batch_size)).n_rows;
        RAISE NOTICE 'loyalty: tracking %.% (source %), % existing rows backfilled', sch, tbl, sid, n;
    ELSE
        RAISE NOTICE 'loyalty: tracking %.% (source %), no backfill', sch, tbl, sid;
    END IF;
    RETURN n;
END
$$;

-- Public entry points that name a shop table resolve it in the caller's
-- search_path (so 'orders' works as the caller means it) and hand the oid to
-- the implementation, which runs with a pinned search_path.
CREATE FUNCTION loyalty.track_orders(
    source            text,
    customer_column   text,
    amount_column     text,
    ordered_at_column text,
    order_id_column   text,
    status_column     text DEFAULT NULL,
    counted_statuses  text[] DEFAULT NULL,
    backfill          boolean DEFAULT true,
    batch_size        integer DEFAULT 10000)
RETURNS bigint
LANGUAGE sql
AS $$
SELECT loyalty._track_orders(loyalty._lookup_table(source), source, customer_column, amount_column,
                             ordered_at_column, order_id_column, status_column, counted_statuses, backfill, batch_size)
$$;
COMMENT ON FUNCTION loyalty.track_orders(text, text, text, text, text, text, text[], boolean, integer) IS
'Attach a shop orders table: capture every insert/update/delete/truncate and backfill existing rows; returns rows backfilled';

-- Batch-committing backfill for large tables: CALL loyalty.backfill('public.orders').
-- A procedure (no SET clause, everything qualified) so that it can commit per batch.
CREATE PROCEDURE loyalty.backfill(source text, batch_size integer DEFAULT 10000)
LANGUAGE plpgsql
AS $$
DECLARE
    sid integer;
    rel regclass := loyalty._resolve_table(loyalty._lookup_table(source), source);
    last_key text;
    got bigint;
    total bigint := 0;
BEGIN
    SELECT s.source_id INTO sid FROM loyalty.sources s
      JOIN pg_catalog.pg_class c ON c.relname OPERATOR(pg_catalog.=) s.relation_name
      JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace AND n.nspname OPERATOR(pg_catalog.=) s.relation_schema
     WHERE c.oid OPERATOR(pg_catalog.=) rel;
    IF sid IS NULL THEN
        RAISE EXCEPTION '"%" is not tracked', source
              USING ERRCODE = 'undefined_object', HINT = 'Attach it first with loyalty.track_orders(..., backfill => false).';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value', HINT = 'Try 10000.';
    END IF;
    LOOP
        SELECT b.n_rows, b.last_key INTO got, last_key FROM loyalty._backfill(sid, batch_size, last_key, 1) b;
        total := total OPERATOR(pg_catalog.+) got;
        RAISE NOTICE 'loyalty: backfilled % rows of %', total, source;
        COMMIT;
        EXIT WHEN got OPERATOR(pg_catalog.<) batch_size;
    END LOOP;
    UPDATE loyalty.sources SET backfilled_rows = total, backfilled_at = pg_catalog.now() WHERE source_id OPERATOR(pg_catalog.=) sid;
    COMMIT;
END
$$;
COMMENT ON PROCEDURE loyalty.backfill(text, integer) IS 'Backfill a tracked table in committed batches (for large tables; rerun-safe)';

-- Validate an amount given to the API.
CREATE FUNCTION loyalty._check_amount(p_amount numeric, p_what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_amount IS NULL THEN
        RAISE EXCEPTION '% must not be null', p_what
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the amount in the shop''s currency, e.g. 49.90.';
    ELSIF p_amount = 'NaN'::numeric OR p_amount IN ('Infinity'::numeric, '-Infinity'::numeric) THEN
        RAISE EXCEPTION '% must be a finite number, not %', p_what, p_amount
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the amount in the shop''s currency, e.g. 49.90.';
    ELSIF p_amount < 0 THEN
        RAISE EXCEPTION '% must not be negative: %', p_what, p_amount
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Record money going back to the customer with loyalty.record_refund().';
    END IF;
END
$$;

-- Record an order from the app. Idempotent by order_ref: a replay with the same
-- values returns the first result; different values are an error.
CREATE FUNCTION loyalty.record_order(customer_id text, order_ref text, amount numeric, ordered_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o loyalty.orders;
    id bigint;
BEGIN
    IF customer_id IS NULL OR btrim(customer_id) = '' THEN
        RAISE EXCEPTION 'customer_id must not be null or empty'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the shop''s own customer key as text, e.g. ''42''.';
    END IF;
    IF order_ref IS NULL OR btrim(order_ref) = '' THEN
        RAISE EXCEPTION 'order_ref must not be null or empty'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the shop''s order number; it makes the call safe to retry.';
    END IF;
    PERFORM loyalty._check_amount(amount, 'amount');
    IF ordered_at IS NOT NULL AND NOT isfinite(ordered_at) THEN
        RAISE EXCEPTION 'ordered_at must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass when the order was placed, or omit it for now().';
    END IF;

    INSERT INTO loyalty.orders AS t (order_ref, source_id, customer_id, amount, ordered_at, counted)
    VALUES (record_order.order_ref, NULL, record_order.customer_id, record_order.amount,
            coalesce(record_order.ordered_at, now()), true)
    ON CONFLICT ON CONSTRAINT orders_pkey DO NOTHING
    RETURNING t.order_id INTO id;

    IF id IS NULL THEN
        SELECT * INTO o FROM loyalty.orders t WHERE t.order_ref = record_order.order_ref;
        IF o.source_id IS NOT NULL THEN
            RAISE EXCEPTION 'order "%" comes from a tracked table', record_order.order_ref
                  USING ERRCODE = 'unique_violation',
                        HINT = 'Tracked orders change with the shop''s table; record refunds with loyalty.record_refund().';
        END IF;
        IF o.customer_id <> record_order.customer_id OR o.amount <> record_order.amount
           OR (record_order.ordered_at IS NOT NULL AND o.ordered_at <> record_order.ordered_at) THEN
            RAISE EXCEPTION 'order "%" was already recorded with other values', record_order.order_ref
                  USING ERRCODE = 'unique_violation',
                        DETAIL = format('recorded: customer %s, amount %s, at %s', o.customer_id, o.amount, o.ordered_at),
                        HINT = 'An order_ref names one order; use a new order_ref for a new order.';
        END IF;
        RETURN o.order_id;   -- replay: nothing changes
    END IF;

    PERFORM loyalty._sync_recorded_order(record_order.order_ref);   -- points, if earn_on_orders
    PERFORM loyalty._recompute_customers(ARRAY[record_order.customer_id], true);
    RETURN id;
END
$$;
COMMENT ON FUNCTION loyalty.record_order(text, text, numeric, timestamptz) IS
'Record an order from the app (idempotent by order_ref); ordered_at defaults to now(); returns loyalty''s order id';

-- Refund part (amount) or the rest (NULL) of an order. Idempotent by key; the
-- default key is the order and amount, so a retried call never refunds twice.
CREATE FUNCTION loyalty.record_refund(order_ref text, amount numeric DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS numeric
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o loyalty.orders;
    r loyalty.refunds;
    k text;
    amt numeric;
BEGIN
    IF order_ref IS NULL OR btrim(order_ref) = '' THEN
        RAISE EXCEPTION 'order_ref must not be null or empty'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the order number the refund belongs to.';
    END IF;
    IF amount IS NOT NULL THEN
        PERFORM loyalty._check_amount(amount, 'refund amount');
        IF amount = 0 THEN
            RAISE EXCEPTION 'refund amount must be positive'
                  USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL to refund the whole order.';
        END IF;
    END IF;
    IF idempotency_key IS NOT NULL AND btrim(idempotency_key) = '' THEN
        RAISE EXCEPTION 'idempotency_key must not be empty'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the shop''s refund id, or NULL.';
    END IF;
    k := coalesce(idempotency_key, record_refund.order_ref || ':' || coalesce(amount::text, 'rest'));

    -- the order row lock serialises every refund of one order
    SELECT * INTO o FROM loyalty.orders t WHERE t.order_ref = record_refund.order_ref FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'order "%" is not known', record_refund.order_ref
              USING ERRCODE = 'no_data_found', HINT = 'Record or track the order before refunding it.';
    END IF;

    SELECT * INTO r FROM loyalty.refunds f WHERE f.idempotency_key = k;
    IF FOUND THEN
        IF r.order_ref <> record_refund.order_ref OR (amount IS NOT NULL AND r.amount <> amount) THEN
            RAISE EXCEPTION 'refund "%" was already recorded with other values', k
                  USING ERRCODE = 'unique_violation', HINT = 'Use a new idempotency_key for a new refund.';
        END IF;
        RETURN r.amount;   -- replay
    END IF;

    IF o.amount - o.refunded = 0 THEN
        RAISE EXCEPTION 'order "%" has nothing left to refund', o.order_ref
              USING ERRCODE = 'invalid_parameter_value', HINT = 'It was refunded in full already.';
    END IF;
    amt := coalesce(amount, o.amount - o.refunded);
    IF amt > o.amount - o.refunded THEN
        RAISE EXCEPTION 'refund of % exceeds the % left to refund on order "%"', amt, o.amount - o.refunded, o.order_ref
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Refund at most what the order has left, or NULL for all of it.';
    END IF;
    INSERT INTO loyalty.refunds (idempotency_key, order_ref, amount) VALUES (k, o.order_ref, amt);
    UPDATE loyalty.orders t SET refunded = t.refunded + amt, updated_at = now() WHERE t.order_ref = o.order_ref;
    PERFORM loyalty._sync_recorded_order(o.order_ref);   -- reverse the order's points in proportion
    PERFORM loyalty._recompute_customers(ARRAY[o.customer_id], true);
    RETURN amt;
END
$$;
COMMENT ON FUNCTION loyalty.record_refund(text, numeric, text) IS
'Refund part of an order (amount) or all that is left (NULL); idempotent by key (default: order and amount); returns the amount refunded';

-- Re-capture the shop rows behind open rejections (after the shop fixed them).
-- Returns the number of rows accepted now.
CREATE FUNCTION loyalty._replay_rejected(p_rel regclass, source text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.sources;
    keys text[];
    all_keys text[] := '{}';
    id_type text;
    still bigint;
    only_sid integer;
BEGIN
    IF source IS NOT NULL THEN
        SELECT so.source_id INTO only_sid FROM loyalty.sources so
         WHERE format('%I.%I', so.relation_schema, so.relation_name)::regclass = loyalty._resolve_table(p_rel, source);
        IF only_sid IS NULL THEN
            RAISE EXCEPTION '"%" is not tracked', source
                  USING ERRCODE = 'undefined_object', HINT = 'See loyalty.sources for the tracked tables.';
        END IF;
    END IF;
    FOR s IN SELECT * FROM loyalty.sources WHERE only_sid IS NULL OR source_id = only_sid LOOP
        -- resolved now; a row still bad is rejected again when its event applies
        WITH u AS (
            UPDATE loyalty.rejected_rows r SET resolved_at = now()
             WHERE r.source_id = s.source_id AND r.resolved_at IS NULL AND r.order_ref IS NOT NULL
            RETURNING r.order_ref)
        SELECT array_agg(order_ref) INTO keys FROM u;
        CONTINUE WHEN keys IS NULL;
        all_keys := all_keys || keys;
        SELECT format_type(a.atttypid, a.atttypmod) INTO id_type FROM pg_attribute a
         WHERE a.attrelid = format('%I.%I', s.relation_schema, s.relation_name)::regclass AND a.attname = s.order_id_column;
        EXECUTE format('INSERT INTO loyalty.events (source_id, op, order_ref, customer_id, amount, ordered_at, status)
                        SELECT %s, ''u'', %I::text, %I::text, %I::numeric, %I::timestamptz, %s
                          FROM %I.%I WHERE %I = ANY (CAST($1 AS %s[]))',
                       s.source_id, s.order_id_column, s.customer_column, s.amount_column, s.ordered_at_column,
                       CASE WHEN s.status_column IS NULL THEN 'NULL' ELSE quote_ident(s.status_column) || '::text' END,
                       s.relation_schema, s.relation_name, s.order_id_column, id_type)
        USING keys;
    END LOOP;
    WHILE loyalty.apply_events(100000) > 0 LOOP
    END LOOP;
    SELECT count(*) INTO still FROM loyalty.rejected_rows r
     WHERE r.resolved_at IS NULL AND r.order_ref = ANY (all_keys);
    RETURN cardinality(all_keys) - still;
END
$$;
CREATE FUNCTION loyalty.replay_rejected(source text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql
AS $$ SELECT loyalty._replay_rejected(loyalty._lookup_table(source), source) $$;
COMMENT ON FUNCTION loyalty.replay_rejected(text) IS 'Re-capture rejected shop rows (all sources, or one); returns how many are accepted now';

-- Stop tracking a table: removes the triggers; orders already captured stay.
CREATE FUNCTION loyalty._untrack_orders(p_rel regclass, source text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass := loyalty._resolve_table(p_rel, source);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM loyalty.sources so
                    WHERE format('%I.%I', so.relation_schema, so.relation_name)::regclass = rel) THEN
        RAISE EXCEPTION '"%" is not tracked', source
              USING ERRCODE = 'undefined_object', HINT = 'See loyalty.sources for the tracked tables.';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS loyalty_capture_orders ON %s', rel);
    EXECUTE format('DROP TRIGGER IF EXISTS loyalty_capture_truncate ON %s', rel);
    EXECUTE format('DROP TRIGGER IF EXISTS loyalty_earn_orders ON %s', rel);
    EXECUTE format('DROP TRIGGER IF EXISTS loyalty_capture_deliveries ON %s', rel);
END
$$;
CREATE FUNCTION loyalty.untrack_orders(source text)
RETURNS void
LANGUAGE sql
AS $$ SELECT loyalty._untrack_orders(loyalty._lookup_table(source), source) $$;
COMMENT ON FUNCTION loyalty.untrack_orders(text) IS 'Detach a tracked table (its triggers); captured orders stay';
-- RFM: settings, bounds in force, segment rules, per-customer scores, views.

CREATE TABLE loyalty.rfm_config (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    bins             integer NOT NULL DEFAULT 5 CHECK (bins BETWEEN 2 AND 10),
    mode             text NOT NULL DEFAULT 'quantile' CHECK (mode IN ('quantile', 'fixed')),
    recency_bounds   float8[],
    frequency_bounds float8[],
    monetary_bounds  float8[]
);
INSERT INTO loyalty.rfm_config DEFAULT VALUES;
COMMENT ON TABLE loyalty.rfm_config IS 'RFM settings; change them with loyalty.configure_rfm()';

CREATE TABLE loyalty.rfm_bounds (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    bins             integer NOT NULL,
    mode             text NOT NULL,
    recency_bounds   float8[] NOT NULL,
    frequency_bounds float8[] NOT NULL,
    monetary_bounds  float8[] NOT NULL,
    customers        bigint NOT NULL,
    computed_at      timestamptz NOT NULL
);
COMMENT ON TABLE loyalty.rfm_bounds IS 'RFM bin bounds in force (written by loyalty.refresh())';
COMMENT ON COLUMN loyalty.rfm_bounds.recency_bounds IS 'days since last order; a customer at or below the k-th bound is in the k-th most recent bin';

CREATE TABLE loyalty.segment_rules (
    position integer PRIMARY KEY,
    segment  text NOT NULL CHECK (btrim(segment) <> ''),
    r_min    integer NOT NULL CHECK (r_min >= 1),
    r_max    integer NOT NULL,
    f_min    integer NOT NULL CHECK (f_min >= 1),
    f_max    integer NOT NULL,
    m_min    integer NOT NULL CHECK (m_min >= 1),
    m_max    integer NOT NULL,
    CHECK (r_min <= r_max AND f_min <= f_max AND m_min <= m_max)
);
COMMENT ON TABLE loyalty.segment_rules IS 'Named RFM segments: the first rule (by position) whose score ranges hold wins; no match is ''Other''';

-- Default rules: the rfm R package (rsquaredacademy), vignette
-- 'rfm-customer-level-data', ranges inclusive on 1..5 scores.
INSERT INTO loyalty.segment_rules VALUES
    (1,  'Champions',          4, 5, 4, 5, 4, 5),
    (2,  'Loyal Customers',    2, 4, 3, 4, 4, 5),
    (3,  'Potential Loyalist', 3, 5, 1, 3, 1, 3),
    (4,  'New Customers',      4, 5, 1, 1, 1, 1),
    (5,  'Promising',          3, 4, 1, 1, 1, 1),
    (6,  'Need Attention',     3, 4, 3, 4, 3, 4),
    (7,  'About To Sleep',     2, 3, 1, 2, 1, 2),
    (8,  'At Risk',            1, 2, 2, 5, 2, 5),
    (9,  'Can''t Lose Them',   1, 1, 4, 5, 4, 5),
    (10, 'Hibernating',        2, 3, 2, 3, 2, 3),
    (11, 'Lost',               1, 1, 1, 1, 1, 1);

CREATE TABLE loyalty.customer_rfm (
    customer_id text PRIMARY KEY,
    r_score     smallint NOT NULL,
    f_score     smallint NOT NULL,
    m_score     smallint NOT NULL,
    segment     text NOT NULL,
    scored_at   timestamptz NOT NULL
);
COMMENT ON TABLE loyalty.customer_rfm IS 'RFM scores per customer; a row is rewritten only when its scores change';

-- Score customers in C (src/rfm.c). p_full: recompute bounds (quantile mode)
-- and score everyone; else score up to p_limit queued customers.
CREATE FUNCTION loyalty._rfm_score(p_full boolean, p_as_of timestamptz, p_limit integer)
RETURNS bigint
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'rfm_score';

-- Score of value v against ascending bounds b: 1 + number of bounds below v
-- (equal values always get equal scores); reverse for recency (fewer days = better).
CREATE FUNCTION loyalty.rfm_bin(v float8, bounds float8[], reverse boolean DEFAULT false)
RETURNS integer
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'rfm_bin';
COMMENT ON FUNCTION loyalty.rfm_bin(float8, float8[], boolean) IS
'RFM score of a value against ascending bin bounds: 1 + bounds strictly below it (reverse: bins - that + 1)';

CREATE FUNCTION loyalty.configure_rfm(bins integer DEFAULT 5, mode text DEFAULT 'quantile',
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
    UPDATE loyalty.rfm_config c
       SET bins = configure_rfm.bins, mode = configure_rfm.mode, recency_bounds = configure_rfm.recency_bounds,
           frequency_bounds = configure_rfm.frequency_bounds, monetary_bounds = configure_rfm.monetary_bounds;
    -- bounds of the old setting no longer apply
    DELETE FROM loyalty.rfm_bounds;
END
$$;
COMMENT ON FUNCTION loyalty.configure_rfm(integer, text, float8[], float8[], float8[]) IS
'Set RFM bins and mode (quantile, or fixed thresholds); takes effect at the next loyalty.refresh()';

CREATE VIEW loyalty.customer_segments AS
SELECT s.customer_id,
       floor(extract(epoch FROM (greatest(r.scored_at, b.computed_at) - s.last_order_at)) / 86400)::integer AS recency_days,
       s.orders AS frequency,
       s.net_spend AS monetary,
       r.r_score, r.f_score, r.m_score,
       r.segment,
       greatest(r.scored_at, b.computed_at) AS computed_at
  FROM loyalty.customer_state s
  JOIN loyalty.customer_rfm r USING (customer_id)
  LEFT JOIN loyalty.rfm_bounds b ON true;
COMMENT ON VIEW loyalty.customer_segments IS 'RFM scores and named segment per customer';
COMMENT ON COLUMN loyalty.customer_segments.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.customer_segments.recency_days IS 'whole days from the last counted order to computed_at';
COMMENT ON COLUMN loyalty.customer_segments.frequency IS 'counted orders';
COMMENT ON COLUMN loyalty.customer_segments.monetary IS 'net spend (orders less refunds)';
COMMENT ON COLUMN loyalty.customer_segments.r_score IS 'recency score, 1 (longest ago) to bins (most recent)';
COMMENT ON COLUMN loyalty.customer_segments.f_score IS 'frequency score, 1 (fewest orders) to bins';
COMMENT ON COLUMN loyalty.customer_segments.m_score IS 'monetary score, 1 (lowest spend) to bins';
COMMENT ON COLUMN loyalty.customer_segments.segment IS 'named segment from loyalty.segment_rules (Other when no rule matches)';
COMMENT ON COLUMN loyalty.customer_segments.computed_at IS 'when these scores were evaluated';

CREATE VIEW loyalty.segment_summary AS
SELECT segment,
       count(*) AS customers,
       round(100.0 * count(*) / sum(count(*)) OVER (), 2) AS share_pct,
       sum(monetary) AS revenue,
       round(sum(monetary) / nullif(sum(frequency), 0), 2) AS avg_order_value,
       round(avg(recency_days), 1) AS avg_recency_days
  FROM loyalty.customer_segments
 GROUP BY segment;
COMMENT ON VIEW loyalty.segment_summary IS 'Customers, share, revenue, average order value and recency per RFM segment';
COMMENT ON COLUMN loyalty.segment_summary.share_pct IS 'percent of scored customers';
COMMENT ON COLUMN loyalty.segment_summary.revenue IS 'net spend of the segment''s customers';
COMMENT ON COLUMN loyalty.segment_summary.avg_order_value IS 'revenue / counted orders';
COMMENT ON COLUMN loyalty.segment_summary.avg_recency_days IS 'mean days since last order';
-- 40_btyd.sql — scoring: BG/NBD and Gamma-Gamma models (src/btyd.c).
-- Pure math: no table access, no search_path dependence, so no SET clause
-- (it would also defeat per-row speed); EXECUTE stays with the roles.

CREATE TYPE loyalty.bgnbd_fit_result AS (
    r double precision,
    alpha double precision,
    a double precision,
    b double precision,
    loglik double precision,
    converged boolean,
    iterations integer
);
COMMENT ON TYPE loyalty.bgnbd_fit_result IS
    'BG/NBD maximum-likelihood fit: parameters r, alpha (purchase rate ~ Gamma(r, alpha)), a, b (dropout ~ Beta(a, b)), total log-likelihood, whether the optimiser converged, and its iteration count';

CREATE TYPE loyalty.gamma_gamma_fit_result AS (
    p double precision,
    q double precision,
    gamma double precision,
    loglik double precision,
    converged boolean,
    iterations integer
);
COMMENT ON TYPE loyalty.gamma_gamma_fit_result IS
    'Gamma-Gamma maximum-likelihood fit: parameters p, q, gamma, total log-likelihood, whether the optimiser converged, and its iteration count';

-- per-customer BG/NBD functions

CREATE FUNCTION loyalty.bgnbd_loglik(x integer, t_x double precision, t double precision,
                                     r double precision, alpha double precision,
                                     a double precision, b double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'bgnbd_loglik'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.bgnbd_loglik(integer, double precision, double precision, double precision, double precision, double precision, double precision) IS
    'BG/NBD log-likelihood of one customer with x repeat purchases, last at t_x, observed for t since the first purchase (Fader, Hardie & Lee 2005, eq. 6)';

CREATE FUNCTION loyalty.bgnbd_p_alive(x integer, t_x double precision, t double precision,
                                      r double precision, alpha double precision,
                                      a double precision, b double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'bgnbd_p_alive'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.bgnbd_p_alive(integer, double precision, double precision, double precision, double precision, double precision, double precision) IS
    'BG/NBD probability that a customer with history (x, t_x, t) is still active at t';

CREATE FUNCTION loyalty.bgnbd_expected(horizon double precision, x integer,
                                       t_x double precision, t double precision,
                                       r double precision, alpha double precision,
                                       a double precision, b double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'bgnbd_expected'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.bgnbd_expected(double precision, integer, double precision, double precision, double precision, double precision, double precision, double precision) IS
    'BG/NBD expected number of purchases in (t, t + horizon] for a customer with history (x, t_x, t) (Fader, Hardie & Lee 2005, eq. 10)';

CREATE FUNCTION loyalty.bgnbd_expected_new(horizon double precision,
                                           r double precision, alpha double precision,
                                           a double precision, b double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'bgnbd_expected_new'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.bgnbd_expected_new(double precision, double precision, double precision, double precision, double precision) IS
    'BG/NBD expected number of repeat purchases in the first horizon after a customer''s first purchase (Fader, Hardie & Lee 2005, eq. 9)';

-- BG/NBD fitting aggregate

CREATE FUNCTION loyalty.bgnbd_fit_trans(internal, integer, double precision, double precision)
RETURNS internal
AS 'MODULE_PATHNAME', 'bgnbd_fit_trans'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.bgnbd_fit_trans(internal, integer, double precision, double precision) IS
    'transition function of loyalty.bgnbd_fit';

CREATE FUNCTION loyalty.bgnbd_fit_final(internal)
RETURNS loyalty.bgnbd_fit_result
AS 'MODULE_PATHNAME', 'bgnbd_fit_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.bgnbd_fit_final(internal) IS
    'final function of loyalty.bgnbd_fit';

CREATE AGGREGATE loyalty.bgnbd_fit(x integer, t_x double precision, t double precision) (
    SFUNC = loyalty.bgnbd_fit_trans,
    STYPE = internal,
    FINALFUNC = loyalty.bgnbd_fit_final
);
COMMENT ON AGGREGATE loyalty.bgnbd_fit(integer, double precision, double precision) IS
    'maximum-likelihood BG/NBD fit over customers (x repeat purchases, last at t_x, observed for t); rows with a NULL are skipped; NULL for no rows';

-- Gamma-Gamma functions

CREATE FUNCTION loyalty.gamma_gamma_loglik(x integer, mean_value double precision,
                                           p double precision, q double precision,
                                           gamma double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'gamma_gamma_loglik'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.gamma_gamma_loglik(integer, double precision, double precision, double precision, double precision) IS
    'Gamma-Gamma log-likelihood of a repeat buyer''s mean transaction value over x transactions (Fader & Hardie 2013)';

CREATE FUNCTION loyalty.gamma_gamma_mean(x integer, mean_value double precision,
                                         p double precision, q double precision,
                                         gamma double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'gamma_gamma_mean'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.gamma_gamma_mean(integer, double precision, double precision, double precision, double precision) IS
    'Gamma-Gamma expected spend per transaction of a customer with x repeat transactions averaging mean_value; x = 0 gives the population mean (Fader & Hardie 2013)';

CREATE FUNCTION loyalty.gamma_gamma_fit_trans(internal, integer, double precision)
RETURNS internal
AS 'MODULE_PATHNAME', 'gamma_gamma_fit_trans'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.gamma_gamma_fit_trans(internal, integer, double precision) IS
    'transition function of loyalty.gamma_gamma_fit';

CREATE FUNCTION loyalty.gamma_gamma_fit_final(internal)
RETURNS loyalty.gamma_gamma_fit_result
AS 'MODULE_PATHNAME', 'gamma_gamma_fit_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.gamma_gamma_fit_final(internal) IS
    'final function of loyalty.gamma_gamma_fit';

CREATE AGGREGATE loyalty.gamma_gamma_fit(x integer, mean_value double precision) (
    SFUNC = loyalty.gamma_gamma_fit_trans,
    STYPE = internal,
    FINALFUNC = loyalty.gamma_gamma_fit_final
);
COMMENT ON AGGREGATE loyalty.gamma_gamma_fit(integer, double precision) IS
    'maximum-likelihood Gamma-Gamma fit of spend per transaction over repeat buyers (x > 0, mean_value > 0); rows with x = 0 or a NULL are skipped; NULL for no rows';

GRANT USAGE ON TYPE loyalty.bgnbd_fit_result, loyalty.gamma_gamma_fit_result
    TO loyalty_admin, loyalty_app, loyalty_reader;
GRANT EXECUTE ON FUNCTION
    loyalty.bgnbd_loglik(integer, double precision, double precision, double precision, double precision, double precision, double precision),
    loyalty.bgnbd_p_alive(integer, double precision, double precision, double precision, double precision, double precision, double precision),
    loyalty.bgnbd_expected(double precision, integer, double precision, double precision, double precision, double precision, double precision, double precision),
    loyalty.bgnbd_expected_new(double precision, double precision, double precision, double precision, double precision),
    loyalty.bgnbd_fit(integer, double precision, double precision),
    loyalty.bgnbd_fit_trans(internal, integer, double precision, double precision),
    loyalty.bgnbd_fit_final(internal),
    loyalty.gamma_gamma_loglik(integer, double precision, double precision, double precision, double precision),
    loyalty.gamma_gamma_mean(integer, double precision, double precision, double precision, double precision),
    loyalty.gamma_gamma_fit(integer, double precision),
    loyalty.gamma_gamma_fit_trans(internal, integer, double precision),
    loyalty.gamma_gamma_fit_final(internal)
    TO loyalty_admin, loyalty_app, loyalty_reader;
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

-- Calibration/holdout check: refit BG/NBD on the data up to p_holdout_days ago,
-- predict each customer's repeat purchase days in the holdout window and
-- compare with what happened, per calibration frequency (0..6, 7+).
CREATE FUNCTION loyalty.validate_models(p_holdout_days integer DEFAULT NULL)
RETURNS TABLE (calibration_repeats text, customers bigint, predicted_avg float8, actual_avg float8,
               predicted_total float8, actual_total bigint, holdout_days integer, fit_converged boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h integer := coalesce(p_holdout_days, (SELECT s.holdout_days FROM loyalty.model_settings s));
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
END
$$;
COMMENT ON FUNCTION loyalty.refresh(timestamptz, boolean) IS
'Apply captured changes, recompute RFM bounds and every customer''s scores, refit the churn/CLV models; returns counts and fit status';

-- One worker round: apply changes, rescore queued customers, and run a full
-- refresh when the last one is older than p_refresh_interval seconds. Under a
-- burst of orders a round keeps applying and rescoring batches for up to
-- p_budget_ms, so the queue drains as fast as it fills (one transaction; the
-- changes become visible when the round commits).
CREATE FUNCTION loyalty.worker_tick(p_refresh_interval integer DEFAULT 3600, p_budget_ms integer DEFAULT 2000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last timestamptz;
    n bigint := 0;
    got bigint;
    deadline timestamptz := clock_timestamp() + make_interval(secs => p_budget_ms / 1000.0);
BEGIN
    IF NOT pg_try_advisory_xact_lock(74200, 2) THEN
        RETURN 0;   -- a refresh is running; it does this round's work
    END IF;
    SELECT computed_at INTO last FROM loyalty.rfm_bounds;
    IF last IS NULL AND NOT EXISTS (SELECT 1 FROM loyalty.customer_state) AND NOT EXISTS (SELECT 1 FROM loyalty.events) THEN
        RETURN 0;
    END IF;
    IF last IS NULL OR last < now() - make_interval(secs => p_refresh_interval) THEN
        SELECT r.events_applied INTO n FROM loyalty.refresh() r;
        RETURN n;
    END IF;
    LOOP
        got := loyalty.apply_events(10000);
        n := n + got;
        PERFORM loyalty._rfm_score(false, now(), 10000);
        EXIT WHEN (got < 10000 AND NOT EXISTS (SELECT 1 FROM loyalty.score_queue)) OR clock_timestamp() > deadline;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION loyalty.worker_tick(integer, integer) IS 'One background worker round (also callable by hand or pg_cron)';
-- Rewards: an append-only points ledger, point lots for FIFO expiry, earn rules,
-- points from orders (pending through the return window), reversals on refund,
-- and tiers by rolling spend.
--
-- The model. loyalty.ledger is the record: one row per change of a customer's
-- points, never updated or deleted. Two derived tables make reads and FIFO
-- cheap and are always written in the same transaction as the entry:
--   loyalty.point_lots  one row per earned batch, with what is left of it
--   loyalty.accounts    per customer: balance (= sum of the ledger), debt,
--                       lifetime totals
-- Invariant, checked by loyalty.verify_ledger():
--   accounts.balance = sum(ledger.points) = sum(point_lots.remaining) - accounts.debt
--
-- Locking. Every write of a customer's points first locks that customer's
-- accounts row (FOR UPDATE) and only then reads lots, idempotency keys or the
-- balance, each in a statement that starts after the lock was granted (READ
-- COMMITTED takes a fresh snapshot per statement). So two writers of one
-- customer run one after the other and the second sees all the first wrote:
-- two redemptions cannot both spend the same points, and expiry cannot expire
-- points a concurrent redemption spent. A transaction locks one account, or
-- several in customer_id order (expire_points), so no lock cycle can form.

CREATE TABLE loyalty.rewards_settings (
    id                  boolean PRIMARY KEY DEFAULT true CHECK (id),
    earn_on_orders      boolean NOT NULL DEFAULT false,
    earning_since       timestamptz,
    return_window       interval NOT NULL DEFAULT '14 days' CHECK (return_window >= '0'),
    points_expire_after interval DEFAULT '365 days' CHECK (points_expire_after > '0'),
    refund_policy       text NOT NULL DEFAULT 'debt' CHECK (refund_policy IN ('debt', 'clamp')),
    point_value         numeric NOT NULL DEFAULT 0.01 CHECK (point_value >= 0),
    expiry_warning      interval NOT NULL DEFAULT '30 days' CHECK (expiry_warning >= '0'),
    tier_window         interval NOT NULL DEFAULT '12 months' CHECK (tier_window > '0'),
    tier_grace          interval NOT NULL DEFAULT '30 days' CHECK (tier_grace >= '0'),
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now()
);
INSERT INTO loyalty.rewards_settings DEFAULT VALUES;
COMMENT ON TABLE loyalty.rewards_settings IS 'Rewards settings (one row); change with loyalty.configure_rewards()';
COMMENT ON COLUMN loyalty.rewards_settings.earning_since IS 'when earn_on_orders was switched on: older orders never earn';

CREATE TABLE loyalty.tiers (
    tier            text PRIMARY KEY CHECK (btrim(tier) <> ''),
    min_spend       numeric NOT NULL UNIQUE CHECK (min_spend >= 0 AND min_spend < 'Infinity'),
    earn_multiplier numeric NOT NULL DEFAULT 1 CHECK (earn_multiplier > 0 AND earn_multiplier < 'Infinity'),
    benefits        jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE loyalty.tiers IS 'Tiers by net spend over the rolling window (rewards_settings.tier_window); the shop edits this table';

CREATE TABLE loyalty.earn_rules (
    rule_id              serial PRIMARY KEY,
    name                 text NOT NULL UNIQUE,
    points_per_unit      numeric NOT NULL DEFAULT 0 CHECK (points_per_unit >= 0 AND points_per_unit < 'Infinity'),
    multiplier           numeric NOT NULL DEFAULT 1 CHECK (multiplier > 0 AND multiplier < 'Infinity'),
    max_points_per_order bigint CHECK (max_points_per_order >= 0),
    tier                 text REFERENCES loyalty.tiers ON UPDATE CASCADE ON DELETE CASCADE,
    segment              text,
    valid_from           timestamptz,
    valid_until          timestamptz,
    active               boolean NOT NULL DEFAULT true,
    CHECK (valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until)
);
COMMENT ON TABLE loyalty.earn_rules IS
'Points for orders: every active rule whose tier, segment and dates match the order adds its points_per_unit to the rate, multiplies by its multiplier and caps by its max_points_per_order';
INSERT INTO loyalty.earn_rules (name, points_per_unit) VALUES ('base: 1 point per currency unit', 1);
INSERT INTO loyalty.earn_rules (name, multiplier, valid_from, valid_until, active)
VALUES ('example: double points week', 2, '2026-12-01', '2026-12-08', false);

CREATE TABLE loyalty.ledger (
    entry_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id     text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('earn', 'redeem', 'expire', 'reverse', 'adjust')),
    points          bigint NOT NULL,
    order_ref       text,
    lot_id          bigint,
    idempotency_key text COLLATE "C" NOT NULL UNIQUE,
    reason          text,
    available_at    timestamptz,
    expires_at      timestamptz,
    detail          jsonb,
    created_by      text NOT NULL DEFAULT session_user,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK (CASE kind WHEN 'earn' THEN points > 0
                     WHEN 'adjust' THEN points <> 0
                     ELSE points <= 0 END)
);
CREATE INDEX ledger_customer_idx ON loyalty.ledger (customer_id, entry_id);
CREATE INDEX ledger_order_idx ON loyalty.ledger (order_ref) WHERE order_ref IS NOT NULL;
COMMENT ON TABLE loyalty.ledger IS 'Append-only points ledger: one row per change of a customer''s points (corrections are new entries)';
COMMENT ON COLUMN loyalty.ledger.points IS 'signed: earn > 0; redeem, expire, reverse <= 0; adjust either';
COMMENT ON COLUMN loyalty.ledger.lot_id IS 'for expire: the lot expired';
COMMENT ON COLUMN loyalty.ledger.detail IS 'how the entry came about (order points: basis amount, rate, multipliers; reversal: shortfall)';
COMMENT ON COLUMN loyalty.ledger.created_by IS 'the database user whose session made the entry';

CREATE FUNCTION loyalty._ledger_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'loyalty.ledger is append-only'
          USING ERRCODE = 'object_not_in_prerequisite_state',
                HINT = 'Correct a balance with a new entry: loyalty.adjust_points().';
END
$$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON loyalty.ledger
    FOR EACH ROW EXECUTE FUNCTION loyalty._ledger_append_only();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON loyalty.ledger
    FOR EACH STATEMENT EXECUTE FUNCTION loyalty._ledger_append_only();

-- What is left of each earned batch; a lot spent, expired or taken back in
-- full is deleted (the ledger keeps the history). No index covers remaining,
-- so spending part of a lot is a HOT update. available_at 'infinity': waiting
-- for a delivery the shop has not recorded yet.
CREATE TABLE loyalty.point_lots (
    lot_id       bigint PRIMARY KEY,
    customer_id  text NOT NULL,
    points       bigint NOT NULL,
    remaining    bigint NOT NULL CHECK (remaining > 0 AND remaining <= points),
    available_at timestamptz NOT NULL,
    expires_at   timestamptz,
    order_ref    text
) WITH (fillfactor = 80);
CREATE INDEX point_lots_customer_idx ON loyalty.point_lots (customer_id);
CREATE INDEX point_lots_expiry_idx ON loyalty.point_lots (expires_at) WHERE expires_at IS NOT NULL;
COMMENT ON TABLE loyalty.point_lots IS 'Earned batches of points and what is left of each (FIFO redemption and expiry)';

CREATE TABLE loyalty.accounts (
    customer_id       text PRIMARY KEY,
    balance           bigint NOT NULL DEFAULT 0,
    debt              bigint NOT NULL DEFAULT 0 CHECK (debt >= 0),
    lifetime_earned   bigint NOT NULL DEFAULT 0,
    lifetime_redeemed bigint NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT pg_catalog.now()
) WITH (fillfactor = 80);
COMMENT ON TABLE loyalty.accounts IS 'Per customer: balance (sum of the ledger), debt (points owed after refunds), lifetime totals';

CREATE TABLE loyalty.customer_tiers (
    customer_id      text PRIMARY KEY,
    tier             text,
    qualifying_spend numeric NOT NULL,
    since            timestamptz NOT NULL,
    downgrade_at     timestamptz,
    evaluated_at     timestamptz NOT NULL
);
COMMENT ON TABLE loyalty.customer_tiers IS 'Each customer''s tier (NULL: below every tier)';
COMMENT ON COLUMN loyalty.customer_tiers.downgrade_at IS 'set while spend is below the tier: the downgrade happens then unless spend recovers';

CREATE TABLE loyalty.tier_history (
    change_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id      text NOT NULL,
    from_tier        text,
    to_tier          text,
    qualifying_spend numeric NOT NULL,
    changed_at       timestamptz NOT NULL,
    reason           text NOT NULL
);
CREATE INDEX tier_history_customer_idx ON loyalty.tier_history (customer_id, change_id);
CREATE INDEX tier_history_changed_idx ON loyalty.tier_history (changed_at);
COMMENT ON TABLE loyalty.tier_history IS 'Every tier change (upgrade, downgrade after the grace period)';

-- Order points that could not be written (the shop's write went through).
CREATE TABLE loyalty.points_problems (
    problem_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id   integer,
    order_ref   text,
    error       text NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    resolved_at timestamptz
);
COMMENT ON TABLE loyalty.points_problems IS 'Orders whose points could not be updated by the trigger; loyalty.retry_points_problems() retries them';

ALTER TABLE loyalty.sources ADD COLUMN delivered_at_column text;
COMMENT ON COLUMN loyalty.sources.delivered_at_column IS 'delivery time column (loyalty.track_deliveries): order points become available a return window after it';

CREATE AGGREGATE loyalty._product(numeric) (SFUNC = pg_catalog.numeric_mul, STYPE = numeric, INITCOND = '1');

-- ---------------------------------------------------------------- checks

CREATE FUNCTION loyalty._check_customer(p_customer text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_customer IS NULL OR btrim(p_customer) = '' THEN
        RAISE EXCEPTION 'customer_id must not be null or empty'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the shop''s own customer key as text, e.g. ''42''.';
    END IF;
END
$$;

CREATE FUNCTION loyalty._check_points(p_points bigint)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_points IS NULL OR p_points <= 0 THEN
        RAISE EXCEPTION 'points must be a positive whole number, not %', coalesce(p_points::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Points are counted in whole points greater than zero.';
    END IF;
END
$$;

CREATE FUNCTION loyalty._check_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_key IS NULL OR btrim(p_key) = '' THEN
        RAISE EXCEPTION 'idempotency_key must not be null or empty'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass a key that names this one request, e.g. ''signup-bonus:42''; a retry with the same key changes nothing.';
    END IF;
    IF p_key LIKE 'loyalty:%' THEN
        RAISE EXCEPTION 'idempotency keys starting with "loyalty:" are reserved'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'loyalty writes order points and expiry under such keys; choose another prefix.';
    END IF;
END
$$;

-- The arguments earn and redeem share.
CREATE FUNCTION loyalty._check_request(p_customer text, p_points bigint, p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM loyalty._check_customer(p_customer);
    PERFORM loyalty._check_points(p_points);
    PERFORM loyalty._check_key(p_key);
END
$$;

-- Lock a customer's account row, creating it if p_create.
CREATE FUNCTION loyalty._lock_account(p_customer text, p_create boolean)
RETURNS loyalty.accounts
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a loyalty.accounts;
BEGIN
    SELECT * INTO a FROM loyalty.accounts WHERE customer_id = p_customer FOR UPDATE;
    IF NOT FOUND AND p_create THEN
        INSERT INTO loyalty.accounts (customer_id) VALUES (p_customer) ON CONFLICT (customer_id) DO NOTHING;
        SELECT * INTO a FROM loyalty.accounts WHERE customer_id = p_customer FOR UPDATE;
    END IF;
    RETURN a;
END
$$;

-- ---------------------------------------------------------------- writing entries (account locked by the caller)

-- A new lot: pays off debt first. Returns the entry id.
CREATE FUNCTION loyalty._add_points(p_customer text, p_kind text, p_points bigint, p_reason text, p_key text,
                                    p_expires_at timestamptz, p_available_at timestamptz,
                                    p_order_ref text, p_detail jsonb, p_debt bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id bigint;
    paid bigint := least(p_debt, p_points);
BEGIN
    INSERT INTO loyalty.ledger (customer_id, kind, points, order_ref, idempotency_key, reason, available_at, expires_at, detail)
    VALUES (p_customer, p_kind, p_points, p_order_ref, p_key, p_reason, p_available_at, p_expires_at,
            CASE WHEN paid > 0 THEN coalesce(p_detail, '{}') || jsonb_build_object('debt_paid', paid) ELSE p_detail END)
    ON CONFLICT ON CONSTRAINT ledger_idempotency_key_key DO NOTHING
    RETURNING entry_id INTO id;
    IF id IS NULL THEN
        RETURN NULL;    -- the key is taken (by another customer's entry): the caller reports it
    END IF;
    IF p_points > paid THEN
        INSERT INTO loyalty.point_lots (lot_id, customer_id, points, remaining, available_at, expires_at, order_ref)
        VALUES (id, p_customer, p_points, p_points - paid, coalesce(p_available_at, '-infinity'), p_expires_at, p_order_ref);
    END IF;
    UPDATE loyalty.accounts
       SET balance = balance + p_points, debt = debt - paid,
           lifetime_earned = lifetime_earned + CASE WHEN p_kind = 'earn' THEN p_points ELSE 0 END,
           updated_at = now()
     WHERE customer_id = p_customer;
    RETURN id;
END
$$;

-- Take up to p_points from a customer's lots, oldest expiry first: lots of
-- p_order_ref first (a reversal takes back the order's own points), then
-- available lots, then pending ones if p_pending. Returns the points taken.
CREATE FUNCTION loyalty._take_points(p_customer text, p_points bigint, p_as_of timestamptz,
                                     p_pending boolean, p_order_ref text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    -- plpgsql, not sql: its plan is cached for the session
    WITH lots AS (
        SELECT l.lot_id, l.remaining,
               sum(l.remaining) OVER (ORDER BY l.order_ref IS NOT DISTINCT FROM p_order_ref AND p_order_ref IS NOT NULL DESC,
                                               l.available_at > p_as_of, l.expires_at NULLS LAST, l.lot_id) AS upto
          FROM loyalty.point_lots l
         WHERE l.customer_id = p_customer AND l.remaining > 0
           AND (l.expires_at IS NULL OR l.expires_at > p_as_of)
           AND (p_pending OR l.available_at <= p_as_of OR l.order_ref IS NOT DISTINCT FROM p_order_ref AND p_order_ref IS NOT NULL)
    ), part AS (
        UPDATE loyalty.point_lots l
           SET remaining = lots.upto - p_points
          FROM lots
         WHERE l.lot_id = lots.lot_id AND lots.upto - lots.remaining < p_points AND lots.upto > p_points
        RETURNING lots.remaining - (lots.upto - p_points) AS n
    ), spent AS (
        DELETE FROM loyalty.point_lots l
         USING lots
         WHERE l.lot_id = lots.lot_id AND lots.upto <= p_points
        RETURNING lots.remaining AS n
    )
    SELECT coalesce((SELECT sum(part.n) FROM part), 0) + coalesce((SELECT sum(spent.n) FROM spent), 0) INTO n;
    RETURN n;
END
$$;

-- A replayed key: the same request returns the first entry, another is an error.
CREATE FUNCTION loyalty._replayed(p_key text, p_customer text, p_kind text, p_points bigint, p_reason text,
                                  p_expires_at timestamptz, p_available_at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e loyalty.ledger;
BEGIN
    SELECT * INTO e FROM loyalty.ledger WHERE idempotency_key = p_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF e.customer_id <> p_customer OR e.kind <> p_kind OR e.points <> p_points
       OR e.reason IS DISTINCT FROM p_reason OR e.expires_at IS DISTINCT FROM p_expires_at
       OR e.available_at IS DISTINCT FROM p_available_at THEN
        RAISE EXCEPTION 'idempotency key "%" was already used for another request', p_key
              USING ERRCODE = 'unique_violation',
                    DETAIL = format('entry %s: %s %s points for customer %s', e.entry_id, e.kind, e.points, e.customer_id),
                    HINT = 'A key names one request: retry with identical arguments, or use a new key.';
    END IF;
    RETURN e.entry_id;
END
$$;

-- ---------------------------------------------------------------- the API

-- The SQL implementation: every case. loyalty.earn() (C, src/ledger.c) does
-- the common case itself and hands everything else to this function.
CREATE FUNCTION loyalty._earn_sql(customer_id text, points bigint, reason text, idempotency_key text,
                                  expires_at timestamptz DEFAULT NULL, available_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c text := _earn_sql.customer_id;
    p bigint := _earn_sql.points;
    k text := _earn_sql.idempotency_key;
    owed bigint;
    id bigint;
    done boolean;
BEGIN
    PERFORM loyalty._check_request(c, p, k);
    IF expires_at IS NOT NULL AND (NOT isfinite(expires_at) OR expires_at <= now()) THEN
        RAISE EXCEPTION 'expires_at must be a finite time in the future'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL for points that never expire.';
    END IF;
    IF available_at IS NOT NULL AND NOT isfinite(available_at) THEN
        RAISE EXCEPTION 'available_at must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL for points that can be spent at once.';
    END IF;
    IF available_at >= expires_at THEN
        RAISE EXCEPTION 'available_at (%) is not before expires_at (%)', available_at, expires_at
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Points must become available before they expire.';
    END IF;

    -- Fast path, one statement: the entry, then the account (locked by this
    -- UPDATE, which re-reads the newest row version) when it owes no debt,
    -- then the lot. A taken key inserts nothing and changes nothing.
    WITH e AS (
        INSERT INTO loyalty.ledger AS l (customer_id, kind, points, idempotency_key, reason, available_at, expires_at)
        VALUES (c, 'earn', p, k, _earn_sql.reason, _earn_sql.available_at, _earn_sql.expires_at)
        ON CONFLICT ON CONSTRAINT ledger_idempotency_key_key DO NOTHING
        RETURNING l.entry_id
    ), acc AS (
        UPDATE loyalty.accounts a
           SET balance = a.balance + p, lifetime_earned = a.lifetime_earned + p, updated_at = now()
         WHERE a.customer_id = c AND a.debt = 0 AND EXISTS (SELECT 1 FROM e)
        RETURNING 1
    ), lot AS (
        INSERT INTO loyalty.point_lots (lot_id, customer_id, points, remaining, available_at, expires_at)
        SELECT e.entry_id, c, p, p, coalesce(_earn_sql.available_at, '-infinity'), _earn_sql.expires_at
          FROM e WHERE EXISTS (SELECT 1 FROM acc)
        RETURNING 1
    )
    SELECT e.entry_id, EXISTS (SELECT 1 FROM lot) INTO id, done FROM e;
    IF id IS NULL THEN
        RETURN loyalty._replayed(k, c, 'earn', p, reason, expires_at, available_at);
    END IF;
    IF NOT done THEN
        -- a new customer, or one in debt: the entry is written; lock (or
        -- create) the account and let the new points pay the debt first
        owed := (loyalty._lock_account(c, true)).debt;
        IF p > owed THEN
            INSERT INTO loyalty.point_lots (lot_id, customer_id, points, remaining, available_at, expires_at)
            VALUES (id, c, p, p - owed, coalesce(_earn_sql.available_at, '-infinity'), _earn_sql.expires_at);
        END IF;
        UPDATE loyalty.accounts a
           SET balance = a.balance + p, debt = a.debt - least(owed, p),
               lifetime_earned = a.lifetime_earned + p, updated_at = now()
         WHERE a.customer_id = c;
    END IF;
    RETURN id;
END
$$;
CREATE FUNCTION loyalty.earn(customer_id text, points bigint, reason text, idempotency_key text,
                             expires_at timestamptz DEFAULT NULL, available_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ledger_earn';
COMMENT ON FUNCTION loyalty.earn(text, bigint, text, text, timestamptz, timestamptz) IS
'Give a customer points (pending until available_at, expiring at expires_at); idempotent by key; returns the ledger entry id';

-- The SQL implementation of loyalty.redeem() (see loyalty._earn_sql).
CREATE FUNCTION loyalty._redeem_sql(customer_id text, points bigint, reason text, idempotency_key text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c text := _redeem_sql.customer_id;
    p bigint := _redeem_sql.points;
    k text := _redeem_sql.idempotency_key;
    owed bigint;
    id bigint;
    avail bigint;
BEGIN
    PERFORM loyalty._check_request(c, p, k);

    -- lock the account; only then read lots and keys (a fresh snapshot per statement)
    SELECT a.debt INTO owed FROM loyalty.accounts a WHERE a.customer_id = c FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'customer "%" has no points', c
              USING ERRCODE = 'no_data_found', HINT = 'Only customers who have earned points can redeem; check the customer id.';
    END IF;

    -- if enough is available: entry, FIFO consumption (first-expiring lots
    -- first) and account in one statement; a taken key inserts nothing
    WITH lots AS (
        SELECT pl.lot_id, pl.remaining,
               sum(pl.remaining) OVER (ORDER BY pl.expires_at NULLS LAST, pl.lot_id) AS upto
          FROM loyalty.point_lots pl
         WHERE pl.customer_id = c AND pl.remaining > 0 AND pl.available_at <= now()
           AND (pl.expires_at IS NULL OR pl.expires_at > now())
    ), have AS (
        SELECT coalesce(max(lots.upto), 0)::bigint - owed AS n FROM lots
    ), e AS (
        INSERT INTO loyalty.ledger AS l (customer_id, kind, points, idempotency_key, reason)
        SELECT c, 'redeem', -p, k, _redeem_sql.reason FROM have WHERE have.n >= p
        ON CONFLICT ON CONSTRAINT ledger_idempotency_key_key DO NOTHING
        RETURNING l.entry_id
    ), part AS (
        UPDATE loyalty.point_lots pl
           SET remaining = lots.upto - p
          FROM lots
         WHERE pl.lot_id = lots.lot_id AND lots.upto - lots.remaining < p AND lots.upto > p AND EXISTS (SELECT 1 FROM e)
    ), spent AS (
        DELETE FROM loyalty.point_lots pl
         USING lots
         WHERE pl.lot_id = lots.lot_id AND lots.upto <= p AND EXISTS (SELECT 1 FROM e)
    ), acc AS (
        UPDATE loyalty.accounts a
           SET balance = a.balance - p, lifetime_redeemed = a.lifetime_redeemed + p, updated_at = now()
         WHERE a.customer_id = c AND EXISTS (SELECT 1 FROM e)
    )
    SELECT (SELECT e.entry_id FROM e), (SELECT have.n FROM have) INTO id, avail;
    IF id IS NOT NULL THEN
        RETURN id;
    END IF;
    -- nothing written: a replay (same key) returns the first result ...
    IF EXISTS (SELECT 1 FROM loyalty.ledger l WHERE l.idempotency_key = k) THEN
        RETURN loyalty._replayed(k, c, 'redeem', -p, reason, NULL, NULL);
    END IF;
    -- ... otherwise there was not enough
    RAISE EXCEPTION 'customer "%" has % points available, % requested', c, greatest(avail, 0), p
          USING ERRCODE = 'LY001',
                HINT = 'Redeem at most loyalty.balance(customer_id).available; pending points become available later.';
END
$$;
CREATE FUNCTION loyalty.redeem(customer_id text, points bigint, reason text, idempotency_key text)
RETURNS bigint
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ledger_redeem';
COMMENT ON FUNCTION loyalty.redeem(text, bigint, text, text) IS
'Spend a customer''s available points, first-expiring first; refused (SQLSTATE LY001) beyond the available balance; idempotent by key';

-- Corrections by the shop: positive adds a lot that never expires, negative
-- takes available then pending points (never below zero).
CREATE FUNCTION loyalty.adjust_points(customer_id text, points bigint, reason text, idempotency_key text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a loyalty.accounts;
    id bigint;
    have bigint;
BEGIN
    PERFORM loyalty._check_customer(customer_id);
    IF points IS NULL OR points = 0 THEN
        RAISE EXCEPTION 'points must be a non-zero whole number'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Positive adds points, negative removes them.';
    END IF;
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'an adjustment needs a reason'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Say why the balance is corrected; it is kept in the ledger.';
    END IF;
    PERFORM loyalty._check_key(idempotency_key);
    a := loyalty._lock_account(adjust_points.customer_id, true);
    id := loyalty._replayed(idempotency_key, adjust_points.customer_id, 'adjust', points, reason, NULL, NULL);
    IF id IS NOT NULL THEN
        RETURN id;
    END IF;
    IF points > 0 THEN
        id := loyalty._add_points(adjust_points.customer_id, 'adjust', points, reason, idempotency_key,
                                  NULL, NULL, NULL, NULL, a.debt);
    ELSE
        SELECT coalesce(sum(remaining), 0) - a.debt INTO have FROM loyalty.point_lots l
         WHERE l.customer_id = adjust_points.customer_id AND l.remaining > 0 AND (l.expires_at IS NULL OR l.expires_at > now());
        IF have < -points THEN
            RAISE EXCEPTION 'customer "%" has % points, cannot remove %', adjust_points.customer_id, greatest(have, 0), -points
                  USING ERRCODE = 'LY001', HINT = 'Remove at most the customer''s available and pending points.';
        END IF;
        INSERT INTO loyalty.ledger (customer_id, kind, points, idempotency_key, reason)
        VALUES (adjust_points.customer_id, 'adjust', points, idempotency_key, reason)
        ON CONFLICT ON CONSTRAINT ledger_idempotency_key_key DO NOTHING
        RETURNING entry_id INTO id;
        IF id IS NOT NULL THEN
            PERFORM loyalty._take_points(adjust_points.customer_id, -points, now(), true);
            UPDATE loyalty.accounts t SET balance = t.balance + points, updated_at = now()
             WHERE t.customer_id = adjust_points.customer_id;
        END IF;
    END IF;
    IF id IS NULL THEN
        RETURN loyalty._replayed(idempotency_key, adjust_points.customer_id, 'adjust', points, reason, NULL, NULL);
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION loyalty.adjust_points(text, bigint, text, text) IS
'Correct a balance with a new ledger entry (positive or negative); idempotent by key';

CREATE FUNCTION loyalty.balance(customer_id text,
    OUT available bigint, OUT pending bigint, OUT lifetime_earned bigint, OUT lifetime_redeemed bigint,
    OUT expiring_points bigint, OUT next_expiry_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(sum(l.remaining) FILTER (WHERE l.available_at <= now()), 0)::bigint - coalesce(max(a.debt), 0),
           coalesce(sum(l.remaining) FILTER (WHERE l.available_at > now()), 0)::bigint,
           coalesce(max(a.lifetime_earned), 0),
           coalesce(max(a.lifetime_redeemed), 0),
           coalesce(sum(l.remaining) FILTER (WHERE l.expires_at <= now() + s.expiry_warning), 0)::bigint,
           min(l.expires_at)
      FROM loyalty.rewards_settings s
      LEFT JOIN loyalty.accounts a ON a.customer_id = balance.customer_id
      LEFT JOIN loyalty.point_lots l
        ON l.customer_id = balance.customer_id AND l.remaining > 0 AND (l.expires_at IS NULL OR l.expires_at > now())
     GROUP BY s.id
$$;
COMMENT ON FUNCTION loyalty.balance(text) IS
'A customer''s points now: available (spendable, less any debt), pending, lifetime earned (net of reversals) and redeemed, points expiring within rewards_settings.expiry_warning, next expiry';

CREATE VIEW loyalty.balances AS
SELECT a.customer_id,
       coalesce(l.available, 0) - a.debt AS available,
       coalesce(l.pending, 0) AS pending,
       a.debt,
       a.lifetime_earned,
       a.lifetime_redeemed,
       coalesce(l.expiring, 0) AS expiring_points,
       l.next_expiry_at,
       t.tier,
       a.updated_at
  FROM loyalty.accounts a
  CROSS JOIN loyalty.rewards_settings s
  LEFT JOIN LATERAL (
        SELECT sum(p.remaining) FILTER (WHERE p.available_at <= now())::bigint AS available,
               sum(p.remaining) FILTER (WHERE p.available_at > now())::bigint AS pending,
               sum(p.remaining) FILTER (WHERE p.expires_at <= now() + s.expiry_warning)::bigint AS expiring,
               min(p.expires_at) AS next_expiry_at
          FROM loyalty.point_lots p
         WHERE p.customer_id = a.customer_id AND p.remaining > 0 AND (p.expires_at IS NULL OR p.expires_at > now())) l ON true
  LEFT JOIN loyalty.customer_tiers t ON t.customer_id = a.customer_id;
COMMENT ON VIEW loyalty.balances IS 'Points per customer now (as loyalty.balance()), with debt and tier';
COMMENT ON COLUMN loyalty.balances.available IS 'points the customer can spend now (less debt)';
COMMENT ON COLUMN loyalty.balances.pending IS 'points earned but not yet available (return window, future available_at)';
COMMENT ON COLUMN loyalty.balances.debt IS 'points owed after refunds of orders whose points were already spent (refund_policy debt)';
COMMENT ON COLUMN loyalty.balances.lifetime_earned IS 'points ever earned, net of reversals';
COMMENT ON COLUMN loyalty.balances.lifetime_redeemed IS 'points ever redeemed';
COMMENT ON COLUMN loyalty.balances.expiring_points IS 'points expiring within rewards_settings.expiry_warning';
COMMENT ON COLUMN loyalty.balances.next_expiry_at IS 'when the next of the customer''s points expire';
COMMENT ON COLUMN loyalty.balances.tier IS 'the customer''s tier (NULL: none)';

CREATE VIEW loyalty.liability AS
SELECT sum(b.available) FILTER (WHERE b.available > 0)::bigint AS available_points,
       sum(b.pending)::bigint AS pending_points,
       sum(b.debt)::bigint AS debt_points,
       (coalesce(sum(b.available) FILTER (WHERE b.available > 0), 0) + coalesce(sum(b.pending), 0))::bigint AS outstanding_points,
       s.point_value,
       ((coalesce(sum(b.available) FILTER (WHERE b.available > 0), 0) + coalesce(sum(b.pending), 0)) * s.point_value) AS outstanding_value,
       count(*) FILTER (WHERE b.available > 0 OR b.pending > 0) AS customers_with_points
  FROM loyalty.rewards_settings s
  LEFT JOIN loyalty.balances b ON true
 GROUP BY s.point_value;
COMMENT ON VIEW loyalty.liability IS 'Points the shop owes its customers and their value at rewards_settings.point_value';
COMMENT ON COLUMN loyalty.liability.outstanding_points IS 'available plus pending points (not yet expired)';
COMMENT ON COLUMN loyalty.liability.outstanding_value IS 'outstanding_points times point_value, in the shop''s currency';
COMMENT ON COLUMN loyalty.liability.debt_points IS 'points customers owe after refunds (not counted against the liability)';

-- Expire what is due as of as_of, exactly once: each lot's remainder becomes
-- one expire entry keyed by the lot, and the lot drops to zero.
CREATE FUNCTION loyalty.expire_points(as_of timestamptz DEFAULT now(),
                                      OUT customers bigint, OUT lots bigint, OUT points bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who text[];
BEGIN
    IF as_of IS NULL OR NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Omit it to expire what is due now.';
    END IF;
    -- lock the accounts first, in key order (see the locking note at the top)
    SELECT array_agg(a.customer_id ORDER BY a.customer_id) INTO who
      FROM (SELECT a.customer_id FROM loyalty.accounts a
             WHERE a.customer_id IN (SELECT l.customer_id FROM loyalty.point_lots l
                                      WHERE l.remaining > 0 AND l.expires_at <= as_of)
             ORDER BY a.customer_id FOR UPDATE) a;
    IF who IS NULL THEN
        customers := 0; lots := 0; points := 0;
        RETURN;
    END IF;
    WITH due AS (
        SELECT l.lot_id, l.customer_id, l.remaining, l.expires_at FROM loyalty.point_lots l
         WHERE l.remaining > 0 AND l.expires_at <= as_of AND l.customer_id = ANY (who)
    ), zeroed AS (
        DELETE FROM loyalty.point_lots l USING due WHERE l.lot_id = due.lot_id
        RETURNING due.*
    ), entries AS (
        INSERT INTO loyalty.ledger AS e (customer_id, kind, points, lot_id, idempotency_key, reason, detail)
        SELECT z.customer_id, 'expire', -z.remaining, z.lot_id, 'loyalty:expire:' || z.lot_id, 'points expired',
               jsonb_build_object('expired_at', z.expires_at)
          FROM zeroed z
        RETURNING e.customer_id AS cid, e.points AS pts
    ), per AS (
        SELECT cid, sum(pts)::bigint AS p, count(*) AS n FROM entries GROUP BY cid
    ), upd AS (
        UPDATE loyalty.accounts a SET balance = a.balance + per.p, updated_at = now()
          FROM per WHERE a.customer_id = per.cid
        RETURNING per.n, per.p
    )
    SELECT count(*), coalesce(sum(n), 0), coalesce(-sum(p), 0) INTO customers, lots, points FROM upd;
END
$$;
COMMENT ON FUNCTION loyalty.expire_points(timestamptz) IS
'Expire every lot due by as_of (once: a lot is expired by one ledger entry); returns customers, lots and points expired';

CREATE FUNCTION loyalty.verify_ledger()
RETURNS TABLE (customer_id text, stored_balance bigint, ledger_balance bigint, lots_balance bigint, debt bigint,
               stored_earned bigint, ledger_earned bigint, stored_redeemed bigint, ledger_redeemed bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH l AS (
        SELECT e.customer_id, sum(e.points)::bigint AS total,
               coalesce(sum(e.points) FILTER (WHERE e.kind IN ('earn', 'reverse')), 0)::bigint AS earned,
               coalesce(-sum(e.points) FILTER (WHERE e.kind = 'redeem'), 0)::bigint AS redeemed
          FROM loyalty.ledger e GROUP BY e.customer_id
    ), p AS (
        SELECT pl.customer_id, sum(pl.remaining)::bigint AS total FROM loyalty.point_lots pl GROUP BY pl.customer_id
    )
    SELECT coalesce(a.customer_id, l.customer_id), a.balance, coalesce(l.total, 0), coalesce(p.total, 0), a.debt,
           a.lifetime_earned, coalesce(l.earned, 0), a.lifetime_redeemed, coalesce(l.redeemed, 0)
      FROM loyalty.accounts a
      FULL JOIN l ON l.customer_id = a.customer_id
      LEFT JOIN p ON p.customer_id = coalesce(a.customer_id, l.customer_id)
     WHERE a.balance IS DISTINCT FROM coalesce(l.total, 0)
        OR a.balance IS DISTINCT FROM coalesce(p.total, 0) - a.debt
        OR a.lifetime_earned IS DISTINCT FROM coalesce(l.earned, 0)
        OR a.lifetime_redeemed IS DISTINCT FROM coalesce(l.redeemed, 0)
$$;
COMMENT ON FUNCTION loyalty.verify_ledger() IS
'Customers whose stored balance or totals differ from their ledger entries or lots (empty when all is well)';

-- ---------------------------------------------------------------- points for orders

-- Points an order earns under the active rules, for a customer at order time.
CREATE FUNCTION loyalty.order_points(customer_id text, amount numeric, ordered_at timestamptz DEFAULT now(),
                                     OUT points bigint, OUT detail jsonb)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH who AS (
        SELECT (SELECT ct.tier FROM loyalty.customer_tiers ct WHERE ct.customer_id = order_points.customer_id) AS tier,
               (SELECT cs.segment FROM loyalty.customer_segments cs WHERE cs.customer_id = order_points.customer_id) AS segment
    ), r AS (
        SELECT coalesce(sum(e.points_per_unit), 0) AS rate,
               coalesce(loyalty._product(e.multiplier), 1) AS mult,
               min(e.max_points_per_order) AS cap,
               array_agg(e.name ORDER BY e.rule_id) AS rules
          FROM loyalty.earn_rules e, who
         WHERE e.active
           AND (e.tier IS NULL OR e.tier = who.tier)
           AND (e.segment IS NULL OR e.segment = who.segment)
           AND (e.valid_from IS NULL OR e.valid_from <= order_points.ordered_at)
           AND (e.valid_until IS NULL OR order_points.ordered_at < e.valid_until)
    ), t AS (
        SELECT coalesce((SELECT tr.earn_multiplier FROM loyalty.tiers tr WHERE tr.tier = who.tier), 1) AS tier_mult, who.*
          FROM who
    )
    SELECT least(floor(greatest(order_points.amount, 0) * r.rate * r.mult * t.tier_mult), coalesce(r.cap, 9e18))::bigint,
           jsonb_build_object('basis_amount', order_points.amount, 'rate', r.rate, 'multiplier', r.mult,
                              'tier', t.tier, 'tier_multiplier', t.tier_mult, 'segment', t.segment,
                              'cap', r.cap, 'rules', r.rules)
      FROM r, t
$$;
COMMENT ON FUNCTION loyalty.order_points(text, numeric, timestamptz) IS
'Points an order of this amount earns now under loyalty.earn_rules and the customer''s tier and segment (also a preview for the shop''s checkout)';

-- Bring an order's points in line with the order: earn once when it first
-- counts, then reverse in proportion to refunds (or fully when it stops
-- counting), earn back if it counts again. The first earn fixes the order's
-- points (rules, tier and segment at that moment); later changes scale them:
--   entitled = floor(points * (amount - refunded) / basis_amount), at most points.
CREATE FUNCTION loyalty._sync_order_points(p_order_ref text, p_customer text, p_amount numeric, p_refunded numeric,
                                           p_ordered_at timestamptz, p_counted boolean, p_delivered_at timestamptz,
                                           p_wait_for_delivery boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.rewards_settings;
    a loyalty.accounts;
    first loyalty.ledger;
    others record;
    basis numeric;
    full_points bigint;
    entitled bigint;
    n integer;
    avail timestamptz;
    pts record;
BEGIN
    IF p_order_ref IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO s FROM loyalty.rewards_settings;
    SELECT * INTO first FROM loyalty.ledger
     WHERE idempotency_key = 'loyalty:order:' || p_order_ref || ':1';
    IF NOT FOUND AND NOT (s.earn_on_orders AND p_counted AND p_customer IS NOT NULL AND btrim(p_customer) <> ''
                          AND p_amount > 0 AND p_amount < 'Infinity' AND isfinite(p_ordered_at)
                          AND p_ordered_at >= s.earning_since) THEN
        RETURN;     -- nothing earned yet and nothing to earn
    END IF;

    -- customers who hold points of this order, besides the order's customer
    FOR others IN
        SELECT DISTINCT e.customer_id FROM loyalty.ledger e
         WHERE e.order_ref = p_order_ref AND e.idempotency_key LIKE 'loyalty:order:%'
           AND e.customer_id IS DISTINCT FROM p_customer
         ORDER BY 1
    LOOP
        PERFORM loyalty._settle_order_points(others.customer_id, p_order_ref, 0, s.refund_policy);
    END LOOP;
    IF p_customer IS NULL OR btrim(p_customer) = '' THEN
        RETURN;
    END IF;

    a := loyalty._lock_account(p_customer, true);
    IF first.entry_id IS NULL OR first.customer_id <> p_customer THEN
        SELECT * INTO first FROM loyalty.ledger
         WHERE order_ref = p_order_ref AND customer_id = p_customer AND kind = 'earn'
           AND idempotency_key LIKE 'loyalty:order:%'
         ORDER BY entry_id LIMIT 1;
    END IF;

    IF p_wait_for_delivery AND p_delivered_at IS NULL THEN
        avail := 'infinity';
    ELSE
        avail := coalesce(p_delivered_at, p_ordered_at) + s.return_window;
    END IF;

    IF first.entry_id IS NULL THEN
        IF NOT (s.earn_on_orders AND p_counted AND p_amount > 0 AND p_ordered_at >= s.earning_since) THEN
            RETURN;
        END IF;
        SELECT * INTO pts FROM loyalty.order_points(p_customer, p_amount, p_ordered_at);
        IF pts.points <= 0 THEN
            RETURN;
        END IF;
        SELECT count(*) + 1 INTO n FROM loyalty.ledger WHERE order_ref = p_order_ref AND idempotency_key LIKE 'loyalty:order:%';
        PERFORM loyalty._add_points(p_customer, 'earn', pts.points, 'order ' || p_order_ref,
                                    'loyalty:order:' || p_order_ref || ':' || n,
                                    CASE WHEN s.points_expire_after IS NULL OR NOT isfinite(avail) THEN NULL
                                         ELSE avail + s.points_expire_after END,
                                    avail, p_order_ref, pts.detail, a.debt);
        first.points := pts.points;
        first.detail := pts.detail;
    END IF;

    basis := (first.detail ->> 'basis_amount')::numeric;
    full_points := first.points;
    IF NOT p_counted OR p_amount IS NULL OR basis IS NULL OR basis <= 0 THEN
        entitled := 0;
    ELSE
        entitled := least(full_points, floor(full_points * greatest(p_amount - coalesce(p_refunded, 0), 0) / basis))::bigint;
    END IF;
    PERFORM loyalty._settle_order_points(p_customer, p_order_ref, entitled, s.refund_policy);

    -- pending points follow the delivery: available a return window after it
    UPDATE loyalty.point_lots l
       SET available_at = avail,
           expires_at = CASE WHEN s.points_expire_after IS NULL OR NOT isfinite(avail) THEN NULL
                             ELSE avail + s.points_expire_after END
     WHERE l.order_ref = p_order_ref AND l.customer_id = p_customer AND l.remaining > 0
       AND l.available_at > now() AND l.available_at IS DISTINCT FROM avail;
END
$$;

-- Make a customer's net points from one order equal p_entitled (account locked
-- here). Taking back spent points follows the refund policy: 'debt' lets the
-- balance go negative, 'clamp' stops at zero and records the shortfall.
CREATE FUNCTION loyalty._settle_order_points(p_customer text, p_order_ref text, p_entitled bigint, p_policy text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a loyalty.accounts := loyalty._lock_account(p_customer, true);
    have bigint;
    n integer;
    delta bigint;
    taken bigint;
    short bigint;
    k text;
BEGIN
    -- net points credited for this order, counting shortfalls already written off
    SELECT coalesce(sum(e.points), 0) - coalesce(sum((e.detail ->> 'shortfall')::bigint), 0), count(*)
      INTO have, n
      FROM loyalty.ledger e
     WHERE e.order_ref = p_order_ref AND e.customer_id = p_customer AND e.idempotency_key LIKE 'loyalty:order:%';
    delta := p_entitled - have;
    IF delta = 0 THEN
        RETURN;
    END IF;
    SELECT count(*) + 1 INTO n FROM loyalty.ledger e
     WHERE e.order_ref = p_order_ref AND e.idempotency_key LIKE 'loyalty:order:%';
    k := 'loyalty:order:' || p_order_ref || ':' || n;
    IF delta > 0 THEN
        -- the order counts again (or a refund was undone): earn back, available at once
        PERFORM loyalty._add_points(p_customer, 'earn', delta, 'order ' || p_order_ref || ' counts again', k,
                                    NULL, NULL, p_order_ref, jsonb_build_object('entitled', p_entitled), a.debt);
        RETURN;
    END IF;
    taken := loyalty._take_points(p_customer, -delta, now(), true, p_order_ref);
    short := -delta - taken;
    IF short > 0 AND p_policy = 'clamp' THEN
        INSERT INTO loyalty.ledger (customer_id, kind, points, order_ref, idempotency_key, reason, detail)
        VALUES (p_customer, 'reverse', -taken, p_order_ref, k, 'order ' || p_order_ref || ' refunded',
                jsonb_build_object('entitled', p_entitled, 'shortfall', short, 'policy', 'clamp'));
        UPDATE loyalty.accounts SET balance = balance - taken, lifetime_earned = lifetime_earned - taken, updated_at = now()
         WHERE customer_id = p_customer;
    ELSE
        INSERT INTO loyalty.ledger (customer_id, kind, points, order_ref, idempotency_key, reason, detail)
        VALUES (p_customer, 'reverse', delta, p_order_ref, k, 'order ' || p_order_ref || ' refunded',
                jsonb_build_object('entitled', p_entitled) ||
                CASE WHEN short > 0 THEN jsonb_build_object('debt', short, 'policy', 'debt') ELSE '{}' END);
        UPDATE loyalty.accounts SET balance = balance + delta, debt = debt + short,
                                    lifetime_earned = lifetime_earned + delta, updated_at = now()
         WHERE customer_id = p_customer;
    END IF;
END
$$;

-- Sync from loyalty.orders (the app's orders, refunds, retries).
CREATE FUNCTION loyalty._sync_recorded_order(p_order_ref text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o loyalty.orders;
BEGIN
    SELECT * INTO o FROM loyalty.orders WHERE order_ref = p_order_ref;
    IF FOUND THEN
        PERFORM loyalty._sync_order_points(o.order_ref, o.customer_id, o.amount, o.refunded, o.ordered_at,
                                           o.counted, NULL, false);
    END IF;
END
$$;

-- Row trigger on tracked tables while earn_on_orders is on: the order's points
-- change in the shop's own transaction. It never fails the shop's write: an
-- error is kept in loyalty.points_problems (and retried by
-- loyalty.retry_points_problems()).
CREATE FUNCTION loyalty.earn_order_points()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    src loyalty.sources;
    j jsonb;
    o jsonb;
    ref text;
    msg text;
    refunded numeric;
BEGIN
    SELECT * INTO src FROM loyalty.sources WHERE source_id = TG_ARGV[0]::integer;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            o := to_jsonb(OLD);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            j := to_jsonb(NEW);
        END IF;
        -- the order id changed (or the row is gone): the old order no longer counts
        IF o IS NOT NULL AND (j IS NULL OR (o ->> src.order_id_column) IS DISTINCT FROM (j ->> src.order_id_column)) THEN
            ref := o ->> src.order_id_column;
            PERFORM loyalty._sync_order_points(ref, o ->> src.customer_column, (o ->> src.amount_column)::numeric,
                                               0, (o ->> src.ordered_at_column)::timestamptz, false, NULL, false);
        END IF;
        IF j IS NOT NULL THEN
            ref := j ->> src.order_id_column;
            SELECT t.refunded INTO refunded FROM loyalty.orders t WHERE t.order_ref = ref;
            PERFORM loyalty._sync_order_points(
                ref, j ->> src.customer_column, (j ->> src.amount_column)::numeric, coalesce(refunded, 0),
                (j ->> src.ordered_at_column)::timestamptz,
                src.status_column IS NULL OR (j ->> src.status_column) = ANY (src.counted_statuses),
                CASE WHEN src.delivered_at_column IS NOT NULL THEN (j ->> src.delivered_at_column)::timestamptz END,
                src.delivered_at_column IS NOT NULL);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
        INSERT INTO loyalty.points_problems (source_id, order_ref, error) VALUES (src.source_id, ref, msg);
        RAISE WARNING 'loyalty: points of order % not updated: %', ref, msg
              USING HINT = 'The order itself was saved. Fix the cause, then run loyalty.retry_points_problems().';
    END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION loyalty.earn_order_points() IS 'Trigger attached to tracked tables while earn_on_orders is on; do not call directly';

-- Attach or detach the earn trigger on every tracked table to match the setting.
CREATE FUNCTION loyalty._sync_earn_triggers()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    src loyalty.sources;
    rel regclass;
    on_ boolean := (SELECT earn_on_orders FROM loyalty.rewards_settings);
BEGIN
    FOR src IN SELECT * FROM loyalty.sources ORDER BY source_id LOOP
        rel := to_regclass(format('%I.%I', src.relation_schema, src.relation_name));
        CONTINUE WHEN rel IS NULL;
        IF on_ AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = rel AND tgname = 'loyalty_capture_orders') THEN
            EXECUTE format('CREATE OR REPLACE TRIGGER loyalty_earn_orders AFTER INSERT OR UPDATE OR DELETE ON %s '
                           'FOR EACH ROW EXECUTE FUNCTION loyalty.earn_order_points(%L)', rel, src.source_id);
        ELSE
            EXECUTE format('DROP TRIGGER IF EXISTS loyalty_earn_orders ON %s', rel);
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION loyalty.retry_points_problems()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    n bigint := 0;
BEGIN
    FOR p IN SELECT DISTINCT order_ref FROM loyalty.points_problems WHERE resolved_at IS NULL AND order_ref IS NOT NULL LOOP
        PERFORM loyalty._sync_recorded_order(p.order_ref);
        UPDATE loyalty.points_problems SET resolved_at = now() WHERE order_ref = p.order_ref AND resolved_at IS NULL;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION loyalty.retry_points_problems() IS
'Bring the points of orders listed in loyalty.points_problems in line with loyalty.orders; returns the orders retried';

CREATE FUNCTION loyalty._track_deliveries(p_rel regclass, source text, delivered_at_column text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass := loyalty._resolve_table(p_rel, source);
    t regtype;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM loyalty.sources so
                    WHERE format('%I.%I', so.relation_schema, so.relation_name)::regclass = rel) THEN
        RAISE EXCEPTION '"%" is not tracked', source
              USING ERRCODE = 'undefined_object', HINT = 'Track it first with loyalty.track_orders().';
    END IF;
    IF delivered_at_column IS NOT NULL THEN
        t := loyalty._column_type(rel, 'delivered_at_column', delivered_at_column);
        IF t NOT IN ('timestamp with time zone'::regtype, 'timestamp without time zone'::regtype, 'date'::regtype) THEN
            RAISE EXCEPTION 'delivery time column "%" is of type %, not a timestamp', delivered_at_column, t
                  USING ERRCODE = 'datatype_mismatch', HINT = 'The delivery column must be timestamptz, timestamp or date.';
        END IF;
    END IF;
    UPDATE loyalty.sources so SET delivered_at_column = _track_deliveries.delivered_at_column
     WHERE format('%I.%I', so.relation_schema, so.relation_name)::regclass = rel;
    PERFORM loyalty._sync_delivery_trigger(rel);   -- delivery times for the journeys (70_journeys.sql)
END
$$;
CREATE FUNCTION loyalty.track_deliveries(source text, delivered_at_column text)
RETURNS void
LANGUAGE sql
AS $$ SELECT loyalty._track_deliveries(loyalty._lookup_table(source), source, delivered_at_column) $$;
COMMENT ON FUNCTION loyalty.track_deliveries(text, text) IS
'Name the delivery time column of a tracked table: its order points become available a return window after delivery (NULL: after the order)';

CREATE FUNCTION loyalty.configure_rewards(
    earn_on_orders      boolean DEFAULT NULL,
    return_window       interval DEFAULT NULL,
    points_expire_after interval DEFAULT NULL,
    refund_policy       text DEFAULT NULL,
    point_value         numeric DEFAULT NULL,
    expiry_warning      interval DEFAULT NULL,
    tier_window         interval DEFAULT NULL,
    tier_grace          interval DEFAULT NULL,
    earn_orders_since   timestamptz DEFAULT NULL)
RETURNS loyalty.rewards_settings
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.rewards_settings;
BEGIN
    IF return_window < '0' OR expiry_warning < '0' OR tier_grace < '0' OR tier_window <= '0' THEN
        RAISE EXCEPTION 'return_window, expiry_warning and tier_grace must not be negative, tier_window must be positive'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'For example return_window => ''14 days'', tier_window => ''12 months''.';
    END IF;
    IF earn_orders_since IS NOT NULL AND NOT isfinite(earn_orders_since) THEN
        RAISE EXCEPTION 'earn_orders_since must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Orders placed from then on earn points; the default is the moment earning is switched on.';
    END IF;
    IF points_expire_after < '0' THEN
        RAISE EXCEPTION 'points_expire_after must not be negative'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass ''0'' for order points that never expire.';
    END IF;
    IF refund_policy NOT IN ('debt', 'clamp') THEN
        RAISE EXCEPTION 'refund_policy must be ''debt'' or ''clamp'', not "%"', refund_policy
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'debt: the balance may go negative when refunded points were spent; clamp: stop at zero and record the shortfall.';
    END IF;
    IF point_value < 0 OR point_value = 'NaN' OR point_value = 'Infinity' THEN
        RAISE EXCEPTION 'point_value must be a finite amount of money, zero or more'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'For example 0.01 when 100 points are worth 1 currency unit.';
    END IF;
    UPDATE loyalty.rewards_settings AS r
       SET earn_on_orders = coalesce(configure_rewards.earn_on_orders, r.earn_on_orders),
           earning_since = CASE WHEN configure_rewards.earn_orders_since IS NOT NULL THEN configure_rewards.earn_orders_since
                                WHEN configure_rewards.earn_on_orders AND NOT r.earn_on_orders THEN now()
                                ELSE r.earning_since END,
           return_window = coalesce(configure_rewards.return_window, r.return_window),
           points_expire_after = CASE WHEN configure_rewards.points_expire_after IS NULL THEN r.points_expire_after
                                      WHEN configure_rewards.points_expire_after = '0' THEN NULL
                                      ELSE configure_rewards.points_expire_after END,
           refund_policy = coalesce(configure_rewards.refund_policy, r.refund_policy),
           point_value = coalesce(configure_rewards.point_value, r.point_value),
           expiry_warning = coalesce(configure_rewards.expiry_warning, r.expiry_warning),
           tier_window = coalesce(configure_rewards.tier_window, r.tier_window),
           tier_grace = coalesce(configure_rewards.tier_grace, r.tier_grace),
           updated_at = now()
    RETURNING * INTO s;
    PERFORM loyalty._sync_earn_triggers();
    RETURN s;
END
$$;
COMMENT ON FUNCTION loyalty.configure_rewards(boolean, interval, interval, text, numeric, interval, interval, interval, timestamptz) IS
'Change rewards settings (NULL keeps a setting); earn_on_orders attaches or detaches the earn trigger on tracked tables';

-- ---------------------------------------------------------------- tiers

-- Re-evaluate the tiers of the given customers as of p_as_of: up at once, down
-- only after tier_grace below the tier. Every change goes to tier_history.
CREATE FUNCTION loyalty._recompute_tiers(p_customers text[], p_as_of timestamptz)
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
            IF c.qual IS NOT NULL THEN
                INSERT INTO loyalty.tier_history (customer_id, from_tier, to_tier, qualifying_spend, changed_at, reason)
                VALUES (c.customer_id, NULL, c.qual, c.spend, p_as_of, 'upgrade');
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

-- Daily (pg_cron, see loyalty.schedule()): the window moves, so spend drops
-- out of it; customers in a tier or with orders in the window are re-evaluated.
CREATE FUNCTION loyalty.recompute_tiers(as_of timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who text[];
    s loyalty.rewards_settings;
BEGIN
    IF as_of IS NULL OR NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Omit it to evaluate tiers as of now().';
    END IF;
    SELECT * INTO s FROM loyalty.rewards_settings;
    SELECT array_agg(customer_id ORDER BY customer_id) INTO who FROM (
        SELECT ct.customer_id FROM loyalty.customer_tiers ct WHERE ct.tier IS NOT NULL OR ct.downgrade_at IS NOT NULL
        UNION
        SELECT cs.customer_id FROM loyalty.customer_state cs WHERE cs.last_order_at > as_of - s.tier_window) x;
    RETURN coalesce(loyalty._recompute_tiers(who, as_of), 0);
END
$$;
COMMENT ON FUNCTION loyalty.recompute_tiers(timestamptz) IS
'Re-evaluate tiers as of as_of (run daily: spend leaves the rolling window); returns the number of tier changes';

-- ---------------------------------------------------------------- privileges

GRANT EXECUTE ON FUNCTION loyalty.earn(text, bigint, text, text, timestamptz, timestamptz),
                          loyalty.redeem(text, bigint, text, text),
                          loyalty.balance(text),
                          loyalty.order_points(text, numeric, timestamptz) TO loyalty_app;
GRANT SELECT ON loyalty.balances, loyalty.tiers, loyalty.customer_tiers TO loyalty_app;
GRANT SELECT ON loyalty.balances, loyalty.liability, loyalty.tiers, loyalty.customer_tiers, loyalty.tier_history,
                loyalty.ledger, loyalty.earn_rules, loyalty.points_problems TO loyalty_reader;
GRANT EXECUTE ON FUNCTION loyalty.balance(text), loyalty.verify_ledger() TO loyalty_reader;

SELECT pg_catalog.pg_extension_config_dump('loyalty.rewards_settings', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.tiers', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.earn_rules', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.earn_rules_rule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.ledger', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.point_lots', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_tiers', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.tier_history', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.points_problems', '');
-- Outbox: one row per (campaign, customer, occasion), ever. Journeys write it
-- (loyalty.enqueue_due); the shop's sender drains it (claim / ack / fail).
--
-- Contract between the two halves:
--   * a writer inserts with INSERT ... ON CONFLICT (dedupe_key) DO NOTHING, so a
--     rerun, a concurrent run or a catch-up after downtime never makes a second row;
--   * the writer sets status 'pending' (to be sent at due_at), 'held_out' (the
--     campaign's holdout group: recorded, never sent), 'expired' (the occasion
--     was missed for longer than the campaign's validity window) or, for an
--     occasion the policy suppressed, the reason: 'no_consent', 'no_contact',
--     'cooldown' or 'capped' (recorded, never sent);
--   * only 'pending' rows with due_at <= now() can be claimed; the sender side
--     owns the claim columns and the statuses 'sent' and 'dead';
--   * loyalty.set_consent(..., false) turns the customer's pending messages on
--     that channel (all channels for 'all') into 'cancelled'.
--   * a message under a sender's lease stays 'pending' in this table: the lease
--     is kept in loyalty.outbox_queue (see "The sender side" below), and the
--     views show such a message as 'claimed'. claim_token is the token of the
--     claim that last acked or failed the message.

CREATE TABLE loyalty.outbox (
    message_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedupe_key    text COLLATE "C" NOT NULL UNIQUE,
    campaign_id   integer,
    customer_id   text NOT NULL,
    channel       text NOT NULL,
    recipient     text,
    template      text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}'::jsonb,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'sent', 'dead', 'held_out', 'expired', 'cancelled',
                                    'no_consent', 'no_contact', 'cooldown', 'capped')),
    due_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    attempts      integer NOT NULL DEFAULT 0,
    claim_token   uuid,
    sent_at       timestamptz,
    last_error    text
) WITH (fillfactor = 45);
COMMENT ON TABLE loyalty.outbox IS 'Messages decided by the journeys: one row per campaign, customer and occasion (dedupe_key), drained by the sender';
COMMENT ON COLUMN loyalty.outbox.dedupe_key IS 'campaign:customer:occasion; unique, so an occasion yields at most one row, ever';
COMMENT ON COLUMN loyalty.outbox.status IS 'pending (also while a sender holds a lease on it), sent, dead (gave up after the allowed attempts), held_out (holdout group, never sent), expired (missed its validity window), cancelled (the customer opted out before it went out); suppressed by the journeys policy, recorded and never sent: no_consent, no_contact, cooldown, capped';
COMMENT ON COLUMN loyalty.outbox.attempts IS 'claims so far (updated when the message is acked, failed or given up)';
COMMENT ON COLUMN loyalty.outbox.claim_token IS 'the claim that last acked or failed the message (a repeated ack or fail with it is answered, not refused)';
COMMENT ON COLUMN loyalty.outbox.last_error IS 'what the sender reported on the last failed attempt';
COMMENT ON COLUMN loyalty.outbox.payload IS 'what a template needs (name, points, tier, order, ...) and why the message was chosen (rule, scores at that moment)';
-- a customer's messages by due time: the frequency cap and cooldowns count them
CREATE INDEX outbox_customer_idx ON loyalty.outbox (customer_id, due_at);
-- a campaign's messages by creation time, with their keys (custom campaigns
-- read the keys of the current period from it alone)
CREATE INDEX outbox_campaign_idx ON loyalty.outbox (campaign_id, created_at) INCLUDE (dedupe_key);
SELECT pg_catalog.pg_extension_config_dump('loyalty.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.outbox_message_id_seq', '');

-- The sender side.
--
-- Claimable messages live in a small side table, loyalty.outbox_queue: one row
-- per pending message with the time it can next be claimed (due_at, or the end
-- of the current lease), the current claim token and the claims so far.
-- Triggers on loyalty.outbox keep it in step, so a writer's plain INSERT is all
-- it takes to queue a message. A claim touches only the queue (as a
-- hand-written SKIP LOCKED queue would); loyalty.outbox is written once per
-- outcome (sent, retry, dead) and only in columns no index covers, so that
-- write is a HOT update (fillfactor 45 leaves each row room on its page for
-- that new version even when a whole batch of neighbours is acked at once).
-- Hence the outbox row of a message under a lease still says 'pending'; its
-- lease is the queue row (views show it as 'claimed').
--
-- The four sender functions are SECURITY DEFINER (with a pinned search_path):
-- loyalty_sender may run them and touch nothing else.
--
-- Locking. The queue row is the claim: claim_messages locks queue rows with
-- FOR UPDATE SKIP LOCKED, so two senders never hold the same message. Ack and
-- fail first lock the queue row, only if it carries their token (an ack
-- deletes it, and raises if the lease had ended, which undoes the delete),
-- then write the outbox row (a claim only reads it), so sender calls cannot
-- deadlock each other. A late ack after its lease ended is refused even if
-- nobody has claimed the message again; once another sender has, the queue
-- row carries the new token and the old one matches nothing. A change made
-- by hand to a pending outbox row locks that row first and the queue row
-- second (trigger); racing an ack or fail of the same message it may
-- deadlock, which PostgreSQL detects: one of the two is rolled back, nothing
-- is lost.

CREATE TABLE loyalty.outbox_queue (
    message_id  bigint PRIMARY KEY,
    visible_at  timestamptz NOT NULL,
    claim_token uuid,
    attempts    integer NOT NULL DEFAULT 0
);
CREATE INDEX outbox_queue_visible_idx ON loyalty.outbox_queue (visible_at);
COMMENT ON TABLE loyalty.outbox_queue IS 'Internal: pending outbox messages by the time each can next be claimed, with the current lease (maintained by triggers on loyalty.outbox)';

CREATE TABLE loyalty.outbox_settings (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
    backoff_base interval NOT NULL DEFAULT '1 minute' CHECK (backoff_base > '0' AND backoff_base <= '1 day'),
    backoff_max  interval NOT NULL DEFAULT '6 hours' CHECK (backoff_max >= backoff_base AND backoff_max <= '30 days'),
    updated_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);
INSERT INTO loyalty.outbox_settings DEFAULT VALUES;
COMMENT ON TABLE loyalty.outbox_settings IS 'Sender settings (one row); change with loyalty.configure_outbox()';
COMMENT ON COLUMN loyalty.outbox_settings.max_attempts IS 'claims a message gets; a failure (or an expired lease) on the last one makes it dead';
COMMENT ON COLUMN loyalty.outbox_settings.backoff_base IS 'wait after the first failure; doubled after each further one';
COMMENT ON COLUMN loyalty.outbox_settings.backoff_max IS 'the longest wait between attempts';

-- Queue the pending rows of an INSERT (or of a COPY, e.g. a restore) and wake the senders.
CREATE FUNCTION loyalty._outbox_inserted()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO loyalty.outbox_queue (message_id, visible_at, attempts)
    SELECT n.message_id, n.due_at, n.attempts
      FROM new_rows n
     WHERE n.status OPERATOR(pg_catalog.=) 'pending'
    ON CONFLICT (message_id) DO NOTHING;
    IF EXISTS (SELECT 1 FROM new_rows n
                WHERE n.status OPERATOR(pg_catalog.=) 'pending' AND n.due_at OPERATOR(pg_catalog.<=) pg_catalog.now()) THEN
        PERFORM pg_catalog.pg_notify('loyalty_outbox', '');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_inserted AFTER INSERT ON loyalty.outbox
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION loyalty._outbox_inserted();

-- A row changed into or out of 'pending', or a pending row given another due
-- time (by a writer, by hand, or by fail_message): bring its queue row in step.
-- An ack (pending -> sent) removes the queue row itself and never matches.
CREATE FUNCTION loyalty._outbox_requeued()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.status OPERATOR(pg_catalog.=) 'pending' THEN
        INSERT INTO loyalty.outbox_queue AS q (message_id, visible_at, claim_token, attempts)
        VALUES (NEW.message_id, NEW.due_at, NULL, NEW.attempts)
        ON CONFLICT (message_id) DO UPDATE SET visible_at = EXCLUDED.visible_at, claim_token = NULL, attempts = EXCLUDED.attempts;
        IF NEW.due_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN
            PERFORM pg_catalog.pg_notify('loyalty_outbox', '');
        END IF;
    ELSE
        DELETE FROM loyalty.outbox_queue q WHERE q.message_id OPERATOR(pg_catalog.=) NEW.message_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_requeued AFTER UPDATE OF status, due_at ON loyalty.outbox
    FOR EACH ROW
    WHEN ((NEW.status = 'pending' AND OLD.status <> 'pending')
       OR (OLD.status = 'pending' AND NEW.status <> ALL (ARRAY['pending', 'sent']))
       OR (OLD.status = 'pending' AND NEW.status = 'pending' AND OLD.due_at <> NEW.due_at))
    EXECUTE FUNCTION loyalty._outbox_requeued();

CREATE FUNCTION loyalty._outbox_deleted()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'TRUNCATE' THEN
        TRUNCATE loyalty.outbox_queue;
    ELSE
        DELETE FROM loyalty.outbox_queue q USING old_rows o WHERE q.message_id OPERATOR(pg_catalog.=) o.message_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_deleted AFTER DELETE ON loyalty.outbox
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION loyalty._outbox_deleted();
CREATE TRIGGER outbox_truncated AFTER TRUNCATE ON loyalty.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION loyalty._outbox_deleted();

CREATE FUNCTION loyalty.configure_outbox(
    max_attempts integer DEFAULT NULL,
    backoff_base interval DEFAULT NULL,
    backoff_max  interval DEFAULT NULL)
RETURNS loyalty.outbox_settings
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.outbox_settings;
BEGIN
    IF max_attempts NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'max_attempts must be between 1 and 100, not %', max_attempts
              USING ERRCODE = 'invalid_parameter_value', HINT = 'It counts claims: 1 means a message is never retried.';
    END IF;
    IF backoff_base <= '0' OR backoff_base > '1 day' OR backoff_max <= '0' OR backoff_max > '30 days' THEN
        RAISE EXCEPTION 'backoff_base must be positive and at most 1 day, backoff_max positive and at most 30 days'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'For example backoff_base => ''1 minute'', backoff_max => ''6 hours''.';
    END IF;
    SELECT * INTO s FROM loyalty.outbox_settings FOR UPDATE;
    s.max_attempts := coalesce(max_attempts, s.max_attempts);
    s.backoff_base := coalesce(backoff_base, s.backoff_base);
    s.backoff_max := coalesce(backoff_max, s.backoff_max);
    IF s.backoff_max < s.backoff_base THEN
        RAISE EXCEPTION 'backoff_max (%) must not be shorter than backoff_base (%)', s.backoff_max, s.backoff_base
              USING ERRCODE = 'invalid_parameter_value', HINT = 'The wait doubles from backoff_base up to backoff_max.';
    END IF;
    UPDATE loyalty.outbox_settings o
       SET max_attempts = s.max_attempts, backoff_base = s.backoff_base, backoff_max = s.backoff_max,
           updated_at = pg_catalog.now()
     RETURNING o.* INTO s;
    RETURN s;
END
$$;
COMMENT ON FUNCTION loyalty.configure_outbox(integer, interval, interval) IS
'Change the sender settings (NULL keeps a value): attempts before a message is dead, backoff between attempts';

CREATE FUNCTION loyalty.claim_messages(batch integer, lease interval)
RETURNS TABLE (message_id bigint, claim_token uuid, channel text, recipient text, template text, payload jsonb,
               attempts integer, customer_id text, campaign_id integer, due_at timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    token uuid;
    lease_end timestamptz;
    claimed bigint;
BEGIN
    IF batch IS NULL OR batch < 1 OR batch > 10000 THEN
        RAISE EXCEPTION 'batch must be between 1 and 10000, not %', coalesce(batch::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Claim what one sender delivers within the lease, e.g. 100.';
    END IF;
    IF lease IS NULL OR lease <= '0' OR lease > '1 day' THEN
        RAISE EXCEPTION 'lease must be positive and at most 1 day, not %', coalesce(lease::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'The lease is how long the sender may take to deliver the batch and ack it, e.g. ''5 minutes''.';
    END IF;
    token := pg_catalog.gen_random_uuid();
    lease_end := pg_catalog.now() OPERATOR(pg_catalog.+) lease;

    -- the claim: queue rows nobody holds, due or with an expired lease, locked
    -- (rows other senders hold are skipped) and leased; returned with their
    -- message unless it is no longer sendable
    RETURN QUERY
    WITH leased AS (
        UPDATE loyalty.outbox_queue q
           SET visible_at = lease_end, claim_token = token, attempts = q.attempts OPERATOR(pg_catalog.+) 1
         WHERE q.message_id OPERATOR(pg_catalog.=) ANY (ARRAY(
                   SELECT p.message_id FROM loyalty.outbox_queue p
                    WHERE p.visible_at OPERATOR(pg_catalog.<=) pg_catalog.now()
                    ORDER BY p.visible_at
                    LIMIT batch
                      FOR UPDATE SKIP LOCKED))
        RETURNING q.message_id, q.attempts)
    SELECT o.message_id, token, o.channel, o.recipient, o.template, o.payload,
           l.attempts, o.customer_id, o.campaign_id, o.due_at
      FROM leased l
      JOIN loyalty.outbox o ON o.message_id OPERATOR(pg_catalog.=) l.message_id
     WHERE o.status OPERATOR(pg_catalog.=) 'pending'
       AND l.attempts OPERATOR(pg_catalog.<=) (SELECT s.max_attempts FROM loyalty.outbox_settings s)
       AND (o.expires_at IS NULL OR o.expires_at OPERATOR(pg_catalog.>) pg_catalog.now());
    GET DIAGNOSTICS claimed = ROW_COUNT;

    -- a short batch: was anything leased but not returned? (a full batch
    -- returned every row it leased)
    IF claimed OPERATOR(pg_catalog.<) batch THEN
        PERFORM loyalty._outbox_unclaimable(lease_end, token);
    END IF;
END
$$;
COMMENT ON FUNCTION loyalty.claim_messages(integer, interval) IS
'Claim up to batch due messages for lease (FOR UPDATE SKIP LOCKED: no two senders get the same message); ack or fail each with its claim_token before the lease ends';

-- The rare rest of a claim: messages past their validity window become
-- 'expired'; one whose lease ran out on its last allowed attempt becomes
-- 'dead'; queue rows whose outbox row is gone or no longer pending are dropped.
CREATE FUNCTION loyalty._outbox_unclaimable(lease_end timestamptz, token uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    max_tries integer := (SELECT s.max_attempts FROM loyalty.outbox_settings s);
BEGIN
    -- the rows this claim leased: all have visible_at = lease_end (one index probe)
    FOR r IN
        SELECT q.message_id, q.attempts, o.status, o.expires_at
          FROM loyalty.outbox_queue q
          LEFT JOIN loyalty.outbox o ON o.message_id OPERATOR(pg_catalog.=) q.message_id
         WHERE q.visible_at OPERATOR(pg_catalog.=) lease_end AND q.claim_token OPERATOR(pg_catalog.=) token
           AND (o.status IS DISTINCT FROM 'pending'
                OR q.attempts OPERATOR(pg_catalog.>) max_tries
                OR o.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now())
    LOOP
        DELETE FROM loyalty.outbox_queue q WHERE q.message_id OPERATOR(pg_catalog.=) r.message_id;
        IF r.status OPERATOR(pg_catalog.=) 'pending' THEN
            UPDATE loyalty.outbox o
               SET status = CASE WHEN r.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN 'expired' ELSE 'dead' END,
                   attempts = LEAST(r.attempts, max_tries),
                   last_error = CASE WHEN r.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN o.last_error
                                     ELSE pg_catalog.format('lease expired without ack or fail on attempt %s of %s',
                                                            max_tries, max_tries) END
             WHERE o.message_id OPERATOR(pg_catalog.=) r.message_id;
        END IF;
    END LOOP;
END
$$;

-- Why a token no longer holds a message: raise the matching error, or return
-- the status when this same token already finished the message (a retried call).
CREATE FUNCTION loyalty._outbox_token_state(id bigint, token uuid)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    lease_end timestamptz;
BEGIN
    SELECT o.status, o.claim_token, o.last_error INTO r FROM loyalty.outbox o WHERE o.message_id OPERATOR(pg_catalog.=) id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % is not in the outbox', id
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Use a message_id returned by loyalty.claim_messages().';
    END IF;
    SELECT q.visible_at INTO lease_end FROM loyalty.outbox_queue q
     WHERE q.message_id OPERATOR(pg_catalog.=) id AND q.claim_token OPERATOR(pg_catalog.=) token;
    IF FOUND THEN
        RAISE EXCEPTION 'the lease on message % expired at %', id, lease_end
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'The message is claimable again and counts as not sent. Claim smaller batches or a longer lease.';
    END IF;
    IF r.status OPERATOR(pg_catalog.=) 'cancelled' THEN
        RAISE EXCEPTION 'message % was cancelled: %', id, r.last_error
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'The customer opted out while the message was claimed; if it was not delivered yet, do not deliver it.';
    END IF;
    IF r.claim_token IS DISTINCT FROM token THEN
        RAISE EXCEPTION 'message % is not claimed with this token', id
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Only the latest claim can ack or fail a message: your lease ran out and another sender claimed it, or the token belongs to another batch.';
    END IF;
    RETURN r.status;
END
$$;

CREATE FUNCTION loyalty.ack_message(message_id bigint, claim_token uuid)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id bigint := ack_message.message_id;
    token uuid := ack_message.claim_token;
    tries integer;
    lease_end timestamptz;
    st text;
BEGIN
    IF id IS NULL OR token IS NULL THEN
        RAISE EXCEPTION 'message_id and claim_token must not be NULL'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass both as returned by loyalty.claim_messages().';
    END IF;
    -- token and lease are checked on the locked queue row (see the locking note above)
    WITH acked AS (
        DELETE FROM loyalty.outbox_queue q
         WHERE q.message_id OPERATOR(pg_catalog.=) id AND q.claim_token OPERATOR(pg_catalog.=) token
        RETURNING q.attempts, q.visible_at),
    sent AS (
        UPDATE loyalty.outbox o
           SET status = 'sent', sent_at = pg_catalog.now(), attempts = a.attempts, claim_token = token
          FROM acked a
         WHERE o.message_id OPERATOR(pg_catalog.=) id)
    SELECT a.attempts, a.visible_at INTO tries, lease_end FROM acked a;
    IF FOUND THEN
        IF lease_end OPERATOR(pg_catalog.<=) pg_catalog.now() THEN
            -- the error undoes the delete and the update
            RAISE EXCEPTION 'the lease on message % expired at %', id, lease_end
                  USING ERRCODE = 'object_not_in_prerequisite_state',
                        HINT = 'The message is claimable again and counts as not sent. Claim smaller batches or a longer lease.';
        END IF;
        RETURN true;
    END IF;
    st := loyalty._outbox_token_state(id, token);
    IF st OPERATOR(pg_catalog.=) 'sent' THEN
        RETURN false;
    END IF;
    RAISE EXCEPTION 'message % is % and cannot be acknowledged with this token', id, st
          USING ERRCODE = 'object_not_in_prerequisite_state',
                HINT = 'This token already failed the message (or the message was given up); only a new claim can deliver it.';
END
$$;
COMMENT ON FUNCTION loyalty.ack_message(bigint, uuid) IS
'The message was delivered: status sent. true; false for a repeated ack with the same token (idempotent); an expired or wrong token is refused';

CREATE FUNCTION loyalty.ack_messages(message_ids bigint[], claim_token uuid)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    token uuid := ack_messages.claim_token;
    ids bigint[];
    lease_end timestamptz;
    n integer;
    id bigint;
BEGIN
    IF message_ids IS NULL OR token IS NULL OR array_position(message_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'message_ids and claim_token must not be NULL'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the message_ids and the claim_token of one loyalty.claim_messages() batch.';
    END IF;
    -- delete the leases and mark the messages sent in one statement; an error
    -- below (expired lease, a message not held) undoes both
    WITH acked AS (
        DELETE FROM loyalty.outbox_queue q
         WHERE q.message_id OPERATOR(pg_catalog.=) ANY (message_ids) AND q.claim_token OPERATOR(pg_catalog.=) token
        RETURNING q.message_id, q.attempts, q.visible_at),
    sent AS (
        UPDATE loyalty.outbox o
           SET status = 'sent', sent_at = pg_catalog.now(), attempts = a.attempts, claim_token = token
          FROM acked a
         WHERE o.message_id OPERATOR(pg_catalog.=) a.message_id)
    SELECT pg_catalog.array_agg(a.message_id), pg_catalog.min(a.visible_at) INTO ids, lease_end FROM acked a;
    IF lease_end OPERATOR(pg_catalog.<=) pg_catalog.now() THEN
        -- one token, one lease: the whole batch expired
        RAISE EXCEPTION 'the lease of this batch expired at %', lease_end
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'The messages are claimable again and count as not sent. Claim smaller batches or a longer lease.';
    END IF;
    n := coalesce(pg_catalog.cardinality(ids), 0);
    IF n OPERATOR(pg_catalog.<) pg_catalog.cardinality(message_ids) THEN
        -- all or nothing: raise for the first message this token does not hold,
        -- unless each one left over was acked with this token before (or is a duplicate)
        FOR id IN SELECT DISTINCT m FROM pg_catalog.unnest(message_ids) m
                   WHERE ids IS NULL OR m OPERATOR(pg_catalog.<>) ALL (ids) ORDER BY 1
        LOOP
            IF loyalty._outbox_token_state(id, token) OPERATOR(pg_catalog.<>) 'sent' THEN
                RAISE EXCEPTION 'message % is not held by this token and cannot be acknowledged', id
                      USING ERRCODE = 'object_not_in_prerequisite_state',
                            HINT = 'This token already failed the message; ack the others one by one with loyalty.ack_message().';
            END IF;
        END LOOP;
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION loyalty.ack_messages(bigint[], uuid) IS
'Ack a whole claimed batch at once: all or nothing; returns how many were newly acked (repeats with the same token count 0)';

CREATE FUNCTION loyalty.fail_message(message_id bigint, claim_token uuid, error text, retry_after interval DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id bigint := fail_message.message_id;
    token uuid := fail_message.claim_token;
    tries integer;
    s loyalty.outbox_settings;
    wait interval;
    st text;
BEGIN
    IF id IS NULL OR token IS NULL THEN
        RAISE EXCEPTION 'message_id and claim_token must not be NULL'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass both as returned by loyalty.claim_messages().';
    END IF;
    IF retry_after < '0' OR retry_after > '30 days' THEN
        RAISE EXCEPTION 'retry_after must be between 0 and 30 days, not %', retry_after
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL for the exponential backoff of loyalty.outbox_settings, ''0'' to retry at once.';
    END IF;
    SELECT q.attempts INTO tries FROM loyalty.outbox_queue q
     WHERE q.message_id OPERATOR(pg_catalog.=) id AND q.claim_token OPERATOR(pg_catalog.=) token
       AND q.visible_at OPERATOR(pg_catalog.>) pg_catalog.now()
       FOR UPDATE;
    IF NOT FOUND THEN
        st := loyalty._outbox_token_state(id, token);
        IF st OPERATOR(pg_catalog.=) ANY (ARRAY['pending', 'dead']) THEN
            RETURN st;
        END IF;
        RAISE EXCEPTION 'message % is % and cannot be failed with this token', id, st
              USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'This token already acknowledged the message.';
    END IF;
    SELECT * INTO s FROM loyalty.outbox_settings;
    IF tries OPERATOR(pg_catalog.>=) s.max_attempts THEN
        -- the trigger on loyalty.outbox removes the queue row
        UPDATE loyalty.outbox o
           SET status = 'dead', attempts = tries, claim_token = token, last_error = fail_message.error
         WHERE o.message_id OPERATOR(pg_catalog.=) id;
        RETURN 'dead';
    END IF;
    -- exponential backoff: backoff_base * 2^(attempts - 1), at most backoff_max
    wait := coalesce(retry_after,
                     LEAST(s.backoff_max, s.backoff_base OPERATOR(pg_catalog.*)
                                          pg_catalog.power(2, LEAST(tries OPERATOR(pg_catalog.-) 1, 20))::float8));
    -- unleased, claimable again after the wait (the trigger on loyalty.outbox
    -- does the same for the new due time; this covers a due time that did not change)
    UPDATE loyalty.outbox_queue q
       SET visible_at = pg_catalog.now() OPERATOR(pg_catalog.+) wait, claim_token = NULL
     WHERE q.message_id OPERATOR(pg_catalog.=) id;
    UPDATE loyalty.outbox o
       SET due_at = pg_catalog.now() OPERATOR(pg_catalog.+) wait, attempts = tries, claim_token = token,
           last_error = fail_message.error
     WHERE o.message_id OPERATOR(pg_catalog.=) id;
    RETURN 'pending';
END
$$;
COMMENT ON FUNCTION loyalty.fail_message(bigint, uuid, text, interval) IS
'Delivery failed: pending again after retry_after or the exponential backoff, or dead after max_attempts; returns the new status. An expired or wrong token is refused';

CREATE FUNCTION loyalty.notify_due()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM loyalty.outbox_queue q WHERE q.visible_at OPERATOR(pg_catalog.<=) pg_catalog.now()) THEN
        PERFORM pg_catalog.pg_notify('loyalty_outbox', '');
        RETURN true;
    END IF;
    RETURN false;
END
$$;
COMMENT ON FUNCTION loyalty.notify_due() IS
'NOTIFY loyalty_outbox when messages can be claimed now (those that became due by time: quiet hours, retries, expired leases); true if it notified';

CREATE FUNCTION loyalty.requeue_dead(message_ids bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE loyalty.outbox o
       SET status = 'pending', attempts = 0, due_at = pg_catalog.now(), claim_token = NULL
     WHERE o.status OPERATOR(pg_catalog.=) 'dead'
       AND (requeue_dead.message_ids IS NULL OR o.message_id OPERATOR(pg_catalog.=) ANY (requeue_dead.message_ids));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION loyalty.requeue_dead(bigint[]) IS
'Give dead letters (all, or the given ones) a fresh set of attempts, due now; returns how many';

CREATE VIEW loyalty.outbox_summary AS
SELECT m.status, m.channel,
       count(*) AS messages,
       count(*) FILTER (WHERE m.status = 'pending' AND m.due_at <= now()) AS due_now,
       now() - min(m.due_at) FILTER (WHERE m.status = 'pending' AND m.due_at <= now()) AS oldest_due_age,
       min(m.due_at) FILTER (WHERE m.status = 'pending' AND m.due_at > now()) AS next_due_at,
       count(*) FILTER (WHERE m.status = 'claimed' AND m.lease_end <= now()) AS expired_leases,
       max(m.sent_at) AS last_sent_at
  FROM (SELECT CASE WHEN o.status = 'pending' AND q.claim_token IS NOT NULL THEN 'claimed' ELSE o.status END AS status,
               o.channel, o.due_at, o.sent_at, q.visible_at AS lease_end
          FROM loyalty.outbox o
          LEFT JOIN loyalty.outbox_queue q ON q.message_id = o.message_id) m
 GROUP BY m.status, m.channel;
COMMENT ON VIEW loyalty.outbox_summary IS 'Outbox messages per status (claimed: pending under a sender''s lease) and channel: how many, how many are due now, how long the oldest has waited';
COMMENT ON COLUMN loyalty.outbox_summary.due_now IS 'pending messages whose due time has come (the senders'' backlog)';
COMMENT ON COLUMN loyalty.outbox_summary.oldest_due_age IS 'how long the oldest due pending message has waited; growing means no sender is draining the outbox';
COMMENT ON COLUMN loyalty.outbox_summary.next_due_at IS 'when the next pending message that is not yet due becomes due (quiet hours, retries)';
COMMENT ON COLUMN loyalty.outbox_summary.expired_leases IS 'claimed messages whose sender did not ack or fail within the lease (claimable again)';
COMMENT ON COLUMN loyalty.outbox_summary.last_sent_at IS 'the latest acknowledged delivery';

CREATE VIEW loyalty.dead_letters AS
SELECT o.message_id, o.campaign_id, o.customer_id, o.channel, o.recipient, o.template,
       o.attempts, o.last_error, o.due_at AS last_due_at, o.created_at, o.payload
  FROM loyalty.outbox o
 WHERE o.status = 'dead';
COMMENT ON VIEW loyalty.dead_letters IS 'Messages given up after outbox_settings.max_attempts; loyalty.requeue_dead() gives them new attempts';
COMMENT ON COLUMN loyalty.dead_letters.last_error IS 'the error of the last failed attempt, as the sender reported it';
COMMENT ON COLUMN loyalty.dead_letters.attempts IS 'claims the message had';
-- Journeys, part 1: customer profiles (from the shop's customers table or the
-- app), consent with its history, journey settings and the campaigns table
-- with its per-kind validation. Part 2 (71_journeys_due.sql) turns campaigns
-- into candidate messages, applies the policy and writes loyalty.outbox.

-- ---------------------------------------------------------------- time zones

-- The zone names PostgreSQL knows (pg_timezone_names reads the zone files on
-- every call, too slow for a row trigger), kept as a table.
CREATE TABLE loyalty.time_zones (
    name text PRIMARY KEY
);
INSERT INTO loyalty.time_zones SELECT DISTINCT name FROM pg_catalog.pg_timezone_names;
CREATE UNIQUE INDEX time_zones_lower_idx ON loyalty.time_zones (pg_catalog.lower(name));
COMMENT ON TABLE loyalty.time_zones IS 'Time zone names accepted for customers (a copy of pg_timezone_names, made at install)';

-- The canonical zone name for a spelling of it (case-insensitive), NULL when unknown.
CREATE FUNCTION loyalty._time_zone(p_zone text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT z.name FROM loyalty.time_zones z WHERE lower(z.name) = lower(btrim(p_zone))
$$;

-- ---------------------------------------------------------------- profiles

CREATE TABLE loyalty.customer_sources (
    source_id         integer PRIMARY KEY DEFAULT nextval('loyalty.sources_source_id_seq'),
    relation_schema   text NOT NULL,
    relation_name     text NOT NULL,
    customer_column   text NOT NULL,
    name_column       text,
    email_column      text,
    phone_column      text,
    birthday_column   text,
    time_zone_column  text,
    attached_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    backfilled_rows   bigint NOT NULL DEFAULT 0,
    UNIQUE (relation_schema, relation_name)
);
COMMENT ON TABLE loyalty.customer_sources IS
'Shop customer tables attached with loyalty.track_customers() (ids shared with loyalty.sources, so loyalty.rejected_rows names either)';

CREATE TABLE loyalty.profiles (
    customer_id text PRIMARY KEY,
    name        text,
    email       text,
    phone       text,
    birthday    date,
    time_zone   text,
    birthday_md integer GENERATED ALWAYS AS
                ((date_part('month', birthday) * 100 + date_part('day', birthday))::integer) STORED,
    source_id   integer,
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX profiles_birthday_idx ON loyalty.profiles (birthday_md) WHERE birthday_md IS NOT NULL;
COMMENT ON TABLE loyalty.profiles IS 'Customer contact data for the journeys: from a tracked customers table (source_id) or loyalty.upsert_customer() (source_id NULL)';
COMMENT ON COLUMN loyalty.profiles.time_zone IS 'IANA zone name (loyalty.time_zones); NULL: journey_settings.default_time_zone';
COMMENT ON COLUMN loyalty.profiles.birthday_md IS 'month * 100 + day of the birthday (indexed: birthday campaigns look up a few days)';

-- Customers attached rows that loyalty cannot use land in rejected_rows; the
-- summary names customer tables too.
CREATE OR REPLACE VIEW loyalty.rejected_summary AS
SELECT s.source_id, s.source, r.reason,
       count(*) AS rows, min(r.rejected_at) AS first_rejected_at, max(r.rejected_at) AS last_rejected_at
  FROM loyalty.rejected_rows r
  JOIN (SELECT so.source_id, so.relation_schema || '.' || so.relation_name AS source FROM loyalty.sources so
        UNION ALL
        SELECT cs.source_id, cs.relation_schema || '.' || cs.relation_name FROM loyalty.customer_sources cs) s
    ON s.source_id = r.source_id
 WHERE r.resolved_at IS NULL
 GROUP BY s.source_id, s.source, r.reason;

-- Store one profile row from a tracked table; never raises. A NULL or empty
-- key is rejected (nothing stored); an unknown time zone is stored as NULL and
-- the row is listed in rejected_rows too, so the shop can fix it.
CREATE FUNCTION loyalty._store_profile(p_source_id integer, p_customer text, p_name text, p_email text,
                                       p_phone text, p_birthday date, p_zone text, p_row jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    zone text;
    problem text;
BEGIN
    IF p_customer IS NULL OR btrim(p_customer) = '' THEN
        problem := 'customer is null or empty';
    ELSE
        zone := loyalty._time_zone(p_zone);
        IF p_zone IS NOT NULL AND btrim(p_zone) <> '' AND zone IS NULL THEN
            problem := format('unknown time zone %s (stored as NULL)', quote_literal(p_zone));
        END IF;
        INSERT INTO loyalty.profiles AS p (customer_id, name, email, phone, birthday, time_zone, source_id, updated_at)
        VALUES (p_customer, nullif(btrim(p_name), ''), nullif(btrim(p_email), ''), nullif(btrim(p_phone), ''),
                p_birthday, zone, p_source_id, now())
        ON CONFLICT (customer_id) DO UPDATE
           SET name = excluded.name, email = excluded.email, phone = excluded.phone, birthday = excluded.birthday,
               time_zone = excluded.time_zone, source_id = excluded.source_id, updated_at = excluded.updated_at
         WHERE (p.name, p.email, p.phone, p.birthday, p.time_zone, p.source_id)
               IS DISTINCT FROM (excluded.name, excluded.email, excluded.phone, excluded.birthday, excluded.time_zone, excluded.source_id);
    END IF;
    IF problem IS NOT NULL THEN
        INSERT INTO loyalty.rejected_rows (source_id, order_ref, reason, row_data)
        VALUES (p_source_id, p_customer, problem, p_row)
        ON CONFLICT (source_id, order_ref) WHERE resolved_at IS NULL
        DO UPDATE SET reason = excluded.reason, row_data = excluded.row_data, rejected_at = excluded.rejected_at;
    ELSE
        UPDATE loyalty.rejected_rows r SET resolved_at = now()
         WHERE r.source_id = p_source_id AND r.order_ref = p_customer AND r.resolved_at IS NULL;
    END IF;
END
$$;

-- Row trigger on a tracked customers table. It never fails the shop's write:
-- an error is kept in rejected_rows with a warning.
CREATE FUNCTION loyalty.capture_customer()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.customer_sources;
    j jsonb;
    o jsonb;
    msg text;
BEGIN
    SELECT * INTO s FROM loyalty.customer_sources WHERE source_id = TG_ARGV[0]::integer;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            o := to_jsonb(OLD);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            j := to_jsonb(NEW);
        END IF;
        -- a deleted customer (or a changed key) takes its profile along
        IF o IS NOT NULL AND (j IS NULL OR (o ->> s.customer_column) IS DISTINCT FROM (j ->> s.customer_column)) THEN
            DELETE FROM loyalty.profiles p WHERE p.customer_id = o ->> s.customer_column AND p.source_id = s.source_id;
        END IF;
        IF j IS NOT NULL THEN
            PERFORM loyalty._store_profile(s.source_id, j ->> s.customer_column,
                                           j ->> s.name_column, j ->> s.email_column, j ->> s.phone_column,
                                           (j ->> s.birthday_column)::timestamp::date, j ->> s.time_zone_column, j);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
        INSERT INTO loyalty.rejected_rows (source_id, order_ref, reason, row_data)
        VALUES (s.source_id, coalesce(j, o) ->> s.customer_column, msg, coalesce(j, o));
        RAISE WARNING 'loyalty: profile of customer % not stored: %', coalesce(j, o) ->> s.customer_column, msg
              USING HINT = 'The shop''s row itself was saved; see loyalty.rejected_rows.';
    END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION loyalty.capture_customer() IS 'Trigger attached by loyalty.track_customers(); do not call directly';

CREATE FUNCTION loyalty.capture_customer_truncate()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM loyalty.profiles WHERE source_id = TG_ARGV[0]::integer;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION loyalty.capture_customer_truncate() IS 'Statement trigger attached by loyalty.track_customers(); do not call directly';

CREATE FUNCTION loyalty.track_customers(
    source            regclass,
    customer_column   text,
    name_column       text DEFAULT NULL,
    email_column      text DEFAULT NULL,
    phone_column      text DEFAULT NULL,
    birthday_column   text DEFAULT NULL,
    time_zone_column  text DEFAULT NULL,
    backfill          boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass := loyalty._resolve_table(source, source::text);
    sch text;
    tbl text;
    t regtype;
    sid integer;
    n bigint := 0;
    col text;
    colname text;
BEGIN
    SELECT n2.nspname, c.relname INTO sch, tbl
      FROM pg_class c JOIN pg_namespace n2 ON n2.oid = c.relnamespace WHERE c.oid = rel;
    PERFORM loyalty._column_type(rel, 'customer_column', customer_column);
    FOR col, colname IN SELECT * FROM unnest(ARRAY['name_column', 'email_column', 'phone_column', 'time_zone_column'],
                                             ARRAY[name_column, email_column, phone_column, time_zone_column]) LOOP
        IF colname IS NOT NULL THEN
            PERFORM loyalty._column_type(rel, col, colname);
        END IF;
    END LOOP;
    IF birthday_column IS NOT NULL THEN
        t := loyalty._column_type(rel, 'birthday_column', birthday_column);
        IF t NOT IN ('date'::regtype, 'timestamp without time zone'::regtype, 'timestamp with time zone'::regtype) THEN
            RAISE EXCEPTION 'birthday column "%" is of type %, not a date', birthday_column, t
                  USING ERRCODE = 'datatype_mismatch', HINT = 'The birthday column must be date (or timestamp).';
        END IF;
    END IF;

    INSERT INTO loyalty.customer_sources AS s (relation_schema, relation_name, customer_column, name_column, email_column,
                                                phone_column, birthday_column, time_zone_column)
    VALUES (sch, tbl, customer_column, name_column, email_column, phone_column, birthday_column, time_zone_column)
    ON CONFLICT (relation_schema, relation_name) DO UPDATE
       SET customer_column = excluded.customer_column, name_column = excluded.name_column,
           email_column = excluded.email_column, phone_column = excluded.phone_column,
           birthday_column = excluded.birthday_column, time_zone_column = excluded.time_zone_column
    RETURNING s.source_id INTO sid;

    EXECUTE format('CREATE OR REPLACE TRIGGER loyalty_capture_customers AFTER INSERT OR UPDATE OR DELETE ON %I.%I '
                   'FOR EACH ROW EXECUTE FUNCTION loyalty.capture_customer(%L)', sch, tbl, sid);
    EXECUTE format('CREATE OR REPLACE TRIGGER loyalty_capture_customers_truncate AFTER TRUNCATE ON %I.%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION loyalty.capture_customer_truncate(%L)', sch, tbl, sid);

    IF backfill THEN
        -- set-based: valid rows in one statement, the rest one by one (rejections)
        EXECUTE format(
            'WITH src AS (SELECT %I::text AS k, %s::text AS nm, %s::text AS em, %s::text AS ph, %s::date AS bd,
                                 %s::text AS tz, to_jsonb(t) AS j FROM %I.%I t),
                  chk AS (SELECT src.*, z.name AS zone FROM src LEFT JOIN loyalty.time_zones z ON lower(z.name) = lower(btrim(src.tz))),
                  good AS (
                    INSERT INTO loyalty.profiles AS p (customer_id, name, email, phone, birthday, time_zone, source_id)
                    SELECT k, nullif(btrim(nm), ''''), nullif(btrim(em), ''''), nullif(btrim(ph), ''''), bd, zone, %s
                      FROM chk WHERE k IS NOT NULL AND btrim(k) <> '''' AND (zone IS NOT NULL OR coalesce(btrim(tz), '''') = '''')
                    ON CONFLICT (customer_id) DO UPDATE
                       SET name = excluded.name, email = excluded.email, phone = excluded.phone, birthday = excluded.birthday,
                           time_zone = excluded.time_zone, source_id = excluded.source_id, updated_at = now()
                     WHERE (p.name, p.email, p.phone, p.birthday, p.time_zone, p.source_id)
                           IS DISTINCT FROM (excluded.name, excluded.email, excluded.phone, excluded.birthday, excluded.time_zone, excluded.source_id)
                    RETURNING 1)
             SELECT (SELECT count(*) FROM chk) + 0 * (SELECT count(*) FROM good)',
            customer_column,
            coalesce(quote_ident(name_column), 'NULL'), coalesce(quote_ident(email_column), 'NULL'),
            coalesce(quote_ident(phone_column), 'NULL'), coalesce(quote_ident(birthday_column), 'NULL'),
            coalesce(quote_ident(time_zone_column), 'NULL'), sch, tbl, sid)
        INTO n;
        EXECUTE format(
            'SELECT loyalty._store_profile(%s, k, nm, em, ph, bd, tz, j)
               FROM (SELECT %I::text AS k, %s::text AS nm, %s::text AS em, %s::text AS ph, %s::date AS bd,
                            %s::text AS tz, to_jsonb(t) AS j FROM %I.%I t) src
              WHERE k IS NULL OR btrim(k) = '''' OR (coalesce(btrim(tz), '''') <> '''' AND loyalty._time_zone(tz) IS NULL)',
            sid, customer_column,
            coalesce(quote_ident(name_column), 'NULL'), coalesce(quote_ident(email_column), 'NULL'),
            coalesce(quote_ident(phone_column), 'NULL'), coalesce(quote_ident(birthday_column), 'NULL'),
            coalesce(quote_ident(time_zone_column), 'NULL'), sch, tbl);
        UPDATE loyalty.customer_sources SET backfilled_rows = n WHERE source_id = sid;
        RAISE NOTICE 'loyalty: tracking customers of %.% (source %), % existing rows read', sch, tbl, sid, n;
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION loyalty.track_customers(regclass, text, text, text, text, text, text, boolean) IS
'Attach the shop''s customers table: profiles follow every insert/update/delete/truncate; existing rows are read now; returns rows read';

CREATE FUNCTION loyalty.untrack_customers(source regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass := loyalty._resolve_table(source, source::text);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM loyalty.customer_sources s
                    WHERE format('%I.%I', s.relation_schema, s.relation_name)::regclass = rel) THEN
        RAISE EXCEPTION '"%" is not tracked', source
              USING ERRCODE = 'undefined_object', HINT = 'See loyalty.customer_sources for the tracked customer tables.';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS loyalty_capture_customers ON %s', rel);
    EXECUTE format('DROP TRIGGER IF EXISTS loyalty_capture_customers_truncate ON %s', rel);
END
$$;
COMMENT ON FUNCTION loyalty.untrack_customers(regclass) IS 'Detach a tracked customers table (its triggers); profiles already stored stay';

-- From the app: set a customer's profile; a NULL argument keeps the stored value.
CREATE FUNCTION loyalty.upsert_customer(customer_id text, name text DEFAULT NULL, email text DEFAULT NULL,
                                        phone text DEFAULT NULL, birthday date DEFAULT NULL, time_zone text DEFAULT NULL)
RETURNS loyalty.profiles
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    zone text;
    p loyalty.profiles;
BEGIN
    IF customer_id IS NULL OR btrim(customer_id) = '' THEN
        RAISE EXCEPTION 'customer_id must not be null or empty'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the shop''s own customer key as text, e.g. ''42''.';
    END IF;
    IF time_zone IS NOT NULL THEN
        zone := loyalty._time_zone(time_zone);
        IF zone IS NULL THEN
            RAISE EXCEPTION 'unknown time zone %', quote_literal(time_zone)
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Use an IANA zone name such as ''Europe/Berlin'' (see pg_timezone_names).';
        END IF;
    END IF;
    IF birthday IS NOT NULL AND (birthday > current_date OR birthday < date '1900-01-01') THEN
        RAISE EXCEPTION 'birthday % is not plausible', birthday
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the date of birth (the year may be a placeholder such as 1904).';
    END IF;
    INSERT INTO loyalty.profiles AS t (customer_id, name, email, phone, birthday, time_zone, source_id)
    VALUES (upsert_customer.customer_id, nullif(btrim(upsert_customer.name), ''), nullif(btrim(upsert_customer.email), ''),
            nullif(btrim(upsert_customer.phone), ''), upsert_customer.birthday, zone, NULL)
    ON CONFLICT ON CONSTRAINT profiles_pkey DO UPDATE
       SET name = coalesce(excluded.name, t.name), email = coalesce(excluded.email, t.email),
           phone = coalesce(excluded.phone, t.phone), birthday = coalesce(excluded.birthday, t.birthday),
           time_zone = coalesce(excluded.time_zone, t.time_zone), updated_at = now()
    RETURNING * INTO p;
    RETURN p;
END
$$;
COMMENT ON FUNCTION loyalty.upsert_customer(text, text, text, text, date, text) IS
'Create or change a customer''s profile from the app (NULL keeps a stored value); returns the profile';

-- ---------------------------------------------------------------- deliveries

-- Delivery times of tracked orders (loyalty.track_deliveries names the
-- column), for post_purchase campaigns that follow up after delivery.
CREATE TABLE loyalty.deliveries (
    order_ref    text PRIMARY KEY,
    delivered_at timestamptz NOT NULL,
    source_id    integer NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX deliveries_delivered_idx ON loyalty.deliveries (delivered_at);
COMMENT ON TABLE loyalty.deliveries IS 'When tracked orders were delivered (the delivery column named with loyalty.track_deliveries)';

-- Row trigger keeping loyalty.deliveries; never fails the shop's write.
CREATE FUNCTION loyalty.capture_delivery()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.sources;
    j jsonb;
    ref text;
    t timestamptz;
    msg text;
BEGIN
    SELECT * INTO s FROM loyalty.sources WHERE source_id = TG_ARGV[0]::integer;
    IF NOT FOUND OR s.delivered_at_column IS NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        j := to_jsonb(NEW);
        ref := j ->> s.order_id_column;
        t := (j ->> s.delivered_at_column)::timestamptz;
        IF t IS NULL THEN
            DELETE FROM loyalty.deliveries d WHERE d.order_ref = ref;
        ELSIF ref IS NOT NULL THEN
            INSERT INTO loyalty.deliveries AS d (order_ref, delivered_at, source_id) VALUES (ref, t, s.source_id)
            ON CONFLICT (order_ref) DO UPDATE SET delivered_at = excluded.delivered_at, recorded_at = now()
             WHERE d.delivered_at IS DISTINCT FROM excluded.delivered_at;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
        RAISE WARNING 'loyalty: delivery time of order % not stored: %', ref, msg
              USING HINT = 'The order itself was saved; fix the delivery value and update the row again.';
    END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION loyalty.capture_delivery() IS 'Trigger attached by loyalty.track_deliveries(); do not call directly';

-- Attach (and fill from existing rows) or detach the delivery trigger of a tracked table.
CREATE FUNCTION loyalty._sync_delivery_trigger(p_rel regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.sources;
BEGIN
    SELECT * INTO s FROM loyalty.sources so WHERE format('%I.%I', so.relation_schema, so.relation_name)::regclass = p_rel;
    IF NOT FOUND OR s.delivered_at_column IS NULL THEN
        EXECUTE format('DROP TRIGGER IF EXISTS loyalty_capture_deliveries ON %s', p_rel);
        RETURN;
    END IF;
    EXECUTE format('CREATE OR REPLACE TRIGGER loyalty_capture_deliveries AFTER INSERT OR UPDATE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION loyalty.capture_delivery(%L)', p_rel, s.source_id);
    EXECUTE format('INSERT INTO loyalty.deliveries AS d (order_ref, delivered_at, source_id)
                    SELECT %I::text, %I::timestamptz, %s FROM %s WHERE %I IS NOT NULL AND %I IS NOT NULL
                    ON CONFLICT (order_ref) DO UPDATE SET delivered_at = excluded.delivered_at
                     WHERE d.delivered_at IS DISTINCT FROM excluded.delivered_at',
                   s.order_id_column, s.delivered_at_column, s.source_id, p_rel, s.order_id_column, s.delivered_at_column);
END
$$;

-- ---------------------------------------------------------------- consent

CREATE TABLE loyalty.consent_history (
    change_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL,
    channel     text NOT NULL,
    granted     boolean NOT NULL,
    source      text,
    changed_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    changed_by  text NOT NULL DEFAULT session_user
);
CREATE INDEX consent_history_customer_idx ON loyalty.consent_history (customer_id, change_id);
COMMENT ON TABLE loyalty.consent_history IS 'Every consent change (opt-in or opt-out per channel), with time and source; never updated';

CREATE TABLE loyalty.consents (
    customer_id text NOT NULL,
    channel     text NOT NULL,
    granted     boolean NOT NULL,
    source      text,
    changed_at  timestamptz NOT NULL,
    change_id   bigint NOT NULL,
    PRIMARY KEY (customer_id, channel)
);
COMMENT ON TABLE loyalty.consents IS
'Current consent per customer and channel (the newest change); channel ''all'' with granted false is a global unsubscribe';

CREATE FUNCTION loyalty.set_consent(customer_id text, channel text, granted boolean, source text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch text := lower(btrim(channel));
    id bigint;
BEGIN
    IF customer_id IS NULL OR btrim(customer_id) = '' THEN
        RAISE EXCEPTION 'customer_id must not be null or empty'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the shop''s own customer key as text, e.g. ''42''.';
    END IF;
    IF ch IS NULL OR ch = '' THEN
        RAISE EXCEPTION 'channel must not be null or empty'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass a channel such as ''email'', ''sms'', ''whatsapp'', ''push'', or ''all''.';
    END IF;
    IF granted IS NULL THEN
        RAISE EXCEPTION 'granted must be true or false'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'true: the customer opted in; false: opted out.';
    END IF;
    IF NOT granted THEN
        -- an opt-out also withdraws what is queued and not yet sent. Shared
        -- lock against enqueue_due's exclusive one (74200, 5): a running
        -- enqueue commits first (its rows are then cancelled here), or the
        -- next one sees this opt-out; opt-outs do not wait for each other.
        PERFORM pg_advisory_xact_lock_shared(74200, 5);
    END IF;
    INSERT INTO loyalty.consent_history (customer_id, channel, granted, source)
    VALUES (set_consent.customer_id, ch, set_consent.granted, set_consent.source)
    RETURNING change_id INTO id;
    -- the newest change wins (a concurrent call for the same pair waits on the row)
    INSERT INTO loyalty.consents AS c (customer_id, channel, granted, source, changed_at, change_id)
    VALUES (set_consent.customer_id, ch, set_consent.granted, set_consent.source, now(), id)
    ON CONFLICT ON CONSTRAINT consents_pkey DO UPDATE
       SET granted = excluded.granted, source = excluded.source, changed_at = excluded.changed_at, change_id = excluded.change_id
     WHERE c.change_id < excluded.change_id;
    IF NOT granted THEN
        -- queue rows first, then outbox rows: the order ack/fail lock them in,
        -- so an opt-out racing a sender's ack waits instead of deadlocking
        PERFORM 1 FROM loyalty.outbox_queue q
         WHERE q.message_id IN (SELECT o.message_id FROM loyalty.outbox o
                                 WHERE o.customer_id = set_consent.customer_id AND o.status = 'pending'
                                   AND (ch = 'all' OR o.channel = ch))
         ORDER BY q.message_id
           FOR UPDATE OF q;
        UPDATE loyalty.outbox o
           SET status = 'cancelled',
               last_error = format('opted out of %s (%s)', ch, coalesce(set_consent.source, 'no source given'))
         WHERE o.customer_id = set_consent.customer_id AND o.status = 'pending'
           AND (ch = 'all' OR o.channel = ch);
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION loyalty.set_consent(text, text, boolean, text) IS
'Record a consent change (channel, or ''all'': granted false there unsubscribes from everything); kept as history; returns the change id';

-- ---------------------------------------------------------------- settings

CREATE TABLE loyalty.journey_settings (
    id                boolean PRIMARY KEY DEFAULT true CHECK (id),
    cap_messages      integer NOT NULL DEFAULT 2 CHECK (cap_messages >= 1),
    cap_window        interval NOT NULL DEFAULT '7 days' CHECK (cap_window > '0'),
    quiet_start       time NOT NULL DEFAULT '21:00',
    quiet_end         time NOT NULL DEFAULT '09:00',
    default_time_zone text NOT NULL DEFAULT 'UTC',
    updated_at        timestamptz NOT NULL DEFAULT pg_catalog.now()
);
INSERT INTO loyalty.journey_settings DEFAULT VALUES;
COMMENT ON TABLE loyalty.journey_settings IS 'Journey policy settings (one row); change with loyalty.configure_journeys()';
COMMENT ON COLUMN loyalty.journey_settings.cap_messages IS 'at most this many messages per customer within cap_window (all campaigns)';
COMMENT ON COLUMN loyalty.journey_settings.quiet_start IS 'quiet hours start (customer''s local time); equal to quiet_end: no quiet hours';
COMMENT ON COLUMN loyalty.journey_settings.quiet_end IS 'quiet hours end (local time): a message falling in quiet hours is due then';
COMMENT ON COLUMN loyalty.journey_settings.default_time_zone IS 'time zone of customers without one';

CREATE FUNCTION loyalty.configure_journeys(cap_messages integer DEFAULT NULL, cap_window interval DEFAULT NULL,
                                           quiet_start time DEFAULT NULL, quiet_end time DEFAULT NULL,
                                           default_time_zone text DEFAULT NULL)
RETURNS loyalty.journey_settings
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st loyalty.journey_settings;
    zone text;
BEGIN
    IF cap_messages IS NOT NULL AND cap_messages < 1 THEN
        RAISE EXCEPTION 'cap_messages must be at least 1, not %', cap_messages
              USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. 2 messages per cap_window; pause campaigns to send none.';
    END IF;
    IF cap_window IS NOT NULL AND (cap_window <= '0' OR NOT isfinite(cap_window)) THEN
        RAISE EXCEPTION 'cap_window must be a positive interval, not %', cap_window
              USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. ''7 days''.';
    END IF;
    IF default_time_zone IS NOT NULL THEN
        zone := loyalty._time_zone(default_time_zone);
        IF zone IS NULL THEN
            RAISE EXCEPTION 'unknown time zone %', quote_literal(default_time_zone)
                  USING ERRCODE = 'invalid_parameter_value', HINT = 'Use an IANA zone name such as ''Europe/Berlin''.';
        END IF;
    END IF;
    UPDATE loyalty.journey_settings s
       SET cap_messages = coalesce(configure_journeys.cap_messages, s.cap_messages),
           cap_window = coalesce(configure_journeys.cap_window, s.cap_window),
           quiet_start = coalesce(configure_journeys.quiet_start, s.quiet_start),
           quiet_end = coalesce(configure_journeys.quiet_end, s.quiet_end),
           default_time_zone = coalesce(zone, s.default_time_zone),
           updated_at = now()
    RETURNING * INTO st;
    RETURN st;
END
$$;
COMMENT ON FUNCTION loyalty.configure_journeys(integer, interval, time, time, text) IS
'Change the journey policy: frequency cap, quiet hours, default time zone (NULL keeps a setting); returns the settings in force';

-- ---------------------------------------------------------------- campaigns

CREATE TABLE loyalty.campaigns (
    campaign_id   serial PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    kind          text NOT NULL,
    channel       text NOT NULL CHECK (btrim(channel) <> ''),
    template      text NOT NULL CHECK (btrim(template) <> ''),
    params        jsonb NOT NULL DEFAULT '{}',
    priority      integer NOT NULL DEFAULT 100,
    cooldown      interval NOT NULL DEFAULT '0' CHECK (cooldown >= '0'),
    holdout_share numeric NOT NULL DEFAULT 0 CHECK (holdout_share >= 0 AND holdout_share < 1),
    active        boolean NOT NULL DEFAULT false,
    active_from   timestamptz,
    active_until  timestamptz,
    valid_for     interval NOT NULL DEFAULT '3 days' CHECK (valid_for > '0'),
    condition     text,
    activated_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK (active_from IS NULL OR active_until IS NULL OR active_from < active_until)
);
COMMENT ON TABLE loyalty.campaigns IS 'Campaigns the shop edits: kind, channel, template, params, priority, cooldown, holdout share, active window';
COMMENT ON COLUMN loyalty.campaigns.kind IS 'welcome, post_purchase, repurchase_reminder, win_back, birthday, points_expiring, tier_changed, milestone, custom';
COMMENT ON COLUMN loyalty.campaigns.params IS 'per-kind parameters (README: Journeys); missing ones are filled with their defaults when saved';
COMMENT ON COLUMN loyalty.campaigns.priority IS 'lower wins: when the frequency cap allows fewer messages than are due, the lowest priority numbers go';
COMMENT ON COLUMN loyalty.campaigns.cooldown IS 'at most one message of this campaign per customer within this interval';
COMMENT ON COLUMN loyalty.campaigns.holdout_share IS 'share of eligible customers held out (recorded, never sent), chosen by a hash of campaign and customer';
COMMENT ON COLUMN loyalty.campaigns.active_from IS 'occasions before this are ignored; NULL: since the campaign was switched on (activated_at)';
COMMENT ON COLUMN loyalty.campaigns.valid_for IS 'an occasion missed (nothing ran) is still sent within this long, and recorded as expired after';
COMMENT ON COLUMN loyalty.campaigns.condition IS 'custom kind: a boolean SQL expression over the columns of loyalty.journey_context';
COMMENT ON COLUMN loyalty.campaigns.activated_at IS 'when active last became true (set automatically)';

-- The per-customer context a custom campaign's condition is written against,
-- as of a given time. enqueue_due evaluates conditions against it directly:
-- it is inlinable (SQL-standard body, no SET clause, not SECURITY DEFINER), so
-- the planner pushes the shop's condition into the scan of customer_state and
-- drops the joins the condition does not use.
CREATE FUNCTION loyalty._journey_context(as_of timestamptz)
RETURNS TABLE (customer_id text, name text, email text, phone text, birthday date, time_zone text,
               orders integer, first_order_at timestamptz, last_order_at timestamptz, days_since_last_order integer,
               net_spend numeric, avg_spend numeric, r_score smallint, f_score smallint, m_score smallint, segment text,
               points bigint, tier text)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.customer_id, p.name, p.email, p.phone, p.birthday, p.time_zone,
           s.orders, s.first_order_at, s.last_order_at,
           (date_part('epoch', as_of - s.last_order_at) / 86400)::integer,
           s.net_spend, s.avg_spend, r.r_score, r.f_score, r.m_score, r.segment,
           coalesce(a.balance, 0), t.tier
      FROM loyalty.customer_state s
      LEFT JOIN loyalty.profiles p ON p.customer_id = s.customer_id
      LEFT JOIN loyalty.customer_rfm r ON r.customer_id = s.customer_id
      LEFT JOIN loyalty.accounts a ON a.customer_id = s.customer_id
      LEFT JOIN loyalty.customer_tiers t ON t.customer_id = s.customer_id;
END;

-- The same for readers (loyalty_reader reads the view below): SECURITY DEFINER.
CREATE FUNCTION loyalty.journey_context_at(as_of timestamptz)
RETURNS TABLE (customer_id text, name text, email text, phone text, birthday date, time_zone text,
               orders integer, first_order_at timestamptz, last_order_at timestamptz, days_since_last_order integer,
               net_spend numeric, avg_spend numeric, r_score smallint, f_score smallint, m_score smallint, segment text,
               points bigint, tier text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM loyalty._journey_context(as_of)
$$;
COMMENT ON FUNCTION loyalty.journey_context_at(timestamptz) IS 'Per-customer context of custom campaign conditions, as of a time';

CREATE VIEW loyalty.journey_context AS SELECT * FROM loyalty.journey_context_at(pg_catalog.now());
COMMENT ON VIEW loyalty.journey_context IS
'What a custom campaign''s condition can use, per customer with orders: profile, order aggregates, RFM scores and segment, points, tier';

-- Fill a kind's parameter defaults and check them; raises on anything wrong.
CREATE FUNCTION loyalty._campaign_params(p_kind text, p_params jsonb, p_condition text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    defaults jsonb;
    allowed text[];
    p jsonb;
    k text;
    msg text;
    hint text;
BEGIN
    defaults := CASE p_kind
        WHEN 'welcome' THEN '{"delay_hours": 0}'
        WHEN 'post_purchase' THEN '{"days": 7, "after_delivery": false}'
        WHEN 'repurchase_reminder' THEN '{"factor": 1.0, "min_orders": 2}'
        WHEN 'win_back' THEN '{"max_days_since_last": 365}'
        WHEN 'birthday' THEN '{"days_before": 0}'
        WHEN 'points_expiring' THEN '{"days_before": 14, "min_points": 1}'
        WHEN 'tier_changed' THEN '{"direction": "up"}'
        WHEN 'milestone' THEN '{}'
        WHEN 'custom' THEN '{"occasion": "once"}'
    END::jsonb;
    IF defaults IS NULL THEN
        RAISE EXCEPTION 'unknown campaign kind %', coalesce(quote_literal(p_kind), 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Kinds: welcome, post_purchase, repurchase_reminder, win_back, birthday, points_expiring, tier_changed, milestone, custom.';
    END IF;
    IF p_params IS NULL OR jsonb_typeof(p_params) <> 'object' THEN
        RAISE EXCEPTION 'params of a % campaign must be a JSON object', p_kind
              USING ERRCODE = 'invalid_parameter_value', HINT = format('For example %s.', defaults);
    END IF;
    allowed := CASE p_kind WHEN 'win_back' THEN ARRAY['max_days_since_last', 'p_alive_below', 'segments']
                           WHEN 'milestone' THEN ARRAY['orders', 'spend']
                           ELSE ARRAY(SELECT jsonb_object_keys(defaults)) END;
    SELECT k2 INTO k FROM jsonb_object_keys(p_params) k2 WHERE k2 <> ALL (allowed) LIMIT 1;
    IF k IS NOT NULL THEN
        RAISE EXCEPTION 'unknown parameter "%" for a % campaign', k, p_kind
              USING ERRCODE = 'invalid_parameter_value', HINT = format('Parameters of %s: %s.', p_kind, array_to_string(allowed, ', '));
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_each(p_params) e WHERE jsonb_typeof(e.value) = 'null') THEN
        RAISE EXCEPTION 'params of a % campaign must not hold null values', p_kind
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Leave a parameter out to get its default.';
    END IF;
    p := defaults || p_params;
    IF p_kind = 'win_back' AND NOT (p ? 'p_alive_below' OR p ? 'segments') THEN
        p := p || '{"p_alive_below": 0.3}';
    END IF;
    IF p_kind = 'custom' AND (p_condition IS NULL OR btrim(p_condition) = '') THEN
        RAISE EXCEPTION 'a custom campaign needs a condition'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'A boolean SQL expression over loyalty.journey_context, e.g. ''net_spend > 500 AND days_since_last_order > 60''.';
    ELSIF p_kind <> 'custom' AND p_condition IS NOT NULL THEN
        RAISE EXCEPTION 'only custom campaigns have a condition'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Use kind ''custom'', or set condition to NULL.';
    END IF;

    -- every parameter's type and range
    BEGIN
        IF p_kind = 'welcome' AND NOT ((p->>'delay_hours')::numeric BETWEEN 0 AND 720) THEN
            msg := 'delay_hours must be between 0 and 720';
        ELSIF p_kind = 'post_purchase' AND NOT ((p->>'days')::integer BETWEEN 0 AND 365) THEN
            msg := 'days must be between 0 and 365';
        ELSIF p_kind = 'post_purchase' AND jsonb_typeof(p->'after_delivery') <> 'boolean' THEN
            msg := 'after_delivery must be true or false';
        ELSIF p_kind = 'repurchase_reminder' AND NOT ((p->>'factor')::numeric > 0 AND (p->>'factor')::numeric <= 10) THEN
            msg := 'factor must be above 0 and at most 10';
        ELSIF p_kind = 'repurchase_reminder' AND NOT ((p->>'min_orders')::integer BETWEEN 2 AND 1000) THEN
            msg := 'min_orders must be between 2 and 1000';
        ELSIF p_kind = 'win_back' AND NOT ((p->>'max_days_since_last')::integer BETWEEN 1 AND 3650) THEN
            msg := 'max_days_since_last must be between 1 and 3650';
        ELSIF p_kind = 'win_back' AND p ? 'p_alive_below'
              AND NOT ((p->>'p_alive_below')::float8 > 0 AND (p->>'p_alive_below')::float8 < 1) THEN
            msg := 'p_alive_below must be above 0 and below 1';
        ELSIF p_kind = 'win_back' AND p ? 'segments'
              AND (jsonb_typeof(p->'segments') <> 'array' OR jsonb_array_length(p->'segments') = 0
                   OR EXISTS (SELECT 1 FROM jsonb_array_elements(p->'segments') e WHERE jsonb_typeof(e) <> 'string'
                                 OR NOT EXISTS (SELECT 1 FROM loyalty.segment_rules r WHERE r.segment = e #>> '{}'))) THEN
            msg := 'segments must be a non-empty array of segment names from loyalty.segment_rules';
        ELSIF p_kind IN ('birthday') AND NOT ((p->>'days_before')::integer BETWEEN 0 AND 60) THEN
            msg := 'days_before must be between 0 and 60';
        ELSIF p_kind = 'points_expiring' AND NOT ((p->>'days_before')::integer BETWEEN 0 AND 365) THEN
            msg := 'days_before must be between 0 and 365';
        ELSIF p_kind = 'points_expiring' AND NOT ((p->>'min_points')::bigint >= 1) THEN
            msg := 'min_points must be at least 1';
        ELSIF p_kind = 'tier_changed' AND NOT coalesce(p->>'direction' IN ('up', 'down', 'any'), false) THEN
            msg := 'direction must be up, down or any';
        ELSIF p_kind = 'milestone' AND (p ? 'orders') = (p ? 'spend') THEN
            msg := 'give exactly one of orders (the Nth order) and spend (a lifetime net spend threshold)';
        ELSIF p_kind = 'milestone' AND p ? 'orders' AND NOT ((p->>'orders')::integer BETWEEN 1 AND 100000) THEN
            msg := 'orders must be between 1 and 100000';
        ELSIF p_kind = 'milestone' AND p ? 'spend' AND NOT ((p->>'spend')::numeric > 0 AND (p->>'spend')::numeric < 'Infinity') THEN
            msg := 'spend must be a positive amount';
        ELSIF p_kind = 'custom' AND NOT coalesce(p->>'occasion' IN ('once', 'daily', 'weekly', 'monthly'), false) THEN
            msg := 'occasion must be once, daily, weekly or monthly';
        END IF;
    EXCEPTION WHEN data_exception THEN
        msg := 'a parameter has the wrong type: ' || SQLERRM;
    END;
    IF msg IS NOT NULL THEN
        RAISE EXCEPTION 'invalid params for a % campaign: %', p_kind, msg
              USING ERRCODE = 'invalid_parameter_value', HINT = format('Parameters with their defaults: %s.', defaults);
    END IF;

    IF p_kind = 'custom' THEN
        IF p_condition ~ ';' THEN
            RAISE EXCEPTION 'condition % must be one expression, without ;', quote_literal(p_condition)
                  USING ERRCODE = 'invalid_parameter_value', HINT = 'Combine tests with AND / OR.';
        END IF;
        -- parse and plan against the context (nothing is read: LIMIT 0)
        BEGIN
            EXECUTE format('SELECT c.customer_id FROM loyalty.journey_context_at(pg_catalog.now()) c WHERE (%s) LIMIT 0', p_condition);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
            SELECT string_agg(a.attname, ', ' ORDER BY a.attnum) INTO hint FROM pg_attribute a
             WHERE a.attrelid = 'loyalty.journey_context'::regclass AND a.attnum > 0;
            RAISE EXCEPTION 'condition % is not valid: %', quote_literal(p_condition), msg
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Write a boolean SQL expression over the columns of loyalty.journey_context: ' || hint || '.';
        END;
    END IF;
    RETURN p;
END
$$;

CREATE FUNCTION loyalty._campaign_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.kind := lower(btrim(NEW.kind));
    NEW.channel := lower(btrim(NEW.channel));
    NEW.params := loyalty._campaign_params(NEW.kind, NEW.params, NEW.condition);
    IF loyalty._restoring() THEN
        RETURN NEW;      -- pg_restore: the dumped times stand
    END IF;
    IF NEW.active AND (TG_OP = 'INSERT' OR NOT OLD.active) THEN
        NEW.activated_at := now();
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
CREATE TRIGGER campaign_check BEFORE INSERT OR UPDATE ON loyalty.campaigns
    FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_check();

-- Examples, inactive: the shop switches on what it wants (UPDATE ... SET active = true).
INSERT INTO loyalty.campaigns (name, kind, channel, template, params, priority, cooldown, holdout_share, valid_for, condition) VALUES
    ('welcome', 'welcome', 'email', 'welcome', '{"delay_hours": 1}', 10, '0', 0.1, '3 days', NULL),
    ('order follow-up', 'post_purchase', 'email', 'post_purchase', '{"days": 7}', 50, '14 days', 0.1, '3 days', NULL),
    ('time to reorder', 'repurchase_reminder', 'email', 'repurchase', '{"factor": 1.2}', 40, '30 days', 0.1, '7 days', NULL),
    ('we miss you', 'win_back', 'email', 'win_back', '{"p_alive_below": 0.3}', 60, '90 days', 0.1, '7 days', NULL),
    ('happy birthday', 'birthday', 'email', 'birthday', '{"days_before": 0}', 20, '0', 0, '2 days', NULL),
    ('points expiring', 'points_expiring', 'email', 'points_expiring', '{"days_before": 14}', 30, '7 days', 0, '7 days', NULL),
    ('new tier', 'tier_changed', 'email', 'tier_up', '{"direction": "up"}', 20, '0', 0, '3 days', NULL),
    ('5th order', 'milestone', 'email', 'milestone_orders', '{"orders": 5}', 30, '0', 0, '3 days', NULL),
    ('big spender, quiet lately', 'custom', 'email', 'vip_check_in', '{"occasion": "monthly"}', 70, '30 days', 0.1, '7 days',
     'net_spend > 500 AND days_since_last_order > 60');
-- Journeys, part 2: occasions of the active campaigns, the policy applied to
-- each (consent, contact, validity, holdout, cooldown, frequency cap, quiet
-- hours), the loyalty.due_messages view and loyalty.enqueue_due(), which
-- writes the outcome into loyalty.outbox exactly once per occasion.
--
-- An occasion is one reason to message one customer: (campaign, customer,
-- occasion key), e.g. (welcome, 42, 'first') or (post_purchase, 42,
-- 'order:A-1001'). Its dedupe key campaign_id:customer:occasion is the
-- outbox's unique key, so an occasion yields at most one outbox row, ever.
-- Each occasion has a time (occasion_at: when it became due). Occasions are
-- only looked for in index-backed time ranges:
--   [greatest(start, as_of - valid_for), as_of]       -> still valid: policy decides
--   [greatest(start, last run's as_of), as_of - valid_for) -> missed while nothing
--                                                          ran: recorded as expired
-- where start = coalesce(active_from, activated_at): occasions before the
-- campaign was switched on are never messaged.

-- Indexes the occasion ranges use.
CREATE INDEX orders_ordered_at_idx ON loyalty.orders (ordered_at);
CREATE INDEX customer_state_first_order_idx ON loyalty.customer_state (first_order_at);
CREATE INDEX customer_state_last_order_idx ON loyalty.customer_state (last_order_at);

-- Per campaign, the as_of of the last enqueue_due run (the lower end of the
-- expiry range: occasions before it were seen by that run).
CREATE TABLE loyalty.journey_runs (
    campaign_id         integer PRIMARY KEY,
    last_as_of          timestamptz NOT NULL,
    last_run_at         timestamptz NOT NULL,
    campaign_updated_at timestamptz
);
COMMENT ON TABLE loyalty.journey_runs IS 'Per campaign: as_of and time of the last loyalty.enqueue_due() run, and the campaign''s updated_at it ran with';

-- Customers whose orders changed (loyalty._recompute_customers) or whose
-- win-back lapse moved with a new fit (loyalty._journeys_refitted), since
-- enqueue_due last looked. Insert-only: a writer never waits for a run; a
-- run deletes exactly the rows it saw (rows committed later stay for the next).
CREATE TABLE loyalty.journey_changes (
    customer_id text NOT NULL
);
COMMENT ON TABLE loyalty.journey_changes IS 'Customers whose occasions may have changed since the last loyalty.enqueue_due() run';

CREATE TYPE loyalty.journey_occasion AS (
    campaign_id integer,
    customer_id text,
    occasion    text,
    occasion_at timestamptz,
    detail      jsonb
);

-- campaign:customer:occasion; ':' and '\' in the customer key are escaped, so
-- two different (customer, occasion) pairs never share a key.
-- The small helpers below are SQL-standard bodies (RETURN ...) without a SET
-- clause: names are bound when the extension is created (pg_catalog first),
-- and the planner can inline them into the per-candidate query, where a
-- function call per row would cost more than the whole check.
CREATE FUNCTION loyalty._dedupe_key(p_campaign integer, p_customer text, p_occasion text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_campaign::text || ':' || replace(replace(p_customer, '\', '\\'), ':', '\:') || ':' || p_occasion;

-- Deterministic holdout draw in [0, 1) from campaign and customer (53 bits of a 64-bit hash).
CREATE FUNCTION loyalty._holdout_draw(p_campaign integer, p_customer text)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (hashtextextended(p_campaign::text || ':' || p_customer, 74200) & 9007199254740991)::float8 / 9007199254740992.0;

-- P(alive) as of a time: BG/NBD with the current fit (days; one transaction per
-- purchase day, as loyalty.model_inputs), else the heuristic of
-- loyalty.customer_scores: exp(-days since last purchase / typical gap).
CREATE FUNCTION loyalty._p_alive(p_purchase_days integer, p_first timestamptz, p_last timestamptz, p_as_of timestamptz,
                                 r float8, alpha float8, a float8, b float8, p_shop_gap float8)
RETURNS float8
LANGUAGE sql STABLE
RETURN CASE WHEN r IS NOT NULL
            THEN loyalty.bgnbd_p_alive(p_purchase_days - 1,
                                       ((p_last AT TIME ZONE 'UTC')::date - (p_first AT TIME ZONE 'UTC')::date)::float8,
                                       greatest((p_as_of AT TIME ZONE 'UTC')::date - (p_first AT TIME ZONE 'UTC')::date,
                                                (p_last AT TIME ZONE 'UTC')::date - (p_first AT TIME ZONE 'UTC')::date)::float8,
                                       r, alpha, a, b)
            ELSE exp(greatest(-700, -greatest((p_as_of AT TIME ZONE 'UTC')::date - (p_last AT TIME ZONE 'UTC')::date, 0)
                                    / CASE WHEN p_purchase_days > 1 AND (p_last AT TIME ZONE 'UTC')::date > (p_first AT TIME ZONE 'UTC')::date
                                           THEN ((p_last AT TIME ZONE 'UTC')::date - (p_first AT TIME ZONE 'UTC')::date)::float8
                                                / (p_purchase_days - 1)
                                           ELSE coalesce(p_shop_gap, 90) END)) END;

-- When a reorder reminder is due: the first UTC midnight at or after the last
-- order + p_factor * the customer's mean gap between purchase days (NULL
-- below two). In C (src/journey_dates.c): evaluated for every customer daily.
CREATE FUNCTION loyalty._reorder_at(p_purchase_days integer, p_first timestamptz, p_last timestamptz, p_factor float8)
RETURNS timestamptz
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'reorder_at';

-- When a customer lapses: the first moment at which _p_alive(...) is below
-- p_below (NULL: never, a single purchase day under BG/NBD), in closed form
-- so that win-back occasions can be dated without evaluating P(alive) per
-- customer and day. BG/NBD (Fader, Hardie & Lee 2005, eq. 13) when r is
-- given, else the heuristic (p_shop_gap NULL: 90 days). The formulas are
-- with the code, in src/journey_dates.c.
CREATE FUNCTION loyalty._lapse_at(p_purchase_days integer, p_first timestamptz, p_last timestamptz, p_below float8,
                                  r float8, alpha float8, a float8, b float8, p_shop_gap float8)
RETURNS timestamptz
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'lapse_at';

-- The earliest a win-back occasion is dated as of as_of: customers lapsed
-- before the campaign was switched on are due when it was (also when
-- active_from was set back to catch up other occasions); a clock set before
-- that moment (tests) counts as it. Used by _occasions and the refit hook,
-- which must date occasions alike.
CREATE FUNCTION loyalty._lapse_from(p_active_from timestamptz, p_activated_at timestamptz, p_as_of timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN greatest(coalesce(p_active_from, p_activated_at), least(coalesce(p_activated_at, p_active_from), p_as_of));

-- A new BG/NBD fit moves lapse days. enqueue_due looks for lapses before a
-- campaign's last as_of among logged customers only (loyalty._occasions), so
-- log those whose lapse under the new fit falls in the stretch each active
-- win-back campaign has passed already: [last as_of - valid_for, last as_of].
-- Called by loyalty.fit_models (the scan costs less than the fit).
CREATE FUNCTION loyalty._journeys_refitted()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    f record;
    c record;
BEGIN
    -- as enqueue_due: no run may search with the old fit after this reads its
    -- last as_of and before the new fit commits (held until then)
    PERFORM pg_advisory_xact_lock(74200, 5);
    SELECT cf.r, cf.alpha, cf.a, cf.b INTO f FROM loyalty.current_fits cf;
    IF f.r IS NULL THEN
        RETURN;
    END IF;
    FOR c IN
        SELECT r.last_as_of, cp.valid_for, (cp.params->>'p_alive_below')::float8 AS below,
               make_interval(days => (cp.params->>'max_days_since_last')::integer) AS max_quiet,
               loyalty._lapse_from(cp.active_from, cp.activated_at, r.last_as_of) AS lapse_from
          FROM loyalty.campaigns cp JOIN loyalty.journey_runs r ON r.campaign_id = cp.campaign_id
         WHERE cp.active AND cp.kind = 'win_back' AND cp.params ? 'p_alive_below'
    LOOP
        INSERT INTO loyalty.journey_changes (customer_id)
        SELECT s.customer_id
          FROM loyalty.customer_state s
         WHERE s.last_order_at >= c.last_as_of - c.max_quiet AND s.last_order_at <= c.last_as_of
           AND greatest(loyalty._lapse_at(s.purchase_days, s.first_order_at, s.last_order_at, c.below, f.r, f.alpha, f.a, f.b, NULL),
                        c.lapse_from)
               BETWEEN c.last_as_of - c.valid_for AND c.last_as_of;
    END LOOP;
END
$$;

-- Occasions of the active campaigns that may need a decision as of as_of
-- (both ranges above). One index-backed query per campaign.
--
-- p_changed (enqueue_due): the customers in loyalty.journey_changes. Every
-- occasion up to a campaign's last as_of was decided by that run, unless
-- the data behind it changed or arrived since. For the kinds read from
-- customer_state and orders, whose every change is logged there, the range
-- before the last as_of is therefore searched among the changed customers
-- only, and all customers only from the last as_of on: a run costs what is
-- new, not the whole validity window again. The other kinds (birthdays,
-- point lots, tier history, deliveries, RFM segments, custom conditions),
-- a campaign edited since its last run, and loyalty.due_messages (p_changed
-- NULL) search the whole window.
CREATE FUNCTION loyalty._occasions(p_as_of timestamptz, p_changed text[] DEFAULT NULL)
RETURNS SETOF loyalty.journey_occasion
LANGUAGE plpgsql STABLE
ROWS 1000
SET search_path = pg_catalog, pg_temp
-- the customer filter is either absent (NULL) or a short list: plan each query for the one it gets
SET plan_cache_mode = force_custom_plan
-- days are 24 hours here whatever the caller's zone: two runs in sessions
-- with different zones search the same ranges (local times are explicit)
SET TimeZone = 'UTC'
AS $$
DECLARE
    c record;
    lo timestamptz;
    d interval;
    f record;
    gap float8;
    mds integer[];
    incr boolean;
    lo_new timestamptz;
    pass integer;
    r_lo timestamptz;   -- the range a pass searches, and the customers it looks at (NULL: all)
    r_hi timestamptz;
    among text[];
    lapse_from timestamptz;
    below float8;       -- win_back: p_alive_below and segments, if given
    segs text[];
BEGIN
    SELECT cf.r, cf.alpha, cf.a, cf.b INTO f FROM loyalty.current_fits cf;
    FOR c IN
        SELECT cp.*, coalesce(cp.active_from, cp.activated_at) AS start, r.last_as_of, r.campaign_updated_at
          FROM loyalty.campaigns cp LEFT JOIN loyalty.journey_runs r ON r.campaign_id = cp.campaign_id
         WHERE cp.active AND coalesce(cp.active_from, cp.activated_at) <= p_as_of
           AND (cp.active_until IS NULL OR cp.active_until > p_as_of - cp.valid_for)
         ORDER BY cp.campaign_id
    LOOP
        -- expiry range starts at the last run (first run: nothing to expire)
        lo := greatest(c.start, least(p_as_of - c.valid_for, coalesce(c.last_as_of, p_as_of - c.valid_for)));
        lapse_from := loyalty._lapse_from(c.active_from, c.activated_at, p_as_of);
        incr := p_changed IS NOT NULL AND c.last_as_of IS NOT NULL
                AND c.campaign_updated_at IS NOT DISTINCT FROM c.updated_at
                AND (c.kind IN ('welcome', 'repurchase_reminder', 'milestone')
                     OR (c.kind = 'post_purchase' AND NOT (c.params->>'after_delivery')::boolean)
                     -- lapse days move with the fit (logged) and the heuristic's shop gap (not)
                     OR (c.kind = 'win_back' AND NOT c.params ? 'segments' AND f.r IS NOT NULL));
        lo_new := CASE WHEN incr THEN greatest(lo, c.last_as_of) ELSE lo END;
        IF c.kind = 'win_back' AND f.r IS NULL AND c.params ? 'p_alive_below' THEN
            gap := loyalty._shop_gap();
        END IF;
        FOR pass IN 1..2 LOOP
            IF pass = 1 THEN
                r_lo := lo_new;
                r_hi := p_as_of;
                among := NULL;
                -- reorder reminders and lapses fall on UTC midnights (a lapse also at
                -- a purchase: a changed customer): with no midnight and no campaign
                -- start since the last run, only changed customers can have a new one
                IF incr AND c.kind IN ('repurchase_reminder', 'win_back') AND lapse_from <= c.last_as_of
                   AND (c.last_as_of AT TIME ZONE 'UTC')::date = (p_as_of AT TIME ZONE 'UTC')::date THEN
                    -- and those whose last order is later than the last run's
                    -- as_of: a run may have taken their log entry while the
                    -- order still lay after its own as_of
                    among := p_changed || ARRAY(SELECT s.customer_id FROM loyalty.customer_state s
                                                 WHERE s.last_order_at > c.last_as_of);
                END IF;
            ELSE
                EXIT WHEN NOT incr OR lo >= lo_new;
                r_lo := lo;
                r_hi := lo_new - interval '1 microsecond';
                among := p_changed;
            END IF;
            CONTINUE WHEN cardinality(among) = 0;
            CASE c.kind
            WHEN 'welcome' THEN
                d := make_interval(secs => (c.params->>'delay_hours')::float8 * 3600);
                RETURN QUERY
                SELECT c.campaign_id, s.customer_id, 'first', s.first_order_at + d,
                       jsonb_build_object('order_ref', o.order_ref, 'amount', o.amount - o.refunded, 'ordered_at', o.ordered_at)
                  FROM loyalty.customer_state s
                  LEFT JOIN LATERAL (SELECT o.order_ref, o.amount, o.refunded, o.ordered_at FROM loyalty.orders o
                                      WHERE o.customer_id = s.customer_id AND o.counts ORDER BY o.ordered_at, o.order_id LIMIT 1) o ON true
                 WHERE s.first_order_at >= r_lo - d AND s.first_order_at <= r_hi - d
                   AND (among IS NULL OR s.customer_id = ANY (among));
            WHEN 'post_purchase' THEN
                d := make_interval(days => (c.params->>'days')::integer);
                IF (c.params->>'after_delivery')::boolean THEN
                    -- days after delivery; an order not delivered yet waits
                    RETURN QUERY
                    SELECT c.campaign_id, o.customer_id, 'order:' || o.order_ref, dl.delivered_at + d,
                           jsonb_build_object('order_ref', o.order_ref, 'amount', o.amount - o.refunded, 'ordered_at', o.ordered_at,
                                              'delivered_at', dl.delivered_at)
                      FROM loyalty.deliveries dl
                      JOIN loyalty.orders o ON o.order_ref = dl.order_ref AND o.counts
                     WHERE dl.delivered_at >= r_lo - d AND dl.delivered_at <= r_hi - d;
                    EXIT;
                END IF;
                RETURN QUERY
                SELECT c.campaign_id, o.customer_id, 'order:' || o.order_ref, o.ordered_at + d,
                       jsonb_build_object('order_ref', o.order_ref, 'amount', o.amount - o.refunded, 'ordered_at', o.ordered_at)
                  FROM loyalty.orders o
                 WHERE o.ordered_at >= r_lo - d AND o.ordered_at <= r_hi - d AND o.counts
                   AND (among IS NULL OR o.customer_id = ANY (among));
            WHEN 'repurchase_reminder' THEN
                -- the customer's own typical gap between purchase days, times
                -- factor, after the last order: due from the next UTC midnight on
                RETURN QUERY
                SELECT c.campaign_id, x.customer_id, 'after:' || to_char(x.last_order_at AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS'),
                       x.due, jsonb_build_object('last_order_at', x.last_order_at, 'orders', x.orders,
                                                 'typical_days', round((date_part('epoch', x.last_order_at - x.first_order_at)
                                                                        / (x.purchase_days - 1) / 86400)::numeric, 1))
                  FROM (SELECT s.customer_id, s.first_order_at, s.last_order_at, s.purchase_days, s.orders,
                               loyalty._reorder_at(s.purchase_days, s.first_order_at, s.last_order_at,
                                                   (c.params->>'factor')::float8) AS due
                          FROM loyalty.customer_state s
                         WHERE s.purchase_days >= (c.params->>'min_orders')::integer
                           AND (among IS NULL OR s.customer_id = ANY (among))) x
                 WHERE x.due >= r_lo AND x.due <= r_hi;
            WHEN 'win_back' THEN
                below := (c.params->>'p_alive_below')::float8;
                segs := ARRAY(SELECT jsonb_array_elements_text(c.params->'segments'));
                IF cardinality(segs) = 0 THEN
                    segs := NULL;
                END IF;
                -- One occasion per lapse (keyed by the last purchase day), dated
                -- when it began: the day P(alive) fell below p_alive_below
                -- (_lapse_at), or the last change of the customer's RFM scores when
                -- the segment is one of segments; never before lapse_from.
                RETURN QUERY
                SELECT c.campaign_id, x.customer_id, 'lapse:' || to_char(x.last_order_at AT TIME ZONE 'UTC', 'YYYYMMDD'),
                       x.at, jsonb_build_object('last_order_at', x.last_order_at, 'lapsed_at', x.lapsed_at, 'segment', x.segment,
                                                'p_alive', round(loyalty._p_alive(x.purchase_days, x.first_order_at, x.last_order_at, p_as_of,
                                                                                  f.r, f.alpha, f.a, f.b, gap)::numeric, 4))
                  FROM (SELECT s.customer_id, s.purchase_days, s.first_order_at, s.last_order_at, rf.segment,
                               l.lapsed_at, greatest(l.lapsed_at, lapse_from) AS at
                          FROM loyalty.customer_state s
                          -- read only for a campaign with segments
                          LEFT JOIN LATERAL (SELECT rf.segment, rf.scored_at FROM loyalty.customer_rfm rf
                                              WHERE rf.customer_id = s.customer_id AND segs IS NOT NULL LIMIT 1) rf ON true
                         CROSS JOIN LATERAL (
                               SELECT least(CASE WHEN below IS NOT NULL
                                                 THEN loyalty._lapse_at(s.purchase_days, s.first_order_at, s.last_order_at,
                                                                        below, f.r, f.alpha, f.a, f.b, gap) END,
                                            CASE WHEN rf.segment = ANY (segs) THEN rf.scored_at END) AS lapsed_at) l
                         WHERE s.last_order_at >= p_as_of - make_interval(days => (c.params->>'max_days_since_last')::integer)
                           AND s.last_order_at <= p_as_of
                           AND (among IS NULL OR s.customer_id = ANY (among))) x
                 WHERE x.at >= r_lo AND x.at <= r_hi;
            WHEN 'birthday' THEN
                -- local midnight, days_before the birthday, in the customer's zone;
                -- 29 February is celebrated on 28 February in other years
                d := make_interval(days => (c.params->>'days_before')::integer);
                SELECT array_agg(DISTINCT date_part('month', g)::integer * 100 + date_part('day', g)::integer) INTO mds
                  FROM generate_series((lo AT TIME ZONE 'UTC')::date - 1 + d,
                                       least((p_as_of AT TIME ZONE 'UTC')::date + 1, (lo AT TIME ZONE 'UTC')::date + 400) + d,
                                       interval '1 day') g;
                IF 228 = ANY (mds) THEN
                    mds := mds || 229;
                END IF;
                RETURN QUERY
                SELECT c.campaign_id, p.customer_id, 'birthday:' || y.y, (bd.day - d)::timestamp AT TIME ZONE z.zone,
                       jsonb_build_object('birthday', p.birthday, 'celebrated_on', bd.day)
                  FROM loyalty.profiles p
                 CROSS JOIN LATERAL (SELECT coalesce(p.time_zone, (SELECT js.default_time_zone FROM loyalty.journey_settings js)) AS zone) z
                 CROSS JOIN LATERAL generate_series(date_part('year', lo AT TIME ZONE 'UTC')::integer - 1,
                                                    date_part('year', p_as_of AT TIME ZONE 'UTC')::integer + 1) y(y)
                 CROSS JOIN LATERAL (SELECT CASE WHEN p.birthday_md = 229 AND NOT (y.y % 4 = 0 AND (y.y % 100 <> 0 OR y.y % 400 = 0))
                                                 THEN make_date(y.y, 2, 28)
                                                 ELSE make_date(y.y, p.birthday_md / 100, p.birthday_md % 100) END AS day) bd
                 WHERE p.birthday_md = ANY (mds)
                   AND (bd.day - d)::timestamp AT TIME ZONE z.zone >= lo
                   AND (bd.day - d)::timestamp AT TIME ZONE z.zone <= p_as_of;
            WHEN 'points_expiring' THEN
                -- per customer and expiry day (UTC), the points still left then
                d := make_interval(days => (c.params->>'days_before')::integer);
                RETURN QUERY
                SELECT c.campaign_id, l.customer_id, 'expiring:' || to_char(l.day, 'YYYYMMDD'), min(l.expires_at) - d,
                       jsonb_build_object('expiring_points', sum(l.remaining), 'expires_at', min(l.expires_at))
                  FROM (SELECT pl.customer_id, pl.remaining, pl.expires_at, (pl.expires_at AT TIME ZONE 'UTC')::date AS day
                          FROM loyalty.point_lots pl
                         WHERE pl.expires_at >= date_trunc('day', lo + d, 'UTC')
                           AND pl.expires_at < date_trunc('day', p_as_of + d, 'UTC') + interval '1 day') l
                 GROUP BY l.customer_id, l.day
                HAVING sum(l.remaining) >= (c.params->>'min_points')::bigint
                   AND min(l.expires_at) - d >= lo AND min(l.expires_at) - d <= p_as_of;
            WHEN 'tier_changed' THEN
                RETURN QUERY
                SELECT c.campaign_id, h.customer_id, 'tier:' || h.change_id, h.changed_at,
                       jsonb_build_object('from_tier', h.from_tier, 'to_tier', h.to_tier, 'change', h.reason)
                  FROM loyalty.tier_history h
                 WHERE h.changed_at >= lo AND h.changed_at <= p_as_of
                   AND CASE c.params->>'direction'
                           WHEN 'up' THEN h.reason = 'upgrade' AND h.to_tier IS NOT NULL
                           WHEN 'down' THEN h.reason = 'downgrade'
                           ELSE true END;
            WHEN 'milestone' THEN
                IF c.params ? 'orders' THEN
                    RETURN QUERY
                    SELECT c.campaign_id, o.customer_id, 'orders:' || (c.params->>'orders'), o.ordered_at,
                           jsonb_build_object('order_ref', o.order_ref, 'amount', o.amount - o.refunded, 'ordered_at', o.ordered_at,
                                              'orders', (c.params->>'orders')::integer)
                      FROM loyalty.orders o
                      JOIN loyalty.customer_state s ON s.customer_id = o.customer_id
                     WHERE o.ordered_at >= r_lo AND o.ordered_at <= r_hi AND o.counts
                       AND (among IS NULL OR o.customer_id = ANY (among))
                       AND s.orders >= (c.params->>'orders')::integer
                       AND (SELECT count(*) FROM loyalty.orders o2
                             WHERE o2.customer_id = o.customer_id AND o2.counts
                               AND (o2.ordered_at, o2.order_id) <= (o.ordered_at, o.order_id)) = (c.params->>'orders')::integer;
                ELSE
                    RETURN QUERY
                    SELECT c.campaign_id, o.customer_id, 'spend:' || (c.params->>'spend'), o.ordered_at,
                           jsonb_build_object('order_ref', o.order_ref, 'amount', o.amount - o.refunded, 'ordered_at', o.ordered_at,
                                              'lifetime_spend', cum.total)
                      FROM loyalty.orders o
                      JOIN loyalty.customer_state s ON s.customer_id = o.customer_id
                     CROSS JOIN LATERAL (SELECT sum(o2.amount - o2.refunded) AS total FROM loyalty.orders o2
                                          WHERE o2.customer_id = o.customer_id AND o2.counts
                                            AND (o2.ordered_at, o2.order_id) <= (o.ordered_at, o.order_id)) cum
                     WHERE o.ordered_at >= r_lo AND o.ordered_at <= r_hi AND o.counts
                       AND (among IS NULL OR o.customer_id = ANY (among))
                       AND s.net_spend >= (c.params->>'spend')::numeric
                       AND cum.total >= (c.params->>'spend')::numeric
                       AND cum.total - (o.amount - o.refunded) < (c.params->>'spend')::numeric;
                END IF;
            WHEN 'custom' THEN
                -- The condition holds now; one occasion per period. Most customers
                -- it holds for were decided by an earlier run of the period: one
                -- pass over the campaign's outbox keys written since the period
                -- began (an index-only scan, hashed) leaves them out, where a
                -- probe per customer costs several times more. (The exact check
                -- against the whole outbox follows in _due_messages.)
                d := CASE c.params->>'occasion' WHEN 'daily' THEN interval '1 day' WHEN 'weekly' THEN interval '7 days'
                                                WHEN 'monthly' THEN interval '31 days' ELSE interval '100 years' END;
                RETURN QUERY EXECUTE format(
                    'SELECT %1$s, c.customer_id, %2$L, $1, jsonb_build_object(''condition'', %3$L)
                       FROM loyalty._journey_context($1) c
                      WHERE (%3$s)
                        AND loyalty._dedupe_key(%1$s, c.customer_id, %2$L) NOT IN
                            (SELECT ob.dedupe_key FROM loyalty.outbox ob
                              WHERE ob.campaign_id = %1$s AND ob.created_at >= pg_catalog.now() - $2)',
                    c.campaign_id,
                    CASE c.params->>'occasion'
                        WHEN 'once' THEN 'once'
                        WHEN 'daily' THEN 'day:' || to_char(p_as_of AT TIME ZONE 'UTC', 'YYYY-MM-DD')
                        WHEN 'weekly' THEN 'week:' || to_char(p_as_of AT TIME ZONE 'UTC', 'IYYY-"W"IW')
                        ELSE 'month:' || to_char(p_as_of AT TIME ZONE 'UTC', 'YYYY-MM') END,
                    c.condition)
                USING p_as_of, d;
            ELSE
                NULL;   -- the check trigger admits no other kind
            END CASE;
            EXIT WHEN NOT incr;
        END LOOP;
    END LOOP;
END
$$;

-- Usable contact for a channel: email needs a plausible address, sms and
-- whatsapp a phone number with at least 6 digits; push and other channels are
-- addressed by the customer key (the sender resolves the device).
CREATE FUNCTION loyalty._recipient(p_channel text, p_customer text, p_email text, p_phone text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_channel = 'email' THEN CASE WHEN p_email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' THEN p_email END
            WHEN p_channel IN ('sms', 'whatsapp')
                 THEN CASE WHEN length(regexp_replace(p_phone, '[^0-9]', '', 'g')) >= 6
                            AND p_phone ~ '^\+?[0-9][0-9 ()./-]*$' THEN p_phone END
            ELSE p_customer END;

-- Next allowed local time: as_of itself outside quiet hours, else the end of
-- the quiet hours in the customer's zone (local wall-clock time, so a DST
-- change in between moves the UTC instant, not the local hour).
CREATE FUNCTION loyalty._after_quiet_hours(p_as_of timestamptz, p_zone text, p_start time, p_end time)
RETURNS timestamptz
LANGUAGE sql STABLE
RETURN CASE WHEN p_start = p_end THEN p_as_of
            WHEN p_start < p_end AND (p_as_of AT TIME ZONE p_zone)::time >= p_start AND (p_as_of AT TIME ZONE p_zone)::time < p_end
                 THEN ((p_as_of AT TIME ZONE p_zone)::date + p_end) AT TIME ZONE p_zone
            WHEN p_start > p_end AND (p_as_of AT TIME ZONE p_zone)::time >= p_start
                 THEN ((p_as_of AT TIME ZONE p_zone)::date + 1 + p_end) AT TIME ZONE p_zone
            WHEN p_start > p_end AND (p_as_of AT TIME ZONE p_zone)::time < p_end
                 THEN ((p_as_of AT TIME ZONE p_zone)::date + p_end) AT TIME ZONE p_zone
            ELSE p_as_of END;

-- Every occasion not yet in the outbox with the policy's decision as of
-- as_of. Order of the checks: consent, contact, validity (expired), holdout,
-- cooldown, frequency cap (priority decides), quiet hours. enqueue_due records
-- every decision in the outbox, so each occasion is decided once: a
-- suppressed one (no consent, no contact, cooldown, capped) is not sent later
-- when the cap frees up or consent arrives, and the outbox says why it was not.
-- Only quiet hours delay a message (pending, due when they end).
-- p_changed: see loyalty._occasions (NULL: search every campaign's whole window).
CREATE FUNCTION loyalty._due_messages(as_of timestamptz, p_changed text[] DEFAULT NULL)
RETURNS TABLE (campaign_id integer, campaign text, kind text, channel text, customer_id text, occasion text,
               occasion_at timestamptz, dedupe_key text, decision text, reason text, due_at timestamptz,
               expires_at timestamptz, recipient text, template text, priority integer, payload jsonb)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'   -- as in _occasions: ranges and validity in 24-hour days
SET jit = off          -- compiling this plan costs far more than running it
SET work_mem = '256MB' -- one run sorts every candidate: in memory, not on disk
AS $$
WITH st AS (
    SELECT * FROM loyalty.journey_settings LIMIT 1
), f AS (
    SELECT cf.r, cf.alpha, cf.a, cf.b FROM loyalty.current_fits cf LIMIT 1
), occ AS (
    SELECT o.*, cp.name AS campaign, cp.kind, cp.channel, cp.template, cp.priority, cp.cooldown, cp.holdout_share,
           cp.valid_for, cp.params, cp.condition,
           loyalty._dedupe_key(o.campaign_id, o.customer_id, o.occasion) AS dedupe_key
      FROM loyalty._occasions(as_of, p_changed) o
      JOIN loyalty.campaigns cp ON cp.campaign_id = o.campaign_id
     WHERE o.occasion_at <= as_of
       AND o.occasion_at >= coalesce(cp.active_from, cp.activated_at)
       AND (cp.active_until IS NULL OR o.occasion_at < cp.active_until)
), fresh AS (
    -- Every lookup per candidate below is a LATERAL subquery with LIMIT 1 or
    -- OFFSET 0, which the planner cannot turn into a join: it probes a unique
    -- index once per candidate. Most runs have few candidates left after the
    -- outbox probe, and a hash join would read whole tables (profiles,
    -- consents, the ever-growing outbox) on every run instead.
    SELECT occ.* FROM occ
     WHERE NOT EXISTS (SELECT 1 FROM loyalty.outbox ob WHERE ob.dedupe_key = occ.dedupe_key)
), checked AS (
    -- each per-row expression once (OFFSET 0 keeps the inner query from being flattened)
    SELECT y.*,
           CASE WHEN y.all_granted = false THEN 'no_consent'
                WHEN coalesce(y.ch_granted, y.all_granted) IS NOT true THEN 'no_consent'
                WHEN y.rcpt IS NULL THEN 'no_contact'
                WHEN y.occasion_at < as_of - y.valid_for THEN 'expired'
                WHEN y.draw < y.holdout_share THEN 'held_out'
           END AS early,
           CASE WHEN y.all_granted = false THEN format('unsubscribed from all channels (%s)', coalesce(y.all_source, 'no source'))
                WHEN y.ch_granted = false THEN format('opted out of %s (%s)', y.channel, coalesce(y.ch_source, 'no source'))
                WHEN coalesce(y.ch_granted, y.all_granted) IS NOT true THEN format('no opt-in for %s', y.channel)
                WHEN y.rcpt IS NULL
                     THEN CASE WHEN y.channel = 'email' THEN 'no usable email address' ELSE 'no usable phone number' END
                WHEN y.occasion_at < as_of - y.valid_for
                     THEN format('occasion of %s missed for longer than valid_for (%s)', y.occasion_at, y.valid_for)
                WHEN y.draw < y.holdout_share
                     THEN format('holdout group (%s of customers): recorded, not sent', y.holdout_share)
           END AS early_reason
      FROM (SELECT x.*, p.name,
                   coalesce(p.time_zone, st.default_time_zone) AS zone,
                   loyalty._recipient(x.channel, x.customer_id, p.email, p.phone) AS rcpt,
                   loyalty._holdout_draw(x.campaign_id, x.customer_id) AS draw,
                   loyalty._after_quiet_hours(as_of, coalesce(p.time_zone, st.default_time_zone), st.quiet_start, st.quiet_end) AS after_quiet,
                   ga.granted AS all_granted, ga.source AS all_source, gc.granted AS ch_granted, gc.source AS ch_source
              FROM fresh x
             CROSS JOIN st
              LEFT JOIN LATERAL (SELECT p.name, p.email, p.phone, p.time_zone FROM loyalty.profiles p
                                  WHERE p.customer_id = x.customer_id LIMIT 1) p ON true
              LEFT JOIN LATERAL (SELECT ga.granted, ga.source FROM loyalty.consents ga
                                  WHERE ga.customer_id = x.customer_id AND ga.channel = 'all' LIMIT 1) ga ON true
              LEFT JOIN LATERAL (SELECT gc.granted, gc.source FROM loyalty.consents gc
                                  WHERE gc.customer_id = x.customer_id AND gc.channel = x.channel LIMIT 1) gc ON true
            OFFSET 0) y
), competing AS (
    -- eligible so far: cooldown, then the cap by priority; the outbox rows
    -- that count for both are read per candidate, by customer
    SELECT k.*,
           (k.cooldown > '0' AND (
               coalesce(rc.last_due > as_of - k.cooldown, false)
               OR row_number() OVER (PARTITION BY k.customer_id, k.campaign_id ORDER BY k.occasion_at, k.occasion) > 1)) AS cooling,
           rc.recent
      FROM checked k
     CROSS JOIN st
     CROSS JOIN LATERAL (SELECT count(*) FILTER (WHERE ob.due_at > as_of - st.cap_window) AS recent,
                                max(ob.due_at) FILTER (WHERE ob.campaign_id = k.campaign_id) AS last_due
                           FROM loyalty.outbox ob
                          WHERE ob.customer_id = k.customer_id
                            AND ob.due_at > as_of - greatest(st.cap_window, k.cooldown)
                            AND ob.status IN ('pending', 'sent', 'dead')) rc
     WHERE k.early IS NULL
), ranked AS (
    SELECT k.*, row_number() OVER (PARTITION BY k.customer_id, k.cooling
                                   ORDER BY k.priority, k.occasion_at, k.campaign_id, k.occasion) AS rank
      FROM competing k
), decided AS (
    SELECT k.campaign_id, k.customer_id, k.occasion, k.occasion_at, k.detail, k.campaign, k.kind, k.channel, k.template,
           k.priority, k.valid_for, k.params, k.condition, k.dedupe_key, k.name, k.zone, k.rcpt, k.after_quiet,
           CASE WHEN k.cooling THEN 'cooldown'
                WHEN k.recent + k.rank > st.cap_messages THEN 'capped'
                WHEN k.after_quiet > as_of THEN 'quiet_hours'
                ELSE 'send' END AS decision,
           CASE WHEN k.cooling THEN format('cooldown: at most one %s message per %s', k.campaign, k.cooldown)
                WHEN k.recent + k.rank > st.cap_messages
                     THEN format('frequency cap: %s messages per %s (%s already, %s of higher priority in this run)',
                                 st.cap_messages, st.cap_window, k.recent, k.rank - 1)
                WHEN k.after_quiet > as_of
                     THEN format('quiet hours (%s-%s in %s): due at %s local', st.quiet_start, st.quiet_end, k.zone,
                                 k.after_quiet AT TIME ZONE k.zone)
                ELSE 'consent, contact, cooldown, cap and quiet hours allow it' END AS reason
      FROM ranked k CROSS JOIN st
    UNION ALL
    SELECT k.campaign_id, k.customer_id, k.occasion, k.occasion_at, k.detail, k.campaign, k.kind, k.channel, k.template,
           k.priority, k.valid_for, k.params, k.condition, k.dedupe_key, k.name, k.zone, k.rcpt, k.after_quiet,
           k.early, k.early_reason
      FROM checked k
     WHERE k.early IS NOT NULL
)
SELECT d.campaign_id, d.campaign, d.kind, d.channel, d.customer_id, d.occasion, d.occasion_at, d.dedupe_key,
       d.decision, d.reason, w.due_at, w.due_at + d.valid_for, d.rcpt, d.template, d.priority,
       CASE WHEN NOT wr.message THEN jsonb_build_object('occasion', d.detail, 'reason', d.reason) ELSE
       jsonb_build_object(
           'customer_id', d.customer_id,
           'name', d.name,
           'points', coalesce(ac.balance, 0),
           'tier', ct.tier,
           'occasion', d.detail,
           'why', jsonb_build_object(
               'campaign', d.campaign, 'campaign_id', d.campaign_id, 'kind', d.kind,
               'rule', CASE WHEN d.condition IS NULL THEN d.params ELSE d.params || jsonb_build_object('condition', d.condition) END,
               'occasion', d.occasion, 'occasion_at', d.occasion_at, 'as_of', as_of,
               'scores', jsonb_build_object(
                   'r', rf.r_score, 'f', rf.f_score, 'm', rf.m_score, 'segment', rf.segment,
                   'p_alive', round(CASE WHEN cs.customer_id IS NOT NULL THEN
                                    loyalty._p_alive(cs.purchase_days, cs.first_order_at, cs.last_order_at, as_of,
                                                     f.r, f.alpha, f.a, f.b,
                                                     CASE WHEN f.r IS NULL THEN (SELECT loyalty._shop_gap()) END) END::numeric, 4))))
       END
  FROM decided d
 CROSS JOIN st
 CROSS JOIN f
 -- the decisions that make a message (sent, or recorded as not sent for the
 -- holdout group or as missed): their payload says what a template needs
 CROSS JOIN LATERAL (SELECT d.decision IN ('send', 'quiet_hours', 'held_out', 'expired') AS message) wr
 CROSS JOIN LATERAL (SELECT CASE d.decision
                                WHEN 'expired' THEN d.occasion_at
                                WHEN 'send' THEN as_of
                                WHEN 'capped' THEN NULL
                                WHEN 'cooldown' THEN NULL
                                WHEN 'no_consent' THEN NULL
                                WHEN 'no_contact' THEN NULL
                                ELSE d.after_quiet END AS due_at) w
  -- the payload's tables are read by key for those only
  LEFT JOIN LATERAL (SELECT a.balance FROM loyalty.accounts a
                      WHERE a.customer_id = d.customer_id AND wr.message LIMIT 1) ac ON true
  LEFT JOIN LATERAL (SELECT t.tier FROM loyalty.customer_tiers t
                      WHERE t.customer_id = d.customer_id AND wr.message LIMIT 1) ct ON true
  LEFT JOIN LATERAL (SELECT r.r_score, r.f_score, r.m_score, r.segment FROM loyalty.customer_rfm r
                      WHERE r.customer_id = d.customer_id AND wr.message LIMIT 1) rf ON true
  LEFT JOIN LATERAL (SELECT s.customer_id, s.purchase_days, s.first_order_at, s.last_order_at FROM loyalty.customer_state s
                      WHERE s.customer_id = d.customer_id AND wr.message LIMIT 1) cs ON true
$$;

CREATE FUNCTION loyalty.due_messages_at(as_of timestamptz)
RETURNS TABLE (campaign_id integer, campaign text, kind text, channel text, customer_id text, occasion text,
               occasion_at timestamptz, dedupe_key text, decision text, reason text, due_at timestamptz,
               expires_at timestamptz, recipient text, template text, priority integer, payload jsonb)
LANGUAGE sql STABLE
SECURITY DEFINER   -- read-only; lets loyalty_reader see decisions without the tables behind them
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM loyalty._due_messages(as_of)
$$;
COMMENT ON FUNCTION loyalty.due_messages_at(timestamptz) IS
'Every occasion of the active campaigns not yet in the outbox, as of a time, with the policy''s decision and reason';

CREATE VIEW loyalty.due_messages AS SELECT * FROM loyalty.due_messages_at(pg_catalog.now());
COMMENT ON VIEW loyalty.due_messages IS
'What loyalty.enqueue_due() would do now: each occasion not yet in the outbox with its decision (send and quiet_hours become pending messages; held_out, expired, no_consent, no_contact, cooldown and capped are recorded with that status and never sent) and why';
COMMENT ON COLUMN loyalty.due_messages.occasion IS 'the occasion key (first, order:<ref>, birthday:<year>, ...); with campaign and customer it is the dedupe key';
COMMENT ON COLUMN loyalty.due_messages.occasion_at IS 'when the occasion became due';
COMMENT ON COLUMN loyalty.due_messages.decision IS 'send, quiet_hours (pending, due at due_at), held_out, expired, capped, cooldown, no_consent, no_contact';
COMMENT ON COLUMN loyalty.due_messages.reason IS 'why, in words';
COMMENT ON COLUMN loyalty.due_messages.due_at IS 'when the message may go out (after quiet hours); NULL when it will not be sent';
COMMENT ON COLUMN loyalty.due_messages.recipient IS 'email address or phone number for the channel (the customer key for push and other channels)';
COMMENT ON COLUMN loyalty.due_messages.payload IS 'what the template needs (name, points, tier, occasion details) and why (campaign, rule, scores); for a suppressed occasion its details and the reason';

-- Write the due occasions into the outbox: send and quiet_hours as pending,
-- every other decision as a status of its own (never sent). Safe at any frequency and concurrently: runs
-- are serialised by a transaction-level advisory lock (74200, 5), so the cap
-- and cooldown counts of one run include everything earlier runs wrote; the
-- outbox's unique dedupe key (ON CONFLICT DO NOTHING) makes a rerun, or a
-- writer outside the lock, add nothing twice. Returns per active campaign the
-- rows written.
CREATE FUNCTION loyalty.enqueue_due(as_of timestamptz DEFAULT now())
RETURNS TABLE (campaign_id integer, campaign text, pending bigint, delayed bigint, held_out bigint, expired bigint,
               suppressed bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    changed text[];   -- NULL: search every window
BEGIN
    IF as_of IS NULL OR NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Omit it to enqueue what is due now.';
    END IF;
    PERFORM pg_advisory_xact_lock(74200, 5);
    -- the customers whose occasions may have changed since the last run (see
    -- loyalty._occasions); a run at an as_of before an earlier run's searches
    -- every window and leaves the log to the next run
    IF NOT EXISTS (SELECT 1 FROM loyalty.journey_runs r JOIN loyalty.campaigns cp ON cp.campaign_id = r.campaign_id
                    WHERE cp.active AND r.last_as_of > enqueue_due.as_of) THEN
        WITH seen AS (DELETE FROM loyalty.journey_changes RETURNING customer_id)
        SELECT coalesce(array_agg(DISTINCT seen.customer_id), '{}') INTO changed FROM seen;
    END IF;
    RETURN QUERY
    WITH ins AS (
        INSERT INTO loyalty.outbox AS ob (dedupe_key, campaign_id, customer_id, channel, recipient, template, payload,
                                          status, due_at, expires_at)
        SELECT d.dedupe_key, d.campaign_id, d.customer_id, d.channel, d.recipient, d.template, d.payload,
               CASE WHEN d.decision IN ('send', 'quiet_hours') THEN 'pending' ELSE d.decision END,
               coalesce(d.due_at, enqueue_due.as_of), d.expires_at
          FROM loyalty._due_messages(enqueue_due.as_of, changed) d
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING ob.campaign_id, ob.status, ob.due_at > enqueue_due.as_of AS later
    ), runs AS (
        INSERT INTO loyalty.journey_runs AS r (campaign_id, last_as_of, last_run_at, campaign_updated_at)
        SELECT cp.campaign_id, enqueue_due.as_of, now(), cp.updated_at FROM loyalty.campaigns cp WHERE cp.active
        ON CONFLICT ON CONSTRAINT journey_runs_pkey DO UPDATE
           SET last_as_of = greatest(r.last_as_of, excluded.last_as_of), last_run_at = excluded.last_run_at,
               -- a run at an earlier as_of searched only its own window: the
               -- campaign version the last as_of was searched with stands
               campaign_updated_at = CASE WHEN excluded.last_as_of >= r.last_as_of THEN excluded.campaign_updated_at
                                          ELSE r.campaign_updated_at END
        RETURNING r.campaign_id
    )
    SELECT cp.campaign_id, cp.name,
           count(i.status) FILTER (WHERE i.status = 'pending'),
           count(i.status) FILTER (WHERE i.status = 'pending' AND i.later),
           count(i.status) FILTER (WHERE i.status = 'held_out'),
           count(i.status) FILTER (WHERE i.status = 'expired'),
           count(i.status) FILTER (WHERE i.status IN ('no_consent', 'no_contact', 'cooldown', 'capped'))
      FROM loyalty.campaigns cp
      LEFT JOIN ins i ON i.campaign_id = cp.campaign_id
     WHERE cp.active OR i.campaign_id IS NOT NULL
     GROUP BY cp.campaign_id, cp.name
     ORDER BY cp.campaign_id;
END
$$;
COMMENT ON FUNCTION loyalty.enqueue_due(timestamptz) IS
'Write what is due as of as_of into loyalty.outbox (each occasion decided once, ever); returns per active campaign: pending (of which delayed by quiet hours), held_out, expired, suppressed (no consent, no contact, cooldown, capped)';

-- Data quality: customers (with orders) a channel cannot reach.
CREATE VIEW loyalty.contact_quality AS
SELECT ch.channel,
       count(*) AS customers,
       count(*) FILTER (WHERE p.customer_id IS NULL) AS no_profile,
       count(*) FILTER (WHERE p.customer_id IS NOT NULL
                          AND loyalty._recipient(ch.channel, s.customer_id, p.email, p.phone) IS NULL) AS unusable_contact,
       count(*) FILTER (WHERE loyalty._recipient(ch.channel, s.customer_id, p.email, p.phone) IS NOT NULL) AS reachable,
       count(*) FILTER (WHERE p.customer_id IS NOT NULL AND p.time_zone IS NULL) AS no_time_zone
  FROM (VALUES ('email'), ('sms'), ('whatsapp')) ch(channel)
 CROSS JOIN loyalty.customer_state s
  LEFT JOIN loyalty.profiles p ON p.customer_id = s.customer_id
 GROUP BY ch.channel;
COMMENT ON VIEW loyalty.contact_quality IS 'Per channel: customers with orders, and how many have no profile, no usable contact (missing or malformed), or can be reached';
COMMENT ON COLUMN loyalty.contact_quality.unusable_contact IS 'profile without a usable email (email) or phone number (sms, whatsapp)';
COMMENT ON COLUMN loyalty.contact_quality.no_time_zone IS 'profiles without a time zone (journey_settings.default_time_zone applies)';
-- Journeys report: what each campaign sent, and whether it made customers buy.
--
-- The measure. A campaign's holdout group (outbox status 'held_out') is chosen
-- by the same rule as the treated group, minus the message, so the difference
-- between the two groups is what the message did (the uplift). Each customer
-- counts once per group, from their first message of the campaign (the
-- occasion that put them in the group): they "ordered" if they placed a
-- counted order (loyalty.orders.counts) in the attribution window after it,
-- and their revenue is the net amount (amount - refunded) of those orders.
--   treated: status 'sent', the window starts at sent_at;
--   holdout: status 'held_out', the window starts when the message would have
--            gone out, greatest(due_at, created_at) (due_at may lie in quiet
--            hours' future or, after downtime, in the past);
--   window:  [start, start + attribution window), default 30 days
--            (loyalty.journey_report_settings.attribution_window).
-- Only customers whose window has fully elapsed count, so a campaign that
-- started last week does not look worse than it is: every figure below is
-- about "matured" customers, while the message counts cover every row.
-- The uplift comes with a 95% interval (normal approximation: two proportions
-- for the order share, Welch for revenue per customer); the verdict only
-- calls an effect when the interval excludes zero and both groups have at
-- least 30 matured customers.

CREATE TABLE loyalty.journey_report_settings (
    id                 boolean PRIMARY KEY DEFAULT true CHECK (id),
    attribution_window interval NOT NULL DEFAULT '30 days'
                       CHECK (attribution_window > '0' AND attribution_window <= '365 days'),
    min_group_size     integer NOT NULL DEFAULT 30 CHECK (min_group_size >= 2)
);
INSERT INTO loyalty.journey_report_settings DEFAULT VALUES;
COMMENT ON TABLE loyalty.journey_report_settings IS 'Settings of loyalty.campaign_performance (one row; the shop may UPDATE it)';
COMMENT ON COLUMN loyalty.journey_report_settings.attribution_window IS 'orders within this long after a message count for it (default 30 days)';
COMMENT ON COLUMN loyalty.journey_report_settings.min_group_size IS 'matured customers each group needs before the verdict calls an effect';

CREATE VIEW loyalty.campaign_performance AS
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
           count(*) FILTER (WHERE o.status IN ('no_consent', 'no_contact', 'cooldown', 'capped')) AS suppressed
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
COMMENT ON VIEW loyalty.campaign_performance IS
'Per campaign: messages by status, and for customers whose attribution window has elapsed the share who ordered and the revenue per customer, treated (sent) against holdout, with the uplift and its 95% interval';
COMMENT ON COLUMN loyalty.campaign_performance.campaign_id IS 'the campaign (loyalty.campaigns)';
COMMENT ON COLUMN loyalty.campaign_performance.name IS 'the campaign''s name';
COMMENT ON COLUMN loyalty.campaign_performance.kind IS 'the campaign''s kind (welcome, win_back, ...)';
COMMENT ON COLUMN loyalty.campaign_performance.channel IS 'the campaign''s channel';
COMMENT ON COLUMN loyalty.campaign_performance.messages IS 'outbox rows of the campaign, any status';
COMMENT ON COLUMN loyalty.campaign_performance.suppressed IS 'occasions the policy decided not to send: no consent, no usable contact, cooldown or frequency cap (statuses no_consent, no_contact, cooldown, capped)';
COMMENT ON COLUMN loyalty.campaign_performance.sent IS 'messages the sender delivered (status sent)';
COMMENT ON COLUMN loyalty.campaign_performance.held_out IS 'messages recorded for the holdout group and not sent (status held_out)';
COMMENT ON COLUMN loyalty.campaign_performance.failed IS 'messages the sender gave up on after the allowed attempts (status dead)';
COMMENT ON COLUMN loyalty.campaign_performance.pending IS 'messages waiting to be sent or being sent (status pending, also under a sender''s lease)';
COMMENT ON COLUMN loyalty.campaign_performance.expired IS 'occasions missed for longer than the campaign''s validity window (status expired)';
COMMENT ON COLUMN loyalty.campaign_performance.cancelled IS 'pending messages withdrawn because the customer opted out before they went out (status cancelled)';
COMMENT ON COLUMN loyalty.campaign_performance.window_days IS 'attribution window in days (loyalty.journey_report_settings)';
COMMENT ON COLUMN loyalty.campaign_performance.treated_customers IS 'customers sent a message whose window has elapsed (each once, from their first message)';
COMMENT ON COLUMN loyalty.campaign_performance.treated_ordered_share IS 'share of treated customers with a counted order in the window after sent_at';
COMMENT ON COLUMN loyalty.campaign_performance.treated_revenue_per_customer IS 'net order amount in the window per treated customer (customers without an order count as 0)';
COMMENT ON COLUMN loyalty.campaign_performance.holdout_customers IS 'held-out customers whose window has elapsed (each once, from their first held-out occasion)';
COMMENT ON COLUMN loyalty.campaign_performance.holdout_ordered_share IS 'share of held-out customers with a counted order in the window after the message would have gone out';
COMMENT ON COLUMN loyalty.campaign_performance.holdout_revenue_per_customer IS 'net order amount in the window per held-out customer';
COMMENT ON COLUMN loyalty.campaign_performance.ordered_share_uplift IS 'treated_ordered_share - holdout_ordered_share: the share of customers the message made order';
COMMENT ON COLUMN loyalty.campaign_performance.ordered_share_uplift_low IS 'lower end of the 95% interval of ordered_share_uplift';
COMMENT ON COLUMN loyalty.campaign_performance.ordered_share_uplift_high IS 'upper end of the 95% interval of ordered_share_uplift';
COMMENT ON COLUMN loyalty.campaign_performance.revenue_uplift_per_customer IS 'treated_revenue_per_customer - holdout_revenue_per_customer: revenue the message brought per customer messaged';
COMMENT ON COLUMN loyalty.campaign_performance.revenue_uplift_low IS 'lower end of the 95% interval of revenue_uplift_per_customer';
COMMENT ON COLUMN loyalty.campaign_performance.revenue_uplift_high IS 'upper end of the 95% interval of revenue_uplift_per_customer';
COMMENT ON COLUMN loyalty.campaign_performance.verdict IS
'nothing sent yet, no holdout group, too early (a group below min_group_size matured customers), more customers ordered / fewer customers ordered (the interval excludes zero), no clear difference';

SELECT pg_catalog.pg_extension_config_dump('loyalty.journey_report_settings', '');
-- Scheduling: loyalty.schedule() installs (or updates) the pg_cron jobs that keep
-- loyalty running, loyalty.unschedule() removes them. pg_cron stays optional:
-- nothing here is needed to install or use loyalty.
--
-- pg_cron keeps its jobs in the one database named by cron.database_name and
-- runs each job in the database stored with it. When that is this database,
-- the jobs are made with cron.schedule (an upsert by job name and user, so a
-- rerun updates them in place). When it is another database, the jobs are
-- made there with cron.schedule_in_database(..., this database), through a
-- dblink connection if dblink is installed here; otherwise dry_run => true
-- returns the statements to run there by hand. Jobs made from another
-- database are named 'loyalty-<job>@<database>', so several shop databases
-- can share one pg_cron database.

-- pg_cron's database, or an error saying how to get pg_cron
CREATE FUNCTION loyalty._cron_database()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    db text := pg_catalog.current_setting('cron.database_name', true);
BEGIN
    IF db IS NULL OR db OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'pg_cron is not installed'
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Install postgresql-15-cron, add pg_cron to shared_preload_libraries, set cron.database_name, restart, and run CREATE EXTENSION pg_cron in that database. Without pg_cron, call the jobs'' functions yourself.';
    END IF;
    IF db OPERATOR(pg_catalog.=) pg_catalog.current_database()
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is loaded but not installed in this database'
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Run CREATE EXTENSION pg_cron; in this database (cron.database_name).';
    END IF;
    RETURN db;
END
$$;

-- The jobs: name, schedule (NULL: not wanted), command.
CREATE FUNCTION loyalty._cron_jobs(enqueue text, notify text, expire text, tiers text, refresh text)
RETURNS TABLE (job text, schedule text, command text)
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('loyalty-enqueue', enqueue, 'SELECT loyalty.enqueue_due()'),
           ('loyalty-notify',  notify,  'SELECT loyalty.notify_due()'),
           ('loyalty-expire',  expire,  'SELECT loyalty.expire_points()'),
           ('loyalty-tiers',   tiers,   'SELECT loyalty.recompute_tiers()'),
           ('loyalty-refresh', refresh, 'SELECT loyalty.refresh()')
$$;

-- Run one statement returning a bigint in pg_cron's database: here, or through dblink.
CREATE FUNCTION loyalty._cron_exec(stmt text, in_cron_db boolean, cron_db text, cron_connection text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dblink_schema name;
    conn text := cron_connection;
    sockdir text;
    result bigint;
BEGIN
    IF in_cron_db THEN
        EXECUTE stmt INTO result;
        RETURN result;
    END IF;
    SELECT n.nspname INTO dblink_schema
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
     WHERE e.extname OPERATOR(pg_catalog.=) 'dblink';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pg_cron lives in database "%", and dblink is not installed here to reach it', cron_db
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = pg_catalog.format('Run CREATE EXTENSION dblink; here, or run the statements of SELECT statement FROM loyalty.schedule(dry_run => true) in database %s.', cron_db);
    END IF;
    IF conn IS NULL THEN
        -- this server, as the current user: the first socket directory, else TCP on localhost
        sockdir := pg_catalog.btrim(pg_catalog.split_part(pg_catalog.current_setting('unix_socket_directories'), ',', 1));
        conn := pg_catalog.format('dbname=%s port=%s host=%s user=%s',
                                  loyalty._conninfo_quote(cron_db), pg_catalog.current_setting('port'),
                                  loyalty._conninfo_quote(CASE WHEN sockdir OPERATOR(pg_catalog.=) '' THEN 'localhost' ELSE sockdir END),
                                  loyalty._conninfo_quote(current_user));
    END IF;
    EXECUTE pg_catalog.format('SELECT r.v FROM %I.dblink($1, $2) AS r(v bigint)', dblink_schema)
       INTO result USING conn, stmt;
    RETURN result;
END
$$;

-- a value for a libpq connection string: single-quoted, \ and ' escaped
CREATE FUNCTION loyalty._conninfo_quote(v text)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '''' OPERATOR(pg_catalog.||) pg_catalog.replace(pg_catalog.replace(v, '\', '\\'), '''', '\''')
                OPERATOR(pg_catalog.||) ''''
$$;

CREATE FUNCTION loyalty.schedule(
    enqueue text DEFAULT '* * * * *',
    notify  text DEFAULT '* * * * *',
    expire  text DEFAULT '15 3 * * *',
    tiers   text DEFAULT '30 3 * * *',
    refresh text DEFAULT '5 * * * *',
    cron_connection text DEFAULT NULL,
    dry_run boolean DEFAULT false)
RETURNS TABLE (job_name text, schedule text, command text, jobid bigint, action text, statement text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    cron_db text := loyalty._cron_database();
    here text := pg_catalog.current_database();
    in_cron_db boolean := cron_db OPERATOR(pg_catalog.=) here;
    j record;
BEGIN
    FOR j IN SELECT * FROM loyalty._cron_jobs(enqueue, notify, expire, tiers, refresh) LOOP
        IF j.schedule IS NOT NULL AND pg_catalog.btrim(j.schedule) OPERATOR(pg_catalog.=) '' THEN
            RAISE EXCEPTION 'the schedule of % must not be empty', j.job
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Pass a cron expression such as ''* * * * *'', or NULL to leave that job out (and remove it).';
        END IF;
        job_name := CASE WHEN in_cron_db THEN j.job ELSE j.job OPERATOR(pg_catalog.||) '@' OPERATOR(pg_catalog.||) here END;
        schedule := j.schedule;
        command := j.command;
        IF j.schedule IS NOT NULL THEN
            statement := CASE WHEN in_cron_db
                              THEN pg_catalog.format('SELECT cron.schedule(%L, %L, %L)', job_name, j.schedule, j.command)
                              ELSE pg_catalog.format('SELECT cron.schedule_in_database(%L, %L, %L, %L)', job_name, j.schedule, j.command, here) END;
            action := 'schedule';
        ELSE
            statement := pg_catalog.format('SELECT count(cron.unschedule(jobid)) FROM cron.job WHERE jobname = %L AND username = current_user', job_name);
            action := 'unschedule';
        END IF;
        jobid := NULL;
        IF NOT dry_run THEN
            jobid := loyalty._cron_exec(statement, in_cron_db, cron_db, cron_connection);
            IF j.schedule IS NULL THEN
                -- the statement counts the jobs it removed; there is no job id any more
                action := CASE WHEN jobid OPERATOR(pg_catalog.>) 0 THEN 'unscheduled' ELSE 'absent' END;
                jobid := NULL;
            ELSE
                action := 'scheduled';
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION loyalty.schedule(text, text, text, text, text, text, boolean) IS
'Install or update the pg_cron jobs (enqueue, notify, expire, tiers, refresh; a NULL schedule leaves a job out), in this database or in pg_cron''s through dblink; dry_run => true only returns the statements';

CREATE FUNCTION loyalty.unschedule(cron_connection text DEFAULT NULL, dry_run boolean DEFAULT false)
RETURNS TABLE (job_name text, action text, statement text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    RETURN QUERY
    SELECT s.job_name, CASE s.action WHEN 'unschedule' THEN 'planned' ELSE s.action END, s.statement
      FROM loyalty.schedule(NULL, NULL, NULL, NULL, NULL, cron_connection, dry_run) s;
END
$$;
COMMENT ON FUNCTION loyalty.unschedule(text, boolean) IS
'Remove loyalty''s pg_cron jobs (those of this database); dry_run => true only returns the statements';
-- Privileges. Nothing is executable by PUBLIC; the roles get what their job needs.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA loyalty FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA loyalty FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA loyalty FROM PUBLIC;

GRANT ALL ON ALL TABLES IN SCHEMA loyalty TO loyalty_admin;
GRANT ALL ON ALL SEQUENCES IN SCHEMA loyalty TO loyalty_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA loyalty TO loyalty_admin;
GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA loyalty TO loyalty_admin;

-- the shop's application
GRANT EXECUTE ON FUNCTION loyalty.record_order(text, text, numeric, timestamptz),
                          loyalty.record_refund(text, numeric, text) TO loyalty_app;
GRANT SELECT ON loyalty.customer_segments, loyalty.segment_summary TO loyalty_app;

-- BI tools: the documented views (and the functions they call)
GRANT SELECT ON loyalty.customer_segments, loyalty.segment_summary, loyalty.rejected_summary,
                loyalty.customer_scores, loyalty.model_validation, loyalty.model_fits, loyalty.current_fits
   TO loyalty_reader;
GRANT EXECUTE ON FUNCTION loyalty.validate_models(integer) TO loyalty_reader;
GRANT SELECT ON loyalty.customer_scores TO loyalty_app;

-- journeys: the app keeps profiles and consent; BI reads the journey views
GRANT EXECUTE ON FUNCTION loyalty.upsert_customer(text, text, text, text, date, text),
                          loyalty.set_consent(text, text, boolean, text) TO loyalty_app;
GRANT SELECT ON loyalty.due_messages, loyalty.contact_quality, loyalty.journey_context, loyalty.campaigns,
                loyalty.consents, loyalty.consent_history, loyalty.journey_settings TO loyalty_reader;
GRANT EXECUTE ON FUNCTION loyalty.due_messages_at(timestamptz), loyalty.journey_context_at(timestamptz),
                          loyalty._recipient(text, text, text, text) TO loyalty_reader;
GRANT SELECT ON loyalty.campaign_performance, loyalty.journey_report_settings TO loyalty_reader;

-- Tables holding the shop's data are kept by pg_dump.
SELECT pg_catalog.pg_extension_config_dump('loyalty.sources', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.sources_source_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.events', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.orders', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.refunds', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.rejected_rows', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.rejected_rows_rejected_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.rfm_config', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.segment_rules', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.model_settings', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.model_fits', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_sources', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.profiles', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.consent_history', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.consents', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.journey_settings', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.campaigns', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.campaigns_campaign_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.journey_runs', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.journey_changes', '');

-- the shop's sender: the sender API only
GRANT EXECUTE ON FUNCTION loyalty.claim_messages(integer, interval),
                          loyalty.ack_message(bigint, uuid),
                          loyalty.ack_messages(bigint[], uuid),
                          loyalty.fail_message(bigint, uuid, text, interval) TO loyalty_sender;
GRANT SELECT ON loyalty.outbox_summary, loyalty.dead_letters TO loyalty_reader;
SELECT pg_catalog.pg_extension_config_dump('loyalty.outbox_settings', '');
-- derived, but dumped too, so that a restored database works at once
SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_state', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_rfm', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.rfm_bounds', '');

-- Restore. pg_dump keeps the settings tables above whole, but by the time
-- pg_restore copies their rows back, CREATE EXTENSION has already installed
-- the defaults (one settings row, the example campaigns, the default rules)
-- and the copy would fail on their keys, losing the shop's settings. So a
-- COPY into one of these tables made by a restore (pg_dump's scripts run with
-- check_function_bodies off) first empties it: the dump holds the whole table.
CREATE FUNCTION loyalty._restore_replaces()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF loyalty._restoring() THEN
        EXECUTE pg_catalog.format('DELETE FROM %I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION loyalty._restore_replaces() FROM PUBLIC;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['rfm_config', 'segment_rules', 'model_settings', 'rewards_settings', 'earn_rules',
                             'outbox_settings', 'journey_settings', 'journey_report_settings', 'campaigns']
    LOOP
        EXECUTE pg_catalog.format('CREATE TRIGGER restore_replaces BEFORE INSERT ON loyalty.%I '
                                  'FOR EACH STATEMENT EXECUTE FUNCTION loyalty._restore_replaces()', t);
    END LOOP;
END
$$;
