-- Attacks on the capture path (issue 11, findings 3, 4, 9, 10, 11): each must
-- fail safely. The attacker owns a tracked shop table (or a type, a cast, an
-- operator in public) but is not superuser; loyalty's code runs as the
-- extension owner (a superuser here).
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
RESET client_min_messages;
SET TimeZone = 'UTC';
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; m text; h text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT, h = PG_EXCEPTION_HINT;
    RETURN st || ': ' || m || coalesce(' | hint: ' || h, '');
END $$;

-- ---- finding 3: a cast of the shop's type runs as whoever reads the row
CREATE ROLE sc_owner NOLOGIN;
GRANT CREATE ON SCHEMA public TO sc_owner;
SET ROLE sc_owner;
CREATE TYPE sc_state AS ENUM ('paid', 'cancelled');
CREATE TABLE sc_log (who text, at timestamptz DEFAULT now());
-- runs ALTER ROLE when it can, and records that it ran
CREATE FUNCTION sc_evil(sc_state) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.sc_log (who) VALUES (current_user);
    BEGIN
        EXECUTE 'ALTER ROLE sc_owner SUPERUSER';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    RETURN '"x"'::json;
END $$;
CREATE FUNCTION sc_evil_text(sc_state) RETURNS text LANGUAGE sql AS $$ SELECT (sc_evil($1))::text $$;
CREATE CAST (sc_state AS json) WITH FUNCTION sc_evil(sc_state) AS ASSIGNMENT;
CREATE CAST (sc_state AS text) WITH FUNCTION sc_evil_text(sc_state);
CREATE TABLE sc_orders (id bigint PRIMARY KEY, customer text, total numeric, placed timestamptz,
                        state sc_state, delivered timestamptz);
CREATE TABLE sc_customers (id text PRIMARY KEY, name text, mood sc_state, tz text);
INSERT INTO sc_orders VALUES (1, 'c1', 10, '2026-01-05', 'paid', NULL);
INSERT INTO sc_customers VALUES ('c1', 'Ann', 'paid', NULL);
GRANT SELECT ON sc_log TO PUBLIC;
RESET ROLE;
-- the owner's cast works where the owner calls it (it is the owner's own right)
SELECT count(*) AS casts_as_owner_before FROM sc_log;

-- attach (the admin does it), with the enum as status and as a customer field; backfill reads every row
SELECT loyalty.track_orders('sc_orders', customer_column => 'customer', amount_column => 'total',
                            ordered_at_column => 'placed', order_id_column => 'id', status_column => 'state',
                            counted_statuses => ARRAY['paid']) AS backfilled;
SELECT loyalty.track_deliveries('sc_orders', 'delivered');
SELECT loyalty.configure_rewards(earn_on_orders => true, earn_orders_since => '2026-01-01') IS NOT NULL AS earning;
SELECT loyalty.track_customers('sc_customers', 'id', name_column => 'name', phone_column => 'mood') AS customers_read;
-- the shop writes as the owner; loyalty applies and replays as the superuser
SET ROLE sc_owner;
INSERT INTO sc_orders VALUES (2, 'c1', 20, '2026-01-06', 'paid', '2026-01-08');
UPDATE sc_orders SET state = 'cancelled' WHERE id = 1;
INSERT INTO sc_customers VALUES ('c2', 'Bob', 'cancelled', NULL);
DELETE FROM sc_customers WHERE id = 'c1';
RESET ROLE;
SELECT loyalty.apply_events() AS applied;
SELECT (loyalty.refresh(fit_models => false)).events_applied;
SELECT loyalty.replay_rejected();
CALL loyalty.backfill('sc_orders', 1);
-- only the trigger's typed values were read: the owner's casts never ran, the owner is not superuser
SELECT count(*) AS evil_casts_run FROM sc_log;
SELECT rolsuper AS owner_is_superuser FROM pg_roles WHERE rolname = 'sc_owner';
SELECT order_ref, CASE WHEN customer_id LIKE 'erased:%' THEN '(pseudonym)' ELSE customer_id END AS customer_id, status, counted
  FROM loyalty.orders ORDER BY order_ref;   -- order 1's customer c1 was erased (deleted above): it keeps the pseudonym
