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

-- the same rows an hour later: each fit's result is reused (same parameters,
-- a new row), and no stored score is computed again
CREATE TEMP TABLE fits1 AS SELECT model, params, inputs_hash, customers FROM loyalty.model_fits;
SELECT bgnbd, gamma_gamma FROM loyalty.refresh(as_of => '2026-01-10 09:00');
SELECT f.model, count(*) AS fits, count(DISTINCT f.params) AS params, count(DISTINCT f.inputs_hash) AS hashes
  FROM loyalty.model_fits f WHERE f.model IN ('bgnbd', 'gamma_gamma') GROUP BY 1 ORDER BY 1;
SELECT count(*) FILTER (WHERE as_of = '2026-01-10 09:00') AS rewritten FROM loyalty.stored_scores;

-- a new order of c7 the same day, without a refit: only c7 is scored again
SELECT loyalty.record_order('c7', 'c7-new', 500, '2026-01-10 08:30') > 0 AS ok;
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

-- the new order changed the rows fitted: the next refit fits again
SELECT bgnbd FROM loyalty.refresh(as_of => '2026-01-10 11:00');
SELECT count(DISTINCT inputs_hash) AS bgnbd_hashes FROM loyalty.model_fits WHERE model = 'bgnbd';

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
