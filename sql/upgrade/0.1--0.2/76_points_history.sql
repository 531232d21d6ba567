-- BI reads the ledger without its free text (attack review of issue 11): the
-- view of sql/install/62_rewards.sql, and the raw ledger for staff only.
-- @view loyalty.points_history
REVOKE ALL ON loyalty.points_history FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.points_history TO loyalty_admin;
GRANT SELECT ON loyalty.points_history TO loyalty_reader;
REVOKE SELECT ON loyalty.ledger, loyalty.points_problems FROM loyalty_reader;
GRANT SELECT ON loyalty.ledger, loyalty.points_problems TO loyalty_support;
