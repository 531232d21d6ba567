-- The stored churn/CLV scores (loyalty._store_scores, its rows from the C
-- function loyalty._score_values) equal, bit for bit, an independent
-- computation from loyalty.model_inputs_at and the per-customer model
-- functions, under every model (bgnbd, bgnbd_limit, mbgnbd, pareto_nbd,
-- heuristic), with and without a Gamma-Gamma fit, at the default horizon
-- and another; the incremental path and the pass over everyone store the
-- same rows.
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;

-- 240 customers: one-time buyers, repeat buyers (up to 6 orders over 2025,
-- some on the same day), partial refunds of first and later orders
SELECT count(*) > 0 AS recorded FROM (
    SELECT loyalty.record_order('s' || i, 's' || i || '-' || k, round(5 + (i * 7 % 90) + k * 1.37, 2),
                                timestamptz '2025-01-01 10:00' + ((i * 41 + k * k * 29) % 350) * interval '1 day'
                                + (k % 2) * interval '3 hours')
      FROM generate_series(1, 240) i, generate_series(1, 1 + (i % 7) * (i % 3) % 6) k ORDER BY i, k) s;
SELECT count(*) AS refunds FROM (
    SELECT loyalty.record_refund(o.order_ref, 2.5) FROM loyalty.orders o
     WHERE o.order_ref ~ '^s[0-9]*3-[12]$' ORDER BY o.order_ref) s;
SELECT count(*) AS customers, count(*) FILTER (WHERE purchase_days = 1) AS one_time,
       count(*) FILTER (WHERE purchase_days > 2) AS three_days_or_more
  FROM loyalty.customer_state;

-- every model enabled; fits with fixed parameters (days), so each model can
-- be put in force by choosing it
SELECT models FROM loyalty.configure_models(models => '{bgnbd,mbgnbd,pareto_nbd,heuristic}');
INSERT INTO loyalty.model_fits (model, status, as_of, customers, params) VALUES
    ('heuristic', 'fitted', '2026-01-01', 240, '{"shop_gap": 47.25}'),
    ('mbgnbd', 'fitted', '2026-01-01', 240, '{"r": 0.525, "alpha": 43.28, "a": 0.891, "b": 1.614}'),
    ('pareto_nbd', 'fitted', '2026-01-01', 240, '{"r": 0.553, "alpha": 74.05, "s": 0.606, "beta": 81.68}'),
    ('gamma_gamma', 'fitted', '2026-01-01', 200, '{"p": 6.25, "q": 3.74, "gamma": 15.44}');
CREATE TEMP TABLE bgnbd_fits (name text, params jsonb);
INSERT INTO bgnbd_fits VALUES
    ('bgnbd', '{"r": 0.243, "alpha": 30.6, "a": 0.793, "b": 2.426}'),
    ('bgnbd_limit', '{"r": 0.31, "alpha": 25.2, "a": 3e11, "b": 7e11, "limit": true, "p": 0.3}');

-- the independent computation: the inputs, then each model's own function
CREATE FUNCTION pg_temp.expected_scores(p_as_of timestamptz)
RETURNS TABLE (customer_id text, model text, p_alive float8, e90 float8, eov float8, clv numeric, horizon integer,
               fit_id bigint, gg_fit_id bigint)
