-- BI reads the ledger without its free text (attack review of issue 11): the
-- view of sql/install/62_rewards.sql, and the raw ledger for staff only.
CREATE VIEW loyalty.points_history AS
SELECT l.entry_id, l.customer_id, l.kind, l.points, l.order_ref, l.lot_id, l.available_at, l.expires_at, l.created_at
  FROM loyalty.ledger l;
COMMENT ON VIEW loyalty.points_history IS 'Every change of a customer''s points (the ledger) without its free text: reason, idempotency key, detail and author are for staff (loyalty_support)';
REVOKE ALL ON loyalty.points_history FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.points_history TO loyalty_admin;
GRANT SELECT ON loyalty.points_history TO loyalty_reader;
REVOKE SELECT ON loyalty.ledger, loyalty.points_problems FROM loyalty_reader;
GRANT SELECT ON loyalty.ledger, loyalty.points_problems TO loyalty_support;