SELECT order_ref, delivered_at FROM loyalty.deliveries ORDER BY 1;
SELECT customer_id, name, phone FROM loyalty.profiles ORDER BY 1;
-- no PL/pgSQL trigger of loyalty's on the shop's tables reads rows: one C row trigger each
SELECT c.relname, t.tgname, p.proname, p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'c') AS in_c
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid
 WHERE c.relname IN ('sc_orders', 'sc_customers') AND NOT t.tgisinternal AND (t.tgtype & 1) = 1
 ORDER BY 1, 2;
SELECT count(*) AS shop_row_readers_left FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'loyalty' AND p.prosrc ~ 'to_jsonb\((NEW|OLD)\)';

-- a type loyalty cannot read safely is refused at attach time
CREATE DOMAIN sc_money AS numeric CHECK (VALUE >= 0);
CREATE TABLE sc_bad (id sc_state PRIMARY KEY, k text, total sc_money, at_ timestamptz, total2 numeric, k2 sc_state);
SELECT pg_temp.err($$SELECT loyalty.track_orders('sc_bad', 'k', 'total', 'at_', 'k')$$);
SELECT pg_temp.err($$SELECT loyalty.track_orders('sc_bad', 'k', 'total2', 'at_', 'id')$$);
SELECT pg_temp.err($$SELECT loyalty.track_orders('sc_bad', 'k2', 'total2', 'at_', 'id')$$);
SELECT pg_temp.err($$SELECT loyalty.track_customers('sc_bad', 'k2')$$);
SELECT count(*) AS sc_bad_attached FROM loyalty.sources WHERE relation_name = 'sc_bad';

