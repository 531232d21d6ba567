-- Tier overrides (issue 14): a tier given for a time, by staff
-- (loyalty.set_tier_override) or by service recovery (loyalty.recovery_rules
-- with a tier, granted by loyalty.scan_operations). While an override is in
-- force the customer has at least its tier (an override never lowers a
-- tier); when it ends, or is ended early, the tier their spend earns
-- returns. loyalty._recompute_tiers applies both and records them in
-- loyalty.tier_history (reason 'override' / 'override ended', override_id).

CREATE TABLE loyalty.tier_overrides (
    override_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL,
    tier        text NOT NULL REFERENCES loyalty.tiers ON UPDATE CASCADE ON DELETE CASCADE,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    ended_at    timestamptz,
    reason      text NOT NULL CHECK (btrim(reason) <> ''),
    end_reason  text,
    source      text NOT NULL CHECK (source IN ('staff', 'recovery')),
    rule_id     integer,
    order_ref   text,
    kind        text,
    issue_id    bigint,
    created_by  text NOT NULL DEFAULT CURRENT_USER,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK (ends_at > starts_at),
    CHECK ((source = 'recovery') = (rule_id IS NOT NULL))
);
-- service recovery gives a tier once per rule, order and issue kind
CREATE UNIQUE INDEX tier_overrides_recovery_key ON loyalty.tier_overrides (rule_id, order_ref, kind) WHERE rule_id IS NOT NULL;
CREATE INDEX tier_overrides_customer_idx ON loyalty.tier_overrides (customer_id);
COMMENT ON TABLE loyalty.tier_overrides IS
'Tiers given for a time (staff: loyalty.set_tier_override; service recovery: loyalty.recovery_rules); the customer has at least the tier from starts_at until ends_at or ended_at';
COMMENT ON COLUMN loyalty.tier_overrides.ends_at IS 'the end set when it was given';
COMMENT ON COLUMN loyalty.tier_overrides.ended_at IS 'ended early (loyalty.end_tier_override); NULL: runs to ends_at';
COMMENT ON COLUMN loyalty.tier_overrides.source IS 'staff (set_tier_override) or recovery (a recovery rule, for the order and issue kind in rule_id, order_ref, kind)';

-- A staff override: from now until "until", with a reason. A replay (the
-- same customer, tier, end and reason while it runs) returns the first.
CREATE FUNCTION loyalty.set_tier_override(customer_id text, tier text, until timestamptz, reason text)
RETURNS loyalty.tier_overrides
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r loyalty.tier_overrides;
    cid text := set_tier_override.customer_id;
BEGIN
    IF cid IS NULL OR btrim(cid) = '' THEN
        RAISE EXCEPTION 'customer_id must not be empty'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the shop''s customer id.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM loyalty.customer_state s WHERE s.customer_id = cid)
       AND NOT EXISTS (SELECT 1 FROM loyalty.profiles p WHERE p.customer_id = cid) THEN
        RAISE EXCEPTION 'customer % is not known to loyalty', cid
              USING ERRCODE = 'no_data_found', HINT = 'A customer is known once they have an order or a profile; check the customer id.';
    END IF;
    IF set_tier_override.tier IS NULL OR NOT EXISTS (SELECT 1 FROM loyalty.tiers t WHERE t.tier = set_tier_override.tier) THEN
        RAISE EXCEPTION 'unknown tier: %', coalesce(set_tier_override.tier, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = format('Tiers: %s.', coalesce((SELECT string_agg(t.tier, ', ' ORDER BY t.min_spend) FROM loyalty.tiers t), 'none yet (loyalty.tiers is empty)'));
    END IF;
    IF until IS NULL OR NOT isfinite(until) OR until <= now() THEN
        RAISE EXCEPTION 'until must be a finite time in the future'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'For example now() + interval ''90 days''.';
    END IF;
    IF set_tier_override.reason IS NULL OR btrim(set_tier_override.reason) = '' OR length(set_tier_override.reason) > 500 THEN
        RAISE EXCEPTION 'reason must be 1 to 500 characters'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Say why, e.g. ''gift arrived damaged, ticket 4711''; it is shown to staff, not to BI.';
    END IF;
    -- one writer per customer at a time (the tier row is locked in _recompute_tiers too)
    PERFORM pg_advisory_xact_lock(74200, hashtext(cid));
    SELECT * INTO r FROM loyalty.tier_overrides o
     WHERE o.customer_id = cid AND o.source = 'staff' AND o.tier = set_tier_override.tier AND o.ends_at = until
       AND o.reason = set_tier_override.reason AND o.ended_at IS NULL AND o.ends_at > now();
    IF r.override_id IS NOT NULL THEN
        RETURN r;
    END IF;
    INSERT INTO loyalty.tier_overrides (customer_id, tier, starts_at, ends_at, reason, source)
    VALUES (cid, set_tier_override.tier, now(), until, set_tier_override.reason, 'staff')
    RETURNING * INTO r;
    PERFORM loyalty._recompute_tiers(ARRAY[cid], now());
    RETURN r;
END
$$;
COMMENT ON FUNCTION loyalty.set_tier_override(text, text, timestamptz, text) IS
'Staff: give a customer at least this tier from now until "until", with a reason (shown in tier_history as reason override); idempotent';

-- End an override early (idempotent: an override that already ended stays as it is).
CREATE FUNCTION loyalty.end_tier_override(override_id bigint, reason text)
RETURNS loyalty.tier_overrides
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r loyalty.tier_overrides;
BEGIN
    IF end_tier_override.reason IS NULL OR btrim(end_tier_override.reason) = '' OR length(end_tier_override.reason) > 500 THEN
        RAISE EXCEPTION 'reason must be 1 to 500 characters'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Say why the override ends early.';
    END IF;
    SELECT * INTO r FROM loyalty.tier_overrides o WHERE o.override_id = end_tier_override.override_id;
    IF r.override_id IS NULL THEN
        RAISE EXCEPTION 'tier override % does not exist', coalesce(end_tier_override.override_id::text, 'NULL')
              USING ERRCODE = 'no_data_found', HINT = 'See loyalty.tier_overrides (or customer_tiers.override_id) for the id.';
    END IF;
    PERFORM pg_advisory_xact_lock(74200, hashtext(r.customer_id));
    UPDATE loyalty.tier_overrides o SET ended_at = greatest(now(), o.starts_at), end_reason = end_tier_override.reason
     WHERE o.override_id = r.override_id AND o.ended_at IS NULL AND o.ends_at > now()
    RETURNING * INTO r;
    IF NOT FOUND THEN
        SELECT * INTO r FROM loyalty.tier_overrides o WHERE o.override_id = end_tier_override.override_id;
        RETURN r;
    END IF;
    PERFORM loyalty._recompute_tiers(ARRAY[r.customer_id], now());
    RETURN r;
END
$$;
COMMENT ON FUNCTION loyalty.end_tier_override(bigint, text) IS
'Staff: end a tier override now, with a reason; the tier spend earns returns (tier_history reason override ended); idempotent';

-- staff (customer service) give and end overrides and read them; the reason
-- is free text (it may name the customer), so BI reads tier_history only
GRANT EXECUTE ON FUNCTION loyalty.set_tier_override(text, text, timestamptz, text),
                          loyalty.end_tier_override(bigint, text) TO loyalty_support;
GRANT SELECT ON loyalty.tier_overrides TO loyalty_support;
SELECT pg_catalog.pg_extension_config_dump('loyalty.tier_overrides', '');
