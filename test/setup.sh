#!/usr/bin/env bash
# Install what building and testing loyalty needs on Debian 12, then build and
# install the extension. Sourced by test/run_tests.sh and test/demo.sh; runs as root.
set -euo pipefail

# PG_BINDIR may point at another (relocated) copy of the same PostgreSQL 15
# install, so that two checkouts can be tested side by side.
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
export PG_BINDIR

LOYALTY_PACKAGES=(make gcc postgresql-15 postgresql-server-dev-15 postgresql-15-cron
                  postgresql-contrib libipc-run-perl perl valgrind libxml2-utils)

loyalty_setup() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "run this as root: it installs packages and the extension" >&2
        exit 1
    fi
    local missing=()
    for p in "${LOYALTY_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "== installing: ${missing[*]}"
        # never create or start the machine's default cluster: we use throwaway ones
        mkdir -p /etc/postgresql-common
        [ -f /etc/postgresql-common/createcluster.conf ] || echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    export PATH="$PG_BINDIR:$PATH"
    echo "== building and installing loyalty"
    make -s -C "$LOYALTY_SRC" PG_CONFIG="$PG_BINDIR/pg_config" >/dev/null
    make -s -C "$LOYALTY_SRC" PG_CONFIG="$PG_BINDIR/pg_config" install >/dev/null
}

# A copy of the tree owned by the unprivileged postgres user (initdb refuses root).
loyalty_work_copy() {
    local top dest
    top=$(mktemp -d /tmp/loyalty-run.XXXXXX)
    dest="$top/main"
    mkdir "$dest"
    tar -C "$LOYALTY_SRC" --exclude=.git --exclude='tmp_check*' --exclude=results --exclude=output_iso -cf - . | tar -C "$dest" -xf -
    # the tests' data travels with the tree (test/data/): nothing outside it is read
    chown -R postgres:postgres "$top"
    chmod 755 "$top"
    echo "$dest"
}

# Run a command as the unprivileged postgres user, with the server binaries on PATH.
pg() { runuser -u postgres -- env PATH="$PATH" "$@"; }

# Start a throwaway cluster (pg_cron and loyalty preloaded, both serving
# database $2, which is created) in a new /tmp/$1.XXXXXX; further
# postgresql.conf lines come on standard input. Sets CLUSTER_DIR, CLUSTER_PORT.
loyalty_cluster_start() {
    local prefix=$1 db=$2
    CLUSTER_DIR=$(mktemp -d "/tmp/$prefix.XXXXXX")
    chown postgres:postgres "$CLUSTER_DIR"
    CLUSTER_PORT=$((20000 + RANDOM % 20000))
    pg initdb -D "$CLUSTER_DIR/data" -A trust >/dev/null
    {
        cat <<CONF
port = $CLUSTER_PORT
unix_socket_directories = '$CLUSTER_DIR'
listen_addresses = ''
shared_preload_libraries = 'pg_cron,loyalty'
cron.database_name = '$db'
loyalty.database = '$db'
CONF
        cat
    } >> "$CLUSTER_DIR/data/postgresql.conf"
    pg pg_ctl -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w start >/dev/null
    pg createdb -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" "$db"
}
