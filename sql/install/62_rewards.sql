-- Rewards: an append-only points ledger, point lots for FIFO expiry, earn rules,
-- points from orders (pending through the return window), reversals on refund,
-- and tiers by rolling spend.
--
-- The model. loyalty.ledger is the record: one row per change of a customer's
-- points, never updated or deleted. Two derived tables make reads and FIFO
-- cheap and are always written in the same transaction as the entry:
--   loyalty.point_lots  one row per earned batch, with what is left of it
--   loyalty.accounts    per customer: balance (= sum of the ledger), debt,
--                       lifetime totals
-- Invariant, checked by loyalty.verify_ledger():
--   accounts.balance = sum(ledger.points) = sum(point_lots.remaining) - accounts.debt
--
-- Locking. Every write of a customer's points first locks that customer's
-- accounts row (FOR UPDATE) and only then reads lots, idempotency keys or the
-- balance, each in a statement that starts after the lock was granted (READ
-- COMMITTED takes a fresh snapshot per statement). So two writers of one
-- customer run one after the other and the second sees all the first wrote:
-- two redemptions cannot both spend the same points, and expiry cannot expire
-- points a concurrent redemption spent. A transaction locks one account, or
-- several in customer_id order (expire_points), so no lock cycle can form.

CREATE TABLE loyalty.rewards_settings (
    id                  boolean PRIMARY KEY DEFAULT true CHECK (id),
    earn_on_orders      boolean NOT NULL DEFAULT false,
    earning_since       timestamptz,
    return_window       interval NOT NULL DEFAULT '14 days' CHECK (return_window >= '0'),
    points_expire_after interval DEFAULT '365 days' CHECK (points_expire_after > '0'),
    refund_policy       text NOT NULL DEFAULT 'debt' CHECK (refund_policy IN ('debt', 'clamp')),
    point_value         numeric NOT NULL DEFAULT 0.01 CHECK (point_value >= 0),
    expiry_warning      interval NOT NULL DEFAULT '30 days' CHECK (expiry_warning >= '0'),
    tier_window         interval NOT NULL DEFAULT '12 months' CHECK (tier_window > '0'),
    tier_grace          interval NOT NULL DEFAULT '30 days' CHECK (tier_grace >= '0'),
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now()
);
INSERT INTO loyalty.rewards_settings DEFAULT VALUES;
COMMENT ON TABLE loyalty.rewards_settings IS 'Rewards settings (one row); change with loyalty.configure_rewards()';
COMMENT ON COLUMN loyalty.rewards_settings.earning_since IS 'when earn_on_orders was switched on: older orders never earn';

CREATE TABLE loyalty.tiers (
    tier            text PRIMARY KEY CHECK (btrim(tier) <> ''),
    min_spend       numeric NOT NULL UNIQUE CHECK (min_spend >= 0 AND min_spend < 'Infinity'),
    earn_multiplier numeric NOT NULL DEFAULT 1 CHECK (earn_multiplier > 0 AND earn_multiplier < 'Infinity'),
    benefits        jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE loyalty.tiers IS 'Tiers by net spend over the rolling window (rewards_settings.tier_window); the shop edits this table';

CREATE TABLE loyalty.earn_rules (
    rule_id              serial PRIMARY KEY,
    name                 text NOT NULL UNIQUE,
    points_per_unit      numeric NOT NULL DEFAULT 0 CHECK (points_per_unit >= 0 AND points_per_unit < 'Infinity'),
    multiplier           numeric NOT NULL DEFAULT 1 CHECK (multiplier > 0 AND multiplier < 'Infinity'),
    max_points_per_order bigint CHECK (max_points_per_order >= 0),
    tier                 text REFERENCES loyalty.tiers ON UPDATE CASCADE ON DELETE CASCADE,
    segment              text,
    valid_from           timestamptz,
    valid_until          timestamptz,
    active               boolean NOT NULL DEFAULT true,
    CHECK (valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until)
);
COMMENT ON TABLE loyalty.earn_rules IS
'Points for orders: every active rule whose tier, segment and dates match the order adds its points_per_unit to the rate, multiplies by its multiplier and caps by its max_points_per_order';
INSERT INTO loyalty.earn_rules (name, points_per_unit) VALUES ('base: 1 point per currency unit', 1);
INSERT INTO loyalty.earn_rules (name, multiplier, valid_from, valid_until, active)
VALUES ('example: double points week', 2, '2026-12-01', '2026-12-08', false);

CREATE TABLE loyalty.ledger (
    entry_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id     text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('earn', 'redeem', 'expire', 'reverse', 'adjust')),
    points          bigint NOT NULL,
    order_ref       text,
    lot_id          bigint,
    idempotency_key text COLLATE "C" NOT NULL UNIQUE,
    reason          text,
    available_at    timestamptz,
    expires_at      timestamptz,
    detail          jsonb,
    created_by      text NOT NULL DEFAULT session_user,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK (CASE kind WHEN 'earn' THEN points > 0
                     WHEN 'adjust' THEN points <> 0
                     ELSE points <= 0 END)
);
CREATE INDEX ledger_customer_idx ON loyalty.ledger (customer_id, entry_id);
CREATE INDEX ledger_order_idx ON loyalty.ledger (order_ref) WHERE order_ref IS NOT NULL;
COMMENT ON TABLE loyalty.ledger IS 'Append-only points ledger: one row per change of a customer''s points (corrections are new entries)';
COMMENT ON COLUMN loyalty.ledger.points IS 'signed: earn > 0; redeem, expire, reverse <= 0; adjust either';
COMMENT ON COLUMN loyalty.ledger.lot_id IS 'for expire: the lot expired';
COMMENT ON COLUMN loyalty.ledger.detail IS 'how the entry came about (order points: basis amount, rate, multipliers; reversal: shortfall)';
COMMENT ON COLUMN loyalty.ledger.created_by IS 'the database user whose session made the entry';

-- The one change allowed: loyalty.erase_customer moving a customer's entries
-- to their pseudonym (key and reason may be scrubbed; points never change).
CREATE FUNCTION loyalty._ledger_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.customer_id LIKE 'erased:%' AND OLD.customer_id NOT LIKE 'erased:%'
       AND (NEW.entry_id, NEW.kind, NEW.points, NEW.order_ref, NEW.lot_id, NEW.available_at, NEW.expires_at, NEW.detail,
            NEW.created_by, NEW.created_at)
           IS NOT DISTINCT FROM
           (OLD.entry_id, OLD.kind, OLD.points, OLD.order_ref, OLD.lot_id, OLD.available_at, OLD.expires_at, OLD.detail,
            OLD.created_by, OLD.created_at) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'loyalty.ledger is append-only'
          USING ERRCODE = 'object_not_in_prerequisite_state',
                HINT = 'Correct a balance with a new entry: loyalty.adjust_points().';
END
$$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON loyalty.ledger
    FOR EACH ROW EXECUTE FUNCTION loyalty._ledger_append_only();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON loyalty.ledger
    FOR EACH STATEMENT EXECUTE FUNCTION loyalty._ledger_append_only();

-- What is left of each earned batch; a lot spent, expired or taken back in
-- full is deleted (the ledger keeps the history). No index covers remaining,
-- so spending part of a lot is a HOT update. available_at 'infinity': waiting
-- for a delivery the shop has not recorded yet.
CREATE TABLE loyalty.point_lots (
    lot_id       bigint PRIMARY KEY,
    customer_id  text NOT NULL,
    points       bigint NOT NULL,
    remaining    bigint NOT NULL CHECK (remaining > 0 AND remaining <= points),
    available_at timestamptz NOT NULL,
    expires_at   timestamptz,
    order_ref    text
) WITH (fillfactor = 80);
CREATE INDEX point_lots_customer_idx ON loyalty.point_lots (customer_id);
CREATE INDEX point_lots_expiry_idx ON loyalty.point_lots (expires_at) WHERE expires_at IS NOT NULL;
COMMENT ON TABLE loyalty.point_lots IS 'Earned batches of points and what is left of each (FIFO redemption and expiry)';

CREATE TABLE loyalty.accounts (
    customer_id       text PRIMARY KEY,
    balance           bigint NOT NULL DEFAULT 0,
    debt              bigint NOT NULL DEFAULT 0 CHECK (debt >= 0),
    lifetime_earned   bigint NOT NULL DEFAULT 0,
    lifetime_redeemed bigint NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT pg_catalog.now()
) WITH (fillfactor = 80);
COMMENT ON TABLE loyalty.accounts IS 'Per customer: balance (sum of the ledger), debt (points owed after refunds), lifetime totals';

