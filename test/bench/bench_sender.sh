#!/usr/bin/env bash
# Sender benchmark (issue 5), as root on Debian 12:
#   bash test/bench/bench_sender.sh [messages] [rounds]
# MESSAGES (default 100,000) due messages are drained by 4 concurrent senders
# (pgbench clients), each looping: claim a batch of 100 with a 5-minute lease,
# then ack every message of it. Once through loyalty.claim_messages /
# loyalty.ack_message on loyalty.outbox, once through a hand-written SKIP
# LOCKED queue on a plain table with the same message columns (pgmq's design:
# one visibility-time column and its index; claim = UPDATE ... WHERE id IN
# (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 100) RETURNING), in two variants:
#   kept:    ack = UPDATE ... SET sent_at (the rows stay, as outbox rows do:
#            frequency caps and campaign figures read them), the like-for-like
#            comparison;
#   deleted: ack = DELETE of the batch by id and token (no record is kept).
# Each round runs the three back to back (same load on a shared machine);
# prints messages per second of each, and per round the ratios; the summary is
# the median over ROUNDS (default 5) of the per-round ratios (target >= 0.8),
# plus the best rate of each.
set -euo pipefail
MESSAGES=${1:-100000}
ROUNDS=${2:-5}
BATCH=100
SENDERS=4

LOYALTY_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export LOYALTY_SRC
. "$LOYALTY_SRC/test/setup.sh"
loyalty_setup
. "$LOYALTY_SRC/test/bench/lib.sh"
bench_start

psql_db <<'SQL'
CREATE EXTENSION loyalty;
CREATE TABLE plain_queue (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL,
    channel     text NOT NULL,
    recipient   text,
    template    text NOT NULL,
    payload     jsonb NOT NULL,
    vt          timestamptz NOT NULL DEFAULT now(),
    token       uuid,
    attempts    integer NOT NULL DEFAULT 0
);
CREATE INDEX plain_queue_vt_idx ON plain_queue (vt);
CREATE TABLE plain_outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL,
    channel     text NOT NULL,
    recipient   text,
    template    text NOT NULL,
    payload     jsonb NOT NULL,
    vt          timestamptz NOT NULL DEFAULT now(),
    token       uuid,
    attempts    integer NOT NULL DEFAULT 0,
    sent_at     timestamptz
);
CREATE INDEX plain_outbox_vt_idx ON plain_outbox (vt) WHERE sent_at IS NULL;
SQL

