-- Operations from the shop's own tables: the fulfilment columns of a tracked
-- orders table (loyalty.track_orders) and tracked carrier-events tables
-- (loyalty.track_shipment_events). Both are read by the one C capture
-- trigger (src/intake.c: typed columns only, no cast of a shop type) and
-- applied by loyalty.apply_events() through the writers the API uses
-- (loyalty._record_fulfilment, loyalty._record_shipment_event), so a fact
-- captured and a fact recorded by the app are stored the same way. A value
-- outside the bounds (src/capture.c) is quarantined in loyalty.rejected_rows;
-- it never fails the shop's write. (This fragment is also the upgrade
-- fragment sql/upgrade/0.1--0.2/90_0_operations_capture.sql.)

ALTER TABLE loyalty.sources ADD COLUMN paid_at_column text, ADD COLUMN dispatched_at_column text,
                            ADD COLUMN promised_at_column text, ADD COLUMN dispatch_by_column text;
COMMENT ON COLUMN loyalty.sources.paid_at_column IS 'payment time column (loyalty.track_orders): the order''s paid stage (operations)';
COMMENT ON COLUMN loyalty.sources.dispatched_at_column IS 'dispatch time column (handed to the carrier): the order''s dispatched stage (operations)';
COMMENT ON COLUMN loyalty.sources.promised_at_column IS 'delivery promise column: a date means by the end of that day in the shop''s zone, a timestamp by that moment; a changed value is a new promise revision';
COMMENT ON COLUMN loyalty.sources.dispatch_by_column IS 'the order''s own dispatch deadline column (wins over operations_settings.dispatch_within)';

-- ---------------------------------------------------------------- fulfilment columns

