-- The weekly digest: every figure of digest_figures() against hand-computed
-- values or a direct query, the page well-formed (xmllint) with shop-written
-- names escaped, and bad periods refused.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
SET TIME ZONE 'UTC';
\set SHOW_CONTEXT never

CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; m text; h text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT, h = PG_EXCEPTION_HINT;
    RETURN st || ': ' || m || coalesce(' | hint: ' || h, '');
END $$;

-- The week 1-8 June 2026. Before it: r1 (2 orders in May), r2 (1 in April).
-- In it: r1 buys 30 + 20, r2 buys 50 (refunded 10), n1 and n2 buy for the
-- first time (15, 25), n3's first order is cancelled (refunded in full: does
-- not count). After it (9 June): r1 buys 99, which the week must not see.
SELECT count(*) FROM (
SELECT loyalty.record_order(c, ref, amt, at) FROM (VALUES
    ('r1', 'o1', 10, timestamptz '2026-05-02 10:00'), ('r1', 'o2', 10, '2026-05-20 10:00'),
    ('r2', 'o3', 40, '2026-04-11 10:00'),
    ('r1', 'o4', 30, '2026-06-01 09:00'), ('r1', 'o5', 20, '2026-06-05 18:00'),
    ('r2', 'o6', 50, '2026-06-03 12:00'),
    ('n1', 'o7', 15, '2026-06-02 08:00'), ('n2', 'o8', 25, '2026-06-07 23:59'),
    ('n3', 'o9', 60, '2026-06-04 10:00'),
    ('r1', 'o10', 99, '2026-06-09 10:00')) v(c, ref, amt, at)) x;
SELECT loyalty.record_refund('o6', 10), loyalty.record_refund('o9');
SELECT customers FROM loyalty.refresh(as_of => '2026-06-08', fit_models => false);

-- the headline figures: orders o4 o5 o6 o7 o8 = 5; revenue 30+20+40+15+25 = 130;
-- customers r1 r2 n1 n2 = 4, of whom n1 n2 new, r1 r2 returning: repeat rate 0.5
SELECT f->>'orders' AS orders, f->>'revenue' AS revenue, f->>'customers' AS customers,
       f->>'new_customers' AS new, f->>'returning_customers' AS returning, f->>'repeat_rate' AS repeat_rate
  FROM loyalty.digest_figures('2026-06-01', '2026-06-08') f;

-- revenue by segment = the week's net revenue grouped by each buyer's segment (direct query)
SELECT (SELECT f->'revenue_by_segment' FROM loyalty.digest_figures('2026-06-01', '2026-06-08') f)
     = (SELECT jsonb_agg(jsonb_build_object('segment', segment, 'customers', n, 'revenue', rev) ORDER BY rev DESC, segment)
          FROM (SELECT r.segment, count(DISTINCT o.customer_id) AS n, sum(o.amount - o.refunded) AS rev
                  FROM loyalty.orders o JOIN loyalty.customer_rfm r USING (customer_id)
                 WHERE o.counts AND o.ordered_at >= '2026-06-01' AND o.ordered_at < '2026-06-08'
                 GROUP BY r.segment) s) AS by_segment_matches;
SELECT sum((e->>'revenue')::numeric) AS segment_revenue_total
  FROM loyalty.digest_figures('2026-06-01', '2026-06-08') f, jsonb_array_elements(f->'revenue_by_segment') e;

