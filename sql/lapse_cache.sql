-- Win-back lapse days (issue 12): closed forms where they exist (BG/NBD and
-- its limit, MBG/NBD and its limit, the heuristic), a search over days for
-- Pareto/NBD, cached per customer (loyalty.lapse_days, 74_lapse_cache.sql)
-- and invalidated by a new fit or a new order.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
SET TIME ZONE 'UTC';

-- ---- a shop (seeded simulation): purchase rates vary, and so do the rates at
-- which customers leave (exponential lifetimes): Pareto/NBD's world
SELECT setseed(0.7);
CREATE TEMP TABLE sim AS
SELECT i, 20 + floor(random() * 500)::int AS first_days_ago, -ln(1 - random()) * 0.04 + 0.004 AS rate,
       -ln(1 - random()) / (-ln(1 - random()) * 0.006 + 0.0005) AS lifetime
  FROM generate_series(1, 400) i;
CREATE TEMP TABLE sim_orders AS
WITH RECURSIVE o(i, k, age) AS (
    SELECT i, 0, 0::float8 FROM sim
    UNION ALL
    SELECT o.i, o.k + 1, o.age + g.gap
      FROM o JOIN sim s USING (i) CROSS JOIN LATERAL (SELECT -ln(1 - random()) / s.rate AS gap) g
     WHERE o.k < 60 AND o.age + g.gap < least(s.lifetime, s.first_days_ago)
)
SELECT o.i, o.k, s.first_days_ago - o.age AS days_ago FROM o JOIN sim s USING (i);
SELECT count(*) > 0 AS recorded FROM (
    SELECT loyalty.record_order('p' || i, 'p' || i || '-' || k, 25, now() - round(days_ago::numeric) * interval '1 day')
      FROM sim_orders ORDER BY i, k) r;
SELECT models FROM loyalty.configure_models(models => '{pareto_nbd,heuristic}', min_customers => 100, min_repeat_customers => 20);
SELECT count(*) > 0 AS ran FROM loyalty.fit_models();
SELECT status FROM loyalty.model_fits WHERE model = 'pareto_nbd';
-- Pareto/NBD decides here (whatever the holdout comparison says)
UPDATE loyalty.model_choice SET model = 'pareto_nbd';
SELECT model, fit_id IS NOT NULL AS has_fit FROM loyalty.current_model;
UPDATE loyalty.campaigns SET active = (kind = 'win_back');

-- ---- the cache holds the search's values
SELECT loyalty._lapse_cache_fill(now()) > 100 AS searched;
SELECT count(*) AS cached,
       count(*) FILTER (WHERE nullif(l.lapse_at, 'infinity') IS DISTINCT FROM
                              loyalty._lapse_search('pareto_nbd', s.purchase_days, s.first_order_at, s.last_order_at, 0.3,
                                                    m.r, m.alpha, m.a, m.b, m.shop_gap)) AS differ_from_search,
       count(*) FILTER (WHERE l.lapse_at < 'infinity') > 0 AS some_lapse
  FROM loyalty.lapse_days l JOIN loyalty.customer_state s USING (customer_id) CROSS JOIN loyalty.current_model m;
-- every customer in the window is cached, no other fit's rows
SELECT count(*) FILTER (WHERE l.customer_id IS NULL) AS uncached_in_window,
       (SELECT count(*) FROM loyalty.lapse_days WHERE fit_id <> (SELECT fit_id FROM loyalty.current_model)) AS other_fits
  FROM loyalty.customer_state s LEFT JOIN loyalty.lapse_days l ON l.customer_id = s.customer_id AND l.below = 0.3
 WHERE s.last_order_at >= now() - interval '365 days';
-- a second fill searches nobody: the run stays incremental
SELECT loyalty._lapse_cache_fill(now()) AS searched_again;

-- ---- the lookup reads the cache (a planted value comes back) ...
CREATE TEMP TABLE pick AS SELECT customer_id FROM loyalty.lapse_days ORDER BY customer_id LIMIT 2;
UPDATE loyalty.lapse_days SET lapse_at = '2001-01-01' WHERE customer_id IN (SELECT customer_id FROM pick);
CREATE FUNCTION pg_temp.looked_up(c text) RETURNS timestamptz LANGUAGE sql AS $$
    SELECT loyalty._lapse_day_cached(s.customer_id, m.fit_id, m.model, s.purchase_days, s.first_order_at, s.last_order_at, 0.3,
                                     m.r, m.alpha, m.a, m.b, m.shop_gap)
      FROM loyalty.customer_state s CROSS JOIN loyalty.current_model m WHERE s.customer_id = c
$$;
CREATE FUNCTION pg_temp.searched(c text) RETURNS timestamptz LANGUAGE sql AS $$
    SELECT loyalty._lapse_search(m.model, s.purchase_days, s.first_order_at, s.last_order_at, 0.3,
                                 m.r, m.alpha, m.a, m.b, m.shop_gap)
      FROM loyalty.customer_state s CROSS JOIN loyalty.current_model m WHERE s.customer_id = c
