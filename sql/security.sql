-- Adversarial tests (issue 11): each attack must fail safely, with an
-- errcode, and leave the attacker without more rights than they had; then
-- erasure and export, and a fuzz of the public API (the SQLSTATE each bad
-- input gets, as docs/security.md lists them).
-- Roles are cluster-wide: this test makes its own and drops them at the end.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
SET TIME ZONE 'UTC';
\set SHOW_CONTEXT never

-- the SQLSTATE and message of a statement, 'ok' when it succeeds
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; m text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
    RETURN st || ': ' || m;
END $$;
CREATE FUNCTION pg_temp.code(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN split_part(pg_temp.err(q), ':', 1);
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.err(text), pg_temp.code(text) TO PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sec_mallory') THEN
        EXECUTE 'DROP OWNED BY sec_mallory';
        EXECUTE 'DROP ROLE sec_mallory';
    END IF;
END $$;
DROP SCHEMA IF EXISTS sec_evil CASCADE;
-- an ordinary account with only loyalty_admin, and a schema of its own
CREATE ROLE sec_mallory LOGIN NOSUPERUSER NOCREATEROLE;
GRANT loyalty_admin TO sec_mallory;
CREATE SCHEMA sec_evil AUTHORIZATION sec_mallory;

-- ---- a small shop
SELECT count(loyalty.record_order('c' || i, 'o' || i || '-' || j, 40 * i, timestamptz '2026-03-01' + (i * 9 + j) * interval '1 day'))
  FROM generate_series(1, 6) i, generate_series(1, i) j;
SELECT count(loyalty.upsert_customer('c' || i, 'Name Of C' || i, 'c' || i || '@example.com', '+49 170 555 010' || i,
                                     date '1980-01-01' + i * 31, 'Europe/Berlin'))
  FROM generate_series(1, 6) i;
SELECT count(loyalty.set_consent('c' || i, 'email', true, 'signup form')) FROM generate_series(1, 6) i;
SELECT customers FROM loyalty.refresh(as_of => '2026-06-01');
SELECT quiet_start = quiet_end AS no_quiet_hours FROM loyalty.configure_journeys(quiet_start => '00:00', quiet_end => '00:00');

-- ======================================================================
-- 1. A custom condition cannot run the attacker's code (findings 1 and 8)
-- ======================================================================
SET ROLE sec_mallory;
SET search_path = sec_evil, public;
-- evil() makes its caller's caller superuser when it runs as a superuser
CREATE FUNCTION sec_evil.evil() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        EXECUTE 'ALTER ROLE sec_mallory SUPERUSER';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    RETURN true;
END $$;
CREATE FUNCTION pg_temp.evil() RETURNS boolean LANGUAGE sql AS 'SELECT sec_evil.evil()';
-- an operator and a domain that call it, found first on a careless search_path
CREATE FUNCTION sec_evil.eq(numeric, integer) RETURNS boolean LANGUAGE sql AS 'SELECT sec_evil.evil()';
CREATE OPERATOR sec_evil.= (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = sec_evil.eq);
CREATE OPERATOR sec_evil.=== (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = sec_evil.eq);
CREATE DOMAIN sec_evil.dom AS numeric CHECK (sec_evil.evil());
SELECT c AS condition, pg_temp.err(format($q$INSERT INTO loyalty.campaigns (name, kind, channel, template, condition)
                                             VALUES ('evil', 'custom', 'email', 't', %L)$q$, c)) AS saved
  FROM unnest(ARRAY[
    'pg_temp.evil()',
    'evil()',
    'sec_evil.evil() AND orders > 1',
    'net_spend === 1',
    'net_spend OPERATOR(sec_evil.=) 1',
    'net_spend::sec_evil.dom > 0',
    'net_spend::dom > 0',
    $c$query_to_xml('select rolname, rolpassword from pg_authid', true, true, '') IS NOT NULL$c$,
    '(SELECT count(*) FROM pg_authid) > 0',
    'EXISTS (SELECT 1 FROM loyalty.profiles)',
    'c.net_spend > 0',
    'loyalty.profiles.email IS NOT NULL',
    'pg_sleep(10) IS NOT NULL',
    'lower(email) COLLATE "C" > ''a''',
    'ROW(orders, 1) IS NOT NULL',
    'current_setting(''is_superuser'') = ''on''',
    'true; ALTER ROLE sec_mallory SUPERUSER',
    'true) OR (sec_evil.evil()',
    'net_spend > 0 -- ) OR sec_evil.evil() OR (',
    '$1 IS NOT NULL'
  ]) c;
-- allowed: context columns, constants, built-in operators and a few functions
INSERT INTO loyalty.campaigns (name, kind, channel, template, condition, active, active_from, holdout_share, params)
VALUES ('vip', 'custom', 'email', 'vip',
        'net_spend = 480 OR (orders >= 5 AND lower(segment) LIKE ''%'' AND coalesce(tier, ''none'') IN (''none'', ''Gold'')
         AND extract(year from last_order_at) = 2026 AND CASE WHEN points > 0 THEN true ELSE email IS NOT NULL END) -- comment',
        true, '2026-01-01', 0, '{"occasion": "once"}'),
       ('divides by zero', 'custom', 'email', 'oops', 'net_spend / (orders - 1) > 100', true, '2026-01-01', 0, '{"occasion": "once"}');
