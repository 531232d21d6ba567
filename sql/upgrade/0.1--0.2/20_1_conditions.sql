-- Custom campaign conditions cannot escalate (issue 11, findings 1 and 8):
-- checked against an allowlist in C (src/condition.c) when saved and before
-- each run, run as the NOLOGIN role loyalty_condition, one campaign per
-- subtransaction, failures in loyalty.campaign_errors. Also creates
-- loyalty_support (staff, contact data; 82_privacy.sql).
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['loyalty_support', 'loyalty_condition']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;
GRANT USAGE ON SCHEMA loyalty TO loyalty_support, loyalty_condition;

-- (loyalty_admin's grants again after loyalty_condition's: a fresh install makes them in that order)
REVOKE ALL ON FUNCTION loyalty._journey_context(timestamptz) FROM loyalty_admin;
REVOKE ALL ON loyalty.customer_state, loyalty.profiles, loyalty.customer_rfm, loyalty.accounts, loyalty.customer_tiers
  FROM loyalty_admin;
GRANT EXECUTE ON FUNCTION loyalty._journey_context(timestamptz) TO loyalty_condition;
GRANT SELECT ON loyalty.customer_state, loyalty.profiles, loyalty.customer_rfm, loyalty.accounts, loyalty.customer_tiers
   TO loyalty_condition;
GRANT EXECUTE ON FUNCTION loyalty._journey_context(timestamptz) TO loyalty_admin;
GRANT SELECT, INSERT, UPDATE, DELETE
   ON loyalty.customer_state, loyalty.profiles, loyalty.customer_rfm, loyalty.accounts, loyalty.customer_tiers
   TO loyalty_admin;
-- @function loyalty._check_condition
REVOKE ALL ON FUNCTION loyalty._check_condition(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._check_condition(text) TO loyalty_admin;








-- The customers a campaign's condition holds for as of a time (none, with a
-- WARNING and a record for _condition_errors, when it fails).
-- @function loyalty._condition_customers

-- The conditions that failed in this transaction, one row per campaign; reading forgets them.
-- @function loyalty._condition_errors

-- One row per campaign whose condition ever failed: the last failure.
-- @table loyalty.campaign_errors

-- enqueue_due inserts loyalty._condition_errors() rows; this keeps one row per campaign.
-- @function loyalty._campaign_error_upsert
CREATE TRIGGER campaign_error_upsert BEFORE INSERT ON loyalty.campaign_errors
    FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_error_upsert();
-- @view loyalty.failing_campaigns

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_errors', '');
REVOKE ALL ON FUNCTION loyalty._condition_customers(integer, text, timestamptz), loyalty._condition_errors(),
                       loyalty._campaign_error_upsert() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._condition_customers(integer, text, timestamptz), loyalty._condition_errors(),
                          loyalty._campaign_error_upsert() TO loyalty_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.campaign_errors, loyalty.failing_campaigns TO loyalty_admin;