-- eight weeks, oldest first; the last is the week itself; May's two weeks with
-- an r1 order: 1 buyer, returning only on 20 May (r1's first order was 2 May)
SELECT to_char((e->>'week_from')::timestamptz, 'YYYY-MM-DD') AS week_from, e->>'buyers' AS buyers,
       e->>'returning' AS returning, e->>'repeat_rate' AS repeat_rate, e->>'revenue' AS revenue
  FROM loyalty.digest_figures('2026-06-01', '2026-06-08') f, jsonb_array_elements(f->'weekly') e;

-- segment moves: none before a snapshot; after one, a new customer shows as +1
SELECT f->'segments_compared_with' AS compared_with, bool_and(e->'change' = 'null') AS no_changes_yet
  FROM loyalty.digest_figures('2026-06-01', '2026-06-08') f, jsonb_array_elements(f->'segments') e GROUP BY 1;
SELECT loyalty.snapshot_segments('2026-06-08') = (SELECT jsonb_object_agg(segment, n) FROM
        (SELECT segment, count(*) AS n FROM loyalty.customer_rfm GROUP BY 1) s) AS snapshot_taken;
SELECT loyalty.record_order('n4', 'o11', 5, '2026-06-10 10:00') > 0 AS ordered;
SELECT customers FROM loyalty.refresh(as_of => '2026-06-11', fit_models => false);
SELECT e->>'segment' AS segment, e->>'customers' AS customers, e->>'change' AS change,
       (e->>'customers')::int - coalesce((SELECT (segments->>(e->>'segment'))::int FROM loyalty.segment_snapshots), 0)
         = (e->>'change')::int AS change_matches_snapshot
  FROM loyalty.digest_figures('2026-06-08', '2026-06-15') f, jsonb_array_elements(f->'segments') e
 ORDER BY 1;
SELECT (SELECT sum((e->>'customers')::int) FROM loyalty.digest_figures('2026-06-08', '2026-06-15') f,
               jsonb_array_elements(f->'segments') e) = (SELECT count(*) FROM loyalty.customer_rfm) AS all_customers;

-- campaigns: messages sent in the week (sent_at) and the uplift of campaign_performance;
-- the campaign's name is shop-written text and must arrive escaped in the page
INSERT INTO loyalty.campaigns (campaign_id, name, kind, channel, template, holdout_share) VALUES
    (201, '<script>alert("x")</script> & co', 'welcome', 'email', 'tpl', 0.3);
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, status, due_at, created_at)
SELECT '201:' || c || ':first', 201, c, 'email', c || '@example.com', 'tpl', 'pending', at, at
  FROM (VALUES ('r1', timestamptz '2026-06-02 10:00'), ('r2', '2026-06-03 10:00'), ('n1', '2026-06-09 10:00')) v(c, at);
UPDATE loyalty.outbox SET status = 'sent', sent_at = due_at, attempts = 1 WHERE campaign_id = 201;
SELECT e->>'campaign' AS campaign, e->>'sent' AS sent_in_week, e->>'sent_total' AS sent_total,
       (e->>'verdict') = (SELECT verdict FROM loyalty.campaign_performance WHERE campaign_id = 201) AS verdict_matches
  FROM loyalty.digest_figures('2026-06-01', '2026-06-08') f, jsonb_array_elements(f->'campaigns') e;

-- points: issued and redeemed today (the ledger is stamped with the real time)
SELECT loyalty.earn('r1', 500, 'bonus', 'digest:1') > 0 AS earned, loyalty.redeem('r1', 120, 'voucher', 'digest:2') > 0 AS redeemed;
SELECT f->'points'->>'issued' AS issued, f->'points'->>'redeemed' AS redeemed, f->'points'->>'expired' AS expired,
       f->'points'->>'outstanding' AS outstanding
  FROM loyalty.digest_figures(now() - interval '1 day', now() + interval '1 day') f;
SELECT f->'points'->>'issued' AS issued_last_year
  FROM loyalty.digest_figures(now() - interval '1 year', now() - interval '300 days') f;

-- the page: well-formed XML (xmllint), the figures in it, the shop's text escaped
\pset format unaligned
\pset tuples_only on
\o results/digest.html
SELECT loyalty.report_html('2026-06-01', '2026-06-08');
\o
\pset format aligned
\pset tuples_only off
\! xmllint --noout results/digest.html && echo 'report is well-formed'
SELECT h LIKE '%<td>Orders</td><td class="n">5</td>%' AS orders_shown,
       h LIKE '%<td>Repeat rate</td><td class="n">50.0%%' AS repeat_rate_shown,
       (length(h) - length(replace(h, '<svg ', ''))) / length('<svg ') AS charts,
       h LIKE '%<script>%' AS script_tag_present,
       h LIKE '%&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co%' AS name_escaped
  FROM loyalty.report_html('2026-06-01', '2026-06-08') h;
-- an empty period renders too
\pset format unaligned
\pset tuples_only on
\o results/digest_empty.html
SELECT loyalty.report_html('2020-01-01', '2020-01-08');
\o
\pset format aligned
\pset tuples_only off
\! xmllint --noout results/digest_empty.html && echo 'empty report is well-formed'

