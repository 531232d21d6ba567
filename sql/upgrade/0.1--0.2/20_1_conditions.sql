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
CREATE FUNCTION loyalty._check_condition(condition text)
RETURNS void
LANGUAGE c STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', '_check_condition';
REVOKE ALL ON FUNCTION loyalty._check_condition(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._check_condition(text) TO loyalty_admin;








-- The customers a campaign's condition holds for as of a time (none, with a
-- WARNING and a record for _condition_errors, when it fails).
CREATE FUNCTION loyalty._condition_customers(campaign_id integer, condition text, as_of timestamptz)
RETURNS SETOF text
LANGUAGE c STABLE STRICT
ROWS 1000
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', '_condition_customers';

-- The conditions that failed in this transaction, one row per campaign; reading forgets them.
CREATE FUNCTION loyalty._condition_errors()
RETURNS TABLE (campaign_id integer, sqlstate text, message text)
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', '_condition_errors';

-- One row per campaign whose condition ever failed: the last failure.
CREATE TABLE loyalty.campaign_errors (
    campaign_id     integer PRIMARY KEY,
    failures        bigint NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_failed_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    as_of           timestamptz NOT NULL,
    sqlstate        text NOT NULL,
    message         text NOT NULL,
    condition       text
);
COMMENT ON TABLE loyalty.campaign_errors IS
'Custom campaigns whose condition failed in a loyalty.enqueue_due() run: the last failure per campaign (the others ran)';
COMMENT ON COLUMN loyalty.campaign_errors.failures IS 'runs in which the condition failed, in all';
COMMENT ON COLUMN loyalty.campaign_errors.sqlstate IS 'the error''s SQLSTATE, e.g. 22012 division by zero';
COMMENT ON COLUMN loyalty.campaign_errors.condition IS 'the condition as it was when it failed';

-- enqueue_due inserts loyalty._condition_errors() rows; this keeps one row per campaign.
CREATE FUNCTION loyalty._campaign_error_upsert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.condition := (SELECT cp.condition FROM loyalty.campaigns cp WHERE cp.campaign_id = NEW.campaign_id);
    UPDATE loyalty.campaign_errors e
       SET failures = e.failures + 1, last_failed_at = now(), as_of = NEW.as_of, sqlstate = NEW.sqlstate,
           message = NEW.message, condition = NEW.condition
     WHERE e.campaign_id = NEW.campaign_id;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER campaign_error_upsert BEFORE INSERT ON loyalty.campaign_errors
    FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_error_upsert();

CREATE VIEW loyalty.failing_campaigns AS
SELECT cp.campaign_id, cp.name AS campaign, cp.active, e.first_failed_at, e.last_failed_at, e.failures,
       e.sqlstate, e.message, cp.condition
  FROM loyalty.campaign_errors e
  JOIN loyalty.campaigns cp ON cp.campaign_id = e.campaign_id
  LEFT JOIN loyalty.journey_runs r ON r.campaign_id = e.campaign_id
 WHERE cp.active AND (r.last_run_at IS NULL OR e.last_failed_at >= r.last_run_at);
COMMENT ON VIEW loyalty.failing_campaigns IS
'Active custom campaigns whose condition failed in the last loyalty.enqueue_due() run (they sent nothing then; the other campaigns ran)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_errors', '');
REVOKE ALL ON FUNCTION loyalty._condition_customers(integer, text, timestamptz), loyalty._condition_errors(),
                       loyalty._campaign_error_upsert() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._condition_customers(integer, text, timestamptz), loyalty._condition_errors(),
                          loyalty._campaign_error_upsert() TO loyalty_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.campaign_errors, loyalty.failing_campaigns TO loyalty_admin;
