#!/usr/bin/env bash
# Watchdog benchmark (issue 15), as root on Debian 12:
#   bash test/bench/bench_health.sh [customers] [rounds]
# CUSTOMERS (default 1,000,000) customers in loyalty.customer_state, as many
# orders, profiles (half with an email opt-in), outbox messages spread over 90
# days in 5 active campaigns (2% dead), 1,000 due messages, CUSTOMERS/10
# dispatch deadlines, the pg_cron jobs scheduled. Times loyalty.check_health()
# against a baseline in the same run: one full scan of customer_state
# (SELECT count(*)). Prints the median of ROUNDS (default 5) of each and the
# ratio (target: at most 5 such scans, so that running it every 5 minutes
# costs well under 1% of a core; the checks read index ranges and bounded
# counts, so the ratio falls as the shop grows).
set -euo pipefail
CUSTOMERS=${1:-1000000}
ROUNDS=${2:-5}

LOYALTY_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export LOYALTY_SRC
. "$LOYALTY_SRC/test/setup.sh"
loyalty_setup
. "$LOYALTY_SRC/test/bench/lib.sh"
bench_start

psql_db <<SQL
SET client_min_messages = warning;
CREATE EXTENSION pg_cron;
CREATE EXTENSION loyalty;
INSERT INTO loyalty.customer_state (customer_id, first_order_at, last_order_at, orders, repeat_orders, purchase_days,
                                    gross_spend, refunded, net_spend, avg_spend, first_day_spend)
SELECT 'c' || i, now() - interval '400 days', now() - (i % 400) * interval '1 day', 1 + i % 5, i % 5, 1 + i % 5, 50, 0, 50, 10, 10
  FROM generate_series(1, $CUSTOMERS) i;
-- what the data-quality and operations checks read: one order per customer
-- over 400 days (amounts 10..109), a profile with an email address for every
-- customer and an email opt-in for every second one, and dispatch deadlines
-- for a tenth of the orders over 5 weeks
ALTER TABLE loyalty.orders DISABLE TRIGGER USER;
INSERT INTO loyalty.orders (order_ref, customer_id, amount, ordered_at, status, counted)
SELECT 'o' || i, 'c' || i, 10 + i % 100, now() - (i % 400) * interval '1 day', 'paid', true FROM generate_series(1, $CUSTOMERS) i;
ALTER TABLE loyalty.orders ENABLE TRIGGER USER;
INSERT INTO loyalty.profiles (customer_id, email) SELECT 'c' || i, 'c' || i || '@example.com' FROM generate_series(1, $CUSTOMERS) i;
INSERT INTO loyalty.consents (customer_id, channel, granted, changed_at, change_id)
SELECT 'c' || i, 'email', true, now(), i FROM generate_series(1, $CUSTOMERS, 2) i;
INSERT INTO loyalty.order_deadlines (order_ref, kind, due_at, done_at)
SELECT 'o' || i, 'late_dispatch', now() - (i % 35) * interval '1 day', now() - (i % 35) * interval '1 day' - interval '1 hour'
  FROM generate_series(1, $CUSTOMERS / 10) i;
UPDATE loyalty.campaigns SET active = true WHERE campaign_id IN (SELECT campaign_id FROM loyalty.campaigns ORDER BY campaign_id LIMIT 5);
-- finished messages: no queue rows to maintain
ALTER TABLE loyalty.outbox DISABLE TRIGGER USER;
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, status, created_at, due_at, sent_at)
SELECT 'b:' || i, (SELECT campaign_id FROM loyalty.campaigns WHERE active ORDER BY campaign_id OFFSET i % 5 LIMIT 1),
       'c' || i, 'email', 'x', 'x', CASE WHEN i % 50 = 0 THEN 'dead' ELSE 'sent' END,
       now() - (i % 90) * interval '1 day' - interval '1 hour', now() - (i % 90) * interval '1 day', now() - (i % 90) * interval '1 day'
  FROM generate_series(1, $CUSTOMERS) i;
ALTER TABLE loyalty.outbox ENABLE TRIGGER USER;
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, due_at)
SELECT 'q:' || i, (SELECT min(campaign_id) FROM loyalty.campaigns), 'c' || i, 'email', 'x', 'x', now() - interval '1 minute'
  FROM generate_series(1, 1000) i;
SELECT count(*) FROM loyalty.schedule();
SELECT loyalty.configure_health(ops_recipient => 'ops@example.com');
VACUUM ANALYZE;
SQL
psql_db -c "SELECT count(*) FROM loyalty.check_health()" >/dev/null   # warm

median() { sort -n | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
health=() base=()
for r in $(seq "$ROUNDS"); do
    h=$(time_sql "SELECT count(*) FROM loyalty.check_health()")
    b=$(time_sql "SELECT count(*) FROM loyalty.customer_state")
    echo "round $r: check_health ${h}s, scan of customer_state ${b}s"
    health+=("$h"); base+=("$b")
done
mh=$(printf '%s\n' "${health[@]}" | median)
mb=$(printf '%s\n' "${base[@]}" | median)
psql_db -c "SELECT \"check\", status FROM loyalty.health WHERE status <> 'ok' ORDER BY 1"
echo "customers $CUSTOMERS: check_health() median ${mh}s, baseline (count(*) of customer_state) ${mb}s, ratio $(awk -v h="$mh" -v b="$mb" 'BEGIN{printf "%.2f", h/b}')"
