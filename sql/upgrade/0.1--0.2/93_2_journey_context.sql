-- Issue 12: loyalty.journey_context says points "available" (points, now
-- as loyalty.balance() counts them, less debt) and "pending" (points_pending,
-- a new last column) apart; points used to be the whole balance, pending
-- included. A changed result row: the view and both functions are dropped
-- and created again (70_journeys.sql), with their grants.
DROP VIEW loyalty.journey_context;
DROP FUNCTION loyalty.journey_context_at(timestamptz);
DROP FUNCTION loyalty._journey_context(timestamptz);

-- @function loyalty._journey_context

-- Custom conditions run as loyalty_condition (src/condition.c): it reads the
-- context and nothing else. The check when a campaign is saved: the
-- condition's allowlist (22023), then planned against the context as that role.
GRANT EXECUTE ON FUNCTION loyalty._journey_context(timestamptz) TO loyalty_condition;
GRANT SELECT ON loyalty.point_lots TO loyalty_condition;
GRANT EXECUTE ON FUNCTION loyalty._utc_days(timestamptz, timestamptz) TO loyalty_condition;

-- The same for readers (loyalty_reader reads the view below): SECURITY DEFINER.
-- @function loyalty.journey_context_at

-- @view loyalty.journey_context
REVOKE ALL ON FUNCTION loyalty._journey_context(timestamptz), loyalty.journey_context_at(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._journey_context(timestamptz), loyalty.journey_context_at(timestamptz) TO loyalty_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.journey_context TO loyalty_admin;
GRANT SELECT ON loyalty.journey_context TO loyalty_support;
GRANT EXECUTE ON FUNCTION loyalty.journey_context_at(timestamptz) TO loyalty_support;
