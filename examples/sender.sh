#!/usr/bin/env bash
# A complete minimal sender for loyalty's outbox, in bash with one psql session:
# LISTEN loyalty_outbox, claim a batch, deliver each message, ack the delivered
# ones and fail the others (loyalty retries them with backoff), and wait for
# the next NOTIFY when the outbox is empty.
#
#   PGHOST=... PGDATABASE=shop PGUSER=sender examples/sender.sh
#
# Settings (environment):
#   BATCH=100            messages per claim
#   LEASE='5 minutes'    time to deliver and ack a batch; after it the messages
#                        go to whichever sender claims next
#   DELIVER=command      run once per message, with MESSAGE_ID, CHANNEL,
#                        RECIPIENT, TEMPLATE, ATTEMPT in the environment and the
#                        payload (JSON) on standard input; exit 0 = delivered,
#                        anything else = failed (the last line of its stderr is
#                        the error). Default: append a line to $OUTBOX_FILE.
#   OUTBOX_FILE=./outbox-delivered.log
#   RECHECK=30           seconds: claim even without a NOTIFY (retries and
#                        expired leases become due by time; the pg_cron job
#                        'loyalty-notify' also wakes senders for those)
#   IDLE_EXIT=0          exit after this many seconds without a message (0: never)
# The database role needs only loyalty_sender (GRANT loyalty_sender TO sender).
set -uo pipefail

BATCH=${BATCH:-100}
LEASE=${LEASE:-5 minutes}
OUTBOX_FILE=${OUTBOX_FILE:-./outbox-delivered.log}
RECHECK=${RECHECK:-30}
IDLE_EXIT=${IDLE_EXIT:-0}
DELIVER=${DELIVER:-}

log() { echo "sender[$$]: $*" >&2; }
[[ $BATCH =~ ^[0-9]+$ ]] || { log "BATCH must be a number"; exit 2; }
[[ $LEASE != *"'"* ]] || { log "LEASE must not contain a quote"; exit 2; }

# one psql session for everything: errors come back on the same stream
coproc PSQL { exec psql -X -q -A -t -F $'\t' -v ON_ERROR_STOP=0 2>&1; }
trap 'log "stopping"; exec {PSQL[1]}>&-; exit 0' INT TERM

NOTIFIED=0
# run SQL, read its output lines into OUT (notifications set NOTIFIED instead)
q() {
    printf '%s\n\\echo __end__\n' "$1" >&"${PSQL[1]}" || { log "psql is gone"; exit 1; }
    OUT=()
    local line
    while IFS= read -r line <&"${PSQL[0]}"; do
        [ "$line" = __end__ ] && return 0
        case $line in
            'Asynchronous notification "loyalty_outbox"'*) NOTIFIED=1 ;;
            *) OUT+=("$line") ;;
        esac
    done
    for line in "${OUT[@]}"; do log "$line"; done
    log "psql is gone"
    exit 1
}
# a SQL string literal
lit() { printf "'%s'" "${1//\'/\'\'}"; }

# deliver one message; sets ERR on failure
deliver() {
    local id=$1 channel=$2 recipient=$3 template=$4 attempt=$5 payload=$6 errfile rc
    if [ -z "$DELIVER" ]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$id" "$channel" "$recipient" "$template" "$payload" >> "$OUTBOX_FILE" \
            && return 0
        ERR="cannot write $OUTBOX_FILE"
        return 1
    fi
    errfile=$(mktemp)
    MESSAGE_ID=$id CHANNEL=$channel RECIPIENT=$recipient TEMPLATE=$template ATTEMPT=$attempt \
        bash -c "$DELIVER" <<<"$payload" >/dev/null 2>"$errfile"
    rc=$?
    ERR=$(tail -n 1 "$errfile")
    rm -f "$errfile"
    [ $rc -eq 0 ] && return 0
    ERR=${ERR:-"exit status $rc"}
    return 1
}

q "LISTEN loyalty_outbox;"
for l in "${OUT[@]}"; do log "$l"; done
log "listening; batch $BATCH, lease '$LEASE'"
idle=0
while :; do
    NOTIFIED=0
    q "SELECT message_id, claim_token, channel, translate(coalesce(recipient, ''), E'\\t\\n', '  '),
              translate(template, E'\\t\\n', '  '), attempts, payload
         FROM loyalty.claim_messages($BATCH, '$LEASE');"
    token=""
    delivered=()
    failed=0
    for row in "${OUT[@]}"; do
        IFS=$'\t' read -r id tok channel recipient template attempt payload <<<"$row"
        if ! [[ $id =~ ^[0-9]+$ ]]; then
            log "$row"          # an error from the server
            continue
        fi
        token=$tok
        if deliver "$id" "$channel" "$recipient" "$template" "$attempt" "$payload"; then
            delivered+=("$id")
        else
            failed=$((failed + 1))
            q "SELECT loyalty.fail_message($id, '$tok', $(lit "${ERR//$'\n'/ }"));"
            for l in "${OUT[@]}"; do [[ $l == pending || $l == dead ]] || log "fail $id: $l"; done
        fi
    done
    if [ ${#delivered[@]} -gt 0 ]; then
        ids=$(IFS=,; echo "${delivered[*]}")
        q "SELECT loyalty.ack_messages('{$ids}', '$token');"
        for l in "${OUT[@]}"; do [[ $l =~ ^[0-9]+$ ]] || log "ack: $l"; done
    fi
    if [ -n "$token" ]; then
        log "batch: ${#delivered[@]} delivered, $failed failed"
        idle=0
        continue
    fi
    # nothing to claim: wait for a NOTIFY (psql shows one after a command, so
    # ask it something cheap each second), or RECHECK seconds at most
    waited=0
    while [ "$NOTIFIED" = 0 ] && [ $waited -lt "$RECHECK" ]; do
        if [ "$IDLE_EXIT" -gt 0 ] && [ $idle -ge "$IDLE_EXIT" ]; then
            log "idle for ${idle}s, exiting"
            exec {PSQL[1]}>&-
            exit 0
        fi
        sleep 1
        waited=$((waited + 1))
        idle=$((idle + 1))
        q "SELECT 1;"
    done
done
