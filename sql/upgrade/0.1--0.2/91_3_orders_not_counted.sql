-- 0.1 -> 0.2: the orders that do not count, indexed for scan_operations
-- (with its table in sql/install/20_intake.sql)
CREATE INDEX orders_not_counted_idx ON loyalty.orders (order_ref) WHERE NOT counted;
