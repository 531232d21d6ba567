-- Journeys, part 1: profiles (app and tracked customers tables with bigint,
-- uuid and text keys; bad rows to rejected_rows, never failing the shop's
-- write), consent with its history, settings and campaign validation.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
SET TIME ZONE 'UTC';
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

-- ---- profiles from the app
SELECT customer_id, name, email, phone, birthday, time_zone, birthday_md, source_id
  FROM loyalty.upsert_customer('a1', 'Ann', 'ann@example.com', '+49 30 1234567', '1990-02-28', 'europe/berlin');
-- NULL keeps what is stored
SELECT customer_id, name, email, phone, time_zone FROM loyalty.upsert_customer('a1', email => 'ann@new.example');
SELECT pg_temp.err($$SELECT loyalty.upsert_customer('', 'x')$$);
SELECT pg_temp.err($$SELECT loyalty.upsert_customer('a2', time_zone => 'Mars/Olympus')$$);
SELECT pg_temp.err($$SELECT loyalty.upsert_customer('a2', birthday => '2999-01-01')$$);
SELECT count(*) AS profiles FROM loyalty.profiles;

-- ---- a tracked customers table (bigint key)
CREATE TABLE jr_customers (
    id bigint PRIMARY KEY, full_name text, mail varchar(200), mobile text, born date, tz text, note text);
INSERT INTO jr_customers VALUES
    (1, 'Bea', 'bea@example.com', NULL, '1985-07-01', 'America/New_York', NULL),
    (2, 'Carl', NULL, '+1 212 555 0100', NULL, 'Nowhere/Town', NULL);       -- bad zone: stored NULL, listed
SELECT loyalty.track_customers('jr_customers', 'id', name_column => 'full_name', email_column => 'mail',
                               phone_column => 'mobile', birthday_column => 'born', time_zone_column => 'tz') AS rows_read;
SELECT customer_id, name, email, phone, birthday, time_zone, source_id IS NOT NULL AS tracked
  FROM loyalty.profiles WHERE source_id IS NOT NULL ORDER BY customer_id;
SELECT order_ref AS customer, reason FROM loyalty.rejected_rows WHERE resolved_at IS NULL ORDER BY 1;
SELECT source, reason, rows FROM loyalty.rejected_summary;
-- the shop's writes always go through; the profile follows
INSERT INTO jr_customers VALUES (3, 'Dora', 'dora@example.com', NULL, NULL, 'Asia/Tokyo', NULL);
UPDATE jr_customers SET tz = 'Europe/Paris' WHERE id = 2;                -- fixed: rejection resolved
UPDATE jr_customers SET mail = 'bea@new.example' WHERE id = 1;
UPDATE jr_customers SET tz = 'Bad/Zone' WHERE id = 3;                    -- bad again: listed, zone NULL
DELETE FROM jr_customers WHERE id = 1;                                   -- profile goes too
SELECT loyalty.apply_events() AS applied;                                -- profiles follow the captured changes
SELECT customer_id, name, email, time_zone FROM loyalty.profiles WHERE source_id IS NOT NULL ORDER BY customer_id;
SELECT order_ref AS customer, reason FROM loyalty.rejected_rows WHERE resolved_at IS NULL ORDER BY 1;
-- bad input to track_customers: clear errors, nothing attached
SELECT pg_temp.err($$SELECT loyalty.track_customers('jr_customers', 'nope')$$);
SELECT pg_temp.err($$SELECT loyalty.track_customers('jr_customers', 'id', birthday_column => 'full_name')$$);
SELECT pg_temp.err($$SELECT loyalty.track_customers('loyalty.profiles', 'customer_id')$$);
SELECT pg_temp.err($$SELECT loyalty.track_customers('no_such_table', 'id')$$);
SELECT pg_temp.err($$SELECT loyalty.untrack_customers('loyalty.orders')$$);
SELECT loyalty.untrack_customers('jr_customers');
INSERT INTO jr_customers VALUES (4, 'Eve', 'eve@example.com', NULL, NULL, NULL, NULL);
SELECT count(*) AS eve_untracked FROM loyalty.profiles WHERE customer_id = '4';

