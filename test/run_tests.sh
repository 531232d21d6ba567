#!/usr/bin/env bash
# Run every loyalty test: pg_regress, isolation specs and TAP, each against its
# own throwaway cluster (pg_cron and loyalty preloaded). As root on Debian 12:
#   bash test/run_tests.sh
# Installs what it needs, builds, installs, and ends with "N passed, N failed".
# Optional: LOYALTY_SUITES="regress isolation tap" (which suites), and
# LOYALTY_REGRESS / LOYALTY_ISOLATION / LOYALTY_TAP to run only some tests
# of a suite (test names; TAP: file paths such as test/t/001_worker.pl).
set -uo pipefail

LOYALTY_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export LOYALTY_SRC
# shellcheck source=test/setup.sh
. "$LOYALTY_SRC/test/setup.sh"
loyalty_setup
# setup.sh runs with errexit; here a failing suite must not end the run before the count
set +e

work=$(loyalty_work_copy)
log="$work/test-output.log"
: > "$log"
chown postgres:postgres "$log"
cd "$work"


passed=0
failed=0
failures=()

# pg_regress / pg_isolation_regress: one line per test, "ok" or "FAILED"
count_regress() {
    local out=$1 p f
    p=$(grep -cE '^(test| )? *[a-z0-9_]+ +\.\.\. ok' "$out" || true)
    f=$(grep -cE '\.\.\. FAILED' "$out" || true)
    passed=$((passed + p)); failed=$((failed + f))
}

suites=${LOYALTY_SUITES:-regress isolation tap}
sel=()
[ -n "${LOYALTY_REGRESS:-}" ] && sel+=("REGRESS=$LOYALTY_REGRESS")
[ -n "${LOYALTY_ISOLATION:-}" ] && sel+=("ISOLATION=$LOYALTY_ISOLATION")
[ -n "${LOYALTY_TAP:-}" ] && sel+=("PROVE_TESTS=$LOYALTY_TAP")
mk() { pg make -s PG_CONFIG="$PG_BINDIR/pg_config" "${sel[@]}" "$@"; }

if [[ " $suites " == *" regress "* ]]; then
echo "== regression tests"
mk installcheck-regress > regress.out 2>&1
rc=$?
cat regress.out
count_regress regress.out
[ $rc -eq 0 ] || { failures+=(regress); [ -f regression.diffs ] && cat regression.diffs; }

fi

if [[ " $suites " == *" isolation "* ]]; then
echo "== isolation tests"
mk installcheck-isolation > isolation.out 2>&1
rc=$?
cat isolation.out
count_regress isolation.out
[ $rc -eq 0 ] || { failures+=(isolation); [ -f output_iso/regression.diffs ] && cat output_iso/regression.diffs; }

fi

if [[ " $suites " == *" tap "* ]]; then
echo "== TAP tests"
mk installcheck-tap > tap.out 2>&1
rc=$?
cat tap.out
# one line per test file: "... ok" or a failure summary
p=$(grep -cE '^test/t/[^ ]+\.pl \.+ ok' tap.out || true)
f=$(grep -cE '^test/t/[^ ]+\.pl \.+ .*(Failed|Dubious|not ok)' tap.out || true)
if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
passed=$((passed + p)); failed=$((failed + f))
if [ $rc -ne 0 ]; then
    failures+=(tap)
    for l in tmp_check/log/*; do [ -f "$l" ] && { echo "--- $l"; tail -n 50 "$l"; }; done
fi
fi

if [ $((passed + failed)) -eq 0 ]; then
    echo "no test ran" >&2
    failed=1
fi
[ ${#failures[@]} -eq 0 ] || echo "failing suites: ${failures[*]} (work tree kept in $work)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