RESET search_path;
RESET ROLE;
SELECT rolsuper FROM pg_roles WHERE rolname = 'sec_mallory';

-- a condition that bypassed the check (restored from an old dump, say) is
-- refused when it runs; the job runs as a superuser, as pg_cron's would,
-- on a search_path the attacker's schema comes first on
ALTER TABLE loyalty.campaigns DISABLE TRIGGER campaign_check;
INSERT INTO loyalty.campaigns (name, kind, channel, template, condition, active, active_from, activated_at, params)
VALUES ('smuggled', 'custom', 'email', 't', 'sec_evil.evil()', true, '2026-01-01', '2026-01-01', '{"occasion": "once"}');
ALTER TABLE loyalty.campaigns ENABLE TRIGGER campaign_check;
SET search_path = sec_evil, pg_catalog, public;
SELECT campaign, pending FROM loyalty.enqueue_due('2026-06-01 12:00') ORDER BY campaign_id;
SELECT count(*) AS due_rows FROM loyalty.due_messages;
RESET search_path;
-- evil() never ran with rights it does not have
SELECT rolsuper FROM pg_roles WHERE rolname = 'sec_mallory';
-- the failing campaigns are recorded, each with its SQLSTATE; the others ran
SELECT campaign, failures, sqlstate, left(message, 60) AS message FROM loyalty.failing_campaigns ORDER BY campaign_id;
SELECT cp.name, count(*) AS messages FROM loyalty.outbox o JOIN loyalty.campaigns cp USING (campaign_id)
 GROUP BY cp.name ORDER BY cp.name;
-- conditions run as loyalty_condition, which is no superuser and cannot log in
SELECT rolsuper, rolcanlogin, rolinherit FROM pg_roles WHERE rolname = 'loyalty_condition';
-- and it reads only the context's tables
SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'loyalty'::regnamespace AND c.relkind IN ('r', 'v')
   AND has_table_privilege('loyalty_condition', c.oid, 'SELECT, INSERT, UPDATE, DELETE')
 ORDER BY 1;
-- a second run: still recorded (failures counts up), the cron job does not fail
SELECT count(*) AS campaigns_run FROM loyalty.enqueue_due('2026-06-01 12:05');
SELECT campaign, failures FROM loyalty.failing_campaigns ORDER BY campaign_id;
-- fixed, it runs again and leaves the list
UPDATE loyalty.campaigns SET condition = 'net_spend / nullif(orders - 1, 0) > 100' WHERE name = 'divides by zero';
DELETE FROM loyalty.campaigns WHERE name = 'smuggled';
SELECT campaign, pending FROM loyalty.enqueue_due('2026-06-01 12:10') WHERE campaign = 'divides by zero';
SELECT count(*) AS failing FROM loyalty.failing_campaigns;

