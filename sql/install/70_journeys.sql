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

-- (the attached customer tables: loyalty.customer_sources, 20_intake.sql)

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
SELECT pg_catalog.pg_extension_config_dump('loyalty.profiles', '');
COMMENT ON COLUMN loyalty.profiles.time_zone IS 'IANA zone name (loyalty.time_zones); NULL: journey_settings.default_time_zone';
COMMENT ON COLUMN loyalty.profiles.birthday_md IS 'month * 100 + day of the birthday (indexed: birthday campaigns look up a few days)';

-- Store one profile from a tracked table's captured row; never raises. p_fields
-- holds the tracked columns only (src/intake.c): a field absent is not tracked
-- and keeps the stored value (set by another source or loyalty.upsert_customer).
-- A refused key is quarantined (nothing stored); an unknown time zone is
-- stored as NULL and the row is listed in rejected_rows too.
CREATE FUNCTION loyalty._store_profile(p_source_id integer, p_customer text, p_fields jsonb)
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

-- A customer row deleted from a tracked customers table: the customer is
-- erased (loyalty.erase_customer, 82_privacy.sql). The one place a shop-side
-- customer delete is handled; a changed key or a TRUNCATE ('k' events) only
-- takes the profile of that table along.
CREATE FUNCTION loyalty._customer_deleted(p_source_id integer, p_customer text)
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

-- One captured change of a tracked customers table.
CREATE FUNCTION loyalty._apply_customer_change(e loyalty.events)
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
        RAISE NOTICE 'tracking customers of %.% (source %), % existing rows read', sch, tbl, sid, n;
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
    -- by name, never casting a stored name (another tracked table may be gone)
    IF NOT EXISTS (SELECT 1 FROM loyalty.customer_sources s JOIN pg_class c ON c.oid = rel
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE s.relation_schema = n.nspname AND s.relation_name = c.relname) THEN
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
SELECT pg_catalog.pg_extension_config_dump('loyalty.deliveries', '');

-- Delivery times from captured order changes (loyalty._apply_changes): the
-- capture trigger reads the delivery column with the rest of the order.
CREATE FUNCTION loyalty._apply_deliveries(p_changes loyalty.order_change_checked[])
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
SELECT pg_catalog.pg_extension_config_dump('loyalty.consent_history', '');

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
SELECT pg_catalog.pg_extension_config_dump('loyalty.consents', '');

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

-- ---------------------------------------------------------------- settings

CREATE TABLE loyalty.journey_settings (
    id                boolean PRIMARY KEY DEFAULT true CHECK (id),
    cap_messages      integer NOT NULL DEFAULT 2 CHECK (cap_messages >= 1),
    cap_window        interval NOT NULL DEFAULT '7 days' CHECK (cap_window > '0'),
    quiet_start       time NOT NULL DEFAULT '21:00',
    quiet_end         time NOT NULL DEFAULT '09:00',
    default_time_zone text NOT NULL DEFAULT 'UTC',
    updated_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- ops_hold (issue 14): docs/operations.md
    ops_hold_after    interval NOT NULL DEFAULT '7 days' CHECK (ops_hold_after >= '0')
);
INSERT INTO loyalty.journey_settings DEFAULT VALUES;
COMMENT ON TABLE loyalty.journey_settings IS 'Journey policy settings (one row); change with loyalty.configure_journeys()';
SELECT pg_catalog.pg_extension_config_dump('loyalty.journey_settings', '');
COMMENT ON COLUMN loyalty.journey_settings.cap_messages IS 'at most this many messages per customer within cap_window (all campaigns)';
COMMENT ON COLUMN loyalty.journey_settings.quiet_start IS 'quiet hours start (customer''s local time); equal to quiet_end: no quiet hours';
COMMENT ON COLUMN loyalty.journey_settings.quiet_end IS 'quiet hours end (local time): a message falling in quiet hours is due then';
COMMENT ON COLUMN loyalty.journey_settings.default_time_zone IS 'time zone of customers without one';
COMMENT ON COLUMN loyalty.journey_settings.ops_hold_after IS 'marketing waits this long after a customer''s last order issue is resolved (ops_hold; 0: only while it is open)';

