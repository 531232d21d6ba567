-- Outbox: one row per (campaign, customer, occasion), ever. Journeys write it
-- (loyalty.enqueue_due); the shop's sender drains it (claim / ack / fail).
--
-- Contract between the two halves:
--   * a writer inserts with INSERT ... ON CONFLICT (dedupe_key) DO NOTHING, so a
--     rerun, a concurrent run or a catch-up after downtime never makes a second row;
--   * the writer sets status 'pending' (to be sent at due_at), 'held_out' (the
--     campaign's holdout group: recorded, never sent), 'expired' (the occasion
--     was missed for longer than the campaign's validity window) or, for an
--     occasion the policy suppressed, the reason: 'no_consent', 'no_contact',
--     'cooldown' or 'capped' (recorded, never sent);
--   * only 'pending' rows with due_at <= now() can be claimed; the sender side
--     owns the claim columns and the statuses 'sent' and 'dead';
--   * loyalty.set_consent(..., false) turns the customer's pending messages on
--     that channel (all channels for 'all') into 'cancelled'.
--   * a message under a sender's lease stays 'pending' in this table: the lease
--     is kept in loyalty.outbox_queue (see "The sender side" below), and the
--     views show such a message as 'claimed'. claim_token is the token of the
--     claim that last acked or failed the message.

CREATE TABLE loyalty.outbox (
    message_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedupe_key    text COLLATE "C" NOT NULL UNIQUE,
    campaign_id   integer,
    customer_id   text NOT NULL,
    channel       text NOT NULL,
    recipient     text,
    template      text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}'::jsonb,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'sent', 'dead', 'held_out', 'expired', 'cancelled',
                                    'no_consent', 'no_contact', 'cooldown', 'capped', 'superseded',
                                    'ops_hold')),
    due_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    attempts      integer NOT NULL DEFAULT 0,
    claim_token   uuid,
    sent_at       timestamptz,
    last_error    text
) WITH (fillfactor = 45);
COMMENT ON TABLE loyalty.outbox IS 'Messages decided by the journeys: one row per campaign, customer and occasion (dedupe_key), drained by the sender';
COMMENT ON COLUMN loyalty.outbox.dedupe_key IS 'campaign:customer:occasion; unique, so an occasion yields at most one row, ever';
COMMENT ON COLUMN loyalty.outbox.status IS 'pending (also while a sender holds a lease on it), sent, dead (gave up after the allowed attempts), held_out (holdout group, never sent), expired (missed its validity window), cancelled (the customer opted out before it went out); suppressed by the journeys policy, recorded and never sent: no_consent, no_contact, cooldown, capped, superseded, ops_hold (marketing while the customer has an order issue; a pending marketing message is cancelled then, last_error says why)';
COMMENT ON COLUMN loyalty.outbox.attempts IS 'claims so far (updated when the message is acked, failed or given up)';
COMMENT ON COLUMN loyalty.outbox.claim_token IS 'the claim that last acked or failed the message (a repeated ack or fail with it is answered, not refused)';
COMMENT ON COLUMN loyalty.outbox.last_error IS 'what the sender reported on the last failed attempt';
COMMENT ON COLUMN loyalty.outbox.payload IS 'what a template needs (name, points, tier, order, ...) and why the message was chosen (rule, scores at that moment)';
-- a customer's messages by due time: the frequency cap and cooldowns count them
CREATE INDEX outbox_customer_idx ON loyalty.outbox (customer_id, due_at);
-- a campaign's messages by creation time, with their keys (custom campaigns
-- read the keys of the current period from it alone)
CREATE INDEX outbox_campaign_idx ON loyalty.outbox (campaign_id, created_at) INCLUDE (dedupe_key);
SELECT pg_catalog.pg_extension_config_dump('loyalty.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.outbox_message_id_seq', '');