-- ======================================================================
-- 2. No triggers, references or truncation on loyalty's tables (finding 2)
-- ======================================================================
SELECT count(*) AS risky_grants
  FROM pg_class c CROSS JOIN unnest(ARRAY['loyalty_admin', 'loyalty_app', 'loyalty_sender', 'loyalty_reader',
                                          'loyalty_support', 'loyalty_condition']) r
 WHERE c.relnamespace = 'loyalty'::regnamespace AND c.relkind IN ('r', 'p', 'v')
   AND has_table_privilege(r, c.oid, 'TRIGGER, REFERENCES, TRUNCATE');
SET ROLE sec_mallory;
SELECT pg_temp.err($$CREATE TRIGGER t AFTER INSERT ON loyalty.orders FOR EACH ROW EXECUTE FUNCTION sec_evil.evil()$$) AS trigger_on_orders,
       pg_temp.err($$TRUNCATE loyalty.ledger$$) AS truncate_ledger,
       pg_temp.err($$CREATE TABLE sec_evil.fk (c text REFERENCES loyalty.accounts)$$) AS references_accounts;
RESET ROLE;
-- every SECURITY DEFINER function pins its search_path
SELECT p.oid::regprocedure AS unpinned_security_definer FROM pg_proc p
 WHERE p.pronamespace = 'loyalty'::regnamespace AND p.prosecdef
   AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false);

-- schedule() for a non-superuser admin (pg_cron lets a role with USAGE on
-- schema cron make jobs, which then run as that role)
GRANT USAGE ON SCHEMA cron TO sec_mallory;
SET ROLE sec_mallory;
SELECT job_name, action FROM loyalty.schedule();
RESET ROLE;
SELECT jobname, username FROM cron.job WHERE jobname LIKE 'loyalty-%' ORDER BY jobname;
-- and each job's command runs with that role's rights
SET ROLE sec_mallory;
SELECT command, pg_temp.code(command) AS runs FROM cron.job WHERE jobname LIKE 'loyalty-%' ORDER BY jobname;
SELECT count(*) AS removed FROM loyalty.unschedule() WHERE action = 'unscheduled';
RESET ROLE;
REVOKE USAGE ON SCHEMA cron FROM sec_mallory;

-- ======================================================================
-- 3. Points cannot wrap (finding 5)
-- ======================================================================
SELECT pg_temp.err($$SELECT loyalty.earn('c2', 9223372036854775807, 'x', 'huge-1')$$) AS first,
       pg_temp.err($$SELECT loyalty.earn('c2', 9223372036854775807, 'x', 'huge-2')$$) AS second;
SELECT available >= 0 AS not_wrapped FROM loyalty.balance('c2');
-- up to the cap is fine, twice
SELECT loyalty.earn('c2', 100000000, 'x', 'cap-1') > 0 AS at_cap, loyalty.earn('c2', 100000000, 'x', 'cap-2') > 0 AS again;
SELECT pg_temp.code($$SELECT loyalty.adjust_points('c2', -9223372036854775808, 'x', 'adj-min')$$) AS adjust_min,
       pg_temp.code($$SELECT loyalty.redeem('c2', 9223372036854775807, 'x', 'red-max')$$) AS redeem_max;
-- the C fast path near bigint's end: refused, not wrapped
BEGIN;
UPDATE loyalty.accounts SET balance = 9223372036854775000, lifetime_earned = 9223372036854775000 WHERE customer_id = 'c2';
SELECT pg_temp.err($$SELECT loyalty.earn('c2', 100000000, 'x', 'wrap')$$) AS fast_path;
ROLLBACK;
SELECT count(*) AS ledger_problems FROM loyalty.verify_ledger();
SELECT outstanding_points FROM loyalty.liability;

-- ======================================================================
-- 4. BI reads no personal data (finding 6); staff do
-- ======================================================================
SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
 WHERE c.relnamespace = 'loyalty'::regnamespace AND has_table_privilege('loyalty_reader', c.oid, 'SELECT')
   AND a.attname IN ('name', 'email', 'phone', 'birthday', 'recipient', 'payload', 'row_data')
 ORDER BY 1, 2;
SELECT p.oid::regprocedure AS reader_pii_function FROM pg_proc p
 WHERE p.pronamespace = 'loyalty'::regnamespace AND has_function_privilege('loyalty_reader', p.oid, 'EXECUTE')
   AND (pg_get_function_result(p.oid) ~ '(name|email|phone|birthday|recipient|payload) ' OR p.proname = 'export_customer');