CREATE TABLE loyalty.customer_tiers (
    customer_id      text PRIMARY KEY,
    tier             text,
    qualifying_spend numeric NOT NULL,
    since            timestamptz NOT NULL,
    downgrade_at     timestamptz,
    evaluated_at     timestamptz NOT NULL,
    earned_tier      text,
    override_id      bigint,
    override_until   timestamptz
);
COMMENT ON TABLE loyalty.customer_tiers IS 'Each customer''s tier (NULL: below every tier)';
COMMENT ON COLUMN loyalty.customer_tiers.tier IS 'the tier in force: the one spend earns, or a higher one given by a tier override (loyalty.tier_overrides) until it ends';
COMMENT ON COLUMN loyalty.customer_tiers.downgrade_at IS 'set while spend is below the tier: the downgrade happens then unless spend recovers';
COMMENT ON COLUMN loyalty.customer_tiers.earned_tier IS 'while an override is in force (override_id set): the tier spend earns, which returns when it ends';
COMMENT ON COLUMN loyalty.customer_tiers.override_id IS 'the tier override in force (loyalty.tier_overrides); NULL: none';
COMMENT ON COLUMN loyalty.customer_tiers.override_until IS 'when the override in force ends';

CREATE TABLE loyalty.tier_history (
    change_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id      text NOT NULL,
    from_tier        text,
    to_tier          text,
    qualifying_spend numeric NOT NULL,
    changed_at       timestamptz NOT NULL,
    reason           text NOT NULL,
    override_id      bigint
);
CREATE INDEX tier_history_customer_idx ON loyalty.tier_history (customer_id, change_id);
CREATE INDEX tier_history_changed_idx ON loyalty.tier_history (changed_at);
COMMENT ON TABLE loyalty.tier_history IS 'Every tier change (assigned: the first evaluation of a customer; upgrade; downgrade after the grace period; tier removed; override: a tier override starts; override ended: it ended and the earned tier returns)';
COMMENT ON COLUMN loyalty.tier_history.override_id IS 'reason override / override ended: the tier override (loyalty.tier_overrides)';

