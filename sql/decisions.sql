-- Decisions agree with their explanations (issue 12): for every decision
-- written for a shop with one-time buyers, repeat buyers and customers never
-- seen, the payload's why shows the values that decided and the rule holds;
-- hand-computed P(alive) for a few customers; BG/NBD's boundary limit; one
-- definition of the model inputs; first tier assignments and contradicting
-- messages; RFM bins and segment rules; settings tables analysed.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
SET TIME ZONE 'UTC';
\set SHOW_CONTEXT never

-- settings tables are analysed at install (no JIT from guessed row counts)
SELECT count(*) AS unanalysed_settings
  FROM pg_class c
 WHERE c.relnamespace = 'loyalty'::regnamespace AND c.reltuples < 0
   AND c.relname IN ('rfm_config', 'segment_rules', 'model_settings', 'rewards_settings', 'tiers', 'earn_rules',
                     'outbox_settings', 'journey_settings', 'journey_report_settings', 'campaigns');

-- ---- a shop as of 1 September 2026 (the clock of this test)
SELECT quiet_start = quiet_end AS no_quiet_hours
  FROM loyalty.configure_journeys(cap_messages => 100, quiet_start => '00:00', quiet_end => '00:00');
UPDATE loyalty.campaigns SET holdout_share = 0, cooldown = '0', active_from = '2026-08-01', valid_for = '400 days';
CREATE FUNCTION pg_temp.customer(p_id text) RETURNS void LANGUAGE sql AS $$
    SELECT loyalty.upsert_customer(p_id, 'Name ' || p_id, p_id || '@example.com');
    SELECT loyalty.set_consent(p_id, 'email', true, 'test');
$$;
CREATE FUNCTION pg_temp.orders(p_customer text, VARIADIC p_at timestamptz[]) RETURNS void LANGUAGE sql AS $$
    SELECT pg_temp.customer(p_customer);
    SELECT loyalty.record_order(p_customer, p_customer || '-' || i, 40, t) FROM unnest(p_at) WITH ORDINALITY u(t, i);
$$;
-- hand-computed customers (as of 2026-09-01; shop gap 20 days, BG/NBD in days below)
SELECT pg_temp.orders('once_gone', '2026-02-13 10:00');                        -- one order 200 days ago
SELECT pg_temp.orders('once_lastweek', '2026-08-25 10:00');                    -- one order 7 days ago
SELECT pg_temp.orders('twice_17', '2026-08-12 10:00', '2026-08-15 10:00');     -- 3 days apart, last 17 days ago
SELECT pg_temp.orders('rep_gone', '2026-01-01 10:00', '2026-02-01 10:00', '2026-03-01 10:00');  -- x = 2, t_x = 59, T = 243
-- and many more: one-time and repeat buyers over a year (seeded), and
-- customers never seen (profiles, no orders)
SELECT setseed(0.12);
SELECT count(pg_temp.orders('c' || i,
                            VARIADIC ARRAY(SELECT timestamptz '2025-09-01 10:00' + (s + k * g) * interval '1 day'
                                             FROM generate_series(0, n - 1) k WHERE s + k * g < 365)))
  FROM (SELECT i, floor(random() * 360)::int AS s, 3 + floor(random() * 60)::int AS g,
               CASE WHEN random() < 0.5 THEN 1 ELSE 2 + floor(random() * 6)::int END AS n
          FROM generate_series(1, 160) i) c;
SELECT count(pg_temp.customer('never' || i)) AS never_seen FROM generate_series(1, 20) i;
SELECT count(*) FILTER (WHERE purchase_days = 1) > 50 AS one_time_buyers, count(*) FILTER (WHERE purchase_days > 1) > 50 AS repeat_buyers
  FROM loyalty.customer_state;
