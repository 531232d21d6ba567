-- Decisions a shop can trust (issue 12): every win-back agrees with its P(alive);
-- one definition of the model inputs (model_inputs_at); BG/NBD's boundary
-- limit; the heuristic for one-time buyers; model choice by holdout; scores
-- stored; tier first assignment; points available and pending in payloads.

-- settings: the models to fit and compare
ALTER TABLE loyalty.model_settings
    ADD COLUMN models text[] NOT NULL DEFAULT '{bgnbd,heuristic}'
               CHECK (models <@ '{bgnbd,mbgnbd,pareto_nbd,heuristic}' AND 'heuristic' = ANY (models));
COMMENT ON COLUMN loyalty.model_settings.models IS 'models refresh() fits and validate_models() compares on the holdout window; the best decides (heuristic is always one)';
ALTER TABLE loyalty.model_fits DROP CONSTRAINT model_fits_model_check;
ALTER TABLE loyalty.model_fits ADD CONSTRAINT model_fits_model_check
    CHECK (model IN ('bgnbd', 'gamma_gamma', 'heuristic', 'mbgnbd', 'pareto_nbd'));

DROP FUNCTION loyalty.configure_models(integer, numeric, numeric, integer, integer, integer);
-- @function loyalty.configure_models
REVOKE ALL ON FUNCTION loyalty.configure_models(integer, numeric, numeric, integer, integer, integer, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty.configure_models(integer, numeric, numeric, integer, integer, integer, text[]) TO loyalty_admin;

-- @function loyalty._utc_days
-- @function loyalty.model_inputs_at
-- @view loyalty.model_inputs

-- @function loyalty._model_registered

-- Whether a model can be enabled: registered, and its C functions installed.
-- @function loyalty._model_available

-- @function loyalty._p_alive_model

-- @function loyalty._p_alive_days

-- @function loyalty._expected_days

-- @function loyalty.fit_models

-- The holdout comparison's verdict (loyalty._choose_model), kept until the
-- next comparison (at most daily, and when the enabled models change).
CREATE TABLE loyalty.model_choice (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    model        text NOT NULL,
    models       text[] NOT NULL,
    holdout_days integer NOT NULL,
    chosen_at    timestamptz NOT NULL,
    comparison   jsonb NOT NULL,
    reason       text NOT NULL
);
COMMENT ON TABLE loyalty.model_choice IS 'Which enabled model decides P(alive) and expected purchases, and the holdout comparison that chose it';
COMMENT ON COLUMN loyalty.model_choice.models IS 'the enabled models that were compared';
COMMENT ON COLUMN loyalty.model_choice.comparison IS 'per model: customers, mean absolute error per customer, predicted and actual purchase days in the holdout window, whether the calibration fit was usable';
COMMENT ON COLUMN loyalty.model_choice.reason IS 'why this model, in words';
SELECT pg_catalog.pg_extension_config_dump('loyalty.model_choice', '');

-- The model that decides now, with its parameters, as one row: the chosen
-- model's newest fit (BG/NBD on the boundary: bgnbd_limit), else the
-- heuristic. shop_gap is the heuristic's parameter, which one-time buyers
-- under BG/NBD also use (from the newest heuristic fit; before any fit,
-- computed from the customers).
-- @view loyalty.current_model

CREATE TABLE loyalty.stored_scores (
    customer_id            text PRIMARY KEY,
    model                  text NOT NULL,
    p_alive                float8 NOT NULL,
    expected_purchases_90d float8 NOT NULL,
    expected_order_value   float8,
    predicted_clv          numeric,
    horizon_days           integer NOT NULL,
    fit_id                 bigint,
    gamma_gamma_fit_id     bigint,
    as_of                  timestamptz NOT NULL
);
COMMENT ON TABLE loyalty.stored_scores IS 'Per-customer scores as last computed (read them through loyalty.customer_scores)';
-- derived, but dumped, so that a restored database has its scores at once
SELECT pg_catalog.pg_extension_config_dump('loyalty.stored_scores', '');

-- Compute and store the scores of p_customers (NULL: everyone, and drop the
-- rows of customers without state) as of p_as_of; a row is rewritten only
-- when a value changes. Returns the rows written.
-- @function loyalty._store_scores
-- @view loyalty.customer_scores


-- @function loyalty._choose_model

REVOKE ALL ON loyalty.model_choice, loyalty.current_model, loyalty.stored_scores FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.model_choice, loyalty.current_model, loyalty.stored_scores TO loyalty_admin;
GRANT SELECT ON loyalty.current_model, loyalty.model_choice TO loyalty_reader;

-- the pipeline stores the scores
-- @function loyalty.refresh

COMMENT ON FUNCTION loyalty.worker_tick(integer, integer) IS 'One background worker round (also callable by hand or pg_cron)';

-- tiers: a first assignment is not an upgrade
-- @function loyalty._recompute_tiers
COMMENT ON TABLE loyalty.tier_history IS 'Every tier change (assigned: the first evaluation of a customer; upgrade; downgrade after the grace period; tier removed)';

-- win-back: a minimum time since the last order
-- loyalty._campaign_params: its final body is in 75_service_notices.sql / 75_ops_hold.sql

-- (win-back campaigns saved before 0.2 get min_days_since_last = 30 in the
-- code until they are saved again: the upgrade leaves the shop's rows alone)

-- journeys: the shop's model decides P(alive) and lapse days
DROP FUNCTION loyalty._p_alive(integer, timestamptz, timestamptz, timestamptz, float8, float8, float8, float8, float8);
-- @function loyalty._p_alive

-- @function loyalty._lapse_search

-- @function loyalty._lapse_day

-- @function loyalty._win_back_at

-- @function loyalty._journeys_refitted

-- loyalty._occasions: its final body is in 75_service_notices.sql / 75_ops_hold.sql


-- loyalty._due_messages: its final body is in 75_service_notices.sql / 75_ops_hold.sql


COMMENT ON COLUMN loyalty.due_messages.payload IS 'what the template needs (name, points available now, points pending, tier, occasion details) and why (campaign, rule, the scores with P(alive) at the decision time and the model that decided it); for a suppressed occasion its details and the reason';

-- new functions: admin only, as the install's blanket grants do
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'loyalty'::regnamespace AND p.proname = ANY (ARRAY['_utc_days', 'model_inputs_at', '_model_registered', '_model_available', '_p_alive_model', '_p_alive_days', '_expected_days', '_store_scores', '_choose_model', '_p_alive', '_lapse_search', '_lapse_day', '_win_back_at'])
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO loyalty_admin', f);
    END LOOP;
END
$$;

-- RFM: bins must match the segment rules
-- @function loyalty.configure_rfm

-- a tier upgrade gives way to a win-back due in the same run: status superseded
ALTER TABLE loyalty.outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE loyalty.outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('pending', 'sent', 'dead', 'held_out', 'expired', 'cancelled',
                      'no_consent', 'no_contact', 'cooldown', 'capped', 'superseded'));
COMMENT ON COLUMN loyalty.outbox.status IS 'pending (also while a sender holds a lease on it), sent, dead (gave up after the allowed attempts), held_out (holdout group, never sent), expired (missed its validity window), cancelled (the customer opted out before it went out); suppressed by the journeys policy, recorded and never sent: no_consent, no_contact, cooldown, capped, superseded';
-- loyalty.enqueue_due: its final body is in 75_service_notices.sql / 75_ops_hold.sql

COMMENT ON FUNCTION loyalty.enqueue_due(timestamptz) IS
'Write what is due as of as_of into loyalty.outbox (each occasion decided once, ever); returns per active campaign: pending (of which delayed by quiet hours), held_out, expired, suppressed (no consent, no contact, cooldown, capped, superseded)';
COMMENT ON VIEW loyalty.due_messages IS
'What loyalty.enqueue_due() would do now: each occasion not yet in the outbox with its decision (send and quiet_hours become pending messages; held_out, expired, no_consent, no_contact, cooldown, capped and superseded are recorded with that status and never sent) and why';
COMMENT ON COLUMN loyalty.due_messages.occasion IS 'the occasion key (first, order:<ref>, birthday:<year>, ...); with campaign and customer it is the dedupe key';
COMMENT ON COLUMN loyalty.due_messages.occasion_at IS 'when the occasion became due';
COMMENT ON COLUMN loyalty.due_messages.decision IS 'send, quiet_hours (pending, due at due_at), held_out, expired, capped, cooldown, no_consent, no_contact, superseded (a tier upgrade when a win-back of the customer is due in the same run)';
CREATE OR REPLACE VIEW loyalty.campaign_performance AS
WITH settings AS (
    SELECT s.attribution_window AS w, s.min_group_size AS min_n FROM loyalty.journey_report_settings s
), counts AS (
    SELECT o.campaign_id, count(*) AS messages,
           count(*) FILTER (WHERE o.status = 'sent') AS sent,
           count(*) FILTER (WHERE o.status = 'held_out') AS held_out,
           count(*) FILTER (WHERE o.status = 'dead') AS failed,
           count(*) FILTER (WHERE o.status = 'pending') AS pending,
           count(*) FILTER (WHERE o.status = 'expired') AS expired,
           count(*) FILTER (WHERE o.status = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE o.status IN ('no_consent', 'no_contact', 'cooldown', 'capped', 'superseded')) AS suppressed
      FROM loyalty.outbox o
     GROUP BY o.campaign_id
), exposed AS (
    -- each customer once per group: their first message of the campaign
    SELECT o.campaign_id, o.customer_id, o.status = 'sent' AS treated,
           min(CASE WHEN o.status = 'sent' THEN coalesce(o.sent_at, o.due_at)
                    ELSE greatest(o.due_at, o.created_at) END) AS started_at
      FROM loyalty.outbox o
     WHERE o.status = ANY (ARRAY['sent', 'held_out'])
     GROUP BY o.campaign_id, o.customer_id, o.status
), matured AS (
    SELECT e.campaign_id, e.treated, r.ordered, r.revenue
      FROM exposed e
     CROSS JOIN settings s
     CROSS JOIN LATERAL (
           SELECT count(*) > 0 AS ordered,
                  coalesce(sum(od.amount - od.refunded), 0) AS revenue
             FROM loyalty.orders od
            WHERE od.customer_id = e.customer_id AND od.counts
              AND od.ordered_at >= e.started_at
              AND od.ordered_at < e.started_at + s.w) r
     WHERE e.started_at + s.w <= now()
), groups AS (
    SELECT m.campaign_id,
           count(*) FILTER (WHERE m.treated) AS n1,
           avg(m.ordered::integer::numeric) FILTER (WHERE m.treated) AS p1,
           avg(m.revenue) FILTER (WHERE m.treated) AS r1,
           var_samp(m.revenue) FILTER (WHERE m.treated) AS v1,
           count(*) FILTER (WHERE NOT m.treated) AS n0,
           avg(m.ordered::integer::numeric) FILTER (WHERE NOT m.treated) AS p0,
           avg(m.revenue) FILTER (WHERE NOT m.treated) AS r0,
           var_samp(m.revenue) FILTER (WHERE NOT m.treated) AS v0
      FROM matured m
     GROUP BY m.campaign_id
), stats AS (
    SELECT g.*, g.p1 - g.p0 AS dp,
           1.96 * sqrt(
               g.p1 * (1 - g.p1) / g.n1
               + g.p0 * (1 - g.p0) / g.n0) AS dp_margin,
           g.r1 - g.r0 AS dr,
           1.96 * sqrt(g.v1 / g.n1
               + g.v0 / g.n0) AS dr_margin
      FROM groups g
)
SELECT c.campaign_id, c.name, c.kind, c.channel,
       coalesce(n.messages, 0) AS messages,
       coalesce(n.sent, 0) AS sent,
       coalesce(n.held_out, 0) AS held_out,
       coalesce(n.failed, 0) AS failed,
       coalesce(n.pending, 0) AS pending,
       coalesce(n.expired, 0) AS expired,
       coalesce(n.cancelled, 0) AS cancelled,
       coalesce(n.suppressed, 0) AS suppressed,
       (SELECT (date_part('epoch', s.w) / 86400)::numeric(8, 2) FROM settings s) AS window_days,
       coalesce(st.n1, 0) AS treated_customers,
       round(st.p1, 4) AS treated_ordered_share,
       round(st.r1, 2) AS treated_revenue_per_customer,
       coalesce(st.n0, 0) AS holdout_customers,
       round(st.p0, 4) AS holdout_ordered_share,
       round(st.r0, 2) AS holdout_revenue_per_customer,
       round(st.dp, 4) AS ordered_share_uplift,
       round(st.dp - st.dp_margin, 4) AS ordered_share_uplift_low,
       round(st.dp + st.dp_margin, 4) AS ordered_share_uplift_high,
       round(st.dr, 2) AS revenue_uplift_per_customer,
       round(st.dr - st.dr_margin, 2) AS revenue_uplift_low,
       round(st.dr + st.dr_margin, 2) AS revenue_uplift_high,
       CASE WHEN coalesce(n.sent, 0) = 0 THEN 'nothing sent yet'
            WHEN coalesce(n.held_out, 0) = 0 THEN 'no holdout group'
            WHEN coalesce(st.n1, 0) < (SELECT s.min_n FROM settings s)
              OR coalesce(st.n0, 0) < (SELECT s.min_n FROM settings s) THEN 'too early'
            WHEN st.dp - st.dp_margin > 0 THEN 'more customers ordered'
            WHEN st.dp + st.dp_margin < 0 THEN 'fewer customers ordered'
            ELSE 'no clear difference' END AS verdict
  FROM loyalty.campaigns c
  LEFT JOIN counts n ON n.campaign_id = c.campaign_id
  LEFT JOIN stats st ON st.campaign_id = c.campaign_id;
COMMENT ON COLUMN loyalty.campaign_performance.suppressed IS 'occasions the policy decided not to send: no consent, no usable contact, cooldown, frequency cap, or superseded by a contradicting message (statuses no_consent, no_contact, cooldown, capped, superseded)';

-- Statistics for the small settings tables: unanalysed, the planner takes
-- each for hundreds of rows, and a view over a few of them crosses the JIT
-- threshold on a tiny shop (hundreds of milliseconds compiling a plan that
-- runs in one). Analysed once, their estimates follow their size.
ANALYZE loyalty.rfm_config, loyalty.segment_rules, loyalty.model_settings, loyalty.model_fits, loyalty.model_choice,
        loyalty.rewards_settings, loyalty.tiers, loyalty.earn_rules, loyalty.outbox_settings, loyalty.journey_settings,
        loyalty.journey_report_settings, loyalty.campaigns, loyalty.journey_runs;
