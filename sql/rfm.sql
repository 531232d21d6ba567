-- RFM: bounds, ties, scores, segments, fixed mode, views.
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
-- start from an empty shop (the earlier tests share this database)
TRUNCATE loyalty.orders, loyalty.refunds, loyalty.customer_state, loyalty.score_queue, loyalty.customer_rfm,
         loyalty.events, loyalty.rfm_bounds, loyalty.model_fits;

-- every one of the 125 (R, F, M) cells maps to exactly one segment, first rule wins
WITH cells AS (
    SELECT r, f, m FROM generate_series(1, 5) r, generate_series(1, 5) f, generate_series(1, 5) m
), matched AS (
    SELECT c.r, c.f, c.m,
           (SELECT s.segment FROM loyalty.segment_rules s
             WHERE c.r BETWEEN s.r_min AND s.r_max AND c.f BETWEEN s.f_min AND s.f_max AND c.m BETWEEN s.m_min AND s.m_max
             ORDER BY s.position LIMIT 1) AS segment
      FROM cells c
)
SELECT count(*) AS cells, count(DISTINCT (r, f, m)) AS distinct_cells,
       count(*) FILTER (WHERE segment IS NULL) AS other_cells
  FROM matched;
-- the segments the default table gives, cell counts per segment
WITH cells AS (
    SELECT r, f, m FROM generate_series(1, 5) r, generate_series(1, 5) f, generate_series(1, 5) m
)
SELECT coalesce((SELECT s.segment FROM loyalty.segment_rules s
                  WHERE c.r BETWEEN s.r_min AND s.r_max AND c.f BETWEEN s.f_min AND s.f_max AND c.m BETWEEN s.m_min AND s.m_max
                  ORDER BY s.position LIMIT 1), 'Other') AS segment, count(*) AS cells
  FROM cells c GROUP BY 1 ORDER BY 1;

-- rfm_bin: equal values, equal scores; reverse for recency
SELECT v, loyalty.rfm_bin(v, '{1,1,1,2}') AS f_score, loyalty.rfm_bin(v, '{10,20,30,40}', true) AS r_score
  FROM unnest(ARRAY[0, 1, 2, 3, 10, 10.5, 40, 41]::float8[]) v;
SELECT loyalty.rfm_bin(1, '{3,2}');
SELECT loyalty.rfm_bin(1, '{}');
SELECT loyalty.rfm_bin(1, '{1,NULL}');

-- a shop of 100 customers: customer i has i orders of 10 * i on day 100 - i
SELECT count(*) AS recorded FROM (
    SELECT loyalty.record_order('r' || i, 'r' || i || '-' || k, 10 * i, timestamptz '2026-01-01' + (100 - i) * interval '1 day' - k * interval '1 minute')
      FROM generate_series(1, 100) i, generate_series(1, i) k) s;
-- 60 customers whose recency, frequency and spend are unrelated to each other
SELECT count(*) AS recorded FROM (
    SELECT loyalty.record_order('q' || j, 'q' || j || '-' || k, (j * 31) % 500 + 5,
                                timestamptz '2026-04-14' - ((j * 13) % 120) * interval '1 day' - k * interval '1 hour')
      FROM generate_series(1, 60) j, generate_series(1, (j * 7) % 10 + 1) k) s;
-- 20 tied customers with identical history
SELECT count(*) AS recorded FROM (
    SELECT loyalty.record_order('tie' || i, 'tie' || i, 55, '2026-02-01') FROM generate_series(1, 20) i) s;