-- bad periods: an error with a hint, nothing else
SELECT pg_temp.err($$SELECT loyalty.digest_figures('2026-06-08', '2026-06-01')$$);
SELECT pg_temp.err($$SELECT loyalty.digest_figures(NULL, '2026-06-01')$$);
SELECT pg_temp.err($$SELECT loyalty.digest_figures('-infinity', '2026-06-01')$$);
SELECT pg_temp.err($$SELECT loyalty.report_html('2020-01-01', '2026-06-01')$$);
-- the BI role may read the digest (aggregates only)
SET ROLE loyalty_reader;
SELECT (loyalty.digest_figures('2026-06-01', '2026-06-08'))->>'orders' AS reader_sees_orders;
RESET ROLE;

-- the weekly send: nothing without an owner; then Monday 15 June 2026 in
-- Berlin, not before digest_hour (07:00) there, then once (the rerun and a
-- later catch-up write nothing), covering 8-15 June
SELECT loyalty.send_digest('2026-06-15 06:00+00') AS no_owner_yet;
SELECT owner_recipient, digest_hour FROM loyalty.configure_health(owner_recipient => 'owner@shop.example', digest_hour => 7);
SELECT default_time_zone FROM loyalty.configure_journeys(default_time_zone => 'Europe/Berlin');
SELECT loyalty.send_digest('2026-06-15 04:59+00') AS too_early;
SELECT loyalty.send_digest('2026-06-15 05:00+00') > 0 AS sent;
SELECT loyalty.send_digest('2026-06-15 06:00+00') AS rerun, loyalty.send_digest('2026-06-18 12:00+00') AS catch_up;
SELECT dedupe_key, customer_id, recipient, template, status,
       payload->'figures'->>'from' AS from_at, payload->'figures'->>'to' AS to_at,
       payload->'figures'->>'orders' AS orders, payload->>'html' LIKE '<!DOCTYPE html>%' AS has_html
  FROM loyalty.outbox WHERE template = 'loyalty_weekly_digest';
SELECT count(*) AS snapshots FROM loyalty.segment_snapshots WHERE taken_at = '2026-06-14 22:00+00';
SELECT pg_temp.err($$SELECT loyalty.send_digest('infinity')$$);
-- the health of the system is in the figures and on the page: one row per check
SELECT (f->'health'->>'ok')::int + (f->'health'->>'warning')::int + (f->'health'->>'critical')::int
         = (SELECT count(*) FROM loyalty.health) AS every_check_counted,
       jsonb_array_length(f->'health'->'problems') = (SELECT count(*) FROM loyalty.health WHERE status <> 'ok') AS problems_listed
  FROM loyalty.digest_figures('2026-06-01', '2026-06-08') f;
SELECT h LIKE '%<h2>Health of the system</h2>%' AS health_shown FROM loyalty.report_html('2026-06-01', '2026-06-08') h;

-- the uplift chart: a campaign whose attribution windows have passed, two
-- customers messaged (u1 orders within 30 days) and two held out (no order):
-- uplift 0.5 - 0 = 50 pp, drawn as a dot with its interval
INSERT INTO loyalty.campaigns (campaign_id, name, kind, channel, template, holdout_share) VALUES
    (202, 'spring promo', 'welcome', 'email', 'tpl', 0.5);
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, status, due_at, created_at)
SELECT '202:' || c || ':first', 202, c, 'email', c || '@example.com', 'tpl', 'pending', '2026-03-01 10:00', '2026-03-01 10:00'
  FROM unnest(ARRAY['u1', 'u2', 'u3', 'u4']) c;
UPDATE loyalty.outbox SET status = 'sent', sent_at = due_at, attempts = 1 WHERE campaign_id = 202 AND customer_id IN ('u1', 'u2');
UPDATE loyalty.outbox SET status = 'held_out' WHERE campaign_id = 202 AND customer_id IN ('u3', 'u4');
SELECT loyalty.record_order('u1', 'o-u1', 30, '2026-03-10 10:00') > 0 AS ordered;
SELECT ordered_share_uplift, verdict FROM loyalty.campaign_performance WHERE campaign_id = 202;
SELECT (length(h) - length(replace(h, '<svg ', ''))) / length('<svg ') AS charts,
       h LIKE '%<text x="440" y="%" font-size="11">50.0 pp</text>%' AS uplift_drawn
  FROM loyalty.report_html('2026-06-01', '2026-06-08') h;
