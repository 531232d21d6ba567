-- An order earns at most one entry's cap (loyalty.max_points_per_entry): a
-- huge order amount made a 9e18-point entry (attack review of issue 11).
-- The function as in sql/install/62_rewards.sql.
CREATE OR REPLACE FUNCTION loyalty._sync_order_points(p_order_ref text, p_customer text, p_amount numeric, p_refunded numeric,
                                           p_ordered_at timestamptz, p_counted boolean, p_delivered_at timestamptz,
                                           p_wait_for_delivery boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.rewards_settings;
    a loyalty.accounts;
    first loyalty.ledger;
    others record;
    basis numeric;
    full_points bigint;
    entitled bigint;
    n integer;
    avail timestamptz;
    pts record;
BEGIN
    IF p_order_ref IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO s FROM loyalty.rewards_settings;
    SELECT * INTO first FROM loyalty.ledger
     WHERE idempotency_key = 'loyalty:order:' || p_order_ref || ':1';
    IF NOT FOUND AND NOT (s.earn_on_orders AND p_counted AND p_customer IS NOT NULL AND btrim(p_customer) <> ''
                          AND p_amount > 0 AND p_amount < 'Infinity' AND isfinite(p_ordered_at)
                          AND p_ordered_at >= s.earning_since) THEN
        RETURN;     -- nothing earned yet and nothing to earn
    END IF;

    -- customers who hold points of this order, besides the order's customer
    FOR others IN
        SELECT DISTINCT e.customer_id FROM loyalty.ledger e
         WHERE e.order_ref = p_order_ref AND e.idempotency_key LIKE 'loyalty:order:%'
           AND e.customer_id IS DISTINCT FROM p_customer
         ORDER BY 1
    LOOP
        PERFORM loyalty._settle_order_points(others.customer_id, p_order_ref, 0, s.refund_policy);
    END LOOP;
    IF p_customer IS NULL OR btrim(p_customer) = '' THEN
        RETURN;
    END IF;

    a := loyalty._lock_account(p_customer, true);
    IF first.entry_id IS NULL OR first.customer_id <> p_customer THEN
        SELECT * INTO first FROM loyalty.ledger
         WHERE order_ref = p_order_ref AND customer_id = p_customer AND kind = 'earn'
           AND idempotency_key LIKE 'loyalty:order:%'
         ORDER BY entry_id LIMIT 1;
    END IF;

    IF p_wait_for_delivery AND p_delivered_at IS NULL THEN
        avail := 'infinity';
    ELSE
        avail := coalesce(p_delivered_at, p_ordered_at) + s.return_window;
    END IF;

    IF first.entry_id IS NULL THEN
        IF NOT (s.earn_on_orders AND p_counted AND p_amount > 0 AND p_ordered_at >= s.earning_since) THEN
            RETURN;
        END IF;
        SELECT * INTO pts FROM loyalty.order_points(p_customer, p_amount, p_ordered_at);
        IF pts.points <= 0 THEN
            RETURN;
        END IF;
        PERFORM loyalty._check_points(pts.points);   -- an order earns at most one entry's cap
        SELECT count(*) + 1 INTO n FROM loyalty.ledger WHERE order_ref = p_order_ref AND idempotency_key LIKE 'loyalty:order:%';
        PERFORM loyalty._add_points(p_customer, 'earn', pts.points, 'order ' || p_order_ref,
                                    'loyalty:order:' || p_order_ref || ':' || n,
                                    CASE WHEN s.points_expire_after IS NULL OR NOT isfinite(avail) THEN NULL
                                         ELSE avail + s.points_expire_after END,
                                    avail, p_order_ref, pts.detail, a.debt);
        first.points := pts.points;
        first.detail := pts.detail;
    END IF;

    basis := (first.detail ->> 'basis_amount')::numeric;
    full_points := first.points;
    IF NOT p_counted OR p_amount IS NULL OR basis IS NULL OR basis <= 0 THEN
        entitled := 0;
    ELSE
        entitled := least(full_points, floor(full_points * greatest(p_amount - coalesce(p_refunded, 0), 0) / basis))::bigint;
    END IF;
    PERFORM loyalty._settle_order_points(p_customer, p_order_ref, entitled, s.refund_policy);

    -- pending points follow the delivery: available a return window after it
    UPDATE loyalty.point_lots l
       SET available_at = avail,
           expires_at = CASE WHEN s.points_expire_after IS NULL OR NOT isfinite(avail) THEN NULL
                             ELSE avail + s.points_expire_after END
     WHERE l.order_ref = p_order_ref AND l.customer_id = p_customer AND l.remaining > 0
       AND l.available_at > now() AND l.available_at IS DISTINCT FROM avail;
END
$$;