SELECT events_applied, customers, rescored FROM loyalty.refresh(as_of => '2026-04-15 00:00+00');
SELECT bins, mode, recency_bounds, frequency_bounds, monetary_bounds, customers FROM loyalty.rfm_bounds;
-- the bounds are the inverse-CDF quantiles: the same as percentile_disc
-- (recency in whole UTC days: the difference of the UTC dates)
SELECT b.recency_bounds = (SELECT percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP
                             (ORDER BY ((timestamptz '2026-04-15 00:00+00' AT TIME ZONE 'UTC')::date
                                        - (last_order_at AT TIME ZONE 'UTC')::date)::float8)
                             FROM loyalty.customer_state) AS recency_ok,
       b.frequency_bounds = (SELECT percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY orders::float8)
                               FROM loyalty.customer_state) AS frequency_ok,
       b.monetary_bounds = (SELECT percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY net_spend::float8)
                              FROM loyalty.customer_state) AS monetary_ok
  FROM loyalty.rfm_bounds b;
-- each score holds about a fifth of the customers
SELECT r_score, count(*) FROM loyalty.customer_segments GROUP BY 1 ORDER BY 1;
SELECT f_score, count(*) FROM loyalty.customer_segments GROUP BY 1 ORDER BY 1;
-- ties: all 20 identical customers share one score triple and segment
SELECT count(DISTINCT (r_score, f_score, m_score, segment)) AS distinct_scores_among_ties
  FROM loyalty.customer_segments WHERE customer_id LIKE 'tie%';
-- scores agree with rfm_bin over the stored bounds
SELECT count(*) AS mismatches
  FROM loyalty.customer_segments c, loyalty.rfm_bounds b
 WHERE c.r_score <> loyalty.rfm_bin(c.recency_days, b.recency_bounds, true)
    OR c.f_score <> loyalty.rfm_bin(c.frequency, b.frequency_bounds)
    OR c.m_score <> loyalty.rfm_bin(c.monetary::float8, b.monetary_bounds);
-- segments agree with the first matching rule
SELECT count(*) AS segment_mismatches
  FROM loyalty.customer_segments c
 WHERE c.segment <> coalesce((SELECT s.segment FROM loyalty.segment_rules s
                               WHERE c.r_score BETWEEN s.r_min AND s.r_max AND c.f_score BETWEEN s.f_min AND s.f_max
                                 AND c.m_score BETWEEN s.m_min AND s.m_max ORDER BY s.position LIMIT 1), 'Other');
SELECT customer_id, recency_days, frequency, monetary, r_score, f_score, m_score, segment, computed_at
  FROM loyalty.customer_segments WHERE customer_id IN ('r1', 'r50', 'r100', 'tie1') ORDER BY customer_id;
SELECT segment, customers, share_pct, revenue, avg_order_value, avg_recency_days FROM loyalty.segment_summary ORDER BY segment;

-- a second refresh with nothing changed rewrites nothing
SELECT rescored FROM loyalty.refresh(as_of => '2026-04-15 00:00+00');

-- incremental: a new order queues the customer; the worker's round rescores it
SELECT loyalty.record_order('r1', 'r1-new', 5000, '2026-04-14') > 0 AS ok;
SELECT count(DISTINCT customer_id) AS queued FROM loyalty.score_queue;
SELECT loyalty._rfm_score(false, '2026-04-15 00:00+00', 100) AS rescored;
SELECT count(DISTINCT customer_id) AS queued FROM loyalty.score_queue;
SELECT r_score, f_score, m_score, segment FROM loyalty.customer_segments WHERE customer_id = 'r1';

-- the shop edits the rules: first match wins, unmatched is Other
UPDATE loyalty.segment_rules SET segment = 'Best' WHERE position = 1;
DELETE FROM loyalty.segment_rules WHERE segment = 'Lost';
SELECT rescored > 0 AS rescored FROM loyalty.refresh(as_of => '2026-04-15 00:00+00');
SELECT count(*) FILTER (WHERE segment = 'Best') > 0 AS has_best, count(*) FILTER (WHERE segment = 'Champions') AS champions,
       count(*) FILTER (WHERE segment = 'Lost') AS lost, count(*) FILTER (WHERE segment = 'Other') > 0 AS has_other
  FROM loyalty.customer_segments;

