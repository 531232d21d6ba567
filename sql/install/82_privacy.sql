-- Privacy: erasure and export of one customer's data (GDPR articles 15, 17
-- and 20), the staff's customer 360 view, and what BI may read instead of
-- the views that hold contact data.
--
-- Erasure (loyalty.erase_customer) removes the customer's personal data from
-- every loyalty table and keeps only what the shop must keep, under a random
-- pseudonym ('erased:<32 hex digits>', one per erasure, never derived from
-- the key): orders, points ledger and totals, tier history, the messages'
-- statuses (for campaign reports). Contact addresses leave a keyed hash in
-- loyalty.erased_contacts, so that a profile stored later with the same
-- email or phone gets no address (never mailed again) without the address
-- being kept in clear. The erasure itself is recorded in loyalty.erasures.

-- ---------------------------------------------------------------- tables

-- The key of the contact hashes (made at install, kept by pg_dump so that a
-- restored database still recognises erased contacts).
CREATE TABLE loyalty.privacy_settings (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    hash_key bytea NOT NULL
             DEFAULT pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.gen_random_uuid()::text
                                                             || pg_catalog.gen_random_uuid()::text, 'UTF8'))
);
INSERT INTO loyalty.privacy_settings DEFAULT VALUES;
COMMENT ON TABLE loyalty.privacy_settings IS 'Privacy settings (one row): the secret key of the contact hashes in loyalty.erased_contacts';

CREATE TABLE loyalty.erased_contacts (
    contact_hash bytea PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('email', 'phone', 'customer')),
    erased_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    erasure_id   bigint
);
COMMENT ON TABLE loyalty.erased_contacts IS
'Suppression list: keyed hashes (loyalty._contact_hash) of the emails and phone numbers of erased customers; a profile stored with one of them keeps no address';

CREATE TABLE loyalty.erasures (
    erasure_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_hash bytea NOT NULL,
    pseudonym     text NOT NULL,
    reason        text,
    requested_by  text NOT NULL DEFAULT session_user,
    erased_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    removed       jsonb NOT NULL
);
CREATE INDEX erasures_customer_idx ON loyalty.erasures (customer_hash);
COMMENT ON TABLE loyalty.erasures IS
'Record of each erasure: keyed hash of the customer key (loyalty._contact_hash(''customer'', key)), the pseudonym the kept rows now carry, why, who, when, and the rows changed per table';

-- ---------------------------------------------------------------- hashing