-- The sender side.
--
-- Claimable messages live in a small side table, loyalty.outbox_queue: one row
-- per pending message with the time it can next be claimed (due_at, or the end
-- of the current lease), the current claim token and the claims so far.
-- Triggers on loyalty.outbox keep it in step, so a writer's plain INSERT is all
-- it takes to queue a message. A claim touches only the queue (as a
-- hand-written SKIP LOCKED queue would); loyalty.outbox is written once per
-- outcome (sent, retry, dead) and only in columns no index covers, so that
-- write is a HOT update (fillfactor 45 leaves each row room on its page for
-- that new version even when a whole batch of neighbours is acked at once).
-- Hence the outbox row of a message under a lease still says 'pending'; its
-- lease is the queue row (views show it as 'claimed').
--
-- The four sender functions are SECURITY DEFINER (with a pinned search_path):
-- loyalty_sender may run them and touch nothing else.
--
-- Locking. The queue row is the claim: claim_messages locks queue rows with
-- FOR UPDATE SKIP LOCKED, so two senders never hold the same message. Ack and
-- fail first lock the queue row, only if it carries their token (an ack
-- deletes it, and raises if the lease had ended, which undoes the delete),
-- then write the outbox row (a claim only reads it), so sender calls cannot
-- deadlock each other. A late ack after its lease ended is refused even if
-- nobody has claimed the message again; once another sender has, the queue
-- row carries the new token and the old one matches nothing. A change made
-- by hand to a pending outbox row locks that row first and the queue row
-- second (trigger); racing an ack or fail of the same message it may
-- deadlock, which PostgreSQL detects: one of the two is rolled back, nothing
-- is lost.

CREATE TABLE loyalty.outbox_queue (
    message_id  bigint PRIMARY KEY,
    visible_at  timestamptz NOT NULL,
    claim_token uuid,
    attempts    integer NOT NULL DEFAULT 0
);
CREATE INDEX outbox_queue_visible_idx ON loyalty.outbox_queue (visible_at);
COMMENT ON TABLE loyalty.outbox_queue IS 'Internal: pending outbox messages by the time each can next be claimed, with the current lease (maintained by triggers on loyalty.outbox)';

CREATE TABLE loyalty.outbox_settings (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
    backoff_base interval NOT NULL DEFAULT '1 minute' CHECK (backoff_base > '0' AND backoff_base <= '1 day'),
    backoff_max  interval NOT NULL DEFAULT '6 hours' CHECK (backoff_max >= backoff_base AND backoff_max <= '30 days'),
    updated_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);
INSERT INTO loyalty.outbox_settings DEFAULT VALUES;
COMMENT ON TABLE loyalty.outbox_settings IS 'Sender settings (one row); change with loyalty.configure_outbox()';
SELECT pg_catalog.pg_extension_config_dump('loyalty.outbox_settings', '');
COMMENT ON COLUMN loyalty.outbox_settings.max_attempts IS 'claims a message gets; a failure (or an expired lease) on the last one makes it dead';
COMMENT ON COLUMN loyalty.outbox_settings.backoff_base IS 'wait after the first failure; doubled after each further one';
COMMENT ON COLUMN loyalty.outbox_settings.backoff_max IS 'the longest wait between attempts';

-- Queue the pending rows of an INSERT (or of a COPY, e.g. a restore) and wake the senders.
CREATE FUNCTION loyalty._outbox_inserted()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO loyalty.outbox_queue (message_id, visible_at, attempts)
    SELECT n.message_id, n.due_at, n.attempts
      FROM new_rows n
     WHERE n.status OPERATOR(pg_catalog.=) 'pending'
    ON CONFLICT (message_id) DO NOTHING;
    IF EXISTS (SELECT 1 FROM new_rows n
                WHERE n.status OPERATOR(pg_catalog.=) 'pending' AND n.due_at OPERATOR(pg_catalog.<=) pg_catalog.now()) THEN
        PERFORM pg_catalog.pg_notify('loyalty_outbox', '');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_inserted AFTER INSERT ON loyalty.outbox
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION loyalty._outbox_inserted();