SET ROLE loyalty_reader;
SELECT v, pg_temp.code(format('SELECT * FROM %s LIMIT 1', v)) AS reader
  FROM unnest(ARRAY['loyalty.journey_context', 'loyalty.due_messages', 'loyalty.dead_letters', 'loyalty.consents',
                    'loyalty.consent_history', 'loyalty.profiles', 'loyalty.customer_360', 'loyalty.outbox',
                    'loyalty.due_messages_at(now())', 'loyalty.journey_context_at(now())', 'loyalty.export_customer(''c1'')',
                    'loyalty.due_decisions', 'loyalty.customer_segments']) v;
RESET ROLE;
SET ROLE loyalty_support;
SELECT customer_id, name, email, orders, points, jsonb_array_length(recent_messages) AS messages,
       consents -> 'email' ->> 'granted' AS email_consent
  FROM loyalty.customer_360 WHERE customer_id IN ('c5', 'c6') ORDER BY 1;
SELECT pg_temp.code('SELECT * FROM loyalty.due_messages') AS support_reads_due,
       pg_temp.code('SELECT * FROM loyalty.dead_letters') AS support_reads_dead;
SELECT pg_temp.code($$SELECT loyalty.erase_customer('c1')$$) AS support_cannot_erase;
RESET ROLE;

-- ======================================================================
-- 5. Export and erasure (finding 7)
-- ======================================================================
SELECT loyalty.earn('c5', 25, 'goodwill for Name Of C5', 'goodwill:c5') > 0 AS earned;
-- quarantined rows keep the tracked fields: one of c5's, and one of another
-- customer whose order ref happens to equal c5's key (it must survive)
INSERT INTO loyalty.rejected_rows (source_id, order_ref, reason, row_data)
VALUES (1, 'x-1', 'test', jsonb_build_object('customer_id', 'c5', 'email', 'c5@example.com', 'amount', '10')),
       (1, 'c5', 'test', jsonb_build_object('customer_id', 'c6', 'order_ref', 'c5', 'amount', '10'));
-- a tracking code opens the parcel, with the address, at the carrier
SELECT loyalty.record_shipment_event(o, 'in_transit', '2026-05-02 10:00+00', 'TRK-' || o, jsonb_build_object('to', 'Name Of C' || substr(o, 2, 1))) > 0 AS tracked
  FROM unnest(ARRAY['o5-1', 'o6-1']) o;
-- staff's free text on a tier override
INSERT INTO loyalty.tiers (tier, min_spend) VALUES ('sec-gold', 1000000) ON CONFLICT DO NOTHING;
SELECT (loyalty.set_tier_override(c, 'sec-gold', now() + interval '30 days', 'parcel lost, Name Of C' || substr(c, 2, 1) || ' called')).override_id IS NOT NULL AS overridden
  FROM unnest(ARRAY['c5', 'c6']) c;
SELECT jsonb_object_keys(loyalty.export_customer('c5')) AS export_has ORDER BY 1;
SELECT e -> 'profile' ->> 'email' AS email, jsonb_array_length(e -> 'orders') AS orders,
       jsonb_array_length(e -> 'consent_history') AS consent_changes, jsonb_array_length(e -> 'points_ledger') AS ledger_entries,
       jsonb_array_length(e -> 'messages') AS messages, e -> 'messages' -> 0 ->> 'campaign' AS campaign,
       e -> 'messages' -> 0 -> 'why' -> 'why' ->> 'kind' AS why_kind
  FROM loyalty.export_customer('c5') e;
SELECT (SELECT balance FROM loyalty.accounts WHERE customer_id = 'c5') AS balance_before,
       (SELECT sum(amount) FROM loyalty.orders WHERE customer_id = 'c5') AS spend_before;

SELECT removed ? 'profiles' AS profile_removed, pseudonym LIKE 'erased:%' AS pseudonym
  FROM loyalty.erase_customer('c5', 'customer asked (art. 17)');