CREATE FUNCTION loyalty.configure_journeys(cap_messages integer DEFAULT NULL, cap_window interval DEFAULT NULL,
                                           quiet_start time DEFAULT NULL, quiet_end time DEFAULT NULL,
                                           default_time_zone text DEFAULT NULL, ops_hold_after interval DEFAULT NULL)
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
    IF ops_hold_after IS NOT NULL AND (ops_hold_after < '0' OR NOT isfinite(ops_hold_after)) THEN
        RAISE EXCEPTION 'ops_hold_after must be a finite interval of at least 0, not %', ops_hold_after
              USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. ''7 days''; 0 holds marketing only while an issue is open.';
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
           ops_hold_after = coalesce(configure_journeys.ops_hold_after, s.ops_hold_after),
           updated_at = now()
    RETURNING * INTO st;
    RETURN st;
END
$$;
COMMENT ON FUNCTION loyalty.configure_journeys(integer, interval, time, time, text, interval) IS
'Change the journey policy: frequency cap, quiet hours, default time zone, marketing hold after an order issue (NULL keeps a setting); returns the settings in force';

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
    -- ops_hold (issue 14): docs/operations.md
    purpose       text NOT NULL DEFAULT 'marketing' CHECK (purpose IN ('marketing', 'service')),
    CHECK (active_from IS NULL OR active_until IS NULL OR active_from < active_until)
);
COMMENT ON TABLE loyalty.campaigns IS 'Campaigns the shop edits: kind, channel, template, params, priority, cooldown, holdout share, active window';
SELECT pg_catalog.pg_extension_config_dump('loyalty.campaigns', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.campaigns_campaign_id_seq', '');
COMMENT ON COLUMN loyalty.campaigns.kind IS 'welcome, post_purchase, repurchase_reminder, win_back, birthday, points_expiring, tier_changed, milestone, custom; service notices (one per order issue): order_delayed, parcel_stalled, delivery_failed, refund_delayed; delivered_check_in (one per delivered order that had an issue)';
COMMENT ON COLUMN loyalty.campaigns.params IS 'per-kind parameters (README: Journeys); missing ones are filled with their defaults when saved';
COMMENT ON COLUMN loyalty.campaigns.priority IS 'lower wins: when the frequency cap allows fewer messages than are due, the lowest priority numbers go';
COMMENT ON COLUMN loyalty.campaigns.cooldown IS 'at most one message of this campaign per customer within this interval';
COMMENT ON COLUMN loyalty.campaigns.holdout_share IS 'share of eligible customers held out (recorded, never sent), chosen by a hash of campaign and customer';
COMMENT ON COLUMN loyalty.campaigns.active_from IS 'occasions before this are ignored; NULL: since the campaign was switched on (activated_at)';
COMMENT ON COLUMN loyalty.campaigns.valid_for IS 'an occasion missed (nothing ran) is still sent within this long, and recorded as expired after';
COMMENT ON COLUMN loyalty.campaigns.condition IS 'custom kind: a boolean SQL expression over the columns of loyalty.journey_context';
COMMENT ON COLUMN loyalty.campaigns.purpose IS 'marketing (held while the customer has an order issue: ops_hold) or service';
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
               points bigint, tier text, points_pending bigint)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.customer_id, p.name, p.email, p.phone, p.birthday, p.time_zone,
           s.orders, s.first_order_at, s.last_order_at,
           loyalty._utc_days(s.last_order_at, as_of),
           s.net_spend, s.avg_spend, r.r_score, r.f_score, r.m_score, r.segment,
           (coalesce(pl.available, 0) - coalesce(a.debt, 0))::bigint, t.tier, coalesce(pl.pending, 0)::bigint
      FROM loyalty.customer_state s
      LEFT JOIN loyalty.profiles p ON p.customer_id = s.customer_id
      LEFT JOIN loyalty.customer_rfm r ON r.customer_id = s.customer_id
      LEFT JOIN loyalty.accounts a ON a.customer_id = s.customer_id
      LEFT JOIN loyalty.customer_tiers t ON t.customer_id = s.customer_id
      -- points as loyalty.balance() counts them, as of as_of: available
      -- (spendable, less debt) and pending (return window) apart, as in
      -- the payloads (issue 12: 495 points shown of which 175 usable).
      -- Grouped, not LATERAL: the planner drops the join when the
      -- condition does not use points.
      LEFT JOIN (SELECT l.customer_id,
                        sum(l.remaining) FILTER (WHERE l.available_at <= as_of) AS available,
                        sum(l.remaining) FILTER (WHERE l.available_at > as_of) AS pending
                   FROM loyalty.point_lots l
                  WHERE l.expires_at IS NULL OR l.expires_at > as_of
                  GROUP BY l.customer_id) pl ON pl.customer_id = s.customer_id;
