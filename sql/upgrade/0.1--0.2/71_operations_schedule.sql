-- 0.1 -> 0.2: operations (issue 14), continued: schedule()'s operations job
-- (sql/install/75_schedule.sql) and the grants 90_grants.sql gives a fresh install.

-- ---------------------------------------------------------------- schedule(): the operations job
DROP FUNCTION loyalty.unschedule(text, boolean);
DROP FUNCTION loyalty.schedule(text, text, text, text, text, text, boolean);
DROP FUNCTION loyalty._cron_jobs(text, text, text, text, text);
-- The jobs: name, schedule (NULL: not wanted), command.
CREATE FUNCTION loyalty._cron_jobs(enqueue text, notify text, expire text, tiers text, refresh text, operations text)
RETURNS TABLE (job text, schedule text, command text)
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('loyalty-enqueue', enqueue, 'SELECT loyalty.enqueue_due()'),
           ('loyalty-notify',  notify,  'SELECT loyalty.notify_due()'),
           ('loyalty-expire',  expire,  'SELECT loyalty.expire_points()'),
           ('loyalty-tiers',   tiers,   'SELECT loyalty.recompute_tiers()'),
           ('loyalty-refresh', refresh, 'SELECT loyalty.refresh()'),
           ('loyalty-operations', operations, 'SELECT loyalty.scan_operations()')
$$;

CREATE FUNCTION loyalty.schedule(
    enqueue text DEFAULT '* * * * *',
    notify  text DEFAULT '* * * * *',
    expire  text DEFAULT '15 3 * * *',
    tiers   text DEFAULT '30 3 * * *',
    refresh text DEFAULT '5 * * * *',
    cron_connection text DEFAULT NULL,
    dry_run boolean DEFAULT false,
    operations text DEFAULT '*/5 * * * *')
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
    FOR j IN SELECT * FROM loyalty._cron_jobs(enqueue, notify, expire, tiers, refresh, operations) LOOP
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
COMMENT ON FUNCTION loyalty.schedule(text, text, text, text, text, text, boolean, text) IS
'Install or update the pg_cron jobs (enqueue, notify, expire, tiers, refresh, operations; a NULL schedule leaves a job out), in this database or in pg_cron''s through dblink; dry_run => true only returns the statements';

CREATE FUNCTION loyalty.unschedule(cron_connection text DEFAULT NULL, dry_run boolean DEFAULT false)
RETURNS TABLE (job_name text, action text, statement text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    RETURN QUERY
    SELECT s.job_name, CASE s.action WHEN 'unschedule' THEN 'planned' ELSE s.action END, s.statement
      FROM loyalty.schedule(NULL, NULL, NULL, NULL, NULL, cron_connection, dry_run, NULL) s;
END
$$;
COMMENT ON FUNCTION loyalty.unschedule(text, boolean) IS
'Remove loyalty''s pg_cron jobs (those of this database); dry_run => true only returns the statements';

-- What 90_grants.sql gives these objects in a fresh install (its blanket
-- statements run before them there): nothing for PUBLIC, and for
-- loyalty_admin EXECUTE on the functions and, on the tables and sequences,
-- the privileges it holds on loyalty.orders and loyalty.sources_source_id_seq
-- (so this follows whatever the grants fragment decides for every table).
DO $$
DECLARE
    f regprocedure;
    t text;
    p text;
BEGIN
    FOR f IN SELECT pr.oid::regprocedure FROM pg_catalog.pg_proc pr
              WHERE pr.pronamespace = 'loyalty'::regnamespace
                AND pr.proname = ANY (ARRAY['_operations_settings', '_carrier_status_key', '_operations_recompute', '_business_start', '_whole_days', '_order_stages', '_operations_deadlines', '_check_order_ref', '_check_time', 'record_fulfilment', 'record_shipment_event', 'record_return', 'record_contact', 'issue_notified', 'configure_operations', 'scan_operations', 'issues_as_of', 'order_stages_at', 'open_issues_at', 'order_timeline', '_wilson', 'sla_summary_at', 'experience_impact_at', '_cron_jobs', 'schedule', 'unschedule']) LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO loyalty_admin', f);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['operations_settings', 'business_holidays', 'order_lifecycle', 'order_promises', 'shipment_statuses', 'shipment_events', 'order_returns', 'support_contacts', 'operations_changes', 'order_deadlines', 'order_issues', 'operations_runs', 'recovery_rules', 'recovery_grants', 'order_stages', 'open_issues', 'sla_summary', 'experience_impact'] LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON loyalty.%I FROM PUBLIC', t);
        FOREACH p IN ARRAY ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'] LOOP
            IF pg_catalog.has_table_privilege('loyalty_admin', 'loyalty.orders', p) THEN
                EXECUTE pg_catalog.format('GRANT %s ON loyalty.%I TO loyalty_admin', p, t);
            END IF;
        END LOOP;
    END LOOP;
    FOREACH t IN ARRAY ARRAY['recovery_rules_rule_id_seq', 'order_issues_issue_id_seq', 'shipment_events_event_id_seq', 'support_contacts_contact_id_seq'] LOOP
        FOREACH p IN ARRAY ARRAY['USAGE', 'SELECT', 'UPDATE'] LOOP
            IF pg_catalog.has_sequence_privilege('loyalty_admin', 'loyalty.sources_source_id_seq', p) THEN
                EXECUTE pg_catalog.format('GRANT %s ON SEQUENCE loyalty.%I TO loyalty_admin', p, t);
            END IF;
        END LOOP;
    END LOOP;
END
$$;
