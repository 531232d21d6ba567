-- Journeys, custom conditions: run with least rights, one campaign at a time.
-- A custom campaign's condition is checked against an allowlist and run as
-- the NOLOGIN role loyalty_condition (src/condition.c; the save-time check
-- is loyalty._check_condition, 70_journeys.sql). Each condition runs in a
-- subtransaction of its own: one that raises (a division by zero on some
-- customer's data) yields nobody, is recorded here by enqueue_due, and the
-- other campaigns still run.

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
COMMENT ON COLUMN loyalty.failing_campaigns.campaign_id IS 'the campaign (loyalty.campaigns)';
COMMENT ON COLUMN loyalty.failing_campaigns.campaign IS 'the campaign''s name';
COMMENT ON COLUMN loyalty.failing_campaigns.active IS 'whether the campaign is switched on (always true here)';
COMMENT ON COLUMN loyalty.failing_campaigns.first_failed_at IS 'when the condition first failed';
COMMENT ON COLUMN loyalty.failing_campaigns.last_failed_at IS 'when the condition last failed (in the last loyalty.enqueue_due() run)';
COMMENT ON COLUMN loyalty.failing_campaigns.failures IS 'runs in which the condition failed, in all';
COMMENT ON COLUMN loyalty.failing_campaigns.sqlstate IS 'the error''s SQLSTATE, e.g. 22012 division by zero';
COMMENT ON COLUMN loyalty.failing_campaigns.message IS 'the error message';
COMMENT ON COLUMN loyalty.failing_campaigns.condition IS 'the campaign''s condition as it is now';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_errors', '');
