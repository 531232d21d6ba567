-- Upgrade in place: a shop used at 0.1 (tracked orders, scores and fits, ledger,
-- customers with consent, an active campaign, outbox rows) is updated to the
-- current version by ALTER EXTENSION ... UPDATE. Its data is intact, it keeps
-- working, and its schema equals a fresh install of the current version.
-- Version 0.1's SQL runs against the current shared library first, as it does
-- on a server between installing a new package and ALTER EXTENSION.
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty VERSION '0.1';
SELECT extversion FROM pg_extension WHERE extname = 'loyalty';

-- ---- a used shop at 0.1
CREATE TABLE upg_orders (id bigint PRIMARY KEY, customer bigint, total numeric(10,2),
                          created_at timestamptz, status text);
-- 300 customers, 1 to 6 orders each over 2025, a few cancelled
INSERT INTO upg_orders
SELECT c * 10 + k, c, 5 + (c * 7 + k * 13) % 90,
       timestamptz '2025-01-01' + ((c * 37 + k * 53) % 360) * interval '1 day' + k * interval '1 hour',
       CASE WHEN (c + k) % 17 = 0 THEN 'cancelled' ELSE 'paid' END
  FROM generate_series(1, 300) c, generate_series(1, 6) k
 WHERE k <= 1 + c % 6;
SELECT loyalty.track_orders('public.upg_orders', customer_column => 'customer', amount_column => 'total',
                            ordered_at_column => 'created_at', order_id_column => 'id',
                            status_column => 'status', counted_statuses => ARRAY['paid']) > 0 AS backfilled;
SELECT loyalty.record_order('app-1', 'app-order-1', 42.50, '2025-06-01') > 0 AS recorded;
SELECT loyalty.record_refund('app-order-1');
SELECT events_applied, customers FROM loyalty.refresh(as_of => '2026-01-01');
SELECT count(*) > 0 AS fitted FROM loyalty.model_fits;
SELECT loyalty.earn('1', 500, 'welcome bonus', 'bonus-1') > 0 AS earned;
SELECT loyalty.redeem('1', 200, 'voucher', 'voucher-1') > 0 AS redeemed;
SELECT (loyalty.upsert_customer('1', name => 'Ann', email => 'ann@example.com', time_zone => 'Europe/Berlin')).customer_id;
SELECT (loyalty.upsert_customer('n1', name => 'Ned', email => 'ned@example.com')).customer_id;
SELECT (loyalty.upsert_customer('n2', name => 'Nia', email => 'nia@example.com')).customer_id;
SELECT loyalty.set_consent(c, 'email', true, 'signup') IS NOT NULL AS consent FROM unnest(ARRAY['1', 'n1', 'n2']) c;
-- welcome, switched on at a fixed clock (no quiet hours, no holdout): due an hour after the first order
SELECT quiet_start = quiet_end AS no_quiet_hours
  FROM loyalty.configure_journeys(quiet_start => '00:00', quiet_end => '00:00');
UPDATE loyalty.campaigns SET active = true, holdout_share = 0, valid_for = '100 years', active_from = '2026-01-01' WHERE name = 'welcome';
UPDATE loyalty.campaigns SET activated_at = active_from WHERE active;
SELECT loyalty.record_order(c, 'o-' || c, 20, '2026-06-14 10:00') > 0 AS ordered FROM unnest(ARRAY['n1', 'n2']) c;
SELECT campaign, pending FROM loyalty.enqueue_due('2026-06-15 12:00') WHERE pending > 0;
SELECT count(*) AS outbox_rows FROM loyalty.outbox;
SELECT loyalty.ack_message(m.message_id, m.claim_token) AS acked FROM loyalty.claim_messages(1, '1 minute') m;

-- every table pg_dump keeps, fingerprinted over the columns it has now
CREATE TEMP TABLE before_fp AS
SELECT t.oid::regclass::text AS tab,
       (SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
         WHERE attrelid = t.oid AND attnum > 0 AND NOT attisdropped) AS cols,
       NULL::text AS fp
  FROM pg_extension e, unnest(e.extconfig) t(oid)
 WHERE e.extname = 'loyalty' AND (SELECT relkind FROM pg_class WHERE oid = t.oid) = 'r';
CREATE FUNCTION pg_temp.fingerprint(tab text, cols text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
    EXECUTE format('SELECT count(*) || '' '' || coalesce(md5(string_agg(x::text, ''|'' ORDER BY x::text)), '''')
                      FROM (SELECT %s FROM %s) x', cols, tab) INTO r;
    RETURN r;
END $$;
UPDATE before_fp SET fp = pg_temp.fingerprint(tab, cols);
SELECT count(*) >= 20 AS tables_kept_by_dump FROM before_fp;

-- ---- the upgrade
ALTER EXTENSION loyalty UPDATE;
SELECT extversion = (SELECT default_version FROM pg_available_extensions WHERE name = 'loyalty') AS current
  FROM pg_extension WHERE extname = 'loyalty';

-- the data is as it was (a difference is listed)
SELECT tab, 'changed by the upgrade' AS problem FROM before_fp
 WHERE to_regclass(tab) IS NULL OR pg_temp.fingerprint(tab, cols) IS DISTINCT FROM fp
 ORDER BY tab;

-- and the shop keeps working: capture, refresh, journeys, sender, ledger
INSERT INTO upg_orders VALUES (99999, 1, 77.00, '2025-12-30', 'paid');
SELECT events_applied, customers FROM loyalty.refresh(as_of => '2026-01-02', fit_models => true);
SELECT orders, net_spend FROM loyalty.customer_state WHERE customer_id = '1';
SELECT (loyalty.upsert_customer('n3', name => 'Noa', email => 'noa@example.com')).customer_id;
SELECT loyalty.set_consent('n3', 'email', true, 'signup') IS NOT NULL AS consent;
SELECT loyalty.record_order('n3', 'o-n3', 20, '2026-06-16 10:00') > 0 AS ordered;
SELECT campaign, pending FROM loyalty.enqueue_due('2026-06-16 12:00') WHERE pending > 0;
SELECT count(*) AS claimed FROM loyalty.claim_messages(5, '1 minute');
SELECT status, count(*) FROM loyalty.outbox GROUP BY 1 ORDER BY 1;
SELECT available FROM loyalty.balance('1');
SELECT count(*) AS ledger_problems FROM loyalty.verify_ledger();

-- ---- the schema equals a fresh install of the current version
\i test/sql/catalog.sql
CREATE TEMP TABLE upgraded AS SELECT * FROM pg_temp.loyalty_catalog();
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
CREATE TEMP TABLE fresh AS SELECT * FROM pg_temp.loyalty_catalog();
SELECT count(*) > 500 AS catalog_rows FROM fresh;
-- every difference, both ways; the expected output is none
(SELECT 'upgrade only' AS side, * FROM upgraded EXCEPT SELECT 'upgrade only', * FROM fresh)
UNION ALL
(SELECT 'fresh only', * FROM fresh EXCEPT SELECT 'fresh only', * FROM upgraded)
ORDER BY kind, object, side;
DROP TABLE upg_orders;
