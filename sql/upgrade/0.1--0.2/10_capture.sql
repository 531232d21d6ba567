
-- ---------------------------------------------------------------- 10_capture
-- One C capture trigger (loyalty.capture_row) for every tracked table; order
-- points, delivery times and profiles follow the captured change; bounds on
-- what is accepted; poison rows quarantined; re-attach merges (docs/capture.md).

ALTER TABLE loyalty.events ADD COLUMN fields jsonb;
ALTER TABLE loyalty.events DROP CONSTRAINT events_op_check, ADD CONSTRAINT events_op_check CHECK (op IN ('u', 'd', 'k'));
COMMENT ON COLUMN loyalty.events.op IS 'u: the row as it is now; d: the row was deleted; k: a customer row left its key (key changed, table truncated): the profile goes, nothing is erased';
COMMENT ON COLUMN loyalty.events.fields IS 'the other tracked columns by field name (delivered_at; a customer''s name, email, phone, birthday, time_zone); a field absent is not tracked';
ALTER TYPE loyalty.order_change ADD ATTRIBUTE fields jsonb, ADD ATTRIBUTE captured_at timestamptz;
ALTER TYPE loyalty.order_change_checked ADD ATTRIBUTE fields jsonb;

-- the same rule with another length limit (the ledger's idempotency keys)
CREATE FUNCTION loyalty._key_problem(value text, max_chars integer)
RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_key_problem';

CREATE OR REPLACE FUNCTION loyalty.capture_row()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'capture_row';
COMMENT ON FUNCTION loyalty.capture_row() IS 'Trigger attached by loyalty.track_orders() and loyalty.track_customers(); do not call directly';

CREATE OR REPLACE FUNCTION loyalty._capture_type_ok(typ regtype, class text)
RETURNS boolean
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'capture_type_ok';

CREATE OR REPLACE FUNCTION loyalty._key_problem(value text)
RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_key_problem';

CREATE OR REPLACE FUNCTION loyalty.check_key(value text, what text DEFAULT 'key')
RETURNS text
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_check_key';
COMMENT ON FUNCTION loyalty.check_key(text, text) IS
'Return the key, or fail (22004 empty, 22023 too long or with control characters or Unicode spaces): the one rule for customer keys, order ids, idempotency keys and channel names';

CREATE OR REPLACE FUNCTION loyalty._amount_problem(value numeric)
RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_amount_problem';

CREATE OR REPLACE FUNCTION loyalty._time_problem(value timestamptz, reference timestamptz)
RETURNS text
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_time_problem';

CREATE OR REPLACE FUNCTION loyalty._as_text(value anyelement)
RETURNS text
LANGUAGE c STABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_as_text';

CREATE OR REPLACE FUNCTION loyalty._capture_column(rel regclass, p_role text, p_column text, p_class text)
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
                           ELSE 'A time column must be timestamptz, timestamp or date (not a domain).' END;
    END IF;
    RETURN t;
END
$$;

CREATE OR REPLACE FUNCTION loyalty._attach_capture(p_source_id integer)
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
                   'FOR EACH ROW EXECUTE FUNCTION loyalty.capture_row(%L, ''o'', %L, %L, %L, %L, %L, %L)',
                   s.relation_schema, s.relation_name, s.source_id, s.order_id_column, s.customer_column,
                   s.amount_column, s.ordered_at_column, coalesce(s.status_column, ''),
                   coalesce(s.delivered_at_column, ''));
    EXECUTE format('CREATE OR REPLACE TRIGGER loyalty_capture_truncate AFTER TRUNCATE ON %I.%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION loyalty.capture_row(%L, ''o'')',
                   s.relation_schema, s.relation_name, s.source_id);
END
$$;

