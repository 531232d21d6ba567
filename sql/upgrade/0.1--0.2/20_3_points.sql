-- Arithmetic that cannot wrap (issue 11, finding 5): a per-entry cap
-- (loyalty.max_points_per_entry), checked additions in the ledger's C path,
-- sums of points computed in numeric.
-- @function loyalty._check_points

-- @function loyalty.adjust_points

-- @function loyalty.balance


-- numeric to bigint, saturating at bigint's ends (for reports of sums)
-- @function loyalty._clamp_bigint
REVOKE ALL ON FUNCTION loyalty._clamp_bigint(numeric) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._clamp_bigint(numeric) TO loyalty_admin;

-- @function loyalty.verify_ledger
-- @view loyalty.balances

DROP VIEW loyalty.liability;

-- @view loyalty.liability
GRANT SELECT ON loyalty.liability TO loyalty_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.liability TO loyalty_admin;

-- keys: at most 200 (customer) and 500 (idempotency key) characters, no control characters
-- @function loyalty._check_customer

-- @function loyalty._check_key

