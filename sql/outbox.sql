-- Outbox, sender side: rows inserted as a writer (journeys) inserts them, then
-- claim / ack / fail, backoff, dead letters, expired leases, wrong tokens,
-- bad input, NOTIFY, the views.
SET client_min_messages = warning;
-- a clean slate, whatever ran before
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
\set SHOW_CONTEXT never

-- run a statement, show its SQLSTATE and message (or 'ok')
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- the same, with the hint
CREATE FUNCTION pg_temp.hint(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE h text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ': ' || h;
END $$;
-- a writer's insert (the contract: ON CONFLICT (dedupe_key) DO NOTHING)
CREATE FUNCTION pg_temp.write(k text, st text DEFAULT 'pending', due timestamptz DEFAULT now() - interval '1 minute',
                              expires timestamptz DEFAULT NULL) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, payload, status, due_at, expires_at)
    VALUES (k, 1, 'cust-' || k, 'email', k || '@example.com', 'welcome', jsonb_build_object('name', 'N ' || k), st, due, expires)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING message_id $$;
CREATE FUNCTION pg_temp.st() RETURNS TABLE (dedupe_key text, status text, attempts int, last_error text) LANGUAGE sql AS $$
    SELECT dedupe_key, status, attempts, last_error FROM loyalty.outbox ORDER BY message_id $$;
CREATE FUNCTION pg_temp.queued() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM loyalty.outbox_queue $$;

-- writers: pending (due, and not yet due), held out, expired; a rerun adds nothing
SELECT pg_temp.write('a', due => now() - interval '3 minutes') IS NOT NULL AS a,
       pg_temp.write('b', due => now() - interval '2 minutes') IS NOT NULL AS b,
       pg_temp.write('c', due => now() - interval '1 minute') IS NOT NULL AS c,
       pg_temp.write('later', due => now() + interval '1 hour') IS NOT NULL AS later,
       pg_temp.write('held', 'held_out') IS NOT NULL AS held, pg_temp.write('missed', 'expired') IS NOT NULL AS missed;
SELECT pg_temp.write('a') IS NULL AS rerun_writes_nothing;
SELECT count(*) AS rows, pg_temp.queued() AS queued FROM loyalty.outbox;

-- bad input: each refused, nothing claimed
SELECT pg_temp.err($$SELECT * FROM loyalty.claim_messages(0, '1 minute')$$);
SELECT pg_temp.err($$SELECT * FROM loyalty.claim_messages(-5, '1 minute')$$);
SELECT pg_temp.err($$SELECT * FROM loyalty.claim_messages(10001, '1 minute')$$);
SELECT pg_temp.err($$SELECT * FROM loyalty.claim_messages(NULL, '1 minute')$$);
SELECT pg_temp.err($$SELECT * FROM loyalty.claim_messages(10, '-1 minute')$$);
SELECT pg_temp.err($$SELECT * FROM loyalty.claim_messages(10, '0')$$);
SELECT pg_temp.err($$SELECT * FROM loyalty.claim_messages(10, '2 days')$$);
SELECT pg_temp.hint($$SELECT * FROM loyalty.claim_messages(10, NULL)$$);
SELECT count(*) AS leased FROM loyalty.outbox_queue WHERE claim_token IS NOT NULL;

-- claim two: the oldest due ones, each with the batch's token and attempt 1
SELECT count(*) AS claimed, count(DISTINCT claim_token) AS tokens, min(attempts) AS attempts,
       string_agg(recipient, ',' ORDER BY message_id) AS recipients, bool_and(payload ? 'name') AS payload
  FROM loyalty.claim_messages(2, '1 minute') \gset
\echo :claimed :tokens :attempts :recipients :payload
SELECT message_id AS a_id FROM loyalty.outbox WHERE dedupe_key = 'a' \gset
SELECT claim_token AS tok FROM loyalty.outbox_queue WHERE message_id = :a_id \gset
SELECT message_id AS b_id FROM loyalty.outbox WHERE dedupe_key = 'b' \gset
SELECT message_id AS c_id FROM loyalty.outbox WHERE dedupe_key = 'c' \gset
-- claimed messages cannot be claimed again: the next claim gets only 'c'
SELECT string_agg(recipient, ',') AS next_claim, min(claim_token::text) AS c_tok FROM loyalty.claim_messages(10, '1 minute') \gset
\echo :next_claim
SELECT status, messages, due_now, expired_leases FROM loyalty.outbox_summary ORDER BY status;