-- fixed thresholds, 3 bins: refused while the segment rules are written for
-- scores 1 to 5 (they would match no Champions), accepted once rewritten
SELECT loyalty.configure_rfm(bins => 3, mode => 'fixed', recency_bounds => '{30,60}', frequency_bounds => '{1,10}', monetary_bounds => '{100,1000}');
SELECT bins FROM loyalty.rfm_config;
CREATE TEMP TABLE rules_for_5 AS SELECT * FROM loyalty.segment_rules;
UPDATE loyalty.segment_rules SET r_min = least(r_min, 3), r_max = least(r_max, 3), f_min = least(f_min, 3), f_max = least(f_max, 3),
                                 m_min = least(m_min, 3), m_max = least(m_max, 3);
SELECT loyalty.configure_rfm(bins => 3, mode => 'fixed', recency_bounds => '{30,60}', frequency_bounds => '{1,10}', monetary_bounds => '{100,1000}');
SELECT events_applied, customers FROM loyalty.refresh(as_of => '2026-04-15 00:00+00');
SELECT bins, mode, recency_bounds, frequency_bounds, monetary_bounds FROM loyalty.rfm_bounds;
SELECT customer_id, recency_days, frequency, monetary, r_score, f_score, m_score
  FROM loyalty.customer_segments WHERE customer_id IN ('r1', 'r5', 'r50', 'r100') ORDER BY customer_id;
SELECT max(r_score) AS max_r, max(f_score) AS max_f, max(m_score) AS max_m FROM loyalty.customer_segments;

-- bad settings: clear errors, nothing changed
\set VERBOSITY default
SELECT loyalty.configure_rfm(bins => 1);
SELECT loyalty.configure_rfm(bins => 11);
SELECT loyalty.configure_rfm(mode => 'median');
SELECT loyalty.configure_rfm(mode => 'fixed', recency_bounds => '{1,2,3}', frequency_bounds => '{1,2,3,4}', monetary_bounds => '{1,2,3,4}');
SELECT loyalty.configure_rfm(mode => 'fixed', recency_bounds => '{4,3,2,1}', frequency_bounds => '{1,2,3,4}', monetary_bounds => '{1,2,3,4}');
SELECT loyalty.configure_rfm(mode => 'fixed', recency_bounds => '{1,2,3,NaN}', frequency_bounds => '{1,2,3,4}', monetary_bounds => '{1,2,3,4}');
SELECT loyalty.configure_rfm(mode => 'quantile', recency_bounds => '{1,2,3,4}');
SELECT loyalty.refresh(as_of => 'infinity');
\set VERBOSITY terse
SELECT bins, mode FROM loyalty.rfm_config;

-- back to the default quantile mode (and the rules for 5 scores)
DELETE FROM loyalty.segment_rules;
INSERT INTO loyalty.segment_rules SELECT * FROM rules_for_5;
SELECT loyalty.configure_rfm();
SELECT customers FROM loyalty.refresh(as_of => '2026-04-15 00:00+00');
SELECT bins, mode, customers FROM loyalty.rfm_bounds;

-- a customer whose orders all go away loses state and scores
SELECT loyalty.record_refund('tie1') AS refunded;
SELECT count(*) AS tie1_rows FROM loyalty.customer_segments WHERE customer_id = 'tie1';