-- Order points that could not be written (the shop's write went through).
CREATE TABLE loyalty.points_problems (
    problem_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id   integer,
    order_ref   text,
    error       text NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    resolved_at timestamptz
);
COMMENT ON TABLE loyalty.points_problems IS 'Orders whose points could not be updated by the trigger; loyalty.retry_points_problems() retries them';

CREATE AGGREGATE loyalty._product(numeric) (SFUNC = pg_catalog.numeric_mul, STYPE = numeric, INITCOND = '1');

-- ---------------------------------------------------------------- checks

CREATE FUNCTION loyalty._check_customer(p_customer text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_customer IS NULL OR btrim(p_customer) = '' THEN
        RAISE EXCEPTION 'customer_id must not be null or empty'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the shop''s own customer key as text, e.g. ''42''.';
    END IF;
    -- (the ledger's C path hands such keys to this check: src/ledger.c; the
    -- rule is capture.c's, as for every customer key)
    IF loyalty._key_problem(p_customer) IS NOT NULL THEN
        RAISE EXCEPTION 'customer_id %', loyalty._key_problem(p_customer)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass the shop''s own customer key as text, e.g. ''42'': at most 200 characters, no control characters, tabs or Unicode spaces.';
    END IF;
END
$$;

-- At most loyalty.max_points_per_entry (src/ledger.c, default 100 million)
-- per entry, so that no balance or sum of points comes near bigint's range.
CREATE FUNCTION loyalty._check_points(p_points bigint)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cap bigint := coalesce(nullif(current_setting('loyalty.max_points_per_entry', true), '')::bigint, 100000000);
BEGIN
    IF p_points IS NULL OR p_points <= 0 THEN
        RAISE EXCEPTION 'points must be a positive whole number, not %', coalesce(p_points::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Points are counted in whole points greater than zero.';
    END IF;
    IF p_points > cap THEN
        RAISE EXCEPTION 'points must be at most % per entry, not %', cap, p_points
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'The cap is the setting loyalty.max_points_per_entry (a superuser may raise it); split a larger grant into several entries.';
    END IF;
END
$$;

CREATE FUNCTION loyalty._check_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_key IS NULL OR btrim(p_key) = '' THEN
        RAISE EXCEPTION 'idempotency_key must not be null or empty'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass a key that names this one request, e.g. ''signup-bonus:42''; a retry with the same key changes nothing.';
    END IF;
    IF loyalty._key_problem(p_key, 500) IS NOT NULL THEN
        RAISE EXCEPTION 'idempotency_key %', loyalty._key_problem(p_key, 500)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass a key that names this one request, e.g. ''signup-bonus:42'': at most 500 characters, no control characters, tabs or Unicode spaces.';
    END IF;
    IF loyalty._key_reserved(p_key) THEN
        RAISE EXCEPTION 'idempotency keys starting with "loyalty:" are reserved'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'loyalty writes order points and expiry under such keys; choose another prefix.';
    END IF;
END
$$;

-- The arguments earn and redeem share.
CREATE FUNCTION loyalty._check_request(p_customer text, p_points bigint, p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM loyalty._check_customer(p_customer);
    PERFORM loyalty._check_points(p_points);
    PERFORM loyalty._check_key(p_key);
END
$$;

-- Lock a customer's account row, creating it if p_create.
CREATE FUNCTION loyalty._lock_account(p_customer text, p_create boolean)
RETURNS loyalty.accounts
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a loyalty.accounts;
BEGIN
    SELECT * INTO a FROM loyalty.accounts WHERE customer_id = p_customer FOR UPDATE;
    IF NOT FOUND AND p_create THEN
        INSERT INTO loyalty.accounts (customer_id) VALUES (p_customer) ON CONFLICT (customer_id) DO NOTHING;
        SELECT * INTO a FROM loyalty.accounts WHERE customer_id = p_customer FOR UPDATE;
    END IF;
    RETURN a;
END
$$;

-- ---------------------------------------------------------------- writing entries (account locked by the caller)

-- A new lot: pays off debt first. Returns the entry id.
CREATE FUNCTION loyalty._add_points(p_customer text, p_kind text, p_points bigint, p_reason text, p_key text,
                                    p_expires_at timestamptz, p_available_at timestamptz,
                                    p_order_ref text, p_detail jsonb, p_debt bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id bigint;
    paid bigint := least(p_debt, p_points);
BEGIN
    INSERT INTO loyalty.ledger (customer_id, kind, points, order_ref, idempotency_key, reason, available_at, expires_at, detail)
    VALUES (p_customer, p_kind, p_points, p_order_ref, p_key, p_reason, p_available_at, p_expires_at,
            CASE WHEN paid > 0 THEN coalesce(p_detail, '{}') || jsonb_build_object('debt_paid', paid) ELSE p_detail END)
    ON CONFLICT ON CONSTRAINT ledger_idempotency_key_key DO NOTHING
    RETURNING entry_id INTO id;
    IF id IS NULL THEN
        RETURN NULL;    -- the key is taken (by another customer's entry): the caller reports it
    END IF;
    IF p_points > paid THEN
        INSERT INTO loyalty.point_lots (lot_id, customer_id, points, remaining, available_at, expires_at, order_ref)
        VALUES (id, p_customer, p_points, p_points - paid, coalesce(p_available_at, '-infinity'), p_expires_at, p_order_ref);
    END IF;
    UPDATE loyalty.accounts
       SET balance = balance + p_points, debt = debt - paid,
           lifetime_earned = lifetime_earned + CASE WHEN p_kind = 'earn' THEN p_points ELSE 0 END,
           updated_at = now()
     WHERE customer_id = p_customer;
    RETURN id;
END
$$;

-- Take up to p_points from a customer's lots, oldest expiry first: lots of
-- p_order_ref first (a reversal takes back the order's own points), then
-- available lots, then pending ones if p_pending. Returns the points taken.
-- The FIFO order of the SQL paths (redeem, reversals); src/ledger.c's
-- LotCompare is the same order for the C redeem.
CREATE FUNCTION loyalty._take_points(p_customer text, p_points bigint, p_as_of timestamptz,
                                     p_pending boolean, p_order_ref text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    -- plpgsql, not sql: its plan is cached for the session
    WITH lots AS (
        SELECT l.lot_id, l.remaining,
               sum(l.remaining) OVER (ORDER BY l.order_ref IS NOT DISTINCT FROM p_order_ref AND p_order_ref IS NOT NULL DESC,
                                               l.available_at > p_as_of, l.expires_at NULLS LAST, l.lot_id) AS upto
          FROM loyalty.point_lots l
         WHERE l.customer_id = p_customer AND l.remaining > 0
           AND (l.expires_at IS NULL OR l.expires_at > p_as_of)
           AND (p_pending OR l.available_at <= p_as_of OR l.order_ref IS NOT DISTINCT FROM p_order_ref AND p_order_ref IS NOT NULL)
    ), part AS (
        UPDATE loyalty.point_lots l
           SET remaining = lots.upto - p_points
          FROM lots
         WHERE l.lot_id = lots.lot_id AND lots.upto - lots.remaining < p_points AND lots.upto > p_points
        RETURNING lots.remaining - (lots.upto - p_points) AS n
    ), spent AS (
        DELETE FROM loyalty.point_lots l
         USING lots
         WHERE l.lot_id = lots.lot_id AND lots.upto <= p_points
        RETURNING lots.remaining AS n
    )
    SELECT coalesce((SELECT sum(part.n) FROM part), 0) + coalesce((SELECT sum(spent.n) FROM spent), 0) INTO n;
    RETURN n;
END
$$;

-- A replayed key: the same request returns the first entry, another is an error.
CREATE FUNCTION loyalty._replayed(p_key text, p_customer text, p_kind text, p_points bigint, p_reason text,
                                  p_expires_at timestamptz, p_available_at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e loyalty.ledger;
BEGIN
    SELECT * INTO e FROM loyalty.ledger WHERE idempotency_key = p_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF e.customer_id <> p_customer OR e.kind <> p_kind OR e.points <> p_points
       OR e.reason IS DISTINCT FROM p_reason OR e.expires_at IS DISTINCT FROM p_expires_at
       OR e.available_at IS DISTINCT FROM p_available_at THEN
        RAISE EXCEPTION 'idempotency key "%" was already used for another request', p_key
              USING ERRCODE = 'unique_violation',
                    DETAIL = format('entry %s: %s %s points for customer %s', e.entry_id, e.kind, e.points, e.customer_id),
                    HINT = 'A key names one request: retry with identical arguments, or use a new key.';
    END IF;
    RETURN e.entry_id;
END
$$;

-- ---------------------------------------------------------------- the API

-- The SQL implementation: every case. loyalty.earn() (C, src/ledger.c) does
-- the common case itself and hands everything else to this function.
CREATE FUNCTION loyalty._earn_sql(customer_id text, points bigint, reason text, idempotency_key text,
                                  expires_at timestamptz DEFAULT NULL, available_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c text := _earn_sql.customer_id;
    p bigint := _earn_sql.points;
    k text := _earn_sql.idempotency_key;
    owed bigint;
    id bigint;
BEGIN
    PERFORM loyalty._check_request(c, p, k);
    IF expires_at IS NOT NULL AND (NOT isfinite(expires_at) OR expires_at <= now()) THEN
        RAISE EXCEPTION 'expires_at must be a finite time in the future'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL for points that never expire.';
    END IF;
    IF available_at IS NOT NULL AND NOT isfinite(available_at) THEN
        RAISE EXCEPTION 'available_at must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL for points that can be spent at once.';
    END IF;
    IF available_at >= expires_at THEN
        RAISE EXCEPTION 'available_at (%) is not before expires_at (%)', available_at, expires_at
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Points must become available before they expire.';
    END IF;

    -- The account locked (created for a new customer), then the one earn
    -- write (loyalty._add_points): entry, lot, account; the new points pay
    -- the customer's debt first. A taken key writes nothing: a replay (or an
    -- error, which undoes the account just created).
    owed := (loyalty._lock_account(c, true)).debt;
    id := loyalty._add_points(c, 'earn', p, _earn_sql.reason, k, _earn_sql.expires_at, _earn_sql.available_at,
                              NULL, NULL, owed);
    IF id IS NULL THEN
        RETURN loyalty._replayed(k, c, 'earn', p, reason, expires_at, available_at);
    END IF;
    RETURN id;
END
$$;
CREATE FUNCTION loyalty.earn(customer_id text, points bigint, reason text, idempotency_key text,
                             expires_at timestamptz DEFAULT NULL, available_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ledger_earn';
COMMENT ON FUNCTION loyalty.earn(text, bigint, text, text, timestamptz, timestamptz) IS
'Give a customer points (pending until available_at, expiring at expires_at); idempotent by key; returns the ledger entry id';

-- The SQL implementation of loyalty.redeem() (see loyalty._earn_sql).
CREATE FUNCTION loyalty._redeem_sql(customer_id text, points bigint, reason text, idempotency_key text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c text := _redeem_sql.customer_id;
    p bigint := _redeem_sql.points;
    k text := _redeem_sql.idempotency_key;
    owed bigint;
    id bigint;
    avail bigint;
BEGIN
    PERFORM loyalty._check_request(c, p, k);

    -- lock the account; only then read lots and keys (a fresh snapshot per statement)
    SELECT a.debt INTO owed FROM loyalty.accounts a WHERE a.customer_id = c FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'customer "%" has no points', c
              USING ERRCODE = 'no_data_found', HINT = 'Only customers who have earned points can redeem; check the customer id.';
    END IF;

    -- if enough is available (less debt): the entry, then the points taken
    -- from the lots in FIFO order (loyalty._take_points) and the account; a
    -- taken key inserts nothing
    SELECT coalesce(sum(pl.remaining), 0)::bigint - owed INTO avail
      FROM loyalty.point_lots pl
     WHERE pl.customer_id = c AND pl.remaining > 0 AND pl.available_at <= now()
       AND (pl.expires_at IS NULL OR pl.expires_at > now());
    IF avail >= p THEN
        INSERT INTO loyalty.ledger AS l (customer_id, kind, points, idempotency_key, reason)
        VALUES (c, 'redeem', -p, k, _redeem_sql.reason)
        ON CONFLICT ON CONSTRAINT ledger_idempotency_key_key DO NOTHING
        RETURNING l.entry_id INTO id;
    END IF;
    IF id IS NOT NULL THEN
        PERFORM loyalty._take_points(c, p, now(), false);
        UPDATE loyalty.accounts a
           SET balance = a.balance - p, lifetime_redeemed = a.lifetime_redeemed + p, updated_at = now()
         WHERE a.customer_id = c;
        RETURN id;
    END IF;
    -- nothing written: a replay (same key) returns the first result ...
    IF EXISTS (SELECT 1 FROM loyalty.ledger l WHERE l.idempotency_key = k) THEN
        RETURN loyalty._replayed(k, c, 'redeem', -p, reason, NULL, NULL);
    END IF;
    -- ... otherwise there was not enough
    RAISE EXCEPTION 'customer "%" has % points available, % requested', c, greatest(avail, 0), p
          USING ERRCODE = 'LY001',
                HINT = 'Redeem at most loyalty.balance(customer_id).available; pending points become available later.';
END
$$;
CREATE FUNCTION loyalty.redeem(customer_id text, points bigint, reason text, idempotency_key text)
RETURNS bigint
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ledger_redeem';
COMMENT ON FUNCTION loyalty.redeem(text, bigint, text, text) IS
'Spend a customer''s available points, first-expiring first; refused (SQLSTATE LY001) beyond the available balance; idempotent by key';

-- Corrections by the shop: positive adds a lot that never expires, negative
-- takes available then pending points (never below zero).
CREATE FUNCTION loyalty.adjust_points(customer_id text, points bigint, reason text, idempotency_key text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a loyalty.accounts;
    id bigint;
    have bigint;
BEGIN
    PERFORM loyalty._check_customer(customer_id);
    IF points IS NULL OR points = 0 THEN
        RAISE EXCEPTION 'points must be a non-zero whole number'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Positive adds points, negative removes them.';
    END IF;
    PERFORM loyalty._check_points(CASE WHEN points = -9223372036854775808 THEN 9223372036854775807 ELSE abs(points) END);
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'an adjustment needs a reason'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Say why the balance is corrected; it is kept in the ledger.';
    END IF;
    PERFORM loyalty._check_key(idempotency_key);
    a := loyalty._lock_account(adjust_points.customer_id, true);
    id := loyalty._replayed(idempotency_key, adjust_points.customer_id, 'adjust', points, reason, NULL, NULL);
    IF id IS NOT NULL THEN
        RETURN id;
    END IF;
    IF points > 0 THEN
        id := loyalty._add_points(adjust_points.customer_id, 'adjust', points, reason, idempotency_key,
                                  NULL, NULL, NULL, NULL, a.debt);
    ELSE
        SELECT coalesce(sum(remaining), 0) - a.debt INTO have FROM loyalty.point_lots l
         WHERE l.customer_id = adjust_points.customer_id AND l.remaining > 0 AND (l.expires_at IS NULL OR l.expires_at > now());
        IF have < -points THEN
            RAISE EXCEPTION 'customer "%" has % points, cannot remove %', adjust_points.customer_id, greatest(have, 0), -points
                  USING ERRCODE = 'LY001', HINT = 'Remove at most the customer''s available and pending points.';
        END IF;
        INSERT INTO loyalty.ledger (customer_id, kind, points, idempotency_key, reason)
        VALUES (adjust_points.customer_id, 'adjust', points, idempotency_key, reason)
        ON CONFLICT ON CONSTRAINT ledger_idempotency_key_key DO NOTHING
        RETURNING entry_id INTO id;
        IF id IS NOT NULL THEN
            PERFORM loyalty._take_points(adjust_points.customer_id, -points, now(), true);
            UPDATE loyalty.accounts t SET balance = t.balance + points, updated_at = now()
             WHERE t.customer_id = adjust_points.customer_id;
        END IF;
    END IF;
    IF id IS NULL THEN
        RETURN loyalty._replayed(idempotency_key, adjust_points.customer_id, 'adjust', points, reason, NULL, NULL);
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION loyalty.adjust_points(text, bigint, text, text) IS
'Correct a balance with a new ledger entry (positive or negative); idempotent by key';

CREATE FUNCTION loyalty.balance(customer_id text,
    OUT available bigint, OUT pending bigint, OUT lifetime_earned bigint, OUT lifetime_redeemed bigint,
    OUT expiring_points bigint, OUT next_expiry_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (coalesce(sum(l.remaining) FILTER (WHERE l.available_at <= now()), 0) - coalesce(max(a.debt), 0))::bigint,
           coalesce(sum(l.remaining) FILTER (WHERE l.available_at > now()), 0)::bigint,
           coalesce(max(a.lifetime_earned), 0),
           coalesce(max(a.lifetime_redeemed), 0),
           coalesce(sum(l.remaining) FILTER (WHERE l.expires_at <= now() + s.expiry_warning), 0)::bigint,
           min(l.expires_at)
      FROM loyalty.rewards_settings s
      LEFT JOIN loyalty.accounts a ON a.customer_id = balance.customer_id
      LEFT JOIN loyalty.point_lots l
        ON l.customer_id = balance.customer_id AND l.remaining > 0 AND (l.expires_at IS NULL OR l.expires_at > now())
     GROUP BY s.id
$$;
COMMENT ON FUNCTION loyalty.balance(text) IS
'A customer''s points now: available (spendable, less any debt), pending, lifetime earned (net of reversals) and redeemed, points expiring within rewards_settings.expiry_warning, next expiry';

CREATE VIEW loyalty.balances AS
SELECT a.customer_id,
       (coalesce(l.available, 0) - a.debt)::bigint AS available,
       coalesce(l.pending, 0)::bigint AS pending,
       a.debt,
       a.lifetime_earned,
       a.lifetime_redeemed,
       coalesce(l.expiring, 0)::bigint AS expiring_points,
       l.next_expiry_at,
       t.tier,
       a.updated_at
  FROM loyalty.accounts a
  CROSS JOIN loyalty.rewards_settings s
  LEFT JOIN LATERAL (
        SELECT sum(p.remaining) FILTER (WHERE p.available_at <= now()) AS available,
               sum(p.remaining) FILTER (WHERE p.available_at > now()) AS pending,
               sum(p.remaining) FILTER (WHERE p.expires_at <= now() + s.expiry_warning) AS expiring,
               min(p.expires_at) AS next_expiry_at
          FROM loyalty.point_lots p
         WHERE p.customer_id = a.customer_id AND p.remaining > 0 AND (p.expires_at IS NULL OR p.expires_at > now())) l ON true
  LEFT JOIN loyalty.customer_tiers t ON t.customer_id = a.customer_id;
COMMENT ON VIEW loyalty.balances IS 'Points per customer now (as loyalty.balance()), with debt and tier';
COMMENT ON COLUMN loyalty.balances.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.balances.updated_at IS 'when the customer''s points last changed';
COMMENT ON COLUMN loyalty.balances.available IS 'points the customer can spend now (less debt)';
COMMENT ON COLUMN loyalty.balances.pending IS 'points earned but not yet available (return window, future available_at)';
COMMENT ON COLUMN loyalty.balances.debt IS 'points owed after refunds of orders whose points were already spent (refund_policy debt)';
COMMENT ON COLUMN loyalty.balances.lifetime_earned IS 'points ever earned, net of reversals';
COMMENT ON COLUMN loyalty.balances.lifetime_redeemed IS 'points ever redeemed';
COMMENT ON COLUMN loyalty.balances.expiring_points IS 'points expiring within rewards_settings.expiry_warning';
COMMENT ON COLUMN loyalty.balances.next_expiry_at IS 'when the next of the customer''s points expire';
COMMENT ON COLUMN loyalty.balances.tier IS 'the customer''s tier (NULL: none)';

-- Sums over every customer stay numeric: bigint per customer, not for the shop.
CREATE VIEW loyalty.liability AS
SELECT sum(b.available) FILTER (WHERE b.available > 0) AS available_points,
       sum(b.pending) AS pending_points,
       sum(b.debt) AS debt_points,
       coalesce(sum(b.available) FILTER (WHERE b.available > 0), 0) + coalesce(sum(b.pending), 0) AS outstanding_points,
       s.point_value,
       ((coalesce(sum(b.available) FILTER (WHERE b.available > 0), 0) + coalesce(sum(b.pending), 0)) * s.point_value) AS outstanding_value,
       count(*) FILTER (WHERE b.available > 0 OR b.pending > 0) AS customers_with_points
  FROM loyalty.rewards_settings s
  LEFT JOIN loyalty.balances b ON true
 GROUP BY s.point_value;
COMMENT ON VIEW loyalty.liability IS 'Points the shop owes its customers and their value at rewards_settings.point_value';
COMMENT ON COLUMN loyalty.liability.available_points IS 'points customers can spend now (customers with a positive balance)';
COMMENT ON COLUMN loyalty.liability.pending_points IS 'points earned but not yet available';
COMMENT ON COLUMN loyalty.liability.point_value IS 'value of one point in the shop''s currency (rewards_settings.point_value)';
COMMENT ON COLUMN loyalty.liability.customers_with_points IS 'customers with available or pending points';
COMMENT ON COLUMN loyalty.liability.outstanding_points IS 'available plus pending points (not yet expired)';
COMMENT ON COLUMN loyalty.liability.outstanding_value IS 'outstanding_points times point_value, in the shop''s currency';
COMMENT ON COLUMN loyalty.liability.debt_points IS 'points customers owe after refunds (not counted against the liability)';

-- Expire what is due as of as_of, exactly once: each lot's remainder becomes
-- one expire entry keyed by the lot, and the lot drops to zero.
CREATE FUNCTION loyalty.expire_points(as_of timestamptz DEFAULT now(),
                                      OUT customers bigint, OUT lots bigint, OUT points bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who text[];
BEGIN
    IF as_of IS NULL OR NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Omit it to expire what is due now.';
    END IF;
    -- lock the accounts first, in key order (see the locking note at the top)
    SELECT array_agg(a.customer_id ORDER BY a.customer_id) INTO who
      FROM (SELECT a.customer_id FROM loyalty.accounts a
             WHERE a.customer_id IN (SELECT l.customer_id FROM loyalty.point_lots l
                                      WHERE l.remaining > 0 AND l.expires_at <= as_of)
             ORDER BY a.customer_id FOR UPDATE) a;
    IF who IS NULL THEN
        customers := 0; lots := 0; points := 0;
        RETURN;
    END IF;
    WITH due AS (
        SELECT l.lot_id, l.customer_id, l.remaining, l.expires_at FROM loyalty.point_lots l
         WHERE l.remaining > 0 AND l.expires_at <= as_of AND l.customer_id = ANY (who)
    ), zeroed AS (
        DELETE FROM loyalty.point_lots l USING due WHERE l.lot_id = due.lot_id
        RETURNING due.*
    ), entries AS (
        INSERT INTO loyalty.ledger AS e (customer_id, kind, points, lot_id, idempotency_key, reason, detail)
        SELECT z.customer_id, 'expire', -z.remaining, z.lot_id, 'loyalty:expire:' || z.lot_id, 'points expired',
               jsonb_build_object('expired_at', z.expires_at)
          FROM zeroed z
        RETURNING e.customer_id AS cid, e.points AS pts
    ), per AS (
        SELECT cid, sum(pts)::bigint AS p, count(*) AS n FROM entries GROUP BY cid
    ), upd AS (
        UPDATE loyalty.accounts a SET balance = a.balance + per.p, updated_at = now()
          FROM per WHERE a.customer_id = per.cid
        RETURNING per.n, per.p
    )
    SELECT count(*), coalesce(sum(n), 0), coalesce(-sum(p), 0) INTO customers, lots, points FROM upd;
END
$$;
COMMENT ON FUNCTION loyalty.expire_points(timestamptz) IS
'Expire every lot due by as_of (once: a lot is expired by one ledger entry); returns customers, lots and points expired';

-- numeric to bigint, saturating at bigint's ends (for reports of sums)
CREATE FUNCTION loyalty._clamp_bigint(v numeric)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN least(greatest(v, -9223372036854775808), 9223372036854775807)::bigint;

CREATE FUNCTION loyalty.verify_ledger()
RETURNS TABLE (customer_id text, stored_balance bigint, ledger_balance bigint, lots_balance bigint, debt bigint,
               stored_earned bigint, ledger_earned bigint, stored_redeemed bigint, ledger_redeemed bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- compared as numeric: a sum beyond bigint (a ledger that wrapped) is
    -- reported, clamped to bigint's range, instead of failing the check
    WITH l AS (
        SELECT e.customer_id, sum(e.points) AS total,
               coalesce(sum(e.points) FILTER (WHERE e.kind IN ('earn', 'reverse')), 0) AS earned,
               coalesce(-sum(e.points) FILTER (WHERE e.kind = 'redeem'), 0) AS redeemed
          FROM loyalty.ledger e GROUP BY e.customer_id
    ), p AS (
        SELECT pl.customer_id, sum(pl.remaining) AS total FROM loyalty.point_lots pl GROUP BY pl.customer_id
    )
    SELECT coalesce(a.customer_id, l.customer_id), a.balance, loyalty._clamp_bigint(coalesce(l.total, 0)),
           loyalty._clamp_bigint(coalesce(p.total, 0)), a.debt,
           a.lifetime_earned, loyalty._clamp_bigint(coalesce(l.earned, 0)), a.lifetime_redeemed,
           loyalty._clamp_bigint(coalesce(l.redeemed, 0))
      FROM loyalty.accounts a
      FULL JOIN l ON l.customer_id = a.customer_id
      LEFT JOIN p ON p.customer_id = coalesce(a.customer_id, l.customer_id)
     WHERE a.balance IS DISTINCT FROM coalesce(l.total, 0)
        OR a.balance IS DISTINCT FROM coalesce(p.total, 0) - a.debt
        OR a.lifetime_earned IS DISTINCT FROM coalesce(l.earned, 0)
        OR a.lifetime_redeemed IS DISTINCT FROM coalesce(l.redeemed, 0)
$$;
COMMENT ON FUNCTION loyalty.verify_ledger() IS
'Customers whose stored balance or totals differ from their ledger entries or lots (empty when all is well)';

-- ---------------------------------------------------------------- points for orders

-- Points an order earns under the active rules, for a customer at order time.
CREATE FUNCTION loyalty.order_points(customer_id text, amount numeric, ordered_at timestamptz DEFAULT now(),
                                     OUT points bigint, OUT detail jsonb)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM loyalty._check_amount(order_points.amount, 'amount');   -- NaN, infinite, above the maximum: refused
    WITH who AS (
        SELECT (SELECT ct.tier FROM loyalty.customer_tiers ct WHERE ct.customer_id = order_points.customer_id) AS tier,
               (SELECT cs.segment FROM loyalty.customer_segments cs WHERE cs.customer_id = order_points.customer_id) AS segment
    ), r AS (
        SELECT coalesce(sum(e.points_per_unit), 0) AS rate,
               coalesce(loyalty._product(e.multiplier), 1) AS mult,
               min(e.max_points_per_order) AS cap,
               array_agg(e.name ORDER BY e.rule_id) AS rules
          FROM loyalty.earn_rules e, who
         WHERE e.active
           AND (e.tier IS NULL OR e.tier = who.tier)
           AND (e.segment IS NULL OR e.segment = who.segment)
           AND (e.valid_from IS NULL OR e.valid_from <= order_points.ordered_at)
           AND (e.valid_until IS NULL OR order_points.ordered_at < e.valid_until)
    ), t AS (
        SELECT coalesce((SELECT tr.earn_multiplier FROM loyalty.tiers tr WHERE tr.tier = who.tier), 1) AS tier_mult, who.*
          FROM who
    )
    SELECT least(floor(greatest(order_points.amount, 0) * r.rate * r.mult * t.tier_mult), coalesce(r.cap, 9e18))::bigint,
           jsonb_build_object('basis_amount', order_points.amount, 'rate', r.rate, 'multiplier', r.mult,
                              'tier', t.tier, 'tier_multiplier', t.tier_mult, 'segment', t.segment,
                              'cap', r.cap, 'rules', r.rules)
      INTO points, detail
      FROM r, t;
END
$$;
COMMENT ON FUNCTION loyalty.order_points(text, numeric, timestamptz) IS
'Points an order of this amount earns now under loyalty.earn_rules and the customer''s tier and segment (also a preview for the shop''s checkout)';

-- Bring an order's points in line with the order: earn once when it first
-- counts, then reverse in proportion to refunds (or fully when it stops
-- counting), earn back if it counts again. The first earn fixes the order's
-- points (rules, tier and segment at that moment); later changes scale them:
--   entitled = floor(points * (amount - refunded) / basis_amount), at most points.
CREATE FUNCTION loyalty._sync_order_points(p_order_ref text, p_customer text, p_amount numeric, p_refunded numeric,
                                           p_ordered_at timestamptz, p_counted boolean, p_delivered_at timestamptz,
                                           p_wait_for_delivery boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.rewards_settings;
    a loyalty.accounts;
    first loyalty.ledger;
    others record;
    basis numeric;
    full_points bigint;
    entitled bigint;
    n integer;
    avail timestamptz;
    pts record;
BEGIN
    IF p_order_ref IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO s FROM loyalty.rewards_settings;
    SELECT * INTO first FROM loyalty.ledger
     WHERE idempotency_key = 'loyalty:order:' || p_order_ref || ':1';
    IF NOT FOUND AND NOT (s.earn_on_orders AND p_counted AND p_customer IS NOT NULL AND btrim(p_customer) <> ''
                          AND p_amount > 0 AND p_amount < 'Infinity' AND isfinite(p_ordered_at)
                          AND p_ordered_at >= s.earning_since) THEN
        RETURN;     -- nothing earned yet and nothing to earn
    END IF;

    -- customers who hold points of this order, besides the order's customer
    FOR others IN
        SELECT DISTINCT e.customer_id FROM loyalty.ledger e
         WHERE e.order_ref = p_order_ref AND e.idempotency_key LIKE 'loyalty:order:%'
           AND e.customer_id IS DISTINCT FROM p_customer
         ORDER BY 1
    LOOP
        PERFORM loyalty._settle_order_points(others.customer_id, p_order_ref, 0, s.refund_policy);
    END LOOP;
    IF p_customer IS NULL OR btrim(p_customer) = '' THEN
        RETURN;
    END IF;

    a := loyalty._lock_account(p_customer, true);
    IF first.entry_id IS NULL OR first.customer_id <> p_customer THEN
        SELECT * INTO first FROM loyalty.ledger
         WHERE order_ref = p_order_ref AND customer_id = p_customer AND kind = 'earn'
           AND idempotency_key LIKE 'loyalty:order:%'
         ORDER BY entry_id LIMIT 1;
    END IF;

    IF p_wait_for_delivery AND p_delivered_at IS NULL THEN
        avail := 'infinity';
    ELSE
        avail := coalesce(p_delivered_at, p_ordered_at) + s.return_window;
    END IF;

    IF first.entry_id IS NULL THEN
        IF NOT (s.earn_on_orders AND p_counted AND p_amount > 0 AND p_ordered_at >= s.earning_since) THEN
            RETURN;
        END IF;
        SELECT * INTO pts FROM loyalty.order_points(p_customer, p_amount, p_ordered_at);
        IF pts.points <= 0 THEN
            RETURN;
        END IF;
        PERFORM loyalty._check_points(pts.points);   -- an order earns at most one entry's cap
        SELECT count(*) + 1 INTO n FROM loyalty.ledger WHERE order_ref = p_order_ref AND idempotency_key LIKE 'loyalty:order:%';
        PERFORM loyalty._add_points(p_customer, 'earn', pts.points, 'order ' || p_order_ref,
                                    'loyalty:order:' || p_order_ref || ':' || n,
                                    CASE WHEN s.points_expire_after IS NULL OR NOT isfinite(avail) THEN NULL
                                         ELSE avail + s.points_expire_after END,
                                    avail, p_order_ref, pts.detail, a.debt);
        first.points := pts.points;
        first.detail := pts.detail;
    END IF;

    basis := (first.detail ->> 'basis_amount')::numeric;
    full_points := first.points;
    IF NOT p_counted OR p_amount IS NULL OR basis IS NULL OR basis <= 0 THEN
        entitled := 0;
    ELSE
        entitled := least(full_points, floor(full_points * greatest(p_amount - coalesce(p_refunded, 0), 0) / basis))::bigint;
    END IF;
    PERFORM loyalty._settle_order_points(p_customer, p_order_ref, entitled, s.refund_policy);

    -- pending points follow the delivery: available a return window after it
    UPDATE loyalty.point_lots l
       SET available_at = avail,
           expires_at = CASE WHEN s.points_expire_after IS NULL OR NOT isfinite(avail) THEN NULL
                             ELSE avail + s.points_expire_after END
     WHERE l.order_ref = p_order_ref AND l.customer_id = p_customer AND l.remaining > 0
       AND l.available_at > now() AND l.available_at IS DISTINCT FROM avail;
END
$$;

-- Make a customer's net points from one order equal p_entitled (account locked
-- here). Taking back spent points follows the refund policy: 'debt' lets the
-- balance go negative, 'clamp' stops at zero and records the shortfall.
CREATE FUNCTION loyalty._settle_order_points(p_customer text, p_order_ref text, p_entitled bigint, p_policy text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a loyalty.accounts := loyalty._lock_account(p_customer, true);
    have bigint;
    n integer;
    delta bigint;
    taken bigint;
    short bigint;
    k text;
BEGIN
    -- net points credited for this order, counting shortfalls already written off
    SELECT coalesce(sum(e.points), 0) - coalesce(sum((e.detail ->> 'shortfall')::bigint), 0), count(*)
      INTO have, n
      FROM loyalty.ledger e
     WHERE e.order_ref = p_order_ref AND e.customer_id = p_customer AND e.idempotency_key LIKE 'loyalty:order:%';
    delta := p_entitled - have;
    IF delta = 0 THEN
        RETURN;
    END IF;
    SELECT count(*) + 1 INTO n FROM loyalty.ledger e
     WHERE e.order_ref = p_order_ref AND e.idempotency_key LIKE 'loyalty:order:%';
    k := 'loyalty:order:' || p_order_ref || ':' || n;
    IF delta > 0 THEN
        -- the order counts again (or a refund was undone): earn back, available at once
        PERFORM loyalty._add_points(p_customer, 'earn', delta, 'order ' || p_order_ref || ' counts again', k,
                                    NULL, NULL, p_order_ref, jsonb_build_object('entitled', p_entitled), a.debt);
        RETURN;
    END IF;
    taken := loyalty._take_points(p_customer, -delta, now(), true, p_order_ref);
    short := -delta - taken;
    IF short > 0 AND p_policy = 'clamp' THEN
        INSERT INTO loyalty.ledger (customer_id, kind, points, order_ref, idempotency_key, reason, detail)
        VALUES (p_customer, 'reverse', -taken, p_order_ref, k, 'order ' || p_order_ref || ' refunded',
                jsonb_build_object('entitled', p_entitled, 'shortfall', short, 'policy', 'clamp'));
        UPDATE loyalty.accounts SET balance = balance - taken, lifetime_earned = lifetime_earned - taken, updated_at = now()
         WHERE customer_id = p_customer;
    ELSE
        INSERT INTO loyalty.ledger (customer_id, kind, points, order_ref, idempotency_key, reason, detail)
        VALUES (p_customer, 'reverse', delta, p_order_ref, k, 'order ' || p_order_ref || ' refunded',
                jsonb_build_object('entitled', p_entitled) ||
                CASE WHEN short > 0 THEN jsonb_build_object('debt', short, 'policy', 'debt') ELSE '{}' END);
        UPDATE loyalty.accounts SET balance = balance + delta, debt = debt + short,
                                    lifetime_earned = lifetime_earned + delta, updated_at = now()
         WHERE customer_id = p_customer;
    END IF;
END
$$;

-- Sync from loyalty.orders (the app's orders, refunds, retries).
CREATE FUNCTION loyalty._sync_recorded_order(p_order_ref text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o loyalty.orders;
BEGIN
    SELECT * INTO o FROM loyalty.orders WHERE order_ref = p_order_ref;
    IF FOUND THEN
        PERFORM loyalty._sync_order_points(o.order_ref, o.customer_id, o.amount, o.refunded, o.ordered_at,
                                           o.counted, NULL, false);
    END IF;
END
$$;

-- Order points follow the captured order (loyalty.apply_events, one trigger on
-- the shop's table: src/intake.c). For each order of a batch the points are
-- brought in line with loyalty.orders and the delivery time; an error is kept
-- in loyalty.points_problems (retried by loyalty.retry_points_problems()) and
-- never stops the batch.
CREATE FUNCTION loyalty._apply_order_points(p_changes loyalty.order_change_checked[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    msg text;
    one_by_one boolean := false;
BEGIN
    IF NOT (SELECT earn_on_orders FROM loyalty.rewards_settings)
       AND NOT EXISTS (SELECT 1 FROM loyalty.ledger e, unnest(p_changes) a
                        WHERE e.idempotency_key = 'loyalty:order:' || a.order_ref || ':1') THEN
        RETURN;     -- earning is off and none of these orders ever earned
    END IF;
    -- the whole batch in one subtransaction; order by order only when it fails
    BEGIN
        FOR c IN
            SELECT DISTINCT ON (a.order_ref) a.order_ref, a.source_id, o.customer_id, o.amount, o.refunded, o.ordered_at,
                   coalesce(o.counted, false) AS counted, d.delivered_at, so.delivered_at_column IS NOT NULL AS wait
              FROM unnest(p_changes) a
              JOIN loyalty.sources so ON so.source_id = a.source_id
              LEFT JOIN loyalty.orders o ON o.order_ref = a.order_ref AND o.source_id = a.source_id
              LEFT JOIN loyalty.deliveries d ON d.order_ref = a.order_ref
             WHERE a.order_ref IS NOT NULL AND loyalty._key_problem(a.order_ref) IS NULL
             ORDER BY a.order_ref
        LOOP
            PERFORM loyalty._sync_order_points(c.order_ref, c.customer_id, c.amount, coalesce(c.refunded, 0),
                                               c.ordered_at, c.counted, c.delivered_at, c.wait);
        END LOOP;
    EXCEPTION WHEN serialization_failure OR deadlock_detected OR lock_not_available THEN
        RAISE;
    WHEN OTHERS THEN
        one_by_one := true;
    END;
    IF one_by_one THEN
        FOR c IN
            SELECT DISTINCT ON (a.order_ref) a.order_ref, a.source_id, o.customer_id, o.amount, o.refunded, o.ordered_at,
                   coalesce(o.counted, false) AS counted, d.delivered_at, so.delivered_at_column IS NOT NULL AS wait
              FROM unnest(p_changes) a
              JOIN loyalty.sources so ON so.source_id = a.source_id
              LEFT JOIN loyalty.orders o ON o.order_ref = a.order_ref AND o.source_id = a.source_id
              LEFT JOIN loyalty.deliveries d ON d.order_ref = a.order_ref
             WHERE a.order_ref IS NOT NULL AND loyalty._key_problem(a.order_ref) IS NULL
             ORDER BY a.order_ref
        LOOP
            BEGIN
                PERFORM loyalty._sync_order_points(c.order_ref, c.customer_id, c.amount, coalesce(c.refunded, 0),
                                                   c.ordered_at, c.counted, c.delivered_at, c.wait);
            EXCEPTION WHEN serialization_failure OR deadlock_detected OR lock_not_available THEN
                RAISE;
            WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
                INSERT INTO loyalty.points_problems (source_id, order_ref, error) VALUES (c.source_id, c.order_ref, msg);
            END;
        END LOOP;
    END IF;
END
$$;

-- Order points no longer have a trigger of their own: remove one left by 0.1.
CREATE FUNCTION loyalty._sync_earn_triggers()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    FOR rel IN SELECT t.tgrelid::regclass FROM pg_trigger t WHERE t.tgname = 'loyalty_earn_orders' LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS loyalty_earn_orders ON %s', rel);
    END LOOP;
END
$$;

CREATE FUNCTION loyalty.retry_points_problems()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    n bigint := 0;
BEGIN
    FOR p IN SELECT DISTINCT order_ref FROM loyalty.points_problems WHERE resolved_at IS NULL AND order_ref IS NOT NULL LOOP
        PERFORM loyalty._sync_recorded_order(p.order_ref);
        UPDATE loyalty.points_problems SET resolved_at = now() WHERE order_ref = p.order_ref AND resolved_at IS NULL;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION loyalty.retry_points_problems() IS
'Bring the points of orders listed in loyalty.points_problems in line with loyalty.orders; returns the orders retried';

-- 0.1's API, now the delivery column of loyalty.track_orders (one code path:
-- the trigger, backfill, points, loyalty.deliveries and the operations facts
-- follow it). NULL stops tracking the delivery time.
CREATE FUNCTION loyalty._track_deliveries(p_rel regclass, source text, delivered_at_column text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass := loyalty._resolve_table(p_rel, source);
    s loyalty.sources;
BEGIN
    SELECT so.* INTO s FROM loyalty.sources so JOIN pg_class c ON c.oid = rel
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE so.relation_schema = n.nspname AND so.relation_name = c.relname;
    IF NOT FOUND THEN
        RAISE EXCEPTION '"%" is not tracked', source
              USING ERRCODE = 'undefined_object', HINT = 'Track it first with loyalty.track_orders().';
    END IF;
    PERFORM loyalty._track_orders(rel, source, s.customer_column, s.amount_column, s.ordered_at_column,
                                  s.order_id_column, NULL, NULL, true, 10000,
                                  delivered_at_column => coalesce(delivered_at_column, ''));
END
$$;
CREATE FUNCTION loyalty.track_deliveries(source text, delivered_at_column text)
RETURNS void
LANGUAGE sql
AS $$ SELECT loyalty._track_deliveries(loyalty._lookup_table(source), source, delivered_at_column) $$;
COMMENT ON FUNCTION loyalty.track_deliveries(text, text) IS
'Name the delivery time column of a tracked table: its order points become available a return window after delivery (NULL: after the order)';

CREATE FUNCTION loyalty.configure_rewards(
    earn_on_orders      boolean DEFAULT NULL,
    return_window       interval DEFAULT NULL,
    points_expire_after interval DEFAULT NULL,
    refund_policy       text DEFAULT NULL,
    point_value         numeric DEFAULT NULL,
    expiry_warning      interval DEFAULT NULL,
    tier_window         interval DEFAULT NULL,
    tier_grace          interval DEFAULT NULL,
    earn_orders_since   timestamptz DEFAULT NULL)
RETURNS loyalty.rewards_settings
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.rewards_settings;
BEGIN
    IF return_window < '0' OR expiry_warning < '0' OR tier_grace < '0' OR tier_window <= '0' THEN
        RAISE EXCEPTION 'return_window, expiry_warning and tier_grace must not be negative, tier_window must be positive'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'For example return_window => ''14 days'', tier_window => ''12 months''.';
    END IF;
    IF earn_orders_since IS NOT NULL AND NOT isfinite(earn_orders_since) THEN
        RAISE EXCEPTION 'earn_orders_since must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Orders placed from then on earn points; the default is the moment earning is switched on.';
    END IF;
    IF points_expire_after < '0' THEN
        RAISE EXCEPTION 'points_expire_after must not be negative'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass ''0'' for order points that never expire.';
    END IF;
    IF refund_policy NOT IN ('debt', 'clamp') THEN
        RAISE EXCEPTION 'refund_policy must be ''debt'' or ''clamp'', not "%"', refund_policy
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'debt: the balance may go negative when refunded points were spent; clamp: stop at zero and record the shortfall.';
    END IF;
    IF point_value < 0 OR point_value = 'NaN' OR point_value = 'Infinity' THEN
        RAISE EXCEPTION 'point_value must be a finite amount of money, zero or more'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'For example 0.01 when 100 points are worth 1 currency unit.';
    END IF;
    UPDATE loyalty.rewards_settings AS r
       SET earn_on_orders = coalesce(configure_rewards.earn_on_orders, r.earn_on_orders),
           earning_since = CASE WHEN configure_rewards.earn_orders_since IS NOT NULL THEN configure_rewards.earn_orders_since
                                WHEN configure_rewards.earn_on_orders AND NOT r.earn_on_orders THEN now()
                                ELSE r.earning_since END,
           return_window = coalesce(configure_rewards.return_window, r.return_window),
           points_expire_after = CASE WHEN configure_rewards.points_expire_after IS NULL THEN r.points_expire_after
                                      WHEN configure_rewards.points_expire_after = '0' THEN NULL
                                      ELSE configure_rewards.points_expire_after END,
           refund_policy = coalesce(configure_rewards.refund_policy, r.refund_policy),
           point_value = coalesce(configure_rewards.point_value, r.point_value),
           expiry_warning = coalesce(configure_rewards.expiry_warning, r.expiry_warning),
           tier_window = coalesce(configure_rewards.tier_window, r.tier_window),
           tier_grace = coalesce(configure_rewards.tier_grace, r.tier_grace),
           updated_at = now()
    RETURNING * INTO s;
    PERFORM loyalty._sync_earn_triggers();
    RETURN s;
END
$$;
COMMENT ON FUNCTION loyalty.configure_rewards(boolean, interval, interval, text, numeric, interval, interval, interval, timestamptz) IS
'Change rewards settings (NULL keeps a setting); earn_on_orders attaches or detaches the earn trigger on tracked tables';

-- ---------------------------------------------------------------- tiers

-- Re-evaluate the tiers of the given customers as of p_as_of: up at once, down
-- only after tier_grace below the tier. A tier override in force
-- (loyalty.tier_overrides) gives at least its tier until it ends; the tier
-- spend earns is kept beside it (earned_tier) and returns when it ends.
-- Every change of the tier in force goes to tier_history.
CREATE FUNCTION loyalty._recompute_tiers(p_customers text[], p_as_of timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.rewards_settings;
    c record;
    changes bigint := 0;
    earned text;        -- the tier spend earns after this evaluation
    earned_rank numeric;
    dg timestamptz;     -- downgrade_at after it
    why text;           -- how the earned tier changed (NULL: it did not)
    shown text;         -- the tier in force after it
    at timestamptz;     -- when the change of the tier in force happened
BEGIN
    IF NOT EXISTS (SELECT 1 FROM loyalty.tiers) AND NOT EXISTS (SELECT 1 FROM loyalty.customer_tiers WHERE tier IS NOT NULL) THEN
        RETURN 0;
    END IF;
    SELECT * INTO s FROM loyalty.rewards_settings;
    PERFORM 1 FROM loyalty.customer_tiers ct WHERE ct.customer_id = ANY (p_customers) ORDER BY ct.customer_id FOR UPDATE;
    FOR c IN
        WITH spend AS (
            SELECT x.customer_id,
                   coalesce((SELECT sum(o.amount - o.refunded) FROM loyalty.orders o
                              WHERE o.customer_id = x.customer_id AND o.counts
                                AND o.ordered_at > p_as_of - s.tier_window AND o.ordered_at <= p_as_of), 0) AS spend
              FROM (SELECT DISTINCT u AS customer_id FROM unnest(p_customers) u WHERE u IS NOT NULL) x
        )
        SELECT sp.customer_id, sp.spend, q.tier AS qual, coalesce(q.min_spend, -1) AS qual_rank,
               ct.customer_id IS NOT NULL AS known, ct.tier AS shown, ct.override_id AS cur_override,
               CASE WHEN ct.override_id IS NOT NULL THEN ct.earned_tier ELSE ct.tier END AS cur,
               coalesce(cur.min_spend, -1) AS cur_rank,
               ct.downgrade_at, ct.qualifying_spend, ct.earned_tier, ct.override_until,
               ov.override_id, ov.tier AS ov_tier, ov.min_spend AS ov_rank, ov.starts_at AS ov_start, ov.until AS ov_until,
               old.until AS old_until
          FROM spend sp
          LEFT JOIN LATERAL (SELECT t.tier, t.min_spend FROM loyalty.tiers t WHERE t.min_spend <= sp.spend
                              ORDER BY t.min_spend DESC LIMIT 1) q ON true
          LEFT JOIN loyalty.customer_tiers ct ON ct.customer_id = sp.customer_id
          LEFT JOIN loyalty.tiers cur ON cur.tier = CASE WHEN ct.override_id IS NOT NULL THEN ct.earned_tier ELSE ct.tier END
          -- the override in force: the highest tier, then the one ending last
          LEFT JOIN LATERAL (SELECT o.override_id, o.tier, t.min_spend, o.starts_at, least(o.ended_at, o.ends_at) AS until
                               FROM loyalty.tier_overrides o JOIN loyalty.tiers t ON t.tier = o.tier
                              WHERE o.customer_id = sp.customer_id AND o.starts_at <= p_as_of
                                AND least(o.ended_at, o.ends_at) > p_as_of
                              ORDER BY t.min_spend DESC, least(o.ended_at, o.ends_at) DESC, o.override_id DESC LIMIT 1) ov ON true
          LEFT JOIN LATERAL (SELECT least(o.ended_at, o.ends_at) AS until FROM loyalty.tier_overrides o
                              WHERE o.override_id = ct.override_id) old ON true
         ORDER BY sp.customer_id
    LOOP
        -- the earned tier: as without overrides
        earned := c.cur; earned_rank := c.cur_rank; dg := c.downgrade_at; why := NULL; at := NULL;
        IF NOT c.known THEN
            earned := c.qual; earned_rank := c.qual_rank; dg := NULL;
            -- the first evaluation assigns a tier: not an upgrade (tier_changed
            -- campaigns do not congratulate it)
            IF c.qual IS NOT NULL THEN why := 'assigned'; END IF;
        ELSIF c.qual_rank > c.cur_rank OR (c.cur IS NOT NULL AND c.cur_rank = -1) THEN
            -- up at once (or the tier was deleted from loyalty.tiers: move to what qualifies)
            earned := c.qual; earned_rank := c.qual_rank; dg := NULL;
            why := CASE WHEN c.cur IS NOT NULL AND c.cur_rank = -1 THEN 'tier removed' ELSE 'upgrade' END;
        ELSIF c.qual_rank = c.cur_rank THEN
            dg := NULL;
        ELSIF p_as_of >= coalesce(c.downgrade_at, p_as_of + s.tier_grace) THEN
            earned := c.qual; earned_rank := c.qual_rank; dg := NULL; why := 'downgrade';
        ELSE
            dg := coalesce(c.downgrade_at, p_as_of + s.tier_grace);
        END IF;
        shown := CASE WHEN c.override_id IS NOT NULL AND c.ov_rank > earned_rank THEN c.ov_tier ELSE earned END;

        -- the change of the tier in force, if any, and why
        IF c.override_id IS NOT NULL AND c.override_id IS DISTINCT FROM c.cur_override THEN
            why := 'override'; at := greatest(c.ov_start, coalesce(c.old_until, c.ov_start));
        ELSIF c.cur_override IS NOT NULL AND c.override_id IS NULL THEN
            why := 'override ended'; at := least(coalesce(c.old_until, p_as_of), p_as_of);
        ELSIF shown IS DISTINCT FROM c.shown AND why IS NOT NULL AND (c.known OR shown IS NOT NULL) THEN
            at := p_as_of;
        ELSE
            why := NULL;
        END IF;

        IF NOT c.known THEN
            INSERT INTO loyalty.customer_tiers (customer_id, tier, qualifying_spend, since, evaluated_at,
                                                earned_tier, override_id, override_until)
            VALUES (c.customer_id, shown, c.spend, coalesce(at, p_as_of), p_as_of,
                    CASE WHEN c.override_id IS NOT NULL THEN earned END, c.override_id, c.ov_until);
        ELSIF why IS NOT NULL OR dg IS DISTINCT FROM c.downgrade_at OR dg IS NOT NULL
              OR (c.qualifying_spend, c.earned_tier, c.override_until)
                 IS DISTINCT FROM (c.spend, CASE WHEN c.override_id IS NOT NULL THEN earned END, c.ov_until) THEN
            UPDATE loyalty.customer_tiers
               SET tier = shown, qualifying_spend = c.spend, since = CASE WHEN why IS NOT NULL THEN at ELSE since END,
                   downgrade_at = dg, earned_tier = CASE WHEN c.override_id IS NOT NULL THEN earned END,
                   override_id = c.override_id, override_until = c.ov_until,
                   evaluated_at = CASE WHEN why IS NOT NULL OR dg IS NOT NULL THEN p_as_of ELSE evaluated_at END
             WHERE customer_id = c.customer_id;
        END IF;
        IF why IS NOT NULL THEN
            INSERT INTO loyalty.tier_history (customer_id, from_tier, to_tier, qualifying_spend, changed_at, reason, override_id)
            VALUES (c.customer_id, CASE WHEN c.known THEN c.shown END, shown, c.spend, at, why,
                    CASE why WHEN 'override' THEN c.override_id WHEN 'override ended' THEN c.cur_override END);
            changes := changes + 1;
        END IF;
    END LOOP;
    RETURN changes;
END
$$;

-- Daily (pg_cron, see loyalty.schedule()): the window moves, so spend drops
-- out of it; customers in a tier, with orders in the window or with a tier
-- override starting or ending are re-evaluated.
CREATE FUNCTION loyalty.recompute_tiers(as_of timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who text[];
    s loyalty.rewards_settings;
BEGIN
    IF as_of IS NULL OR NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Omit it to evaluate tiers as of now().';
    END IF;
    SELECT * INTO s FROM loyalty.rewards_settings;
    SELECT array_agg(customer_id ORDER BY customer_id) INTO who FROM (
        SELECT ct.customer_id FROM loyalty.customer_tiers ct
         WHERE ct.tier IS NOT NULL OR ct.downgrade_at IS NOT NULL OR ct.override_id IS NOT NULL
        UNION
        SELECT cs.customer_id FROM loyalty.customer_state cs WHERE cs.last_order_at > as_of - s.tier_window
        UNION
        SELECT o.customer_id FROM loyalty.tier_overrides o
         WHERE o.starts_at <= as_of AND least(o.ended_at, o.ends_at) > as_of) x;
    RETURN coalesce(loyalty._recompute_tiers(who, as_of), 0);
END
$$;
COMMENT ON FUNCTION loyalty.recompute_tiers(timestamptz) IS
'Re-evaluate tiers as of as_of (run daily: spend leaves the rolling window); returns the number of tier changes';

-- ---------------------------------------------------------------- privileges

GRANT EXECUTE ON FUNCTION loyalty.earn(text, bigint, text, text, timestamptz, timestamptz),
                          loyalty.redeem(text, bigint, text, text),
                          loyalty.balance(text),
                          loyalty.order_points(text, numeric, timestamptz) TO loyalty_app;
GRANT SELECT ON loyalty.balances, loyalty.tiers, loyalty.customer_tiers TO loyalty_app;
-- BI reads the ledger without its free text (a reason or key may name the
-- customer: 'goodwill for Jane <jane@example.com>'); staff read it whole
CREATE VIEW loyalty.points_history AS
SELECT l.entry_id, l.customer_id, l.kind, l.points, l.order_ref, l.lot_id, l.available_at, l.expires_at, l.created_at
  FROM loyalty.ledger l;
COMMENT ON VIEW loyalty.points_history IS 'Every change of a customer''s points (the ledger) without its free text: reason, idempotency key, detail and author are for staff (loyalty_support)';
COMMENT ON COLUMN loyalty.points_history.entry_id IS 'the ledger entry, in the order entries were written';
COMMENT ON COLUMN loyalty.points_history.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.points_history.kind IS 'earn, redeem, expire, reverse (points of a refunded order taken back) or adjust';
COMMENT ON COLUMN loyalty.points_history.points IS 'signed: earn > 0; redeem, expire, reverse <= 0; adjust either';
COMMENT ON COLUMN loyalty.points_history.order_ref IS 'the order the points are for (order points and their reversals); NULL otherwise';
COMMENT ON COLUMN loyalty.points_history.lot_id IS 'for expire: the lot expired';
COMMENT ON COLUMN loyalty.points_history.available_at IS 'for earn: when the points become spendable';
COMMENT ON COLUMN loyalty.points_history.expires_at IS 'for earn: when the points expire (NULL: never)';
COMMENT ON COLUMN loyalty.points_history.created_at IS 'when the entry was written';
GRANT SELECT ON loyalty.balances, loyalty.liability, loyalty.tiers, loyalty.customer_tiers, loyalty.tier_history,
                loyalty.points_history, loyalty.earn_rules TO loyalty_reader;
GRANT SELECT ON loyalty.ledger, loyalty.points_problems TO loyalty_support;
GRANT EXECUTE ON FUNCTION loyalty.balance(text), loyalty.verify_ledger() TO loyalty_reader;

SELECT pg_catalog.pg_extension_config_dump('loyalty.rewards_settings', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.tiers', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.earn_rules', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.earn_rules_rule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.ledger', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.point_lots', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_tiers', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.tier_history', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.points_problems', '');
