#!/usr/bin/env bash
# BG/NBD fitting benchmark:
#   bash test/bench/bench_btyd.sh DBNAME [customers]
# Needs a running server reachable through the usual PG* environment
# variables and the loyalty extension installed in DBNAME.
#
# Simulates CUSTOMERS (default 1,000,000) BG/NBD customers with a seeded
# generator (r = 0.25, alpha = 4, a = 0.8, b = 2.5; first purchases spread
# over two years, observed to the end, times in whole days expressed in
# weeks, as shop data is), then prints the time of loyalty.bgnbd_fit over
# them as a ratio to one pass of sum(loyalty.bgnbd_loglik(...)) at fixed
# parameters over the same rows (target <= 25), best of 3 each.  Both run
# as single-process queries (max_parallel_workers_per_gather = 0), so the
# ratio compares the work done, not the number of cores.
# The simulated table (bench_btyd_customers) is kept for the next run.
# Then, with LIFETIMES_SRC and AUTOGRAD_SRC set (see the second part),
# times loyalty.bgnbd_fit and loyalty.mbgnbd_fit against Python lifetimes'
# BetaGeoFitter / ModifiedBetaGeoFitter on the same 1,000,000 rows with
# fractional-day inputs, median of 3 each (target ratio <= 0.25).
set -euo pipefail
DB=${1:?usage: bench_btyd.sh DBNAME [customers]}
CUSTOMERS=${2:-1000000}

psql_db() { psql -X -q -At -d "$DB" -v ON_ERROR_STOP=1 "$@"; }

# seconds (float) that one statement takes, by the server's clock
time_sql() {
    psql_db -c "SET max_parallel_workers_per_gather = 0" \
            -c "SELECT extract(epoch FROM clock_timestamp())" -c "$1" \
            -c "SELECT extract(epoch FROM clock_timestamp())" \
        | awk 'NR==1{s=$1} {e=$1} END{printf "%.3f", e-s}'
}
best() { sort -n | head -n1; }

have=-1
if [ "$(psql_db -c "SELECT to_regclass('bench_btyd_customers') IS NOT NULL")" = t ]; then
    have=$(psql_db -c "SELECT count(*) FROM bench_btyd_customers")
fi
if [ "$have" != "$CUSTOMERS" ]; then
    echo "== simulating $CUSTOMERS BG/NBD customers (seeded)"
    psql_db <<SQL
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench_btyd_customers;
CREATE FUNCTION pg_temp.rgamma(shape float8, rate float8) RETURNS float8
LANGUAGE plpgsql AS \$\$
DECLARE
    boost float8 := 1;
    d float8; c float8; z float8; v float8; u float8;
BEGIN
    IF shape < 1 THEN
        boost := (1 - random()) ^ (1 / shape);
        shape := shape + 1;
    END IF;
    d := shape - 1.0 / 3;
    c := 1 / sqrt(9 * d);
    LOOP
        z := sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random());
        v := (1 + c * z) ^ 3;
        CONTINUE WHEN v <= 0;
        u := 1 - random();
        IF ln(u) < 0.5 * z * z + d * (1 - v + ln(v)) THEN
            RETURN d * v / rate * boost;
        END IF;
    END LOOP;
END \$\$;
CREATE FUNCTION pg_temp.simulate(n int, r float8, alpha float8, a float8, b float8)
RETURNS TABLE (x int, t_x float8, t float8)
LANGUAGE plpgsql AS \$\$
DECLARE
    lam float8; p float8; ga float8; now_d float8; age_d int;
BEGIN
    FOR i IN 1..n LOOP
        lam := pg_temp.rgamma(r, alpha) / 7;        -- per day
        ga := pg_temp.rgamma(a, 1);
        p := ga / (ga + pg_temp.rgamma(b, 1));
        age_d := 1 + floor(random() * 730)::int;    -- days since first purchase
        x := 0; t_x := 0; now_d := 0;
        LOOP
            now_d := now_d - ln(1 - random()) / lam;
            EXIT WHEN now_d > age_d;
            IF floor(now_d) > t_x * 7 THEN           -- one purchase per day
                x := x + 1;
                t_x := floor(now_d) / 7;
            END IF;
            EXIT WHEN random() < p;
        END LOOP;
        t := age_d / 7.0;
        RETURN NEXT;
    END LOOP;
END \$\$;
SELECT setseed(0.2501);
CREATE TABLE bench_btyd_customers AS
SELECT * FROM pg_temp.simulate($CUSTOMERS, 0.25, 4.0, 0.8, 2.5);
VACUUM ANALYZE bench_btyd_customers;
SQL
fi
psql_db -c "SELECT 'customers: ' || count(*) || ', repeat buyers: ' || count(*) FILTER (WHERE x > 0)
                   || ', distinct (x, t_x, t): ' || (SELECT count(*) FROM (SELECT DISTINCT x, t_x, t FROM bench_btyd_customers) d)
            FROM bench_btyd_customers"

LOGLIK="SELECT sum(loyalty.bgnbd_loglik(x, t_x, t, 0.25, 4.0, 0.8, 2.5)) FROM bench_btyd_customers"
FIT="SELECT loyalty.bgnbd_fit(x, t_x, t) FROM bench_btyd_customers"

