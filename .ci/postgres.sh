#!/usr/bin/env bash
# A throw-away PostgreSQL server for the store tests: installs Debian's postgresql if missing, starts a cluster of
# its own (its own data folder and port, listening on 127.0.0.1 only, trust authentication — test data only) and
# prints the URL to export:
#
#   export BENCH_TEST_POSTGRES_URL="$(bash .ci/postgres.sh)"
#
# Idempotent: a cluster already running on the port is reused. Needs root (apt-get, and to run as postgres).
set -euo pipefail

PORT="${BENCH_PG_PORT:-55432}"
DATA="${BENCH_PG_DATA:-/tmp/bench-postgres-$PORT}"

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
fi
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
as_postgres() { runuser -u postgres -- "$@"; }

if ! as_postgres "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    if [ ! -f "$DATA/PG_VERSION" ]; then
        rm -rf "$DATA" && mkdir -p "$DATA" && chown postgres:postgres "$DATA"
        as_postgres "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
        -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
fi
as_postgres "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc "select 1 from pg_database where datname = 'bench_test'" \
    | grep -q 1 || as_postgres "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres bench_test
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/bench_test"