-- the other customer's quarantined row is kept (then set aside: its order ref is the text c5)
DELETE FROM loyalty.rejected_rows WHERE row_data->>'customer_id' = 'c6' RETURNING row_data->>'customer_id' AS kept_row_of;
-- no loyalty table holds the customer's key, email, phone, name or birthday in any column
CREATE FUNCTION pg_temp.mentions(pattern text) RETURNS TABLE (tab text, rows bigint) LANGUAGE plpgsql AS $$
DECLARE t regclass;
BEGIN
    FOR t IN SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'loyalty'::regnamespace AND c.relkind = 'r' ORDER BY c.relname LOOP
        tab := t::text;
        EXECUTE format('SELECT count(*) FROM %s x WHERE x::text ~* $1', t) INTO rows USING pattern;
        IF rows > 0 THEN RETURN NEXT; END IF;
    END LOOP;
END $$;
SELECT * FROM pg_temp.mentions('c5@example\.com|555 0105|Name Of C5|1980-06-01|"c5"|[(,]c5[),]|:c5\M|\mc5:|TRK-o5-1');
-- the control: the same scan finds another customer everywhere they are
SELECT (SELECT count(*) > 5 FROM pg_temp.mentions('c6@example\.com|[(,]c6[),]')) AS control_found,
       (SELECT count(*) FROM loyalty.shipment_events WHERE tracking_code = 'TRK-o6-1') AS other_tracking_kept;
-- what the shop must keep is kept, under the pseudonym
SELECT e.pseudonym = a.customer_id AS same_pseudonym, a.balance AS balance_after,
       (SELECT sum(amount) FROM loyalty.orders o WHERE o.customer_id = e.pseudonym) AS spend_after,
       (SELECT count(*) FROM loyalty.outbox o WHERE o.customer_id = e.pseudonym AND o.recipient IS NULL) AS messages_kept
  FROM loyalty.erasures e JOIN loyalty.accounts a ON a.customer_id = e.pseudonym;
SELECT count(*) AS ledger_problems FROM loyalty.verify_ledger();
SELECT reason, requested_by = session_user AS by_me, customer_hash = loyalty._contact_hash('customer', 'c5') AS findable
  FROM loyalty.erasures;
-- the export now finds nothing
SELECT e -> 'profile' IS NULL OR e -> 'profile' = 'null' AS no_profile, jsonb_array_length(e -> 'orders') AS orders
  FROM loyalty.export_customer('c5') e;
-- re-adding the address (another key, another spelling) does not make it mailable again
SELECT (loyalty.upsert_customer('c5-again', 'Someone', ' C5@Example.COM', '+49 (170) 555-0105')).email IS NULL AS suppressed;
SELECT email IS NULL AND phone IS NULL AS no_address FROM loyalty.profiles WHERE customer_id = 'c5-again';
SELECT pg_temp.code($$SELECT loyalty.erase_customer((SELECT pseudonym FROM loyalty.erasures LIMIT 1))$$) AS erase_pseudonym;

-- a customer deleted from the shop's tracked customers table is erased the same way
CREATE TABLE sec_customers (id bigint PRIMARY KEY, full_name text, mail text);
INSERT INTO sec_customers VALUES (4, 'Name Of C4', 'c4@example.com');
SELECT loyalty.track_customers('sec_customers', 'id', name_column => 'full_name', email_column => 'mail') AS tracked;
SELECT email FROM loyalty.profiles WHERE customer_id = '4';
SELECT loyalty.record_order('4', 'o4-x', 10, '2026-05-01') > 0 AS ordered;
DELETE FROM sec_customers WHERE id = 4;
SELECT loyalty.apply_events() AS applied;   -- the delete reaches loyalty with the captured change (docs/capture.md)
SELECT count(*) AS profile_left FROM loyalty.profiles WHERE customer_id = '4';
SELECT reason FROM loyalty.erasures ORDER BY erasure_id DESC LIMIT 1;
SELECT count(*) AS orders_under_key FROM loyalty.orders WHERE customer_id = '4';

-- ======================================================================
-- 6. Fuzz: every bad input gets an errcode and changes nothing
-- ======================================================================
CREATE TEMP TABLE fuzz_before AS
SELECT (SELECT count(*) FROM loyalty.ledger) AS ledger, (SELECT count(*) FROM loyalty.orders) AS orders,
       (SELECT count(*) FROM loyalty.events) AS events, (SELECT count(*) FROM loyalty.outbox) AS outbox,
       (SELECT count(*) FROM loyalty.tiers) AS tiers, (SELECT count(*) FROM loyalty.earn_rules) AS rules;
