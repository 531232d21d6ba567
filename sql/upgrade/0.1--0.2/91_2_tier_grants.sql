-- 0.1 -> 0.2: tier overrides, continued: the tier functions as in
-- 62_rewards.sql, and what 90_grants.sql gives the new objects in a fresh
-- install (nothing for PUBLIC; loyalty_admin as on loyalty.orders).

-- Re-evaluate the tiers of the given customers as of p_as_of: up at once, down
-- only after tier_grace below the tier. A tier override in force
-- (loyalty.tier_overrides) gives at least its tier until it ends; the tier
-- spend earns is kept beside it (earned_tier) and returns when it ends.
-- Every change of the tier in force goes to tier_history.
CREATE OR REPLACE FUNCTION loyalty._recompute_tiers(p_customers text[], p_as_of timestamptz)
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
CREATE OR REPLACE FUNCTION loyalty.recompute_tiers(as_of timestamptz DEFAULT now())
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

DO $$
DECLARE
    f regprocedure;
    p text;
BEGIN
    FOR f IN SELECT pr.oid::regprocedure FROM pg_catalog.pg_proc pr
              WHERE pr.pronamespace = 'loyalty'::regnamespace
                AND pr.proname = ANY (ARRAY['set_tier_override', 'end_tier_override', '_issue_recovery']) LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO loyalty_admin', f);
    END LOOP;
    REVOKE ALL ON loyalty.tier_overrides FROM PUBLIC;
    FOREACH p IN ARRAY ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'] LOOP
        IF pg_catalog.has_table_privilege('loyalty_admin', 'loyalty.orders', p) THEN
            EXECUTE pg_catalog.format('GRANT %s ON loyalty.tier_overrides TO loyalty_admin', p);
        END IF;
    END LOOP;
    FOREACH p IN ARRAY ARRAY['USAGE', 'SELECT', 'UPDATE'] LOOP
        IF pg_catalog.has_sequence_privilege('loyalty_admin', 'loyalty.sources_source_id_seq', p) THEN
            EXECUTE pg_catalog.format('GRANT %s ON SEQUENCE loyalty.tier_overrides_override_id_seq TO loyalty_admin', p);
        END IF;
    END LOOP;
END
$$;
