-- Operations: what happens to an order after checkout. Stage times
-- (loyalty.record_fulfilment), the promise ledger, carrier events in one
-- vocabulary (loyalty.record_shipment_event), returns and support contacts;
-- SLA settings with a business calendar; per-order deadlines; and
-- loyalty.scan_operations(), which opens and resolves loyalty.order_issues.
--
-- Data flow: the writers (record_*) only store facts and log the order in
-- loyalty.operations_changes. A scan recomputes the deadlines of the logged
-- orders (loyalty.order_deadlines: one row per order and issue kind, with the
-- time the SLA is breached and the time the stage completed), then decides
-- issues from the deadlines alone: an issue exists when the deadline passed
-- before the stage completed; it opened at the deadline and is resolved when
-- the stage completed. So a scan costs what changed and what fell due since
-- the last one, not the orders in flight.

-- ---------------------------------------------------------------- settings

CREATE TABLE loyalty.operations_settings (
    id                boolean PRIMARY KEY DEFAULT true CHECK (id),
    time_zone         text NOT NULL DEFAULT 'UTC',
    working_days      integer[] NOT NULL DEFAULT '{1,2,3,4,5,6,7}'
                      CHECK (cardinality(working_days) > 0 AND working_days <@ '{1,2,3,4,5,6,7}'),
    cutoff            time,
    payment_within    interval CHECK (payment_within > '0'),
    dispatch_within   interval CHECK (dispatch_within >= '0'),
    deliver_within    interval CHECK (deliver_within >= '0'),
    first_scan_within interval CHECK (first_scan_within > '0'),
    stall_after       interval CHECK (stall_after > '0'),
    refund_within     interval CHECK (refund_within >= '0'),
    impact_window     interval NOT NULL DEFAULT '90 days' CHECK (impact_window > '0'),
    updated_at        timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE loyalty.operations_settings IS
'Post-purchase SLAs and business calendar (at most one row; none: defaults, only per-order deadlines); change with loyalty.configure_operations()';
COMMENT ON COLUMN loyalty.operations_settings.time_zone IS 'the shop''s zone: working days, cut-off, holidays and date promises are read in it';
COMMENT ON COLUMN loyalty.operations_settings.working_days IS 'ISO weekdays the shop works (1 = Monday ... 7 = Sunday)';
COMMENT ON COLUMN loyalty.operations_settings.cutoff IS 'orders paid at or after this local time on a working day count from the next working day; NULL: no cut-off';
COMMENT ON COLUMN loyalty.operations_settings.payment_within IS 'payment_pending when not paid this long after the order (elapsed time); NULL: not watched';
COMMENT ON COLUMN loyalty.operations_settings.dispatch_within IS 'dispatch by the end of the Nth working day after the business day of payment (N = whole days, rounded up; 0: same day); an order''s own dispatch_by wins';
COMMENT ON COLUMN loyalty.operations_settings.deliver_within IS 'delivery by the end of the Nth working day after dispatch; an order''s first promise wins';
COMMENT ON COLUMN loyalty.operations_settings.first_scan_within IS 'stalled_parcel when the carrier has not scanned the parcel this long after dispatch (NULL: stall_after)';
COMMENT ON COLUMN loyalty.operations_settings.stall_after IS 'stalled_parcel when a parcel in transit has no new carrier event for this long (elapsed time)';
COMMENT ON COLUMN loyalty.operations_settings.refund_within IS 'refund by the end of the Nth working day after the return was received';
COMMENT ON COLUMN loyalty.operations_settings.impact_window IS 'loyalty.experience_impact: a repeat purchase counts within this long after delivery';

CREATE TABLE loyalty.business_holidays (
    day  date PRIMARY KEY,
    name text
);
COMMENT ON TABLE loyalty.business_holidays IS 'Days the shop does not work (in its time zone), besides the weekdays missing from working_days';

-- The settings in force (the defaults when none were stored).
CREATE FUNCTION loyalty._operations_settings()
RETURNS loyalty.operations_settings
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st loyalty.operations_settings;
BEGIN
    SELECT * INTO st FROM loyalty.operations_settings;
    IF NOT FOUND THEN
        st := ROW(true, 'UTC', '{1,2,3,4,5,6,7}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, '90 days', NULL)::loyalty.operations_settings;
    END IF;
    RETURN st;
END
$$;

-- ---------------------------------------------------------------- facts

CREATE TABLE loyalty.order_lifecycle (
    order_ref     text PRIMARY KEY,
    paid_at       timestamptz,
    dispatched_at timestamptz,
    delivered_at  timestamptz,
    dispatch_by   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE loyalty.order_lifecycle IS
'Stage times of watched orders, from a tracked orders table''s fulfilment columns or loyalty.record_fulfilment() (an order is watched from its first captured version or record_* call)';
COMMENT ON COLUMN loyalty.order_lifecycle.dispatched_at IS 'handed to the carrier, as reported (loyalty.order_stages has the effective dispatch time)';
COMMENT ON COLUMN loyalty.order_lifecycle.dispatch_by IS 'the order''s own dispatch deadline (wins over operations_settings.dispatch_within)';
-- delivered_check_in campaigns search the deliveries in their window (79_notices.sql)
CREATE INDEX order_lifecycle_delivered_idx ON loyalty.order_lifecycle (delivered_at);

-- Promises are a ledger: revision 1 is the promise made at checkout;
-- lateness is measured against it, later revisions are kept for notices.
CREATE TABLE loyalty.order_promises (
    order_ref   text NOT NULL,
    revision    integer NOT NULL CHECK (revision >= 1),
    promised_at timestamptz,
    promised_on date,
    noted_at    timestamptz NOT NULL,
    PRIMARY KEY (order_ref, revision),
    CHECK ((promised_at IS NULL) <> (promised_on IS NULL))
);
COMMENT ON TABLE loyalty.order_promises IS 'Delivery promises per order: the first (revision 1) and every later change; lateness is measured against the first';
COMMENT ON COLUMN loyalty.order_promises.promised_on IS 'a date promise: delivered by the end of that day in the shop''s time zone';

-- The carrier event vocabulary, and the carrier statuses that map onto it.
CREATE TABLE loyalty.shipment_statuses (
    carrier_status text PRIMARY KEY,
    status         text NOT NULL CHECK (status IN ('label_purchased', 'picked_up', 'in_transit', 'out_for_delivery',
                                                   'ready_for_pickup', 'attempted_delivery', 'delayed', 'customs_hold',
                                                   'failure', 'returned_to_sender', 'lost', 'delivered')),
    source         text,
    builtin        boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE loyalty.shipment_statuses IS
'How carrier statuses map onto loyalty''s event vocabulary (keys normalised: lower case, blanks and dashes as _); a status not listed is recorded as unknown. The shop may add rows';
INSERT INTO loyalty.shipment_statuses (carrier_status, status, source, builtin)
SELECT k, s, src, true FROM (VALUES
    -- the vocabulary itself
    ('label_purchased', 'label_purchased', 'loyalty'), ('picked_up', 'picked_up', 'loyalty'),
    ('in_transit', 'in_transit', 'loyalty'), ('out_for_delivery', 'out_for_delivery', 'loyalty'),
    ('ready_for_pickup', 'ready_for_pickup', 'loyalty'), ('attempted_delivery', 'attempted_delivery', 'loyalty'),
    ('delayed', 'delayed', 'loyalty'), ('customs_hold', 'customs_hold', 'loyalty'), ('failure', 'failure', 'loyalty'),
    ('returned_to_sender', 'returned_to_sender', 'loyalty'), ('lost', 'lost', 'loyalty'), ('delivered', 'delivered', 'loyalty'),
    -- Shopify fulfillment event statuses
    ('label_printed', 'label_purchased', 'shopify'), ('confirmed', 'picked_up', 'shopify'),
    ('carrier_picked_up', 'picked_up', 'shopify'),
    -- AfterShip delivery statuses (tags) and sub-statuses (subtags)
    ('inforeceived', 'label_purchased', 'aftership'), ('intransit', 'in_transit', 'aftership'),
    ('outfordelivery', 'out_for_delivery', 'aftership'), ('attemptfail', 'attempted_delivery', 'aftership'),
    ('availableforpickup', 'ready_for_pickup', 'aftership'),
    ('delivered_001', 'delivered', 'aftership'), ('delivered_002', 'delivered', 'aftership'),
    ('delivered_003', 'delivered', 'aftership'), ('delivered_004', 'delivered', 'aftership'),
    ('delivered_005', 'delivered', 'aftership'), ('availableforpickup_001', 'ready_for_pickup', 'aftership'),
    ('exception_002', 'failure', 'aftership'), ('exception_003', 'failure', 'aftership'),
    ('exception_004', 'customs_hold', 'aftership'), ('exception_005', 'delayed', 'aftership'),
    -- 17TRACK main and sub-statuses
    ('inforeceived_info', 'label_purchased', '17track'), ('deliveryfailure', 'attempted_delivery', '17track'),
    ('intransit_customsprocessing', 'customs_hold', '17track'), ('intransit_customsrequiringinformation', 'customs_hold', '17track'),
    ('exception_delayed', 'delayed', '17track'), ('exception_returning', 'returned_to_sender', '17track'),
    ('exception_returned', 'returned_to_sender', '17track'), ('exception_lost', 'lost', '17track'),
    -- TrackingMore
    ('transit', 'in_transit', 'trackingmore'), ('undelivered', 'attempted_delivery', 'trackingmore'),
    ('exception006', 'customs_hold', 'trackingmore'), ('exception010', 'returned_to_sender', 'trackingmore'),
    ('exception011', 'returned_to_sender', 'trackingmore'),
    -- plain words carriers use
    ('returned', 'returned_to_sender', 'common'), ('return_to_sender', 'returned_to_sender', 'common'),
    ('shipment_lost', 'lost', 'common'), ('held_by_customs', 'customs_hold', 'common'),
    ('failed_attempt', 'attempted_delivery', 'common'), ('delivery_failed', 'failure', 'common')
) v(k, s, src);

-- A carrier status as a key of loyalty.shipment_statuses.
CREATE FUNCTION loyalty._carrier_status_key(p_status text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN lower(regexp_replace(btrim(p_status), '[\s-]+', '_', 'g'));

CREATE TABLE loyalty.shipment_events (
    event_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_ref      text NOT NULL,
    status         text NOT NULL,
    carrier_status text NOT NULL,
    at             timestamptz NOT NULL,
    tracking_code  text,
    detail         jsonb,
    recorded_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT shipment_events_key UNIQUE NULLS NOT DISTINCT (order_ref, at, carrier_status, tracking_code)
);
COMMENT ON TABLE loyalty.shipment_events IS 'Carrier events per order (loyalty.record_shipment_event), mapped onto one vocabulary; the carrier''s own text beside it';
COMMENT ON COLUMN loyalty.shipment_events.status IS
'label_purchased, picked_up, in_transit, out_for_delivery, ready_for_pickup, attempted_delivery, delayed, customs_hold, failure, returned_to_sender, lost, delivered, or unknown (a carrier status loyalty.shipment_statuses does not list: never guessed)';
COMMENT ON COLUMN loyalty.shipment_events.carrier_status IS 'the status as the carrier or tracking service sent it';

CREATE TABLE loyalty.order_returns (
    order_ref    text PRIMARY KEY,
    requested_at timestamptz NOT NULL,
    received_at  timestamptz,
    refunded_at  timestamptz,
    reason       text,
    updated_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE loyalty.order_returns IS 'Returns (loyalty.record_return): requested, received back, refunded';
COMMENT ON COLUMN loyalty.order_returns.refunded_at IS 'when the money went back; NULL: the first loyalty.refunds row of the order counts';

CREATE TABLE loyalty.support_contacts (
    contact_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL,
    reason      text NOT NULL,
    at          timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT support_contacts_key UNIQUE (customer_id, at, reason)
);
COMMENT ON TABLE loyalty.support_contacts IS 'Support contacts (loyalty.record_contact); reason wismo: "where is my order?"';

-- Orders whose facts changed since a scan last looked (insert-only: a writer
-- never waits for a scan; a scan deletes exactly the rows it saw).
CREATE TABLE loyalty.operations_changes (
    order_ref text NOT NULL
);
COMMENT ON TABLE loyalty.operations_changes IS 'Orders whose stage times, promises, events or returns changed since loyalty.scan_operations() last looked';

-- ---------------------------------------------------------------- deadlines and issues

CREATE TABLE loyalty.order_deadlines (
    order_ref text NOT NULL,
    kind      text NOT NULL,
    due_at    timestamptz NOT NULL,
    done_at   timestamptz,
    detail    jsonb,
    PRIMARY KEY (order_ref, kind)
);
-- A scan looks up the deadlines that fell due, or whose stage completed,
-- since the last one; only those not met can make or resolve an issue, so
-- only those are indexed (most orders meet their deadlines: their rows stay
-- out of both indexes, and so do their updates).
CREATE INDEX order_deadlines_due_idx ON loyalty.order_deadlines (due_at) WHERE done_at IS NULL OR done_at > due_at;
CREATE INDEX order_deadlines_done_idx ON loyalty.order_deadlines (done_at) WHERE done_at > due_at;
COMMENT ON TABLE loyalty.order_deadlines IS
'Per watched order and issue kind: when the SLA is breached (due_at) and when the stage completed (done_at); derived by loyalty.scan_operations()';

CREATE TABLE loyalty.order_issues (
    issue_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_ref   text NOT NULL,
    customer_id text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('late_dispatch', 'late_delivery', 'stalled_parcel', 'delivery_failed',
                                              'slow_refund', 'payment_pending')),
    opened_at   timestamptz NOT NULL,
    resolved_at timestamptz,
    detail      jsonb NOT NULL DEFAULT '{}',
    notified_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (order_ref, kind)
);
CREATE INDEX order_issues_open_idx ON loyalty.order_issues (opened_at) WHERE resolved_at IS NULL;
CREATE INDEX order_issues_customer_idx ON loyalty.order_issues (customer_id);
-- service notices search the issues opened in their validity window (79_notices.sql)
CREATE INDEX order_issues_opened_idx ON loyalty.order_issues (opened_at);
COMMENT ON TABLE loyalty.order_issues IS 'Post-purchase issues found by loyalty.scan_operations(): one per order and kind, ever';
COMMENT ON COLUMN loyalty.order_issues.kind IS 'late_dispatch, late_delivery, stalled_parcel, delivery_failed, slow_refund, payment_pending';
COMMENT ON COLUMN loyalty.order_issues.opened_at IS 'when the SLA was breached (the deadline, or the failure event), not when a scan saw it';
COMMENT ON COLUMN loyalty.order_issues.resolved_at IS 'when the stage completed (dispatch, delivery, carrier scan, refund, payment); NULL: open';
COMMENT ON COLUMN loyalty.order_issues.detail IS 'the deadline and what set it (order column, promise, SLA rule), the carrier event of a failure';
COMMENT ON COLUMN loyalty.order_issues.notified_at IS 'when the customer was told (loyalty.issue_notified); experience_impact compares notified and not notified';
COMMENT ON COLUMN loyalty.order_issues.created_at IS 'when a scan first recorded it (later than opened_at after downtime)';

-- The last scan: its as_of (the lower end of the next scan's range of
-- deadlines), and whether every deadline must be recomputed (settings or
-- holidays changed; no row: never scanned, or restored from a dump).
CREATE TABLE loyalty.operations_runs (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_as_of  timestamptz,
    last_run_at timestamptz,
    recompute   boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE loyalty.operations_runs IS 'State of loyalty.scan_operations(): as_of of the last scan, and whether all deadlines are due for recomputing';

-- A changed calendar moves deadlines: the next scan recomputes them all.
CREATE FUNCTION loyalty._operations_recompute()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO loyalty.operations_runs AS r (id, recompute) VALUES (true, true)
    ON CONFLICT (id) DO UPDATE SET recompute = true;
    RETURN NULL;
END
$$;
CREATE TRIGGER holidays_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.business_holidays
    FOR EACH STATEMENT EXECUTE FUNCTION loyalty._operations_recompute();

-- ---------------------------------------------------------------- service recovery

-- When an issue of a kind lasts longer than after (open, or resolved later
-- than opened_at + after), the customer gets points through the ledger
-- and/or a temporary tier (loyalty.tier_overrides), once per order and kind
-- (the ledger's idempotency key, the overrides' unique key), granted by the
-- scan.
CREATE TABLE loyalty.recovery_rules (
    rule_id    serial PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('late_dispatch', 'late_delivery', 'stalled_parcel', 'delivery_failed',
                                             'slow_refund', 'payment_pending')),
    after      interval NOT NULL DEFAULT '0' CHECK (after >= '0'),
    points     bigint CHECK (points > 0),
    reason     text NOT NULL DEFAULT 'goodwill' CHECK (btrim(reason) <> ''),
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    tier       text REFERENCES loyalty.tiers ON UPDATE CASCADE,
    tier_up    boolean NOT NULL DEFAULT false,
    tier_for   interval CHECK (tier_for > '0'),
    CONSTRAINT recovery_rules_grant_check CHECK (points IS NOT NULL OR tier IS NOT NULL OR tier_up),
    CONSTRAINT recovery_rules_tier_check CHECK (NOT (tier IS NOT NULL AND tier_up)
                                                AND ((tier IS NULL AND NOT tier_up) = (tier_for IS NULL)))
);
COMMENT ON TABLE loyalty.recovery_rules IS
'Service recovery: goodwill points and/or a temporary tier for an issue of a kind that lasts longer than after (granted by loyalty.scan_operations, once per order and kind)';
COMMENT ON COLUMN loyalty.recovery_rules.after IS 'how long the issue must have lasted (0: every issue of the kind)';
COMMENT ON COLUMN loyalty.recovery_rules.points IS 'goodwill points (NULL: none)';
COMMENT ON COLUMN loyalty.recovery_rules.tier IS 'a tier given for tier_for (at least this tier; NULL: none, or tier_up)';
COMMENT ON COLUMN loyalty.recovery_rules.tier_up IS 'give the tier above the customer''s tier at the time (the top tier stays) for tier_for';
COMMENT ON COLUMN loyalty.recovery_rules.tier_for IS 'how long the tier is given, from opened_at + after (e.g. 90 days); set exactly when tier or tier_up is';

CREATE TABLE loyalty.recovery_grants (
    rule_id      integer NOT NULL,
    order_ref    text NOT NULL,
    kind         text NOT NULL,
    customer_id  text NOT NULL,
    issue_id     bigint NOT NULL,
    points       bigint NOT NULL,
    ledger_entry bigint NOT NULL,
    granted_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (rule_id, order_ref, kind)
);
COMMENT ON TABLE loyalty.recovery_grants IS 'Goodwill points granted by loyalty.recovery_rules, with the ledger entry';

-- What service recovery gave for an order's issue of a kind, for the
-- notice's payload: {"recovery": {"points": n, "tier": t, "tier_until": end}}
-- (all points; the highest tier given), {} when nothing
CREATE FUNCTION loyalty._issue_recovery(p_order_ref text, p_kind text)
RETURNS jsonb
LANGUAGE plpgsql STABLE   -- not sql: the upgrade creates it before loyalty.tier_overrides
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT CASE WHEN p.points IS NOT NULL OR t.tier IS NOT NULL
                THEN jsonb_build_object('recovery', jsonb_build_object('points', p.points, 'tier', t.tier, 'tier_until', t.until))
                ELSE '{}' END
      FROM (SELECT sum(g.points) AS points FROM loyalty.recovery_grants g
             WHERE g.order_ref = p_order_ref AND g.kind = p_kind) p
      LEFT JOIN LATERAL (SELECT o.tier, least(o.ended_at, o.ends_at) AS until
                           FROM loyalty.tier_overrides o JOIN loyalty.tiers r ON r.tier = o.tier
                          WHERE o.order_ref = p_order_ref AND o.kind = p_kind AND o.rule_id IS NOT NULL
                          ORDER BY r.min_spend DESC, least(o.ended_at, o.ends_at) DESC LIMIT 1) t ON true);
END
$$;

-- ---------------------------------------------------------------- calendar

-- The day p_start counts from: its local day, or the next day from the
-- cut-off on (loyalty._operations_deadlines then takes the first working day
-- on or after it).
CREATE FUNCTION loyalty._business_start(p_start timestamptz, p_zone text, p_cutoff time)
RETURNS date
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (p_start AT TIME ZONE p_zone)::date
       + CASE WHEN p_cutoff IS NOT NULL AND (p_start AT TIME ZONE p_zone)::time >= p_cutoff THEN 1 ELSE 0 END;

-- whole days of an SLA interval, rounded up ('1 day' = 1, '36 hours' = 2)
CREATE FUNCTION loyalty._whole_days(p_within interval)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ceil(extract(epoch FROM p_within) / 86400)::integer;

-- ---------------------------------------------------------------- stages

-- Per watched order: the effective stage times. An order counts as
-- dispatched at its dispatch time, or at its delivery time if that is
-- earlier or the dispatch time is missing; delivered at its delivery time or
-- the carrier's first delivered event, whichever is earlier. A SQL-standard
-- body without a SET clause (names bound at creation): inlined into its
-- callers, so that a call with a few orders reads those by key (under a
-- custom plan).
CREATE FUNCTION loyalty._order_stages(p_orders text[])
RETURNS TABLE (order_ref text, customer_id text, ordered_at timestamptz, counted boolean, paid_at timestamptz,
               dispatched_at timestamptz, delivered_at timestamptz, dispatch_by timestamptz,
               promised_at timestamptz, promised_on date, promise_revisions integer,
               first_scan_at timestamptz, last_event_at timestamptz, last_status text,
               failed_at timestamptz, failed_status text, failed_carrier_status text,
               return_requested_at timestamptz, return_received_at timestamptz, refunded_at timestamptz)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT l.order_ref, o.customer_id, o.ordered_at, o.counted, l.paid_at,
           least(l.dispatched_at, l.delivered_at, ev.delivered_ev),
           least(l.delivered_at, ev.delivered_ev),
           l.dispatch_by, pr.promised_at, pr.promised_on, pr.revisions,
           ev.first_scan, ev.last_at, ev.last_status,
           ev.failed_at, ev.failed[1], ev.failed_raw[1],
           rt.requested_at, rt.received_at, coalesce(rt.refunded_at, rf.first_refund)
      FROM loyalty.order_lifecycle l
      LEFT JOIN loyalty.orders o ON o.order_ref = l.order_ref
      LEFT JOIN LATERAL (
           SELECT min(e.at) FILTER (WHERE e.status = 'delivered') AS delivered_ev,
                  min(e.at) FILTER (WHERE e.status <> 'label_purchased') AS first_scan,
                  max(e.at) AS last_at,
                  (array_agg(e.status ORDER BY e.at DESC, e.event_id DESC))[1] AS last_status,
                  min(e.at) FILTER (WHERE e.status IN ('attempted_delivery', 'failure', 'returned_to_sender', 'lost')) AS failed_at,
                  array_agg(e.status ORDER BY e.at, e.event_id)
                      FILTER (WHERE e.status IN ('attempted_delivery', 'failure', 'returned_to_sender', 'lost')) AS failed,
                  array_agg(e.carrier_status ORDER BY e.at, e.event_id)
                      FILTER (WHERE e.status IN ('attempted_delivery', 'failure', 'returned_to_sender', 'lost')) AS failed_raw
             FROM loyalty.shipment_events e WHERE e.order_ref = l.order_ref) ev ON true
      LEFT JOIN LATERAL (
           SELECT (array_agg(p.promised_at ORDER BY p.revision))[1] AS promised_at,
                  (array_agg(p.promised_on ORDER BY p.revision))[1] AS promised_on,
                  count(*)::integer AS revisions
             FROM loyalty.order_promises p WHERE p.order_ref = l.order_ref) pr ON true
      LEFT JOIN loyalty.order_returns rt ON rt.order_ref = l.order_ref
      LEFT JOIN LATERAL (SELECT min(f.recorded_at) AS first_refund FROM loyalty.refunds f
                          WHERE f.order_ref = l.order_ref AND rt.order_ref IS NOT NULL) rf ON true
     WHERE p_orders IS NULL OR l.order_ref = ANY (p_orders);
END;

-- Recompute the deadlines of the given orders (NULL: all). Business-day
-- deadlines are computed once per distinct (start day, days) pair.
CREATE FUNCTION loyalty._operations_deadlines(p_orders text[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
-- p_orders is NULL (all) or a short list: plan each query for the one it gets
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    st loyalty.operations_settings := loyalty._operations_settings();
    n bigint;
BEGIN
    IF p_orders IS NULL THEN
        DELETE FROM loyalty.order_deadlines;   -- TRUNCATE needs a privilege no loyalty role has
    END IF;
    WITH s AS MATERIALIZED (
        -- the stages the deadlines need (the planner then skips computing
        -- the others, e.g. the last carrier status)
        SELECT x.order_ref, x.ordered_at, x.paid_at, x.dispatched_at, x.delivered_at, x.dispatch_by,
               x.promised_at, x.promised_on, x.promise_revisions, x.failed_at, x.failed_status, x.failed_carrier_status,
               x.return_received_at, x.refunded_at,
               coalesce(x.paid_at, CASE WHEN st.payment_within IS NULL THEN x.ordered_at END) AS start_at
          FROM loyalty._order_stages(p_orders) x
         WHERE x.ordered_at IS NOT NULL
    ), starts AS (
        -- business-day deadlines wanted: (order, kind, first working day, days)
        SELECT s.order_ref, 'late_dispatch' AS kind, loyalty._business_start(s.start_at, st.time_zone, st.cutoff) AS day,
               loyalty._whole_days(st.dispatch_within) AS days
          FROM s WHERE st.dispatch_within IS NOT NULL AND s.dispatch_by IS NULL AND s.start_at IS NOT NULL
        UNION ALL
        -- N working days after the day of dispatch: the (N-1)th on or after the next day
        SELECT s.order_ref, 'late_delivery',
               (s.dispatched_at AT TIME ZONE st.time_zone)::date + least(loyalty._whole_days(st.deliver_within), 1),
               greatest(loyalty._whole_days(st.deliver_within) - 1, 0)
          FROM s WHERE st.deliver_within IS NOT NULL AND s.promised_at IS NULL AND s.promised_on IS NULL
                   AND s.dispatched_at IS NOT NULL
        UNION ALL
        SELECT s.order_ref, 'slow_refund',
               (s.return_received_at AT TIME ZONE st.time_zone)::date + least(loyalty._whole_days(st.refund_within), 1),
               greatest(loyalty._whole_days(st.refund_within) - 1, 0)
          FROM s WHERE st.refund_within IS NOT NULL AND s.return_received_at IS NOT NULL
    ), pairs AS (
        SELECT DISTINCT starts.day, starts.days FROM starts
    ), cal AS MATERIALIZED (
        -- the working days the deadlines can fall on, numbered
        SELECT w.d, row_number() OVER (ORDER BY w.d) AS n
          FROM (SELECT b.lo + i AS d
                  FROM (SELECT min(pairs.day) AS lo, max(pairs.day) + (max(pairs.days) + 2) * 7 + 30 AS hi FROM pairs) b,
                       generate_series(0, b.hi - b.lo) i) w
         WHERE extract(isodow FROM w.d)::integer = ANY (st.working_days)
           AND NOT EXISTS (SELECT 1 FROM loyalty.business_holidays h WHERE h.day = w.d)
    ), ends AS MATERIALIZED (
        -- the end (local midnight after it, so DST moves the UTC instant) of
        -- the days-th working day after the first working day on or after day
        -- (once per pair, not per order)
        SELECT pairs.day, pairs.days, (e.d + 1)::timestamp AT TIME ZONE st.time_zone AS due
          FROM pairs
         CROSS JOIN LATERAL (SELECT min(cal.n) AS n FROM cal WHERE cal.d >= pairs.day) f
          LEFT JOIN cal e ON e.n = f.n + pairs.days
    ), biz AS (
        SELECT starts.order_ref, starts.kind, ends.due FROM starts JOIN ends USING (day, days)
    ), stall AS (
        -- scan points: dispatch, then every carrier event after it up to the
        -- first terminal one (delivered, returned to sender, lost); the first
        -- gap longer than its threshold is the stall
        SELECT DISTINCT ON (p.order_ref) p.order_ref, p.at + p.threshold AS due, p.next_at AS done, p.at AS last_seen
          FROM (SELECT q.order_ref, q.at, q.terminal, lead(q.at) OVER w AS next_at,
                       CASE WHEN row_number() OVER w = 1 THEN coalesce(st.first_scan_within, st.stall_after)
                            ELSE st.stall_after END AS threshold
                  FROM (SELECT s.order_ref, s.dispatched_at AS at, false AS terminal, 0 AS seq FROM s
                         WHERE s.dispatched_at IS NOT NULL
                        UNION ALL
                        SELECT s.order_ref, e.at, e.status IN ('delivered', 'returned_to_sender', 'lost'), 1
                          FROM s JOIN loyalty.shipment_events e ON e.order_ref = s.order_ref
                         WHERE s.dispatched_at IS NOT NULL AND e.at >= s.dispatched_at AND e.status <> 'label_purchased'
                           AND e.at <= least(s.delivered_at, 'infinity')
                        UNION ALL
                        -- (>=: an order without a dispatch time counts as dispatched at delivery)
                        SELECT s.order_ref, s.delivered_at, true, 2 FROM s
                         WHERE s.delivered_at IS NOT NULL AND s.delivered_at >= s.dispatched_at) q
                WINDOW w AS (PARTITION BY q.order_ref ORDER BY q.at, q.seq)) p
         WHERE p.threshold IS NOT NULL AND NOT p.terminal
           AND (p.next_at IS NULL OR p.next_at > p.at + p.threshold)
           -- nothing after a terminal event is in transit
           AND NOT EXISTS (SELECT 1 FROM loyalty.shipment_events t
                            WHERE t.order_ref = p.order_ref AND t.at <= p.at
                              AND t.status IN ('delivered', 'returned_to_sender', 'lost'))
         ORDER BY p.order_ref, p.at
    ), new AS MATERIALIZED (
    SELECT s.order_ref, 'payment_pending' AS kind, s.ordered_at + st.payment_within AS due_at, s.paid_at AS done_at,
           jsonb_build_object('rule', 'payment_within', 'within', st.payment_within) AS detail
      FROM s WHERE st.payment_within IS NOT NULL
    UNION ALL
    SELECT s.order_ref, 'late_dispatch', coalesce(s.dispatch_by, b.due), s.dispatched_at,
           CASE WHEN s.dispatch_by IS NOT NULL THEN jsonb_build_object('rule', 'dispatch_by')
                ELSE jsonb_build_object('rule', 'dispatch_within', 'within', st.dispatch_within, 'from', s.start_at) END
      FROM s LEFT JOIN biz b ON b.order_ref = s.order_ref AND b.kind = 'late_dispatch'
     WHERE coalesce(s.dispatch_by, b.due) IS NOT NULL
    UNION ALL
    SELECT s.order_ref, 'late_delivery',
           coalesce(s.promised_at, (s.promised_on + 1)::timestamp AT TIME ZONE st.time_zone, b.due), s.delivered_at,
           CASE WHEN s.promised_at IS NOT NULL OR s.promised_on IS NOT NULL
                THEN jsonb_build_object('rule', 'first_promise', 'promised_at', s.promised_at, 'promised_on', s.promised_on,
                                        'revisions', s.promise_revisions)
                ELSE jsonb_build_object('rule', 'deliver_within', 'within', st.deliver_within, 'from', s.dispatched_at) END
      FROM s LEFT JOIN biz b ON b.order_ref = s.order_ref AND b.kind = 'late_delivery'
     WHERE coalesce(s.promised_at, (s.promised_on + 1)::timestamp AT TIME ZONE st.time_zone, b.due) IS NOT NULL
    UNION ALL
    SELECT st2.order_ref, 'stalled_parcel', st2.due, st2.done,
           jsonb_build_object('rule', 'stall_after', 'last_carrier_event_before', st2.last_seen)
      FROM stall st2
    UNION ALL
    SELECT s.order_ref, 'delivery_failed', s.failed_at, CASE WHEN s.delivered_at > s.failed_at THEN s.delivered_at END,
           jsonb_build_object('event', s.failed_status, 'carrier_status', s.failed_carrier_status)
      FROM s WHERE s.failed_at IS NOT NULL
    UNION ALL
    SELECT s.order_ref, 'slow_refund', b.due, s.refunded_at,
           jsonb_build_object('rule', 'refund_within', 'within', st.refund_within, 'from', s.return_received_at)
      FROM s JOIN biz b ON b.order_ref = s.order_ref AND b.kind = 'slow_refund'
     WHERE b.due IS NOT NULL
    ), old AS MATERIALIZED (
        -- the stored deadlines of the changed orders, read once
        SELECT x.order_ref, x.kind, x.due_at, x.done_at, x.detail FROM loyalty.order_deadlines x
         WHERE p_orders IS NOT NULL AND x.order_ref = ANY (p_orders)
    ), del AS (
        -- a deadline the facts no longer give
        DELETE FROM loyalty.order_deadlines d
         USING old
         WHERE d.order_ref = old.order_ref AND d.kind = old.kind
           AND NOT EXISTS (SELECT 1 FROM new WHERE new.order_ref = old.order_ref AND new.kind = old.kind)
        RETURNING 1
    ), upd AS (
        -- changed ones only: most of a changed order's deadlines stay. Only
        -- scan_operations calls this, under its lock: no other writer, so
        -- a plain update and insert (no upsert) are enough
        UPDATE loyalty.order_deadlines d SET due_at = new.due_at, done_at = new.done_at, detail = new.detail
          FROM new JOIN old x ON x.order_ref = new.order_ref AND x.kind = new.kind
         WHERE d.order_ref = new.order_ref AND d.kind = new.kind
           AND (x.due_at, x.done_at, x.detail) IS DISTINCT FROM (new.due_at, new.done_at, new.detail)
        RETURNING 1
    ), ins AS (
        INSERT INTO loyalty.order_deadlines (order_ref, kind, due_at, done_at, detail)
        SELECT new.* FROM new
         WHERE NOT EXISTS (SELECT 1 FROM old x WHERE x.order_ref = new.order_ref AND x.kind = new.kind)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM upd) + (SELECT count(*) FROM del) INTO n;
    RETURN n;
END
$$;

-- ---------------------------------------------------------------- writers

CREATE FUNCTION loyalty._check_time(p_value timestamptz, p_what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NOT NULL AND NOT isfinite(p_value) THEN
        RAISE EXCEPTION '% must be a finite time, not %', p_what, p_value
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the moment it happened, or NULL to keep what is stored.';
    END IF;
    -- a time no shop can mean (year 294276, 4713 BC) would break every later
    -- deadline computation for everyone: refused at the door (the bounds of
    -- every time loyalty accepts, src/capture.c)
    IF loyalty._time_problem(p_value, NULL) IS NOT NULL THEN
        RAISE EXCEPTION '% is out of range: %', p_what, p_value
              USING ERRCODE = 'datetime_field_overflow', HINT = 'Times from 1970 to 2099 are accepted.';
    END IF;
END
$$;

-- free text the shop passes in (reasons, carrier statuses): bounded
CREATE FUNCTION loyalty._check_text(p_value text, p_what text, p_max integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF length(p_value) > p_max THEN
        RAISE EXCEPTION '% is too long: % characters', p_what, length(p_value)
              USING ERRCODE = 'string_data_right_truncation', HINT = format('At most %s characters.', p_max);
    END IF;
END
$$;

-- Store stage times of an order (idempotent: a NULL keeps what is stored, a
-- replay changes nothing). A promise different from the latest one is a new
-- revision of the ledger. The one writer of these facts: the API
-- (record_fulfilment) and the capture of a tracked orders table's
-- fulfilment columns (loyalty._apply_fulfilment) call it with checked values.
CREATE FUNCTION loyalty._record_fulfilment(p_order_ref text, p_paid_at timestamptz, p_dispatched_at timestamptz,
                                           p_delivered_at timestamptz, p_promised_at timestamptz,
                                           p_dispatch_by timestamptz, p_promised_on date, p_noted_at timestamptz)
RETURNS loyalty.order_lifecycle
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old loyalty.order_lifecycle;
    l loyalty.order_lifecycle;
    p loyalty.order_promises;
    changed boolean;
BEGIN
    -- the lifecycle row lock serialises every writer of this order
    INSERT INTO loyalty.order_lifecycle AS t (order_ref) VALUES (p_order_ref)
    ON CONFLICT ON CONSTRAINT order_lifecycle_pkey DO NOTHING;
    SELECT * INTO old FROM loyalty.order_lifecycle t WHERE t.order_ref = p_order_ref FOR UPDATE;
    UPDATE loyalty.order_lifecycle t
       SET paid_at = coalesce(p_paid_at, t.paid_at),
           dispatched_at = coalesce(p_dispatched_at, t.dispatched_at),
           delivered_at = coalesce(p_delivered_at, t.delivered_at),
           dispatch_by = coalesce(p_dispatch_by, t.dispatch_by),
           updated_at = now()
     WHERE t.order_ref = p_order_ref
       AND (t.paid_at, t.dispatched_at, t.delivered_at, t.dispatch_by) IS DISTINCT FROM
           (coalesce(p_paid_at, t.paid_at), coalesce(p_dispatched_at, t.dispatched_at),
            coalesce(p_delivered_at, t.delivered_at), coalesce(p_dispatch_by, t.dispatch_by))
    RETURNING * INTO l;
    changed := FOUND OR old.created_at = now();

    IF p_promised_at IS NOT NULL OR p_promised_on IS NOT NULL THEN
        SELECT * INTO p FROM loyalty.order_promises op WHERE op.order_ref = p_order_ref
         ORDER BY op.revision DESC LIMIT 1;
        IF NOT FOUND OR (p.promised_at, p.promised_on) IS DISTINCT FROM (p_promised_at, p_promised_on) THEN
            INSERT INTO loyalty.order_promises (order_ref, revision, promised_at, promised_on, noted_at)
            VALUES (p_order_ref, coalesce(p.revision, 0) + 1, p_promised_at, p_promised_on, coalesce(p_noted_at, now()));
            changed := true;
        END IF;
    END IF;
    IF changed THEN
        INSERT INTO loyalty.operations_changes (order_ref) VALUES (p_order_ref);
    END IF;
    IF l.order_ref IS NULL THEN
        l := old;
    END IF;
    RETURN l;
END
$$;

-- Record stage times of an order from the app (checked, then stored by
-- loyalty._record_fulfilment).
CREATE FUNCTION loyalty.record_fulfilment(order_ref text, paid_at timestamptz DEFAULT NULL,
                                          dispatched_at timestamptz DEFAULT NULL, delivered_at timestamptz DEFAULT NULL,
                                          promised_at timestamptz DEFAULT NULL, dispatch_by timestamptz DEFAULT NULL,
                                          promised_on date DEFAULT NULL, noted_at timestamptz DEFAULT NULL)
RETURNS loyalty.order_lifecycle
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM loyalty.check_key(order_ref, 'order_ref');   -- the one key rule (src/capture.c)
    PERFORM loyalty._check_time(paid_at, 'paid_at');
    PERFORM loyalty._check_time(dispatched_at, 'dispatched_at');
    PERFORM loyalty._check_time(delivered_at, 'delivered_at');
    PERFORM loyalty._check_time(promised_at, 'promised_at');
    PERFORM loyalty._check_time(dispatch_by, 'dispatch_by');
    PERFORM loyalty._check_time(noted_at, 'noted_at');
    IF promised_at IS NOT NULL AND promised_on IS NOT NULL THEN
        RAISE EXCEPTION 'give promised_at or promised_on, not both'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'promised_on is a date (delivered by the end of that day in the shop''s zone), promised_at a moment.';
    END IF;
    IF promised_on IS NOT NULL AND NOT isfinite(promised_on) THEN
        RAISE EXCEPTION 'promised_on must be a finite date'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the promised delivery day.';
    END IF;
    IF promised_on < '1970-01-01' OR promised_on >= '2100-01-01' THEN
        RAISE EXCEPTION 'promised_on is out of range: %', promised_on
              USING ERRCODE = 'datetime_field_overflow', HINT = 'Dates from 1970 to 2099 are accepted.';
    END IF;
    RETURN loyalty._record_fulfilment(order_ref, paid_at, dispatched_at, delivered_at, promised_at,
                                      dispatch_by, promised_on, noted_at);
END
$$;
COMMENT ON FUNCTION loyalty.record_fulfilment(text, timestamptz, timestamptz, timestamptz, timestamptz, timestamptz, date, timestamptz) IS
'Record stage times of an order (paid, dispatched, delivered), its own dispatch deadline and delivery promise (promised_at, or promised_on: a date, by its end in the shop''s zone); idempotent, NULL keeps what is stored; a changed promise is a new revision';

-- Store one carrier event (idempotent by order, time, carrier status and
-- tracking code), mapped onto the vocabulary (unknown when not listed);
-- returns its id (the first one's on a replay). The one writer of carrier
-- events: the API (record_shipment_event) and the capture of a tracked
-- carrier-events table (loyalty._apply_rows) call it with
-- checked values.
CREATE FUNCTION loyalty._record_shipment_event(p_order_ref text, p_event text, p_at timestamptz,
                                               p_tracking_code text, p_detail jsonb)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    raw text := btrim(p_event);
    code text := nullif(btrim(p_tracking_code), '');
    id bigint;
BEGIN
    -- an erased customer's order keeps no tracking code or detail (as
    -- erase_customer leaves its events), and an event recorded before the
    -- erasure (its code now erased:<id>) is not recorded a second time
    IF EXISTS (SELECT 1 FROM loyalty.orders o WHERE o.order_ref = p_order_ref AND o.customer_id LIKE 'erased:%') THEN
        SELECT e.event_id INTO id FROM loyalty.shipment_events e
         WHERE e.order_ref = p_order_ref AND e.at = p_at AND e.carrier_status = raw ORDER BY e.event_id LIMIT 1;
        IF id IS NOT NULL THEN
            RETURN id;
        END IF;
        code := NULL;
        p_detail := NULL;
    END IF;
    INSERT INTO loyalty.order_lifecycle (order_ref) VALUES (p_order_ref)
    ON CONFLICT ON CONSTRAINT order_lifecycle_pkey DO NOTHING;
    INSERT INTO loyalty.shipment_events AS e (order_ref, status, carrier_status, at, tracking_code, detail)
    VALUES (p_order_ref,
            coalesce((SELECT m.status FROM loyalty.shipment_statuses m WHERE m.carrier_status = loyalty._carrier_status_key(raw)),
                     'unknown'),
            raw, p_at, code, p_detail)
    ON CONFLICT ON CONSTRAINT shipment_events_key DO NOTHING
    RETURNING e.event_id INTO id;
    IF id IS NULL THEN
        SELECT e.event_id INTO id FROM loyalty.shipment_events e
         WHERE e.order_ref = p_order_ref AND e.at = p_at
           AND e.carrier_status = raw AND e.tracking_code IS NOT DISTINCT FROM code;
        RETURN id;   -- replay
    END IF;
    INSERT INTO loyalty.operations_changes (order_ref) VALUES (p_order_ref);
    RETURN id;
END
$$;

-- Record one carrier event from the app (checked, then stored by
-- loyalty._record_shipment_event); returns its id.
CREATE FUNCTION loyalty.record_shipment_event(order_ref text, event text, at timestamptz,
                                              tracking_code text DEFAULT NULL, detail jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    raw text := btrim(event);
BEGIN
    PERFORM loyalty.check_key(order_ref, 'order_ref');   -- the one key rule (src/capture.c)
    IF raw IS NULL OR raw = '' THEN
        RAISE EXCEPTION 'event must not be null or empty'
              USING ERRCODE = 'null_value_not_allowed',
                    HINT = 'Pass the carrier''s status, e.g. ''in_transit'', ''delivered'', ''InTransit_CustomsProcessing''.';
    END IF;
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass when the carrier recorded the event.';
    END IF;
    IF detail IS NOT NULL AND jsonb_typeof(detail) <> 'object' THEN
        RAISE EXCEPTION 'detail must be a JSON object'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. ''{"location": "Leipzig hub"}'', or NULL.';
    END IF;
    PERFORM loyalty._check_time(at, 'at');
    PERFORM loyalty._check_text(raw, 'event', 200);
    PERFORM loyalty._check_text(tracking_code, 'tracking_code', 200);
    PERFORM loyalty._check_text(detail::text, 'detail', 8000);
    RETURN loyalty._record_shipment_event(order_ref, raw, at, tracking_code, detail);
END
$$;
COMMENT ON FUNCTION loyalty.record_shipment_event(text, text, timestamptz, text, jsonb) IS
'Record a carrier event of an order (mapped onto loyalty''s vocabulary by loyalty.shipment_statuses, else unknown; the carrier''s text kept); idempotent; returns the event id';

-- Record a return (one per order; idempotent, NULL keeps what is stored).
CREATE FUNCTION loyalty.record_return(order_ref text, requested_at timestamptz, received_at timestamptz DEFAULT NULL,
                                      refunded_at timestamptz DEFAULT NULL, reason text DEFAULT NULL)
RETURNS loyalty.order_returns
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r loyalty.order_returns;
BEGIN
    PERFORM loyalty.check_key(order_ref, 'order_ref');   -- the one key rule (src/capture.c)
    IF requested_at IS NULL THEN
        RAISE EXCEPTION 'requested_at must not be null'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass when the customer asked to return the order.';
    END IF;
    PERFORM loyalty._check_time(requested_at, 'requested_at');
    PERFORM loyalty._check_time(received_at, 'received_at');
    PERFORM loyalty._check_time(refunded_at, 'refunded_at');
    PERFORM loyalty._check_text(reason, 'reason', 1000);
    IF received_at < requested_at THEN
        RAISE EXCEPTION 'received_at % is before requested_at %', received_at, requested_at
              USING ERRCODE = 'invalid_parameter_value', HINT = 'A return is received after it was requested.';
    END IF;
    INSERT INTO loyalty.order_lifecycle (order_ref) VALUES (record_return.order_ref)
    ON CONFLICT ON CONSTRAINT order_lifecycle_pkey DO NOTHING;
    INSERT INTO loyalty.order_returns AS t (order_ref, requested_at, received_at, refunded_at, reason)
    VALUES (record_return.order_ref, record_return.requested_at, record_return.received_at, record_return.refunded_at,
            -- an erased customer's order keeps no reason (erase_customer)
            CASE WHEN NOT EXISTS (SELECT 1 FROM loyalty.orders o
                                   WHERE o.order_ref = record_return.order_ref AND o.customer_id LIKE 'erased:%')
                 THEN nullif(btrim(record_return.reason), '') END)
    ON CONFLICT ON CONSTRAINT order_returns_pkey DO UPDATE
       SET requested_at = excluded.requested_at,
           received_at = coalesce(excluded.received_at, t.received_at),
           refunded_at = coalesce(excluded.refunded_at, t.refunded_at),
           reason = coalesce(excluded.reason, t.reason),
           updated_at = now()
     WHERE (t.requested_at, t.received_at, t.refunded_at, t.reason) IS DISTINCT FROM
           (excluded.requested_at, coalesce(excluded.received_at, t.received_at),
            coalesce(excluded.refunded_at, t.refunded_at), coalesce(excluded.reason, t.reason))
    RETURNING * INTO r;
    IF FOUND THEN
        INSERT INTO loyalty.operations_changes (order_ref) VALUES (record_return.order_ref);
    ELSE
        SELECT * INTO r FROM loyalty.order_returns t WHERE t.order_ref = record_return.order_ref;
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION loyalty.record_return(text, timestamptz, timestamptz, timestamptz, text) IS
'Record a return of an order: requested, received back, refunded (NULL: the order''s first loyalty.refunds row counts); idempotent, NULL keeps what is stored';

-- Record a support contact (idempotent by customer, time and reason).
CREATE FUNCTION loyalty.record_contact(customer_id text, reason text, at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id bigint;
    rsn text := lower(btrim(reason));
BEGIN
    IF customer_id IS NULL OR btrim(customer_id) = '' THEN
        RAISE EXCEPTION 'customer_id must not be null or empty'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the shop''s own customer key as text, e.g. ''42''.';
    END IF;
    PERFORM loyalty._check_text(rsn, 'reason', 1000);
    PERFORM loyalty._check_time(at, 'at');
    IF rsn IS NULL OR rsn = '' THEN
        RAISE EXCEPTION 'reason must not be null or empty'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'E.g. ''wismo'' for "where is my order?", ''damaged'', ''refund''.';
    END IF;
    PERFORM loyalty._check_time(at, 'at');
    INSERT INTO loyalty.support_contacts AS c (customer_id, reason, at)
    VALUES (record_contact.customer_id, rsn, coalesce(record_contact.at, now()))
    ON CONFLICT ON CONSTRAINT support_contacts_key DO NOTHING
    RETURNING c.contact_id INTO id;
    IF id IS NULL THEN
        SELECT c.contact_id INTO id FROM loyalty.support_contacts c
         WHERE c.customer_id = record_contact.customer_id AND c.at = coalesce(record_contact.at, now()) AND c.reason = rsn;
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION loyalty.record_contact(text, text, timestamptz) IS
'Record a support contact of a customer (reason wismo: "where is my order?"); idempotent; returns its id';

-- Say that the customer was told about an issue (by the shop's own notices).
CREATE FUNCTION loyalty.issue_notified(issue_id bigint, at timestamptz DEFAULT now())
RETURNS loyalty.order_issues
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i loyalty.order_issues;
BEGIN
    PERFORM loyalty._check_time(at, 'at');
    UPDATE loyalty.order_issues t SET notified_at = least(t.notified_at, coalesce(issue_notified.at, now()))
     WHERE t.issue_id = issue_notified.issue_id
    RETURNING * INTO i;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'issue % does not exist', issue_id
              USING ERRCODE = 'no_data_found', HINT = 'See loyalty.order_issues.';
    END IF;
    RETURN i;
END
$$;
COMMENT ON FUNCTION loyalty.issue_notified(bigint, timestamptz) IS
'Record that the customer was told about an issue (the earliest time is kept); experience_impact compares told and not told';

-- ---------------------------------------------------------------- configuration

CREATE FUNCTION loyalty.configure_operations(time_zone text DEFAULT NULL, dispatch_within interval DEFAULT NULL,
                                             deliver_within interval DEFAULT NULL, stall_after interval DEFAULT NULL,
                                             refund_within interval DEFAULT NULL, payment_within interval DEFAULT NULL,
                                             first_scan_within interval DEFAULT NULL, working_days integer[] DEFAULT NULL,
                                             cutoff time DEFAULT NULL, impact_window interval DEFAULT NULL,
                                             unset text[] DEFAULT NULL)
RETURNS loyalty.operations_settings
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st loyalty.operations_settings := loyalty._operations_settings();
    zone text;
    k text;
    v interval;
BEGIN
    IF time_zone IS NOT NULL THEN
        zone := loyalty._time_zone(time_zone);
        IF zone IS NULL THEN
            RAISE EXCEPTION 'unknown time zone %', quote_literal(time_zone)
                  USING ERRCODE = 'invalid_parameter_value', HINT = 'Use an IANA zone name such as ''Europe/Berlin''.';
        END IF;
        st.time_zone := zone;
    END IF;
    FOR k, v IN SELECT * FROM unnest(ARRAY['dispatch_within', 'deliver_within', 'stall_after', 'refund_within',
                                           'payment_within', 'first_scan_within', 'impact_window'],
                                     ARRAY[dispatch_within, deliver_within, stall_after, refund_within,
                                           payment_within, first_scan_within, impact_window]) LOOP
        IF v IS NOT NULL AND (NOT isfinite(v) OR v < '0'
                              OR (v = '0' AND k IN ('stall_after', 'payment_within', 'first_scan_within', 'impact_window'))) THEN
            RAISE EXCEPTION '% must be a % interval, not %', k,
                  CASE WHEN k IN ('stall_after', 'payment_within', 'first_scan_within', 'impact_window') THEN 'positive' ELSE 'non-negative' END, v
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'E.g. ''1 day'' (dispatch, delivery and refund count working days: ''0 days'' is the same working day).';
        END IF;
    END LOOP;
    IF working_days IS NOT NULL AND (cardinality(working_days) = 0 OR array_position(working_days, NULL) IS NOT NULL
                                     OR NOT working_days <@ '{1,2,3,4,5,6,7}') THEN
        RAISE EXCEPTION 'working_days must list ISO weekdays 1 (Monday) to 7 (Sunday), not %', working_days
              USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. ARRAY[1,2,3,4,5] for Monday to Friday.';
    END IF;
    SELECT u INTO k FROM unnest(unset) u
     WHERE u IS NULL OR u NOT IN ('dispatch_within', 'deliver_within', 'stall_after', 'refund_within', 'payment_within',
                                  'first_scan_within', 'cutoff') LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot unset %', coalesce(quote_literal(k), 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'unset takes dispatch_within, deliver_within, stall_after, refund_within, payment_within, first_scan_within, cutoff.';
    END IF;
    st.dispatch_within := CASE WHEN 'dispatch_within' = ANY (unset) THEN NULL ELSE coalesce(dispatch_within, st.dispatch_within) END;
    st.deliver_within := CASE WHEN 'deliver_within' = ANY (unset) THEN NULL ELSE coalesce(deliver_within, st.deliver_within) END;
    st.stall_after := CASE WHEN 'stall_after' = ANY (unset) THEN NULL ELSE coalesce(stall_after, st.stall_after) END;
    st.refund_within := CASE WHEN 'refund_within' = ANY (unset) THEN NULL ELSE coalesce(refund_within, st.refund_within) END;
    st.payment_within := CASE WHEN 'payment_within' = ANY (unset) THEN NULL ELSE coalesce(payment_within, st.payment_within) END;
    st.first_scan_within := CASE WHEN 'first_scan_within' = ANY (unset) THEN NULL ELSE coalesce(first_scan_within, st.first_scan_within) END;
    st.cutoff := CASE WHEN 'cutoff' = ANY (unset) THEN NULL ELSE coalesce(cutoff, st.cutoff) END;
    IF working_days IS NOT NULL THEN
        st.working_days := ARRAY(SELECT DISTINCT d FROM unnest(working_days) d ORDER BY d);
    END IF;
    st.impact_window := coalesce(impact_window, st.impact_window);
    st.updated_at := now();

    -- no scan runs with the old settings after this (the scan's lock)
    PERFORM pg_advisory_xact_lock(74200, 14);
    INSERT INTO loyalty.operations_settings SELECT st.*
    ON CONFLICT (id) DO UPDATE
       SET time_zone = excluded.time_zone, working_days = excluded.working_days, cutoff = excluded.cutoff,
           payment_within = excluded.payment_within, dispatch_within = excluded.dispatch_within,
           deliver_within = excluded.deliver_within, first_scan_within = excluded.first_scan_within,
           stall_after = excluded.stall_after, refund_within = excluded.refund_within,
           impact_window = excluded.impact_window, updated_at = excluded.updated_at;
    INSERT INTO loyalty.operations_runs AS r (id, recompute) VALUES (true, true)
    ON CONFLICT (id) DO UPDATE SET recompute = true;
    RETURN st;
END
$$;
COMMENT ON FUNCTION loyalty.configure_operations(text, interval, interval, interval, interval, interval, interval, integer[], time, interval, text[]) IS
'Set the post-purchase SLAs and business calendar (NULL keeps a setting, unset => ARRAY[...] clears rules); an SLA rule applies only once set; the next scan recomputes every deadline';

-- ---------------------------------------------------------------- the scan

-- Open, resolve and withdraw issues as of as_of. Locking: scans (and
-- configure_operations) are serialised by the transaction-level advisory
-- lock (74200, 14), so each one starts from what the last one committed.
-- Writers never wait for a scan: they log the order in operations_changes;
-- a write committed after the scan read that log is picked up by the next
-- scan, which then resolves (or withdraws) what this one decided without it.
-- Issues are keyed by (order, kind): a rerun or a racing write never makes
-- a second one.
--
-- What a scan looks at: the deadlines that fell due, and the stages that
-- completed, since the last scan's as_of, and the deadlines of the logged
-- orders (an issue changes only through one of these), plus the open issues'
-- orders for whether they still count (intake does not log). A scan at
-- an as_of before the last one's, and the first scan after the settings
-- changed, look at every deadline up to as_of. Facts are dated by when they
-- happened: a stage completed after as_of does not resolve anything yet.
-- A scan at an earlier as_of only adds what was missing: it never reopens
-- an issue a later scan resolved.
CREATE FUNCTION loyalty.scan_operations(as_of timestamptz DEFAULT now())
RETURNS TABLE (opened bigint, resolved bigint, withdrawn bigint, open_issues bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
-- the mode and the changed orders decide which deadlines are read: plan for them
SET plan_cache_mode = force_custom_plan
SET jit = off   -- compiling these plans costs far more than running them
AS $$
DECLARE
    run loyalty.operations_runs;
    mode text;          -- recompute, regular, early
    changed text[];
    n_open bigint := 0;
    n_resolved bigint := 0;
    n_withdrawn bigint := 0;
    n bigint;
    g record;
    touched bigint[];   -- issues this scan wrote
    granted text[];     -- customers given a tier by a recovery rule
BEGIN
    IF as_of IS NULL OR NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be a finite time'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Omit it to scan as of now.';
    END IF;
    PERFORM pg_advisory_xact_lock(74200, 14);
    SELECT * INTO run FROM loyalty.operations_runs;
    mode := CASE WHEN run.id IS NULL OR run.recompute OR run.last_as_of IS NULL THEN 'recompute'
                 WHEN as_of < run.last_as_of THEN 'early'
                 ELSE 'regular' END;

    IF mode = 'early' THEN
        -- the log stays for the next regular scan
        SELECT array_agg(DISTINCT c.order_ref) INTO changed FROM loyalty.operations_changes c;
    ELSE
        WITH seen AS (DELETE FROM loyalty.operations_changes RETURNING order_ref)
        SELECT array_agg(DISTINCT seen.order_ref) INTO changed FROM seen;
    END IF;
    IF mode = 'recompute' THEN
        PERFORM loyalty._operations_deadlines(NULL);
    ELSIF changed IS NOT NULL THEN
        PERFORM loyalty._operations_deadlines(changed);
    END IF;
    -- orders loyalty.orders does not know yet (the order row is applied
    -- later than its fulfilment) stay in the log for a day
    IF mode <> 'early' AND changed IS NOT NULL THEN
        INSERT INTO loyalty.operations_changes (order_ref)
        SELECT c FROM unnest(changed) c
         WHERE NOT EXISTS (SELECT 1 FROM loyalty.orders o WHERE o.order_ref = c)
           AND EXISTS (SELECT 1 FROM loyalty.order_lifecycle l WHERE l.order_ref = c AND l.updated_at > now() - interval '1 day');
    END IF;

    -- The deadlines to look at, each with its order and its issue (if any),
    -- read by key (LATERAL ... LIMIT 1: one index probe per deadline, never a
    -- pass over all orders). Breached ones are opened or resolved; an issue
    -- whose premise turned out false (the stage completed in time, the data
    -- arriving late; the order does not count) is withdrawn. Rows that would
    -- not change are left alone (an upsert would lock them). The two writes
    -- touch disjoint rows (breached or not).
    WITH c AS MATERIALIZED (
        SELECT d.order_ref, d.kind, o.customer_id, d.due_at, dd.detail || jsonb_build_object('deadline', d.due_at) AS detail,
               d.due_at <= as_of AND (d.done_at IS NULL OR d.done_at > d.due_at) AND o.counted AS breached,
               CASE WHEN mode = 'early' THEN coalesce(i.resolved_at, CASE WHEN d.done_at <= as_of THEN d.done_at END)
                    ELSE CASE WHEN d.done_at <= as_of THEN d.done_at END END AS resolved_at,
               i.issue_id, (i.customer_id, i.opened_at, i.detail, i.resolved_at) AS stored
          FROM (SELECT u.* FROM (
                -- keys and times only (deduplicating the details costs more)
                SELECT d.order_ref, d.kind, d.due_at, d.done_at FROM loyalty.order_deadlines d
                 WHERE mode <> 'regular' AND d.due_at <= as_of
                UNION
                SELECT d.order_ref, d.kind, d.due_at, d.done_at FROM loyalty.order_deadlines d
                 WHERE mode = 'regular' AND d.due_at > run.last_as_of AND d.due_at <= as_of
                   AND (d.done_at IS NULL OR d.done_at > d.due_at)
                UNION
                SELECT d.order_ref, d.kind, d.due_at, d.done_at FROM loyalty.order_deadlines d
                 WHERE mode = 'regular' AND d.done_at > run.last_as_of AND d.done_at <= as_of
                   AND d.done_at > d.due_at
                UNION
                SELECT d.order_ref, d.kind, d.due_at, d.done_at FROM loyalty.order_deadlines d
                 WHERE mode = 'regular' AND d.order_ref = ANY (changed)) u
                -- only what can change an issue: a deadline that passed
                -- before its stage completed, or one with an issue (most of
                -- a changed order's deadlines are neither: no need to read
                -- their order); a scalar subquery, one probe per row, never
                -- a hash of every issue
                WHERE (u.due_at <= as_of AND (u.done_at IS NULL OR u.done_at > u.due_at))
                   OR (SELECT true FROM loyalty.order_issues x WHERE x.order_ref = u.order_ref AND x.kind = u.kind LIMIT 1)) d
         CROSS JOIN LATERAL (SELECT o.customer_id, o.counted FROM loyalty.orders o WHERE o.order_ref = d.order_ref LIMIT 1) o
         CROSS JOIN LATERAL (SELECT x.detail FROM loyalty.order_deadlines x
                              WHERE x.order_ref = d.order_ref AND x.kind = d.kind LIMIT 1) dd
          LEFT JOIN LATERAL (SELECT i.issue_id, i.customer_id, i.opened_at, i.detail, i.resolved_at FROM loyalty.order_issues i
                              WHERE i.order_ref = d.order_ref AND i.kind = d.kind LIMIT 1) i ON true
    ), up AS (
        INSERT INTO loyalty.order_issues AS i (order_ref, customer_id, kind, opened_at, resolved_at, detail)
        SELECT c.order_ref, c.customer_id, c.kind, c.due_at, c.resolved_at, c.detail
          FROM c
         WHERE c.breached
           AND (c.issue_id IS NULL OR c.stored IS DISTINCT FROM (c.customer_id, c.due_at, c.detail, c.resolved_at))
         ORDER BY c.order_ref, c.kind
        ON CONFLICT (order_ref, kind) DO UPDATE
           SET customer_id = excluded.customer_id, opened_at = excluded.opened_at, detail = excluded.detail,
               resolved_at = excluded.resolved_at, updated_at = now()
        RETURNING (i.xmax = 0) AS inserted, i.resolved_at, i.issue_id
    ), gone AS (
        DELETE FROM loyalty.order_issues i
         WHERE i.issue_id = ANY (ARRAY(SELECT c.issue_id FROM c
                                        WHERE NOT c.breached AND c.issue_id IS NOT NULL
                                          -- early: a deadline after as_of was not known then
                                          AND (mode <> 'early' OR c.due_at <= as_of)))
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM up WHERE up.inserted),
           (SELECT count(*) FROM up WHERE NOT up.inserted AND up.resolved_at IS NOT NULL),
           (SELECT count(*) FROM gone),
           (SELECT coalesce(array_agg(up.issue_id), '{}') FROM up)
      INTO n_open, n_resolved, n_withdrawn, touched;

    -- issues of orders that do not count (any longer; intake keeps the order
    -- row with counted false): the open ones every scan (intake does not log
    -- here), all of them for the changed orders and when recomputing; and
    -- issues whose deadline is gone (a rule unset, a fact corrected)
    WITH gone AS (
        DELETE FROM loyalty.order_issues i
         WHERE i.issue_id = ANY (ARRAY(
               SELECT x.issue_id
                 FROM (SELECT i.issue_id, i.order_ref FROM loyalty.order_issues i
                        WHERE i.resolved_at IS NULL OR mode = 'recompute' OR (mode = 'regular' AND i.order_ref = ANY (changed))
                       OFFSET 0) x
                -- one probe per issue into the small index of orders that do not count
                WHERE (SELECT true FROM loyalty.orders o WHERE o.order_ref = x.order_ref AND NOT o.counted LIMIT 1)))
        RETURNING 1
    )
    SELECT count(*) INTO n FROM gone;
    n_withdrawn := n_withdrawn + n;
    IF mode <> 'early' THEN
        WITH gone AS (
            DELETE FROM loyalty.order_issues i
             WHERE (mode = 'recompute' OR i.order_ref = ANY (changed))
               AND NOT EXISTS (SELECT 1 FROM loyalty.order_deadlines d
                                WHERE d.order_ref = i.order_ref AND d.kind = i.kind AND d.due_at <= as_of)
            RETURNING 1
        )
        SELECT count(*) INTO n FROM gone;
        n_withdrawn := n_withdrawn + n;
    END IF;

    -- service recovery: open issues and those this scan wrote, or all when
    -- recomputing; the ledger's key (rule, kind, order) makes a grant happen
    -- once whatever the issue's id
    IF EXISTS (SELECT 1 FROM loyalty.recovery_rules r WHERE r.active AND r.points IS NOT NULL) THEN
        FOR g IN
            SELECT r.rule_id, r.points, r.reason, i.issue_id, i.order_ref, i.kind, i.customer_id
              FROM (SELECT * FROM loyalty.order_issues i WHERE i.resolved_at IS NULL AND mode <> 'recompute'
                    UNION
                    SELECT * FROM loyalty.order_issues i WHERE i.issue_id = ANY (touched) AND mode <> 'recompute'
                    UNION ALL
                    SELECT * FROM loyalty.order_issues i WHERE mode = 'recompute') i
              JOIN loyalty.recovery_rules r ON r.kind = i.kind AND r.active AND r.points IS NOT NULL
             WHERE i.opened_at + r.after <= as_of
               AND (i.resolved_at IS NULL OR i.resolved_at > i.opened_at + r.after)
               AND NOT EXISTS (SELECT 1 FROM loyalty.recovery_grants x
                                WHERE x.rule_id = r.rule_id AND x.order_ref = i.order_ref AND x.kind = i.kind)
             ORDER BY i.order_ref, i.kind, r.rule_id
        LOOP
            INSERT INTO loyalty.recovery_grants (rule_id, order_ref, kind, customer_id, issue_id, points, ledger_entry)
            VALUES (g.rule_id, g.order_ref, g.kind, g.customer_id, g.issue_id, g.points,
                    loyalty.earn(g.customer_id, g.points, format('%s (%s, order %s)', g.reason, g.kind, g.order_ref),
                                 format('recovery:%s:%s:%s', g.rule_id, g.kind, g.order_ref)))
            ON CONFLICT DO NOTHING;
        END LOOP;
    END IF;
    -- the tier side: an override from the moment the rule applied (opened_at
    -- + after) for tier_for; "one tier up" is the tier above the customer's
    -- tier in force then (the top tier stays the top tier)
    IF EXISTS (SELECT 1 FROM loyalty.recovery_rules r WHERE r.active AND (r.tier IS NOT NULL OR r.tier_up)) THEN
        WITH rg AS (
            SELECT DISTINCT ON (r.rule_id, i.order_ref, i.kind)
                   r.rule_id, r.reason, r.tier_for, i.issue_id, i.order_ref, i.kind, i.customer_id, i.opened_at + r.after AS starts_at,
                   coalesce(r.tier,
                            (SELECT t.tier FROM loyalty.tiers t
                              WHERE t.min_spend > coalesce((SELECT ct.min_spend FROM loyalty.customer_tiers c
                                                              JOIN loyalty.tiers ct ON ct.tier = c.tier
                                                             WHERE c.customer_id = i.customer_id), -1)
                              ORDER BY t.min_spend LIMIT 1),
                            (SELECT t.tier FROM loyalty.tiers t ORDER BY t.min_spend DESC LIMIT 1)) AS tier
              FROM (SELECT * FROM loyalty.order_issues i WHERE i.resolved_at IS NULL AND mode <> 'recompute'
                    UNION
                    SELECT * FROM loyalty.order_issues i WHERE i.issue_id = ANY (touched) AND mode <> 'recompute'
                    UNION ALL
                    SELECT * FROM loyalty.order_issues i WHERE mode = 'recompute') i
              JOIN loyalty.recovery_rules r ON r.kind = i.kind AND r.active AND (r.tier IS NOT NULL OR r.tier_up)
             WHERE i.opened_at + r.after <= as_of
               AND (i.resolved_at IS NULL OR i.resolved_at > i.opened_at + r.after)
               AND NOT EXISTS (SELECT 1 FROM loyalty.tier_overrides x
                                WHERE x.rule_id = r.rule_id AND x.order_ref = i.order_ref AND x.kind = i.kind)
             ORDER BY r.rule_id, i.order_ref, i.kind
        ), ins AS (
            INSERT INTO loyalty.tier_overrides (customer_id, tier, starts_at, ends_at, reason, source, rule_id, order_ref, kind, issue_id)
            SELECT rg.customer_id, rg.tier, rg.starts_at, rg.starts_at + rg.tier_for,
                   format('%s (%s, order %s)', rg.reason, rg.kind, rg.order_ref), 'recovery', rg.rule_id, rg.order_ref, rg.kind, rg.issue_id
              FROM rg WHERE rg.tier IS NOT NULL
             ORDER BY rg.rule_id, rg.order_ref, rg.kind
            ON CONFLICT DO NOTHING
            RETURNING customer_id
        )
        SELECT array_agg(DISTINCT ins.customer_id ORDER BY ins.customer_id) INTO granted FROM ins;
        IF granted IS NOT NULL THEN
            PERFORM loyalty._recompute_tiers(granted, as_of);
        END IF;
    END IF;

    INSERT INTO loyalty.operations_runs AS r (id, last_as_of, last_run_at, recompute)
    VALUES (true, as_of, now(), false)
    ON CONFLICT (id) DO UPDATE
       SET last_as_of = greatest(r.last_as_of, excluded.last_as_of), last_run_at = excluded.last_run_at, recompute = false;

    RETURN QUERY SELECT n_open, n_resolved, n_withdrawn,
                        (SELECT count(*) FROM loyalty.order_issues i WHERE i.resolved_at IS NULL);
END
$$;
COMMENT ON FUNCTION loyalty.scan_operations(timestamptz) IS
'Open and resolve post-purchase issues as of as_of (opened at the breach, resolved when the stage completed); safe at any frequency and concurrently; returns issues opened, resolved and withdrawn by this scan, and the issues open now';

-- The issues the deadlines say exist as of a time, computed afresh (for
-- checks; loyalty.order_issues is what the scans recorded). Deadlines are as
-- the last scan computed them.
CREATE FUNCTION loyalty.issues_as_of(as_of timestamptz)
RETURNS TABLE (order_ref text, customer_id text, kind text, opened_at timestamptz, resolved_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.order_ref, o.customer_id, d.kind, d.due_at, CASE WHEN d.done_at <= as_of THEN d.done_at END
      FROM loyalty.order_deadlines d JOIN loyalty.orders o ON o.order_ref = d.order_ref AND o.counted
     WHERE d.due_at <= as_of AND (d.done_at IS NULL OR d.done_at > d.due_at)
$$;
COMMENT ON FUNCTION loyalty.issues_as_of(timestamptz) IS
'The issues the current deadlines imply as of a time (opened at the breach, resolved if the stage completed by then)';

-- ---------------------------------------------------------------- views

CREATE FUNCTION loyalty.order_stages_at(order_refs text[] DEFAULT NULL)
RETURNS TABLE (order_ref text, customer_id text, ordered_at timestamptz, counted boolean, paid_at timestamptz,
               dispatched_at timestamptz, delivered_at timestamptz, dispatch_due timestamptz, delivery_due timestamptz,
               first_promise timestamptz, promise_revisions integer, last_event_at timestamptz, last_status text,
               return_requested_at timestamptz, return_received_at timestamptz, refunded_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER   -- read-only; lets loyalty_reader see stages without the tables behind them
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.order_ref, s.customer_id, s.ordered_at, s.counted, s.paid_at, s.dispatched_at, s.delivered_at,
           dd.due_at, dl.due_at,
           coalesce(s.promised_at, (s.promised_on + 1)::timestamp AT TIME ZONE st.time_zone),
           coalesce(s.promise_revisions, 0), s.last_event_at, s.last_status,
           s.return_requested_at, s.return_received_at, s.refunded_at
      FROM loyalty._order_stages(order_stages_at.order_refs) s
     CROSS JOIN loyalty._operations_settings() st
      LEFT JOIN loyalty.order_deadlines dd ON dd.order_ref = s.order_ref AND dd.kind = 'late_dispatch'
      LEFT JOIN loyalty.order_deadlines dl ON dl.order_ref = s.order_ref AND dl.kind = 'late_delivery'
$$;
COMMENT ON FUNCTION loyalty.order_stages_at(text[]) IS 'Effective stage times and deadlines of the given watched orders (NULL: all)';

CREATE VIEW loyalty.order_stages AS SELECT * FROM loyalty.order_stages_at(NULL);
COMMENT ON VIEW loyalty.order_stages IS 'Per watched order: when it was placed, paid, dispatched and delivered (effective times), its deadlines and promise';
COMMENT ON COLUMN loyalty.order_stages.order_ref IS 'the order (loyalty.orders)';
COMMENT ON COLUMN loyalty.order_stages.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.order_stages.ordered_at IS 'when the order was placed';
COMMENT ON COLUMN loyalty.order_stages.counted IS 'the order counts as a purchase (status in the counted set, row still in the shop)';
COMMENT ON COLUMN loyalty.order_stages.paid_at IS 'when the order was paid (NULL: not recorded)';
COMMENT ON COLUMN loyalty.order_stages.promise_revisions IS 'delivery promises recorded for the order (0: none)';
COMMENT ON COLUMN loyalty.order_stages.last_event_at IS 'time of the order''s latest shipment event';
COMMENT ON COLUMN loyalty.order_stages.last_status IS 'status of the order''s latest shipment event';
COMMENT ON COLUMN loyalty.order_stages.return_requested_at IS 'when the customer asked to return the order';
COMMENT ON COLUMN loyalty.order_stages.return_received_at IS 'when the shop received the return';
COMMENT ON COLUMN loyalty.order_stages.refunded_at IS 'when the money went back (the return''s refund time, else the first refund recorded)';
COMMENT ON COLUMN loyalty.order_stages.dispatched_at IS 'effective: the dispatch time, or the delivery time if earlier or dispatch missing';
COMMENT ON COLUMN loyalty.order_stages.delivered_at IS 'effective: the delivery time, or the carrier''s first delivered event if earlier';
COMMENT ON COLUMN loyalty.order_stages.dispatch_due IS 'dispatch deadline (the order''s dispatch_by, else the dispatch_within rule); as of the last scan';
COMMENT ON COLUMN loyalty.order_stages.delivery_due IS 'delivery deadline (the first promise, else the deliver_within rule); as of the last scan';
COMMENT ON COLUMN loyalty.order_stages.first_promise IS 'the promise made first (a date promise: the end of that day in the shop''s zone)';

CREATE FUNCTION loyalty.open_issues_at(as_of timestamptz)
RETURNS TABLE (issue_id bigint, order_ref text, customer_id text, kind text, opened_at timestamptz, age interval,
               customer_value numeric, customer_orders integer, segment text, order_amount numeric,
               notified_at timestamptz, detail jsonb)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.issue_id, i.order_ref, i.customer_id, i.kind, i.opened_at, as_of - i.opened_at,
           cs.net_spend, cs.orders, r.segment, o.amount - o.refunded, i.notified_at, i.detail
      FROM loyalty.order_issues i
      LEFT JOIN loyalty.customer_state cs ON cs.customer_id = i.customer_id
      LEFT JOIN loyalty.customer_rfm r ON r.customer_id = i.customer_id
      LEFT JOIN loyalty.orders o ON o.order_ref = i.order_ref
     WHERE i.resolved_at IS NULL
     ORDER BY cs.net_spend DESC NULLS LAST, i.opened_at, i.issue_id
$$;
COMMENT ON FUNCTION loyalty.open_issues_at(timestamptz) IS 'Open issues with their age as of a time, most valuable customers first';

CREATE VIEW loyalty.open_issues AS SELECT * FROM loyalty.open_issues_at(pg_catalog.now());
COMMENT ON VIEW loyalty.open_issues IS 'The operations dashboard: open post-purchase issues, most valuable customers first, then oldest';
COMMENT ON COLUMN loyalty.open_issues.issue_id IS 'the issue (loyalty.order_issues)';
COMMENT ON COLUMN loyalty.open_issues.order_ref IS 'the order the issue is about';
COMMENT ON COLUMN loyalty.open_issues.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.open_issues.kind IS 'late_dispatch, late_delivery, stalled_parcel, delivery_failed, slow_refund, payment_pending';
COMMENT ON COLUMN loyalty.open_issues.opened_at IS 'when the SLA was breached (the deadline, or the failure event)';
COMMENT ON COLUMN loyalty.open_issues.customer_orders IS 'the customer''s counted orders';
COMMENT ON COLUMN loyalty.open_issues.notified_at IS 'when the customer was told (loyalty.issue_notified); NULL: not yet';
COMMENT ON COLUMN loyalty.open_issues.detail IS 'the deadline and what set it, the carrier event of a failure';
COMMENT ON COLUMN loyalty.open_issues.age IS 'time since the SLA was breached';
COMMENT ON COLUMN loyalty.open_issues.customer_value IS 'the customer''s net spend to date (customer_state)';
COMMENT ON COLUMN loyalty.open_issues.segment IS 'the customer''s RFM segment';
COMMENT ON COLUMN loyalty.open_issues.order_amount IS 'the order''s amount less refunds';

-- Every stage and event of one order, in time order (for support staff).
CREATE FUNCTION loyalty.order_timeline(order_ref text)
RETURNS TABLE (at timestamptz, what text, detail jsonb)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT x.at, x.what, x.detail FROM (
        SELECT o.ordered_at AS at, 'ordered' AS what,
               jsonb_build_object('customer_id', o.customer_id, 'amount', o.amount, 'status', o.status, 'counted', o.counted) AS detail, 1 AS ord
          FROM loyalty.orders o WHERE o.order_ref = order_timeline.order_ref
        UNION ALL
        SELECT l.paid_at, 'paid', NULL, 2 FROM loyalty.order_lifecycle l WHERE l.order_ref = order_timeline.order_ref AND l.paid_at IS NOT NULL
        UNION ALL
        SELECT l.dispatched_at, 'dispatched', NULL, 3 FROM loyalty.order_lifecycle l
         WHERE l.order_ref = order_timeline.order_ref AND l.dispatched_at IS NOT NULL
        UNION ALL
        SELECT l.delivered_at, 'delivered', NULL, 6 FROM loyalty.order_lifecycle l
         WHERE l.order_ref = order_timeline.order_ref AND l.delivered_at IS NOT NULL
        UNION ALL
        SELECT p.noted_at, CASE WHEN p.revision = 1 THEN 'promised' ELSE 'promise revised' END,
               jsonb_build_object('revision', p.revision, 'promised_at', p.promised_at, 'promised_on', p.promised_on), 2
          FROM loyalty.order_promises p WHERE p.order_ref = order_timeline.order_ref
        UNION ALL
        SELECT e.at, 'carrier: ' || e.status,
               jsonb_strip_nulls(jsonb_build_object('carrier_status', e.carrier_status, 'tracking_code', e.tracking_code, 'detail', e.detail)), 4
          FROM loyalty.shipment_events e WHERE e.order_ref = order_timeline.order_ref
        UNION ALL
        SELECT r.requested_at, 'return requested', jsonb_build_object('reason', r.reason), 7
          FROM loyalty.order_returns r WHERE r.order_ref = order_timeline.order_ref
        UNION ALL
        SELECT r.received_at, 'return received', NULL, 8
          FROM loyalty.order_returns r WHERE r.order_ref = order_timeline.order_ref AND r.received_at IS NOT NULL
        UNION ALL
        SELECT f.recorded_at, 'refunded', jsonb_build_object('amount', f.amount), 9
          FROM loyalty.refunds f WHERE f.order_ref = order_timeline.order_ref
        UNION ALL
        SELECT i.opened_at, 'issue opened: ' || i.kind, i.detail, 5
          FROM loyalty.order_issues i WHERE i.order_ref = order_timeline.order_ref
        UNION ALL
        SELECT i.resolved_at, 'issue resolved: ' || i.kind, NULL, 5
          FROM loyalty.order_issues i WHERE i.order_ref = order_timeline.order_ref AND i.resolved_at IS NOT NULL
    ) x
     ORDER BY x.at, x.ord, x.what
$$;
COMMENT ON FUNCTION loyalty.order_timeline(text) IS 'Every stage, promise, carrier event, return, refund and issue of one order, in time order (for support staff)';

-- Wilson score interval for x successes in n trials (Wilson 1927; Newcombe
-- 1998, method 3), z = 1.959964 for 95%.
CREATE FUNCTION loyalty._wilson(x bigint, n bigint, z float8 DEFAULT 1.959963984540054)
RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN n > 0 THEN ARRAY[
    ((x::float8 / n) + z * z / (2 * n) - z * sqrt((x::float8 / n) * (1 - x::float8 / n) / n + z * z / (4.0 * n * n))) / (1 + z * z / n),
    ((x::float8 / n) + z * z / (2 * n) + z * sqrt((x::float8 / n) * (1 - x::float8 / n) / n + z * z / (4.0 * n * n))) / (1 + z * z / n)] END;

CREATE FUNCTION loyalty.sla_summary_at(as_of timestamptz)
RETURNS TABLE (week date, orders bigint, dispatched bigint, dispatch_on_time_rate numeric, delivered bigint,
               delivery_on_time_rate numeric, median_hours_to_pay numeric, median_hours_to_dispatch numeric,
               median_hours_to_deliver numeric, issues bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (date_trunc('week', s.ordered_at AT TIME ZONE st.time_zone))::date,
           count(*), count(s.dispatched_at),
           round(count(*) FILTER (WHERE s.dispatched_at <= least(s.dispatch_due, as_of))::numeric
                 / nullif(count(*) FILTER (WHERE s.dispatched_at <= as_of OR s.dispatch_due <= as_of), 0), 4),
           count(s.delivered_at),
           round(count(*) FILTER (WHERE s.delivered_at <= least(s.delivery_due, as_of))::numeric
                 / nullif(count(*) FILTER (WHERE s.delivery_due IS NOT NULL AND (s.delivered_at <= as_of OR s.delivery_due <= as_of)), 0), 4),
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM s.paid_at - s.ordered_at) / 3600))::numeric, 1),
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM s.dispatched_at - coalesce(s.paid_at, s.ordered_at)) / 3600))::numeric, 1),
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM s.delivered_at - s.dispatched_at) / 3600))::numeric, 1),
           sum((SELECT count(*) FROM loyalty.order_issues i WHERE i.order_ref = s.order_ref AND i.opened_at <= as_of))::bigint
      FROM loyalty.order_stages_at(NULL) s
     CROSS JOIN loyalty._operations_settings() st
     WHERE s.counted AND s.ordered_at <= as_of
     GROUP BY 1
     ORDER BY 1
$$;
COMMENT ON FUNCTION loyalty.sla_summary_at(timestamptz) IS 'Per week of ordering: orders, on-time dispatch and delivery rates, median hours between stages, as of a time';

CREATE VIEW loyalty.sla_summary AS SELECT * FROM loyalty.sla_summary_at(pg_catalog.now());
COMMENT ON VIEW loyalty.sla_summary IS 'Per week of ordering (shop''s zone, weeks start Monday): orders, on-time dispatch and delivery, median times payment -> dispatch -> delivery';
COMMENT ON COLUMN loyalty.sla_summary.week IS 'Monday of the week the orders were placed, in the shop''s time zone';
COMMENT ON COLUMN loyalty.sla_summary.orders IS 'counted orders placed that week';
COMMENT ON COLUMN loyalty.sla_summary.dispatched IS 'of these, orders dispatched';
COMMENT ON COLUMN loyalty.sla_summary.delivered IS 'of these, orders delivered';
COMMENT ON COLUMN loyalty.sla_summary.dispatch_on_time_rate IS 'dispatched by the deadline, of the orders dispatched or past their deadline';
COMMENT ON COLUMN loyalty.sla_summary.delivery_on_time_rate IS 'delivered by the deadline (first promise or deliver_within), of the orders delivered or past it';
COMMENT ON COLUMN loyalty.sla_summary.median_hours_to_pay IS 'median hours from order to payment';
COMMENT ON COLUMN loyalty.sla_summary.median_hours_to_dispatch IS 'median hours from payment (or order) to effective dispatch';
COMMENT ON COLUMN loyalty.sla_summary.median_hours_to_deliver IS 'median hours from effective dispatch to delivery';
COMMENT ON COLUMN loyalty.sla_summary.issues IS 'issues of these orders opened so far';

-- Experiences: counted, delivered orders with a deadline, delivered at least
-- impact_window ago. Late: any issue of the order other than payment_pending
-- opened before delivery, or delivered after its deadline. Repeat: the
-- customer ordered again (a counted order) within impact_window after delivery.
-- WISMO contacts of an order: the customer's contacts with reason wismo from
-- the order until two days after its delivery.
CREATE FUNCTION loyalty.experience_impact_at(as_of timestamptz)
RETURNS TABLE (experience text, orders bigint, repeat_orders bigint, repeat_rate numeric, repeat_rate_low numeric,
               repeat_rate_high numeric, wismo_contacts bigint, wismo_per_100_orders numeric)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH st AS (SELECT * FROM loyalty._operations_settings()),
    x AS (
        SELECT s.order_ref, s.customer_id, s.ordered_at, s.delivered_at,
               (s.delivered_at > coalesce(s.delivery_due, 'infinity') OR iss.n > 0) AS late,
               iss.notified,
               EXISTS (SELECT 1 FROM loyalty.orders o2
                        WHERE o2.customer_id = s.customer_id AND o2.counted AND o2.order_ref <> s.order_ref
                          AND o2.ordered_at > s.ordered_at AND o2.ordered_at <= s.delivered_at + st.impact_window) AS repeated,
               (SELECT count(*) FROM loyalty.support_contacts c
                 WHERE c.customer_id = s.customer_id AND c.reason = 'wismo'
                   AND c.at >= s.ordered_at AND c.at <= s.delivered_at + interval '2 days') AS wismo
          FROM loyalty.order_stages_at(NULL) s
         CROSS JOIN st
         CROSS JOIN LATERAL (SELECT count(*) AS n, bool_or(i.notified_at IS NOT NULL) AS notified
                               FROM loyalty.order_issues i
                              WHERE i.order_ref = s.order_ref AND i.kind <> 'payment_pending'
                                AND i.opened_at <= s.delivered_at) iss
         WHERE s.counted AND s.delivered_at <= as_of - st.impact_window
           AND (s.delivery_due IS NOT NULL OR s.dispatch_due IS NOT NULL OR iss.n > 0)
    ), g AS (
        SELECT 'on_time' AS experience, 1 AS ord, x.* FROM x WHERE NOT x.late
        UNION ALL SELECT 'late', 2, x.* FROM x WHERE x.late
        UNION ALL SELECT 'late_notified', 3, x.* FROM x WHERE x.late AND x.notified
        UNION ALL SELECT 'late_not_notified', 4, x.* FROM x WHERE x.late AND NOT coalesce(x.notified, false)
    )
    SELECT e.experience, count(g.order_ref), count(*) FILTER (WHERE g.repeated),
           round(count(*) FILTER (WHERE g.repeated)::numeric / nullif(count(g.order_ref), 0), 4),
           round((loyalty._wilson(count(*) FILTER (WHERE g.repeated), count(g.order_ref)))[1]::numeric, 4),
           round((loyalty._wilson(count(*) FILTER (WHERE g.repeated), count(g.order_ref)))[2]::numeric, 4),
           coalesce(sum(g.wismo), 0)::bigint,
           round(100 * coalesce(sum(g.wismo), 0)::numeric / nullif(count(g.order_ref), 0), 1)
      FROM (VALUES ('on_time', 1), ('late', 2), ('late_notified', 3), ('late_not_notified', 4)) e(experience, ord)
      LEFT JOIN g ON g.experience = e.experience
     GROUP BY e.experience, e.ord
     ORDER BY e.ord
$$;
COMMENT ON FUNCTION loyalty.experience_impact_at(timestamptz) IS 'Repeat-purchase rate and "where is my order?" contacts after on-time and late experiences, as of a time';

CREATE VIEW loyalty.experience_impact AS SELECT * FROM loyalty.experience_impact_at(pg_catalog.now());
COMMENT ON VIEW loyalty.experience_impact IS
'What lateness costs the shop: repeat-purchase rate after an on-time vs a late delivery (95% Wilson intervals), and WISMO contacts per 100 orders with and without a proactive notice';
COMMENT ON COLUMN loyalty.experience_impact.repeat_rate IS 'repeat_orders / orders';
COMMENT ON COLUMN loyalty.experience_impact.wismo_contacts IS 'support contacts with reason wismo from ordering to two days after delivery';
COMMENT ON COLUMN loyalty.experience_impact.experience IS 'on_time; late (delivered after its deadline, or any issue before delivery); late_notified / late_not_notified: late, split by whether an issue was notified';
COMMENT ON COLUMN loyalty.experience_impact.orders IS 'delivered counted orders with a deadline, delivered at least impact_window ago';
COMMENT ON COLUMN loyalty.experience_impact.repeat_orders IS 'of these, orders followed by another counted order of the customer within impact_window of delivery';
COMMENT ON COLUMN loyalty.experience_impact.repeat_rate_low IS '95% Wilson score interval, lower end';
COMMENT ON COLUMN loyalty.experience_impact.repeat_rate_high IS '95% Wilson score interval, upper end';
COMMENT ON COLUMN loyalty.experience_impact.wismo_per_100_orders IS 'support contacts with reason wismo from ordering to two days after delivery, per 100 orders';

-- ---------------------------------------------------------------- privileges

-- (90_grants.sql revokes PUBLIC and grants loyalty_admin on everything above)
GRANT EXECUTE ON FUNCTION loyalty.record_fulfilment(text, timestamptz, timestamptz, timestamptz, timestamptz, timestamptz, date, timestamptz),
                          loyalty.record_shipment_event(text, text, timestamptz, text, jsonb),
                          loyalty.record_return(text, timestamptz, timestamptz, timestamptz, text),
                          loyalty.record_contact(text, text, timestamptz),
                          loyalty.issue_notified(bigint, timestamptz),
                          loyalty.order_timeline(text) TO loyalty_app;
-- one order's carrier details and return reason can name the customer: staff only
GRANT EXECUTE ON FUNCTION loyalty.order_timeline(text) TO loyalty_support;
GRANT SELECT ON loyalty.open_issues, loyalty.sla_summary, loyalty.experience_impact, loyalty.order_stages,
                loyalty.order_issues, loyalty.operations_settings, loyalty.business_holidays,
                loyalty.recovery_rules, loyalty.recovery_grants TO loyalty_reader;
GRANT EXECUTE ON FUNCTION loyalty.open_issues_at(timestamptz), loyalty.sla_summary_at(timestamptz),
                          loyalty.experience_impact_at(timestamptz), loyalty.order_stages_at(text[]),
                          loyalty.issues_as_of(timestamptz) TO loyalty_reader;
GRANT SELECT ON loyalty.open_issues TO loyalty_app;

SELECT pg_catalog.pg_extension_config_dump('loyalty.operations_settings', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.business_holidays', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.order_lifecycle', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.order_promises', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.shipment_statuses', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('loyalty.shipment_events', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.order_returns', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.support_contacts', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.operations_changes', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.order_issues', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.recovery_rules', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.recovery_rules_rule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.recovery_grants', '');
