#!/usr/bin/env bash
# The distributed topology as native processes on this machine, against the local PostgreSQL
# and RabbitMQ: N api-write (each with a relay, one active), one api-read, one projector.
#
#   deploy/local.sh up [--write-instances N]   fresh database and vhost, build, start, wait healthy
#   deploy/local.sh status                      which processes run, and their health
#   deploy/local.sh down                        stop everything (SIGTERM), drop database and vhost
#
# API keys (AUTH=required): `up` creates a client `local` and an admin `local-admin` and writes
# their keys to $RUN/api-key and $RUN/admin-key (mode 600), e.g.
#   BUY_ORDERS_API_KEY=$(cat deploy/.run/api-key) curl/put_buy_order.sh
# Logs and pid files: deploy/.run/. Settings (environment): LOCAL_NAME (database and vhost name,
# default buy_orders_local), LOCAL_AMQP_BASE and LOCAL_AMQP_QUERY (the broker, e.g. over amqps), LOCAL_BASE_PORT (default 8777: api-write i listens on BASE+10*i,
# api-read on BASE+1, the projector's /metrics on BASE+2), PRICE_SOURCE (default simulated), MAX_TOTAL_BTC, LOCAL_RUN_DIR (default
# deploy/.run), LOCAL_BIN_DIR (use these binaries instead of building release ones).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${LOCAL_RUN_DIR:-deploy/.run}
NAME=${LOCAL_NAME:-buy_orders_local}
BASE=${LOCAL_BASE_PORT:-8777}
PG_ADMIN=(psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -q)
# LOCAL_DB_QUERY: parameters appended to the database URL (`sslmode=disable`, say).
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$NAME${LOCAL_DB_QUERY:+?$LOCAL_DB_QUERY}"
# LOCAL_AMQP_BASE: the broker without its vhost (an amqps:// endpoint, say); LOCAL_AMQP_QUERY: its
# URL parameters (RabbitMQ's TLS ones: `cacertfile=…`).
AMQP_URL="${LOCAL_AMQP_BASE:-amqp://guest:guest@127.0.0.1:5672}/$NAME${LOCAL_AMQP_QUERY:+?$LOCAL_AMQP_QUERY}"

die() { echo "local.sh: $*" >&2; exit 1; }
healthy() { curl -fsS -m 1 "http://127.0.0.1:$1/healthcheck" >/dev/null 2>&1; }

start() { # name port-or-empty command...
  local name=$1 port=$2
  shift 2
  "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  if [ -n "$port" ]; then echo "$port" >"$RUN/$name.port"; fi
}

up() {
  local writers=1
  while [ $# -gt 0 ]; do
    case $1 in
      --write-instances) writers=${2:?--write-instances needs a number}; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  [[ $writers =~ ^[1-9][0-9]?$ ]] || die "--write-instances must be 1..99"
  ls "$RUN"/*.pid >/dev/null 2>&1 && die "already up (deploy/local.sh down first)"
  mkdir -p "$RUN"
  local bin=${LOCAL_BIN_DIR:-}
  if [ -z "$bin" ]; then
    cargo build --release -q -p buy-orders -p api-write -p api-read -p projector
    bin=target/release
  fi
  for b in buy-orders api-write api-read projector; do [ -x "$bin/$b" ] || die "no $bin/$b"; done

  # fresh database and vhost
  "${PG_ADMIN[@]}" -c "DROP DATABASE IF EXISTS $NAME WITH (FORCE)" -c "CREATE DATABASE $NAME"
  rabbitmqctl -q delete_vhost "$NAME" >/dev/null 2>&1 || true
  rabbitmqctl -q add_vhost "$NAME"
  rabbitmqctl -q set_permissions -p "$NAME" guest ".*" ".*" ".*"
  DATABASE_URL=$DATABASE_URL RUST_LOG=warn "$bin/buy-orders" migrate >/dev/null
  (
    umask 077
    DATABASE_URL=$DATABASE_URL RUST_LOG=warn "$bin/buy-orders" clients add local >"$RUN/api-key"
    DATABASE_URL=$DATABASE_URL RUST_LOG=warn "$bin/buy-orders" clients add local-admin --admin >"$RUN/admin-key"
  ) 2>/dev/null

  export DATABASE_URL AMQP_URL
  export PRICE_SOURCE=${PRICE_SOURCE:-simulated}
  local ports=()
  for i in $(seq 0 $((writers - 1))); do
    local port=$((BASE + 10 * i))
    WRITE_ADDR=127.0.0.1:$port start "api-write-$i" "$port" "$bin/api-write"
    ports+=("$port")
  done
  READ_ADDR=127.0.0.1:$((BASE + 1)) start api-read $((BASE + 1)) "$bin/api-read"
  ports+=($((BASE + 1)))
  PROJECTOR_ADDR=127.0.0.1:$((BASE + 2)) start projector $((BASE + 2)) "$bin/projector" run
  ports+=($((BASE + 2)))

  local deadline=$((SECONDS + 60))
  for port in "${ports[@]}"; do
    until healthy "$port"; do
      [ $SECONDS -lt $deadline ] || { status; die "port $port not healthy; see $RUN/*.log"; }
      sleep 0.2
    done
  done
  echo "up: $writers api-write, api-read, projector (database and vhost $NAME)"
  for i in $(seq 0 $((writers - 1))); do echo "  write: http://127.0.0.1:$((BASE + 10 * i))/buy_order"; done
  echo "  read:  http://127.0.0.1:$((BASE + 1))/buy_orders"
  echo "  keys:  $RUN/api-key (client local), $RUN/admin-key (admin)"
}

status() {
  local any=0
  for pidfile in "$RUN"/*.pid; do
    [ -e "$pidfile" ] || continue
    any=1
    local name; name=$(basename "$pidfile" .pid)
    local pid; pid=$(cat "$pidfile")
    local state=stopped health=""
    kill -0 "$pid" 2>/dev/null && state=running
    if [ -f "$RUN/$name.port" ]; then
      if healthy "$(cat "$RUN/$name.port")"; then health=" healthy :$(cat "$RUN/$name.port")"; else health=" unhealthy"; fi
    fi
    echo "$name (pid $pid) $state$health"
  done
  [ $any = 1 ] || echo "down"
}

down() {
  for pidfile in "$RUN"/*.pid; do
    [ -e "$pidfile" ] || continue
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done
  for pidfile in "$RUN"/*.pid; do
    [ -e "$pidfile" ] || continue
    local pid; pid=$(cat "$pidfile")
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile" "${pidfile%.pid}.port"
  done
  rm -f "$RUN/api-key" "$RUN/admin-key"
  "${PG_ADMIN[@]}" -c "DROP DATABASE IF EXISTS $NAME WITH (FORCE)" >/dev/null 2>&1 || true
  rabbitmqctl -q delete_vhost "$NAME" >/dev/null 2>&1 || true
  echo "down"
}

case ${1:-} in
  up) shift; up "$@" ;;
  status) status ;;
  down) down ;;
  *) die "usage: deploy/local.sh up [--write-instances N] | status | down" ;;
esac
