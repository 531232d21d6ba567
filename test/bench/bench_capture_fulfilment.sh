#!/usr/bin/env bash
# What the fulfilment columns of track_orders cost the capture path:
#   bash test/bench/bench_capture_fulfilment.sh DBNAME [rows]
# Needs a running server reachable through the usual PG* environment
# variables and the loyalty extension installed in DBNAME (the benchmark
# drops and re-creates it: use a scratch database).
#
# Two copies of one orders table (ROWS rows, default 50,000), one tracked
# without fulfilment columns, one with paid, dispatched, delivered and a date
# promise. Prints, for each, the backfill at attach, and applying (apply_events)
# 20,000 captured updates of an untracked-by-operations column (amount) and
# of a fulfilment column (dispatch time), and the ratios with / without.
# Every captured version of an order with fulfilment columns goes through
# loyalty._record_fulfilment (the writer record_fulfilment uses), so the
# ratio is expected above 1; it must stay flat as the batch grows (a
# quadratic match of versions to orders once made it 60).
set -euo pipefail
DB=${1:?usage: bench_capture_fulfilment.sh DBNAME [rows]}
ROWS=${2:-50000}
UPD=$(( ROWS < 20000 ? ROWS : 20000 ))

psql_db() { psql -X -q -At -d "$DB" -v ON_ERROR_STOP=1 "$@"; }
time_sql() {
    psql_db -c "SET client_min_messages = warning" -c "SELECT extract(epoch FROM clock_timestamp())" -c "$1" \
            -c "SELECT extract(epoch FROM clock_timestamp())" \
        | awk 'NR==1{s=$1} {e=$1} END{printf "%.3f", e-s}'
}

psql_db <<SQL
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS loyalty CASCADE;
DROP TABLE IF EXISTS bench_cf_plain, bench_cf_ful;
CREATE EXTENSION loyalty;
CREATE TABLE bench_cf_plain (id bigint PRIMARY KEY, customer bigint, total numeric, placed timestamptz,
                             paid timestamptz, shipped timestamptz, delivered timestamptz, promise date);
INSERT INTO bench_cf_plain
SELECT i, i % 5000, 10 + i % 90, '2026-01-01'::timestamptz + i * interval '1 minute',
       '2026-01-01'::timestamptz + i * interval '1 minute' + interval '5 minutes',
       '2026-01-02'::timestamptz + i * interval '1 minute', '2026-01-04'::timestamptz + i * interval '1 minute',
       '2026-01-05'::date + i / 1440
  FROM generate_series(1, $ROWS) i;
CREATE TABLE bench_cf_ful (LIKE bench_cf_plain INCLUDING ALL);
INSERT INTO bench_cf_ful SELECT * FROM bench_cf_plain;
ANALYZE bench_cf_plain, bench_cf_ful;
SQL

bp=$(time_sql "SELECT loyalty.track_orders('bench_cf_plain', 'customer', 'total', 'placed', 'id')")
bf=$(time_sql "SELECT loyalty.track_orders('bench_cf_ful', 'customer', 'total', 'placed', 'id', paid_at_column => 'paid',
                       dispatched_at_column => 'shipped', delivered_at_column => 'delivered', promised_at_column => 'promise')")
psql_db -c "UPDATE bench_cf_plain SET total = total + 1 WHERE id <= $UPD"
ap=$(time_sql "SELECT loyalty.apply_events(100000)")
psql_db -c "UPDATE bench_cf_ful SET total = total + 1 WHERE id <= $UPD"
af=$(time_sql "SELECT loyalty.apply_events(100000)")
psql_db -c "UPDATE bench_cf_ful SET shipped = shipped + interval '1 hour' WHERE id <= $UPD"
as=$(time_sql "SELECT loyalty.apply_events(100000)")

printf '%-52s %9s %9s %7s\n' "" "plain s" "fulfil s" "ratio"
printf '%-52s %9s %9s %7.2f\n' "backfill of $ROWS rows at attach" "$bp" "$bf" "$(echo "$bf / $bp" | bc -l)"
printf '%-52s %9s %9s %7.2f\n' "apply $UPD captured updates (amount)" "$ap" "$af" "$(echo "$af / $ap" | bc -l)"
printf '%-52s %9s %9s %7.2f\n' "apply $UPD captured updates (dispatch time)" "$ap" "$as" "$(echo "$as / $ap" | bc -l)"
