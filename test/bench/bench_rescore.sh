#!/usr/bin/env bash
# The pass over everyone of the stored churn/CLV scores (issue 12), as root
# on Debian 12:
#   bash test/bench/bench_rescore.sh [customers] [pairs]
# Builds the shop of bench_foundation.sh (1,000,000 customers, ~3,000,000
# orders), runs refresh() once (fits, every score stored), then times, in
# back-to-back pairs (a busy machine slows both of a pair alike):
#   - the baseline: CREATE TABLE AS SELECT * FROM loyalty.stored_scores (the
#     same rows written once to a new table; it does not depend on how
#     _store_scores writes nor on the table's fillfactor)
#   - loyalty._store_scores(as_of, NULL) on the next day, so every row's
#     values change and every row is rewritten (the first refresh() of a UTC
#     day, or a new model in force, does this)
# and prints the median of the pairs' ratios. Before each timed statement,
# not timed: VACUUM of the table (autovacuum's work between two daily
# passes) and CHECKPOINT (so both pay the same full-page writes).
set -euo pipefail
CUSTOMERS=${1:-1000000}
PAIRS=${2:-5}

LOYALTY_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export LOYALTY_SRC
. "$LOYALTY_SRC/test/setup.sh"
loyalty_setup
. "$LOYALTY_SRC/test/bench/lib.sh"
bench_start

bench_shop "$CUSTOMERS"
t=$(time_sql "SELECT * FROM loyalty.refresh('2026-11-01 12:00')")
echo "first refresh() (fits, every score stored): ${t}s"
psql_db -c "VACUUM ANALYZE loyalty.stored_scores"
n=$(psql_db -c "SELECT count(*) FROM loyalty.customer_state")
echo "customers: $n; model in force: $(psql_db -c "SELECT model FROM loyalty.current_model"); stored_scores: $(psql_db -c "SELECT pg_size_pretty(pg_table_size('loyalty.stored_scores'))")"

prep() { psql_db -c "VACUUM loyalty.stored_scores" -c "CHECKPOINT"; }
median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
echo "== $PAIRS pairs: CREATE TABLE AS of the stored rows, then the pass over everyone on the next day"
ratios=""
for i in $(seq 1 "$PAIRS"); do
    prep
    base=$(time_sql "CREATE TABLE bench_copy AS SELECT * FROM loyalty.stored_scores")
    psql_db -c "DROP TABLE bench_copy"
    prep
    day=$(psql_db -c "SELECT (timestamptz '2026-11-01 12:00' + $i * interval '1 day')::text")
    written=$(psql_db -c "SELECT extract(epoch FROM clock_timestamp())" -c "SELECT loyalty._store_scores('$day', NULL)" \
                      -c "SELECT extract(epoch FROM clock_timestamp())" | tr '\n' ' ')
    pass=$(echo "$written" | awk '{printf "%.3f", $3 - $1}')
    rows=$(echo "$written" | awk '{print $2}')
    [ "$rows" = "$n" ] || { echo "the pass wrote $rows rows, not $n" >&2; exit 1; }
    r=$(awk -v p="$pass" -v b="$base" 'BEGIN {printf "%.2f", p / b}')
    echo "pair $i: CREATE TABLE AS ${base}s, pass over everyone ${pass}s ($rows rows), ratio $r"
    ratios="$ratios $r"
done
echo "hot updates / updates of stored_scores: $(psql_db -c "SELECT n_tup_hot_upd || ' / ' || n_tup_upd FROM pg_stat_user_tables WHERE relid = 'loyalty.stored_scores'::regclass")"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "pass over everyone / CREATE TABLE AS, median of %s pairs: %s\n" "$PAIRS" "$(echo $ratios | tr ' ' '\n' | median)"