$$;
SELECT customer_id, pg_temp.looked_up(customer_id) = '2001-01-01' AS read_from_cache FROM pick ORDER BY 1;

-- ... a new order makes the customer's row stale: not read, searched again
SELECT loyalty.record_order((SELECT min(customer_id) FROM pick), 'new-order', 25, now() - interval '1 day') > 0 AS ordered;
SELECT customer_id, pg_temp.looked_up(customer_id) IS NOT DISTINCT FROM pg_temp.searched(customer_id) AS equals_search,
       pg_temp.looked_up(customer_id) = '2001-01-01' AS planted
  FROM pick ORDER BY 1;
SELECT loyalty._lapse_cache_fill(now()) AS searched_after_order;
SELECT l.last_order_at > now() - interval '2 days' AS row_has_new_order,
       nullif(l.lapse_at, 'infinity') IS NOT DISTINCT FROM pg_temp.searched(l.customer_id) AS equals_search
  FROM loyalty.lapse_days l WHERE l.customer_id = (SELECT min(customer_id) FROM pick);

-- ... and a new fit makes every row stale: the next fill (the refit's own,
-- in _journeys_refitted) searches them all again
SELECT count(*) > 0 AS refitted FROM loyalty.fit_models();
UPDATE loyalty.model_choice SET model = 'pareto_nbd';
SELECT customer_id, pg_temp.looked_up(customer_id) IS NOT DISTINCT FROM pg_temp.searched(customer_id) AS equals_search
  FROM pick ORDER BY 1;
-- a row of another fit is not read (planted: another fit_id, the customer's inputs)
UPDATE loyalty.lapse_days SET lapse_at = '2001-01-01', fit_id = fit_id - 1 WHERE customer_id = (SELECT max(customer_id) FROM pick);
SELECT pg_temp.looked_up(customer_id) IS NOT DISTINCT FROM pg_temp.searched(customer_id) AS equals_search,
       pg_temp.looked_up(customer_id) = '2001-01-01' AS planted
  FROM pick WHERE customer_id = (SELECT max(customer_id) FROM pick);
SELECT loyalty._lapse_cache_fill(now()) AS searched_after_planting;
SELECT count(*) AS rows_of_the_new_fit,
       count(*) FILTER (WHERE nullif(l.lapse_at, 'infinity') IS DISTINCT FROM pg_temp.searched(l.customer_id)) AS differ_from_search
  FROM loyalty.lapse_days l WHERE l.fit_id = (SELECT fit_id FROM loyalty.current_model);
SELECT count(*) AS rows_of_old_fits FROM loyalty.lapse_days WHERE fit_id <> (SELECT fit_id FROM loyalty.current_model);

-- ---- the win-back decisions are the same from the cache as without it
CREATE TEMP TABLE with_cache AS
SELECT customer_id, occasion, occasion_at, decision FROM loyalty.due_messages_at(now()) WHERE kind = 'win_back';
TRUNCATE loyalty.lapse_days;
SELECT count(*) = (SELECT count(*) FROM with_cache) AS same_count, count(*) > 0 AS some_win_backs,
       count(*) FILTER (WHERE w.customer_id IS NULL OR d.customer_id IS NULL) AS differ
  FROM (SELECT customer_id, occasion, occasion_at, decision FROM loyalty.due_messages_at(now()) WHERE kind = 'win_back') d
  FULL JOIN with_cache w USING (customer_id, occasion, occasion_at, decision);
-- enqueue_due fills the cache itself
SELECT count(*) > 0 AS ran FROM loyalty.enqueue_due();
SELECT count(*) > 100 AS filled_by_enqueue FROM loyalty.lapse_days;

-- ---- closed forms agree with the day-by-day search: MBG/NBD (one-time
-- buyers included) at CDNOW-like parameters and on its boundary limit, and
-- not cached (nothing to search)
SELECT p.label, b.below, count(*) AS customers,
       count(*) FILTER (WHERE loyalty._lapse_day('mbgnbd', s.purchase_days, s.first_order_at, s.last_order_at, b.below, p.r, p.alpha, p.a, p.b, 30)
                              IS DISTINCT FROM
                              loyalty._lapse_search('mbgnbd', s.purchase_days, s.first_order_at, s.last_order_at, b.below, p.r, p.alpha, p.a, p.b, 30)) AS differ
  FROM loyalty.customer_state s
 CROSS JOIN (VALUES ('cdnow-like', 0.525, 43.3, 0.891, 1.614), ('limit p=0.3', 1.3, 25.7, 1e12, 2.3333333333333e12)) p(label, r, alpha, a, b)
 CROSS JOIN (VALUES (0.1), (0.3), (0.6)) b(below)
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT loyalty._lapse_searched('mbgnbd', 0) AS mbgnbd_searched, loyalty._lapse_searched('pareto_nbd', 0) AS pareto_nbd_searched,
       loyalty._lapse_searched('bgnbd', 0) AS bgnbd_searched;
