-- Outbox: one row per (campaign, customer, occasion), ever. Journeys write it
-- (loyalty.enqueue_due); the shop's sender drains it (claim / ack / fail).
--
-- Contract between the two halves:
--   * a writer inserts with INSERT ... ON CONFLICT (dedupe_key) DO NOTHING, so a
--     rerun, a concurrent run or a catch-up after downtime never makes a second row;
--   * the writer sets status 'pending' (to be sent at due_at), 'held_out' (the
--     campaign's holdout group: recorded, never sent) or 'expired' (the occasion
--     was missed for longer than the campaign's validity window);
--   * only 'pending' rows with due_at <= now() can be claimed; the sender side
--     owns the claim columns and the statuses 'claimed', 'sent', 'dead'.

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
                  CHECK (status IN ('pending', 'claimed', 'sent', 'dead', 'held_out', 'expired')),
    due_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    attempts      integer NOT NULL DEFAULT 0,
    claim_token   uuid,
    claimed_until timestamptz,
    sent_at       timestamptz,
    last_error    text,
    CHECK (status <> 'claimed' OR (claim_token IS NOT NULL AND claimed_until IS NOT NULL))
);
COMMENT ON TABLE loyalty.outbox IS 'Messages decided by the journeys: one row per campaign, customer and occasion (dedupe_key), drained by the sender';
COMMENT ON COLUMN loyalty.outbox.dedupe_key IS 'campaign:customer:occasion; unique, so an occasion yields at most one row, ever';
COMMENT ON COLUMN loyalty.outbox.status IS 'pending, claimed, sent, dead (gave up after the allowed attempts), held_out (holdout group, never sent), expired (missed its validity window)';
COMMENT ON COLUMN loyalty.outbox.payload IS 'what a template needs (name, points, tier, order, ...) and why the message was chosen (rule, scores at that moment)';
CREATE INDEX outbox_customer_idx ON loyalty.outbox (customer_id, created_at);
CREATE INDEX outbox_campaign_idx ON loyalty.outbox (campaign_id, created_at);
SELECT pg_catalog.pg_extension_config_dump('loyalty.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.outbox_message_id_seq', '');
