#!/usr/bin/env bash
# Operations benchmark (issue 14), as root on Debian 12:
#   bash test/bench/bench_operations.sh [orders] [in_flight]
# Builds a shop of 1,000,000 watched orders of which 50,000 are in flight
# (placed, paid, dispatched or in transit in the last five days; the rest
# delivered), with SLAs and a business calendar set, and prints, measured in
# this run on this machine:
#   - loyalty.scan_operations() every five minutes: a scan five minutes after
#     the last one, with five minutes of fulfilment traffic in between, as a
#     ratio to one read of the 50,000 in-flight rows through an index
#     (loyalty.orders by ordered_at, warm, best of 3, taken just before each
#     scan); target <= 5 (median and best of 5 rounds)
#   - the same ratio for a rerun at the same as_of, for a scan at an earlier
#     as_of (it looks at every deadline up to then), and for the first scan
#     (it computes every order's deadlines and the issues of the whole history)
# The machine is shared (2 cores, other helpers' tests may run): each timed
# figure is the best of three rounds where it can be repeated.
# Honours PG_BINDIR (a relocated PostgreSQL copy), like the other benchmarks.
set -euo pipefail
ORDERS=${1:-1000000}
IN_FLIGHT=${2:-50000}

LOYALTY_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export LOYALTY_SRC
. "$LOYALTY_SRC/test/setup.sh"
loyalty_setup
. "$LOYALTY_SRC/test/bench/lib.sh"
bench_start
BUILD_START=$(date +%s)

# Built with direct SQL (the rows record_order / record_fulfilment /
# record_shipment_event would write), set-based.
echo "== building a shop: $ORDERS watched orders, $IN_FLIGHT in flight"
# the rounds of traffic below are dated up to 25 minutes after the first
# scan's as_of, which may be ahead of the clock when the build is quick
psql_db -c "ALTER DATABASE bench SET loyalty.future_tolerance = 3600"
psql_db <<SQL
CREATE EXTENSION loyalty;
SELECT setseed(0.14);
SELECT (loyalty.configure_operations(time_zone => 'Europe/Berlin', dispatch_within => '1 day', deliver_within => '3 days',
                                    stall_after => '2 days', payment_within => '1 day', refund_within => '5 days',
                                    working_days => ARRAY[1,2,3,4,5], cutoff => '14:00')).time_zone;
INSERT INTO loyalty.business_holidays VALUES ('2026-12-25', 'Christmas'), ('2026-12-26', 'Boxing Day'), ('2027-01-01', 'New Year');
-- delivered orders over the last year (5 to 365 days ago), then the in-flight
-- ones over the last five days, in time order (as a shop writes them)
CREATE TEMP TABLE o AS
SELECT g, 'o' || g AS ref, (1 + (g::bigint * 7919) % ($ORDERS / 3))::text AS customer,
       CASE WHEN g <= $ORDERS - $IN_FLIGHT
            THEN now() - interval '365 days' + (g::float8 / ($ORDERS - $IN_FLIGHT)) * interval '360 days'
            ELSE now() - interval '5 days' + ((g - ($ORDERS - $IN_FLIGHT))::float8 / $IN_FLIGHT) * interval '5 days' END AS at,
       random() AS r
  FROM generate_series(1, $ORDERS) g;
INSERT INTO loyalty.orders (order_ref, customer_id, amount, ordered_at, status, counted)
SELECT ref, customer, 20 + g % 80, at, 'paid', true FROM o ORDER BY g;
-- stages: delivered orders were paid at once, dispatched within 4-34 hours
-- and delivered 1-4 days later (some late). In flight, as a shop runs: paid
-- at once (1% never), dispatched 4-34 hours after payment once that time has
-- come; the carrier scans a parcel 3 hours after dispatch and every 20 hours
-- after that (a few parcels stall: no scan after the first).
INSERT INTO loyalty.order_lifecycle (order_ref, paid_at, dispatched_at, delivered_at, created_at, updated_at)
SELECT ref, paid, CASE WHEN g <= $ORDERS - $IN_FLIGHT OR disp <= now() THEN disp END,
       CASE WHEN g <= $ORDERS - $IN_FLIGHT THEN disp + (1 + 3 * r) * interval '1 day' END, at, at
  FROM (SELECT g, ref, at, r,
               CASE WHEN g <= $ORDERS - $IN_FLIGHT OR r >= 0.01 THEN at + interval '2 minutes' END AS paid,
               CASE WHEN g <= $ORDERS - $IN_FLIGHT OR r >= 0.01 THEN at + interval '2 minutes' + interval '4 hours' + r * interval '30 hours' END AS disp
          FROM o) x
 ORDER BY g;