work=$(mktemp -d)
chmod 755 "$work"
# enough transactions per sender to drain everything even when near the end a
# claim finds fewer than a full batch; the extra ones claim nothing
per_client=$(( MESSAGES / BATCH / SENDERS + 20 ))
cat > "$work/outbox.sql" <<SQL
SELECT coalesce(array_agg(message_id), '{}') AS ids, coalesce(min(claim_token::text), '00000000-0000-0000-0000-000000000000') AS tok FROM loyalty.claim_messages($BATCH, '5 minutes') \gset
SELECT loyalty.ack_messages(:ids::bigint[], :tok::uuid);
SQL
cat > "$work/plain.sql" <<SQL
WITH c AS (UPDATE plain_queue q SET vt = now() + interval '5 minutes', token = t.tok, attempts = q.attempts + 1
             FROM (SELECT gen_random_uuid() AS tok) t
            WHERE q.id IN (SELECT id FROM plain_queue WHERE vt <= now() ORDER BY vt LIMIT $BATCH FOR UPDATE SKIP LOCKED)
        RETURNING q.id, q.token, q.channel, q.recipient, q.template, q.payload, q.attempts, q.customer_id)
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(min(token::text), '00000000-0000-0000-0000-000000000000') AS tok FROM c \gset
DELETE FROM plain_queue WHERE id = ANY (:ids::bigint[]) AND token = :tok::uuid;
SQL
cat > "$work/kept.sql" <<SQL
WITH c AS (UPDATE plain_outbox q SET vt = now() + interval '5 minutes', token = t.tok, attempts = q.attempts + 1
             FROM (SELECT gen_random_uuid() AS tok) t
            WHERE q.id IN (SELECT id FROM plain_outbox WHERE vt <= now() AND sent_at IS NULL ORDER BY vt LIMIT $BATCH FOR UPDATE SKIP LOCKED)
        RETURNING q.id, q.token, q.channel, q.recipient, q.template, q.payload, q.attempts, q.customer_id)
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(min(token::text), '00000000-0000-0000-0000-000000000000') AS tok FROM c \gset
UPDATE plain_outbox SET sent_at = now() WHERE id = ANY (:ids::bigint[]) AND token = :tok::uuid AND vt > now() AND sent_at IS NULL;
SQL
chmod 644 "$work"/*.sql

load() {
    psql_db <<SQL
TRUNCATE loyalty.outbox, plain_queue, plain_outbox;
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, payload, due_at)
SELECT 'c' || (i % 7) || ':' || i || ':2026-11-01', i % 7, i::text, 'email', 'customer' || i || '@example.com', 'win_back',
       jsonb_build_object('name', 'Customer ' || i, 'points', i % 1000, 'tier', 'Silver', 'rule', 'win_back', 'p_alive', 0.31),
       now() - interval '1 minute'
  FROM generate_series(1, $MESSAGES) i;
INSERT INTO plain_queue (customer_id, channel, recipient, template, payload, vt)
SELECT i::text, 'email', 'customer' || i || '@example.com', 'win_back',
       jsonb_build_object('name', 'Customer ' || i, 'points', i % 1000, 'tier', 'Silver', 'rule', 'win_back', 'p_alive', 0.31),
       now() - interval '1 minute'
  FROM generate_series(1, $MESSAGES) i;
INSERT INTO plain_outbox (customer_id, channel, recipient, template, payload, vt)
SELECT customer_id, channel, recipient, template, payload, vt FROM plain_queue;
VACUUM ANALYZE loyalty.outbox, loyalty.outbox_queue, plain_queue, plain_outbox;
CHECKPOINT;
SQL
}

echo "== $MESSAGES messages, $SENDERS senders, batch $BATCH, best of $ROUNDS"
best_outbox=0
best_plain=0
best_kept=0
kept_ratios=()
plain_ratios=()
for r in $(seq 1 "$ROUNDS"); do
    for kind in outbox plain kept; do
        load
        start=$(date +%s.%N)
        pg pgbench -n -M prepared -c $SENDERS -j 2 -t $per_client -f "$work/$kind.sql" \
            -h "$BENCH_DIR" -p "$BENCH_PORT" bench > "$work/$kind.out" 2>&1 || { cat "$work/$kind.out"; exit 1; }
        end=$(date +%s.%N)
        if [ "$kind" = outbox ]; then
            left=$(psql_db -c "SELECT count(*) FILTER (WHERE status <> 'sent') || ' ' || count(*) FILTER (WHERE status = 'sent') FROM loyalty.outbox")
        elif [ "$kind" = plain ]; then
            left=$(psql_db -c "SELECT count(*) || ' ' || ($MESSAGES - count(*)) FROM plain_queue")
        else
            left=$(psql_db -c "SELECT count(*) FILTER (WHERE sent_at IS NULL) || ' ' || count(*) FILTER (WHERE sent_at IS NOT NULL) FROM plain_outbox")
        fi
        read -r unsent sent <<<"$left"
        [ "$unsent" = 0 ] && [ "$sent" = "$MESSAGES" ] || { echo "$kind: $unsent messages left, $sent sent" >&2; exit 1; }
        rate=$(awk -v m="$MESSAGES" -v s="$start" -v e="$end" 'BEGIN{printf "%.0f", m/(e-s)}')
        printf "round %d %-7s %8s messages/s\n" "$r" "$kind" "$rate"
        case $kind in
            outbox) [ "$rate" -gt "$best_outbox" ] && best_outbox=$rate; r_outbox=$rate ;;
            plain)  [ "$rate" -gt "$best_plain" ] && best_plain=$rate; r_plain=$rate ;;
            kept)   [ "$rate" -gt "$best_kept" ] && best_kept=$rate; r_kept=$rate ;;
        esac
    done
    kept_ratios+=("$(awk -v a="$r_outbox" -v b="$r_kept" 'BEGIN{printf "%.3f", a/b}')")
    plain_ratios+=("$(awk -v a="$r_outbox" -v b="$r_plain" 'BEGIN{printf "%.3f", a/b}')")
    echo "round $r ratios: outbox/kept ${kept_ratios[-1]}, outbox/deleting ${plain_ratios[-1]}"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END{print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
kept_median=$(median "${kept_ratios[@]}")
plain_median=$(median "${plain_ratios[@]}")
echo "loyalty.claim_messages + ack_messages:                    $best_outbox messages/s"
echo "hand-written queue, sent rows kept (UPDATE claim, UPDATE ack): $best_kept messages/s"
echo "hand-written queue, rows deleted on ack (pgmq style):          $best_plain messages/s"
echo "(best of $ROUNDS rounds each)"
awk -v r="$kept_median" 'BEGIN{printf "RATIO outbox/kept: %.2f (median of %d rounds; like for like: both keep what was sent; target >= 0.8: %s)\n", r, '"$ROUNDS"', (r >= 0.8 ? "met" : "NOT MET")}'
awk -v r="$plain_median" 'BEGIN{printf "RATIO outbox/deleting queue: %.2f (median of %d rounds; target >= 0.8: %s)\n", r, '"$ROUNDS"', (r >= 0.8 ? "met" : "NOT MET")}'
rm -rf "$work"
