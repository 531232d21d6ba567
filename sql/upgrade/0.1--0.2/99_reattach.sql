-- 0.1 -> 0.2, last: data migrations that call loyalty's functions run after
-- every definition is final (a function named in an earlier fragment has its
-- current body from sql/install/, which may read columns added after it).

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