LANGUAGE sql AS $$
    WITH m AS (SELECT * FROM loyalty.current_model),
         g AS (SELECT * FROM loyalty.current_fits),
         st AS (SELECT * FROM loyalty.model_settings),
         i AS (SELECT mi.*,
                      CASE WHEN m.model IN ('bgnbd', 'bgnbd_limit') AND mi.x = 0 THEN 'heuristic' ELSE m.model END AS dm
                 FROM loyalty.model_inputs_at(p_as_of) mi, m),
         v AS (
        SELECT i.customer_id, i.dm,
               CASE i.dm
                    WHEN 'bgnbd' THEN least(loyalty.bgnbd_p_alive(i.x, i.t_x, i.t, m.r, m.alpha, m.a, m.b), 1)
                    WHEN 'mbgnbd' THEN least(loyalty.mbgnbd_p_alive(i.x, i.t_x, i.t, m.r, m.alpha, m.a, m.b), 1)
                    WHEN 'pareto_nbd' THEN least(loyalty.pareto_nbd_p_alive(i.x, i.t_x, i.t, m.r, m.alpha, m.a, m.b), 1)
                    WHEN 'bgnbd_limit' THEN 1 / (1 + m.a / m.b * power((m.alpha + i.t) / (m.alpha + i.t_x), m.r + i.x))
                    ELSE exp(greatest(-700, -i.days_since_last::float8 * (i.x + 1) / (i.t_x + m.shop_gap))) END AS pa,
               i.x, i.t_x, i.t, i.repeat_value, i.avg_spend
          FROM i, m),
         e AS (
        SELECT v.*, h.h,
               CASE v.dm
                    WHEN 'bgnbd' THEN loyalty.bgnbd_expected(h.h, v.x, v.t_x, v.t, m.r, m.alpha, m.a, m.b)
                    WHEN 'mbgnbd' THEN loyalty.mbgnbd_expected(h.h, v.x, v.t_x, v.t, m.r, m.alpha, m.a, m.b)
                    WHEN 'pareto_nbd' THEN loyalty.pareto_nbd_expected(h.h, v.x, v.t_x, v.t, m.r, m.alpha, m.a, m.b)
                    WHEN 'bgnbd_limit'
                    THEN v.pa * (m.a + m.b) / m.a
                         * (1 - power((m.alpha + v.t) / (m.alpha + v.t + m.a / (m.a + m.b) * h.h), m.r + v.x))
                    ELSE v.pa * h.h * (v.x + 1) / (v.t_x + m.shop_gap) END AS ex
          FROM v, m, (SELECT 90::float8 AS h UNION ALL SELECT horizon_days FROM st WHERE horizon_days <> 90) h)
    SELECT e90.customer_id, e90.dm, e90.pa, e90.ex,
           ov.eov,
           round((st.margin * ov.eov::numeric * coalesce(eh.ex, e90.ex)::numeric
                  / power(1 + st.annual_discount_rate, st.horizon_days / 365.0 / 2))::numeric, 2),
           st.horizon_days,
           CASE WHEN e90.dm = 'heuristic' THEN m.heuristic_fit_id ELSE m.fit_id END,
           g.gamma_gamma_fit_id
      FROM e e90
      LEFT JOIN e eh ON eh.customer_id = e90.customer_id AND eh.h <> 90
     CROSS JOIN m CROSS JOIN g CROSS JOIN st
     CROSS JOIN LATERAL (
        SELECT CASE WHEN g.gamma_gamma_fit_id IS NULL THEN e90.avg_spend::float8
                    WHEN e90.x > 0 AND e90.repeat_value > 0
                    THEN loyalty.gamma_gamma_mean(e90.x, e90.repeat_value::float8, g.p, g.q, g.gamma)
                    ELSE g.p * g.gamma / (g.q - 1) END AS eov) ov
     WHERE e90.h = 90
$$;

-- stored rows that differ from the independent computation, and rows missing
-- on either side (exact comparison: the values must be the same bit for bit)
CREATE FUNCTION pg_temp.mismatches(p_as_of timestamptz)
RETURNS bigint
LANGUAGE sql AS $$
    SELECT count(*)
      FROM loyalty.stored_scores s
      FULL JOIN pg_temp.expected_scores(p_as_of) x USING (customer_id)
     WHERE s.customer_id IS NULL OR x.customer_id IS NULL
        OR (s.model, s.p_alive, s.expected_purchases_90d, s.expected_order_value, s.predicted_clv, s.horizon_days,
            s.fit_id, s.gamma_gamma_fit_id, s.as_of)
           IS DISTINCT FROM (x.model, x.p_alive, x.e90, x.eov, x.clv, x.horizon, x.fit_id, x.gg_fit_id, p_as_of)
$$;

-- put a model in force: its fit newest, chosen
CREATE FUNCTION pg_temp.use_model(p_name text)
RETURNS text
LANGUAGE sql AS $$
    INSERT INTO loyalty.model_fits (model, status, as_of, customers, params)
    SELECT 'bgnbd', 'fitted', '2026-01-01', 240, f.params FROM bgnbd_fits f WHERE f.name = p_name;
    DELETE FROM loyalty.model_choice;
    INSERT INTO loyalty.model_choice (model, models, holdout_days, chosen_at, comparison, reason)
    VALUES (CASE WHEN p_name = 'bgnbd_limit' THEN 'bgnbd' ELSE p_name END,
            '{bgnbd,mbgnbd,pareto_nbd,heuristic}', 90, now(), '{}', 'test');
    SELECT model FROM loyalty.current_model;
$$;

-- every model, with and without Gamma-Gamma, horizon 90 and 180: each pass
-- over everyone writes every row the first time (a new day), and what it
-- stores equals the independent computation
CREATE TEMP TABLE runs (n integer, model text, gamma_gamma boolean, horizon integer, in_force text,
                        written bigint, rows bigint, mismatches bigint, models text);
DO $$
DECLARE
    mdl text;
    gg boolean;
    hz integer;
    k integer := 0;
    at timestamptz;
    cur text;
    w bigint;
