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
    delivered_at_column text,
    UNIQUE (relation_schema, relation_name)
);
COMMENT ON TABLE loyalty.sources IS 'Shop tables attached with loyalty.track_orders()';
COMMENT ON COLUMN loyalty.sources.delivered_at_column IS 'delivery time column (loyalty.track_deliveries): order points become available a return window after it';
SELECT pg_catalog.pg_extension_config_dump('loyalty.sources', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.sources_source_id_seq', '');

-- Shop customer tables attached with loyalty.track_customers() (their rows
-- become loyalty.profiles); ids from the same sequence as loyalty.sources, so
-- a rejected row names either.
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
SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_sources', '');

-- Changes captured by the triggers (and backfill), applied in capture order by
-- loyalty.apply_events(). Each event is a snapshot of the order row, not a
-- delta, so applying one twice changes nothing. No index on purpose: the C
-- trigger writes rows straight into the heap (see src/intake.c); the queue is
-- short, and the drain sorts it.
CREATE TABLE loyalty.events (
    event_id    bigserial,
    source_id   integer NOT NULL,
    op          "char" NOT NULL CHECK (op IN ('u', 'd', 'k')),
    order_ref   text,
    customer_id text,
    amount      numeric,
    ordered_at  timestamptz,
    status      text,
    problem     text,
    captured_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    fields      jsonb
);
COMMENT ON TABLE loyalty.events IS 'Captured order changes not yet applied (the worker or loyalty.refresh() drains it)';
COMMENT ON COLUMN loyalty.events.op IS 'u: the row as it is now; d: the row was deleted; k: a customer row left its key (key changed, table truncated): the profile goes, nothing is erased';
COMMENT ON COLUMN loyalty.events.fields IS 'the other tracked columns by field name (an order''s delivered_at, paid_at, dispatched_at, promised_at or promised_on, dispatch_by; a customer''s name, email, phone, birthday, time_zone; a carrier event''s at, tracking_code, detail); a field absent is not tracked';
SELECT pg_catalog.pg_extension_config_dump('loyalty.events', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.events_event_id_seq', '');

CREATE TYPE loyalty.order_change AS (
    source_id   integer,
    op          "char",
    order_ref   text,
    customer_id text,
    amount      numeric,
    ordered_at  timestamptz,
    status      text,
    problem     text,
    fields      jsonb,
    captured_at timestamptz
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
    old_customer text,
    fields      jsonb
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
-- orders by time: the journeys' occasion ranges (71_journeys_due.sql)
CREATE INDEX orders_ordered_at_idx ON loyalty.orders (ordered_at);
-- the few orders that do not count (cancelled, deleted): scan_operations
-- checks the orders of its open issues against them, not the whole table
CREATE INDEX orders_not_counted_idx ON loyalty.orders (order_ref) WHERE NOT counted;
COMMENT ON TABLE loyalty.orders IS 'Every order loyalty knows, from tracked tables (source_id) or the app (source_id NULL)';
COMMENT ON COLUMN loyalty.orders.counted IS 'status is in the counted set and the row still exists in the shop';
COMMENT ON COLUMN loyalty.orders.counts IS 'counted and not fully refunded: contributes to customer state';
SELECT pg_catalog.pg_extension_config_dump('loyalty.orders', '');

CREATE TABLE loyalty.refunds (
    idempotency_key text PRIMARY KEY,
    order_ref       text NOT NULL,
    amount          numeric NOT NULL CHECK (amount > 0),
    recorded_at     timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX refunds_order_idx ON loyalty.refunds (order_ref);
COMMENT ON TABLE loyalty.refunds IS 'Refunds recorded with loyalty.record_refund()';
SELECT pg_catalog.pg_extension_config_dump('loyalty.refunds', '');

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
SELECT pg_catalog.pg_extension_config_dump('loyalty.rejected_rows', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.rejected_rows_rejected_id_seq', '');

-- rows of attached order and customer tables alike
CREATE VIEW loyalty.rejected_summary AS
SELECT s.source_id, s.source, r.reason,
       count(*) AS rows, min(r.rejected_at) AS first_rejected_at, max(r.rejected_at) AS last_rejected_at
  FROM loyalty.rejected_rows r
  JOIN (SELECT so.source_id, so.relation_schema || '.' || so.relation_name AS source FROM loyalty.sources so
        UNION ALL
        SELECT cs.source_id, cs.relation_schema || '.' || cs.relation_name FROM loyalty.customer_sources cs) s
    ON s.source_id = r.source_id
 WHERE r.resolved_at IS NULL
 GROUP BY s.source_id, s.source, r.reason;
COMMENT ON VIEW loyalty.rejected_summary IS 'Open rejected shop rows per source and reason';
COMMENT ON COLUMN loyalty.rejected_summary.source_id IS 'the attached table (loyalty.sources or loyalty.customer_sources; they share ids)';
COMMENT ON COLUMN loyalty.rejected_summary.source IS 'schema.table of the attached table';
COMMENT ON COLUMN loyalty.rejected_summary.reason IS 'why loyalty could not use the rows (e.g. customer is null, amount is negative)';
COMMENT ON COLUMN loyalty.rejected_summary.first_rejected_at IS 'when the oldest of these rows was rejected';
COMMENT ON COLUMN loyalty.rejected_summary.last_rejected_at IS 'when the newest of these rows was rejected';
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
                WHEN loyalty._key_problem(c.order_ref) IS NOT NULL THEN 'order id ' || loyalty._key_problem(c.order_ref)
                WHEN c.customer_id IS NULL THEN 'customer is null'
                WHEN loyalty._key_problem(c.customer_id) IS NOT NULL THEN 'customer ' || loyalty._key_problem(c.customer_id)
                WHEN c.amount IS NULL THEN 'amount is null'
                WHEN loyalty._amount_problem(c.amount) IS NOT NULL THEN 'amount ' || loyalty._amount_problem(c.amount)
                WHEN c.ordered_at IS NULL THEN 'order time is null'
                WHEN loyalty._time_problem(c.ordered_at, coalesce(c.captured_at, now())) IS NOT NULL
                     THEN 'order time ' || loyalty._time_problem(c.ordered_at, coalesce(c.captured_at, now()))
                WHEN loyalty._time_problem((c.fields ->> 'delivered_at')::timestamptz, NULL) IS NOT NULL
                     THEN 'delivery time ' || loyalty._time_problem((c.fields ->> 'delivered_at')::timestamptz, NULL)
                WHEN c.fields IS NOT NULL AND loyalty._fulfilment_problem(c.fields) IS NOT NULL
                     THEN loyalty._fulfilment_problem(c.fields)
                WHEN o.order_ref IS NOT NULL AND o.source_id IS DISTINCT FROM c.source_id
                     THEN 'order id already recorded by another source'
           END,
           o.customer_id, c.fields)::loyalty.order_change_checked)
      INTO checked
      FROM (SELECT DISTINCT ON (ch.order_ref) ch.*
              FROM unnest(p_changes) WITH ORDINALITY AS ch(source_id, op, order_ref, customer_id, amount, ordered_at, status, problem, fields, captured_at, ord)
             ORDER BY ch.order_ref, ch.ord DESC) c
      JOIN loyalty.sources s ON s.source_id = c.source_id
      LEFT JOIN loyalty.orders o ON o.order_ref = c.order_ref;

    -- rejections: keep the newest reason per open row
    PERFORM loyalty._quarantine(source_id, order_ref, reason,
                                jsonb_build_object('customer_id', customer_id, 'amount', amount::text,
                                                   'ordered_at', ordered_at, 'status', status) || coalesce(fields, '{}'))
       FROM unnest(checked) WHERE reason IS NOT NULL;

    -- valid upserts; an existing row of another source is never touched
    WITH up AS (
        INSERT INTO loyalty.orders AS o (order_ref, source_id, customer_id, amount, ordered_at, status, counted)
        SELECT order_ref, source_id, customer_id, amount, ordered_at, status, counted
          FROM unnest(checked) WHERE op = 'u' AND reason IS NULL
        ON CONFLICT (order_ref) DO UPDATE
           -- an erased customer's orders keep their pseudonym when the shop's
           -- row changes later and still carries the erased key (a row moved
           -- to another customer follows it)
           SET customer_id = CASE WHEN o.customer_id LIKE 'erased:%'
                                       AND EXISTS (SELECT 1 FROM loyalty.erasures e
                                                    WHERE e.pseudonym = o.customer_id
                                                      AND e.customer_hash = loyalty._contact_hash('customer', excluded.customer_id))
                                  THEN o.customer_id ELSE excluded.customer_id END,
               amount = excluded.amount, ordered_at = excluded.ordered_at,
               status = excluded.status, counted = excluded.counted, updated_at = now()
         WHERE o.source_id IS NOT DISTINCT FROM excluded.source_id
           AND (o.customer_id, o.amount, o.ordered_at, o.status, o.counted)
               IS DISTINCT FROM (CASE WHEN o.customer_id LIKE 'erased:%'
                                       AND EXISTS (SELECT 1 FROM loyalty.erasures e
                                                    WHERE e.pseudonym = o.customer_id
                                                      AND e.customer_hash = loyalty._contact_hash('customer', excluded.customer_id))
                                  THEN o.customer_id ELSE excluded.customer_id END,
                                 excluded.amount, excluded.ordered_at, excluded.status, excluded.counted)
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

    -- the rest follows from the orders (the pipeline, 74_pipeline.sql)
    PERFORM loyalty._orders_applied(affected, checked, p_changes, p_enqueue);
    RETURN cardinality(p_changes);
END
$$;

-- Keep a row loyalty cannot use in rejected_rows (newest reason per open row).
-- The key is cut to the index's limit: a poison key must not fail the quarantine.
-- A long value is cut to 1,000 characters, a JSON object or array (a carrier
-- event's detail) as its text.
CREATE FUNCTION loyalty._quarantine(p_source_id integer, p_key text, p_reason text, p_row jsonb)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO loyalty.rejected_rows (source_id, order_ref, reason, row_data)
    VALUES (p_source_id, left(p_key, 255), left(p_reason, 1000),
            (SELECT jsonb_object_agg(k, CASE WHEN jsonb_typeof(v) = 'string' AND length(v #>> '{}') > 1000
                                             THEN to_jsonb(left(v #>> '{}', 1000) || '...')
                                             WHEN jsonb_typeof(v) IN ('object', 'array') AND length(v::text) > 1000
                                             THEN to_jsonb(left(v::text, 1000) || '...') ELSE v END)
               FROM jsonb_each(p_row) AS e(k, v)))
    ON CONFLICT (source_id, order_ref) WHERE resolved_at IS NULL
    DO UPDATE SET reason = excluded.reason, row_data = excluded.row_data, rejected_at = excluded.rejected_at
$$;

-- Apply a batch of order changes; a batch that fails is split in halves until
-- the failing change is alone, which is quarantined: one poison row never
-- stops the queue. Each try is a subtransaction (rolled back on failure).
CREATE FUNCTION loyalty._apply_or_split(p_changes loyalty.order_change[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := coalesce(cardinality(p_changes), 0);
    half integer;
    msg text;
    c loyalty.order_change;
BEGIN
    IF n = 0 THEN
        RETURN 0;
    END IF;
    BEGIN
        RETURN loyalty._apply_changes(p_changes, true);
    EXCEPTION WHEN serialization_failure OR deadlock_detected OR lock_not_available THEN
        RAISE;      -- not the row's fault: the whole drain is retried
    WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
    END;
    IF n = 1 THEN
        c := p_changes[1];
        PERFORM loyalty._quarantine(c.source_id, c.order_ref, 'could not be applied: ' || msg,
                                    jsonb_build_object('customer_id', left(c.customer_id, 1000), 'amount', left(c.amount::text, 1000),
                                                       'ordered_at', c.ordered_at, 'status', c.status) || coalesce(c.fields, '{}'));
        RAISE WARNING 'change of order % quarantined in loyalty.rejected_rows: %', left(c.order_ref, 255), msg
              USING HINT = 'Fix the shop''s row, then run loyalty.replay_rejected().';
        RETURN 1;
    END IF;
    half := n / 2;
    RETURN loyalty._apply_or_split(p_changes[1:half]) + loyalty._apply_or_split(p_changes[half + 1:n]);
END
$$;

-- The capture trigger of every tracked table, and the checks of what loyalty
-- accepts (src/intake.c, src/capture.c). The trigger never raises for a bad
-- row: problems travel with the event and end in rejected_rows. No SECURITY
-- DEFINER or SET clause on purpose (per-row cost); see src/intake.c.
CREATE FUNCTION loyalty.capture_row()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'capture_row';
COMMENT ON FUNCTION loyalty.capture_row() IS 'Trigger attached by loyalty.track_orders(), loyalty.track_customers() and loyalty.track_shipment_events(); do not call directly';

CREATE FUNCTION loyalty._capture_type_ok(typ regtype, class text)
RETURNS boolean
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'capture_type_ok';

CREATE FUNCTION loyalty._key_problem(value text)
RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_key_problem';

-- the same rule with another length limit (the ledger's idempotency keys)
CREATE FUNCTION loyalty._key_problem(value text, max_chars integer)
RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_key_problem';

-- keys under the prefix 'loyalty:' are loyalty's own (order points, expiry,
-- its staff's messages); the rule is src/capture.c's, as the ledger's C path
CREATE FUNCTION loyalty._key_reserved(value text)
RETURNS boolean
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_key_reserved';

CREATE FUNCTION loyalty.check_key(value text, what text DEFAULT 'key')
RETURNS text
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_check_key';
COMMENT ON FUNCTION loyalty.check_key(text, text) IS
'Return the key, or fail (22004 empty, 22023 too long or with control characters or Unicode spaces): the one rule for customer keys, order ids, idempotency keys and channel names';

CREATE FUNCTION loyalty._amount_problem(value numeric)
RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_amount_problem';

-- reference NULL: no future check (loyalty.future_tolerance)
CREATE FUNCTION loyalty._time_problem(value timestamptz, reference timestamptz)
RETURNS text
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_time_problem';

-- A shop value as text through its type's output function, never a cast.
CREATE FUNCTION loyalty._as_text(value anyelement)
RETURNS text
LANGUAGE c STABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_as_text';

-- Check a tracked column's type at track_* time (a domain, enum or type of the
-- shop's for a key, amount or time column is refused), returning it.
CREATE FUNCTION loyalty._capture_column(rel regclass, p_role text, p_column text, p_class text)
RETURNS regtype
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t regtype;
BEGIN
    t := loyalty._column_type(rel, p_role, p_column);   -- exists, or a clear error
    SELECT a.atttypid::regtype INTO t FROM pg_attribute a
     WHERE a.attrelid = rel AND a.attname = p_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT loyalty._capture_type_ok(t, p_class) THEN
        RAISE EXCEPTION '% "%" is of type %, which loyalty does not read', p_role, p_column, t
              USING ERRCODE = 'datatype_mismatch',
                    HINT = CASE p_class
                           WHEN 'key' THEN 'A key column must be text, varchar, char, smallint, integer, bigint or uuid (not a domain or enum).'
                           WHEN 'amount' THEN 'An amount column must be numeric, an integer type or a float type (not a domain).'
                           WHEN 'detail' THEN 'A detail column must be jsonb, text, varchar or char (not a domain).'
                           ELSE 'A time column must be timestamptz, timestamp or date (not a domain).' END;
    END IF;
    RETURN t;
END
$$;

-- (Re)create the capture trigger of a tracked orders table from its sources row.
CREATE FUNCTION loyalty._attach_capture(p_source_id integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.sources;
BEGIN
    SELECT * INTO STRICT s FROM loyalty.sources WHERE source_id = p_source_id;
    -- arguments: source, kind, then src/intake.c's OrderFields in order
    EXECUTE format('CREATE OR REPLACE TRIGGER loyalty_capture_orders AFTER INSERT OR UPDATE OR DELETE ON %I.%I '
                   'FOR EACH ROW EXECUTE FUNCTION loyalty.capture_row(%L, ''o'', %L, %L, %L, %L, %L, %L, %L, %L, %L, %L)',
                   s.relation_schema, s.relation_name, s.source_id, s.order_id_column, s.customer_column,
                   s.amount_column, s.ordered_at_column, coalesce(s.status_column, ''),
                   coalesce(s.delivered_at_column, ''), coalesce(s.paid_at_column, ''),
                   coalesce(s.dispatched_at_column, ''), coalesce(s.promised_at_column, ''),
                   coalesce(s.dispatch_by_column, ''));
    EXECUTE format('CREATE OR REPLACE TRIGGER loyalty_capture_truncate AFTER TRUNCATE ON %I.%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION loyalty.capture_row(%L, ''o'')',
                   s.relation_schema, s.relation_name, s.source_id);
END
$$;

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
-- Before SQL reads a tracked table's rows (backfill, replay): lock it against
-- ALTER TABLE and check its tracked columns are still of types loyalty reads
-- (the capture trigger checks every row; this is the same rule for SQL).
-- Returns the order id column's type, for keyset comparisons.
CREATE FUNCTION loyalty._source_read_check(s loyalty.sources)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass := to_regclass(format('%I.%I', s.relation_schema, s.relation_name));
    id_type text;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'tracked table %.% does not exist', s.relation_schema, s.relation_name
              USING ERRCODE = 'undefined_table', HINT = 'Attach the table again with loyalty.track_orders().';
    END IF;
    EXECUTE format('LOCK TABLE %s IN ACCESS SHARE MODE', rel);
    PERFORM loyalty._capture_column(rel, 'order_id_column', s.order_id_column, 'key');
    PERFORM loyalty._capture_column(rel, 'customer_column', s.customer_column, 'key');
    PERFORM loyalty._capture_column(rel, 'amount_column', s.amount_column, 'amount');
    PERFORM loyalty._capture_column(rel, 'ordered_at_column', s.ordered_at_column, 'time');
    IF s.status_column IS NOT NULL THEN
        PERFORM loyalty._capture_column(rel, 'status_column', s.status_column, 'label');
    END IF;
    IF s.delivered_at_column IS NOT NULL THEN
        PERFORM loyalty._capture_column(rel, 'delivered_at_column', s.delivered_at_column, 'time');
    END IF;
    IF s.paid_at_column IS NOT NULL THEN
        PERFORM loyalty._capture_column(rel, 'paid_at_column', s.paid_at_column, 'time');
    END IF;
    IF s.dispatched_at_column IS NOT NULL THEN
        PERFORM loyalty._capture_column(rel, 'dispatched_at_column', s.dispatched_at_column, 'time');
    END IF;
    IF s.promised_at_column IS NOT NULL THEN
        PERFORM loyalty._capture_column(rel, 'promised_at_column', s.promised_at_column, 'time');
    END IF;
    IF s.dispatch_by_column IS NOT NULL THEN
        PERFORM loyalty._capture_column(rel, 'dispatch_by_column', s.dispatch_by_column, 'time');
    END IF;
    SELECT format_type(a.atttypid, a.atttypmod) INTO id_type FROM pg_attribute a
     WHERE a.attrelid = rel AND a.attname = s.order_id_column;
    RETURN id_type;
END
$$;

-- A tracked time column (timestamptz, timestamp or date, checked) as an SQL
-- expression of type timestamptz, for backfill and replay: a value outside
-- timestamptz's range (a date after 294276 AD; ::timestamptz would raise and
-- fail the whole backfill or replay) becomes a time the bounds refuse (year
-- 100000 or 4000 BC), so its row is quarantined as the trigger does.
CREATE FUNCTION loyalty._time_sql(p_column text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('CASE WHEN %1$I IS NULL OR NOT isfinite(%1$I) '
                  'OR %1$I BETWEEN ''4000-01-01 BC''::date AND ''100000-01-01''::date THEN %1$I::timestamptz '
                  'WHEN %1$I < ''4000-01-01 BC''::date THEN ''4000-01-01 BC''::timestamptz '
                  'ELSE ''100000-01-01''::timestamptz END', p_column)
$$;

-- The events.fields of a tracked orders row as an SQL expression over the
-- table's columns: what the capture trigger writes (src/intake.c's
-- OrderFields), read the same way, for backfill and replay. Only built-in
-- conversions of the built-in time types loyalty._source_read_check
-- confirmed; a date promise stays a date (promised_on).
CREATE FUNCTION loyalty._order_fields_sql(s loyalty.sources)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts text[] := '{}';
    promise_is_date boolean;
BEGIN
    IF s.delivered_at_column IS NOT NULL THEN
        parts := parts || format('''delivered_at'', %s', loyalty._time_sql(s.delivered_at_column));
    END IF;
    IF s.paid_at_column IS NOT NULL THEN
        parts := parts || format('''paid_at'', %s', loyalty._time_sql(s.paid_at_column));
    END IF;
    IF s.dispatched_at_column IS NOT NULL THEN
        parts := parts || format('''dispatched_at'', %s', loyalty._time_sql(s.dispatched_at_column));
    END IF;
    IF s.promised_at_column IS NOT NULL THEN
        SELECT a.atttypid = 'date'::regtype INTO promise_is_date FROM pg_attribute a
         WHERE a.attrelid = to_regclass(format('%I.%I', s.relation_schema, s.relation_name))
           AND a.attname = s.promised_at_column AND NOT a.attisdropped;
        parts := parts || CASE WHEN promise_is_date THEN format('''promised_on'', %I', s.promised_at_column)
                               ELSE format('''promised_at'', %s', loyalty._time_sql(s.promised_at_column)) END;
    END IF;
    IF s.dispatch_by_column IS NOT NULL THEN
        parts := parts || format('''dispatch_by'', %s', loyalty._time_sql(s.dispatch_by_column));
    END IF;
    IF cardinality(parts) = 0 THEN
        RETURN 'NULL::jsonb';
    END IF;
    RETURN 'jsonb_build_object(' || array_to_string(parts, ', ') || ')';
END
$$;

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
    id_type := loyalty._source_read_check(s);
    -- typed reads only (src/intake.c's rules): built-in conversions of the
    -- built-in key, amount and time types the check just confirmed, and the
    -- output function (never a cast) for the status column
    q := format(
        'SELECT array_agg(ROW(%s, ''u'', loyalty._as_text(k), loyalty._as_text(c), m::numeric, t::timestamptz, loyalty._as_text(st), NULL,
                              fl, NULL)::loyalty.order_change ORDER BY k)
           FROM (SELECT %I AS k, %I AS c, %I AS m, %s AS t, %s AS st, %s AS fl FROM %I.%I
                  WHERE $1 IS NULL OR %I > CAST($1 AS %s) ORDER BY %I LIMIT %s) b',
        s.source_id,
        s.order_id_column, s.customer_column, s.amount_column, loyalty._time_sql(s.ordered_at_column),
        CASE WHEN s.status_column IS NULL THEN 'NULL::text' ELSE quote_ident(s.status_column) END,
        loyalty._order_fields_sql(s),
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
            RAISE NOTICE 'backfilled % rows of %.%', n, s.relation_schema, s.relation_name;
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
    batch_size        integer DEFAULT 10000,
    paid_at_column       text DEFAULT NULL,
    dispatched_at_column text DEFAULT NULL,
    delivered_at_column  text DEFAULT NULL,
    promised_at_column   text DEFAULT NULL,
    dispatch_by_column   text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass := loyalty._resolve_table(p_rel, source);
    col text;
    colname text;
    sch text;
    tbl text;
    prev loyalty.sources;
    sid integer;
    n bigint := 0;
BEGIN
    SELECT n2.nspname, c.relname INTO sch, tbl
      FROM pg_class c JOIN pg_namespace n2 ON n2.oid = c.relnamespace WHERE c.oid = rel;

    -- attached again: a column not named keeps its stored value (never drops what is tracked)
    SELECT * INTO prev FROM loyalty.sources so WHERE so.relation_schema = sch AND so.relation_name = tbl;
    IF FOUND AND status_column IS NULL AND counted_statuses IS NULL THEN
        status_column := prev.status_column;
        counted_statuses := prev.counted_statuses;
    END IF;
    -- fulfilment columns: NULL keeps what is tracked, '' stops tracking it
    paid_at_column := nullif(coalesce(paid_at_column, prev.paid_at_column), '');
    dispatched_at_column := nullif(coalesce(dispatched_at_column, prev.dispatched_at_column), '');
    delivered_at_column := nullif(coalesce(delivered_at_column, prev.delivered_at_column), '');
    promised_at_column := nullif(coalesce(promised_at_column, prev.promised_at_column), '');
    dispatch_by_column := nullif(coalesce(dispatch_by_column, prev.dispatch_by_column), '');
    FOR col, colname IN SELECT * FROM unnest(
            ARRAY['paid_at_column', 'dispatched_at_column', 'delivered_at_column', 'promised_at_column', 'dispatch_by_column'],
            ARRAY[paid_at_column, dispatched_at_column, delivered_at_column, promised_at_column, dispatch_by_column]) LOOP
        IF colname IS NOT NULL THEN
            PERFORM loyalty._capture_column(rel, col, colname, 'time');
        END IF;
    END LOOP;

    PERFORM loyalty._capture_column(rel, 'customer_column', customer_column, 'key');
    PERFORM loyalty._capture_column(rel, 'amount_column', amount_column, 'amount');
    PERFORM loyalty._capture_column(rel, 'ordered_at_column', ordered_at_column, 'time');
    PERFORM loyalty._capture_column(rel, 'order_id_column', order_id_column, 'key');
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i
         WHERE i.indrelid = rel AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL
           AND i.indkey[0] = (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = order_id_column)) THEN
        RAISE EXCEPTION 'order id column "%" of "%" is not unique', order_id_column, rel::text
              USING ERRCODE = 'invalid_table_definition',
                    HINT = 'Track a column with a primary key or unique constraint of its own; it identifies the order.';
    END IF;

    IF status_column IS NOT NULL THEN
        PERFORM loyalty._capture_column(rel, 'status_column', status_column, 'label');
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
                                      ordered_at_column, order_id_column, status_column, counted_statuses,
                                      delivered_at_column, paid_at_column, dispatched_at_column, promised_at_column,
                                      dispatch_by_column)
    VALUES (sch, tbl, customer_column, amount_column, ordered_at_column, order_id_column, status_column, counted_statuses,
            delivered_at_column, paid_at_column, dispatched_at_column, promised_at_column, dispatch_by_column)
    ON CONFLICT (relation_schema, relation_name) DO UPDATE
       SET customer_column = excluded.customer_column, amount_column = excluded.amount_column,
           ordered_at_column = excluded.ordered_at_column, order_id_column = excluded.order_id_column,
           status_column = excluded.status_column, counted_statuses = excluded.counted_statuses,
           delivered_at_column = excluded.delivered_at_column, paid_at_column = excluded.paid_at_column,
           dispatched_at_column = excluded.dispatched_at_column, promised_at_column = excluded.promised_at_column,
           dispatch_by_column = excluded.dispatch_by_column
    RETURNING s.source_id INTO sid;

    PERFORM loyalty._attach_capture(sid);

    IF backfill THEN
        n := (loyalty._backfill(sid, batch_size)).n_rows;
        RAISE NOTICE 'tracking %.% (source %), % existing rows backfilled', sch, tbl, sid, n;
    ELSE
        RAISE NOTICE 'tracking %.% (source %), no backfill', sch, tbl, sid;
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
    batch_size        integer DEFAULT 10000,
    paid_at_column       text DEFAULT NULL,
    dispatched_at_column text DEFAULT NULL,
    delivered_at_column  text DEFAULT NULL,
    promised_at_column   text DEFAULT NULL,
    dispatch_by_column   text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql
AS $$
SELECT loyalty._track_orders(loyalty._lookup_table(source), source, customer_column, amount_column,
                             ordered_at_column, order_id_column, status_column, counted_statuses, backfill, batch_size,
                             paid_at_column, dispatched_at_column, delivered_at_column, promised_at_column, dispatch_by_column)
$$;
COMMENT ON FUNCTION loyalty.track_orders(text, text, text, text, text, text, text[], boolean, integer, text, text, text, text, text) IS
'Attach a shop orders table: capture every insert/update/delete/truncate and backfill existing rows; the fulfilment columns (paid, dispatched, delivered, promised, dispatch by) feed the operations facts; on re-attach NULL keeps a column, '''' stops tracking it; returns rows backfilled';

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
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value', HINT = 'Try 10000.';
    END IF;
    LOOP
        SELECT b.n_rows, b.last_key INTO got, last_key FROM loyalty._backfill(sid, batch_size, last_key, 1) b;
        total := total OPERATOR(pg_catalog.+) got;
        RAISE NOTICE 'backfilled % rows of %', total, source;
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
    ELSIF loyalty._amount_problem(p_amount) IS NOT NULL THEN
        RAISE EXCEPTION '% %', p_what, loyalty._amount_problem(p_amount)
              USING ERRCODE = 'numeric_value_out_of_range', HINT = 'loyalty accepts amounts up to 1000000000000 (see docs/capture.md).';
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
    PERFORM loyalty.check_key(customer_id, 'customer_id');
    PERFORM loyalty.check_key(order_ref, 'order_ref');
    PERFORM loyalty._check_amount(amount, 'amount');
    IF ordered_at IS NOT NULL AND NOT isfinite(ordered_at) THEN
        RAISE EXCEPTION 'ordered_at must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass when the order was placed, or omit it for now().';
    END IF;
    IF ordered_at IS NOT NULL AND loyalty._time_problem(ordered_at, now()) IS NOT NULL THEN
        RAISE EXCEPTION 'ordered_at %', loyalty._time_problem(ordered_at, now())
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass when the order was placed: between 1970 and 2100, at most loyalty.future_tolerance ahead of now().';
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

    PERFORM loyalty._order_recorded(record_order.order_ref, record_order.customer_id);   -- the pipeline
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
    PERFORM loyalty.check_key(order_ref, 'order_ref');
    IF amount IS NOT NULL THEN
        PERFORM loyalty._check_amount(amount, 'refund amount');
        IF amount = 0 THEN
            RAISE EXCEPTION 'refund amount must be positive'
                  USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL to refund the whole order.';
        END IF;
    END IF;
    IF idempotency_key IS NOT NULL THEN
        PERFORM loyalty.check_key(idempotency_key, 'idempotency_key');
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
    PERFORM loyalty._order_recorded(o.order_ref, o.customer_id);   -- the pipeline: points reversed in proportion
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
    ship_sid integer;
BEGIN
    IF source IS NOT NULL THEN
        -- by name: another tracked table may have been dropped meanwhile
        SELECT so.source_id INTO only_sid
          FROM (SELECT source_id, relation_schema, relation_name FROM loyalty.sources
                UNION ALL
                SELECT source_id, relation_schema, relation_name FROM loyalty.shipment_sources) so
          JOIN pg_class c ON c.oid = loyalty._resolve_table(p_rel, source)
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE so.relation_schema = n.nspname AND so.relation_name = c.relname;
        IF only_sid IS NULL THEN
            RAISE EXCEPTION '"%" is not tracked', source
                  USING ERRCODE = 'undefined_object', HINT = 'See loyalty.sources for the tracked tables.';
        END IF;
    END IF;
    -- a tracked table no longer found under its name (renamed or dropped) is
    -- not read: say so rather than replay nothing in silence
    FOR s IN SELECT * FROM loyalty.sources so
              WHERE (only_sid IS NULL OR so.source_id = only_sid)
                AND to_regclass(format('%I.%I', so.relation_schema, so.relation_name)) IS NULL
                AND EXISTS (SELECT 1 FROM loyalty.rejected_rows r
                             WHERE r.source_id = so.source_id AND r.resolved_at IS NULL AND r.order_ref IS NOT NULL) LOOP
        RAISE WARNING 'rejected rows of %.% not replayed: no table has that name any more', s.relation_schema, s.relation_name
              USING HINT = 'Backfill and replay find a tracked table by the name it was attached under: if it was renamed, '
                           'give it that name again and replay; if it was dropped, delete its rows from loyalty.rejected_rows.';
    END LOOP;
    FOR s IN SELECT * FROM loyalty.sources so
              WHERE (only_sid IS NULL OR so.source_id = only_sid)
                AND to_regclass(format('%I.%I', so.relation_schema, so.relation_name)) IS NOT NULL LOOP
        -- resolved now; a row still bad is rejected again when its event applies
        WITH u AS (
            UPDATE loyalty.rejected_rows r SET resolved_at = now()
             WHERE r.source_id = s.source_id AND r.resolved_at IS NULL AND r.order_ref IS NOT NULL
            RETURNING r.order_ref)
        SELECT array_agg(order_ref) INTO keys FROM u;
        CONTINUE WHEN keys IS NULL;
        all_keys := all_keys || keys;
        id_type := loyalty._source_read_check(s);   -- typed reads only, as in _backfill
        EXECUTE format('INSERT INTO loyalty.events (source_id, op, order_ref, customer_id, amount, ordered_at, status, fields)
                        SELECT %s, ''u'', loyalty._as_text(%I), loyalty._as_text(%I), %I::numeric, %s, %s, %s
                          FROM %I.%I WHERE %I = ANY (CAST($1 AS %s[]))',
                       s.source_id, s.order_id_column, s.customer_column, s.amount_column, loyalty._time_sql(s.ordered_at_column),
                       CASE WHEN s.status_column IS NULL THEN 'NULL' ELSE 'loyalty._as_text(' || quote_ident(s.status_column) || ')' END,
                       loyalty._order_fields_sql(s),
                       s.relation_schema, s.relation_name, s.order_id_column, id_type)
        USING keys;
    END LOOP;
    -- carrier events: every row of the rejected orders again (recording is idempotent)
    FOR ship_sid IN SELECT ss.source_id FROM loyalty.shipment_sources ss
                     WHERE (only_sid IS NULL OR ss.source_id = only_sid)
                       AND to_regclass(format('%I.%I', ss.relation_schema, ss.relation_name)) IS NOT NULL LOOP
        WITH u AS (
            UPDATE loyalty.rejected_rows r SET resolved_at = now()
             WHERE r.source_id = ship_sid AND r.resolved_at IS NULL AND r.order_ref IS NOT NULL
            RETURNING r.order_ref)
        SELECT array_agg(order_ref) INTO keys FROM u;
        CONTINUE WHEN keys IS NULL;
        all_keys := all_keys || keys;
        PERFORM loyalty._capture_shipments(ship_sid, keys);
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

-- Is source (as the caller wrote it: 'schema.table' or 'table') a tracked
-- table of p_sources (loyalty.sources or loyalty.shipment_sources) that no
-- longer exists? An unqualified name matches when one tracked table has it.
CREATE FUNCTION loyalty._dropped_source(source text, p_sources regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts text[];
    hits integer;
BEGIN
    BEGIN
        parts := parse_ident(source);
    EXCEPTION WHEN OTHERS THEN
        RETURN false;
    END;
    EXECUTE format('SELECT count(*) FROM %s so
                     WHERE so.relation_name = $1[cardinality($1)]
                       AND (cardinality($1) = 1 OR so.relation_schema = $1[cardinality($1) - 1])
                       AND to_regclass(format(''%%I.%%I'', so.relation_schema, so.relation_name)) IS NULL', p_sources)
    INTO hits USING parts;
    RETURN cardinality(parts) <= 2 AND hits = 1;
END
$$;

-- Stop tracking a table: removes the triggers; orders already captured stay.
CREATE FUNCTION loyalty._untrack_orders(p_rel regclass, source text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    IF p_rel IS NULL AND loyalty._dropped_source(source, 'loyalty.sources') THEN
        RAISE NOTICE 'table "%" was dropped, and its triggers with it; its captured orders stay', source;
        RETURN;
    END IF;
    rel := loyalty._resolve_table(p_rel, source);
    -- by name, never casting a stored name (another tracked table may be gone)
    IF NOT EXISTS (SELECT 1 FROM loyalty.sources so JOIN pg_class c ON c.oid = rel
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE so.relation_schema = n.nspname AND so.relation_name = c.relname) THEN
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