-- The full pass writes through the table AM (READ COMMITTED, plain table) or
-- through SQL (otherwise); both must leave the same rows. Start: scores as of
-- April 15; then rescore as of June 1 (recency moves: updates).
CREATE TEMP TABLE rfm_start AS SELECT * FROM loyalty.customer_rfm;
SELECT rescored > 0 AS rescored FROM loyalty.refresh(as_of => '2026-06-01 00:00+00');
CREATE TEMP TABLE rfm_direct AS SELECT * FROM loyalty.customer_rfm;
-- the same step through SQL (REPEATABLE READ), from the same start
TRUNCATE loyalty.customer_rfm;
INSERT INTO loyalty.customer_rfm SELECT * FROM rfm_start;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SET LOCAL client_min_messages = debug1;
SELECT rescored > 0 AS rescored FROM loyalty.refresh(as_of => '2026-06-01 00:00+00');
COMMIT;
SELECT (SELECT count(*) FROM loyalty.customer_rfm) AS rows_sql, (SELECT count(*) FROM rfm_direct) AS rows_direct,
       (SELECT count(*) FROM (SELECT * FROM loyalty.customer_rfm EXCEPT SELECT * FROM rfm_direct) x) AS only_sql,
       (SELECT count(*) FROM (SELECT * FROM rfm_direct EXCEPT SELECT * FROM loyalty.customer_rfm) x) AS only_direct,
       (SELECT count(*) FROM rfm_direct WHERE scored_at = '2026-06-01 00:00+00') > 0 AS some_updated,
       (SELECT count(*) FROM rfm_direct WHERE scored_at < '2026-06-01 00:00+00') > 0 AS some_kept;
-- every score written new (an empty table): the same rows both ways
TRUNCATE loyalty.customer_rfm;
SELECT rescored FROM loyalty.refresh(as_of => '2026-06-01 00:00+00');
CREATE TEMP TABLE rfm_direct_new AS SELECT * FROM loyalty.customer_rfm;
TRUNCATE loyalty.customer_rfm;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT rescored FROM loyalty.refresh(as_of => '2026-06-01 00:00+00');
COMMIT;
SELECT count(*) AS rows_sql,
       (SELECT count(*) FROM (SELECT * FROM loyalty.customer_rfm EXCEPT SELECT * FROM rfm_direct_new) x) AS only_sql,
       (SELECT count(*) FROM (SELECT * FROM rfm_direct_new EXCEPT SELECT * FROM loyalty.customer_rfm) x) AS only_direct,
       (SELECT count(*) FROM rfm_direct_new) = (SELECT count(*) FROM loyalty.customer_state) AS everyone_scored
  FROM loyalty.customer_rfm;
-- a shop's own trigger on customer_rfm fires for every row written (the SQL pass runs)
CREATE TABLE rfm_trigger_log (op text, customer_id text);
CREATE FUNCTION rfm_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.rfm_trigger_log VALUES (TG_OP, NEW.customer_id); RETURN NEW; END $$;
CREATE TRIGGER rfm_log AFTER INSERT OR UPDATE ON loyalty.customer_rfm FOR EACH ROW EXECUTE FUNCTION rfm_log();
TRUNCATE loyalty.customer_rfm;
SET client_min_messages = debug1;
SELECT rescored FROM loyalty.refresh(as_of => '2026-06-01 00:00+00');
SET client_min_messages = warning;
SELECT op, count(*) FROM rfm_trigger_log GROUP BY op ORDER BY op;
SELECT count(*) AS only_trigger_run FROM (SELECT * FROM loyalty.customer_rfm EXCEPT SELECT * FROM rfm_direct_new) x;
DROP TRIGGER rfm_log ON loyalty.customer_rfm;
DROP TABLE rfm_trigger_log;
DROP FUNCTION rfm_log();
-- stored rows whose customer has no state (before, between and after the
-- customers in key order) are left alone while every other row is rewritten,
-- as by the SQL pass (the intake deletes such rows itself)
INSERT INTO loyalty.customer_rfm VALUES ('a0', 1, 1, 1, 'Lost', '2026-01-01'), ('r0', 1, 1, 1, 'Lost', '2026-01-01'),
                                        ('zz', 1, 1, 1, 'Lost', '2026-01-01');
UPDATE loyalty.segment_rules SET segment = segment || '*';
SELECT rescored FROM loyalty.refresh(as_of => '2026-06-02 00:00+00');
SELECT count(*) FILTER (WHERE segment LIKE '%*') AS renamed, count(*) FILTER (WHERE segment = 'Other') AS other,
       count(*) FILTER (WHERE customer_id IN ('a0', 'r0', 'zz') AND segment = 'Lost') AS ghosts_kept,
       count(*) FILTER (WHERE scored_at = '2026-06-02 00:00+00') AS rescored_rows
  FROM loyalty.customer_rfm;
