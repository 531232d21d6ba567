#!/usr/bin/env bash
# Decisions benchmark (issue 12), as root on Debian 12:
#   bash test/bench/bench_decisions.sh [customers]
# Builds the shop of bench_foundation.sh (1,000,000 customers, ~3,000,000
# orders) and prints, all measured in this run on this machine:
#   - reading every row of loyalty.customer_scores (stored scores) as a ratio
#     to a scan of loyalty.customer_state, both written out whole by COPY
#     (target <= 3)
#   - the whole loyalty.refresh() with every enabled model fit (BG/NBD,
#     the heuristic, Gamma-Gamma, the holdout comparison when due) and
#     storing every customer's scores, as a ratio to the hand-written
#     GROUP BY + NTILE(5) RFM (target <= 0.5); the first refresh of the day
#     (holdout comparison, every score rewritten) and a steady one
# The machine is shared: run it when nothing else runs, or read the ratios
# as upper bounds.
set -euo pipefail
CUSTOMERS=${1:-1000000}

LOYALTY_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export LOYALTY_SRC
. "$LOYALTY_SRC/test/setup.sh"
loyalty_setup
. "$LOYALTY_SRC/test/bench/lib.sh"
bench_start

bench_shop "$CUSTOMERS" "now() - interval '730 days'"

best() { sort -n | head -n1; }

echo "== refresh() with every enabled fit vs hand-written SQL"
hand=$(for i in 1 2 3; do time_sql "$HAND"; echo; done | best)
echo "hand-written GROUP BY + NTILE, materialised (best of 3): ${hand}s"
first=$(time_sql "SELECT * FROM loyalty.refresh()")
echo "loyalty.refresh(), first (holdout comparison, every score written): ${first}s"
steady=$(for i in 1 2; do time_sql "SELECT * FROM loyalty.refresh()"; echo; done | best)
echo "loyalty.refresh(), next run (best of 2): ${steady}s"
psql_db -c "SELECT model, status, customers, iterations, round(loglik::numeric, 1) AS loglik, note FROM loyalty.model_fits ORDER BY fit_id DESC LIMIT 3" \
        -c "SELECT model, reason FROM loyalty.current_model" \
        -c "SELECT model, count(*) FROM loyalty.customer_scores GROUP BY 1"
psql_db -c "VACUUM ANALYZE loyalty.stored_scores, loyalty.customer_state"

echo "== reading every row: customer_scores vs customer_state (COPY to /dev/null, best of 3)"
state=$(for i in 1 2 3; do time_sql "COPY (SELECT * FROM loyalty.customer_state) TO '/dev/null'"; echo; done | best)
scores=$(for i in 1 2 3; do time_sql "COPY (SELECT * FROM loyalty.customer_scores) TO '/dev/null'"; echo; done | best)
echo "customer_state: ${state}s, customer_scores: ${scores}s"

echo
echo "== results ($CUSTOMERS customers)"
awk -v h="$hand" -v f="$first" -v s="$steady" -v st="$state" -v sc="$scores" 'BEGIN {
    printf "customer_scores read / customer_state scan      : %.2f  (target <= 3)\n", sc / st;
    printf "refresh() with fits / hand-written, first run   : %.2f  (target <= 0.5)\n", f / h;
    printf "refresh() with fits / hand-written, steady run  : %.2f  (target <= 0.5)\n", s / h;
}'
