-- refresh() rescores only what changed (issue 12): a refit to the same rows
-- reuses the fit, the stored scores of unchanged customers are not computed
-- again while the fits, settings and day hold, and what it stores equals what
-- a pass over everyone stores.
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
-- a fresh extension: the default settings, whatever ran before
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;

-- 300 customers, 1 to 4 orders each over 2025, amounts by customer
SELECT count(*) > 0 AS recorded FROM (
    SELECT loyalty.record_order('c' || i, 'c' || i || '-' || k, 10 + i % 50 + k,
                                timestamptz '2025-01-01' + ((i * 37 + k * 53) % 360) * interval '1 day')
      FROM generate_series(1, 300) i, generate_series(1, 1 + i % 4) k ORDER BY i, k) s;
SELECT bgnbd, gamma_gamma, customers FROM loyalty.refresh(as_of => '2026-01-10 08:00');
SELECT count(*) AS stored, count(*) FILTER (WHERE as_of = '2026-01-10 08:00') AS at_8 FROM loyalty.stored_scores;
SELECT basis->>'day' AS basis_day FROM loyalty.score_basis;

-- the same rows an hour later: each refit starts at the fit in force and
-- lands on it (to the last digits): it confirms it, and no stored score is
-- computed again
SELECT bgnbd, gamma_gamma FROM loyalty.refresh(as_of => '2026-01-10 09:00');
SELECT f.model, count(*) AS fits, count(*) FILTER (WHERE f.status = 'fitted') AS in_force,
       bool_and(loyalty._params_within(f0.params, f.params, 1e-6)) AS same_params
  FROM loyalty.model_fits f
  JOIN (SELECT DISTINCT ON (model) model, params FROM loyalty.model_fits ORDER BY model, fit_id) f0 USING (model)
 WHERE f.model IN ('bgnbd', 'gamma_gamma') GROUP BY 1 ORDER BY 1;
SELECT count(*) FILTER (WHERE as_of = '2026-01-10 09:00') AS rewritten FROM loyalty.stored_scores;

-- a new order of c7 the same day, without a refit: only c7 is scored again
SELECT loyalty.record_order('c7', 'c7-new', 40, '2026-01-10 08:30') > 0 AS ok;
SELECT rescored IS NOT NULL AS ran FROM loyalty.refresh(as_of => '2026-01-10 10:00', fit_models => false);
SELECT customer_id, as_of FROM loyalty.stored_scores WHERE as_of = '2026-01-10 10:00';
-- c7's stored P(alive) is the deciding model's value for its inputs now
SELECT abs(s.p_alive - loyalty._p_alive_days(m.model, i.x, i.t_x, i.t, i.days_since_last, m.r, m.alpha, m.a, m.b, m.shop_gap)) < 1e-12
       AS c7_current
  FROM loyalty.stored_scores s CROSS JOIN loyalty.current_model m
  JOIN loyalty.model_inputs_at('2026-01-10 10:00') i ON i.customer_id = s.customer_id
 WHERE s.customer_id = 'c7';
-- what the incremental pass left equals a pass over everyone: it changes nothing
SELECT loyalty._store_scores('2026-01-10 10:00', NULL) AS full_pass_rewrites;