BEGIN
    FOREACH hz IN ARRAY '{90,180}'::integer[] LOOP
        PERFORM loyalty.configure_models(horizon_days => hz);
        FOREACH gg IN ARRAY '{true,false}'::boolean[] LOOP
            UPDATE loyalty.model_fits SET status = CASE WHEN gg THEN 'fitted' ELSE 'not_converged' END
             WHERE model = 'gamma_gamma';
            FOREACH mdl IN ARRAY '{bgnbd,bgnbd_limit,mbgnbd,pareto_nbd,heuristic}'::text[] LOOP
                k := k + 1;
                at := timestamptz '2026-01-10 08:00' + k * interval '1 day';
                cur := pg_temp.use_model(mdl);
                w := loyalty._store_scores(at, NULL);
                INSERT INTO runs
                SELECT k, mdl, gg, hz, cur, w, (SELECT count(*) FROM loyalty.stored_scores), pg_temp.mismatches(at),
                       (SELECT string_agg(DISTINCT s.model, ',' ORDER BY s.model) FROM loyalty.stored_scores s);
            END LOOP;
        END LOOP;
    END LOOP;
END
$$;
SELECT model, gamma_gamma, horizon, in_force, written = rows AS all_written, rows, mismatches, models
  FROM runs ORDER BY n;

-- the incremental path: with the basis held (same model, settings, day), a
-- refresh rescores only the queued customers; what it leaves equals a pass
-- over everyone (which then writes nothing) and the independent computation
SELECT loyalty.configure_models(horizon_days => 90) IS NOT NULL AS configured;
SELECT pg_temp.use_model('pareto_nbd') AS in_force;
SELECT count(*) > 0 AS rescored_all FROM loyalty.refresh(as_of => '2026-03-01 08:00', fit_models => false);
SELECT basis->>'day' AS basis_day, basis->>'model' AS basis_model FROM loyalty.score_basis;
SELECT pg_temp.mismatches('2026-03-01 08:00') AS mismatches_after_refresh;
-- new orders of two customers and a first order of a new one, refunds of
-- another's orders until nothing is left: queued
SELECT loyalty.record_order('s5', 's5-new', 33.3, '2026-03-01 07:00') > 0 AS ok,
       loyalty.record_order('s6', 's6-new', 12.1, '2026-02-27 07:00') > 0 AS ok2,
       loyalty.record_order('new1', 'new1-1', 44.4, '2026-02-20 07:00') > 0 AS ok3;
SELECT count(*) > 0 AS refunded FROM (SELECT loyalty.record_refund(o.order_ref) FROM loyalty.orders o
                                        WHERE o.customer_id = 's7') r;
SELECT array_agg(DISTINCT customer_id ORDER BY customer_id) AS queued FROM loyalty.score_queue;
SELECT customers FROM loyalty.refresh(as_of => '2026-03-01 09:00', fit_models => false);
SELECT customer_id, as_of FROM loyalty.stored_scores WHERE as_of = '2026-03-01 09:00' ORDER BY 1;
SELECT count(*) AS s7_rows FROM loyalty.stored_scores WHERE customer_id = 's7';
CREATE TEMP TABLE after_incremental AS SELECT * FROM loyalty.stored_scores;
SELECT loyalty._store_scores('2026-03-01 09:00', NULL) AS full_pass_rewrites;
SELECT count(*) AS differ
  FROM after_incremental a FULL JOIN loyalty.stored_scores s USING (customer_id)
 WHERE a IS NULL OR s IS NULL OR (a.*) IS DISTINCT FROM (s.*);
-- the rows of the rescored customers are those of the pass at 09:00, the
-- others those of 08:00: each equal to the independent computation at its time
SELECT count(*) FILTER (WHERE s.as_of = '2026-03-01 09:00') AS at_9,
       count(*) FILTER (WHERE (s.model, s.p_alive, s.expected_purchases_90d, s.expected_order_value, s.predicted_clv)
                              IS DISTINCT FROM (x.model, x.p_alive, x.e90, x.eov, x.clv)) AS mismatches
  FROM loyalty.stored_scores s
  JOIN pg_temp.expected_scores('2026-03-01 09:00') x USING (customer_id);

-- the path for given customers (the worker's round) stores the same values
-- as the pass over everyone: rescore two customers a day later, then the
-- pass over everyone at that time rewrites every row but those two
SELECT loyalty._store_scores('2026-03-02 09:00', ARRAY['s10', 's11', 'gone']) AS given_written;
SELECT loyalty._store_scores('2026-03-02 09:00', NULL) = (SELECT count(*) - 2 FROM loyalty.customer_state) AS rest_written;
SELECT pg_temp.mismatches('2026-03-02 09:00') AS mismatches_next_day;

-- the C function wants a customer's state, a time and a model
SELECT loyalty._score_values(NULL, now(), 1, 1, 1, 1, now(), 'heuristic', NULL, NULL, NULL, NULL, 90, false,
                             NULL, NULL, NULL, 90);
SELECT (loyalty._score_values('2025-01-01', '2025-03-01', 2, 30, 10, 15, '2025-06-01', 'bgnbd', NULL, NULL, NULL,
                              NULL, NULL, false, NULL, NULL, NULL, 90)).*;
-- the table leaves each row room for a HOT update
SELECT reloptions FROM pg_class WHERE oid = 'loyalty.stored_scores'::regclass;