-- The normalised form of a contact: emails lower-case and trimmed, phone
-- numbers as their digits (a leading + kept), customer keys as they are.
CREATE FUNCTION loyalty._contact_normal(p_kind text, p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE p_kind
           WHEN 'email' THEN nullif(lower(btrim(p_value)), '')
           WHEN 'phone' THEN nullif(regexp_replace(p_value, '[^0-9+]', '', 'g'), '')
           ELSE p_value END;

-- Keyed hash of a contact: sha256(key || kind || ':' || normalised value).
CREATE FUNCTION loyalty._contact_hash(p_kind text, p_value text)
RETURNS bytea
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.sha256(s.hash_key OPERATOR(pg_catalog.||)
                             pg_catalog.convert_to(p_kind OPERATOR(pg_catalog.||) ':'
                                                   OPERATOR(pg_catalog.||) loyalty._contact_normal(p_kind, p_value), 'UTF8'))
      FROM loyalty.privacy_settings s
     WHERE loyalty._contact_normal(p_kind, p_value) IS NOT NULL
$$;

-- A profile stored with an erased email or phone keeps no address.
CREATE FUNCTION loyalty._profile_suppress()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.email IS NOT NULL
       AND EXISTS (SELECT 1 FROM loyalty.erased_contacts e WHERE e.contact_hash = loyalty._contact_hash('email', NEW.email)) THEN
        NEW.email := NULL;
    END IF;
    IF NEW.phone IS NOT NULL
       AND EXISTS (SELECT 1 FROM loyalty.erased_contacts e WHERE e.contact_hash = loyalty._contact_hash('phone', NEW.phone)) THEN
        NEW.phone := NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER profile_suppress BEFORE INSERT OR UPDATE OF email, phone ON loyalty.profiles
    FOR EACH ROW WHEN (NEW.email IS NOT NULL OR NEW.phone IS NOT NULL)
    EXECUTE FUNCTION loyalty._profile_suppress();

-- ---------------------------------------------------------------- erasure

CREATE FUNCTION loyalty.erase_customer(customer_id text, reason text DEFAULT NULL)
RETURNS TABLE (erasure_id bigint, pseudonym text, removed jsonb)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    cid text := customer_id;
    pn text := 'erased:' || replace(gen_random_uuid()::text, '-', '');
    prof record;
    contacts text[];
    n bigint;
    done jsonb := '{}';
    t record;
    eid bigint;
BEGIN
    IF cid IS NULL OR btrim(cid) = '' THEN
        RAISE EXCEPTION 'customer_id must not be null or empty'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the shop''s own customer key as text, e.g. ''42''.';
    END IF;
    IF cid LIKE 'erased:%' THEN
        RAISE EXCEPTION 'customer % is already a pseudonym of an erased customer', quote_literal(cid)
              USING ERRCODE = 'invalid_parameter_value', HINT = 'See loyalty.erasures.';
    END IF;
    -- no change of this customer is applied meanwhile (the event drain's
    -- lock, 00_base.sql), and no journeys run decides on them half-erased
    PERFORM pg_advisory_xact_lock(74200, 1);
    PERFORM pg_advisory_xact_lock(74200, 5);
    PERFORM 1 FROM loyalty.accounts a WHERE a.customer_id = cid FOR UPDATE;

    -- the contacts to suppress: the profile's and every address messaged
    SELECT p.name, p.email, p.phone, p.birthday INTO prof FROM loyalty.profiles p WHERE p.customer_id = cid;
    contacts := ARRAY(SELECT DISTINCT c FROM (
                          SELECT 'email:' || prof.email AS c WHERE prof.email IS NOT NULL
                          UNION ALL SELECT 'phone:' || prof.phone WHERE prof.phone IS NOT NULL
                          UNION ALL SELECT CASE WHEN o.channel = 'email' THEN 'email:' ELSE 'phone:' END || o.recipient
                            FROM loyalty.outbox o
                           WHERE o.customer_id = cid AND o.recipient IS NOT NULL AND o.channel IN ('email', 'sms', 'whatsapp')) x);

    INSERT INTO loyalty.erasures (customer_hash, pseudonym, reason, removed)
    VALUES (loyalty._contact_hash('customer', cid), pn, reason, '{}')
    RETURNING erasures.erasure_id INTO eid;
    INSERT INTO loyalty.erased_contacts AS e (contact_hash, kind, erasure_id)
    SELECT h, k, eid
      FROM (SELECT split_part(c, ':', 1) AS k, loyalty._contact_hash(split_part(c, ':', 1), substr(c, strpos(c, ':') + 1)) AS h
              FROM unnest(contacts) c) x
     WHERE h IS NOT NULL
    ON CONFLICT (contact_hash) DO UPDATE SET erased_at = now(), erasure_id = excluded.erasure_id;

    -- personal data: deleted
    DELETE FROM loyalty.profiles p WHERE p.customer_id = cid;
    GET DIAGNOSTICS n = ROW_COUNT; done := done || jsonb_build_object('profiles', n);
    DELETE FROM loyalty.consents c WHERE c.customer_id = cid;
    GET DIAGNOSTICS n = ROW_COUNT; done := done || jsonb_build_object('consents', n);
    DELETE FROM loyalty.consent_history c WHERE c.customer_id = cid;
    GET DIAGNOSTICS n = ROW_COUNT; done := done || jsonb_build_object('consent_history', n);
    -- quarantined rows (their tracked fields) of this customer or with one of
    -- their addresses; a field that merely equals the key (an amount of 10
    -- for customer '10') is not theirs
    DELETE FROM loyalty.rejected_rows r
     WHERE r.row_data->>'customer_id' = cid
        OR (prof.email IS NOT NULL AND r.row_data->>'email' = prof.email)
        OR (prof.phone IS NOT NULL AND r.row_data->>'phone' = prof.phone);
    GET DIAGNOSTICS n = ROW_COUNT; done := done || jsonb_build_object('rejected_rows', n);

    -- messages: kept for campaign reports, without address, payload or key;
    -- what was still to go out is cancelled (queue rows first, as set_consent)
    PERFORM 1 FROM loyalty.outbox_queue q
     WHERE q.message_id IN (SELECT o.message_id FROM loyalty.outbox o WHERE o.customer_id = cid AND o.status = 'pending')
     ORDER BY q.message_id
       FOR UPDATE OF q;
    UPDATE loyalty.outbox o
       SET status = CASE WHEN o.status = 'pending' THEN 'cancelled' ELSE o.status END,
           last_error = CASE WHEN o.status = 'pending' THEN 'customer erased' ELSE o.last_error END,
           customer_id = pn, recipient = NULL, payload = jsonb_build_object('erased', true),
           dedupe_key = o.campaign_id || ':' || pn || ':' || o.message_id, claim_token = NULL
     WHERE o.customer_id = cid;
    GET DIAGNOSTICS n = ROW_COUNT; done := done || jsonb_build_object('outbox', n);
    -- messages to the shop's staff about this customer's orders name them by key
    UPDATE loyalty.outbox o SET payload = o.payload || jsonb_build_object('customer_id', pn)
     WHERE loyalty._key_reserved(o.customer_id) AND o.payload->>'customer_id' = cid;

    -- the ledger (append-only but for this: loyalty._ledger_append_only):
    -- a key or reason naming the customer is replaced
    UPDATE loyalty.ledger l
       SET customer_id = pn,
           idempotency_key = CASE WHEN strpos(l.idempotency_key, cid) > 0 OR strpos(l.idempotency_key, prof.email) > 0
                                     OR strpos(l.idempotency_key, prof.phone) > 0
                                THEN pn || ':' || l.entry_id ELSE l.idempotency_key END,
           reason = CASE WHEN l.reason IS NOT NULL
                          AND (strpos(l.reason, cid) > 0 OR strpos(l.reason, prof.email) > 0 OR strpos(l.reason, prof.phone) > 0
                               OR strpos(l.reason, prof.name) > 0)
                         THEN 'erased' ELSE l.reason END
     WHERE l.customer_id = cid;
    GET DIAGNOSTICS n = ROW_COUNT; done := done || jsonb_build_object('ledger', n);

    -- operations data is keyed by order: carrier details and return reasons
    -- can name the customer (recipient, address), and a tracking code opens
    -- the parcel's page at the carrier, so they go; times and statuses stay
    -- (the code becomes erased:<event_id>, unique as the events' key needs)
    IF to_regclass('loyalty.shipment_events') IS NOT NULL THEN
        UPDATE loyalty.shipment_events e
           SET detail = NULL,
               tracking_code = CASE WHEN e.tracking_code IS NOT NULL THEN 'erased:' || e.event_id END
         WHERE (e.detail IS NOT NULL OR e.tracking_code IS NOT NULL)
           AND e.order_ref IN (SELECT o.order_ref FROM loyalty.orders o WHERE o.customer_id = cid);
        GET DIAGNOSTICS n = ROW_COUNT; done := done || jsonb_build_object('shipment_events', n);
        UPDATE loyalty.order_returns r SET reason = NULL
         WHERE r.reason IS NOT NULL
           AND r.order_ref IN (SELECT o.order_ref FROM loyalty.orders o WHERE o.customer_id = cid);
        GET DIAGNOSTICS n = ROW_COUNT; done := done || jsonb_build_object('order_returns', n);
        UPDATE loyalty.support_contacts c SET reason = 'erased' WHERE c.customer_id = cid;
        -- quarantined carrier-events rows of their orders (tracking code, detail)
        DELETE FROM loyalty.rejected_rows r
         WHERE r.source_id IN (SELECT ss.source_id FROM loyalty.shipment_sources ss)
           AND r.order_ref IN (SELECT o.order_ref FROM loyalty.orders o WHERE o.customer_id = cid);
        GET DIAGNOSTICS n = ROW_COUNT;
        done := jsonb_set(done, '{rejected_rows}', to_jsonb((done->>'rejected_rows')::bigint + n));
    END IF;

    -- staff's reasons for a tier override are free text and may name the
    -- customer: they go (the override and its dates stay)
    IF to_regclass('loyalty.tier_overrides') IS NOT NULL THEN
        UPDATE loyalty.tier_overrides ov SET reason = 'erased', end_reason = CASE WHEN ov.end_reason IS NOT NULL THEN 'erased' END
         WHERE ov.customer_id = cid;
        GET DIAGNOSTICS n = ROW_COUNT; done := done || jsonb_build_object('tier_overrides', n);
    END IF;

    -- every other table keyed by customer (orders, events, state, scores,
    -- points, tiers, and those other components add): the pseudonym
    FOR t IN
        SELECT c.relname
          FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE c.relnamespace = 'loyalty'::regnamespace AND c.relkind IN ('r', 'p')
           AND a.attname = 'customer_id' AND NOT a.attisdropped AND a.atttypid = 'text'::regtype
           AND c.relname NOT IN ('profiles', 'consents', 'consent_history', 'outbox', 'ledger')
         ORDER BY c.relname
    LOOP
        IF t.relname IN ('journey_changes', 'score_queue') THEN
            EXECUTE format('DELETE FROM loyalty.%I x WHERE x.customer_id = $1', t.relname) USING cid;
        ELSE
            EXECUTE format('UPDATE loyalty.%I x SET customer_id = $2 WHERE x.customer_id = $1', t.relname) USING cid, pn;
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            done := done || jsonb_build_object(t.relname, n);
        END IF;
    END LOOP;

    UPDATE loyalty.erasures e SET removed = done WHERE e.erasure_id = eid;
    RETURN QUERY SELECT eid, pn, done;
END
$$;
COMMENT ON FUNCTION loyalty.erase_customer(text, text) IS
'Erase a customer (GDPR art. 17): profile, consents, addresses, payloads and quarantined rows removed; orders, points and message statuses kept under a random pseudonym; addresses suppressed by keyed hash; recorded in loyalty.erasures';

-- ---------------------------------------------------------------- export

CREATE FUNCTION loyalty.export_customer(customer_id text)
RETURNS jsonb
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'customer_id', export_customer.customer_id,
        'exported_at', now(),
        'profile', (SELECT to_jsonb(p) - 'birthday_md' FROM loyalty.profiles p WHERE p.customer_id = export_customer.customer_id),
        'consents', coalesce((SELECT jsonb_agg(to_jsonb(c) ORDER BY c.channel) FROM loyalty.consents c
                               WHERE c.customer_id = export_customer.customer_id), '[]'),
        'consent_history', coalesce((SELECT jsonb_agg(to_jsonb(h) ORDER BY h.change_id) FROM loyalty.consent_history h
                                      WHERE h.customer_id = export_customer.customer_id), '[]'),
        'orders', coalesce((SELECT jsonb_agg(jsonb_build_object('order_ref', o.order_ref, 'amount', o.amount, 'refunded', o.refunded,
                                                                'ordered_at', o.ordered_at, 'status', o.status, 'counts', o.counts,
                                                                'delivered_at', d.delivered_at)
                                             ORDER BY o.ordered_at, o.order_ref)
                              FROM loyalty.orders o LEFT JOIN loyalty.deliveries d ON d.order_ref = o.order_ref
                             WHERE o.customer_id = export_customer.customer_id), '[]'),
        'state', (SELECT to_jsonb(s) FROM loyalty.customer_state s WHERE s.customer_id = export_customer.customer_id),
        'scores', (SELECT to_jsonb(r) FROM loyalty.customer_rfm r WHERE r.customer_id = export_customer.customer_id),
        'points', (SELECT to_jsonb(a) FROM loyalty.accounts a WHERE a.customer_id = export_customer.customer_id),
        'points_ledger', coalesce((SELECT jsonb_agg(to_jsonb(l) - 'created_by' ORDER BY l.entry_id) FROM loyalty.ledger l
                                    WHERE l.customer_id = export_customer.customer_id), '[]'),
        'point_lots', coalesce((SELECT jsonb_agg(to_jsonb(pl) ORDER BY pl.lot_id) FROM loyalty.point_lots pl
                                 WHERE pl.customer_id = export_customer.customer_id), '[]'),
        'tier', (SELECT to_jsonb(t) FROM loyalty.customer_tiers t WHERE t.customer_id = export_customer.customer_id),
        'tier_history', coalesce((SELECT jsonb_agg(to_jsonb(h) ORDER BY h.change_id) FROM loyalty.tier_history h
                                   WHERE h.customer_id = export_customer.customer_id), '[]'),
        'messages', coalesce((SELECT jsonb_agg(jsonb_build_object('message_id', o.message_id, 'campaign', cp.name, 'kind', cp.kind,
                                                                  'channel', o.channel, 'recipient', o.recipient, 'template', o.template,
                                                                  'status', o.status, 'created_at', o.created_at, 'due_at', o.due_at,
                                                                  'sent_at', o.sent_at, 'why', o.payload)
                                               ORDER BY o.message_id)
                                FROM loyalty.outbox o LEFT JOIN loyalty.campaigns cp ON cp.campaign_id = o.campaign_id
                               WHERE o.customer_id = export_customer.customer_id), '[]'),
        -- operations: what happened to each order after checkout
        'shipment_events', coalesce((SELECT jsonb_agg(to_jsonb(e) ORDER BY e.at, e.event_id) FROM loyalty.shipment_events e
                                      WHERE e.order_ref IN (SELECT o.order_ref FROM loyalty.orders o
                                                             WHERE o.customer_id = export_customer.customer_id)), '[]'),
        'returns', coalesce((SELECT jsonb_agg(to_jsonb(r) ORDER BY r.requested_at) FROM loyalty.order_returns r
                              WHERE r.order_ref IN (SELECT o.order_ref FROM loyalty.orders o
                                                     WHERE o.customer_id = export_customer.customer_id)), '[]'),
        'order_issues', coalesce((SELECT jsonb_agg(to_jsonb(i) ORDER BY i.issue_id) FROM loyalty.order_issues i
                                   WHERE i.customer_id = export_customer.customer_id), '[]'),
        'support_contacts', coalesce((SELECT jsonb_agg(to_jsonb(c) ORDER BY c.contact_id) FROM loyalty.support_contacts c
                                       WHERE c.customer_id = export_customer.customer_id), '[]'))
$$;
COMMENT ON FUNCTION loyalty.export_customer(text) IS
'Everything loyalty holds about a customer as one JSON document (GDPR art. 15 and 20): profile, consents with history, orders, state and scores, points ledger and lots, tier and its history, messages with why each was sent';

-- ---------------------------------------------------------------- staff and BI

-- For staff (loyalty_support): one row per customer with a profile or orders.
CREATE VIEW loyalty.customer_360 AS
SELECT k.customer_id, p.name, p.email, p.phone, p.birthday, p.time_zone,
       coalesce((SELECT jsonb_object_agg(c.channel, jsonb_build_object('granted', c.granted, 'source', c.source, 'changed_at', c.changed_at))
                   FROM loyalty.consents c WHERE c.customer_id = k.customer_id), '{}') AS consents,
       s.orders, s.first_order_at, s.last_order_at, s.net_spend, s.avg_spend,
       r.r_score, r.f_score, r.m_score, r.segment,
       -- available (spendable, less debt) and pending apart, as loyalty.balances
       (coalesce(pt.available, 0) - coalesce(a.debt, 0))::bigint AS points, coalesce(pt.pending, 0)::bigint AS points_pending,
       coalesce(a.debt, 0) AS points_debt, t.tier,
       coalesce((SELECT jsonb_agg(m ORDER BY m.message_id DESC)
                   FROM (SELECT o.message_id, cp.name AS campaign, o.channel, o.status, o.created_at, o.sent_at
                           FROM loyalty.outbox o LEFT JOIN loyalty.campaigns cp ON cp.campaign_id = o.campaign_id
                          WHERE o.customer_id = k.customer_id
                          ORDER BY o.message_id DESC LIMIT 10) m), '[]') AS recent_messages
  FROM (SELECT p0.customer_id FROM loyalty.profiles p0 UNION SELECT s0.customer_id FROM loyalty.customer_state s0) k
  LEFT JOIN loyalty.profiles p ON p.customer_id = k.customer_id
  LEFT JOIN loyalty.customer_state s ON s.customer_id = k.customer_id
  LEFT JOIN loyalty.customer_rfm r ON r.customer_id = k.customer_id
  LEFT JOIN loyalty.accounts a ON a.customer_id = k.customer_id
  LEFT JOIN loyalty.customer_tiers t ON t.customer_id = k.customer_id
  LEFT JOIN LATERAL (SELECT sum(l.remaining) FILTER (WHERE l.available_at <= now()) AS available,
                            sum(l.remaining) FILTER (WHERE l.available_at > now()) AS pending
                       FROM loyalty.point_lots l
                      WHERE l.customer_id = k.customer_id AND (l.expires_at IS NULL OR l.expires_at > now())) pt ON true;
COMMENT ON VIEW loyalty.customer_360 IS
'For staff (loyalty_support): a customer''s profile and contact data, consents, order state, RFM scores, points, tier and last 10 messages';
COMMENT ON COLUMN loyalty.customer_360.customer_id IS 'the shop''s customer key, as text (customers with a profile or orders)';
COMMENT ON COLUMN loyalty.customer_360.name IS 'the customer''s name (loyalty.profiles)';
COMMENT ON COLUMN loyalty.customer_360.email IS 'the customer''s email address';
COMMENT ON COLUMN loyalty.customer_360.phone IS 'the customer''s phone number';
COMMENT ON COLUMN loyalty.customer_360.birthday IS 'the customer''s birthday';
COMMENT ON COLUMN loyalty.customer_360.time_zone IS 'the customer''s IANA time zone (NULL: journey_settings.default_time_zone)';
COMMENT ON COLUMN loyalty.customer_360.orders IS 'counted orders (NULL: none)';
COMMENT ON COLUMN loyalty.customer_360.first_order_at IS 'time of the first counted order';
COMMENT ON COLUMN loyalty.customer_360.last_order_at IS 'time of the last counted order';
COMMENT ON COLUMN loyalty.customer_360.net_spend IS 'spend on counted orders less refunds';
COMMENT ON COLUMN loyalty.customer_360.avg_spend IS 'net spend per counted order';
COMMENT ON COLUMN loyalty.customer_360.r_score IS 'RFM recency score, 1 (longest ago) to bins (most recent)';
COMMENT ON COLUMN loyalty.customer_360.f_score IS 'RFM frequency score, 1 (fewest orders) to bins';
COMMENT ON COLUMN loyalty.customer_360.m_score IS 'RFM monetary score, 1 (lowest spend) to bins';
COMMENT ON COLUMN loyalty.customer_360.segment IS 'named RFM segment (loyalty.segment_rules)';
COMMENT ON COLUMN loyalty.customer_360.points_debt IS 'points the customer owes after refunds of orders whose points were spent';
COMMENT ON COLUMN loyalty.customer_360.tier IS 'the customer''s tier (NULL: none)';
COMMENT ON COLUMN loyalty.customer_360.points IS 'points the customer can spend now (less debt), as loyalty.balances.available';
COMMENT ON COLUMN loyalty.customer_360.points_pending IS 'points earned but not yet available (return window)';
COMMENT ON COLUMN loyalty.customer_360.consents IS 'current consent per channel: {channel: {granted, source, changed_at}}';
COMMENT ON COLUMN loyalty.customer_360.recent_messages IS 'the last 10 messages (campaign, channel, status, created_at, sent_at), newest first';

-- For BI (loyalty_reader): what loyalty.due_messages says, without recipient and payload.
CREATE FUNCTION loyalty.due_decisions_at(as_of timestamptz)
RETURNS TABLE (campaign_id integer, campaign text, kind text, channel text, customer_id text, occasion text,
               occasion_at timestamptz, decision text, reason text, due_at timestamptz, expires_at timestamptz,
               template text, priority integer)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.campaign_id, d.campaign, d.kind, d.channel, d.customer_id, d.occasion, d.occasion_at, d.decision, d.reason,
           d.due_at, d.expires_at, d.template, d.priority
      FROM loyalty._due_messages(as_of) d
$$;
COMMENT ON FUNCTION loyalty.due_decisions_at(timestamptz) IS
'loyalty.due_messages_at without contact data (recipient, payload): the decisions, for BI';
CREATE VIEW loyalty.due_decisions AS SELECT * FROM loyalty.due_decisions_at(pg_catalog.now());
COMMENT ON VIEW loyalty.due_decisions IS
'For BI: what loyalty.enqueue_due() would decide now, per occasion, with the reason; pseudonymous (loyalty.due_messages with recipient and payload is for loyalty_support)';
COMMENT ON COLUMN loyalty.due_decisions.campaign_id IS 'the campaign (loyalty.campaigns)';
COMMENT ON COLUMN loyalty.due_decisions.campaign IS 'the campaign''s name';
COMMENT ON COLUMN loyalty.due_decisions.kind IS 'the campaign''s kind (welcome, post_purchase, win_back, ...)';
COMMENT ON COLUMN loyalty.due_decisions.channel IS 'the channel the message would go out on';
COMMENT ON COLUMN loyalty.due_decisions.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.due_decisions.occasion IS 'the occasion key (first, order:<ref>, birthday:<year>, ...)';
COMMENT ON COLUMN loyalty.due_decisions.occasion_at IS 'when the occasion became due';
COMMENT ON COLUMN loyalty.due_decisions.decision IS 'send, quiet_hours, held_out, expired, capped, cooldown, no_consent, no_contact, superseded, ops_hold (as loyalty.due_messages)';
COMMENT ON COLUMN loyalty.due_decisions.reason IS 'why, in words';
COMMENT ON COLUMN loyalty.due_decisions.due_at IS 'when the message may go out (after quiet hours); NULL when it will not be sent';
COMMENT ON COLUMN loyalty.due_decisions.expires_at IS 'after this the message is not sent (recorded as expired)';
COMMENT ON COLUMN loyalty.due_decisions.template IS 'the template the sender would render';
COMMENT ON COLUMN loyalty.due_decisions.priority IS 'the campaign''s priority (lower wins under the frequency cap)';

GRANT SELECT ON loyalty.customer_360 TO loyalty_support;
GRANT EXECUTE ON FUNCTION loyalty.export_customer(text) TO loyalty_support;
GRANT SELECT ON loyalty.due_decisions TO loyalty_reader, loyalty_support;
GRANT EXECUTE ON FUNCTION loyalty.due_decisions_at(timestamptz) TO loyalty_reader, loyalty_support;

SELECT pg_catalog.pg_extension_config_dump('loyalty.privacy_settings', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.erased_contacts', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.erasures', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.erasures_erasure_id_seq', '');
