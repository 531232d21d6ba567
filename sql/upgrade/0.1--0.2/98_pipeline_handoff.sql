-- 0.1 -> 0.2: the intake hands what it wrote to the pipeline
-- (sql/install/74_pipeline.sql) instead of calling rewards, journeys and
-- operations itself; _apply_changes, record_order and record_refund are
-- named in earlier fragments and call these. The customers' and carrier
-- rows are applied by one loop (_apply_rows).
-- @function loyalty._orders_applied
-- @function loyalty._order_recorded
-- @function loyalty._apply_rows
-- @function loyalty._apply_row
REVOKE ALL ON FUNCTION loyalty._orders_applied(text[], loyalty.order_change_checked[], loyalty.order_change[], boolean),
                       loyalty._order_recorded(text, text), loyalty._apply_rows(loyalty.events[], "char"),
                       loyalty._apply_row(loyalty.events, "char") FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._orders_applied(text[], loyalty.order_change_checked[], loyalty.order_change[], boolean),
                          loyalty._order_recorded(text, text), loyalty._apply_rows(loyalty.events[], "char"),
                          loyalty._apply_row(loyalty.events, "char") TO loyalty_admin;