INSERT INTO loyalty.shipment_events (order_ref, status, carrier_status, at, tracking_code)
SELECT l.order_ref, 'in_transit', 'InTransit', l.dispatched_at + interval '3 hours' + k * interval '20 hours', 'T' || l.order_ref
  FROM loyalty.order_lifecycle l CROSS JOIN generate_series(0, 4) k
 WHERE l.dispatched_at IS NOT NULL
   AND l.dispatched_at + interval '3 hours' + k * interval '20 hours' < least(l.delivered_at, now())
   AND (k = 0 OR hashtext(l.order_ref) % 50 <> 0)
UNION ALL
SELECT l.order_ref, 'delivered', 'Delivered', l.delivered_at, 'T' || l.order_ref
  FROM loyalty.order_lifecycle l WHERE l.delivered_at IS NOT NULL
 ORDER BY 4;
SQL
psql_db -c "VACUUM ANALYZE"
echo "orders: $(psql_db -c 'SELECT count(*) FROM loyalty.orders'), lifecycle rows: $(psql_db -c 'SELECT count(*) FROM loyalty.order_lifecycle'), carrier events: $(psql_db -c 'SELECT count(*) FROM loyalty.shipment_events')"
echo "shop built in $(( $(date +%s) - BUILD_START ))s"

best() { sort -n | head -n1; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }

T0=$(psql_db -c "SELECT date_trunc('minute', now())")
echo "== first scan (computes the deadlines of all $ORDERS orders and the issues of the whole history)"
first=$(time_sql "SELECT * FROM loyalty.scan_operations('$T0')")
psql_db -c "SELECT kind, count(*), count(*) FILTER (WHERE resolved_at IS NULL) AS open FROM loyalty.order_issues GROUP BY 1 ORDER BY 1" | sed 's/^/  issues: /'
psql_db -c "VACUUM ANALYZE" -c "CHECKPOINT"

echo "== baseline: one read of the $IN_FLIGHT in-flight rows through an index"
FROM_AT=$(psql_db -c "SELECT ordered_at FROM loyalty.orders WHERE order_ref = 'o$((ORDERS - IN_FLIGHT + 1))'")
BASE="SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT count(*), sum(amount) FROM loyalty.orders WHERE ordered_at >= '$FROM_AT'"
psql_db -c "EXPLAIN (COSTS OFF) $(echo "$BASE" | sed 's/.*; SELECT/SELECT/')" -c "SELECT 1" >/dev/null
psql_db -c "$BASE" | tail -n1 | sed 's/^/  rows, sum: /'
base=$(for i in 1 2 3; do time_sql "$BASE"; echo; done | best)
echo "index read of the in-flight orders (warm, best of 3): ${base}s"

