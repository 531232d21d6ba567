-- One earn write and one FIFO order on the SQL paths: loyalty._earn_sql
-- writes through loyalty._add_points (as order points and adjustments do),
-- loyalty._redeem_sql takes its points with loyalty._take_points (as
-- reversals and negative adjustments do).
CREATE OR REPLACE FUNCTION loyalty._earn_sql(customer_id text, points bigint, reason text, idempotency_key text,
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

CREATE OR REPLACE FUNCTION loyalty._redeem_sql(customer_id text, points bigint, reason text, idempotency_key text)
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