-- Why the fulfilment fields of a captured order are refused (the time bounds
-- of src/capture.c, as record_fulfilment's), or NULL. The delivery time is
-- checked with the order (loyalty._apply_changes).
CREATE FUNCTION loyalty._fulfilment_problem(p_fields jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT v.what || ' ' || v.problem
      FROM (VALUES (1, 'payment time', loyalty._time_problem((p_fields ->> 'paid_at')::timestamptz, NULL)),
                   (2, 'dispatch time', loyalty._time_problem((p_fields ->> 'dispatched_at')::timestamptz, NULL)),
                   (3, 'delivery promise', loyalty._time_problem((p_fields ->> 'promised_at')::timestamptz, NULL)),
                   (4, 'delivery promise',
                    loyalty._time_problem(CASE WHEN (p_fields ->> 'promised_on')::date > '100000-01-01'::date
                                                    AND isfinite((p_fields ->> 'promised_on')::date)
                                               THEN '100000-01-01'::timestamptz   -- beyond timestamp's range
                                               ELSE ((p_fields ->> 'promised_on')::date)::timestamp AT TIME ZONE 'UTC' END,
                                          NULL)),
                   (5, 'dispatch deadline', loyalty._time_problem((p_fields ->> 'dispatch_by')::timestamptz, NULL))
           ) v(i, what, problem)
     WHERE v.problem IS NOT NULL
     ORDER BY v.i
     LIMIT 1
$$;

-- The fulfilment columns of applied order changes (from loyalty._apply_changes),
-- as if the shop had called record_fulfilment at each captured version:
-- every version of an order whose latest change was applied, in capture
-- order (consecutive equal versions once), so a promise revised before the
-- queue drained is still revision 2, not the first promise. A NULL keeps what
-- is stored; a promise is noted at the time of the shop's write. The
-- versions and the applied orders are matched by one sort (window over both
-- arrays), not a join: the planner cannot size the arrays, and a nested
-- loop over them is quadratic in the batch.
CREATE FUNCTION loyalty._apply_fulfilment(p_changes loyalty.order_change[], p_checked loyalty.order_change_checked[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT v.order_ref, v.fields, v.captured_at
          FROM (SELECT x.*,
                       bool_or(x.is_applied) OVER (PARTITION BY x.order_ref, x.source_id) AS order_applied,
                       lag(x.fields) OVER (PARTITION BY x.order_ref, x.source_id, x.is_applied ORDER BY x.ord) AS before
                  FROM (SELECT ch.source_id, ch.order_ref, ch.ord, ch.fields, ch.captured_at, false AS is_applied,
                               ch.op = 'u' AND ch.problem IS NULL AS usable
                          FROM unnest(p_changes) WITH ORDINALITY
                               AS ch(source_id, op, order_ref, customer_id, amount, ordered_at, status, problem, fields,
                                     captured_at, ord)
                         WHERE ch.fields ?| ARRAY['paid_at', 'dispatched_at', 'delivered_at', 'promised_at', 'promised_on',
                                                  'dispatch_by']
                        UNION ALL
                        SELECT a.source_id, a.order_ref, NULL, NULL, NULL, true, false
                          FROM unnest(p_checked) a
                         WHERE a.op = 'u' AND a.reason IS NULL) x) v
         WHERE v.order_applied AND v.usable
           AND v.fields IS DISTINCT FROM v.before
           AND loyalty._time_problem((v.fields ->> 'delivered_at')::timestamptz, NULL) IS NULL
           AND loyalty._fulfilment_problem(v.fields) IS NULL
         ORDER BY v.ord
    LOOP
        PERFORM loyalty._record_fulfilment(f.order_ref, (f.fields ->> 'paid_at')::timestamptz,
                                           (f.fields ->> 'dispatched_at')::timestamptz,
                                           (f.fields ->> 'delivered_at')::timestamptz,
                                           (f.fields ->> 'promised_at')::timestamptz,
                                           (f.fields ->> 'dispatch_by')::timestamptz,
                                           (f.fields ->> 'promised_on')::date,
                                           coalesce(f.captured_at, now()));
    END LOOP;
END
$$;

-- ---------------------------------------------------------------- carrier-events tables

CREATE TABLE loyalty.shipment_sources (
    source_id            integer PRIMARY KEY DEFAULT nextval('loyalty.sources_source_id_seq'),
    relation_schema      text NOT NULL,
    relation_name        text NOT NULL,
    order_column         text NOT NULL,
    event_column         text NOT NULL,
    at_column            text NOT NULL,
    tracking_code_column text,
    detail_column        text,
    attached_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    backfilled_rows      bigint NOT NULL DEFAULT 0,
    UNIQUE (relation_schema, relation_name)
);
COMMENT ON TABLE loyalty.shipment_sources IS
'Shop carrier-events tables attached with loyalty.track_shipment_events() (ids shared with loyalty.sources, so loyalty.rejected_rows names either)';

-- Rejected rows of every kind of tracked table.
CREATE OR REPLACE VIEW loyalty.rejected_summary AS
SELECT s.source_id, s.source, r.reason,
       count(*) AS rows, min(r.rejected_at) AS first_rejected_at, max(r.rejected_at) AS last_rejected_at
  FROM loyalty.rejected_rows r
  JOIN (SELECT so.source_id, so.relation_schema || '.' || so.relation_name AS source FROM loyalty.sources so
        UNION ALL
        SELECT cs.source_id, cs.relation_schema || '.' || cs.relation_name FROM loyalty.customer_sources cs
        UNION ALL
        SELECT ss.source_id, ss.relation_schema || '.' || ss.relation_name FROM loyalty.shipment_sources ss) s
    ON s.source_id = r.source_id
 WHERE r.resolved_at IS NULL
 GROUP BY s.source_id, s.source, r.reason;

-- Check the columns of a carrier-events table (the classes of src/intake.c's
-- ShipmentFields); a clear error otherwise.
CREATE FUNCTION loyalty._shipment_columns_check(rel regclass, s loyalty.shipment_sources)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM loyalty._capture_column(rel, 'order_column', s.order_column, 'key');
    PERFORM loyalty._capture_column(rel, 'event_column', s.event_column, 'label');
    PERFORM loyalty._capture_column(rel, 'at_column', s.at_column, 'time');
    IF s.tracking_code_column IS NOT NULL THEN
        PERFORM loyalty._capture_column(rel, 'tracking_code_column', s.tracking_code_column, 'label');
    END IF;
    IF s.detail_column IS NOT NULL THEN
        PERFORM loyalty._capture_column(rel, 'detail_column', s.detail_column, 'detail');
    END IF;
END
$$;

-- Why a captured carrier event is refused (record_shipment_event's rules,
-- with the capture's key bounds), or NULL.
CREATE FUNCTION loyalty._shipment_problem(e loyalty.events)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN e.problem IS NOT NULL THEN e.problem
        WHEN e.order_ref IS NULL THEN 'order id is null'
        WHEN loyalty._key_problem(e.order_ref) IS NOT NULL THEN 'order id ' || loyalty._key_problem(e.order_ref)
        WHEN e.status IS NULL OR btrim(e.status) = '' THEN 'event is null or empty'
        WHEN length(btrim(e.status)) > 200 THEN 'event is longer than 200 characters'
        WHEN e.fields ->> 'at' IS NULL THEN 'event time is null'
        WHEN loyalty._time_problem((e.fields ->> 'at')::timestamptz, NULL) IS NOT NULL
             THEN 'event time ' || loyalty._time_problem((e.fields ->> 'at')::timestamptz, NULL)
        WHEN length(e.fields ->> 'tracking_code') > 200 THEN 'tracking code is longer than 200 characters'
        WHEN length((e.fields -> 'detail')::text) > 8000 THEN 'detail is longer than 8000 characters'
    END
$$;

-- One captured carrier event: recorded (loyalty._record_shipment_event), or
-- quarantined with its reason. A row's key in rejected_rows is its order, so
-- replay_rejected() reads every event of that order again (recording is
-- idempotent). An event of an erased customer's order (queued at the
-- erasure, or the shop's row captured again) keeps no tracking code or
-- detail, quarantined too (_record_shipment_event drops them when recording).
CREATE FUNCTION loyalty._apply_shipment_change(e loyalty.events)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    why text;
    erased boolean;
BEGIN
    IF e.op <> 'u' THEN
        RETURN;     -- an event that happened stays recorded
    END IF;
    erased := EXISTS (SELECT 1 FROM loyalty.orders o WHERE o.order_ref = e.order_ref AND o.customer_id LIKE 'erased:%');
    IF erased THEN
        e.fields := e.fields - 'tracking_code' - 'detail';
    END IF;
    why := loyalty._shipment_problem(e);
    IF why IS NULL THEN
        PERFORM loyalty._record_shipment_event(e.order_ref, e.status, (e.fields ->> 'at')::timestamptz,
                                               e.fields ->> 'tracking_code', e.fields -> 'detail');
    ELSE
        PERFORM loyalty._quarantine(e.source_id, e.order_ref, why,
                                    jsonb_build_object('order_id', e.order_ref, 'event', e.status) || coalesce(e.fields, '{}'));
    END IF;
END
$$;

-- Queue the rows of a tracked carrier-events table (all, or those of the
-- given orders) as captured events, read as the trigger reads them: the
-- table locked against ALTER TABLE and its columns checked again, then the
-- order and labels through their output functions, the time with built-in
-- conversions, the detail as src/intake.c's CapturePushDetail shapes it.
-- Returns the rows queued.
CREATE FUNCTION loyalty._capture_shipments(p_source_id integer, p_orders text[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.shipment_sources;
    rel regclass;
    detail_is_jsonb boolean;
    n bigint;
BEGIN
    SELECT * INTO STRICT s FROM loyalty.shipment_sources WHERE source_id = p_source_id;
    rel := to_regclass(format('%I.%I', s.relation_schema, s.relation_name));
    IF rel IS NULL THEN
        RAISE EXCEPTION 'tracked table %.% does not exist', s.relation_schema, s.relation_name
              USING ERRCODE = 'undefined_table', HINT = 'Attach the table again with loyalty.track_shipment_events().';
    END IF;
    EXECUTE format('LOCK TABLE %s IN ACCESS SHARE MODE', rel);
    PERFORM loyalty._shipment_columns_check(rel, s);
    SELECT a.atttypid = 'jsonb'::regtype INTO detail_is_jsonb FROM pg_attribute a
     WHERE a.attrelid = rel AND a.attname = s.detail_column AND NOT a.attisdropped;
    EXECUTE format(
        'INSERT INTO loyalty.events (source_id, op, order_ref, status, fields)
         SELECT %s, ''u'', loyalty._as_text(%I), loyalty._as_text(%I), jsonb_build_object(''at'', %s%s%s)
           FROM %s WHERE $1 IS NULL OR loyalty._as_text(%I) = ANY ($1)',
        s.source_id, s.order_column, s.event_column, loyalty._time_sql(s.at_column),
        CASE WHEN s.tracking_code_column IS NULL THEN ''
             ELSE format(', ''tracking_code'', loyalty._as_text(%I)', s.tracking_code_column) END,
        CASE WHEN s.detail_column IS NULL THEN ''
             WHEN detail_is_jsonb
             THEN format(', ''detail'', CASE WHEN %I IS NULL THEN NULL WHEN jsonb_typeof(%I) = ''object'' THEN %I
                                              ELSE jsonb_build_object(''value'', %I) END',
                         s.detail_column, s.detail_column, s.detail_column, s.detail_column)
             ELSE format(', ''detail'', CASE WHEN %I IS NULL THEN NULL ELSE jsonb_build_object(''text'', loyalty._as_text(%I)) END',
                         s.detail_column, s.detail_column) END,
        rel, s.order_column)
    USING p_orders;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE FUNCTION loyalty._track_shipment_events(p_rel regclass, source text, order_column text, event_column text,
                                               at_column text, tracking_code_column text, detail_column text,
                                               backfill boolean)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass := loyalty._resolve_table(p_rel, source);
    sch text;
    tbl text;
    prev loyalty.shipment_sources;
    s loyalty.shipment_sources;
    n bigint := 0;
BEGIN
    SELECT n2.nspname, c.relname INTO sch, tbl
      FROM pg_class c JOIN pg_namespace n2 ON n2.oid = c.relnamespace WHERE c.oid = rel;
    -- attached again: an optional column not named keeps what is tracked ('' stops tracking it)
    SELECT * INTO prev FROM loyalty.shipment_sources ss WHERE ss.relation_schema = sch AND ss.relation_name = tbl;
    s.relation_schema := sch;
    s.relation_name := tbl;
    s.order_column := order_column;
    s.event_column := event_column;
    s.at_column := at_column;
    s.tracking_code_column := nullif(coalesce(tracking_code_column, prev.tracking_code_column), '');
    s.detail_column := nullif(coalesce(detail_column, prev.detail_column), '');
    PERFORM loyalty._shipment_columns_check(rel, s);
    IF backfill IS NULL THEN
        RAISE EXCEPTION 'backfill must be true or false'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'true reads the rows already in the table now.';
    END IF;

    INSERT INTO loyalty.shipment_sources AS ss (relation_schema, relation_name, order_column, event_column, at_column,
                                                tracking_code_column, detail_column)
    VALUES (sch, tbl, s.order_column, s.event_column, s.at_column, s.tracking_code_column, s.detail_column)
    ON CONFLICT (relation_schema, relation_name) DO UPDATE
       SET order_column = excluded.order_column, event_column = excluded.event_column, at_column = excluded.at_column,
           tracking_code_column = excluded.tracking_code_column, detail_column = excluded.detail_column
    RETURNING ss.source_id INTO s.source_id;

    -- arguments: source, kind, then src/intake.c's ShipmentFields in order;
    -- rows are events that happened: a delete or truncate removes nothing
    EXECUTE format('CREATE OR REPLACE TRIGGER loyalty_capture_shipments AFTER INSERT OR UPDATE ON %I.%I '
                   'FOR EACH ROW EXECUTE FUNCTION loyalty.capture_row(%L, ''s'', %L, %L, %L, %L, %L)',
                   sch, tbl, s.source_id, s.order_column, s.event_column, s.at_column,
                   coalesce(s.tracking_code_column, ''), coalesce(s.detail_column, ''));

    IF backfill THEN
        n := loyalty._capture_shipments(s.source_id, NULL);
        WHILE loyalty.apply_events(100000) > 0 LOOP
        END LOOP;
        UPDATE loyalty.shipment_sources SET backfilled_rows = n WHERE source_id = s.source_id;
        RAISE NOTICE 'tracking carrier events of %.% (source %), % existing rows read', sch, tbl, s.source_id, n;
    ELSE
        RAISE NOTICE 'tracking carrier events of %.% (source %), no backfill', sch, tbl, s.source_id;
    END IF;
    RETURN n;
END
$$;

-- The table name is resolved in the caller's search_path (as track_orders).
CREATE FUNCTION loyalty.track_shipment_events(source text, order_column text, event_column text, at_column text,
                                              tracking_code_column text DEFAULT NULL, detail_column text DEFAULT NULL,
                                              backfill boolean DEFAULT true)
RETURNS bigint
LANGUAGE sql
AS $$
SELECT loyalty._track_shipment_events(loyalty._lookup_table(source), source, order_column, event_column, at_column,
                                      tracking_code_column, detail_column, backfill)
$$;
COMMENT ON FUNCTION loyalty.track_shipment_events(text, text, text, text, text, text, boolean) IS
'Attach the shop''s carrier-events table: every inserted or updated row is a carrier event of an order (as loyalty.record_shipment_event); existing rows are read now; returns rows read';

CREATE FUNCTION loyalty._untrack_shipment_events(p_rel regclass, source text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    IF p_rel IS NULL AND loyalty._dropped_source(source, 'loyalty.shipment_sources') THEN
        RAISE NOTICE 'table "%" was dropped, and its trigger with it; its recorded events stay', source;
        RETURN;
    END IF;
    rel := loyalty._resolve_table(p_rel, source);
    IF NOT EXISTS (SELECT 1 FROM loyalty.shipment_sources ss JOIN pg_class c ON c.oid = rel
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE ss.relation_schema = n.nspname AND ss.relation_name = c.relname) THEN
        RAISE EXCEPTION '"%" is not tracked', source
              USING ERRCODE = 'undefined_object', HINT = 'See loyalty.shipment_sources for the tracked carrier-events tables.';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS loyalty_capture_shipments ON %s', rel);
END
$$;
CREATE FUNCTION loyalty.untrack_shipment_events(source text)
RETURNS void
LANGUAGE sql
AS $$ SELECT loyalty._untrack_shipment_events(loyalty._lookup_table(source), source) $$;
COMMENT ON FUNCTION loyalty.untrack_shipment_events(text) IS 'Detach a tracked carrier-events table (its trigger); recorded events stay';

SELECT pg_catalog.pg_extension_config_dump('loyalty.shipment_sources', '');
