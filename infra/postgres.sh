#!/usr/bin/env bash
# The project's own PostgreSQL cluster (Debian's postgresql package) under $LPT_HOME/pg.
#   infra/postgres.sh init|start|wait|stop|status
# Listens on 127.0.0.1:$LPT_PG_PORT with trust auth for the local `lpt` role: a development and
# test cluster only. Production points LPT_DATABASE_URL at a managed server instead.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
LPT_HOME="${LPT_HOME:-$ROOT/.lpt}"
[[ "$LPT_HOME" == /* ]] || LPT_HOME="$PWD/$LPT_HOME" # postgres runs in its data directory
PORT="${LPT_PG_PORT:-15432}"
PGROOT="$LPT_HOME/pg"
# As root, the cluster runs as the `postgres` user, who may not be able to enter a checkout
# that lives in a private directory (e.g. one made by mktemp -d). Use a per-home folder under
# /var/tmp then.
if [[ $(id -u) -eq 0 ]]; then
  mkdir -p "$PGROOT"
  if ! runuser -u postgres -- test -x "$PGROOT" 2>/dev/null; then
    PGROOT="/var/tmp/lpt-pg/$(printf '%s' "$LPT_HOME" | md5sum | cut -c1-12)"
  fi
fi
PGDATA="$PGROOT/data"
SOCK="$PGROOT/run"
LOGF="$PGROOT/postgres.log"

BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [[ -z "$BIN" ]]; then
  bash "$HERE/system-deps.sh"
  BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi

# initdb and postgres refuse to run as root: run them as the `postgres` system user then.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

init() {
  mkdir -p "$PGROOT" "$SOCK"
  if [[ $(id -u) -eq 0 ]]; then chown -R postgres:postgres "$PGROOT"; fi
  if [[ -f "$PGDATA/PG_VERSION" ]]; then return 0; fi
  echo "postgres: initialising cluster in $PGDATA"
  as_owner "$BIN/initdb" -D "$PGDATA" -U lpt --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  cat >>"$PGDATA/postgresql.conf" <<CFG
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 200
shared_buffers = 256MB
fsync = on
synchronous_commit = off
logging_collector = off
CFG
}

running() { as_owner "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

start() {
  init
  if running; then echo "postgres: already running on 127.0.0.1:$PORT"; return 0; fi
  echo "postgres: starting on 127.0.0.1:$PORT"
  warn_if_ephemeral "$PORT" postgres
  as_owner "$BIN/pg_ctl" -D "$PGDATA" -l "$LOGF" -o "-p $PORT" -w -t 60 start >/dev/null
}

wait_ready() {
  local deadline=$((SECONDS + ${1:-60}))
  until "$BIN/pg_isready" -h 127.0.0.1 -p "$PORT" -q; do
    if ((SECONDS > deadline)); then echo "postgres: not ready in time; see $LOGF" >&2; exit 1; fi
    sleep 0.3
  done
  if ! "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U lpt -d postgres -tAc "select 1 from pg_database where datname='lpt'" | grep -q 1; then
    "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U lpt lpt
  fi
  echo "postgres: ready on 127.0.0.1:$PORT"
}

stop() {
  if [[ -f "$PGDATA/PG_VERSION" ]] && running; then
    as_owner "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    echo "postgres: stopped"
  else
    echo "postgres: not running"
  fi
}

case "${1:-}" in
  init) init ;;
  start) start ;;
  wait) wait_ready "${2:-60}" ;;
  stop) stop ;;
  status) if [[ -f "$PGDATA/PG_VERSION" ]] && running; then echo "postgres: running (127.0.0.1:$PORT)"; else echo "postgres: stopped"; exit 3; fi ;;
  *) echo "usage: $0 init|start|wait|stop|status" >&2; exit 2 ;;
esac