-- ack: sent; a repeated ack with the same token answers false and changes nothing
SELECT loyalty.ack_message(:a_id, :'tok') AS acked;
SELECT sent_at IS NOT NULL AS has_sent_at FROM loyalty.outbox WHERE message_id = :a_id;
SELECT loyalty.ack_message(:a_id, :'tok') AS acked_again;
-- a wrong token, a fail after the ack, an unknown message, NULLs: refused
SELECT pg_temp.err(format('SELECT loyalty.ack_message(%s, gen_random_uuid())', :b_id));
SELECT pg_temp.hint(format('SELECT loyalty.ack_message(%s, gen_random_uuid())', :b_id));
SELECT pg_temp.err(format('SELECT loyalty.fail_message(%s, %L, ''oops'')', :a_id, :'tok'));
SELECT pg_temp.err(format('SELECT loyalty.ack_message(%s, %L)', :c_id, :'tok'));
SELECT pg_temp.err(format('SELECT loyalty.ack_message(-1, %L)', :'tok'));
SELECT pg_temp.err('SELECT loyalty.ack_message(NULL, NULL)');
SELECT pg_temp.err(format('SELECT loyalty.fail_message(%s, %L, ''x'', ''-1 second'')', :b_id, :'tok'));
SELECT * FROM pg_temp.st();

-- fail: pending again after the backoff (1 minute after attempt 1), not claimable before;
-- a repeated fail with the same token answers the status and changes nothing
BEGIN;  -- one now()
SELECT loyalty.fail_message(:b_id, :'tok', 'smtp 451 try later') AS after_fail;
SELECT due_at - now() AS backoff, last_error, attempts FROM loyalty.outbox WHERE message_id = :b_id;
COMMIT;
SELECT loyalty.fail_message(:b_id, :'tok', 'another error') AS fail_repeated;
SELECT pg_temp.err(format('SELECT loyalty.ack_message(%s, %L)', :b_id, :'tok'));
SELECT last_error FROM loyalty.outbox WHERE message_id = :b_id;
SELECT count(*) AS claimable_now FROM loyalty.claim_messages(10, '1 minute');
-- backoff doubles per attempt up to backoff_max; retry_after overrides it
SELECT max_attempts, backoff_base, backoff_max FROM loyalty.configure_outbox(max_attempts => 4, backoff_base => '10 seconds', backoff_max => '25 seconds');
UPDATE loyalty.outbox SET due_at = now() - interval '1 second' WHERE message_id = :b_id;
CREATE TEMP TABLE waits (attempt int, status text, wait interval);
DO $$
DECLARE
    r record;
    s text;
BEGIN
    FOR i IN 1..3 LOOP
        SELECT * INTO r FROM loyalty.claim_messages(1, '1 minute');
        s := loyalty.fail_message(r.message_id, r.claim_token, 'attempt ' || r.attempts);
        INSERT INTO waits SELECT r.attempts, s, o.due_at - now() FROM loyalty.outbox o WHERE o.message_id = r.message_id;
        UPDATE loyalty.outbox o SET due_at = now() - interval '1 second' WHERE o.message_id = r.message_id AND o.status = 'pending';
    END LOOP;
END $$;
-- attempt 1 was the first claim above: 2, 3 wait 20 s and 25 s (capped); 4 is the last: dead
SELECT attempt, status, CASE WHEN status = 'pending' THEN wait END AS wait FROM waits ORDER BY attempt;
SELECT message_id = :b_id AS is_b, attempts, last_error, channel, recipient FROM loyalty.dead_letters;
SELECT pg_temp.queued() AS queued;
-- retry_after overrides the backoff; 0 means claimable at once
SELECT pg_temp.write('r') AS r_id \gset
SELECT loyalty.fail_message(message_id, claim_token, 'rate limited', retry_after => '0') FROM loyalty.claim_messages(1, '1 minute');
BEGIN;
SELECT message_id = :r_id AS claimable_at_once, loyalty.fail_message(message_id, claim_token, 'rate limited', retry_after => '2 hours')
  FROM loyalty.claim_messages(1, '1 minute');
SELECT due_at - now() AS retry_after, last_error FROM loyalty.outbox WHERE message_id = :r_id;
COMMIT;