-- A row changed into or out of 'pending', or a pending row given another due
-- time (by a writer, by hand, or by fail_message): bring its queue row in step.
-- An ack (pending -> sent) removes the queue row itself and never matches.
CREATE FUNCTION loyalty._outbox_requeued()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.status OPERATOR(pg_catalog.=) 'pending' THEN
        INSERT INTO loyalty.outbox_queue AS q (message_id, visible_at, claim_token, attempts)
        VALUES (NEW.message_id, NEW.due_at, NULL, NEW.attempts)
        ON CONFLICT (message_id) DO UPDATE SET visible_at = EXCLUDED.visible_at, claim_token = NULL, attempts = EXCLUDED.attempts;
        IF NEW.due_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN
            PERFORM pg_catalog.pg_notify('loyalty_outbox', '');
        END IF;
    ELSE
        DELETE FROM loyalty.outbox_queue q WHERE q.message_id OPERATOR(pg_catalog.=) NEW.message_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_requeued AFTER UPDATE OF status, due_at ON loyalty.outbox
    FOR EACH ROW
    WHEN ((NEW.status = 'pending' AND OLD.status <> 'pending')
       OR (OLD.status = 'pending' AND NEW.status <> ALL (ARRAY['pending', 'sent']))
       OR (OLD.status = 'pending' AND NEW.status = 'pending' AND OLD.due_at <> NEW.due_at))
    EXECUTE FUNCTION loyalty._outbox_requeued();

CREATE FUNCTION loyalty._outbox_deleted()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'TRUNCATE' THEN
        TRUNCATE loyalty.outbox_queue;
    ELSE
        DELETE FROM loyalty.outbox_queue q USING old_rows o WHERE q.message_id OPERATOR(pg_catalog.=) o.message_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_deleted AFTER DELETE ON loyalty.outbox
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION loyalty._outbox_deleted();
CREATE TRIGGER outbox_truncated AFTER TRUNCATE ON loyalty.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION loyalty._outbox_deleted();

CREATE FUNCTION loyalty.configure_outbox(
    max_attempts integer DEFAULT NULL,
    backoff_base interval DEFAULT NULL,
    backoff_max  interval DEFAULT NULL)
RETURNS loyalty.outbox_settings
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.outbox_settings;
BEGIN
    IF max_attempts NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'max_attempts must be between 1 and 100, not %', max_attempts
              USING ERRCODE = 'invalid_parameter_value', HINT = 'It counts claims: 1 means a message is never retried.';
    END IF;
    IF backoff_base <= '0' OR backoff_base > '1 day' OR backoff_max <= '0' OR backoff_max > '30 days' THEN
        RAISE EXCEPTION 'backoff_base must be positive and at most 1 day, backoff_max positive and at most 30 days'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'For example backoff_base => ''1 minute'', backoff_max => ''6 hours''.';
    END IF;
    SELECT * INTO s FROM loyalty.outbox_settings FOR UPDATE;
    s.max_attempts := coalesce(max_attempts, s.max_attempts);
    s.backoff_base := coalesce(backoff_base, s.backoff_base);
    s.backoff_max := coalesce(backoff_max, s.backoff_max);
    IF s.backoff_max < s.backoff_base THEN
        RAISE EXCEPTION 'backoff_max (%) must not be shorter than backoff_base (%)', s.backoff_max, s.backoff_base
              USING ERRCODE = 'invalid_parameter_value', HINT = 'The wait doubles from backoff_base up to backoff_max.';
    END IF;
    UPDATE loyalty.outbox_settings o
       SET max_attempts = s.max_attempts, backoff_base = s.backoff_base, backoff_max = s.backoff_max,
           updated_at = pg_catalog.now()
     RETURNING o.* INTO s;
    RETURN s;