SELECT call, pg_temp.code(call) AS sqlstate
  FROM unnest(ARRAY[
    $$SELECT loyalty.earn('c1', 0, 'x', 'f1')$$,
    $$SELECT loyalty.earn('c1', -1, 'x', 'f2')$$,
    $$SELECT loyalty.earn('c1', NULL, 'x', 'f3')$$,
    $$SELECT loyalty.earn(NULL, 1, 'x', 'f4')$$,
    $$SELECT loyalty.earn('c1', 1, 'x', NULL)$$,
    $$SELECT loyalty.earn('c1', 1, 'x', 'f5', expires_at => 'infinity')$$,
    $$SELECT loyalty.earn('c1', 1, 'x', 'f6', available_at => '-infinity', expires_at => '2020-01-01')$$,
    $$SELECT loyalty.redeem('c1', 9223372036854775807, 'x', 'f7')$$,
    $$SELECT loyalty.adjust_points('c1', 0, 'x', 'f8')$$,
    $$SELECT loyalty.record_order('c1', 'f-o1', 'NaN', '2026-05-01')$$,
    $$SELECT loyalty.record_order('c1', 'f-o2', 'Infinity', '2026-05-01')$$,
    $$SELECT loyalty.record_order('c1', 'f-o3', '-Infinity', '2026-05-01')$$,
    $$SELECT loyalty.bgnbd_p_alive(2, '1e400', 10, 1, 1, 1, 1)$$,
    $$SELECT loyalty.earn(E'c1\u00a0', 1, 'x', E'f-\t')$$,
    $$SELECT loyalty.record_order('c1', 'f-o5', 10, 'infinity')$$,
    $$SELECT loyalty.record_order(NULL, 'f-o6', 10, '2026-05-01')$$,
    $$SELECT loyalty.record_refund('o1-1', 'NaN')$$,
    $$SELECT loyalty.record_refund('o1-1', -5)$$,
    $$INSERT INTO loyalty.tiers (tier, min_spend, earn_multiplier) VALUES ('f-nan', 1, 'NaN')$$,
    $$INSERT INTO loyalty.tiers (tier, min_spend, earn_multiplier) VALUES ('f-inf', 'Infinity', 1)$$,
    $$INSERT INTO loyalty.earn_rules (name, points_per_unit) VALUES ('f-nan', 'NaN')$$,
    $$INSERT INTO loyalty.earn_rules (name, multiplier) VALUES ('f-inf', 'Infinity')$$,
    $$INSERT INTO loyalty.earn_rules (name, multiplier) VALUES ('f-neg', -1)$$,
    $$SELECT loyalty.configure_rewards(point_value => 'NaN')$$,
    $$SELECT loyalty.configure_rewards(point_value => 'Infinity')$$,
    $$SELECT loyalty.configure_journeys(cap_window => 'infinity')$$,
    $$SELECT loyalty.configure_journeys(cap_messages => -2147483648)$$,
    $$SELECT loyalty.enqueue_due('infinity')$$,
    $$SELECT loyalty.enqueue_due('-infinity')$$,
    $$SELECT loyalty.refresh(as_of => 'infinity')$$,
    $$SELECT loyalty.expire_points('infinity')$$,
    $$SELECT loyalty.recompute_tiers('-infinity')$$,
    $$SELECT loyalty.claim_messages(-1, '1 minute')$$,
    $$SELECT loyalty.claim_messages(2147483647, '1 minute')$$,
    $$SELECT loyalty.claim_messages(10, 'infinity')$$,
    $$SELECT loyalty.claim_messages(10, '-1 minute')$$,
    $$SELECT loyalty.validate_models(-1)$$,
    $$SELECT loyalty.validate_models(2147483647)$$,
    $$SELECT loyalty.set_consent('c1', NULL, true)$$,
    $$SELECT loyalty.upsert_customer('c1', time_zone => repeat('x', 10000))$$,
    $$SELECT loyalty.earn(repeat('k', 100000), 1, 'x', 'f9')$$,
    $$SELECT loyalty.earn(E'c\x01', 1, 'x', 'f10')$$,
    $$SELECT loyalty.erase_customer('')$$,
    $$SELECT loyalty.export_customer(NULL)$$,
    $$INSERT INTO loyalty.campaigns (name, kind, channel, template, condition) VALUES ('f', 'custom', 'email', 't', repeat('orders > 1 AND ', 1000) || 'true')$$,
    $$INSERT INTO loyalty.campaigns (name, kind, channel, template, condition) VALUES ('f', 'custom', 'email', 't', 'net_spend > 1e400')$$,
    $$INSERT INTO loyalty.campaigns (name, kind, channel, template, condition) VALUES ('f', 'custom', 'email', 't', E'orders > 1\x01')$$
  ]) call;
