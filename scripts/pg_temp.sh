#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server for the store tests.
#
#   eval "$(bash scripts/pg_temp.sh start)"     # sets GPD_TEST_POSTGRES_URL and GPD_PG_DIR
#   bash scripts/pg_temp.sh stop "$GPD_PG_DIR"  # stops it and removes its directory
#
# The server lives in a mktemp directory, listens on 127.0.0.1 only, on a
# free port, with its unix socket inside that directory (so it never
# collides with a system cluster), trust authentication and fsync off: it
# holds test data only and is thrown away.  PostgreSQL refuses to run as
# root, so as root the server runs as the `postgres` system user that the
# Debian package creates; as any other user it runs as that user.
# Only the export line goes to stdout; progress and errors go to stderr.
set -euo pipefail

PG_VERSION=15
PG_BIN=${GPD_PG_BIN:-/usr/lib/postgresql/$PG_VERSION/bin}
DB_NAME=gpuproxyd_test
MARKER=.gpd_pg_temp   # stop refuses to delete a directory without it

die() { echo "pg_temp: $*" >&2; exit 1; }

check_installed() {
  local tool
  for tool in initdb pg_ctl pg_isready psql; do
    [ -x "$PG_BIN/$tool" ] || die "$PG_BIN/$tool not found: PostgreSQL $PG_VERSION's server is not installed (apt-get install postgresql-$PG_VERSION, or run scripts/deps.sh)"
  done
}

# Run a PostgreSQL tool as the user the server runs as.  cd first: the
# postgres user may not be allowed into the caller's working directory.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd "$PG_DIR" && runuser -u postgres -- "$@")
  else
    (cd "$PG_DIR" && "$@")
  fi
}

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    # No python: a random high port; start() retries if it is taken.
    echo $((20000 + RANDOM % 40000))
  fi
}

start() {
  check_installed
  if [ "$(id -u)" -eq 0 ]; then
    id -u postgres >/dev/null 2>&1 || die "running as root and there is no 'postgres' user to run the server as (it comes with the postgresql-$PG_VERSION package)"
    command -v runuser >/dev/null 2>&1 || die "runuser not found (util-linux)"
  fi

  PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/gpd-pg.XXXXXX")
  touch "$PG_DIR/$MARKER"
  if [ "$(id -u)" -eq 0 ]; then
    chown -R postgres: "$PG_DIR"
    # Every directory above it must let the postgres user through.
    if ! runuser -u postgres -- test -w "$PG_DIR"; then
      rm -rf "$PG_DIR"
      die "the postgres user cannot reach $PG_DIR (is ${TMPDIR:-/tmp} private to root? set TMPDIR=/tmp)"
    fi
  fi
  # From here on, a failure removes what was made.
  trap 'as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' ERR

  if ! as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
      --no-sync >"$PG_DIR/initdb.log" 2>&1; then
    cat "$PG_DIR/initdb.log" >&2
    false
  fi

  # The port may be taken between choosing it and binding it: try a few.
  local port=""
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    if as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null 2>&1; then
      break
    fi
    port=""
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  done
  if [ -z "$port" ]; then
    echo "pg_temp: the server did not start; its log:" >&2
    cat "$PG_DIR/server.log" >&2 || true
    false
  fi

  for _ in $(seq 1 100); do
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" && break
    sleep 0.1
  done
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" || { echo "pg_temp: server not ready on port $port" >&2; false; }

  "$PG_BIN/psql" -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c "CREATE DATABASE $DB_NAME" >&2

  trap - ERR
  echo "pg_temp: PostgreSQL $PG_VERSION on 127.0.0.1:$port, data in $PG_DIR" >&2
  printf 'export GPD_TEST_POSTGRES_URL=%q; export GPD_PG_DIR=%q\n' \
    "postgres://postgres@127.0.0.1:$port/$DB_NAME" "$PG_DIR"
}

stop() {
  PG_DIR=${1:-${GPD_PG_DIR:-}}
  [ -n "$PG_DIR" ] || die "usage: $0 stop DIR (the GPD_PG_DIR that start printed)"
  [ -d "$PG_DIR" ] || { echo "pg_temp: $PG_DIR is already gone" >&2; return 0; }
  [ -f "$PG_DIR/$MARKER" ] || die "$PG_DIR was not made by pg_temp.sh start; not removing it"
  check_installed
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) die "usage: $0 start | stop DIR" ;;
esac
