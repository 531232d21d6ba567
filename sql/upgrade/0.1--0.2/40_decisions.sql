-- Decisions a shop can trust (issue 12): every win-back agrees with its P(alive);
-- one definition of the model inputs (model_inputs_at); BG/NBD's boundary
-- limit; the heuristic for one-time buyers; model choice by holdout; scores
-- stored; tier first assignment; points available and pending in payloads.

-- settings: the models to fit and compare
ALTER TABLE loyalty.model_settings
    ADD COLUMN models text[] NOT NULL DEFAULT '{bgnbd,heuristic}'
               CHECK (models <@ '{bgnbd,mbgnbd,pareto_nbd,heuristic}' AND 'heuristic' = ANY (models));
ALTER TABLE loyalty.model_settings
    ADD COLUMN refit_tolerance float8 NOT NULL DEFAULT 0.01 CHECK (refit_tolerance >= 0 AND refit_tolerance <= 0.1);
COMMENT ON COLUMN loyalty.model_settings.refit_tolerance IS 'a refit the same UTC day whose every parameter is within this fraction of the fit in force confirms it: the fit, stored scores and lapse days stay (0: every refit comes into force)';
COMMENT ON COLUMN loyalty.model_settings.models IS 'models refresh() fits and validate_models() compares on the holdout window; the best decides (heuristic is always one)';
ALTER TABLE loyalty.model_fits DROP CONSTRAINT model_fits_model_check;
ALTER TABLE loyalty.model_fits ADD CONSTRAINT model_fits_model_check
    CHECK (model IN ('bgnbd', 'gamma_gamma', 'heuristic', 'mbgnbd', 'pareto_nbd'));

DROP FUNCTION loyalty.configure_models(integer, numeric, numeric, integer, integer, integer);
-- @function loyalty.configure_models
REVOKE ALL ON FUNCTION loyalty.configure_models(integer, numeric, numeric, integer, integer, integer, text[], float8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty.configure_models(integer, numeric, numeric, integer, integer, integer, text[], float8) TO loyalty_admin;

-- @function loyalty._utc_days
-- @function loyalty._utc_date
REVOKE ALL ON FUNCTION loyalty._utc_date(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._utc_date(timestamptz) TO loyalty_admin, loyalty_app, loyalty_reader;
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
-- @table loyalty.model_choice
SELECT pg_catalog.pg_extension_config_dump('loyalty.model_choice', '');

-- The model that decides now, with its parameters, as one row: the chosen
-- model's newest fit (BG/NBD on the boundary: bgnbd_limit), else the
-- heuristic. shop_gap is the heuristic's parameter, which one-time buyers
-- under BG/NBD also use (from the newest heuristic fit; before any fit,
-- computed from the customers).
-- @view loyalty.current_model
-- @table loyalty.stored_scores
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

-- Statistics for the small settings tables: unanalysed, the planner takes
-- each for hundreds of rows, and a view over a few of them crosses the JIT
-- threshold on a tiny shop (hundreds of milliseconds compiling a plan that
-- runs in one). Analysed once, their estimates follow their size.
ANALYZE loyalty.rfm_config, loyalty.segment_rules, loyalty.model_settings, loyalty.model_fits, loyalty.model_choice,
        loyalty.rewards_settings, loyalty.tiers, loyalty.earn_rules, loyalty.outbox_settings, loyalty.journey_settings,
        loyalty.journey_report_settings, loyalty.campaigns, loyalty.journey_runs;