UPDATE loyalty.segment_rules SET segment = rtrim(segment, '*');
SELECT rescored FROM loyalty.refresh(as_of => '2026-06-02 00:00+00');
DELETE FROM loyalty.customer_rfm WHERE customer_id IN ('a0', 'r0', 'zz');

-- views are documented for BI tools
SELECT count(*) > 5 AS many_views, count(*) FILTER (WHERE obj_description(c.oid, 'pg_class') IS NULL) AS undocumented_views
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'loyalty' AND c.relkind = 'v';
SELECT count(*) AS undocumented_columns
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.oid IN ('loyalty.customer_segments'::regclass, 'loyalty.segment_summary'::regclass)
   AND a.attnum > 0 AND col_description(c.oid, a.attnum) IS NULL AND a.attname <> 'segment' AND a.attname <> 'customers';

-- Quantile bounds where N is not a multiple of the bins (where ceil and floor
-- differ), with every expectation computed by hand: 23 customers, customer ni
-- has i orders of 10 * i each, the last exactly i days before as_of. With 5
-- bins, bound k is the value at sorted position ceil(23k/5) = 5, 10, 14, 19:
-- recency and frequency {5,10,14,19}, monetary 10 i^2 = {250,1000,1960,3610}.
-- Score = 1 + bounds strictly below (recency: 5 - that), so i = 1..5, 6..10,
-- 11..14, 15..19, 20..23 get f = 1..5 and r = 5..1; m as f.
TRUNCATE loyalty.orders, loyalty.refunds, loyalty.customer_state, loyalty.score_queue, loyalty.customer_rfm,
         loyalty.events, loyalty.rfm_bounds, loyalty.model_fits;
SELECT count(*) AS recorded FROM (
    SELECT loyalty.record_order('n' || i, 'n' || i || '-' || k, 10 * i,
                                timestamptz '2026-04-15 00:00+00' - i * interval '1 day' - k * interval '1 minute')
      FROM generate_series(1, 23) i, generate_series(0, i - 1) k) s;
CREATE FUNCTION pg_temp.rfm_by_hand() RETURNS TABLE (wrong_bounds boolean, wrong_scores bigint, scored bigint)
LANGUAGE sql AS $$
    SELECT (SELECT (recency_bounds, frequency_bounds, monetary_bounds)
                   IS DISTINCT FROM ('{5,10,14,19}'::float8[], '{5,10,14,19}'::float8[], '{250,1000,1960,3610}'::float8[])
              FROM loyalty.rfm_bounds),
           count(*) FILTER (WHERE (r.r_score, r.f_score, r.m_score) IS DISTINCT FROM (6 - e.s, e.s, e.s)),
           count(*)
      FROM loyalty.customer_rfm r
      CROSS JOIN LATERAL (SELECT substr(r.customer_id, 2)::int AS i) c
      CROSS JOIN LATERAL (SELECT CASE WHEN c.i <= 5 THEN 1 WHEN c.i <= 10 THEN 2 WHEN c.i <= 14 THEN 3
                                      WHEN c.i <= 19 THEN 4 ELSE 5 END AS s) e
$$;
-- the direct pass (READ COMMITTED) and the SQL pass (REPEATABLE READ) each
-- against the hand-computed bounds and scores
SELECT customers FROM loyalty.refresh(as_of => '2026-04-15 00:00+00');
SELECT bins, recency_bounds, frequency_bounds, monetary_bounds, customers FROM loyalty.rfm_bounds;
SELECT * FROM pg_temp.rfm_by_hand();
TRUNCATE loyalty.customer_rfm, loyalty.rfm_bounds;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT rescored FROM loyalty.refresh(as_of => '2026-04-15 00:00+00');
COMMIT;
SELECT * FROM pg_temp.rfm_by_hand();

