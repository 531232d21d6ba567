#!/usr/bin/env bash
# The RFM step of refresh() (issue 12), as root on Debian 12:
#   bash test/bench/bench_rfm.sh [customers]
# Builds the shop of bench_foundation.sh (1,000,000 customers, ~3,000,000
# orders) and prints, measured in this run, the full RFM pass that refresh()
# runs, loyalty._rfm_score(true, now(), NULL), as a ratio to the hand-written
# GROUP BY + NTILE(5) SQL of bench_foundation.sh:
#   - after 1,000 new orders (0.1% of the customers; the captured changes
#     applied first, as refresh() does before scoring): the median of 5
#     back-to-back pairs (a busy machine slows both of a pair alike);
#   - every score written (customer_rfm emptied first), median of 3 pairs.
# The step runs as refresh() runs it: in one transaction holding the refresh
# lock, committed.
set -euo pipefail
CUSTOMERS=${1:-1000000}

LOYALTY_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export LOYALTY_SRC
. "$LOYALTY_SRC/test/setup.sh"
loyalty_setup
. "$LOYALTY_SRC/test/bench/lib.sh"
bench_start

bench_shop "$CUSTOMERS"
t=$(time_sql "SELECT * FROM loyalty.refresh(fit_models => false)")
echo "first refresh(fit_models => false): ${t}s"

STEP="BEGIN; SELECT pg_advisory_xact_lock(74200, 2); SELECT loyalty._rfm_score(true, now(), NULL); COMMIT"
median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
ratio() { awk -v a="$1" -v h="$2" 'BEGIN {printf "%.3f", a / h}'; }

echo "== the RFM step after 1,000 new orders vs hand-written SQL (5 pairs)"
NEW=$((CUSTOMERS / 1000))
new_ratios=""
for i in 1 2 3 4 5; do
    base=$(psql_db -c "SELECT max(id) FROM orders")
    psql_db -c "INSERT INTO orders SELECT $base + g, 1 + (g * 7919 + $i * 131) % $CUSTOMERS, 25, now() - interval '1 hour', 'paid' FROM generate_series(1, $NEW) g"
    psql_db -c "DO \$\$ BEGIN WHILE loyalty.apply_events(50000) > 0 LOOP END LOOP; END \$\$"
    h=$(time_sql "$HAND"); s=$(time_sql "$STEP")
    echo "pair $i: hand-written ${h}s, RFM step ${s}s"
    new_ratios="$new_ratios $(ratio "$s" "$h")"
done

echo "== the RFM step writing every score vs hand-written SQL (3 pairs)"
first_ratios=""
for i in 1 2 3; do
    psql_db -c "TRUNCATE loyalty.customer_rfm"
    h=$(time_sql "$HAND"); s=$(time_sql "$STEP")
    echo "pair $i: hand-written ${h}s, RFM step ${s}s"
    first_ratios="$first_ratios $(ratio "$s" "$h")"
done

echo
echo "== results ($CUSTOMERS customers)"
echo "RFM step after $NEW new orders / hand-written SQL: $(echo $new_ratios | tr ' ' '\n' | median)  (median of 5 pairs:$new_ratios)"
echo "RFM step, every score written / hand-written SQL: $(echo $first_ratios | tr ' ' '\n' | median)  (median of 3 pairs:$first_ratios)"
