#!/usr/bin/env bash
# The loyalty demo: as root on Debian 12,
#   bash test/demo.sh
# installs what it needs, starts a throwaway cluster (pg_cron and loyalty
# preloaded), loads a sample shop, runs the pipeline and prints a summary.
set -euo pipefail

LOYALTY_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export LOYALTY_SRC
# shellcheck source=test/setup.sh
. "$LOYALTY_SRC/test/setup.sh"
loyalty_setup

loyalty_cluster_start loyalty-demo shop <<'CONF'
loyalty.naptime = 200
CONF
dir=$CLUSTER_DIR
port=$CLUSTER_PORT
cleanup() { pg pg_ctl -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
psql_shop() { pg psql -X -q -h "$dir" -p "$port" -d shop -v ON_ERROR_STOP=1 "$@"; }

echo "== a sample shop: 5,000 customers, two years of orders (seeded, reproducible)"
psql_shop <<'SQL'
CREATE EXTENSION pg_cron;
CREATE EXTENSION loyalty CASCADE;
CREATE TABLE public.orders (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL,
    total       numeric(10,2),
    created_at  timestamptz NOT NULL,
    status      text NOT NULL
);
SELECT setseed(0.42);
-- Half the customers buy once; the others come back at their own pace (gap)
-- and stop after their own number of repeat orders (geometric, with a mean
-- that differs per customer: a heavy tail of loyal buyers); amounts are
-- log-normal.
INSERT INTO public.orders (customer_id, total, created_at, status)
SELECT c.id,
       round(exp(3.4 + 0.6 * sqrt(-2 * ln(random())) * cos(2 * pi() * random()))::numeric, 2),
       c.first_at + (o.k * c.gap_days + random() * 10) * interval '1 day',
       CASE WHEN random() < 0.95 THEN 'paid' WHEN random() < 0.6 THEN 'refunded' ELSE 'cancelled' END
  FROM (SELECT id,
               timestamptz '2025-01-01' + random() * 600 * interval '1 day' AS first_at,
               CASE WHEN random() < 0.5 THEN 0 ELSE floor(-ln(random()) * (1 + 9 * random() ^ 2))::int + 1 END AS repeats,
               20 + random() * 90 AS gap_days
          FROM generate_series(1, 5000) id) c,
       LATERAL generate_series(0, c.repeats) o(k)
 WHERE c.first_at + o.k * c.gap_days * interval '1 day' < now();
SELECT count(*) AS orders, count(DISTINCT customer_id) AS customers FROM public.orders \gset
\echo :orders orders of :customers customers
SQL

echo
echo "== attach loyalty to the shop's orders table (triggers + backfill)"
psql_shop <<'SQL'
SELECT loyalty.track_orders('public.orders',
         customer_column   => 'customer_id',
         amount_column     => 'total',
         ordered_at_column => 'created_at',
         order_id_column   => 'id',
         status_column     => 'status',
         counted_statuses  => ARRAY['paid']) AS rows_backfilled;
SELECT * FROM loyalty.refresh();
SQL

echo
echo "== RFM segments (loyalty.segment_summary)"
psql_shop -c "SELECT segment, customers, share_pct AS \"share %\", revenue, avg_order_value, avg_recency_days FROM loyalty.segment_summary ORDER BY revenue DESC"

echo "== the five best customers (loyalty.customer_segments)"
psql_shop -c "SELECT customer_id, recency_days, frequency, monetary, r_score::text || f_score || m_score AS rfm, segment FROM loyalty.customer_segments ORDER BY monetary DESC LIMIT 5"

echo "== churn and lifetime value (BG/NBD + Gamma-Gamma fitted on this shop, in days)"
psql_shop -c "SELECT model, status, customers, round(loglik::numeric, 1) AS loglik, iterations, params FROM loyalty.model_fits ORDER BY fit_id"
echo "valuable customers slipping away (high predicted value, churn risk over 50%):"
psql_shop -c "SELECT s.customer_id, c.segment, s.model, round(s.p_alive::numeric, 2) AS p_alive, round(s.expected_purchases_90d::numeric, 2) AS purchases_next_90d, round(s.expected_order_value::numeric, 2) AS order_value, s.predicted_clv FROM loyalty.customer_scores s JOIN loyalty.customer_segments c USING (customer_id) WHERE s.churn_risk > 0.5 ORDER BY c.monetary DESC LIMIT 5"
echo "can the model be trusted here? predicted vs actual purchase days in the last 90 days:"
psql_shop -c "SELECT model, calibration_repeats, customers, round(predicted_avg::numeric, 3) AS predicted_avg, round(actual_avg::numeric, 3) AS actual_avg, round(mae::numeric, 3) AS mae FROM loyalty.model_validation" \
          -c "SELECT model, reason FROM loyalty.current_model"

echo "== live: a lapsed customer orders again; the worker rescores within a second"
lapsed=$(psql_shop -At -c "SELECT customer_id FROM loyalty.customer_segments WHERE segment IN ('At Risk', 'Lost', 'About To Sleep') ORDER BY monetary DESC LIMIT 1")
psql_shop -c "SELECT customer_id, recency_days, frequency, segment AS segment_before FROM loyalty.customer_segments WHERE customer_id = '$lapsed'"
psql_shop -c "INSERT INTO public.orders (customer_id, total, created_at, status) VALUES ($lapsed, 80, now(), 'paid')"
for _ in $(seq 1 50); do
    n=$(psql_shop -At -c "SELECT count(*) FROM loyalty.events")
    [ "$n" = 0 ] && break
    sleep 0.2
done
sleep 0.5
psql_shop -c "SELECT customer_id, recency_days, frequency, segment AS segment_after FROM loyalty.customer_segments WHERE customer_id = '$lapsed'"

echo "== rewards: tiers by 12-month spend, points for new orders, a redemption"
psql_shop <<'SQL'
INSERT INTO loyalty.tiers (tier, min_spend, earn_multiplier, benefits) VALUES
    ('Silver', 100, 1.25, '{"free_shipping": true}'),
    ('Gold', 250, 1.5, '{"free_shipping": true, "birthday_gift": true}');
SELECT loyalty.recompute_tiers() AS tier_changes;
SELECT coalesce(tier, '(none)') AS tier, count(*) AS customers FROM loyalty.customer_tiers GROUP BY 1 ORDER BY 2;
SELECT earn_on_orders, return_window, refund_policy FROM loyalty.configure_rewards(earn_on_orders => true);
SQL
vip=$(psql_shop -At -c "SELECT customer_id FROM loyalty.customer_tiers ORDER BY qualifying_spend DESC, customer_id LIMIT 1")
tier=$(psql_shop -At -c "SELECT coalesce(tier, 'no tier') FROM loyalty.customer_tiers WHERE customer_id = '$vip'")
echo "customer $vip ($tier) orders for 120.00; the points are pending through the 14-day return window:"
psql_shop -c "INSERT INTO public.orders (customer_id, total, created_at, status) VALUES ($vip, 120, now(), 'paid')"
psql_shop -c "SELECT kind, points, reason, detail ->> 'tier_multiplier' AS tier_multiplier FROM loyalty.ledger WHERE customer_id = '$vip'"
psql_shop -c "SELECT loyalty.earn('$vip', 500, 'thank-you bonus', 'demo-bonus-$vip') > 0 AS bonus_given" \
          -c "SELECT loyalty.redeem('$vip', 200, 'voucher at checkout', 'demo-voucher-$vip') > 0 AS redeemed" \
          -c "SELECT * FROM loyalty.balance('$vip')"
psql_shop -c "SELECT outstanding_points, outstanding_value, customers_with_points FROM loyalty.liability" \
          -c "SELECT count(*) AS ledger_mismatches FROM loyalty.verify_ledger()"

echo "== journeys: the shop's customers table, consent, three campaigns switched on"
psql_shop <<'SQL'
-- the shop's own customers table: most have an email, some none; a few
-- addresses bounce (the demo's delivery fails for them)
CREATE TABLE public.customers (
    id        bigint PRIMARY KEY,
    full_name text NOT NULL,
    email     text,
    born      date,
    tz        text
);
INSERT INTO public.customers
SELECT id, 'Customer ' || id,
       CASE WHEN id % 10 = 0 THEN NULL
            WHEN id % 97 = 0 THEN 'bounce-' || id || '@example.com'
            ELSE 'customer' || id || '@example.com' END,
       date '1960-01-01' + (id * 7919) % 16000,
       (ARRAY['Europe/Berlin', 'Europe/London', 'America/New_York', 'Asia/Tokyo', NULL])[1 + id % 5]
  FROM generate_series(1, 5000) id;
SELECT loyalty.track_customers('public.customers', 'id', name_column => 'full_name',
         email_column => 'email', birthday_column => 'born', time_zone_column => 'tz') AS profiles_read;
-- four in five opted in to email at signup; one unsubscribed from everything
SELECT count(loyalty.set_consent(id::text, 'email', true, 'signup form')) AS email_opt_ins
  FROM public.customers WHERE id % 5 <> 0;
SELECT loyalty.set_consent('2', 'all', false, 'unsubscribe link') > 0 AS unsubscribed;
-- no quiet hours for the demo, so that it sends whatever time it runs
SELECT cap_messages, cap_window FROM loyalty.configure_journeys(quiet_start => '00:00', quiet_end => '00:00');
-- switch on three of the installed examples, counting occasions of the last 7 days
UPDATE loyalty.campaigns SET active = true, active_from = now() - interval '7 days'
 WHERE name IN ('order follow-up', 'we miss you', 'new tier');
SELECT name, kind, params, holdout_share, cooldown FROM loyalty.campaigns WHERE active ORDER BY priority;
SQL
echo "what the policy decides (loyalty.due_messages), per campaign:"
psql_shop -c "SELECT campaign, decision, count(*) FROM loyalty.due_messages GROUP BY 1, 2 ORDER BY 1, 3 DESC"
echo "enqueue_due() writes them into the outbox (a rerun writes nothing):"
psql_shop -c "SELECT * FROM loyalty.enqueue_due()" \
          -c "SELECT sum(pending + held_out + expired + suppressed) AS written_by_rerun FROM loyalty.enqueue_due()"
echo "every win-back agrees with its reason (P(alive) at the decision below the threshold, the model named);"
echo "one-time buyers gone far longer than the shop's typical gap are won back, those of last week are not:"
psql_shop <<'SQL'
SELECT count(*) AS win_backs,
       count(*) FILTER (WHERE (o.payload #>> '{occasion,p_alive}')::float8 < (o.payload #>> '{why,rule,p_alive_below}')::float8
                          AND o.payload #>> '{occasion,model}' IS NOT NULL) AS agreeing,
       count(*) FILTER (WHERE o.payload #>> '{occasion,model}' = 'heuristic') AS judged_by_heuristic
  FROM loyalty.outbox o JOIN loyalty.campaigns c USING (campaign_id)
 WHERE c.kind = 'win_back' AND o.payload ? 'why';
SELECT CASE WHEN s.last_order_at < now() - 3 * m.shop_gap * interval '1 day' THEN 'gone > 3x shop gap'
            ELSE 'bought last week' END AS one_time_buyers,
       count(*) AS customers,
       count(o.message_id) AS won_back
  FROM loyalty.customer_state s
 CROSS JOIN loyalty.current_model m
  LEFT JOIN loyalty.outbox o ON o.customer_id = s.customer_id
        AND o.campaign_id = (SELECT campaign_id FROM loyalty.campaigns WHERE name = 'we miss you')
 WHERE s.purchase_days = 1
   AND (s.last_order_at > now() - interval '7 days'
        OR s.last_order_at BETWEEN now() - interval '365 days' AND now() - 3 * m.shop_gap * interval '1 day')
 GROUP BY 1 ORDER BY 1;
SQL
psql_shop -c "SELECT max_attempts FROM loyalty.configure_outbox(max_attempts => 2, backoff_base => '1 second')" \
          -c "SELECT status, channel, messages, due_now FROM loyalty.outbox_summary ORDER BY status, channel"
echo "two senders (bash + psql), delivering by appending to a file; 'bounce-*' recipients fail:"
sender() {
    pg env PGHOST="$dir" PGPORT="$port" PGDATABASE=shop OUTBOX_FILE="$dir/delivered.log" BATCH=50 RECHECK=1 IDLE_EXIT=3 \
        DELIVER='case $RECIPIENT in bounce*) echo "550 unknown recipient $RECIPIENT" >&2; exit 1;; esac; echo "$RECIPIENT $TEMPLATE $(cat)" >> $OUTBOX_FILE' \
        bash "$LOYALTY_SRC/examples/sender.sh"
}
sender 2>&1 | sed 's/^/  /' &
sender 2>&1 | sed 's/^/  /'
wait
echo "delivered: $(wc -l < "$dir/delivered.log") lines, e.g.:"
head -n 2 "$dir/delivered.log" | cut -c1-400 | sed 's/^/  /'
psql_shop -c "SELECT status, channel, messages, due_now, last_sent_at IS NOT NULL AS any_sent FROM loyalty.outbox_summary ORDER BY status, channel" \
          -c "SELECT message_id, recipient, attempts, last_error FROM loyalty.dead_letters"
echo "campaign performance (messages just sent: the 30-day windows have not elapsed, so 'too early'):"
psql_shop -c "SELECT name, sent, held_out, failed, pending, expired, suppressed, treated_customers, holdout_customers, verdict FROM loyalty.campaign_performance WHERE messages > 0 ORDER BY campaign_id"

echo "== the week for the shop owner (loyalty.digest_figures; send_digest() mails it on Monday mornings)"
psql_shop -c "SELECT f->>'orders' AS orders, f->>'revenue' AS revenue, f->>'new_customers' AS new_customers, f->>'returning_customers' AS returning_customers, f->>'repeat_rate' AS repeat_rate, f->'points'->>'issued' AS points_issued FROM loyalty.digest_figures(now() - interval '7 days', now()) f"
digest_html=${DEMO_DIGEST_HTML:-/tmp/loyalty-demo-digest.html}
psql_shop -At -c "SELECT loyalty.report_html(now() - interval '7 days', now())" > "$digest_html"
echo "the same week as the owner's HTML page (loyalty.report_html): $digest_html"

echo "== pg_cron jobs (loyalty.schedule(); rerunning it updates them in place)"
psql_shop -c "SELECT job_name, schedule, command, action FROM loyalty.schedule()"

echo "== a row loyalty cannot use never blocks checkout; it waits in loyalty.rejected_rows"
psql_shop -c "INSERT INTO public.orders (customer_id, total, created_at, status) VALUES (1, -5, now(), 'paid')"
sleep 1
psql_shop -c "SELECT source, reason, rows FROM loyalty.rejected_summary"
psql_shop -c "SELECT application_name, state FROM pg_stat_activity WHERE backend_type = 'loyalty worker'"
echo "demo done (the throwaway cluster is removed)"