-- dead letters can be given new attempts
SELECT loyalty.requeue_dead(ARRAY[:b_id]::bigint[]) AS requeued;
SELECT status, attempts FROM loyalty.outbox WHERE message_id = :b_id;
SELECT count(*) AS dead FROM loyalty.dead_letters;

-- an expired lease: claimable again with a new token and one more attempt; the
-- old token can neither ack nor fail, even before anyone claimed it again
SELECT message_id AS e_id, claim_token AS e_tok, attempts AS e_att FROM loyalty.claim_messages(1, '10 milliseconds') \gset
SELECT pg_sleep(0.05);
BEGIN;  -- a new now()
SELECT pg_temp.err(format('SELECT loyalty.ack_message(%s, %L)', :e_id, :'e_tok')) ~ '^55000: the lease on message \d+ expired at' AS late_ack_refused;
SELECT pg_temp.hint(format('SELECT loyalty.fail_message(%s, %L, ''x'')', :e_id, :'e_tok'));
SELECT status, expired_leases FROM loyalty.outbox_summary WHERE status = 'claimed';
COMMIT;
SELECT message_id = :e_id AS same_message, claim_token <> :'e_tok' AS new_token, attempts = :e_att + 1 AS one_more_attempt
  FROM loyalty.claim_messages(1, '1 minute') \gset
\echo :same_message :new_token :one_more_attempt
SELECT pg_temp.err(format('SELECT loyalty.ack_message(%s, %L)', :e_id, :'e_tok'));
SELECT o.status, q.attempts AS claims_so_far FROM loyalty.outbox o JOIN loyalty.outbox_queue q USING (message_id) WHERE message_id = :e_id;

-- a lease that runs out on the last allowed attempt: dead at the next claim
SELECT max_attempts FROM loyalty.configure_outbox(max_attempts => 1);
SELECT pg_temp.write('crashy') IS NOT NULL AS written;
SELECT count(*) AS claimed FROM loyalty.claim_messages(1, '10 milliseconds');
SELECT pg_sleep(0.05);
SELECT count(*) AS claimed FROM loyalty.claim_messages(10, '1 minute');
SELECT status, attempts, last_error FROM loyalty.outbox WHERE dedupe_key = 'crashy';
SELECT max_attempts FROM loyalty.configure_outbox(max_attempts => 5);

-- a message past its validity window is not sent: expired when a claim meets it
SELECT pg_temp.write('stale', expires => now() - interval '1 second') IS NOT NULL AS written;
SELECT count(*) AS claimed FROM loyalty.claim_messages(10, '1 minute') WHERE recipient LIKE 'stale%';
SELECT status FROM loyalty.outbox WHERE dedupe_key = 'stale';

-- ack_messages: a whole batch at once, all or nothing
SELECT count(pg_temp.write('m' || i)) AS written FROM generate_series(1, 5) i;
SELECT array_agg(message_id ORDER BY message_id) AS batch, min(claim_token::text) AS btok, count(*) AS n
  FROM loyalty.claim_messages(5, '1 minute') WHERE recipient LIKE 'm%' \gset
\echo :n
SELECT pg_temp.err(format('SELECT loyalty.ack_messages(%L::bigint[] || %s::bigint, %L)', :'batch', :c_id, :'btok'));
SELECT count(*) AS still_leased FROM loyalty.outbox_queue WHERE claim_token = :'btok';
SELECT loyalty.ack_messages(:'batch', :'btok') AS acked;
SELECT loyalty.ack_messages(:'batch', :'btok') AS acked_again;
SELECT pg_temp.err(format('SELECT loyalty.ack_messages(%L, gen_random_uuid())', :'batch'));
SELECT pg_temp.err('SELECT loyalty.ack_messages(ARRAY[1, NULL]::bigint[], gen_random_uuid())');
SELECT count(*) FILTER (WHERE status = 'sent') AS sent FROM loyalty.outbox WHERE dedupe_key LIKE 'm%';

-- settings: bad values refused, nothing changed
SELECT pg_temp.err('SELECT loyalty.configure_outbox(max_attempts => 0)');
SELECT pg_temp.err('SELECT loyalty.configure_outbox(max_attempts => 101)');
SELECT pg_temp.err($$SELECT loyalty.configure_outbox(backoff_base => '0')$$);
SELECT pg_temp.err($$SELECT loyalty.configure_outbox(backoff_max => '31 days')$$);
SELECT pg_temp.err($$SELECT loyalty.configure_outbox(backoff_base => '1 hour', backoff_max => '1 minute')$$);
SELECT max_attempts, backoff_base, backoff_max FROM loyalty.outbox_settings;