CREATE OR REPLACE FUNCTION loyalty._quarantine(p_source_id integer, p_key text, p_reason text, p_row jsonb)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO loyalty.rejected_rows (source_id, order_ref, reason, row_data)
    VALUES (p_source_id, left(p_key, 255), left(p_reason, 1000),
            (SELECT jsonb_object_agg(k, CASE WHEN jsonb_typeof(v) = 'string' AND length(v #>> '{}') > 1000
                                             THEN to_jsonb(left(v #>> '{}', 1000) || '...') ELSE v END)
               FROM jsonb_each(p_row) AS e(k, v)))
    ON CONFLICT (source_id, order_ref) WHERE resolved_at IS NULL
    DO UPDATE SET reason = excluded.reason, row_data = excluded.row_data, rejected_at = excluded.rejected_at
$$;

CREATE OR REPLACE FUNCTION loyalty._apply_changes(p_changes loyalty.order_change[], p_enqueue boolean DEFAULT true)
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

    IF cardinality(affected) > 0 THEN
        PERFORM loyalty._recompute_customers(affected, p_enqueue);
    END IF;
    -- what else the captured order carries (70_journeys.sql, 62_rewards.sql)
    PERFORM loyalty._apply_deliveries(checked);
    IF p_enqueue THEN
        PERFORM loyalty._apply_order_points(checked);   -- not for a backfill: history earns nothing
    END IF;
    RETURN cardinality(p_changes);
END
$$;

CREATE OR REPLACE FUNCTION loyalty._apply_or_split(p_changes loyalty.order_change[])
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
        RAISE WARNING 'loyalty: change of order % quarantined in loyalty.rejected_rows: %', left(c.order_ref, 255), msg
              USING HINT = 'Fix the shop''s row, then run loyalty.replay_rejected().';
        RETURN 1;
    END IF;
    half := n / 2;
    RETURN loyalty._apply_or_split(p_changes[1:half]) + loyalty._apply_or_split(p_changes[half + 1:n]);
END
$$;

CREATE OR REPLACE FUNCTION loyalty.apply_events(max_events integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch loyalty.order_change[];
    cust loyalty.events[];
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
                FILTER (WHERE cs.source_id IS NULL),
           array_agg(d ORDER BY d.event_id) FILTER (WHERE cs.source_id IS NOT NULL)
      INTO ch, cust
      FROM d LEFT JOIN loyalty.customer_sources cs ON cs.source_id = d.source_id;
    IF cust IS NOT NULL THEN
        n := loyalty._apply_customer_changes(cust);
    END IF;
    RETURN n + loyalty._apply_or_split(ch);
END
$$;
COMMENT ON FUNCTION loyalty.apply_events(integer) IS 'Apply up to max_events captured order changes to orders and customer state';

CREATE OR REPLACE FUNCTION loyalty._source_read_check(s loyalty.sources)
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
    SELECT format_type(a.atttypid, a.atttypmod) INTO id_type FROM pg_attribute a
     WHERE a.attrelid = rel AND a.attname = s.order_id_column;
    RETURN id_type;
END
$$;

CREATE OR REPLACE FUNCTION loyalty._backfill(p_source_id integer, p_batch integer,
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
    -- output function (never a cast) for the status and delivery columns
    q := format(
        'SELECT array_agg(ROW(%s, ''u'', loyalty._as_text(k), loyalty._as_text(c), m::numeric, t::timestamptz, loyalty._as_text(st), NULL,
                              %s, NULL)::loyalty.order_change ORDER BY k)
           FROM (SELECT %I AS k, %I AS c, %I AS m, %I AS t, %s AS st, %s AS dl FROM %I.%I
                  WHERE $1 IS NULL OR %I > CAST($1 AS %s) ORDER BY %I LIMIT %s) b',
        s.source_id,
        CASE WHEN s.delivered_at_column IS NULL THEN 'NULL' ELSE 'jsonb_build_object(''delivered_at'', dl::timestamptz)' END,
        s.order_id_column, s.customer_column, s.amount_column, s.ordered_at_column,
        CASE WHEN s.status_column IS NULL THEN 'NULL::text' ELSE quote_ident(s.status_column) END,
        CASE WHEN s.delivered_at_column IS NULL THEN 'NULL' ELSE quote_ident(s.delivered_at_column) END,
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

CREATE OR REPLACE FUNCTION loyalty._track_orders(
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
                                      ordered_at_column, order_id_column, status_column, counted_statuses)
    VALUES (sch, tbl, customer_column, amount_column, ordered_at_column, order_id_column, status_column, counted_statuses)
    ON CONFLICT (relation_schema, relation_name) DO UPDATE
       SET customer_column = excluded.customer_column, amount_column = excluded.amount_column,
           ordered_at_column = excluded.ordered_at_column, order_id_column = excluded.order_id_column,
           status_column = excluded.status_column, counted_statuses = excluded.counted_statuses
    RETURNING s.source_id INTO sid;

    PERFORM loyalty._attach_capture(sid);

    IF backfill THEN
        n := (loyalty._backfill(sid, batch_size)).n_rows;
        RAISE NOTICE 'loyalty: tracking %.% (source %), % existing rows backfilled', sch, tbl, sid, n;
    ELSE
        RAISE NOTICE 'loyalty: tracking %.% (source %), no backfill', sch, tbl, sid;
    END IF;
    RETURN n;
END
$$;

CREATE OR REPLACE PROCEDURE loyalty.backfill(source text, batch_size integer DEFAULT 10000)
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
        RAISE NOTICE 'loyalty: backfilled % rows of %', total, source;
        COMMIT;
        EXIT WHEN got OPERATOR(pg_catalog.<) batch_size;
    END LOOP;
    UPDATE loyalty.sources SET backfilled_rows = total, backfilled_at = pg_catalog.now() WHERE source_id OPERATOR(pg_catalog.=) sid;
    COMMIT;
END
$$;
COMMENT ON PROCEDURE loyalty.backfill(text, integer) IS 'Backfill a tracked table in committed batches (for large tables; rerun-safe)';

CREATE OR REPLACE FUNCTION loyalty._check_amount(p_amount numeric, p_what text)
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

CREATE OR REPLACE FUNCTION loyalty.record_order(customer_id text, order_ref text, amount numeric, ordered_at timestamptz DEFAULT NULL)
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

    PERFORM loyalty._sync_recorded_order(record_order.order_ref);   -- points, if earn_on_orders
    PERFORM loyalty._recompute_customers(ARRAY[record_order.customer_id], true);
    RETURN id;
END
$$;
COMMENT ON FUNCTION loyalty.record_order(text, text, numeric, timestamptz) IS
'Record an order from the app (idempotent by order_ref); ordered_at defaults to now(); returns loyalty''s order id';

CREATE OR REPLACE FUNCTION loyalty.record_refund(order_ref text, amount numeric DEFAULT NULL, idempotency_key text DEFAULT NULL)
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
    PERFORM loyalty._sync_recorded_order(o.order_ref);   -- reverse the order's points in proportion
    PERFORM loyalty._recompute_customers(ARRAY[o.customer_id], true);
    RETURN amt;
END
$$;
COMMENT ON FUNCTION loyalty.record_refund(text, numeric, text) IS
'Refund part of an order (amount) or all that is left (NULL); idempotent by key (default: order and amount); returns the amount refunded';

CREATE OR REPLACE FUNCTION loyalty._replay_rejected(p_rel regclass, source text)
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
        id_type := loyalty._source_read_check(s);   -- typed reads only, as in _backfill
        EXECUTE format('INSERT INTO loyalty.events (source_id, op, order_ref, customer_id, amount, ordered_at, status, fields)
                        SELECT %s, ''u'', loyalty._as_text(%I), loyalty._as_text(%I), %I::numeric, %I::timestamptz, %s, %s
                          FROM %I.%I WHERE %I = ANY (CAST($1 AS %s[]))',
                       s.source_id, s.order_id_column, s.customer_column, s.amount_column, s.ordered_at_column,
                       CASE WHEN s.status_column IS NULL THEN 'NULL' ELSE 'loyalty._as_text(' || quote_ident(s.status_column) || ')' END,
                       CASE WHEN s.delivered_at_column IS NULL THEN 'NULL'
                            ELSE format('jsonb_build_object(''delivered_at'', %I::timestamptz)', s.delivered_at_column) END,
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

CREATE OR REPLACE FUNCTION loyalty.order_points(customer_id text, amount numeric, ordered_at timestamptz DEFAULT now(),
                                     OUT points bigint, OUT detail jsonb)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM loyalty._check_amount(order_points.amount, 'amount');   -- NaN, infinite, above the maximum: refused
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
      INTO points, detail
      FROM r, t;
END
$$;
COMMENT ON FUNCTION loyalty.order_points(text, numeric, timestamptz) IS
'Points an order of this amount earns now under loyalty.earn_rules and the customer''s tier and segment (also a preview for the shop''s checkout)';

CREATE OR REPLACE FUNCTION loyalty._apply_order_points(p_changes loyalty.order_change_checked[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    msg text;
    one_by_one boolean := false;
BEGIN
    IF NOT (SELECT earn_on_orders FROM loyalty.rewards_settings)
       AND NOT EXISTS (SELECT 1 FROM loyalty.ledger e, unnest(p_changes) a
                        WHERE e.idempotency_key = 'loyalty:order:' || a.order_ref || ':1') THEN
        RETURN;     -- earning is off and none of these orders ever earned
    END IF;
    -- the whole batch in one subtransaction; order by order only when it fails
    BEGIN
        FOR c IN
            SELECT DISTINCT ON (a.order_ref) a.order_ref, a.source_id, o.customer_id, o.amount, o.refunded, o.ordered_at,
                   coalesce(o.counted, false) AS counted, d.delivered_at, so.delivered_at_column IS NOT NULL AS wait
              FROM unnest(p_changes) a
              JOIN loyalty.sources so ON so.source_id = a.source_id
              LEFT JOIN loyalty.orders o ON o.order_ref = a.order_ref AND o.source_id = a.source_id
              LEFT JOIN loyalty.deliveries d ON d.order_ref = a.order_ref
             WHERE a.order_ref IS NOT NULL AND loyalty._key_problem(a.order_ref) IS NULL
             ORDER BY a.order_ref
        LOOP
            PERFORM loyalty._sync_order_points(c.order_ref, c.customer_id, c.amount, coalesce(c.refunded, 0),
                                               c.ordered_at, c.counted, c.delivered_at, c.wait);
        END LOOP;
    EXCEPTION WHEN serialization_failure OR deadlock_detected OR lock_not_available THEN
        RAISE;
    WHEN OTHERS THEN
        one_by_one := true;
    END;
    IF one_by_one THEN
        FOR c IN
            SELECT DISTINCT ON (a.order_ref) a.order_ref, a.source_id, o.customer_id, o.amount, o.refunded, o.ordered_at,
                   coalesce(o.counted, false) AS counted, d.delivered_at, so.delivered_at_column IS NOT NULL AS wait
              FROM unnest(p_changes) a
              JOIN loyalty.sources so ON so.source_id = a.source_id
              LEFT JOIN loyalty.orders o ON o.order_ref = a.order_ref AND o.source_id = a.source_id
              LEFT JOIN loyalty.deliveries d ON d.order_ref = a.order_ref
             WHERE a.order_ref IS NOT NULL AND loyalty._key_problem(a.order_ref) IS NULL
             ORDER BY a.order_ref
        LOOP
            BEGIN
                PERFORM loyalty._sync_order_points(c.order_ref, c.customer_id, c.amount, coalesce(c.refunded, 0),
                                                   c.ordered_at, c.counted, c.delivered_at, c.wait);
            EXCEPTION WHEN serialization_failure OR deadlock_detected OR lock_not_available THEN
                RAISE;
            WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
                INSERT INTO loyalty.points_problems (source_id, order_ref, error) VALUES (c.source_id, c.order_ref, msg);
            END;
        END LOOP;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION loyalty._sync_earn_triggers()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    FOR rel IN SELECT t.tgrelid::regclass FROM pg_trigger t WHERE t.tgname = 'loyalty_earn_orders' LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS loyalty_earn_orders ON %s', rel);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION loyalty._track_deliveries(p_rel regclass, source text, delivered_at_column text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass := loyalty._resolve_table(p_rel, source);
    t regtype;
    sid integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM loyalty.sources so
                    WHERE format('%I.%I', so.relation_schema, so.relation_name)::regclass = rel) THEN
        RAISE EXCEPTION '"%" is not tracked', source
              USING ERRCODE = 'undefined_object', HINT = 'Track it first with loyalty.track_orders().';
    END IF;
    IF delivered_at_column IS NOT NULL THEN
        t := loyalty._capture_column(rel, 'delivered_at_column', delivered_at_column, 'time');
    END IF;
    UPDATE loyalty.sources so SET delivered_at_column = _track_deliveries.delivered_at_column
     WHERE format('%I.%I', so.relation_schema, so.relation_name)::regclass = rel
    RETURNING so.source_id INTO sid;
    PERFORM loyalty._attach_capture(sid);          -- the capture trigger reads the column too
    PERFORM loyalty._backfill_deliveries(sid);     -- delivery times of existing rows (70_journeys.sql)
END
$$;

CREATE OR REPLACE FUNCTION loyalty._store_profile(p_source_id integer, p_customer text, p_fields jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f jsonb := coalesce(p_fields, '{}');
    zone text;
    bday date;
    problem text;
BEGIN
    IF p_customer IS NULL THEN
        problem := 'customer is null';
    ELSIF loyalty._key_problem(p_customer) IS NOT NULL THEN
        problem := 'customer ' || loyalty._key_problem(p_customer);
    ELSE
        zone := loyalty._time_zone(f ->> 'time_zone');
        IF nullif(btrim(f ->> 'time_zone'), '') IS NOT NULL AND zone IS NULL THEN
            problem := format('unknown time zone %s (stored as NULL)', quote_literal(left(f ->> 'time_zone', 100)));
        END IF;
        bday := (f ->> 'birthday')::date;
        IF bday IS NOT NULL AND (bday > current_date OR bday < date '1900-01-01') THEN
            problem := format('birthday %s is not plausible (stored as NULL)', bday);
            bday := NULL;
        END IF;
        INSERT INTO loyalty.profiles AS p (customer_id, name, email, phone, birthday, time_zone, source_id, updated_at)
        VALUES (p_customer, nullif(btrim(f ->> 'name'), ''), nullif(btrim(f ->> 'email'), ''),
                nullif(btrim(f ->> 'phone'), ''), bday, zone, p_source_id, now())
        ON CONFLICT (customer_id) DO UPDATE
           SET name = CASE WHEN f ? 'name' THEN excluded.name ELSE p.name END,
               email = CASE WHEN f ? 'email' THEN excluded.email ELSE p.email END,
               phone = CASE WHEN f ? 'phone' THEN excluded.phone ELSE p.phone END,
               birthday = CASE WHEN f ? 'birthday' THEN excluded.birthday ELSE p.birthday END,
               time_zone = CASE WHEN f ? 'time_zone' THEN excluded.time_zone ELSE p.time_zone END,
               source_id = excluded.source_id, updated_at = excluded.updated_at
         WHERE (p.name, p.email, p.phone, p.birthday, p.time_zone, p.source_id)
               IS DISTINCT FROM
               (CASE WHEN f ? 'name' THEN excluded.name ELSE p.name END,
                CASE WHEN f ? 'email' THEN excluded.email ELSE p.email END,
                CASE WHEN f ? 'phone' THEN excluded.phone ELSE p.phone END,
                CASE WHEN f ? 'birthday' THEN excluded.birthday ELSE p.birthday END,
                CASE WHEN f ? 'time_zone' THEN excluded.time_zone ELSE p.time_zone END, excluded.source_id);
    END IF;
    IF problem IS NOT NULL THEN
        PERFORM loyalty._quarantine(p_source_id, p_customer, problem, jsonb_build_object('customer_id', p_customer) || f);
    ELSE
        UPDATE loyalty.rejected_rows r SET resolved_at = now()
         WHERE r.source_id = p_source_id AND r.order_ref = p_customer AND r.resolved_at IS NULL;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION loyalty._customer_deleted(p_source_id integer, p_customer text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.customer_sources;
BEGIN
    SELECT * INTO s FROM loyalty.customer_sources WHERE source_id = p_source_id;
    IF p_customer IS NULL OR loyalty._key_problem(p_customer) IS NOT NULL THEN
        RETURN;     -- never stored
    END IF;
    PERFORM loyalty.erase_customer(p_customer, format('deleted from %I.%I', s.relation_schema, s.relation_name));
END
$$;

CREATE OR REPLACE FUNCTION loyalty._apply_customer_change(e loyalty.events)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF e.customer_id LIKE 'erased:%' THEN
        RETURN;     -- erased while the change waited (loyalty.erase_customer): nothing is stored again
    ELSIF e.op = 'd' THEN
        PERFORM loyalty._customer_deleted(e.source_id, e.customer_id);
    ELSIF e.op = 'k' THEN
        DELETE FROM loyalty.profiles p WHERE p.customer_id = e.customer_id AND p.source_id = e.source_id;
    ELSIF e.problem IS NOT NULL THEN
        PERFORM loyalty._quarantine(e.source_id, e.customer_id, e.problem,
                                    jsonb_build_object('customer_id', e.customer_id) || coalesce(e.fields, '{}'));
    ELSE
        PERFORM loyalty._store_profile(e.source_id, e.customer_id, e.fields);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION loyalty._apply_customer_changes(p_events loyalty.events[])
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
            PERFORM loyalty._apply_customer_change(e);
        END LOOP;
    EXCEPTION WHEN serialization_failure OR deadlock_detected OR lock_not_available THEN
        RAISE;
    WHEN OTHERS THEN
        one_by_one := true;
    END;
    IF one_by_one THEN
        FOREACH e IN ARRAY p_events LOOP
            BEGIN
                PERFORM loyalty._apply_customer_change(e);
            EXCEPTION WHEN serialization_failure OR deadlock_detected OR lock_not_available THEN
                RAISE;
            WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
                PERFORM loyalty._quarantine(e.source_id, e.customer_id, 'could not be applied: ' || msg,
                                            jsonb_build_object('customer_id', left(e.customer_id, 1000)) || coalesce(e.fields, '{}'));
            END;
        END LOOP;
    END IF;
    RETURN coalesce(cardinality(p_events), 0);
END
$$;

CREATE OR REPLACE FUNCTION loyalty.track_customers(
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
    sid integer;
    n bigint := 0;
    prev loyalty.customer_sources;
    col text;
    colname text;
BEGIN
    SELECT n2.nspname, c.relname INTO sch, tbl
      FROM pg_class c JOIN pg_namespace n2 ON n2.oid = c.relnamespace WHERE c.oid = rel;
    -- attached again: a column not named keeps what is tracked ('' stops tracking it)
    PERFORM loyalty._capture_column(rel, 'customer_column', customer_column, 'key');
    SELECT * INTO prev FROM loyalty.customer_sources cs WHERE cs.relation_schema = sch AND cs.relation_name = tbl;
    IF FOUND THEN
        IF customer_column IS DISTINCT FROM prev.customer_column THEN
            RAISE EXCEPTION 'customers of "%" are already tracked by column "%"', rel::text, prev.customer_column
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'The customer column identifies the stored profiles; detach with loyalty.untrack_customers() and delete the source row from loyalty.customer_sources first.';
        END IF;
        name_column := CASE WHEN name_column IS NULL THEN prev.name_column ELSE nullif(name_column, '') END;
        email_column := CASE WHEN email_column IS NULL THEN prev.email_column ELSE nullif(email_column, '') END;
        phone_column := CASE WHEN phone_column IS NULL THEN prev.phone_column ELSE nullif(phone_column, '') END;
        birthday_column := CASE WHEN birthday_column IS NULL THEN prev.birthday_column ELSE nullif(birthday_column, '') END;
        time_zone_column := CASE WHEN time_zone_column IS NULL THEN prev.time_zone_column ELSE nullif(time_zone_column, '') END;
    END IF;
    FOR col, colname IN SELECT * FROM unnest(ARRAY['name_column', 'email_column', 'phone_column', 'time_zone_column'],
                                             ARRAY[name_column, email_column, phone_column, time_zone_column]) LOOP
        IF colname IS NOT NULL THEN
            PERFORM loyalty._capture_column(rel, col, colname, 'label');
        END IF;
    END LOOP;
    IF birthday_column IS NOT NULL THEN
        PERFORM loyalty._capture_column(rel, 'birthday_column', birthday_column, 'time');
    END IF;

    INSERT INTO loyalty.customer_sources AS s (relation_schema, relation_name, customer_column, name_column, email_column,
                                                phone_column, birthday_column, time_zone_column)
    VALUES (sch, tbl, customer_column, name_column, email_column, phone_column, birthday_column, time_zone_column)
    ON CONFLICT (relation_schema, relation_name) DO UPDATE
       SET customer_column = excluded.customer_column, name_column = excluded.name_column,
           email_column = excluded.email_column, phone_column = excluded.phone_column,
           birthday_column = excluded.birthday_column, time_zone_column = excluded.time_zone_column
    RETURNING s.source_id INTO sid;

    -- arguments: source, kind, then src/intake.c's CustomerFields in order
    EXECUTE format('CREATE OR REPLACE TRIGGER loyalty_capture_customers AFTER INSERT OR UPDATE OR DELETE ON %I.%I '
                   'FOR EACH ROW EXECUTE FUNCTION loyalty.capture_row(%L, ''c'', %L, %L, %L, %L, %L, %L)',
                   sch, tbl, sid, customer_column, coalesce(name_column, ''), coalesce(email_column, ''),
                   coalesce(phone_column, ''), coalesce(birthday_column, ''), coalesce(time_zone_column, ''));
    EXECUTE format('CREATE OR REPLACE TRIGGER loyalty_capture_customers_truncate AFTER TRUNCATE ON %I.%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION loyalty.capture_row(%L, ''c'')', sch, tbl, sid);

    IF backfill THEN
        -- typed reads (as the trigger): the key and labels through their output
        -- functions, the birthday of a built-in time type checked above
        EXECUTE format('LOCK TABLE %s IN ACCESS SHARE MODE', rel);
        EXECUTE format(
            'SELECT count(*) FROM (SELECT loyalty._store_profile(%s, loyalty._as_text(%I), jsonb_build_object(%s)) AS x FROM %I.%I) s',
            sid, customer_column,
            concat_ws(', ',
                CASE WHEN name_column IS NOT NULL THEN format('''name'', loyalty._as_text(%I)', name_column) END,
                CASE WHEN email_column IS NOT NULL THEN format('''email'', loyalty._as_text(%I)', email_column) END,
                CASE WHEN phone_column IS NOT NULL THEN format('''phone'', loyalty._as_text(%I)', phone_column) END,
                CASE WHEN birthday_column IS NOT NULL THEN format('''birthday'', %I::date', birthday_column) END,
                CASE WHEN time_zone_column IS NOT NULL THEN format('''time_zone'', loyalty._as_text(%I)', time_zone_column) END),
            sch, tbl)
        INTO n;
        UPDATE loyalty.customer_sources SET backfilled_rows = n WHERE source_id = sid;
        RAISE NOTICE 'loyalty: tracking customers of %.% (source %), % existing rows read', sch, tbl, sid, n;
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION loyalty.track_customers(regclass, text, text, text, text, text, text, boolean) IS
'Attach the shop''s customers table: profiles follow every insert/update/delete/truncate; existing rows are read now; returns rows read';

CREATE OR REPLACE FUNCTION loyalty.upsert_customer(customer_id text, name text DEFAULT NULL, email text DEFAULT NULL,
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
    PERFORM loyalty.check_key(customer_id, 'customer_id');
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

CREATE OR REPLACE FUNCTION loyalty._apply_deliveries(p_changes loyalty.order_change_checked[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM loyalty.deliveries d
     USING unnest(p_changes) a
     WHERE d.order_ref = a.order_ref AND d.source_id = a.source_id
       AND a.op = 'u' AND a.reason IS NULL AND a.fields ? 'delivered_at' AND a.fields ->> 'delivered_at' IS NULL;
    INSERT INTO loyalty.deliveries AS d (order_ref, delivered_at, source_id)
    SELECT a.order_ref, (a.fields ->> 'delivered_at')::timestamptz, a.source_id
      FROM unnest(p_changes) a
     WHERE a.op = 'u' AND a.reason IS NULL AND a.fields ->> 'delivered_at' IS NOT NULL
    ON CONFLICT (order_ref) DO UPDATE SET delivered_at = excluded.delivered_at, recorded_at = now()
     WHERE d.delivered_at IS DISTINCT FROM excluded.delivered_at;
END
$$;

CREATE OR REPLACE FUNCTION loyalty._backfill_deliveries(p_source_id integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.sources;
BEGIN
    SELECT * INTO STRICT s FROM loyalty.sources WHERE source_id = p_source_id;
    IF s.delivered_at_column IS NULL THEN
        RETURN;
    END IF;
    PERFORM loyalty._source_read_check(s);
    EXECUTE format('INSERT INTO loyalty.deliveries AS d (order_ref, delivered_at, source_id)
                    SELECT loyalty._as_text(%I), %I::timestamptz, %s FROM %I.%I
                     WHERE %I IS NOT NULL AND %I IS NOT NULL
                       AND loyalty._time_problem(%I::timestamptz, NULL) IS NULL
                       AND loyalty._key_problem(loyalty._as_text(%I)) IS NULL
                    ON CONFLICT (order_ref) DO UPDATE SET delivered_at = excluded.delivered_at
                     WHERE d.delivered_at IS DISTINCT FROM excluded.delivered_at',
                   s.order_id_column, s.delivered_at_column, s.source_id, s.relation_schema, s.relation_name,
                   s.order_id_column, s.delivered_at_column, s.delivered_at_column, s.order_id_column);
END
$$;

CREATE OR REPLACE FUNCTION loyalty.set_consent(customer_id text, channel text, granted boolean, source text DEFAULT NULL)
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
    PERFORM loyalty.check_key(customer_id, 'customer_id');
    PERFORM loyalty.check_key(ch, 'channel');      -- no tab or no-break space: 'all' + U+00A0 is not a new channel
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


-- the new functions: nothing for PUBLIC, everything for loyalty_admin (as 90_grants.sql does at install)
REVOKE ALL ON FUNCTION loyalty.capture_row(), loyalty._capture_type_ok(regtype, text), loyalty._key_problem(text), loyalty._key_problem(text, integer),
                       loyalty.check_key(text, text), loyalty._amount_problem(numeric), loyalty._time_problem(timestamptz, timestamptz),
                       loyalty._as_text(anyelement), loyalty._capture_column(regclass, text, text, text),
                       loyalty._attach_capture(integer), loyalty._quarantine(integer, text, text, jsonb),
                       loyalty._apply_or_split(loyalty.order_change[]), loyalty._source_read_check(loyalty.sources),
                       loyalty._apply_order_points(loyalty.order_change_checked[]), loyalty._store_profile(integer, text, jsonb),
                       loyalty._customer_deleted(integer, text), loyalty._apply_customer_changes(loyalty.events[]),
                       loyalty._apply_customer_change(loyalty.events),
                       loyalty._apply_deliveries(loyalty.order_change_checked[]), loyalty._backfill_deliveries(integer)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty.capture_row(), loyalty._capture_type_ok(regtype, text), loyalty._key_problem(text), loyalty._key_problem(text, integer),
                       loyalty.check_key(text, text), loyalty._amount_problem(numeric), loyalty._time_problem(timestamptz, timestamptz),
                       loyalty._as_text(anyelement), loyalty._capture_column(regclass, text, text, text),
                       loyalty._attach_capture(integer), loyalty._quarantine(integer, text, text, jsonb),
                       loyalty._apply_or_split(loyalty.order_change[]), loyalty._source_read_check(loyalty.sources),
                       loyalty._apply_order_points(loyalty.order_change_checked[]), loyalty._store_profile(integer, text, jsonb),
                       loyalty._customer_deleted(integer, text), loyalty._apply_customer_changes(loyalty.events[]),
                       loyalty._apply_customer_change(loyalty.events),
                       loyalty._apply_deliveries(loyalty.order_change_checked[]), loyalty._backfill_deliveries(integer)
  TO loyalty_admin;

-- Re-attach every tracked table with the one capture trigger; the PL/pgSQL
-- triggers of 0.1 (to_jsonb of the shop's row as the extension owner) go.
DO $$
DECLARE
    s record;
    rel regclass;
BEGIN
    FOR s IN SELECT * FROM loyalty.sources ORDER BY source_id LOOP
        rel := pg_catalog.to_regclass(pg_catalog.format('%I.%I', s.relation_schema, s.relation_name));
        CONTINUE WHEN rel IS NULL;
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS loyalty_earn_orders ON %s', rel);
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS loyalty_capture_deliveries ON %s', rel);
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid OPERATOR(pg_catalog.=) rel
                      AND t.tgname OPERATOR(pg_catalog.=) 'loyalty_capture_orders') THEN
            PERFORM loyalty._attach_capture(s.source_id);
        ELSE
            EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS loyalty_capture_truncate ON %s', rel);
        END IF;
    END LOOP;
    FOR s IN SELECT * FROM loyalty.customer_sources ORDER BY source_id LOOP
        rel := pg_catalog.to_regclass(pg_catalog.format('%I.%I', s.relation_schema, s.relation_name));
        CONTINUE WHEN rel IS NULL;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid OPERATOR(pg_catalog.=) rel
                          AND t.tgname OPERATOR(pg_catalog.=) 'loyalty_capture_customers') THEN
            EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS loyalty_capture_customers_truncate ON %s', rel);
            CONTINUE;
        END IF;
        EXECUTE pg_catalog.format('CREATE OR REPLACE TRIGGER loyalty_capture_customers AFTER INSERT OR UPDATE OR DELETE ON %s '
                                  'FOR EACH ROW EXECUTE FUNCTION loyalty.capture_row(%L, ''c'', %L, %L, %L, %L, %L, %L)',
                                  rel, s.source_id, s.customer_column, coalesce(s.name_column, ''),
                                  coalesce(s.email_column, ''), coalesce(s.phone_column, ''),
                                  coalesce(s.birthday_column, ''), coalesce(s.time_zone_column, ''));
        EXECUTE pg_catalog.format('CREATE OR REPLACE TRIGGER loyalty_capture_customers_truncate AFTER TRUNCATE ON %s '
                                  'FOR EACH STATEMENT EXECUTE FUNCTION loyalty.capture_row(%L, ''c'')', rel, s.source_id);
    END LOOP;
END
$$;

-- rejected rows keep only the tracked columns (0.1 kept the whole shop row of a customer)
UPDATE loyalty.rejected_rows r
   SET row_data = (SELECT pg_catalog.jsonb_object_agg(k, v) FROM pg_catalog.jsonb_each(r.row_data) AS e(k, v)
                    WHERE k OPERATOR(pg_catalog.=) ANY (ARRAY['customer_id', cs.customer_column, cs.name_column, cs.email_column,
                                                              cs.phone_column, cs.birthday_column, cs.time_zone_column]))
  FROM loyalty.customer_sources cs
 WHERE cs.source_id OPERATOR(pg_catalog.=) r.source_id AND r.row_data IS NOT NULL;

DROP FUNCTION loyalty.earn_order_points();
DROP FUNCTION loyalty.capture_customer();
DROP FUNCTION loyalty.capture_delivery();
DROP FUNCTION loyalty.capture_order();
DROP FUNCTION loyalty._sync_delivery_trigger(regclass);
DROP FUNCTION loyalty._store_profile(integer, text, text, text, text, date, text, jsonb);
DROP FUNCTION loyalty.capture_truncate();
DROP FUNCTION loyalty.capture_customer_truncate();
