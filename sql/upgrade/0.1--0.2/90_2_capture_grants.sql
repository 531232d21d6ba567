
-- ---------------------------------------------------------------- 90_2_capture_grants
-- What 90_grants.sql gives the objects of 90_0 and 90_1 (and the operations
-- writers they share, 78_operations.sql) in a fresh install: nothing for
-- PUBLIC, and for loyalty_admin EXECUTE on the functions and, on the table,
-- the privileges it holds on loyalty.orders.
DO $$
DECLARE
    f regprocedure;
    p text;
BEGIN
    FOR f IN SELECT pr.oid::regprocedure FROM pg_catalog.pg_proc pr
              WHERE pr.pronamespace = 'loyalty'::regnamespace
                AND pr.proname = ANY (ARRAY['_record_fulfilment', '_record_shipment_event', '_fulfilment_problem',
                                            '_apply_fulfilment', '_shipment_columns_check', '_shipment_problem',
                                            '_apply_shipment_change', '_capture_shipments',
                                            '_track_shipment_events', 'track_shipment_events', '_untrack_shipment_events',
                                            'untrack_shipment_events', '_order_fields_sql', '_dropped_source',
                                            '_track_orders', 'track_orders']) LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO loyalty_admin', f);
    END LOOP;
    EXECUTE 'REVOKE ALL ON loyalty.shipment_sources FROM PUBLIC';
    FOREACH p IN ARRAY ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'] LOOP
        IF pg_catalog.has_table_privilege('loyalty_admin', 'loyalty.orders', p) THEN
            EXECUTE pg_catalog.format('GRANT %s ON loyalty.shipment_sources TO loyalty_admin', p);
        END IF;
    END LOOP;
END
$$;
