# Shared by the benchmarks: a throwaway cluster tuned for this 2-core machine.
# Source after test/setup.sh; defines psql_db, bench_start, bench_stop.
bench_start() {
    loyalty_cluster_start loyalty-bench bench <<'CONF'
shared_buffers = 2GB
work_mem = 64MB
maintenance_work_mem = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
# off while timing refresh (its rounds would race the measured calls);
# bench_worker_on turns it on for the insert benchmark
loyalty.worker_enabled = off
CONF
    BENCH_DIR=$CLUSTER_DIR
    BENCH_PORT=$CLUSTER_PORT
    trap bench_stop EXIT
}

bench_worker_on() {
    echo "loyalty.worker_enabled = on" >> "$BENCH_DIR/data/postgresql.conf"
    pg pg_ctl -D "$BENCH_DIR/data" -l "$BENCH_DIR/server.log" -w restart >/dev/null
}

bench_stop() {
    pg pg_ctl -D "$BENCH_DIR/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$BENCH_DIR"
}

psql_db() { pg psql -X -q -At -h "$BENCH_DIR" -p "$BENCH_PORT" -d bench -v ON_ERROR_STOP=1 "$@"; }

# seconds (float) that one SQL statement takes, measured by the server's clock
time_sql() {
    psql_db -c "SELECT extract(epoch FROM clock_timestamp())" -c "$1" -c "SELECT extract(epoch FROM clock_timestamp())" \
        | awk 'NR==1{s=$1} {e=$1} END{printf "%.3f", e-s}'
}

# peak anonymous (private) memory in MB of the backend running $1, sampled every 20 ms
peak_mem_sql() {
    local sql=$1 pidfile peak=0
    pidfile=$(mktemp)
    ( psql_db -c "SELECT pg_backend_pid()" -c "$sql" > "$pidfile" ) &
    local job=$!
    local pid=""
    while kill -0 $job 2>/dev/null; do
        [ -z "$pid" ] && pid=$(head -n1 "$pidfile" 2>/dev/null)
        if [ -n "$pid" ] && [ -r /proc/$pid/status ]; then
            local kb
            kb=$(awk '/^RssAnon:/{print $2}' /proc/$pid/status 2>/dev/null || echo 0)
            [ -n "$kb" ] && [ "$kb" -gt "$peak" ] && peak=$kb
        fi
        sleep 0.02
    done
    wait $job
    rm -f "$pidfile"
    echo $((peak / 1024))
}

# The benchmarks' shop: $1 customers, each ordering once and then ~2 more
# times on average with a heavy tail (customer drawn as random()^2), each
# active over their own part of two years from $2 (SQL, default 2024-11-01),
# 3% refunded; seeded, so every benchmark builds the same shop. Attached with
# track_orders (the backfill, timed, is excluded from every ratio).
bench_shop() {
    local customers=$1 start=${2:-"timestamptz '2024-11-01'"} t
    echo "== building a shop: $customers customers, ~$((customers * 3)) orders"
    psql_db <<SQL
CREATE EXTENSION loyalty;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, total numeric(10,2) NOT NULL,
                     created_at timestamptz NOT NULL, status text NOT NULL);
SELECT setseed(0.7);
INSERT INTO orders
SELECT g, c,
       round(((10 + (c * 104729) % 150) * (0.5 + random()))::numeric, 2),   -- around the customer's own mean
       $start + random() * (0.1 + 0.9 * ((c * 7919) % 1000) / 1000.0) * interval '730 days',
       CASE WHEN random() < 0.97 THEN 'paid' ELSE 'refunded' END
  FROM (SELECT g, CASE WHEN g <= $customers THEN g ELSE 1 + floor(random() ^ 2 * $customers)::bigint END AS c
          FROM generate_series(1, $customers * 3) g) s;
VACUUM ANALYZE orders;
SQL
    t=$(time_sql "SELECT loyalty.track_orders('orders', 'customer_id', 'total', 'created_at', 'id', 'status', ARRAY['paid'], batch_size => 50000)")
    echo "backfill (track_orders, excluded from the ratios): ${t}s"
    psql_db -c "VACUUM ANALYZE loyalty.orders, loyalty.customer_state"
}

# The baseline: the RFM a shop would write by hand (GROUP BY customer, then
# NTILE(5) for R, F and M), materialised.
HAND="DROP TABLE IF EXISTS hand_rfm; CREATE TABLE hand_rfm AS
WITH agg AS (SELECT customer_id, max(created_at) AS last_order_at, count(*) AS frequency, sum(total) AS monetary
               FROM orders WHERE status = 'paid' GROUP BY customer_id)
SELECT customer_id, last_order_at, frequency, monetary,
       ntile(5) OVER (ORDER BY last_order_at) AS r_score,
       ntile(5) OVER (ORDER BY frequency) AS f_score,
       ntile(5) OVER (ORDER BY monetary) AS m_score
  FROM agg"
