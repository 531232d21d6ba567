-- Arithmetic that cannot wrap (issue 11, finding 5): a per-entry cap
-- (loyalty.max_points_per_entry), checked additions in the ledger's C path,
-- sums of points computed in numeric.
CREATE OR REPLACE FUNCTION loyalty._check_points(p_points bigint)
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

CREATE OR REPLACE FUNCTION loyalty.adjust_points(customer_id text, points bigint, reason text, idempotency_key text)
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

CREATE OR REPLACE FUNCTION loyalty.balance(customer_id text,
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


-- numeric to bigint, saturating at bigint's ends (for reports of sums)
CREATE FUNCTION loyalty._clamp_bigint(v numeric)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN least(greatest(v, -9223372036854775808), 9223372036854775807)::bigint;
REVOKE ALL ON FUNCTION loyalty._clamp_bigint(numeric) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._clamp_bigint(numeric) TO loyalty_admin;

CREATE OR REPLACE FUNCTION loyalty.verify_ledger()
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

CREATE OR REPLACE VIEW loyalty.balances AS
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

DROP VIEW loyalty.liability;
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
COMMENT ON COLUMN loyalty.liability.outstanding_points IS 'available plus pending points (not yet expired)';
COMMENT ON COLUMN loyalty.liability.outstanding_value IS 'outstanding_points times point_value, in the shop''s currency';
COMMENT ON COLUMN loyalty.liability.debt_points IS 'points customers owe after refunds (not counted against the liability)';
GRANT SELECT ON loyalty.liability TO loyalty_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.liability TO loyalty_admin;

-- keys: at most 200 (customer) and 500 (idempotency key) characters, no control characters
CREATE OR REPLACE FUNCTION loyalty._check_customer(p_customer text)
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

CREATE OR REPLACE FUNCTION loyalty._check_key(p_key text)
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
    IF p_key LIKE 'loyalty:%' THEN
        RAISE EXCEPTION 'idempotency keys starting with "loyalty:" are reserved'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'loyalty writes order points and expiry under such keys; choose another prefix.';
    END IF;
END
$$;

