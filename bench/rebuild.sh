#!/usr/bin/env bash
# Rebuild speed: `projector rebuild` over N events (default 1,000,000), in events/s, against a
# reference measured in the same run on the same data: PostgreSQL itself turning the events into
# read-table rows with one INSERT … SELECT (JSON → columns in SQL), the floor of any rebuild.
# Prints one table and appends it, with the machine, to bench/RESULTS.md.
#
#   bench/rebuild.sh [N]        needs the local PostgreSQL (127.0.0.1:5432, user postgres)
set -euo pipefail
N=${1:-1000000}
cd "$(dirname "$0")/.."
PSQL=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q)
cargo build --release -q -p buy-orders -p projector
DB="bo_bench_$(date +%s)"
"${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
trap '"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
URL="postgres://postgres@127.0.0.1:5432/$DB${LOCAL_DB_QUERY:+?$LOCAL_DB_QUERY}"
DATABASE_URL=$URL RUST_LOG=warn target/release/buy-orders migrate >/dev/null

now() { date +%s.%N; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

echo "generating $N events…" >&2
# Valid BuyOrderPlaced events, as the application writes them. The trigger is bypassed for the
# bulk load only (positions 1..N are written directly, the ledger set to match).
"${PSQL[@]}" -d "$DB" <<SQL
ALTER TABLE events DISABLE TRIGGER events_position_and_cap;
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position)
SELECT 'BuyOrder', id::text, 1, 'BuyOrderPlaced', '1.0',
       json_build_object('BuyOrderPlaced', json_build_object(
         'order_id', id, 'client_id', 'bench', 'idempotency_key', gen_random_uuid(),
         'currency', (ARRAY['USD','EUR','GBP'])[1 + g % 3], 'amount', '123.45', 'rate', '48478.88',
         'rate_source', 'bench', 'rate_quoted_at', '2026-11-26T00:00:00Z', 'satoshis', 254647,
         'placed_at', to_char((timestamptz '2026-11-26 00:00:00+00' + g * interval '1 microsecond')
                              AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))),
       '{}'::json, g
  FROM (SELECT g, gen_random_uuid() AS id FROM generate_series(1, $N) g) s;
ALTER TABLE events ENABLE TRIGGER events_position_and_cap;
UPDATE btc_ledger SET cap_sats = 2100000000000000, sold_sats = $N::bigint * 254647, last_position = $N;
ANALYZE events;
SQL

echo "reference: INSERT … SELECT in PostgreSQL…" >&2
"${PSQL[@]}" -d "$DB" -c "CREATE TABLE reference_view (LIKE buy_order_view INCLUDING ALL)"
start=$(now)
"${PSQL[@]}" -d "$DB" -c "
INSERT INTO reference_view
SELECT position, (p->>'order_id')::uuid, (p->>'placed_at')::timestamptz, p->>'currency',
       (p->>'amount')::numeric, (p->>'rate')::numeric, (p->>'satoshis')::numeric / 100000000
  FROM (SELECT position, payload::jsonb -> 'BuyOrderPlaced' AS p FROM events) e"
reference_s=$(awk -v a="$start" -v b="$(now)" 'BEGIN { print b - a }')

echo "projector rebuild…" >&2
start=$(now)
DATABASE_URL=$URL RUST_LOG=warn target/release/projector rebuild
rebuild_s=$(awk -v a="$start" -v b="$(now)" 'BEGIN { print b - a }')
rows=$("${PSQL[@]}" -d "$DB" -At -c "SELECT count(*) FROM buy_order_view")
[ "$rows" = "$N" ] || { echo "rebuild produced $rows rows, expected $N" >&2; exit 1; }

reference_rate=$(rate "$N" "$reference_s")
rebuild_rate=$(rate "$N" "$rebuild_s")
ratio=$(awk -v a="$rebuild_rate" -v b="$reference_rate" 'BEGIN { printf "%.2f", a / b }')
table=$(cat <<EOT

### Rebuild, $(date -u +%Y-%m-%d) — $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, PostgreSQL on the same machine

| what | events | seconds | events/s |
|---|---|---|---|
| reference: one INSERT … SELECT in PostgreSQL | $N | $(printf %.1f "$reference_s") | $reference_rate |
| \`projector rebuild\` (PROJECTOR_BATCH=500) | $N | $(printf %.1f "$rebuild_s") | $rebuild_rate |
| **ratio rebuild / reference** | | | **$ratio** |
EOT
)
echo "$table"
echo "$table" >> bench/RESULTS.md
