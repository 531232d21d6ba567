-- The weekly digest: figures of a known week against hand-computed values and
-- the views; the HTML page is well-formed XML (xmllint parses it in
-- test/t/016_digest.pl) and carries the same figures; send_digest() writes
-- one message on Monday from digest_hour, never twice.
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
\set SHOW_CONTEXT never
-- the week [Mon 2026-11-30, Mon 2026-12-07): a (first order a month before, back
-- in the week), b (new, one order), c (new, two orders, one refunded in half),
-- d (ordered only before the week)
SELECT count(loyalty.record_order(c, r, a, t::timestamptz)) FROM (VALUES
    ('a', 'o1', 100, '2026-11-01 10:00+00'), ('a', 'o2', 40, '2026-12-02 10:00+00'),
    ('b', 'o3', 25, '2026-12-01 10:00+00'),
    ('c', 'o4', 60, '2026-12-03 10:00+00'), ('c', 'o5', 20, '2026-12-05 10:00+00'),
    ('d', 'o6', 70, '2026-11-10 10:00+00')) v(c, r, a, t);
SELECT loyalty.record_refund('o4', 30, 'refund-o4');
SELECT count(*) FROM loyalty.refresh(fit_models => false);
SELECT loyalty.earn('a', 500, 'gift', 'gift-a') > 0 AS earned, loyalty.redeem('a', 120, 'voucher', 'redeem-a') > 0 AS redeemed;
CREATE TEMP TABLE f AS SELECT loyalty.report_figures('2026-11-30 00:00+00', '2026-12-07 00:00+00') AS j;

-- by hand: buyers a, b, c; new b, c; returning a; 4 orders; 40 + 25 + (60 - 30) + 20 = 115
SELECT j->'new_customers' AS new_customers, j->'returning_customers' AS returning_customers, j->'buyers' AS buyers,
       j->'repeat_rate' AS repeat_rate, j->'orders' AS orders, j->'revenue' AS revenue FROM f;
-- revenue by segment = the week's orders grouped by the segment loyalty.customer_segments shows
SELECT (SELECT j->'revenue_by_segment' FROM f) =
       (SELECT jsonb_agg(jsonb_build_object('segment', segment, 'revenue', revenue, 'customers', customers) ORDER BY revenue DESC, segment)
          FROM (SELECT s.segment, sum(o.amount - o.refunded) AS revenue, count(DISTINCT o.customer_id) AS customers
                  FROM loyalty.orders o JOIN loyalty.customer_segments s USING (customer_id)
                 WHERE o.counts AND o.ordered_at >= '2026-11-30 00:00+00' AND o.ordered_at < '2026-12-07 00:00+00'
                 GROUP BY s.segment) x) AS segments_match_view;
-- points (earned and redeemed just now): the ledger's entries of the period, the liability view
SELECT (j->>'points_issued')::bigint AS issued, (j->>'points_redeemed')::bigint AS redeemed,
       (j->>'points_issued')::bigint = (SELECT sum(points) FROM loyalty.ledger WHERE kind = 'earn' AND created_at >= now() - interval '1 hour') AS issued_match_ledger,
       (j->>'outstanding_points')::bigint = (SELECT outstanding_points FROM loyalty.liability) AS outstanding_match_view,
       (j->>'outstanding_value')::numeric = (SELECT outstanding_value FROM loyalty.liability) AS value_match_view
  FROM (SELECT loyalty.report_figures(now() - interval '1 hour', now() + interval '1 hour') AS j) x;
-- weekly repeat rate: 8 weeks, the last one is the report's own
SELECT jsonb_array_length(j->'weekly_repeat_rate') AS weeks,
       (j->'weekly_repeat_rate'->7->>'repeat_rate')::numeric = (j->>'repeat_rate')::numeric AS last_week_is_this_week,
       j->'weekly_repeat_rate'->4->'repeat_rate' AS week_of_nov_09  -- d's first order only: 0
  FROM f;
-- health summary = loyalty.health
SELECT (j->'health'->>'ok')::int = (SELECT count(*) FROM loyalty.health WHERE status = 'ok') AS health_match_view FROM f;

-- the page: well-formed, and its table shows the same figures
CREATE TEMP TABLE h AS SELECT loyalty.report_html('2026-11-30 00:00+00', '2026-12-07 00:00+00') AS html;
SELECT xml_is_well_formed_document(html) AS well_formed, html LIKE '<!DOCTYPE html>%' AS doctype,
       html LIKE '%<svg xmlns="http://www.w3.org/2000/svg"%' AS inline_svg, html NOT LIKE '%<script%' AS no_script FROM h;
SELECT (xpath('//x:table[@id="figures"]/x:tr/x:td/text()', html::xml, ARRAY[ARRAY['x', 'http://www.w3.org/1999/xhtml']]))::text[] AS figures FROM h;
-- names the shop wrote are escaped, not markup
UPDATE loyalty.campaigns SET name = 'Win <b>back</b> & "more"', active = true WHERE campaign_id = (SELECT min(campaign_id) FROM loyalty.campaigns);
SELECT xml_is_well_formed_document(loyalty.report_html('2026-11-30 00:00+00', '2026-12-07 00:00+00')) AS still_well_formed,
       loyalty.report_html('2026-11-30 00:00+00', '2026-12-07 00:00+00') LIKE '%>Win &lt;b&gt;back&lt;/b&gt; &amp; &quot;mor<%' AS escaped_and_cut;
SELECT loyalty.report_html('2026-12-07', '2026-11-30');

-- send_digest: Monday from 08:00 shop time, once a week, only with an owner
SELECT loyalty.send_digest('2026-12-07 09:00+00') AS no_owner_no_digest;
SELECT (loyalty.configure_health(owner_recipient => 'owner@shop.example')).owner_recipient;
SELECT loyalty.send_digest('2026-12-07 07:59+00') AS monday_before_8;
SELECT loyalty.send_digest('2026-12-08 09:00+00') AS tuesday;
SELECT loyalty.send_digest('2026-12-07 09:00+00') AS monday_9;
SELECT loyalty.send_digest('2026-12-07 09:05+00') AS monday_9_05_again;
SELECT recipient, channel, template, customer_id, campaign_id IS NULL AS no_campaign, status,
       payload->>'from' AS week_from, payload->>'to' AS week_to, payload->'revenue' AS revenue,
       xml_is_well_formed_document(payload->>'html') AS html_well_formed
  FROM loyalty.outbox WHERE template = 'loyalty_weekly_digest';
-- shop time: in Auckland (UTC+13) Monday 08:00 is Sunday 19:00 UTC
UPDATE loyalty.journey_settings SET default_time_zone = 'Pacific/Auckland';
SELECT loyalty.send_digest('2026-12-13 18:59+00') AS auckland_monday_7_59, loyalty.send_digest('2026-12-13 19:00+00') AS auckland_monday_8;
SELECT payload->>'from' AS week_from, payload->>'to' AS week_to FROM loyalty.outbox WHERE template = 'loyalty_weekly_digest' ORDER BY message_id DESC LIMIT 1;