-- customer_state's columns are found by name: net_spend moved to the end of
-- the table (renamed away and added again) still gets the direct pass (no
-- DEBUG line) and the scores worked out by hand
BEGIN;
ALTER TABLE loyalty.customer_state RENAME COLUMN net_spend TO net_spend_moved;
ALTER TABLE loyalty.customer_state ADD COLUMN net_spend numeric;
UPDATE loyalty.customer_state SET net_spend = net_spend_moved, net_spend_moved = 0;
TRUNCATE loyalty.customer_rfm, loyalty.rfm_bounds;
SET LOCAL client_min_messages = debug1;
SELECT rescored FROM loyalty.refresh(as_of => '2026-04-15 00:00+00');
SET LOCAL client_min_messages = warning;
SELECT * FROM pg_temp.rfm_by_hand();
ROLLBACK;

-- The direct pass reads customer_state in key order while most customers
-- have no stored scores (the new rows then go into the primary key in
-- order), otherwise in table order, finding each customer's stored scores by
-- a hash of its id; both must leave the rows the SQL pass leaves. After
-- ANALYZE the planner counts 23 customers: none stored reads in key order;
-- 21 of them stored (2 deleted: new again), one stored wrongly, and two
-- stored rows without state reads in table order.
ANALYZE loyalty.customer_state;
TRUNCATE loyalty.customer_rfm, loyalty.rfm_bounds;
SELECT rescored FROM loyalty.refresh(as_of => '2026-04-15 00:00+00', fit_models => false);
SELECT * FROM pg_temp.rfm_by_hand();
CREATE TEMP TABLE rfm_keyorder AS SELECT * FROM loyalty.customer_rfm;
DELETE FROM loyalty.customer_rfm WHERE customer_id IN ('n3', 'n17');
UPDATE loyalty.customer_rfm SET r_score = 1 WHERE customer_id = 'n5';
INSERT INTO loyalty.customer_rfm VALUES ('n0', 1, 1, 1, 'Lost', '2026-01-01'), ('n99', 1, 1, 1, 'Lost', '2026-01-01');
CREATE TEMP TABLE rfm_mixed_start AS SELECT * FROM loyalty.customer_rfm;
SELECT rescored FROM loyalty.refresh(as_of => '2026-04-22 00:00+00', fit_models => false);
CREATE TEMP TABLE rfm_tableorder AS SELECT * FROM loyalty.customer_rfm;
TRUNCATE loyalty.customer_rfm, loyalty.rfm_bounds;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT rescored FROM loyalty.refresh(as_of => '2026-04-15 00:00+00', fit_models => false);
COMMIT;
SELECT (SELECT count(*) FROM (SELECT * FROM loyalty.customer_rfm EXCEPT SELECT * FROM rfm_keyorder) x) AS key_order_only_sql,
       (SELECT count(*) FROM (SELECT * FROM rfm_keyorder EXCEPT SELECT * FROM loyalty.customer_rfm) x) AS key_order_only_direct;
TRUNCATE loyalty.customer_rfm;
INSERT INTO loyalty.customer_rfm SELECT * FROM rfm_mixed_start;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT rescored FROM loyalty.refresh(as_of => '2026-04-22 00:00+00', fit_models => false);
COMMIT;
SELECT (SELECT count(*) FROM (SELECT * FROM loyalty.customer_rfm EXCEPT SELECT * FROM rfm_tableorder) x) AS table_order_only_sql,
       (SELECT count(*) FROM (SELECT * FROM rfm_tableorder EXCEPT SELECT * FROM loyalty.customer_rfm) x) AS table_order_only_direct,
       (SELECT count(*) FROM rfm_tableorder WHERE scored_at = '2026-04-22 00:00+00') AS rewritten,
       (SELECT count(*) FROM rfm_tableorder WHERE customer_id IN ('n0', 'n99') AND scored_at = '2026-01-01') AS ghosts_kept,
       (SELECT r_score FROM rfm_tableorder WHERE customer_id = 'n5') AS n5_r_score;
