-- 0.1 -> 0.2: tier overrides, continued: the tier functions as in
-- 62_rewards.sql, and what 90_grants.sql gives the new objects in a fresh
-- install (nothing for PUBLIC; loyalty_admin as on loyalty.orders).

-- Re-evaluate the tiers of the given customers as of p_as_of: up at once, down
-- only after tier_grace below the tier. A tier override in force
-- (loyalty.tier_overrides) gives at least its tier until it ends; the tier
-- spend earns is kept beside it (earned_tier) and returns when it ends.
-- Every change of the tier in force goes to tier_history.

-- Daily (pg_cron, see loyalty.schedule()): the window moves, so spend drops
-- out of it; customers in a tier, with orders in the window or with a tier
-- override starting or ending are re-evaluated.
-- @function loyalty.recompute_tiers

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