-- the queue follows changes made by hand: a pending row moved out, back, to another time, deleted
SELECT pg_temp.write('manual') AS m_id \gset
UPDATE loyalty.outbox SET status = 'expired' WHERE message_id = :m_id;
SELECT count(*) AS queued FROM loyalty.outbox_queue WHERE message_id = :m_id;
UPDATE loyalty.outbox SET status = 'pending', due_at = now() + interval '1 day' WHERE message_id = :m_id;
SELECT q.visible_at = o.due_at AND o.due_at > now() + interval '23 hours' AS queued_for_tomorrow
  FROM loyalty.outbox_queue q JOIN loyalty.outbox o USING (message_id) WHERE message_id = :m_id;
UPDATE loyalty.outbox SET due_at = now() - interval '1 minute' WHERE message_id = :m_id;
SELECT visible_at < now() AS queued_for_now FROM loyalty.outbox_queue WHERE message_id = :m_id;
DELETE FROM loyalty.outbox WHERE message_id = :m_id;
SELECT count(*) AS queued FROM loyalty.outbox_queue WHERE message_id = :m_id;
-- set to 'sent' by hand (the trigger leaves that to acks): the next claim drops the queue row
SELECT pg_temp.write('by-hand') AS h_id \gset
UPDATE loyalty.outbox SET status = 'sent' WHERE message_id = :h_id;
SELECT count(*) AS still_queued FROM loyalty.outbox_queue WHERE message_id = :h_id;
SELECT count(*) AS claimed FROM loyalty.claim_messages(10, '1 minute');
SELECT count(*) AS queued FROM loyalty.outbox_queue WHERE message_id = :h_id;
-- every queue row belongs to a pending outbox row, and every pending row is queued
SELECT count(*) AS mismatches FROM loyalty.outbox o FULL JOIN loyalty.outbox_queue q USING (message_id)
 WHERE (o.status = 'pending') IS DISTINCT FROM (q.message_id IS NOT NULL);

-- notify_due(), for the scheduled job: true (and NOTIFY loyalty_outbox) when
-- messages can be claimed now; the isolation spec outbox_notify shows the NOTIFYs
SELECT pg_temp.write('n1') IS NOT NULL AS written;
SELECT loyalty.notify_due() AS notified;
SELECT count(loyalty.ack_messages(ARRAY[message_id], claim_token)) AS drained FROM loyalty.claim_messages(100, '1 minute');
SELECT loyalty.notify_due() AS notified_with_nothing_due;

SELECT status, channel, messages, due_now, oldest_due_age IS NOT NULL AS waiting, next_due_at IS NOT NULL AS has_next
  FROM loyalty.outbox_summary ORDER BY status;
SELECT obj_description('loyalty.outbox_summary'::regclass) IS NOT NULL AS summary_comment,
       obj_description('loyalty.dead_letters'::regclass) IS NOT NULL AS dead_letters_comment;

-- privileges: the sender role runs the sender functions and nothing else
SELECT has_function_privilege('loyalty_sender', 'loyalty.claim_messages(integer, interval)', 'EXECUTE') AS claim,
       has_function_privilege('loyalty_sender', 'loyalty.ack_message(bigint, uuid)', 'EXECUTE') AS ack,
       has_function_privilege('loyalty_sender', 'loyalty.ack_messages(bigint[], uuid)', 'EXECUTE') AS ack_batch,
       has_function_privilege('loyalty_sender', 'loyalty.fail_message(bigint, uuid, text, interval)', 'EXECUTE') AS fail,
       has_function_privilege('loyalty_sender', 'loyalty.configure_outbox(integer, interval, interval)', 'EXECUTE') AS configure,
       has_table_privilege('loyalty_sender', 'loyalty.outbox', 'SELECT') AS read_outbox,
       has_table_privilege('loyalty_reader', 'loyalty.outbox_summary', 'SELECT') AS reader_summary,
       -- dead letters hold recipients: staff (loyalty_support) read them, BI does not
       has_table_privilege('loyalty_support', 'loyalty.dead_letters', 'SELECT') AS support_dead_letters,
       has_function_privilege('public', 'loyalty.claim_messages(integer, interval)', 'EXECUTE') AS public_claim;
