-- Tier overrides (issue 14): staff give a tier for a time with a reason
-- (loyalty.set_tier_override / end_tier_override), service recovery gives
-- one for an order issue (recovery_rules.tier / tier_up, tier_for). The
-- customer has at least that tier until it ends, then the tier spend earns
-- returns; both ends are in tier_history; tier_changed campaigns do not
-- congratulate them; notices say what recovery gave.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
SET TIME ZONE 'UTC';
\set SHOW_CONTEXT never

CREATE FUNCTION pg_temp.err(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; hint text;
BEGIN
    EXECUTE stmt;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || coalesce(' (hint: ' || nullif(hint, '') || ')', '');
END $$;

INSERT INTO loyalty.tiers (tier, min_spend, earn_multiplier) VALUES
    ('Silver', 250, 1.25), ('Gold', 1000, 1.5), ('Platinum', 5000, 2);
SELECT now() AS t0 \gset
-- ann Silver, bob none, cy Gold, dee Silver (by spend in the last 12 months)
SELECT count(loyalty.record_order(c, c || '-1', a, :'t0'::timestamptz - interval '10 days'))
  FROM (VALUES ('ann', 300), ('bob', 50), ('cy', 1200), ('dee', 400)) v(c, a);
SELECT loyalty.recompute_tiers(:'t0') >= 0 AS evaluated;
SELECT customer_id, tier, earned_tier, override_id FROM loyalty.customer_tiers ORDER BY customer_id;

-- ---------------------------------------------------------------- staff
-- bob gets Gold for 90 days: in force at once, earning at Gold's rate
SELECT o.override_id AS bob_override, o.tier, o.source, o.ends_at = :'t0'::timestamptz + interval '90 days' AS ends_90d,
       o.reason, o.created_by = current_user AS by_me
  FROM loyalty.set_tier_override('bob', 'Gold', :'t0'::timestamptz + interval '90 days', 'gift arrived damaged, ticket 4711') o \gset
SELECT :bob_override IS NOT NULL AS created, :'tier' AS tier, :'source' AS source, :'ends_90d' AS ends_90d;
SELECT tier, earned_tier, override_id = :bob_override AS this_override, override_until = :'t0'::timestamptz + interval '90 days' AS until
  FROM loyalty.customer_tiers WHERE customer_id = 'bob';
SELECT detail ->> 'tier' AS tier, detail ->> 'tier_multiplier' AS multiplier FROM loyalty.order_points('bob', 100);
-- a replay returns the first and writes nothing
SELECT (loyalty.set_tier_override('bob', 'Gold', :'t0'::timestamptz + interval '90 days', 'gift arrived damaged, ticket 4711')).override_id = :bob_override AS same;
SELECT count(*) AS bob_overrides FROM loyalty.tier_overrides WHERE customer_id = 'bob';
-- the daily job honours it while it runs, and ends it at its end (dated then)
SELECT loyalty.recompute_tiers(:'t0'::timestamptz + interval '89 days') AS changes_day_89;
SELECT tier FROM loyalty.customer_tiers WHERE customer_id = 'bob';
SELECT loyalty.recompute_tiers(:'t0'::timestamptz + interval '91 days') AS changes_day_91;
SELECT tier, earned_tier, override_id, override_until FROM loyalty.customer_tiers WHERE customer_id = 'bob';
SELECT from_tier, to_tier, reason, override_id = :bob_override AS this_override,
       CASE WHEN reason = 'override' THEN changed_at BETWEEN :'t0' AND now() ELSE changed_at = :'t0'::timestamptz + interval '90 days' END AS dated
  FROM loyalty.tier_history WHERE customer_id = 'bob' ORDER BY change_id;

-- ann (Silver) gets Gold, staff end it early: Silver comes back; ending again changes nothing
SELECT (loyalty.set_tier_override('ann', 'Gold', now() + interval '30 days', 'VIP event')).override_id AS ann_override \gset
SELECT tier, earned_tier FROM loyalty.customer_tiers WHERE customer_id = 'ann';
SELECT ended_at IS NOT NULL AS ended, end_reason FROM loyalty.end_tier_override(:ann_override, 'given by mistake');
SELECT tier, earned_tier, override_id FROM loyalty.customer_tiers WHERE customer_id = 'ann';
SELECT end_reason FROM loyalty.end_tier_override(:ann_override, 'again');
SELECT from_tier, to_tier, reason, override_id = :ann_override AS this_override
  FROM loyalty.tier_history WHERE customer_id = 'ann' ORDER BY change_id;

-- an override never lowers a tier: cy (Gold) given Silver stays Gold
SELECT (loyalty.set_tier_override('cy', 'Silver', now() + interval '30 days', 'test')).tier AS given;
SELECT tier, earned_tier FROM loyalty.customer_tiers WHERE customer_id = 'cy';

-- dee (Silver) given Platinum earns Gold meanwhile: Platinum in force, Gold
-- kept beside it, and Gold when the override ends
SELECT (loyalty.set_tier_override('dee', 'Platinum', now() + interval '30 days', 'apology')).tier AS given;
SELECT loyalty.record_order('dee', 'dee-2', 700, now() - interval '1 day') > 0 AS ordered;
SELECT tier, earned_tier FROM loyalty.customer_tiers WHERE customer_id = 'dee';
SELECT loyalty.recompute_tiers(now() + interval '31 days') >= 1 AS changed;
SELECT tier, earned_tier, override_id FROM loyalty.customer_tiers WHERE customer_id = 'dee';
SELECT from_tier, to_tier, reason FROM loyalty.tier_history WHERE customer_id = 'dee' ORDER BY change_id;

-- bad input: an error with a code and a hint, and nothing written
SELECT count(*) AS overrides_before FROM loyalty.tier_overrides \gset
SELECT pg_temp.err($$SELECT loyalty.set_tier_override(NULL, 'Gold', now() + interval '1 day', 'x')$$);
SELECT pg_temp.err($$SELECT loyalty.set_tier_override(' ', 'Gold', now() + interval '1 day', 'x')$$);
SELECT pg_temp.err($$SELECT loyalty.set_tier_override('zed', 'Gold', now() + interval '1 day', 'x')$$);
SELECT pg_temp.err($$SELECT loyalty.set_tier_override('ann', 'Diamond', now() + interval '1 day', 'x')$$);
SELECT pg_temp.err($$SELECT loyalty.set_tier_override('ann', NULL, now() + interval '1 day', 'x')$$);
SELECT pg_temp.err($$SELECT loyalty.set_tier_override('ann', 'Gold', now() - interval '1 day', 'x')$$);
SELECT pg_temp.err($$SELECT loyalty.set_tier_override('ann', 'Gold', NULL, 'x')$$);
SELECT pg_temp.err($$SELECT loyalty.set_tier_override('ann', 'Gold', 'infinity', 'x')$$);
SELECT pg_temp.err($$SELECT loyalty.set_tier_override('ann', 'Gold', now() + interval '1 day', NULL)$$);
SELECT pg_temp.err($$SELECT loyalty.set_tier_override('ann', 'Gold', now() + interval '1 day', '  ')$$);
SELECT pg_temp.err($$SELECT loyalty.set_tier_override('ann', 'Gold', now() + interval '1 day', repeat('x', 501))$$);
SELECT pg_temp.err($$SELECT loyalty.end_tier_override(-1, 'x')$$);
SELECT pg_temp.err(format('SELECT loyalty.end_tier_override(%s, %L)', :bob_override, ''));
SELECT count(*) = :overrides_before AS nothing_written FROM loyalty.tier_overrides;
SELECT tier FROM loyalty.customer_tiers WHERE customer_id = 'ann';

-- rights: staff (support) give, end and read overrides; BI reads the
-- history (no free text) but not the overrides; the app cannot give tiers
SET ROLE loyalty_support;
SELECT (loyalty.set_tier_override('ann', 'Gold', now() + interval '7 days', 'support: late parcel')).tier AS support_gives;
SELECT count(*) > 0 AS support_reads FROM loyalty.tier_overrides;
RESET ROLE;
SET ROLE loyalty_reader;
SELECT pg_temp.err($$SELECT loyalty.set_tier_override('ann', 'Gold', now() + interval '7 days', 'x')$$);
SELECT pg_temp.err($$SELECT count(*) FROM loyalty.tier_overrides$$);
SELECT count(*) > 0 AS reader_reads_history FROM loyalty.tier_history WHERE reason = 'override';
RESET ROLE;
SET ROLE loyalty_app;
SELECT pg_temp.err($$SELECT loyalty.end_tier_override(1, 'x')$$);
RESET ROLE;

-- journeys: a tier_changed campaign (any direction) congratulates an
-- earned upgrade, never an override starting or ending
INSERT INTO loyalty.campaigns (name, kind, channel, template, params, active)
VALUES ('any tier change', 'tier_changed', 'email', 'tier', '{"direction": "any"}', true);
SELECT loyalty.record_order('eve', 'eve-1', 100, now() - interval '2 hours') > 0 AS eve_below_silver;
SELECT loyalty.record_order('eve', 'eve-2', 200, now() - interval '1 hour') > 0 AS eve_reaches_silver;
SELECT h.customer_id, h.reason, count(DISTINCT d.occasion) AS occasions
  FROM loyalty.tier_history h
  LEFT JOIN (SELECT * FROM loyalty.due_messages_at(now() + interval '1 hour')
             UNION ALL
             SELECT * FROM loyalty.due_messages_at(now() + interval '95 days')) d
         ON d.kind = 'tier_changed' AND d.occasion = 'tier:' || h.change_id
 WHERE h.reason <> 'assigned'
 GROUP BY 1, 2 ORDER BY 1, 2;

-- ---------------------------------------------------------------- service recovery
-- fay Silver, gus none, hal Platinum; each has an order not dispatched by
-- its deadline (t0 - 3 days); ivy's was dispatched two hours late
SELECT count(loyalty.record_order(c, c || '-o', a, :'t0'::timestamptz - interval '5 days'))
  FROM (VALUES ('fay', 300), ('gus', 40), ('hal', 6000), ('ivy', 30)) v(c, a);
SELECT loyalty.recompute_tiers(:'t0') >= 0 AS evaluated;
SELECT count(loyalty.record_fulfilment(c || '-o', paid_at => :'t0'::timestamptz - interval '5 days',
                                       dispatch_by => :'t0'::timestamptz - interval '3 days'))
  FROM unnest(ARRAY['fay', 'gus', 'hal', 'ivy']) c;
SELECT (loyalty.record_fulfilment('ivy-o', dispatched_at => :'t0'::timestamptz - interval '3 days' + interval '2 hours')).order_ref;
-- after a day late: one tier up for 90 days; after two days: 50 points and Gold for 30 days
INSERT INTO loyalty.recovery_rules (kind, after, tier_up, tier_for, reason)
VALUES ('late_dispatch', '1 day', true, '90 days', 'sorry: one tier up');
INSERT INTO loyalty.recovery_rules (kind, after, points, tier, tier_for, reason)
VALUES ('late_dispatch', '2 days', 50, 'Gold', '30 days', 'sorry: Gold for a month');
-- a rule must give something, and a tier for a time
SELECT pg_temp.err($$INSERT INTO loyalty.recovery_rules (kind, reason) VALUES ('late_dispatch', 'nothing')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.recovery_rules (kind, tier, reason) VALUES ('late_dispatch', 'Gold', 'no end')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.recovery_rules (kind, tier, tier_up, tier_for, reason) VALUES ('late_dispatch', 'Gold', true, '9 days', 'both')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.recovery_rules (kind, points, tier_for, reason) VALUES ('late_dispatch', 5, '9 days', 'no tier')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.recovery_rules (kind, tier, tier_for, reason) VALUES ('late_dispatch', 'Diamond', '9 days', 'unknown')$$);

SELECT opened, resolved FROM loyalty.scan_operations(:'t0');
SELECT o.customer_id, o.tier, o.source, r.after AS rule_after, o.starts_at = i.opened_at + r.after AS from_rule_time,
       o.ends_at - o.starts_at AS lasts, o.reason
  FROM loyalty.tier_overrides o
  JOIN loyalty.recovery_rules r USING (rule_id)
  JOIN loyalty.order_issues i ON i.issue_id = o.issue_id
 ORDER BY o.customer_id, r.after;
SELECT customer_id, points FROM loyalty.recovery_grants ORDER BY customer_id;
SELECT customer_id, tier, earned_tier FROM loyalty.customer_tiers WHERE customer_id IN ('fay', 'gus', 'hal', 'ivy') ORDER BY 1;
SELECT customer_id, from_tier, to_tier, reason FROM loyalty.tier_history
 WHERE customer_id IN ('fay', 'gus', 'hal', 'ivy') AND reason <> 'assigned' ORDER BY customer_id, change_id;
-- once per order and issue kind: rescans, a catch-up and a recomputation add nothing
SELECT count(*) AS overrides, (SELECT count(*) FROM loyalty.tier_history) AS history FROM loyalty.tier_overrides \gset
SELECT opened FROM loyalty.scan_operations(:'t0'::timestamptz + interval '1 hour');
SELECT stall_after FROM loyalty.configure_operations(stall_after => '5 days');
SELECT opened FROM loyalty.scan_operations(:'t0'::timestamptz + interval '2 hours');
SELECT count(*) = :overrides AS no_new_overrides, (SELECT count(*) FROM loyalty.tier_history) = :history AS no_new_history
  FROM loyalty.tier_overrides;
-- gus: Gold for 30 days, then Silver (the 90 days) until day 91, then none
SELECT loyalty.recompute_tiers(:'t0' ::timestamptz + interval '40 days') >= 1 AS changed;
SELECT tier FROM loyalty.customer_tiers WHERE customer_id = 'gus';
SELECT loyalty.recompute_tiers(:'t0' ::timestamptz + interval '100 days') >= 1 AS changed;
SELECT tier, override_id FROM loyalty.customer_tiers WHERE customer_id = 'gus';
SELECT from_tier, to_tier, reason, changed_at - :'t0'::timestamptz AS after_t0
  FROM loyalty.tier_history WHERE customer_id = 'gus' AND reason <> 'assigned' ORDER BY change_id;

-- the notice says what recovery gave: all points, and the highest tier
-- given with its end (fay: Gold for 90 days from one tier up; gus: Gold for
-- 30 days, above the Silver of one tier up); ivy's issue is resolved
INSERT INTO loyalty.campaigns (name, kind, channel, template, params, active, active_from, valid_for)
VALUES ('late', 'order_delayed', 'email', 'order_late', '{"remind_after_hours": 72}', true,
        :'t0'::timestamptz - interval '10 days', '7 days');
SELECT customer_id, occasion, payload -> 'occasion' -> 'recovery' ->> 'points' AS points,
       payload -> 'occasion' -> 'recovery' ->> 'tier' AS tier,
       (payload -> 'occasion' -> 'recovery' ->> 'tier_until')::timestamptz - :'t0'::timestamptz AS until_after_t0
  FROM loyalty.due_messages_at(:'t0')
 WHERE kind = 'order_delayed' AND customer_id IN ('fay', 'gus', 'ivy')
 ORDER BY customer_id, occasion;