psql_db -c "$LOGLIK" >/dev/null    # warm the cache
echo "== one log-likelihood pass vs bgnbd_fit (best of 3 each)"
loglik=$(for i in 1 2 3; do time_sql "$LOGLIK"; echo; done | best)
echo "sum(loyalty.bgnbd_loglik(...)): ${loglik}s"
fit=$(for i in 1 2 3; do time_sql "$FIT"; echo; done | best)
echo "loyalty.bgnbd_fit(...): ${fit}s"
psql_db -c "SELECT 'fit: r = ' || round(r::numeric, 4) || ', alpha = ' || round(alpha::numeric, 4)
                   || ', a = ' || round(a::numeric, 4) || ', b = ' || round(b::numeric, 4)
                   || ', converged = ' || converged || ', iterations = ' || iterations
            FROM (SELECT (loyalty.bgnbd_fit(x, t_x, t)).* FROM bench_btyd_customers) f"
awk -v f="$fit" -v l="$loglik" 'BEGIN { r = f / l; printf "ratio fit / loglik pass: %.1f (target <= 25): %s\n", r, (r <= 25 ? "ok" : "FAIL") }'

# ---------------------------------------------------------------------------
# bgnbd_fit / mbgnbd_fit against Python lifetimes on the same 1,000,000 rows
# with fractional-day inputs (nothing to compress): target ratio <= 0.25.
# The fits run as the server plans them (parallel workers allowed).
# lifetimes needs autograd, which Debian does not package. Get both sources
# outside this repository (never commit them), e.g.
#   git clone https://github.com/CamDavidsonPilon/lifetimes /work/ext/lifetimes
#   git clone https://github.com/HIPS/autograd /work/ext/autograd
#   apt-get install python3-numpy python3-scipy python3-pandas python3-dill
# and point LIFETIMES_SRC and AUTOGRAD_SRC at them. Skipped when unset.
# PYTHON defaults to Debian's /usr/bin/python3.
if [ -z "${LIFETIMES_SRC:-}" ] || [ -z "${AUTOGRAD_SRC:-}" ]; then
    echo "== lifetimes comparison skipped: set LIFETIMES_SRC and AUTOGRAD_SRC (see the comment above)"
    exit 0
fi
PYTHON=${PYTHON:-/usr/bin/python3}
BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
tmp=$(mktemp -d /tmp/bench_btyd.XXXXXX)
chmod 755 "$tmp"
echo "== simulating $CUSTOMERS BG/NBD customers, fractional days (numpy, seeded)"
"$PYTHON" "$BENCH_SRC/btyd_simulate.py" "$CUSTOMERS" "$tmp/frac.csv"
chmod 644 "$tmp/frac.csv"
psql_db -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS bench_btyd_frac" \
        -c "CREATE TABLE bench_btyd_frac (x int, t_x float8, t float8)" \
        -c "\\copy bench_btyd_frac FROM '$tmp/frac.csv' WITH (FORMAT csv)" \
        -c "VACUUM ANALYZE bench_btyd_frac"
psql_db -c "SELECT 'rows: ' || count(*) || ', distinct (x, t_x, t): ' || count(DISTINCT (x, t_x, t)) FROM bench_btyd_frac"
time_par() {
    psql_db -c "SELECT extract(epoch FROM clock_timestamp())" -c "$1" \
            -c "SELECT extract(epoch FROM clock_timestamp())" \
        | awk 'NR==1{s=$1} {e=$1} END{printf "%.3f", e-s}'
}
echo "load average before: $(cut -d" " -f1-3 /proc/loadavg) ($(nproc) cores; a shared machine makes both sides slower)"
for m in "bgnbd BetaGeoFitter" "mbgnbd ModifiedBetaGeoFitter"; do
    set -- $m
    sqlt=$(for i in 1 2 3; do time_par "SELECT loyalty.${1}_fit(x, t_x, t) FROM bench_btyd_frac"; echo; done | median)
    fit=$(psql_db -c "SELECT round(r::numeric, 4) || ' ' || round(alpha::numeric, 4) || ' ' || round(a::numeric, 4) || ' ' || round(b::numeric, 4) || ' converged=' || converged FROM (SELECT (loyalty.${1}_fit(x, t_x, t)).* FROM bench_btyd_frac) f")
    lt=$(PYTHONPATH="$LIFETIMES_SRC:$AUTOGRAD_SRC" "$PYTHON" "$BENCH_SRC/btyd_lifetimes.py" "$tmp/frac.csv" "$2" 3)
    echo "loyalty.${1}_fit: ${sqlt}s (median of 3; r alpha a b = $fit)"
    echo "lifetimes $2.fit: ${lt%% *}s (median of 3; ${lt#* })"
    awk -v f="$sqlt" -v l="${lt%% *}" -v n="$1" 'BEGIN { r = f / l; printf "ratio %s_fit / lifetimes: %.3f (target <= 0.25): %s\n", n, r, (r <= 0.25 ? "ok" : "FAIL") }'
done
echo "load average after: $(cut -d" " -f1-3 /proc/loadavg)"
rm -rf "$tmp"
