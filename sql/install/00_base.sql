-- loyalty: base objects (roles, settings helpers). Assembled into loyalty--<version>.sql.
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
--   (74200, 14) scan_operations: one scan at a time; configure_operations waits for a running scan


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