END
$$;
COMMENT ON FUNCTION loyalty.configure_outbox(integer, interval, interval) IS
'Change the sender settings (NULL keeps a value): attempts before a message is dead, backoff between attempts';

CREATE FUNCTION loyalty.claim_messages(batch integer, lease interval)
RETURNS TABLE (message_id bigint, claim_token uuid, channel text, recipient text, template text, payload jsonb,
               attempts integer, customer_id text, campaign_id integer, due_at timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    token uuid;
    lease_end timestamptz;
    claimed bigint;
BEGIN
    IF batch IS NULL OR batch < 1 OR batch > 10000 THEN
        RAISE EXCEPTION 'batch must be between 1 and 10000, not %', coalesce(batch::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Claim what one sender delivers within the lease, e.g. 100.';
    END IF;
    IF lease IS NULL OR lease <= '0' OR lease > '1 day' THEN
        RAISE EXCEPTION 'lease must be positive and at most 1 day, not %', coalesce(lease::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'The lease is how long the sender may take to deliver the batch and ack it, e.g. ''5 minutes''.';
    END IF;
    token := pg_catalog.gen_random_uuid();
    lease_end := pg_catalog.now() OPERATOR(pg_catalog.+) lease;

    -- the claim: queue rows nobody holds, due or with an expired lease, locked
    -- (rows other senders hold are skipped) and leased; returned with their
    -- message unless it is no longer sendable
    RETURN QUERY
    WITH leased AS (
        UPDATE loyalty.outbox_queue q
           SET visible_at = lease_end, claim_token = token, attempts = q.attempts OPERATOR(pg_catalog.+) 1
         WHERE q.message_id OPERATOR(pg_catalog.=) ANY (ARRAY(
                   SELECT p.message_id FROM loyalty.outbox_queue p
                    WHERE p.visible_at OPERATOR(pg_catalog.<=) pg_catalog.now()
                    ORDER BY p.visible_at
                    LIMIT batch
                      FOR UPDATE SKIP LOCKED))
        RETURNING q.message_id, q.attempts)
    SELECT o.message_id, token, o.channel, o.recipient, o.template, o.payload,
           l.attempts, o.customer_id, o.campaign_id, o.due_at
      FROM leased l
      JOIN loyalty.outbox o ON o.message_id OPERATOR(pg_catalog.=) l.message_id
     WHERE o.status OPERATOR(pg_catalog.=) 'pending'
       AND l.attempts OPERATOR(pg_catalog.<=) (SELECT s.max_attempts FROM loyalty.outbox_settings s)
       AND (o.expires_at IS NULL OR o.expires_at OPERATOR(pg_catalog.>) pg_catalog.now());
    GET DIAGNOSTICS claimed = ROW_COUNT;

    -- a short batch: was anything leased but not returned? (a full batch
    -- returned every row it leased)
    IF claimed OPERATOR(pg_catalog.<) batch THEN
        PERFORM loyalty._outbox_unclaimable(lease_end, token);
    END IF;
END
$$;
COMMENT ON FUNCTION loyalty.claim_messages(integer, interval) IS
'Claim up to batch due messages for lease (FOR UPDATE SKIP LOCKED: no two senders get the same message); ack or fail each with its claim_token before the lease ends';

-- The rare rest of a claim: messages past their validity window become
-- 'expired'; one whose lease ran out on its last allowed attempt becomes
-- 'dead'; queue rows whose outbox row is gone or no longer pending are dropped.
CREATE FUNCTION loyalty._outbox_unclaimable(lease_end timestamptz, token uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    max_tries integer := (SELECT s.max_attempts FROM loyalty.outbox_settings s);
BEGIN
    -- the rows this claim leased: all have visible_at = lease_end (one index probe)
    FOR r IN
        SELECT q.message_id, q.attempts, o.status, o.expires_at
          FROM loyalty.outbox_queue q
          LEFT JOIN loyalty.outbox o ON o.message_id OPERATOR(pg_catalog.=) q.message_id
         WHERE q.visible_at OPERATOR(pg_catalog.=) lease_end AND q.claim_token OPERATOR(pg_catalog.=) token
           AND (o.status IS DISTINCT FROM 'pending'
                OR q.attempts OPERATOR(pg_catalog.>) max_tries
                OR o.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now())
    LOOP
        DELETE FROM loyalty.outbox_queue q WHERE q.message_id OPERATOR(pg_catalog.=) r.message_id;
        IF r.status OPERATOR(pg_catalog.=) 'pending' THEN
            UPDATE loyalty.outbox o
               SET status = CASE WHEN r.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN 'expired' ELSE 'dead' END,
                   attempts = LEAST(r.attempts, max_tries),
                   last_error = CASE WHEN r.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN o.last_error
                                     ELSE pg_catalog.format('lease expired without ack or fail on attempt %s of %s',
                                                            max_tries, max_tries) END
             WHERE o.message_id OPERATOR(pg_catalog.=) r.message_id;
        END IF;
    END LOOP;
END
$$;

-- Why a token no longer holds a message: raise the matching error, or return
-- the status when this same token already finished the message (a retried call).
CREATE FUNCTION loyalty._outbox_token_state(id bigint, token uuid)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    lease_end timestamptz;
BEGIN
    SELECT o.status, o.claim_token, o.last_error INTO r FROM loyalty.outbox o WHERE o.message_id OPERATOR(pg_catalog.=) id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % is not in the outbox', id
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Use a message_id returned by loyalty.claim_messages().';
    END IF;
    SELECT q.visible_at INTO lease_end FROM loyalty.outbox_queue q
     WHERE q.message_id OPERATOR(pg_catalog.=) id AND q.claim_token OPERATOR(pg_catalog.=) token;
    IF FOUND THEN
        RAISE EXCEPTION 'the lease on message % expired at %', id, lease_end
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'The message is claimable again and counts as not sent. Claim smaller batches or a longer lease.';
    END IF;
    IF r.status OPERATOR(pg_catalog.=) 'cancelled' THEN
        RAISE EXCEPTION 'message % was cancelled: %', id, r.last_error
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'The customer opted out while the message was claimed; if it was not delivered yet, do not deliver it.';
    END IF;
    IF r.claim_token IS DISTINCT FROM token THEN
        RAISE EXCEPTION 'message % is not claimed with this token', id
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Only the latest claim can ack or fail a message: your lease ran out and another sender claimed it, or the token belongs to another batch.';
    END IF;
    RETURN r.status;
END
$$;

CREATE FUNCTION loyalty.ack_message(message_id bigint, claim_token uuid)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id bigint := ack_message.message_id;
    token uuid := ack_message.claim_token;
    tries integer;
    lease_end timestamptz;
    st text;
BEGIN
    IF id IS NULL OR token IS NULL THEN
        RAISE EXCEPTION 'message_id and claim_token must not be NULL'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass both as returned by loyalty.claim_messages().';
    END IF;
    -- token and lease are checked on the locked queue row (see the locking note above)
    WITH acked AS (
        DELETE FROM loyalty.outbox_queue q
         WHERE q.message_id OPERATOR(pg_catalog.=) id AND q.claim_token OPERATOR(pg_catalog.=) token
        RETURNING q.attempts, q.visible_at),
    sent AS (
        UPDATE loyalty.outbox o
           SET status = 'sent', sent_at = pg_catalog.now(), attempts = a.attempts, claim_token = token
          FROM acked a
         WHERE o.message_id OPERATOR(pg_catalog.=) id)
    SELECT a.attempts, a.visible_at INTO tries, lease_end FROM acked a;
    IF FOUND THEN
        IF lease_end OPERATOR(pg_catalog.<=) pg_catalog.now() THEN
            -- the error undoes the delete and the update
            RAISE EXCEPTION 'the lease on message % expired at %', id, lease_end
                  USING ERRCODE = 'object_not_in_prerequisite_state',
                        HINT = 'The message is claimable again and counts as not sent. Claim smaller batches or a longer lease.';
        END IF;
        RETURN true;
    END IF;
    st := loyalty._outbox_token_state(id, token);
    IF st OPERATOR(pg_catalog.=) 'sent' THEN
        RETURN false;
    END IF;
    RAISE EXCEPTION 'message % is % and cannot be acknowledged with this token', id, st
          USING ERRCODE = 'object_not_in_prerequisite_state',
                HINT = 'This token already failed the message (or the message was given up); only a new claim can deliver it.';
END
$$;
COMMENT ON FUNCTION loyalty.ack_message(bigint, uuid) IS
'The message was delivered: status sent. true; false for a repeated ack with the same token (idempotent); an expired or wrong token is refused';

CREATE FUNCTION loyalty.ack_messages(message_ids bigint[], claim_token uuid)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    token uuid := ack_messages.claim_token;
    ids bigint[];
    lease_end timestamptz;
    n integer;
    id bigint;
BEGIN
    IF message_ids IS NULL OR token IS NULL OR array_position(message_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'message_ids and claim_token must not be NULL'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the message_ids and the claim_token of one loyalty.claim_messages() batch.';
    END IF;
    -- delete the leases and mark the messages sent in one statement; an error
    -- below (expired lease, a message not held) undoes both
    WITH acked AS (
        DELETE FROM loyalty.outbox_queue q
         WHERE q.message_id OPERATOR(pg_catalog.=) ANY (message_ids) AND q.claim_token OPERATOR(pg_catalog.=) token
        RETURNING q.message_id, q.attempts, q.visible_at),
    sent AS (
        UPDATE loyalty.outbox o
           SET status = 'sent', sent_at = pg_catalog.now(), attempts = a.attempts, claim_token = token
          FROM acked a
         WHERE o.message_id OPERATOR(pg_catalog.=) a.message_id)
    SELECT pg_catalog.array_agg(a.message_id), pg_catalog.min(a.visible_at) INTO ids, lease_end FROM acked a;
    IF lease_end OPERATOR(pg_catalog.<=) pg_catalog.now() THEN
        -- one token, one lease: the whole batch expired
        RAISE EXCEPTION 'the lease of this batch expired at %', lease_end
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'The messages are claimable again and count as not sent. Claim smaller batches or a longer lease.';
    END IF;
    n := coalesce(pg_catalog.cardinality(ids), 0);
    IF n OPERATOR(pg_catalog.<) pg_catalog.cardinality(message_ids) THEN
        -- all or nothing: raise for the first message this token does not hold,
        -- unless each one left over was acked with this token before (or is a duplicate)
        FOR id IN SELECT DISTINCT m FROM pg_catalog.unnest(message_ids) m
                   WHERE ids IS NULL OR m OPERATOR(pg_catalog.<>) ALL (ids) ORDER BY 1
        LOOP
            IF loyalty._outbox_token_state(id, token) OPERATOR(pg_catalog.<>) 'sent' THEN
                RAISE EXCEPTION 'message % is not held by this token and cannot be acknowledged', id
                      USING ERRCODE = 'object_not_in_prerequisite_state',
                            HINT = 'This token already failed the message; ack the others one by one with loyalty.ack_message().';
            END IF;
        END LOOP;
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION loyalty.ack_messages(bigint[], uuid) IS
'Ack a whole claimed batch at once: all or nothing; returns how many were newly acked (repeats with the same token count 0)';

CREATE FUNCTION loyalty.fail_message(message_id bigint, claim_token uuid, error text, retry_after interval DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id bigint := fail_message.message_id;
    token uuid := fail_message.claim_token;
    tries integer;
    s loyalty.outbox_settings;
    wait interval;
    st text;
BEGIN
    IF id IS NULL OR token IS NULL THEN
        RAISE EXCEPTION 'message_id and claim_token must not be NULL'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass both as returned by loyalty.claim_messages().';
    END IF;
    IF retry_after < '0' OR retry_after > '30 days' THEN
        RAISE EXCEPTION 'retry_after must be between 0 and 30 days, not %', retry_after
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL for the exponential backoff of loyalty.outbox_settings, ''0'' to retry at once.';
    END IF;
    SELECT q.attempts INTO tries FROM loyalty.outbox_queue q
     WHERE q.message_id OPERATOR(pg_catalog.=) id AND q.claim_token OPERATOR(pg_catalog.=) token
       AND q.visible_at OPERATOR(pg_catalog.>) pg_catalog.now()
       FOR UPDATE;
    IF NOT FOUND THEN
        st := loyalty._outbox_token_state(id, token);
        IF st OPERATOR(pg_catalog.=) ANY (ARRAY['pending', 'dead']) THEN
            RETURN st;
        END IF;
        RAISE EXCEPTION 'message % is % and cannot be failed with this token', id, st
              USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'This token already acknowledged the message.';
    END IF;
    SELECT * INTO s FROM loyalty.outbox_settings;
    IF tries OPERATOR(pg_catalog.>=) s.max_attempts THEN
        -- the trigger on loyalty.outbox removes the queue row
        UPDATE loyalty.outbox o
           SET status = 'dead', attempts = tries, claim_token = token, last_error = fail_message.error
         WHERE o.message_id OPERATOR(pg_catalog.=) id;
        RETURN 'dead';
    END IF;
    -- exponential backoff: backoff_base * 2^(attempts - 1), at most backoff_max
    wait := coalesce(retry_after,
                     LEAST(s.backoff_max, s.backoff_base OPERATOR(pg_catalog.*)
                                          pg_catalog.power(2, LEAST(tries OPERATOR(pg_catalog.-) 1, 20))::float8));
    -- unleased, claimable again after the wait (the trigger on loyalty.outbox
    -- does the same for the new due time; this covers a due time that did not change)
    UPDATE loyalty.outbox_queue q
       SET visible_at = pg_catalog.now() OPERATOR(pg_catalog.+) wait, claim_token = NULL
     WHERE q.message_id OPERATOR(pg_catalog.=) id;
    UPDATE loyalty.outbox o
       SET due_at = pg_catalog.now() OPERATOR(pg_catalog.+) wait, attempts = tries, claim_token = token,
           last_error = fail_message.error
     WHERE o.message_id OPERATOR(pg_catalog.=) id;
    RETURN 'pending';
END
$$;
COMMENT ON FUNCTION loyalty.fail_message(bigint, uuid, text, interval) IS
'Delivery failed: pending again after retry_after or the exponential backoff, or dead after max_attempts; returns the new status. An expired or wrong token is refused';

CREATE FUNCTION loyalty.notify_due()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM loyalty.outbox_queue q WHERE q.visible_at OPERATOR(pg_catalog.<=) pg_catalog.now()) THEN
        PERFORM pg_catalog.pg_notify('loyalty_outbox', '');
        RETURN true;
    END IF;
    RETURN false;
END
$$;
COMMENT ON FUNCTION loyalty.notify_due() IS
'NOTIFY loyalty_outbox when messages can be claimed now (those that became due by time: quiet hours, retries, expired leases); true if it notified';

CREATE FUNCTION loyalty.requeue_dead(message_ids bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE loyalty.outbox o
       SET status = 'pending', attempts = 0, due_at = pg_catalog.now(), claim_token = NULL
     WHERE o.status OPERATOR(pg_catalog.=) 'dead'
       AND (requeue_dead.message_ids IS NULL OR o.message_id OPERATOR(pg_catalog.=) ANY (requeue_dead.message_ids));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION loyalty.requeue_dead(bigint[]) IS
'Give dead letters (all, or the given ones) a fresh set of attempts, due now; returns how many';

CREATE VIEW loyalty.outbox_summary AS
SELECT m.status, m.channel,
       count(*) AS messages,
       count(*) FILTER (WHERE m.status = 'pending' AND m.due_at <= now()) AS due_now,
       now() - min(m.due_at) FILTER (WHERE m.status = 'pending' AND m.due_at <= now()) AS oldest_due_age,
       min(m.due_at) FILTER (WHERE m.status = 'pending' AND m.due_at > now()) AS next_due_at,
       count(*) FILTER (WHERE m.status = 'claimed' AND m.lease_end <= now()) AS expired_leases,
       max(m.sent_at) AS last_sent_at
  FROM (SELECT CASE WHEN o.status = 'pending' AND q.claim_token IS NOT NULL THEN 'claimed' ELSE o.status END AS status,
               o.channel, o.due_at, o.sent_at, q.visible_at AS lease_end
          FROM loyalty.outbox o
          LEFT JOIN loyalty.outbox_queue q ON q.message_id = o.message_id) m
 GROUP BY m.status, m.channel;
COMMENT ON VIEW loyalty.outbox_summary IS 'Outbox messages per status (claimed: pending under a sender''s lease) and channel: how many, how many are due now, how long the oldest has waited';
COMMENT ON COLUMN loyalty.outbox_summary.status IS 'the messages'' outbox status (claimed: pending under a sender''s lease)';
COMMENT ON COLUMN loyalty.outbox_summary.channel IS 'email, sms, whatsapp, push or the shop''s own channel';
COMMENT ON COLUMN loyalty.outbox_summary.messages IS 'messages with this status and channel';
COMMENT ON COLUMN loyalty.outbox_summary.due_now IS 'pending messages whose due time has come (the senders'' backlog)';
COMMENT ON COLUMN loyalty.outbox_summary.oldest_due_age IS 'how long the oldest due pending message has waited; growing means no sender is draining the outbox';
COMMENT ON COLUMN loyalty.outbox_summary.next_due_at IS 'when the next pending message that is not yet due becomes due (quiet hours, retries)';
COMMENT ON COLUMN loyalty.outbox_summary.expired_leases IS 'claimed messages whose sender did not ack or fail within the lease (claimable again)';
COMMENT ON COLUMN loyalty.outbox_summary.last_sent_at IS 'the latest acknowledged delivery';

CREATE VIEW loyalty.dead_letters AS
SELECT o.message_id, o.campaign_id, o.customer_id, o.channel, o.recipient, o.template,
       o.attempts, o.last_error, o.due_at AS last_due_at, o.created_at, o.payload
  FROM loyalty.outbox o
 WHERE o.status = 'dead';
COMMENT ON VIEW loyalty.dead_letters IS 'Messages given up after outbox_settings.max_attempts; loyalty.requeue_dead() gives them new attempts';
COMMENT ON COLUMN loyalty.dead_letters.message_id IS 'the outbox message (loyalty.requeue_dead takes these ids)';
COMMENT ON COLUMN loyalty.dead_letters.campaign_id IS 'the campaign that decided the message (NULL: loyalty''s own messages)';
COMMENT ON COLUMN loyalty.dead_letters.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.dead_letters.channel IS 'the channel the message was for';
COMMENT ON COLUMN loyalty.dead_letters.recipient IS 'email address or phone number the message was for';
COMMENT ON COLUMN loyalty.dead_letters.template IS 'the template the sender was to render';
COMMENT ON COLUMN loyalty.dead_letters.last_due_at IS 'when the message was last due (its last retry)';
COMMENT ON COLUMN loyalty.dead_letters.created_at IS 'when the message was written to the outbox';
COMMENT ON COLUMN loyalty.dead_letters.payload IS 'what the template needs and why the message was chosen';
COMMENT ON COLUMN loyalty.dead_letters.last_error IS 'the error of the last failed attempt, as the sender reported it';
COMMENT ON COLUMN loyalty.dead_letters.attempts IS 'claims the message had';
