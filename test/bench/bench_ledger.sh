#!/usr/bin/env bash
# Rewards ledger benchmark (issue 4), as root on Debian 12:
#   bash test/bench/bench_ledger.sh [customers]
# pgbench, 8 clients, 70% loyalty.earn / 30% loyalty.redeem over 100,000
# customers, as a ratio to the same pgbench inserting one row per transaction
# into a plain table with a primary key (target >= 0.5). Then checks that no
# deadlock happened and loyalty.verify_ledger() is empty.
set -euo pipefail
CUSTOMERS=${1:-100000}
SECONDS_PER_RUN=${PGBENCH_SECONDS:-30}
CLIENTS=8

LOYALTY_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export LOYALTY_SRC
. "$LOYALTY_SRC/test/setup.sh"
loyalty_setup
. "$LOYALTY_SRC/test/bench/lib.sh"
bench_start

echo "== $CUSTOMERS customers, each with a starting balance"
psql_db <<SQL
CREATE EXTENSION loyalty;
CREATE TABLE plain_entries (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer_id text NOT NULL,
                            points bigint NOT NULL, idempotency_key text NOT NULL);
SELECT count(loyalty.earn(i::text, 100000, 'opening balance', 'open-' || i)) FROM generate_series(1, $CUSTOMERS) i;
VACUUM ANALYZE;
CHECKPOINT;
SQL

work=$(mktemp -d)
chmod 755 "$work"
cat > "$work/plain.sql" <<SQL
\set c random(1, $CUSTOMERS)
\set p random(1, 100)
INSERT INTO plain_entries (customer_id, points, idempotency_key) VALUES (:c, :p, gen_random_uuid()::text);
SQL
cat > "$work/ledger.sql" <<SQL
\set c random(1, $CUSTOMERS)
\set p random(1, 100)
\set r random(1, 100)
\if :r <= 70
SELECT loyalty.earn(:c::text, :p, 'purchase', gen_random_uuid()::text);
\else
SELECT loyalty.redeem(:c::text, :p, 'voucher', gen_random_uuid()::text);
\endif
SQL
chmod 644 "$work"/*.sql

run() {
    pg pgbench -n -M prepared -c $CLIENTS -j 2 -T "$SECONDS_PER_RUN" -f "$1" -h "$BENCH_DIR" -p "$BENCH_PORT" bench 2>&1 \
        | tee "$work/$(basename "$1").out" | awk '/^tps = /{print $3}'
}
echo "== pgbench, $CLIENTS clients, ${SECONDS_PER_RUN}s per run"
plain=$(run "$work/plain.sql")
echo "plain table with a primary key: $plain tps"
ledger=$(run "$work/ledger.sql")
echo "70% earn / 30% redeem:          $ledger tps"
failed=$(awk '/number of failed transactions/{print $5}' "$work/ledger.sql.out")
grep -E "^(number of|latency average)" "$work/ledger.sql.out" || true
deadlocks=$(psql_db -c "SELECT deadlocks FROM pg_stat_database WHERE datname = 'bench'")
mismatches=$(psql_db -c "SELECT count(*) FROM loyalty.verify_ledger()")
entries=$(psql_db -c "SELECT count(*) FROM loyalty.ledger WHERE reason IN ('purchase', 'voucher')")
echo "ledger entries written: $entries; deadlocks: $deadlocks; verify_ledger() rows: $mismatches; failed transactions: ${failed:-0}"
awk -v l="$ledger" -v p="$plain" 'BEGIN{r=l/p; printf "RATIO ledger/plain: %.2f (target >= 0.5: %s)\n", r, (r >= 0.5 ? "met" : "NOT MET")}'
[ "$deadlocks" = 0 ] && [ "$mismatches" = 0 ] || { echo "ledger check FAILED"; exit 1; }
rm -rf "$work"
