-- loyalty: base objects (roles, settings helpers). Assembled into loyalty--<version>.sql.
\echo Use "CREATE EXTENSION loyalty" to load this file. \quit

-- The roles of DESIGN.md. Roles are cluster-wide, so they may exist already
-- (another database, or a previous install); they are never dropped by us.
-- loyalty_condition is no one's: custom campaign conditions run as it
-- (src/condition.c), with rights to read their context and nothing else.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['loyalty_admin', 'loyalty_app', 'loyalty_sender', 'loyalty_reader',
                                'loyalty_support', 'loyalty_condition']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA loyalty TO loyalty_admin, loyalty_app, loyalty_sender, loyalty_reader, loyalty_support,
                                 loyalty_condition;
COMMENT ON SCHEMA loyalty IS 'Customer loyalty system: intake, customer state, RFM segments, models, rewards, journeys';

-- Advisory lock keys (first key 74200 = loyalty's class):
--   (74200, 1) event drain: one applier of captured changes at a time, so changes apply in capture order
--   (74200, 2) refresh: one scoring run at a time
--   (74200, 5) enqueue_due: one journeys run at a time, so cap and cooldown counts include what earlier runs wrote;
--              an opt-out (set_consent(..., false)) takes it shared, so it never misses a run's pending rows
--   (74200, 14) scan_operations: one scan at a time; configure_operations waits for a running scan


-- Days, everywhere in loyalty: whole UTC calendar days, the difference of the
-- two times' UTC dates, never negative (an order a little ahead, within
-- loyalty.future_tolerance, is 0 days old). Purchase days, the models'
-- inputs, RFM recency, days since the last order and the journeys' dates all
-- count this way; src/days.c is the same rule in C. docs/rules.md.
CREATE FUNCTION loyalty._utc_days(p_from timestamptz, p_to timestamptz)
RETURNS integer
AS 'MODULE_PATHNAME', 'loyalty_utc_days'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- A time's UTC date: the day an order counts on (the same rule, src/days.c).
CREATE FUNCTION loyalty._utc_date(p_time timestamptz)
RETURNS date
AS 'MODULE_PATHNAME', 'loyalty_utc_date'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Is this session running a pg_dump script or pg_restore? Both start every
-- session with the same fixed settings (pg_backup_archiver.c,
-- _doSetFixedOutputState), three of them away from their defaults:
-- check_function_bodies off, client_min_messages warning, row_security off.
-- A COPY or INSERT run by hand, also with check_function_bodies off, is not
-- a restore. (search_path, set to '' there too, cannot be read: callers run
-- with their own search_path. The statement text is not read either: COPY,
-- pg_dump --inserts and a psql script look alike there.) Callers that
-- destroy rows also check that the table is as CREATE EXTENSION left it
-- (loyalty._restore_replaces, 90_grants.sql).
CREATE FUNCTION loyalty._restoring()
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.current_setting('check_function_bodies') OPERATOR(pg_catalog.=) 'off'
       AND pg_catalog.current_setting('client_min_messages') OPERATOR(pg_catalog.=) 'warning'
       AND pg_catalog.current_setting('row_security') OPERATOR(pg_catalog.=) 'off'
$$;