# Five minutes of a shop with 50,000 orders in flight: 50 new orders (with
# their fulfilment row), 50 paid, 50 dispatched, 50 delivered, 150 carrier
# events. Round k is dated k*5 minutes after T0.
traffic() {   # $1: round
    local at="timestamptz '$T0' + $1 * interval '5 minutes'"
    psql_db -c "SELECT count(loyalty.record_order('nc' || g, 'n$1-' || g, 30, $at - interval '2 minutes')),
                       count(loyalty.record_fulfilment('n$1-' || g)) FROM generate_series(1, 50) g" \
            -c "SELECT count(loyalty.record_fulfilment(l.order_ref, paid_at => $at - interval '1 minute'))
                  FROM (SELECT order_ref FROM loyalty.order_lifecycle WHERE paid_at IS NULL AND order_ref LIKE 'o%'
                         ORDER BY order_ref DESC OFFSET 50 * $1 LIMIT 50) l" \
            -c "SELECT count(loyalty.record_fulfilment(l.order_ref, dispatched_at => $at - interval '1 minute'))
                  FROM (SELECT order_ref FROM loyalty.order_lifecycle WHERE dispatched_at IS NULL AND paid_at IS NOT NULL
                         AND order_ref LIKE 'o%' ORDER BY order_ref OFFSET 50 * $1 LIMIT 50) l" \
            -c "SELECT count(loyalty.record_fulfilment(l.order_ref, delivered_at => $at - interval '1 minute')),
                       count(loyalty.record_shipment_event(l.order_ref, 'Delivered', $at - interval '1 minute', 'T' || l.order_ref))
                  FROM (SELECT order_ref FROM loyalty.order_lifecycle WHERE delivered_at IS NULL AND dispatched_at IS NOT NULL
                         AND order_ref LIKE 'o%' ORDER BY order_ref OFFSET 50 * $1 LIMIT 50) l" \
            -c "SELECT count(loyalty.record_shipment_event(l.order_ref, 'out_for_delivery', $at - interval '30 seconds', 'T' || l.order_ref))
                  FROM (SELECT order_ref FROM loyalty.order_lifecycle WHERE delivered_at IS NULL AND dispatched_at IS NOT NULL
                         AND order_ref LIKE 'o%' ORDER BY order_ref DESC OFFSET 100 * $1 LIMIT 100) l" >/dev/null
}
echo "== scan_operations() every five minutes, with five minutes of traffic in between"
# Each round's scan is compared with an index read taken just before it
# (best of 3): on a shared machine the load moves between rounds, and a
# ratio within a round compares like with like.
steady=()
ratios=()
for k in 1 2 3 4 5; do
    traffic $k
    b=$(for i in 1 2 3; do time_sql "$BASE"; echo; done | best)
    t=$(time_sql "SELECT * FROM loyalty.scan_operations(timestamptz '$T0' + $k * interval '5 minutes')")
    psql_db -c "SELECT format('opened %s, resolved %s, withdrawn %s, open %s', opened, resolved, withdrawn, open_issues)
                  FROM loyalty.scan_operations(timestamptz '$T0' + $k * interval '5 minutes')" >/dev/null
    echo "  round $k: index read ${b}s, scan ${t}s, ratio $(ratio "$t" "$b")"
    steady+=("$t")
    ratios+=("$(ratio "$t" "$b")")
done
scan=$(printf '%s\n' "${steady[@]}" | best)
scan_median=$(printf '%s\n' "${steady[@]}" | median)
ratio_best=$(printf '%s\n' "${ratios[@]}" | best)
ratio_median=$(printf '%s\n' "${ratios[@]}" | median)
rerun=$(for i in 1 2 3; do time_sql "SELECT * FROM loyalty.scan_operations(timestamptz '$T0' + 5 * interval '5 minutes')"; echo; done | best)
early=$(time_sql "SELECT * FROM loyalty.scan_operations(timestamptz '$T0' - interval '1 day')")

echo
echo "== results (shared machine: 2 cores, other helpers' tests may have run at the same time)"
echo "index read of $IN_FLIGHT in-flight rows: ${base}s"
echo "scan_operations every 5 minutes, ratio to the index read of its round: median ${ratio_median}, best ${ratio_best} of 5 rounds  (target <= 5)"
echo "scan_operations every 5 minutes: best ${scan}s, median ${scan_median}s (first index read ${base}s)"
echo "rerun at the same as_of: ${rerun}s  ratio $(ratio "$rerun" "$base")"
echo "scan at an earlier as_of (every deadline up to then): ${early}s  ratio $(ratio "$early" "$base")"
echo "first scan ($ORDERS orders' deadlines, whole history): ${first}s  ratio $(ratio "$first" "$base")"
