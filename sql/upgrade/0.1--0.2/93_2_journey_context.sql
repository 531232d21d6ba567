-- Issue 12: loyalty.journey_context says points "available" (points, now
-- as loyalty.balance() counts them, less debt) and "pending" (points_pending,
-- a new last column) apart; points used to be the whole balance, pending
-- included. A changed result row: the view and both functions are dropped
-- and created again (70_journeys.sql), with their grants.
DROP VIEW loyalty.journey_context;
DROP FUNCTION loyalty.journey_context_at(timestamptz);
DROP FUNCTION loyalty._journey_context(timestamptz);

-- The per-customer context a custom campaign's condition is written against,
-- as of a given time. enqueue_due evaluates conditions against it directly:
-- it is inlinable (SQL-standard body, no SET clause, not SECURITY DEFINER), so
-- the planner pushes the shop's condition into the scan of customer_state and
-- drops the joins the condition does not use.
CREATE FUNCTION loyalty._journey_context(as_of timestamptz)
RETURNS TABLE (customer_id text, name text, email text, phone text, birthday date, time_zone text,
               orders integer, first_order_at timestamptz, last_order_at timestamptz, days_since_last_order integer,
               net_spend numeric, avg_spend numeric, r_score smallint, f_score smallint, m_score smallint, segment text,
               points bigint, tier text, points_pending bigint)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.customer_id, p.name, p.email, p.phone, p.birthday, p.time_zone,
           s.orders, s.first_order_at, s.last_order_at,
           (date_part('epoch', as_of - s.last_order_at) / 86400)::integer,
           s.net_spend, s.avg_spend, r.r_score, r.f_score, r.m_score, r.segment,
           (coalesce(pl.available, 0) - coalesce(a.debt, 0))::bigint, t.tier, coalesce(pl.pending, 0)::bigint
      FROM loyalty.customer_state s
      LEFT JOIN loyalty.profiles p ON p.customer_id = s.customer_id
      LEFT JOIN loyalty.customer_rfm r ON r.customer_id = s.customer_id
      LEFT JOIN loyalty.accounts a ON a.customer_id = s.customer_id
      LEFT JOIN loyalty.customer_tiers t ON t.customer_id = s.customer_id
      -- points as loyalty.balance() counts them, as of as_of: available
      -- (spendable, less debt) and pending (return window) apart, as in
      -- the payloads (issue 12: 495 points shown of which 175 usable).
      -- Grouped, not LATERAL: the planner drops the join when the
      -- condition does not use points.
      LEFT JOIN (SELECT l.customer_id,
                        sum(l.remaining) FILTER (WHERE l.available_at <= as_of) AS available,
                        sum(l.remaining) FILTER (WHERE l.available_at > as_of) AS pending
                   FROM loyalty.point_lots l
                  WHERE l.expires_at IS NULL OR l.expires_at > as_of
                  GROUP BY l.customer_id) pl ON pl.customer_id = s.customer_id;
END;

-- Custom conditions run as loyalty_condition (src/condition.c): it reads the
-- context and nothing else. The check when a campaign is saved: the
-- condition's allowlist (22023), then planned against the context as that role.
GRANT EXECUTE ON FUNCTION loyalty._journey_context(timestamptz) TO loyalty_condition;
GRANT SELECT ON loyalty.point_lots TO loyalty_condition;

-- The same for readers (loyalty_reader reads the view below): SECURITY DEFINER.
CREATE FUNCTION loyalty.journey_context_at(as_of timestamptz)
RETURNS TABLE (customer_id text, name text, email text, phone text, birthday date, time_zone text,
               orders integer, first_order_at timestamptz, last_order_at timestamptz, days_since_last_order integer,
               net_spend numeric, avg_spend numeric, r_score smallint, f_score smallint, m_score smallint, segment text,
               points bigint, tier text, points_pending bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM loyalty._journey_context(as_of)
$$;
COMMENT ON FUNCTION loyalty.journey_context_at(timestamptz) IS 'Per-customer context of custom campaign conditions, as of a time';

CREATE VIEW loyalty.journey_context AS SELECT * FROM loyalty.journey_context_at(pg_catalog.now());
COMMENT ON VIEW loyalty.journey_context IS
'What a custom campaign''s condition can use, per customer with orders: profile, order aggregates, RFM scores and segment, points, tier';
COMMENT ON COLUMN loyalty.journey_context.points IS 'points the customer can spend now (available, less any debt; as loyalty.balance().available)';
COMMENT ON COLUMN loyalty.journey_context.points_pending IS 'points earned but not yet available (return window, future available_at)';
REVOKE ALL ON FUNCTION loyalty._journey_context(timestamptz), loyalty.journey_context_at(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._journey_context(timestamptz), loyalty.journey_context_at(timestamptz) TO loyalty_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.journey_context TO loyalty_admin;
GRANT SELECT ON loyalty.journey_context TO loyalty_support;
GRANT EXECUTE ON FUNCTION loyalty.journey_context_at(timestamptz) TO loyalty_support;
