#!/usr/bin/env bash
# The benchmark, in one command: starts the distributed topology (deploy/local.sh: api-write,
# api-read, projector, through RabbitMQ) on a fresh database, runs for a fixed time and prints one
# table, appended with the machine to bench/RESULTS.md. Every throughput is put next to a
# reference measured in the same run.
#
#   bench/run.sh            BENCH_SECONDS (default 15) per measurement, BENCH_ROWS (1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
S=${BENCH_SECONDS:-15}
ROWS=${BENCH_ROWS:-1000000}
PSQL=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q)
cargo build --release -q -p loadgen -p buy-orders -p api-write -p api-read -p projector
export LOCAL_NAME="bo_bench_$$" LOCAL_BASE_PORT=9700 LOCAL_RUN_DIR LOCAL_BIN_DIR=target/release
LOCAL_RUN_DIR=$(mktemp -d)
export MAX_TOTAL_BTC=21000000 PRICE_SOURCE="fixed:USD=48478.88,EUR=41191.91,GBP=35330.89" RUST_LOG=warn
# AUTH=required (the services' default): every request carries the local client's key, checked
# in memory; rate limits off, since one key drives every load connection.
export RATE_LIMIT_PER_S=0
SCRATCH="bo_pgbench_$$"
cleanup() {
  deploy/local.sh down >/dev/null 2>&1 || true
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $SCRATCH WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
deploy/local.sh up --write-instances 1 >&2
BUY_ORDERS_API_KEY=$(cat "$LOCAL_RUN_DIR/api-key")
export BUY_ORDERS_API_KEY
W=http://127.0.0.1:9700
R=http://127.0.0.1:9701
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "writes…" >&2
w16=$(target/release/loadgen write --write-url $W --read-url $R --connections 16 --seconds "$S")
w64=$(target/release/loadgen write --write-url $W --read-url $R --connections 64 --seconds "$S")

echo "pgbench…" >&2
"${PSQL[@]}" -d postgres -c "CREATE DATABASE $SCRATCH"
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$SCRATCH" target/release/buy-orders migrate >/dev/null
"${PSQL[@]}" -d "$SCRATCH" -c "CREATE SEQUENCE bench_position START 1000000000; UPDATE btc_ledger SET cap_sats = 2100000000000000"
pgb() { # clients script → tps
  pgbench -h 127.0.0.1 -U postgres -n -c "$1" -j 2 -T "$S" -f "bench/pgbench/$2" "$SCRATCH" 2>/dev/null |
    awk '/^tps = / { printf "%.0f", $3 }'
}
"${PSQL[@]}" -d "$SCRATCH" -c "ALTER TABLE events DISABLE TRIGGER events_position_and_cap"
a16=$(pgb 16 insert_event.sql); a64=$(pgb 64 insert_event.sql)
"${PSQL[@]}" -d "$SCRATCH" -c "ALTER TABLE events ENABLE TRIGGER events_position_and_cap"
b16=$(pgb 16 commit.sql); b64=$(pgb 64 commit.sql)

echo "reads: $ROWS synthetic rows in the read table…" >&2
"${PSQL[@]}" -d "$LOCAL_NAME" -c "
INSERT INTO buy_order_view (position, id, created_at, currency, currency_amount, btc_rate, btc_amount, client_id)
SELECT 1000000000 + g, gen_random_uuid(), now(), 'USD', 10.00, 48478.88, 0.00020628, 'local'
  FROM generate_series(1, $ROWS) g; ANALYZE buy_order_view;"
deep_id=$("${PSQL[@]}" -d "$LOCAL_NAME" -At -c "SELECT id FROM buy_order_view WHERE position = 1000000150")
first=$(target/release/loadgen read --url "$R/buy_orders?page_size=100" --connections 16 --seconds "$S")
deep=$(target/release/loadgen read --url "$R/buy_orders?page_size=100&last_reference=$deep_id" --connections 16 --seconds "$S")
# The same SELECTs straight from pgbench (prepared statements, 16 clients): what the read path
# costs on top of the query.
pgread() { # script [extra args] → tps
  pgbench -h 127.0.0.1 -U postgres -n -M prepared -c 16 -j 2 -T "$S" "${@:2}" -f "bench/pgbench/$1" "$LOCAL_NAME" 2>/dev/null |
    awk '/^tps = / { printf "%.0f", $3 }'
}
c16=$(pgread first_page.sql); d16=$(pgread deep_page.sql -D "deep_id=$deep_id")

rss() { awk '/VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$(cat "$LOCAL_RUN_DIR/$1.pid")/status" 2>/dev/null || echo "?"; }
rss_write=$(rss api-write-0); rss_read=$(rss api-read); rss_projector=$(rss projector)

table=$(cat <<EOT

### Benchmark, $(date -u +%Y-%m-%d) — $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL, RabbitMQ and the services on the same machine; ${S} s per run

| measurement | result | reference (same run) | ratio |
|---|---|---|---|
| PUT /buy_order, 16 connections | $(field "$w16" per_second) orders/s; p50 $(field "$w16" p50_ms) ms, p99 $(field "$w16" p99_ms) ms, p99.9 $(field "$w16" p999_ms) ms; $(field "$w16" errors) errors | pgbench (a) insert event alone: $a16 tx/s · (b) insert + ledger update: $b16 tx/s | API/(a) $(ratio "$(field "$w16" per_second)" "$a16") · API/(b) $(ratio "$(field "$w16" per_second)" "$b16") |
| PUT /buy_order, 64 connections | $(field "$w64" per_second) orders/s; p50 $(field "$w64" p50_ms) ms, p99 $(field "$w64" p99_ms) ms, p99.9 $(field "$w64" p999_ms) ms; $(field "$w64" errors) errors | (a) $a64 tx/s · (b) $b64 tx/s | API/(a) $(ratio "$(field "$w64" per_second)" "$a64") · API/(b) $(ratio "$(field "$w64" per_second)" "$b64") |
| lag PUT 200 → in GET (under the 16-conn load) | p50 $(field "$w16" lag_p50_ms) ms, p99 $(field "$w16" lag_p99_ms) ms | | |
| lag (under the 64-conn load) | p50 $(field "$w64" lag_p50_ms) ms, p99 $(field "$w64" lag_p99_ms) ms | | |
| GET first page (100 rows), 16 conn | $(field "$first" per_second) req/s, p99 $(field "$first" p99_ms) ms | pgbench (c) the same SELECT: $c16 tx/s | API/(c) $(ratio "$(field "$first" per_second)" "$c16") |
| GET page $ROWS rows deep, 16 conn | $(field "$deep" per_second) req/s, p99 $(field "$deep" p99_ms) ms | pgbench (d) the same SELECT: $d16 tx/s · first page | API/(d) $(ratio "$(field "$deep" per_second)" "$d16") · deep/first $(ratio "$(field "$deep" per_second)" "$(field "$first" per_second)") |
| peak RSS | api-write $rss_write · api-read $rss_read · projector $rss_projector | | |
EOT
)
echo "$table"
echo "$table" >> bench/RESULTS.md
echo "rebuild…" >&2
bench/rebuild.sh "$ROWS" >/dev/null
tail -7 bench/RESULTS.md