-- the models in force, written as a fit would (deterministic here): BG/NBD
-- in days (CDNOW's weekly fit rescaled) and the heuristic's shop gap
INSERT INTO loyalty.model_fits (model, status, as_of, customers, params)
VALUES ('bgnbd', 'fitted', '2026-09-01', 170, '{"r": 0.2426, "alpha": 30.9, "a": 0.7929, "b": 2.4259}'),
       ('heuristic', 'fitted', '2026-09-01', 170, '{"shop_gap": 20}');
SELECT model, r, shop_gap FROM loyalty.current_model;
-- tiers, assigned for the first time now: no "new tier" message for that
INSERT INTO loyalty.tiers (tier, min_spend) VALUES ('Silver', 100), ('Gold', 200);
SELECT loyalty.recompute_tiers('2026-09-01 11:00') >= 0 AS tiers_computed;
SELECT reason, count(*) > 0 AS some FROM loyalty.tier_history GROUP BY reason ORDER BY reason;

-- every campaign kind read from customer data, switched on on 1 August
UPDATE loyalty.campaigns SET active = kind IN ('welcome', 'post_purchase', 'repurchase_reminder', 'win_back',
                                               'tier_changed', 'milestone');
UPDATE loyalty.campaigns SET params = '{"orders": 3}' WHERE kind = 'milestone';
UPDATE loyalty.campaigns SET activated_at = active_from WHERE active;
SELECT name, params FROM loyalty.campaigns WHERE kind = 'win_back';
SELECT count(*) > 0 AS wrote FROM loyalty.enqueue_due('2026-09-01 12:00');

-- ---- the rule holds for EVERY written decision that makes a message
CREATE TEMP VIEW written AS
SELECT c.kind, o.customer_id, o.status, o.payload, o.payload->'occasion' AS occ, o.payload->'why' AS why,
       (o.payload #>> '{why,occasion_at}')::timestamptz AS occasion_at
  FROM loyalty.outbox o JOIN loyalty.campaigns c USING (campaign_id)
 WHERE o.payload ? 'why';
SELECT kind, count(*) > 0 AS written FROM written GROUP BY kind ORDER BY kind;
-- win_back: P(alive) at the decision time below the threshold, under the
-- model named, and at least min_days_since_last days since the last order
SELECT count(*) AS win_backs,
       count(*) FILTER (WHERE (occ->>'p_alive')::float8 < (why #>> '{rule,p_alive_below}')::float8
                          AND occ->>'decided_by' = 'p_alive_below'
                          AND occ->>'model' IN ('bgnbd', 'heuristic')
                          AND (occ->>'p_alive')::float8 = (why #>> '{scores,p_alive}')::float8
                          AND occ->>'model' = why #>> '{scores,model}'
                          AND (occ->>'days_since_last_order')::int >= (why #>> '{rule,min_days_since_last}')::int
                          AND occasion_at >= (occ->>'last_order_at')::timestamptz
                                             + (why #>> '{rule,min_days_since_last}')::int * interval '1 day') AS rule_holds,
       count(*) FILTER (WHERE occ->>'model' = 'heuristic') > 0 AS some_one_time_buyers,
       count(*) FILTER (WHERE occ->>'model' = 'bgnbd') > 0 AS some_repeat_buyers
  FROM written WHERE kind = 'win_back';
-- one-time buyers are judged by the heuristic, repeat buyers by BG/NBD
SELECT count(*) AS wrong_model
  FROM written w JOIN loyalty.customer_state s USING (customer_id)
 WHERE w.kind = 'win_back' AND (w.occ->>'model' = 'bgnbd') <> (s.purchase_days > 1);
-- customers never seen have no decisions
SELECT count(*) AS never_seen_decided FROM loyalty.outbox WHERE customer_id LIKE 'never%';
-- welcome: delay_hours after the first order; post_purchase: days after the order
SELECT kind, count(*) AS rows,
       count(*) FILTER (WHERE occasion_at = (occ->>'ordered_at')::timestamptz
                                            + CASE kind WHEN 'welcome' THEN (why #>> '{rule,delay_hours}')::float8 * interval '1 hour'
                                                        ELSE (why #>> '{rule,days}')::int * interval '1 day' END) AS rule_holds
  FROM written WHERE kind IN ('welcome', 'post_purchase') GROUP BY kind ORDER BY kind;
-- repurchase_reminder: the first UTC midnight after last order + factor * typical gap
SELECT count(*) AS rows,
       count(*) FILTER (WHERE occasion_at >= (occ->>'last_order_at')::timestamptz
                                             + (why #>> '{rule,factor}')::float8 * (occ->>'typical_days')::float8 * interval '1 day'
                                             - interval '1 hour'    -- typical_days is rounded to 0.1 day
                          AND occasion_at < (occ->>'last_order_at')::timestamptz
                                            + (why #>> '{rule,factor}')::float8 * (occ->>'typical_days')::float8 * interval '1 day'
                                            + interval '1 day 1 hour'
                          AND (occ->>'orders')::int >= (why #>> '{rule,min_orders}')::int) AS rule_holds
  FROM written WHERE kind = 'repurchase_reminder';
-- milestone: the order that is the customer's Nth
SELECT count(*) AS rows, count(*) FILTER (WHERE (occ->>'orders')::int = (why #>> '{rule,orders}')::int) AS rule_holds
  FROM written WHERE kind = 'milestone';
-- tier_changed: first assignments are not upgrades: nothing written
SELECT count(*) AS tier_messages FROM written WHERE kind = 'tier_changed';
-- the points of every payload: available and pending, never negative
SELECT count(*) AS bad_points FROM written
 WHERE NOT ((payload->>'points')::bigint >= 0 AND (payload->>'points_pending')::bigint >= 0);

-- ---- hand-computed customers
-- once_gone: one order 200 days ago, shop gap 20: P(alive) = exp(-200/20) = 4.5e-5 < 0.3: won back
-- once_lastweek: 7 days ago: exp(-7/20) = 0.7047: not won back (and within min_days_since_last)
-- twice_17: gap (3 + 20)/2 = 11.5 days, 17 days ago: exp(-17/11.5) = 0.2281 < 0.3, but 17 < 30 days: not won back
-- rep_gone: BG/NBD, x = 2, t_x = 59, T = 243 days:
--   1 / (1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)) = 1 / (1 + 0.7929/3.4259 (273.9/89.9)^2.2426)
SELECT customer_id, occ->>'model' AS model, (occ->>'p_alive')::numeric AS p_alive
  FROM written WHERE kind = 'win_back' AND customer_id IN ('once_gone', 'once_lastweek', 'twice_17', 'rep_gone') ORDER BY 1;
SELECT (SELECT (occ->>'p_alive')::numeric FROM written WHERE kind = 'win_back' AND customer_id = 'once_gone')
         = round(exp(-200.0 / 20)::numeric, 4) AS once_gone_hand,
       (SELECT (occ->>'p_alive')::numeric FROM written WHERE kind = 'win_back' AND customer_id = 'rep_gone')
         = round((1 / (1 + 0.7929 / 3.4259 * power(273.9 / 89.9, 2.2426)))::numeric, 4) AS rep_gone_hand;
SELECT round(loyalty._p_alive(m.model, 1, '2026-08-25 10:00', '2026-08-25 10:00', '2026-09-01 12:00',
                              m.r, m.alpha, m.a, m.b, m.shop_gap)::numeric, 4) = round(exp(-7.0 / 20)::numeric, 4) AS once_lastweek_hand
  FROM loyalty.current_model m;
-- twice_17 under the heuristic (a shop without a BG/NBD fit): with the shop
-- gap of 20 days P(alive) says lapsed on day 18 (exp(-17/11.5) = 0.2281), but
-- the win-back waits for min_days_since_last; with a shop gap of 60 days the
-- shrunk gap is (3 + 60)/2 = 31.5 and P(alive) = exp(-17/31.5) = 0.5830
SELECT round(loyalty._p_alive('heuristic', 2, '2026-08-12 10:00', '2026-08-15 10:00', '2026-09-01 12:00',
                              NULL, NULL, NULL, NULL, 20)::numeric, 4) = round(exp(-17.0 / 11.5)::numeric, 4) AS twice_17_hand,
       loyalty._lapse_day('heuristic', 2, '2026-08-12 10:00', '2026-08-15 10:00', 0.3, NULL, NULL, NULL, NULL, 20) AS lapse_day,
       loyalty._win_back_at(loyalty._lapse_day('heuristic', 2, '2026-08-12 10:00', '2026-08-15 10:00', 0.3, NULL, NULL, NULL, NULL, 20),
                            '2026-08-15 10:00', 30, '2026-08-01') AS win_back_at,
       round(loyalty._p_alive('heuristic', 2, '2026-08-12 10:00', '2026-08-15 10:00', '2026-09-01 12:00',
                              NULL, NULL, NULL, NULL, 60)::numeric, 4) = round(exp(-17.0 / 31.5)::numeric, 4) AS twice_17_shop_gap_60;
-- no lapse is no occasion (the bug of issue 12: greatest(NULL, switch-on) was the switch-on)
SELECT loyalty._win_back_at(NULL, '2026-08-15 10:00', 30, '2026-08-01') IS NULL AS no_lapse_no_occasion;
\set VERBOSITY terse
UPDATE loyalty.campaigns SET params = params || '{"min_days_since_last": 400}' WHERE kind = 'win_back';
\set VERBOSITY default
SELECT params->>'min_days_since_last' AS min_days_since_last FROM loyalty.campaigns WHERE kind = 'win_back';

-- ---- contradicting messages in one run: a tier upgrade gives way to a win-back
-- (once_gone is won back above; a later run finds an upgrade and a new lapse)
SELECT pg_temp.orders('both', '2026-01-10 10:00');
INSERT INTO loyalty.tier_history (customer_id, from_tier, to_tier, qualifying_spend, changed_at, reason)
VALUES ('both', 'Silver', 'Gold', 250, '2026-09-01 13:00', 'upgrade');
SELECT d.campaign, d.decision, d.reason
  FROM loyalty.due_messages_at('2026-09-01 14:00') d WHERE d.customer_id = 'both' ORDER BY d.campaign;
SELECT count(*) > 0 AS wrote FROM loyalty.enqueue_due('2026-09-01 14:00');
SELECT c.kind, o.status FROM loyalty.outbox o JOIN loyalty.campaigns c USING (campaign_id) WHERE o.customer_id = 'both' ORDER BY 1;

-- ---- one definition of the inputs; a future-dated order is clamped
SELECT pg_temp.orders('future', '2026-08-30 10:00', '2026-09-02 09:00');   -- the second is after as_of
SELECT x, t_x, t, days_since_last FROM loyalty.model_inputs_at('2026-09-01 12:00') WHERE customer_id = 'future';
SELECT loyalty._p_alive(m.model, 2, '2026-08-30 10:00', '2026-09-02 09:00', '2026-09-01 12:00', m.r, m.alpha, m.a, m.b, m.shop_gap)
         BETWEEN 0 AND 1 AS p_alive_in_range,
       loyalty._p_alive('heuristic', 2, '2026-08-30 10:00', '2026-09-02 09:00', '2026-09-01 12:00', NULL, NULL, NULL, NULL, 20) = 1
         AS heuristic_one_at_the_order
  FROM loyalty.current_model m;

-- ---- BG/NBD on its boundary: dropout without heterogeneity. Every customer
-- drops out with probability 0.3 after each purchase, rates vary: the
-- likelihood rises towards a, b -> infinity with a/(a+b) -> 0.3
TRUNCATE loyalty.orders, loyalty.refunds, loyalty.customer_state, loyalty.score_queue, loyalty.customer_rfm,
         loyalty.events, loyalty.rfm_bounds, loyalty.model_fits, loyalty.stored_scores, loyalty.model_choice;
SELECT setseed(0.5);
CREATE TEMP TABLE sim AS
SELECT i, 30 + floor(random() * 700)::int AS first_days_ago, -ln(1 - random()) * 0.05 + 0.005 AS rate
  FROM generate_series(1, 600) i;
CREATE TEMP TABLE sim_orders AS
WITH RECURSIVE o(i, k, days_ago, alive) AS (
    SELECT i, 0, first_days_ago::float8, true FROM sim
    UNION ALL
    SELECT o.i, o.k + 1, o.days_ago + ln(1 - random()) / s.rate, random() >= 0.3
      FROM o JOIN sim s USING (i)
     WHERE o.alive AND o.k < 80 AND o.days_ago + ln(1 - random()) / s.rate > 0
)
SELECT i, k, days_ago FROM o WHERE days_ago > 0;
SELECT count(*) > 0 AS recorded FROM (
    SELECT loyalty.record_order('s' || i, 's' || i || '-' || k, 30, now() - round(days_ago) * interval '1 day')
      FROM sim_orders ORDER BY i, k) s;
SELECT bgnbd FROM loyalty.refresh();
SELECT model, status, (params->>'limit')::boolean AS on_boundary, round((params->>'p')::numeric, 1) AS p,
       note LIKE 'maximum on the boundary%' AS noted
  FROM loyalty.model_fits WHERE model = 'bgnbd';
-- scored as the limit when BG/NBD decides (the holdout comparison may prefer
-- the heuristic; here BG/NBD is chosen by hand to check the limit's scores)
UPDATE loyalty.model_choice SET model = 'bgnbd';
SELECT model FROM loyalty.current_model;
SELECT count(*) > 0 AS rescored FROM (SELECT loyalty._store_scores(now(), NULL)) s;
SELECT s.model, count(*) > 0 AS customers FROM loyalty.customer_scores s GROUP BY 1 ORDER BY 1;
-- the limit in closed form agrees with BG/NBD at the fitted (huge) a and b
SELECT count(*) AS disagree
  FROM loyalty.customer_scores s JOIN loyalty.model_inputs i USING (customer_id) CROSS JOIN loyalty.current_model m
 WHERE s.model = 'bgnbd_limit'
   AND (abs(s.p_alive - loyalty.bgnbd_p_alive(i.x, i.t_x, i.t, m.r, m.alpha, m.a, m.b)) > 1e-6
        OR abs(s.p_alive - 1 / (1 + (m.a / (m.a + m.b)) / (1 - m.a / (m.a + m.b))
                                    * power((m.alpha + i.t) / (m.alpha + i.t_x), m.r + i.x))) > 1e-9);
-- expected purchases of the limit: between 0 and the horizon's worth at the customer's rate, finite
SELECT bool_and(expected_purchases_90d >= 0 AND expected_purchases_90d < 90) AS expected_ok FROM loyalty.customer_scores;
-- the lapse day of the limit (closed form) agrees with a day-by-day search
SELECT count(*) AS lapse_disagree
  FROM loyalty.customer_state s CROSS JOIN loyalty.current_model m
 WHERE s.purchase_days > 1
   AND loyalty._lapse_day('bgnbd_limit', s.purchase_days, s.first_order_at, s.last_order_at, 0.3, m.r, m.alpha, m.a, m.b, m.shop_gap)
       IS DISTINCT FROM
       loyalty._lapse_search('bgnbd_limit', s.purchase_days, s.first_order_at, s.last_order_at, 0.3, m.r, m.alpha, m.a, m.b, m.shop_gap);

-- ---- the holdout comparison: every enabled model, the best decides
SELECT loyalty._choose_model(true) IN ('bgnbd', 'heuristic') AS chosen;
SELECT ch.model = (SELECT k FROM jsonb_each(ch.comparison) e(k, v) WHERE (v->>'usable')::boolean
                    ORDER BY (v->>'mae')::float8, k = 'heuristic' DESC LIMIT 1) AS lowest_mae_chosen,
       ch.comparison ?& ARRAY['bgnbd', 'heuristic'] AS both_compared
  FROM loyalty.model_choice ch;
SELECT (SELECT model FROM loyalty.current_model) IN ('bgnbd_limit', 'heuristic') AS current_follows_choice;
\set VERBOSITY terse
SELECT loyalty.configure_models(models => '{pareto_nbd}');   -- the heuristic is always one of them
SELECT loyalty.configure_models(models => '{bogus}');
\set VERBOSITY default

-- ---- all four models fitted and compared on the holdout; the chosen one
-- decides, and MBG/NBD and Pareto/NBD judge one-time buyers themselves.
-- (This shop is on the boundary for MBG/NBD too: fitted as its limit.)
SELECT models FROM loyalty.configure_models(models => '{bgnbd,mbgnbd,pareto_nbd,heuristic}');
SELECT bgnbd_status IS NOT NULL AS fitted FROM loyalty.fit_models();
SELECT model, string_agg(DISTINCT status, ',') AS statuses, count(*) FILTER (WHERE status = 'fitted') > 0 AS has_fit
  FROM loyalty.model_fits WHERE model IN ('mbgnbd', 'pareto_nbd') GROUP BY model ORDER BY model;
SELECT array_agg(DISTINCT model ORDER BY model) AS compared FROM loyalty.model_validation;
SELECT loyalty._choose_model(true) IS NOT NULL AS chosen;
SELECT ch.model = (SELECT k FROM jsonb_each(ch.comparison) e(k, v) WHERE (v->>'usable')::boolean
                    ORDER BY (v->>'mae')::float8, k = 'heuristic' DESC LIMIT 1) AS lowest_mae_chosen,
       ch.comparison ?& ARRAY['bgnbd', 'mbgnbd', 'pareto_nbd', 'heuristic'] AS all_compared
  FROM loyalty.model_choice ch;
-- under each fitted model, P(alive) of a one-time buyer follows that model's own function
SELECT f.model, round(loyalty._p_alive_days(f.model, 0, 0, 200, 200, (f.params->>'r')::float8, (f.params->>'alpha')::float8,
                                             coalesce(f.params->>'a', f.params->>'s')::float8,
                                             coalesce(f.params->>'b', f.params->>'beta')::float8, 30)::numeric, 6)
     = round(CASE f.model WHEN 'mbgnbd' THEN loyalty.mbgnbd_p_alive(0, 0, 200, (f.params->>'r')::float8, (f.params->>'alpha')::float8,
                                                                     (f.params->>'a')::float8, (f.params->>'b')::float8)
                          ELSE loyalty.pareto_nbd_p_alive(0, 0, 200, (f.params->>'r')::float8, (f.params->>'alpha')::float8,
                                                          (f.params->>'s')::float8, (f.params->>'beta')::float8) END::numeric, 6)
       AS own_p_alive,
       loyalty._p_alive_days(f.model, 0, 0, 200, 200, (f.params->>'r')::float8, (f.params->>'alpha')::float8,
                             coalesce(f.params->>'a', f.params->>'s')::float8,
                             coalesce(f.params->>'b', f.params->>'beta')::float8, 30) < 1 AS below_one
  FROM (SELECT DISTINCT ON (model) * FROM loyalty.model_fits WHERE model IN ('mbgnbd', 'pareto_nbd') AND status = 'fitted'
         ORDER BY model, fit_id DESC) f;
SELECT models FROM loyalty.configure_models(models => '{bgnbd}');

-- ---- RFM: bins that the segment rules do not use are refused
SELECT loyalty.configure_rfm(bins => 3);
SELECT bins FROM loyalty.rfm_config;
