-- Customer state: per-customer aggregates, recomputed for the customers an
-- intake change touched (from loyalty.orders, never from the shop's tables).

CREATE TABLE loyalty.customer_state (
    customer_id     text PRIMARY KEY,
    first_order_at  timestamptz NOT NULL,
    last_order_at   timestamptz NOT NULL,
    orders          integer NOT NULL,
    repeat_orders   integer NOT NULL,
    purchase_days   integer NOT NULL,
    gross_spend     numeric NOT NULL,
    refunded        numeric NOT NULL,
    net_spend       numeric NOT NULL,
    avg_spend       numeric NOT NULL,
    first_day_spend numeric NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE loyalty.customer_state IS 'Per-customer aggregates over counted orders, kept current from loyalty.orders';
COMMENT ON COLUMN loyalty.customer_state.orders IS 'counted orders (status in the counted set, not fully refunded)';
COMMENT ON COLUMN loyalty.customer_state.repeat_orders IS 'counted orders after the first';
COMMENT ON COLUMN loyalty.customer_state.purchase_days IS 'distinct UTC days with a counted order (the BTYD transaction unit)';
COMMENT ON COLUMN loyalty.customer_state.net_spend IS 'order amounts less refunds';
COMMENT ON COLUMN loyalty.customer_state.avg_spend IS 'net_spend / orders';
COMMENT ON COLUMN loyalty.customer_state.first_day_spend IS 'net spend on the first purchase day (repeat spend = net_spend - first_day_spend)';
-- customers by first and last order: the journeys' occasion ranges (71_journeys_due.sql)
CREATE INDEX customer_state_first_order_idx ON loyalty.customer_state (first_order_at);
CREATE INDEX customer_state_last_order_idx ON loyalty.customer_state (last_order_at);
-- derived, but dumped too, so that a restored database works at once
SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_state', '');

-- Customers whose scores are stale. Insert-only: an enqueue never waits for a
-- scorer (a unique key would make it wait for any transaction deleting the
-- same customer's entry); scorers delete exactly the entries they read.
CREATE TABLE loyalty.score_queue (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL
);
COMMENT ON TABLE loyalty.score_queue IS 'Customers whose state changed since they were last scored';

-- Recompute the state of the given customers from loyalty.orders, queue them
-- for scoring (p_enqueue; a backfill does not) and return them (distinct, no
-- NULL): the customers whose state may have changed, for the steps after this
-- one (loyalty._recompute_customers, 74_pipeline.sql, hands them on).
-- Locking: callers have already written their loyalty.orders rows. Each
-- customer's state row is locked (created first if new; key order, so no two
-- callers wait on each other in a cycle) before the recomputing statement takes
-- its snapshot. Of two transactions touching one customer the later one waits
-- for the earlier to commit and then sees both changes: no lost update. Order
-- rows are always locked before state rows, so no lock cycle can form across
-- the two either. Row locks, unlike advisory locks, cost no shared memory, so
-- a backfill may lock a million customers in one transaction.
CREATE FUNCTION loyalty._recompute_state(p_customers text[], p_enqueue boolean)
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    customers text[] := ARRAY(SELECT DISTINCT c FROM unnest(p_customers) AS c WHERE c IS NOT NULL ORDER BY 1);
BEGIN
    INSERT INTO loyalty.customer_state AS cs
        (customer_id, first_order_at, last_order_at, orders, repeat_orders, purchase_days,
         gross_spend, refunded, net_spend, avg_spend, first_day_spend)
    SELECT c, '-infinity', '-infinity', 0, 0, 0, 0, 0, 0, 0, 0
      FROM (SELECT DISTINCT c FROM unnest(p_customers) AS c WHERE c IS NOT NULL ORDER BY 1) s
    ON CONFLICT (customer_id) DO NOTHING;
    PERFORM 1 FROM loyalty.customer_state cs WHERE cs.customer_id = ANY (p_customers)
      ORDER BY cs.customer_id FOR UPDATE;

    INSERT INTO loyalty.customer_state AS cs
        (customer_id, first_order_at, last_order_at, orders, repeat_orders, purchase_days,
         gross_spend, refunded, net_spend, avg_spend, first_day_spend, updated_at)
    SELECT customer_id, min(ordered_at), max(ordered_at), count(*), count(*) - 1,
           count(DISTINCT d), sum(amount), sum(refunded), sum(amount - refunded),
           round(sum(amount - refunded) / count(*), 2),
           sum(amount - refunded) FILTER (WHERE d = first_d), now()
      FROM (SELECT o.customer_id, o.ordered_at, o.amount, o.refunded,
                   loyalty._utc_date(o.ordered_at) AS d,
                   min(loyalty._utc_date(o.ordered_at)) OVER (PARTITION BY o.customer_id) AS first_d
              FROM loyalty.orders o
             WHERE o.customer_id = ANY (p_customers) AND o.counts) x
     GROUP BY customer_id
    ON CONFLICT (customer_id) DO UPDATE
       SET first_order_at = excluded.first_order_at, last_order_at = excluded.last_order_at,
           orders = excluded.orders, repeat_orders = excluded.repeat_orders,
           purchase_days = excluded.purchase_days, gross_spend = excluded.gross_spend,
           refunded = excluded.refunded, net_spend = excluded.net_spend,
           avg_spend = excluded.avg_spend, first_day_spend = excluded.first_day_spend,
           updated_at = excluded.updated_at
     WHERE cs.orders = 0 OR (cs.first_order_at, cs.last_order_at, cs.orders, cs.purchase_days, cs.net_spend, cs.refunded, cs.first_day_spend)
           IS DISTINCT FROM
           (excluded.first_order_at, excluded.last_order_at, excluded.orders, excluded.purchase_days, excluded.net_spend, excluded.refunded, excluded.first_day_spend);

    -- customers left with no counted order have no state (and no scores)
    DELETE FROM loyalty.customer_state cs
     WHERE cs.customer_id = ANY (p_customers)
       AND NOT EXISTS (SELECT 1 FROM loyalty.orders o WHERE o.customer_id = cs.customer_id AND o.counts);
    -- also those left without state: their stored scores go with the entry
    IF p_enqueue THEN
        INSERT INTO loyalty.score_queue (customer_id) SELECT unnest(customers);
    END IF;
    RETURN customers;
END
$$;