-- ---- finding 10: a planted public.< does not capture loyalty.backfill
SET ROLE sc_owner;
CREATE FUNCTION public.sc_lt(integer, integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.sc_log (who) VALUES ('planted <');
    RETURN pg_catalog.int4lt($1, $2);
END $$;
CREATE OPERATOR public.< (LEFTARG = integer, RIGHTARG = integer, FUNCTION = public.sc_lt);
RESET ROLE;
SET search_path = public, pg_catalog;
CALL loyalty.backfill('sc_orders', 1);
SELECT pg_temp.err($$CALL loyalty.backfill('sc_orders', 0)$$);
RESET search_path;
SELECT count(*) AS planted_operator_calls FROM sc_log WHERE who = 'planted <';

-- ---- findings 4 and 9: poison rows are quarantined, the rest applies
CREATE TABLE sc_shop (id text PRIMARY KEY, customer text, total numeric, placed timestamptz);
SELECT loyalty.track_orders('sc_shop', 'customer', 'total', 'placed', 'id') AS backfilled;
INSERT INTO sc_shop VALUES
    ('ok-1', 'c7', 12, '2026-01-10'),
    ('huge', 'c7', 1e400, '2026-01-10'),
    ('nan', 'c7', 'NaN', '2026-01-10'),
    ('too-much', 'c7', 1e13, '2026-01-10'),
    ('long-key', repeat('x', 6400), 5, '2026-01-10'),
    ('tab', E'c\t7', 5, '2026-01-10'),
    ('nbsp', 'c7' || U&'\00A0', 5, '2026-01-10'),
    ('far-future', 'c7', 5, '294275-01-01'),
    ('bc', 'c7', 5, '4713-01-01 BC'),
    ('tomorrow', 'c7', 5, now() + interval '1 day'),
    ('skew', 'c7', 6, now() + interval '1 minute'),
    (E'ref\u2003x', 'c7', 5, '2026-01-10'),
    ('ok-2', 'c7', 13, '2026-01-11');
SELECT loyalty.apply_events() AS applied;
SELECT order_ref, amount FROM loyalty.orders WHERE source_id = (SELECT source_id FROM loyalty.sources WHERE relation_name = 'sc_shop')
 ORDER BY 1;
SELECT left(order_ref, 20) AS order_ref, reason, length(row_data ->> 'customer_id') AS customer_len
  FROM loyalty.rejected_rows
 WHERE source_id = (SELECT source_id FROM loyalty.sources WHERE relation_name = 'sc_shop') AND resolved_at IS NULL
 ORDER BY 1;
SELECT orders, net_spend FROM loyalty.customer_state WHERE customer_id = 'c7';
SELECT count(*) AS queue_left FROM loyalty.events;
-- the tolerance is a setting
SET loyalty.future_tolerance = '2d';
UPDATE sc_shop SET total = 7 WHERE id = 'tomorrow';
SELECT loyalty.apply_events() AS applied;
SELECT amount FROM loyalty.orders WHERE order_ref = 'tomorrow';
RESET loyalty.future_tolerance;

-- the API refuses the same values, with an errcode and a hint
SELECT pg_temp.err($$SELECT loyalty.record_order('c8', 'a-1', 10, '294275-01-01')$$);
SELECT pg_temp.err($$SELECT loyalty.record_order('c8', 'a-1', 10, '4713-01-01 BC')$$);
SELECT pg_temp.err($$SELECT loyalty.record_order('c8', 'a-1', 10, now() + interval '1 day')$$);
SELECT pg_temp.err($$SELECT loyalty.record_order('c8', 'a-1', 1e400)$$);
SELECT pg_temp.err($$SELECT loyalty.record_order(E'c\t8', 'a-1', 10)$$);
SELECT pg_temp.err($$SELECT loyalty.record_order('c8' || U&'\00A0', 'a-1', 10)$$);
SELECT pg_temp.err($$SELECT loyalty.record_order(repeat('x', 201), 'a-1', 10)$$);
SELECT pg_temp.err($$SELECT loyalty.record_order(E'c8\n', 'a-1', 10)$$);
SELECT pg_temp.err($$SELECT * FROM loyalty.order_points('c8', 'NaN')$$);
SELECT pg_temp.err($$SELECT * FROM loyalty.order_points('c8', 1e300)$$);
SELECT pg_temp.err($$SELECT loyalty.set_consent('c8', 'all' || U&'\00A0', false)$$);
SELECT pg_temp.err($$SELECT loyalty.set_consent('c8', E'sms\t', true)$$);
SELECT pg_temp.err($$SELECT loyalty.upsert_customer(U&'c\2003' || '8', 'Eve')$$);
SELECT pg_temp.err($$SELECT loyalty.earn(E'c\t8', 5, 'x', 'k-1')$$);
SELECT pg_temp.err($$SELECT loyalty.earn('c8', 5, 'x', E'k\t1')$$);
SELECT pg_temp.err($$SELECT loyalty.earn('c8' || U&'\00A0', 5, 'x', 'k-2')$$);
SELECT pg_temp.err($$SELECT loyalty.earn('c8', 5, 'x', 'k' || U&'\2007' || '3')$$);
SELECT count(*) AS no_account FROM loyalty.accounts WHERE customer_id LIKE 'c8%';
SELECT count(*) AS nothing_written FROM loyalty.orders WHERE customer_id LIKE 'c8%';
SELECT count(*) AS no_new_channel FROM loyalty.consents WHERE customer_id = 'c8';
-- a plain space inside a key is fine; the rule is one function
SELECT loyalty.check_key('order 42', 'order_ref') AS accepted;
SELECT loyalty._key_problem(repeat('é', 200)) IS NULL AS max_length_ok, loyalty._key_problem(repeat('é', 201)) AS too_long;

-- ---- finding 11: attaching again merges, never erases
CREATE TABLE sc_people (id bigint PRIMARY KEY, name text, phone text, mail text);
INSERT INTO sc_people VALUES (1, 'Ann', '+1 555 0101', 'ann@example.com'), (2, 'Bob', '+1 555 0102', NULL);
SELECT loyalty.track_customers('sc_people', 'id', name_column => 'name', phone_column => 'phone') AS read;
-- the README's mistake: attach again naming only a new column
SELECT loyalty.track_customers('sc_people', 'id', email_column => 'mail') AS read;
SELECT name_column, email_column, phone_column FROM loyalty.customer_sources WHERE relation_name = 'sc_people';
SELECT customer_id, name, phone, email FROM loyalty.profiles WHERE customer_id IN ('1', '2') ORDER BY 1;
-- the app's value for a column the table does not track is kept
SELECT (loyalty.upsert_customer('2', birthday => '1980-05-05')).birthday;
UPDATE sc_people SET name = 'Robert' WHERE id = 2;
SELECT loyalty.apply_events() AS applied;
SELECT customer_id, name, phone, birthday FROM loyalty.profiles WHERE customer_id = '2';
-- stop tracking a column explicitly (''): stored phones stay, new changes leave them alone
SELECT loyalty.track_customers('sc_people', 'id', phone_column => '', backfill => false) AS read;
UPDATE sc_people SET phone = NULL WHERE id = 1;
SELECT loyalty.apply_events() AS applied;
SELECT customer_id, phone FROM loyalty.profiles WHERE customer_id = '1';
-- another key column would orphan the stored profiles: refused
SELECT pg_temp.err($$SELECT loyalty.track_customers('sc_people', 'name')$$);
-- track_orders again without the status keeps it
SELECT loyalty.track_orders('sc_orders', 'customer', 'total', 'placed', 'id', backfill => false) AS backfilled;
SELECT status_column, counted_statuses, delivered_at_column FROM loyalty.sources WHERE relation_name = 'sc_orders';

SELECT rolsuper AS owner_is_superuser_at_end FROM pg_roles WHERE rolname = 'sc_owner';
SELECT count(*) AS evil_calls_at_end FROM sc_log;
SELECT loyalty.configure_rewards(earn_on_orders => false) IS NOT NULL AS earning_off;
DROP TABLE sc_orders, sc_customers, sc_bad, sc_shop, sc_people, sc_log;
DROP OPERATOR public.< (integer, integer);
DROP FUNCTION public.sc_lt(integer, integer);
DROP CAST (sc_state AS json);
DROP CAST (sc_state AS text);
DROP FUNCTION sc_evil_text(sc_state), sc_evil(sc_state);
DROP DOMAIN sc_money;
DROP TYPE sc_state;
REVOKE CREATE ON SCHEMA public FROM sc_owner;
DROP ROLE sc_owner;

-- ---- an erased customer stays erased when the shop later updates one of
-- their old orders (the shop's row still carries the real key)
CREATE TABLE sc_erase_orders (id text PRIMARY KEY, customer bigint, total numeric, created_at timestamptz);
SELECT loyalty.track_orders('sc_erase_orders', 'customer', 'total', 'created_at', 'id') AS backfilled;
INSERT INTO sc_erase_orders VALUES ('ze-1', 30, 15, '2026-01-05 10:00+00');
SELECT loyalty.apply_events() AS applied;
SELECT pseudonym LIKE 'erased:%' AS erased FROM loyalty.erase_customer('30');
UPDATE sc_erase_orders SET total = 16 WHERE id = 'ze-1';
SELECT loyalty.apply_events() AS applied;
SELECT customer_id LIKE 'erased:%' AS still_pseudonym, amount FROM loyalty.orders WHERE order_ref = 'ze-1';
SELECT count(*) AS real_key_back FROM loyalty.customer_state WHERE customer_id = '30';

DROP TABLE sc_erase_orders;