-- uuid and text keys; a NULL key is rejected, not stored
CREATE TABLE jr_people_uuid (uid uuid PRIMARY KEY, email text);
INSERT INTO jr_people_uuid VALUES ('6f1c2d7e-0000-4000-8000-000000000001', 'u1@example.com');
SELECT loyalty.track_customers('jr_people_uuid', 'uid', email_column => 'email') AS rows_read;
CREATE TABLE jr_people_text (code text UNIQUE, email text, birthday timestamp);
INSERT INTO jr_people_text VALUES ('T-1', 't1@example.com', '2000-02-29 00:00'), (NULL, 'nobody@example.com', NULL);
SELECT loyalty.track_customers('jr_people_text', 'code', email_column => 'email', birthday_column => 'birthday') AS rows_read;
INSERT INTO jr_people_text VALUES (NULL, 'again@example.com', NULL);
SELECT loyalty.apply_events() AS applied;
SELECT customer_id, email, birthday, birthday_md FROM loyalty.profiles
 WHERE customer_id IN ('6f1c2d7e-0000-4000-8000-000000000001', 'T-1') ORDER BY 1;
SELECT reason, count(*) FROM loyalty.rejected_rows WHERE resolved_at IS NULL GROUP BY 1 ORDER BY 1;
TRUNCATE jr_people_text;
SELECT loyalty.apply_events() AS applied;
SELECT count(*) AS text_profiles_after_truncate FROM loyalty.profiles WHERE customer_id = 'T-1';

-- ---- consent: history and current state
SELECT loyalty.set_consent('a1', 'Email', true, 'signup form') > 0 AS ok;
SELECT loyalty.set_consent('a1', 'sms', true, 'checkout') > 0 AS ok;
SELECT loyalty.set_consent('a1', 'sms', false, 'reply STOP') > 0 AS ok;
SELECT loyalty.set_consent('a1', 'all', false, 'unsubscribe link') > 0 AS ok;
SELECT customer_id, channel, granted, source FROM loyalty.consents ORDER BY channel;
SELECT channel, granted, source FROM loyalty.consent_history ORDER BY change_id;
SELECT pg_temp.err($$SELECT loyalty.set_consent('a1', '', true)$$);
SELECT pg_temp.err($$SELECT loyalty.set_consent('a1', 'email', NULL)$$);
SELECT pg_temp.err($$SELECT loyalty.set_consent(NULL, 'email', true)$$);

-- ---- settings
SELECT cap_messages, cap_window, quiet_start, quiet_end, default_time_zone
  FROM loyalty.configure_journeys(cap_messages => 3, default_time_zone => 'europe/berlin');
SELECT pg_temp.err($$SELECT loyalty.configure_journeys(cap_messages => 0)$$);
SELECT pg_temp.err($$SELECT loyalty.configure_journeys(cap_window => '-1 day')$$);
SELECT pg_temp.err($$SELECT loyalty.configure_journeys(default_time_zone => 'Atlantis')$$);

