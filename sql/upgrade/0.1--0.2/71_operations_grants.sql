-- 0.1 -> 0.2: operations (issue 14), continued: the grants 90_grants.sql gives a
-- fresh install (its schedule() job is in 51_schedule_health.sql).
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
                AND pr.proname = ANY (ARRAY['_operations_settings', '_carrier_status_key', '_operations_recompute', '_business_start', '_whole_days', '_order_stages', '_operations_deadlines', '_check_time', '_check_text', 'record_fulfilment', 'record_shipment_event', 'record_return', 'record_contact', 'issue_notified', 'configure_operations', 'scan_operations', 'issues_as_of', 'order_stages_at', 'open_issues_at', 'order_timeline', '_wilson', 'sla_summary_at', 'experience_impact_at', '_cron_jobs', 'schedule', 'unschedule']) LOOP
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