END;

-- Custom conditions run as loyalty_condition (src/condition.c): it reads the
-- context and nothing else. The check when a campaign is saved: the
-- condition's allowlist (22023), then planned against the context as that role.
GRANT EXECUTE ON FUNCTION loyalty._journey_context(timestamptz) TO loyalty_condition;
GRANT EXECUTE ON FUNCTION loyalty._utc_days(timestamptz, timestamptz) TO loyalty_condition;
GRANT SELECT ON loyalty.customer_state, loyalty.profiles, loyalty.customer_rfm, loyalty.accounts, loyalty.customer_tiers
   TO loyalty_condition;
GRANT SELECT ON loyalty.point_lots TO loyalty_condition;
CREATE FUNCTION loyalty._check_condition(condition text)
RETURNS void
LANGUAGE c STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', '_check_condition';

-- The same for readers (loyalty_reader reads the view below): SECURITY DEFINER.
CREATE FUNCTION loyalty.journey_context_at(as_of timestamptz)
RETURNS TABLE (customer_id text, name text, email text, phone text, birthday date, time_zone text,
               orders integer, first_order_at timestamptz, last_order_at timestamptz, days_since_last_order integer,
               net_spend numeric, avg_spend numeric, r_score smallint, f_score smallint, m_score smallint, segment text,
               points bigint, tier text, points_pending bigint)
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
COMMENT ON COLUMN loyalty.journey_context.customer_id IS 'the shop''s customer key, as text (customers with orders)';
COMMENT ON COLUMN loyalty.journey_context.name IS 'the customer''s name (loyalty.profiles)';
COMMENT ON COLUMN loyalty.journey_context.email IS 'the customer''s email address';
COMMENT ON COLUMN loyalty.journey_context.phone IS 'the customer''s phone number';
COMMENT ON COLUMN loyalty.journey_context.birthday IS 'the customer''s birthday';
COMMENT ON COLUMN loyalty.journey_context.time_zone IS 'the customer''s IANA time zone (NULL: journey_settings.default_time_zone)';
COMMENT ON COLUMN loyalty.journey_context.orders IS 'counted orders (status in the counted set, not fully refunded)';
COMMENT ON COLUMN loyalty.journey_context.first_order_at IS 'time of the first counted order';
COMMENT ON COLUMN loyalty.journey_context.last_order_at IS 'time of the last counted order';
COMMENT ON COLUMN loyalty.journey_context.days_since_last_order IS 'whole UTC days from the last counted order to now (loyalty._utc_days)';
COMMENT ON COLUMN loyalty.journey_context.net_spend IS 'spend on counted orders less refunds';
COMMENT ON COLUMN loyalty.journey_context.avg_spend IS 'net spend per counted order';
COMMENT ON COLUMN loyalty.journey_context.r_score IS 'RFM recency score, 1 (longest ago) to bins (most recent)';
COMMENT ON COLUMN loyalty.journey_context.f_score IS 'RFM frequency score, 1 (fewest orders) to bins';
COMMENT ON COLUMN loyalty.journey_context.m_score IS 'RFM monetary score, 1 (lowest spend) to bins';
COMMENT ON COLUMN loyalty.journey_context.segment IS 'named RFM segment (loyalty.segment_rules)';
COMMENT ON COLUMN loyalty.journey_context.tier IS 'the customer''s tier (NULL: none)';
COMMENT ON COLUMN loyalty.journey_context.points IS 'points the customer can spend now (available, less any debt; as loyalty.balance().available)';
COMMENT ON COLUMN loyalty.journey_context.points_pending IS 'points earned but not yet available (return window, future available_at)';

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
        WHEN 'win_back' THEN '{"max_days_since_last": 365, "min_days_since_last": 30}'
        WHEN 'birthday' THEN '{"days_before": 0}'
        WHEN 'points_expiring' THEN '{"days_before": 14, "min_points": 1}'
        WHEN 'tier_changed' THEN '{"direction": "up"}'
        WHEN 'milestone' THEN '{}'
        WHEN 'custom' THEN '{"occasion": "once"}'
        -- service notices (issue 14, docs/operations.md): one per order issue
        WHEN 'order_delayed' THEN '{"message": "Your order is running late. We are on it and will keep you posted.", "remind_after_hours": 0}'
        WHEN 'parcel_stalled' THEN '{"message": "Your parcel has not moved for a while. We have asked the carrier to trace it.", "remind_after_hours": 0}'
        WHEN 'delivery_failed' THEN '{"message": "Your parcel could not be delivered. We are sorting it out with the carrier.", "remind_after_hours": 0}'
        WHEN 'refund_delayed' THEN '{"message": "Your refund is taking longer than we promised. We are processing it now.", "remind_after_hours": 0}'
        WHEN 'delivered_check_in' THEN '{"message": "Your order has arrived at last. Is everything all right?", "hours_after": 24}'
    END::jsonb;
    IF defaults IS NULL THEN
        RAISE EXCEPTION 'unknown campaign kind %', coalesce(quote_literal(p_kind), 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Kinds: welcome, post_purchase, repurchase_reminder, win_back, birthday, points_expiring, tier_changed, milestone, custom; service notices: order_delayed, parcel_stalled, delivery_failed, refund_delayed, delivered_check_in.';
    END IF;
    IF p_params IS NULL OR jsonb_typeof(p_params) <> 'object' THEN
        RAISE EXCEPTION 'params of a % campaign must be a JSON object', p_kind
              USING ERRCODE = 'invalid_parameter_value', HINT = format('For example %s.', defaults);
    END IF;
    allowed := CASE p_kind WHEN 'win_back' THEN ARRAY['max_days_since_last', 'min_days_since_last', 'p_alive_below', 'segments']
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
        ELSIF p_kind = 'win_back' AND NOT ((p->>'min_days_since_last')::integer BETWEEN 0 AND (p->>'max_days_since_last')::integer) THEN
            msg := 'min_days_since_last must be between 0 and max_days_since_last';
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
        ELSIF p_kind IN ('order_delayed', 'parcel_stalled', 'delivery_failed', 'refund_delayed', 'delivered_check_in')
              AND (jsonb_typeof(p->'message') <> 'string' OR length(btrim(p->>'message')) NOT BETWEEN 1 AND 1000) THEN
            msg := 'message must be a text of 1 to 1000 characters (what the shop does about it)';
        ELSIF p_kind IN ('order_delayed', 'parcel_stalled', 'delivery_failed', 'refund_delayed')
              AND NOT ((p->>'remind_after_hours')::integer BETWEEN 0 AND 2160) THEN
            msg := 'remind_after_hours must be between 0 (no second notice) and 2160';
        ELSIF p_kind = 'delivered_check_in' AND NOT ((p->>'hours_after')::integer BETWEEN 0 AND 720) THEN
            msg := 'hours_after must be between 0 and 720';
        END IF;
    EXCEPTION WHEN data_exception THEN
        msg := 'a parameter has the wrong type: ' || SQLERRM;
    END;
    IF msg IS NOT NULL THEN
        RAISE EXCEPTION 'invalid params for a % campaign: %', p_kind, msg
              USING ERRCODE = 'invalid_parameter_value', HINT = format('Parameters with their defaults: %s.', defaults);
    END IF;

    IF p_kind = 'custom' THEN
        -- the allowlist (never executed here), then planned against the
        -- context as loyalty_condition (nothing is read: LIMIT 0)
        BEGIN
            PERFORM loyalty._check_condition(p_condition);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
            IF coalesce(hint, '') = '' THEN
                SELECT 'Write a boolean SQL expression over the columns of loyalty.journey_context: '
                       || string_agg(a.attname, ', ' ORDER BY a.attnum) || '.' INTO hint
                  FROM pg_attribute a
                 WHERE a.attrelid = 'loyalty.journey_context'::regclass AND a.attnum > 0;
            END IF;
            RAISE EXCEPTION '%', CASE WHEN msg LIKE 'condition % is not allowed: %' THEN msg
                                      ELSE format('condition %s is not valid: %s', quote_literal(p_condition), msg) END
                  USING ERRCODE = 'invalid_parameter_value', HINT = hint;
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
    -- service notices (issue 14) are service messages whatever was asked:
    -- as marketing they would always be held (their customer has an issue)
    IF NEW.kind IN ('order_delayed', 'parcel_stalled', 'delivery_failed', 'refund_delayed', 'delivered_check_in') THEN
        NEW.purpose := 'service';
    END IF;
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