DELETE FROM loyalty.customer_rfm WHERE customer_id IN ('n0', 'n99');

-- The direct pass converts net_spend from numeric to float8 without the
-- text (src/rfm.c RfmNumericToDouble); it must give exactly what the SQL
-- pass's net_spend::float8 gives. Net spends chosen for it (negative, zero,
-- negative weights, trailing zeros, 2^53 and beyond, 22 and 23 decimals,
-- 1e22); with fixed bounds at such values, a customer whose spend equals a
-- bound must not score above it (a value one ulp off would), and every
-- m_score must be rfm_bin of net_spend::float8.
BEGIN;
UPDATE loyalty.customer_state s SET net_spend = v.x::numeric
  FROM (VALUES ('n1', '-12.34'), ('n2', '-0.1'), ('n3', '0'), ('n4', '0.0000001'), ('n5', '0.1'), ('n6', '0.3'),
               ('n7', '1.5'), ('n8', '10000'), ('n9', '123.45'), ('n10', '99999999.99'), ('n11', '12345678.901234567'),
               ('n12', '9007199254740993'), ('n13', '9007199254740992'), ('n14', '4503599627370495.5'),
               ('n15', '0.0000000000000000000001'), ('n16', '0.00000000000000000000001'), ('n17', '10000000000000000000000'),
               ('n18', '3.14159265358979'), ('n19', '2.718281828459045'), ('n20', '0.30000000000000004'),
               ('n21', '123.450'), ('n22', '7.00'), ('n23', '0.00001')) v(id, x)
 WHERE s.customer_id = v.id;
CREATE FUNCTION pg_temp.rfm_money(bounds float8[]) RETURNS TABLE (at_bounds bigint, mismatches bigint)
LANGUAGE plpgsql AS $$
BEGIN
    IF bounds IS NULL THEN
        PERFORM loyalty.configure_rfm();
    ELSE
        PERFORM loyalty.configure_rfm(mode => 'fixed', recency_bounds => '{5,10,14,19}', frequency_bounds => '{5,10,14,19}',
                                      monetary_bounds => bounds);
    END IF;
    TRUNCATE loyalty.customer_rfm;
    PERFORM loyalty.refresh(as_of => '2026-04-15 00:00+00', fit_models => false);
    RETURN QUERY
    SELECT count(*) FILTER (WHERE s.net_spend::float8 = ANY (b.monetary_bounds)),
           count(*) FILTER (WHERE r.m_score IS DISTINCT FROM loyalty.rfm_bin(s.net_spend::float8, b.monetary_bounds))
      FROM loyalty.customer_state s LEFT JOIN loyalty.customer_rfm r USING (customer_id), loyalty.rfm_bounds b;
END $$;
SELECT 'quantile' AS bounds, * FROM pg_temp.rfm_money(NULL);
SELECT b.monetary_bounds = (SELECT percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY net_spend::float8)
                              FROM loyalty.customer_state) AS quantile_bounds_ok
  FROM loyalty.rfm_bounds b;
SELECT b AS bounds, m.* FROM unnest(ARRAY['{-0.1,0.0000001,0.1,0.3}', '{1e-23,1e-22,0.30000000000000004,2.718281828459045}',
                                           '{12345678.901234567,4503599627370495.5,9007199254740993,1e22}',
                                           '{-12.34,1.5,123.45,99999999.99}', '{0.00001,3.14159265358979,7.00,10000}']) b,
       LATERAL pg_temp.rfm_money(b::float8[]) m;
ROLLBACK;

-- a deleted settings row: a clear error with a hint, nothing scored
\set VERBOSITY default
BEGIN;
DELETE FROM loyalty.rfm_config;
SELECT rescored FROM loyalty.refresh(as_of => '2026-04-15 00:00+00');
ROLLBACK;
\set VERBOSITY terse