-- ---- campaigns: examples are inactive, defaults filled in, bad ones refused
SELECT name, kind, channel, params, active FROM loyalty.campaigns ORDER BY campaign_id;
INSERT INTO loyalty.campaigns (name, kind, channel, template) VALUES ('pp', 'post_purchase', 'SMS', 'pp');
SELECT kind, channel, params FROM loyalty.campaigns WHERE name = 'pp';
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template) VALUES ('x', 'newsletter', 'email', 't')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, params) VALUES ('x', 'birthday', 'email', 't', '{"days_before": 90}')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, params) VALUES ('x', 'birthday', 'email', 't', '{"days_befor": 3}')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, params) VALUES ('x', 'post_purchase', 'email', 't', '{"days": "soon"}')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, params) VALUES ('x', 'milestone', 'email', 't', '{}')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, params) VALUES ('x', 'win_back', 'email', 't', '{"segments": ["Nope"]}')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, params) VALUES ('x', 'repurchase_reminder', 'email', 't', '[1]')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, holdout_share) VALUES ('x', 'welcome', 'email', 't', 1)$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template) VALUES ('x', 'custom', 'email', 't')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, condition) VALUES ('x', 'custom', 'email', 't', 'net_spend >')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, condition) VALUES ('x', 'custom', 'email', 't', 'no_such_column > 1')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, condition) VALUES ('x', 'custom', 'email', 't', 'net_spend')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, condition) VALUES ('x', 'custom', 'email', 't', 'true; DROP TABLE loyalty.orders')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.campaigns (name, kind, channel, template, condition) VALUES ('x', 'welcome', 'email', 't', 'true')$$);
SELECT pg_temp.err($$UPDATE loyalty.campaigns SET params = '{"factor": 0}' WHERE name = 'time to reorder'$$);
INSERT INTO loyalty.campaigns (name, kind, channel, template, condition, params)
VALUES ('vip', 'custom', 'email', 'vip', 'segment = ''Champions'' AND points > 100', '{"occasion": "weekly"}');
SELECT count(*) FILTER (WHERE name = 'x') AS bad_saved, count(*) AS campaigns FROM loyalty.campaigns;
-- switching on records when (occasions before it are ignored)
UPDATE loyalty.campaigns SET active = true WHERE name = 'pp';
SELECT activated_at IS NOT NULL AS activated FROM loyalty.campaigns WHERE name = 'pp';

-- ---- roles
SELECT has_function_privilege('loyalty_app', 'loyalty.upsert_customer(text, text, text, text, date, text)', 'execute') AS app_upsert,
       has_function_privilege('loyalty_app', 'loyalty.set_consent(text, text, boolean, text)', 'execute') AS app_consent,
       has_function_privilege('loyalty_app', 'loyalty.enqueue_due(timestamptz)', 'execute') AS app_enqueue,
       has_table_privilege('loyalty_reader', 'loyalty.due_decisions', 'select') AS reader_due,
       has_table_privilege('loyalty_reader', 'loyalty.contact_quality', 'select') AS reader_quality,
       has_function_privilege('public', 'loyalty.enqueue_due(timestamptz)', 'execute') AS public_enqueue;
-- the reader role reads the journey views without rights on the tables behind them
-- (pseudonymous ones: contact data is loyalty_support's, see sql/security.sql),
-- and each sees every row the owner sees: an order makes each view non-empty
SELECT loyalty.record_order('a1', 'a1-1', 20, now() - interval '8 days') > 0 AS ordered;
UPDATE loyalty.campaigns SET activated_at = now() - interval '30 days' WHERE name = 'pp';
SELECT (SELECT count(*) FROM loyalty.due_messages) AS n_due, (SELECT count(*) FROM loyalty.due_decisions) AS n_decisions,
       (SELECT count(*) FROM loyalty.contact_quality) AS n_quality,
       (SELECT count(*) FROM loyalty.journey_context) AS n_context \gset
SELECT :n_due > 0 AS some_due, :n_decisions = :n_due AS decisions_as_due, :n_quality > 0 AS some_quality,
       :n_context > 0 AS some_context;
SET ROLE loyalty_reader;
SELECT count(*) = :n_decisions AS reader_reads_due, (SELECT count(*) FROM loyalty.contact_quality) = :n_quality AS reader_reads_quality
  FROM loyalty.due_decisions;
RESET ROLE;
SET ROLE loyalty_support;
SELECT count(*) = :n_due AS support_reads_due, (SELECT count(*) FROM loyalty.journey_context) = :n_context AS support_reads_context
  FROM loyalty.due_messages;
RESET ROLE;