SELECT (SELECT count(*) FROM loyalty.ledger) - b.ledger AS ledger_rows, (SELECT count(*) FROM loyalty.tiers) - b.tiers AS tiers,
       (SELECT count(*) FROM loyalty.earn_rules) - b.rules AS rules
  FROM fuzz_before b;

-- ---- an order's points are one entry: at most loyalty.max_points_per_entry
-- (a huge amount made a 9e18-point entry); the app's call is refused whole
SELECT loyalty.configure_rewards(earn_on_orders => true) IS NOT NULL AS earning;
SELECT pg_temp.err($$SELECT loyalty.record_order('sec-huge', 'sec-huge-1', 1e11)$$) AS huge_order;
SELECT count(*) AS huge_order_rows FROM loyalty.orders WHERE order_ref = 'sec-huge-1';
SELECT loyalty.configure_rewards(earn_on_orders => false) IS NOT NULL AS not_earning;

-- ---- the ledger's free text (a reason or key may name the customer) is for
-- staff; BI reads the points without it
SELECT has_table_privilege('loyalty_reader', 'loyalty.ledger', 'SELECT') AS reader_ledger,
       has_table_privilege('loyalty_reader', 'loyalty.points_history', 'SELECT') AS reader_points_history,
       has_table_privilege('loyalty_support', 'loyalty.ledger', 'SELECT') AS support_ledger,
       (SELECT count(*) FROM pg_attribute WHERE attrelid = 'loyalty.points_history'::regclass
           AND attname IN ('reason', 'idempotency_key', 'detail', 'created_by')) AS free_text_columns;

-- ---- the database's own search_path does not decide what a job calls: the
-- jobs (and the worker, which runs the same commands as the bootstrap
-- superuser) schema-qualify everything. A database owner who plants an
-- aggregate named count ahead of pg_catalog sees it never called.
CREATE SCHEMA sec_dbevil;
CREATE TABLE sec_dbevil.calls (n int);
CREATE FUNCTION sec_dbevil.cnt(int8) RETURNS int8 LANGUAGE plpgsql AS $$
BEGIN INSERT INTO sec_dbevil.calls VALUES (1); RETURN $1 + 1; END $$;
CREATE AGGREGATE sec_dbevil.count(*) (sfunc = sec_dbevil.cnt, stype = int8, initcond = '0');
SELECT format('ALTER DATABASE %I SET search_path = sec_dbevil, pg_catalog', current_database()) \gexec
\c -
SELECT count(*) AS plain_sql_count FROM (VALUES (1), (2)) v;   -- plain SQL finds the plant: 2 calls
-- every job's command, run as pg_cron runs it: in a session with the database's search_path
DO $$
DECLARE c text;
BEGIN
    FOR c IN SELECT j.command FROM loyalty._cron_jobs('x', 'x', 'x', 'x', 'x', 'x', 'x', 'x') j
              WHERE j.command LIKE '%count%' LOOP
        EXECUTE c;
    END LOOP;
END $$;
SELECT pg_catalog.count(*) AS planted_calls FROM sec_dbevil.calls;   -- still 2: no job called it
SELECT format('ALTER DATABASE %I RESET search_path', current_database()) \gexec
\c -
SET client_min_messages = warning;
DROP SCHEMA sec_dbevil CASCADE;

-- ---- clean up the cluster-wide role
DROP TABLE sec_customers;
DROP SCHEMA sec_evil CASCADE;
DROP OWNED BY sec_mallory;
DROP ROLE sec_mallory;