-- the new order changed the rows fitted: the next refit fits again. Its
-- parameters moved, by less than refit_tolerance (10% here: one order moves
-- a 300-customer shop's Gamma-Gamma by more than the default 1%): it
-- confirms the fit in force, which stays, and so does every stored score
-- (c7 was scored at 10:00; nothing is queued)
SELECT refit_tolerance FROM loyalty.configure_models(refit_tolerance => 0.1);
CREATE TEMP TABLE in_force AS
SELECT m.fit_id, m.model, m.heuristic_fit_id, f.bgnbd_fit_id, f.gamma_gamma_fit_id
  FROM loyalty.current_model m, loyalty.current_fits f;
SELECT bgnbd, gamma_gamma FROM loyalty.refresh(as_of => '2026-01-10 11:00');
SELECT n.status, n.params <> o.params AS moved, loyalty._params_within(o.params, n.params, 0.01) AS within_1pct,
       n.note, o.fit_id AS in_force_fit
  FROM (SELECT * FROM loyalty.model_fits WHERE model = 'bgnbd' ORDER BY fit_id DESC LIMIT 1) n,
       (SELECT * FROM loyalty.model_fits WHERE model = 'bgnbd' AND status = 'fitted' ORDER BY fit_id DESC LIMIT 1) o;
SELECT (m.fit_id, m.model, m.heuristic_fit_id, f.bgnbd_fit_id, f.gamma_gamma_fit_id)
       IS NOT DISTINCT FROM (o.fit_id, o.model, o.heuristic_fit_id, o.bgnbd_fit_id, o.gamma_gamma_fit_id) AS fits_in_force_kept
  FROM in_force o, loyalty.current_model m, loyalty.current_fits f;
SELECT model, status FROM loyalty.model_fits WHERE fit_id > (SELECT max(fit_id) - 3 FROM loyalty.model_fits) ORDER BY model;
SELECT count(*) FILTER (WHERE as_of = '2026-01-10 11:00') AS rewritten FROM loyalty.stored_scores;
SELECT loyalty._store_scores('2026-01-10 11:00', NULL) AS full_pass_rewrites;

-- the parameter test: same keys, numbers within the tolerance, flags equal
SELECT loyalty._params_within('{"r": 1, "a": 2}', '{"r": 1.0099, "a": 1.99}', 0.01) AS within,
       loyalty._params_within('{"r": 1, "a": 2}', '{"r": 1.0101, "a": 2}', 0.01) AS r_beyond,
       loyalty._params_within('{"r": 1, "a": 2}', '{"r": 1, "a": 2, "limit": true}', 0.01) AS limit_added,
       loyalty._params_within('{"r": 1, "limit": true}', '{"r": 1, "limit": false}', 0.01) AS limit_differs,
       loyalty._params_within('{"r": 1}', '{"r": 1.000001}', 0) AS zero_tolerance;

-- refit_tolerance 0: every refit comes into force, and every customer whose
-- values it moves is scored again
SELECT refit_tolerance FROM loyalty.configure_models(refit_tolerance => 0);
SELECT loyalty.record_order('c8', 'c8-new', 300, '2026-01-10 11:10') > 0 AS ok;
SELECT bgnbd FROM loyalty.refresh(as_of => '2026-01-10 11:30');
SELECT (SELECT cf.bgnbd_fit_id FROM loyalty.current_fits cf) > o.bgnbd_fit_id AS new_fit_in_force FROM in_force o;
SELECT count(*) FILTER (WHERE as_of = '2026-01-10 11:30') > 100 AS most_rewritten FROM loyalty.stored_scores;
SELECT refit_tolerance FROM loyalty.configure_models(refit_tolerance => 0.01);
\set VERBOSITY terse
SELECT loyalty.configure_models(refit_tolerance => 0.5);
SELECT loyalty.configure_models(refit_tolerance => 'NaN');
SELECT loyalty.configure_models(refit_tolerance => -0.01);
\set VERBOSITY default
SELECT refit_tolerance FROM loyalty.model_settings;

-- a fit in force from an earlier UTC day is never confirmed: the first refit
-- of a day comes into force (the fits here are stamped back a day)
UPDATE loyalty.model_fits SET as_of = as_of - interval '1 day', fitted_at = fitted_at - interval '1 day';
SELECT loyalty.record_order('c9', 'c9-new', 300, '2026-01-10 11:40') > 0 AS ok;
SELECT bgnbd, gamma_gamma FROM loyalty.refresh(as_of => '2026-01-10 12:00');
SELECT model, status FROM loyalty.model_fits WHERE fit_id > (SELECT max(fit_id) - 3 FROM loyalty.model_fits) ORDER BY model;

-- the next day every customer's inputs moved: everyone is computed again
SELECT rescored IS NOT NULL AS ran FROM loyalty.refresh(as_of => '2026-01-11 08:00', fit_models => false);
SELECT basis->>'day' AS basis_day FROM loyalty.score_basis;
SELECT loyalty._store_scores('2026-01-11 08:00', NULL) AS full_pass_rewrites;

-- a customer who loses every order loses the stored scores at the next refresh
SELECT loyalty.record_refund('c5-1') > 0 AS refunded, loyalty.record_refund('c5-2') > 0 AS refunded_too;
SELECT count(*) AS c5_state FROM loyalty.customer_state WHERE customer_id = 'c5';
SELECT rescored IS NOT NULL AS ran FROM loyalty.refresh(as_of => '2026-01-11 09:00', fit_models => false);
SELECT count(*) AS c5_scores FROM loyalty.stored_scores WHERE customer_id = 'c5';
SELECT (SELECT count(*) FROM loyalty.stored_scores) = (SELECT count(*) FROM loyalty.customer_state) AS one_row_each;

-- rows gone behind refresh's back (truncated): everyone again
TRUNCATE loyalty.stored_scores;
SELECT rescored IS NOT NULL AS ran FROM loyalty.refresh(as_of => '2026-01-11 10:00', fit_models => false);
SELECT (SELECT count(*) FROM loyalty.stored_scores) = (SELECT count(*) FROM loyalty.customer_state) AS one_row_each;

-- a backfill changes customers without queueing them: it clears the basis
SELECT loyalty._recompute_customers(ARRAY['c9'], false);
SELECT basis IS NULL AS cleared FROM loyalty.score_basis;

-- MBG/NBD (fitted without a warm start) reuses its fit on unchanged inputs:
-- the fingerprint of the inputs, taken while it is enabled
SELECT models FROM loyalty.configure_models(models => '{bgnbd,mbgnbd,heuristic}');
SELECT bgnbd IS NOT NULL AS ran FROM loyalty.refresh(as_of => '2026-01-11 11:00');
SELECT bgnbd IS NOT NULL AS ran FROM loyalty.refresh(as_of => '2026-01-11 11:05');
SELECT count(*) AS fits, count(DISTINCT params) AS params, count(DISTINCT inputs_hash) AS hashes,
       bool_and(inputs_hash IS NOT NULL) AS fingerprinted
  FROM loyalty.model_fits WHERE model = 'mbgnbd';
SELECT loyalty.record_order('c10', 'c10-new', 30, '2026-01-11 10:00') > 0 AS ok;
SELECT bgnbd IS NOT NULL AS ran FROM loyalty.refresh(as_of => '2026-01-11 11:10');
SELECT count(*) AS fits, count(DISTINCT inputs_hash) AS hashes FROM loyalty.model_fits WHERE model = 'mbgnbd';
