#!/usr/bin/env bash
# The benchmark, in one command: starts the distributed topology (deploy/local.sh: api-write,
# api-read, projector, through RabbitMQ) on a fresh database, runs for a fixed time and prints one
# table, appended with the machine to bench/RESULTS.md. Every throughput is put next to a
# reference measured in the same run.
#
#   bench/run.sh            BENCH_SECONDS (default 15) per measurement, BENCH_ROWS (1000000)
#   (also BENCH_STORE_ORDERS 1000000, BENCH_STORE_SECONDS 5, BENCH_STEADY_SECONDS 60,
#   BENCH_BACKLOG 100000: the in-memory store's size and window, the pipeline's runs)
set -euo pipefail
cd "$(dirname "$0")/.."
S=${BENCH_SECONDS:-15}
ROWS=${BENCH_ROWS:-1000000}
PSQL=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q)
# BENCH_SSLMODE=disable measures without TLS, for every client (the services, pgbench, psql);
# unset, each client's default: `prefer`, TLS when the server offers it (this machine's does).
if [ -n "${BENCH_SSLMODE:-}" ]; then
  export PGSSLMODE=$BENCH_SSLMODE LOCAL_DB_QUERY="sslmode=$BENCH_SSLMODE"
fi
Q=${LOCAL_DB_QUERY:+?$LOCAL_DB_QUERY}
# wrk drives the reads (below); Debian's package.
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p loadgen -p floor -p buy-orders -p api-write -p api-read -p projector
export LOCAL_NAME="bo_bench_$$" LOCAL_BASE_PORT=9700 LOCAL_RUN_DIR LOCAL_BIN_DIR=target/release
LOCAL_RUN_DIR=$(mktemp -d)
# The services' own log level (info) with their default request log (errors and slow answers):
# what an operator runs. (Before issue 26 this ran at warn, which hid a line per request.)
export MAX_TOTAL_BTC=21000000 PRICE_SOURCE="fixed:USD=48478.88,EUR=41191.91,GBP=35330.89" RUST_LOG=info
# AUTH=required (the services' default): every request carries the local client's key, checked
# in memory; rate limits off, since one key drives every load connection.
export RATE_LIMIT_PER_S=0
SCRATCH="bo_pgbench_$$"
cleanup() {
  [ -f "$LOCAL_RUN_DIR/floor.pid" ] && kill -TERM "$(cat "$LOCAL_RUN_DIR/floor.pid")" 2>/dev/null
  deploy/local.sh down >/dev/null 2>&1 || true
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $SCRATCH WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
deploy/local.sh up --write-instances 1 >&2
BUY_ORDERS_API_KEY=$(cat "$LOCAL_RUN_DIR/api-key")
export BUY_ORDERS_API_KEY
W=http://127.0.0.1:9700
R=http://127.0.0.1:9701
wrow() { # loadgen write JSON → one cell
  echo "$(field "$1" per_second) orders/s; p50 $(field "$1" p50_ms) ms, p99 $(field "$1" p99_ms) ms, p99.9 $(field "$1" p999_ms) ms; $(field "$1" errors) errors; $(field "$1" orders_per_tx) orders/tx, $(field "$1" round_trips_per_order) round trips/order; CPU s per 1k orders: $(field "$1" cpu_s_per_1k)"
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# CPU accounting: clock ticks (user + system) per process, per group, between two snapshots.
# Processes that start during a run count from zero; PostgreSQL's are every process named
# postgres, RabbitMQ's every process of the rabbitmq user.
TICK=$(getconf CLK_TCK)
snap() { # → "group pid ticks" lines
  local group pid
  for pid in $(pgrep -x postgres); do echo "postgres $pid"; done
  for pid in $(pgrep -u rabbitmq); do echo "rabbitmq $pid"; done
  for f in "$LOCAL_RUN_DIR"/*.pid; do [ -e "$f" ] && echo "$(basename "$f" .pid) $(cat "$f")"; done
} 2>/dev/null
ticks() { # snapshot file ← current ticks of each listed process
  while read -r group pid; do
    [ -r "/proc/$pid/stat" ] && echo "$group $pid $(awk '{ print $14 + $15 }' "/proc/$pid/stat")"
  done < <(snap)
}
cpu_per_k() { # before after orders loadgen_seconds → "group s/1k orders" list
  awk -v orders="$3" -v tick="$TICK" -v lg="$4" '
    NR == FNR { before[$2] = $3; next }
    { used[$1] += $3 - ($2 in before ? before[$2] : 0) }
    END {
      out = ""
      for (g in used) out = out sprintf("%s %.2f · ", g, used[g] / tick / orders * 1000)
      printf "%sloadgen %.2f", out, lg / orders * 1000
    }' "$1" "$2"
}
metric() { # url name-prefix → sum of the samples whose name starts with it
  curl -fsS -m 2 "$1/metrics" | awk -v n="$2" 'index($1, n) == 1 { s += $2 } END { printf "%d", s }'
}
write_run() { # connections read-url-or-"" write-url… → JSON of loadgen, plus batching and CPU
  local conns=$1 read=$2; shift 2
  local urls; urls=$(IFS=,; echo "$*")
  local tx0=0 ord0=0 ev0=0 rt0=0 u
  for u in "$@"; do
    tx0=$((tx0 + $(metric "$u" store_commit_transactions_total)))
    ev0=$((ev0 + $(metric "$u" store_committed_events_total)))
    rt0=$((rt0 + $(metric "$u" store_round_trips_total)))
  done
  ticks > "$LOCAL_RUN_DIR/cpu.before"
  local out t0 t1
  t0=$(date +%s.%N)
  out=$( { TIMEFORMAT='%U %S'; time target/release/loadgen write --write-url "$urls" ${read:+--read-url "$read"} \
          --connections "$conns" --seconds "${RUN_SECONDS:-$S}" ${PROBE:+--probe "$PROBE"} \
          > "$LOCAL_RUN_DIR/loadgen.json"; } 2>&1 )
  t1=$(date +%s.%N)
  ticks > "$LOCAL_RUN_DIR/cpu.after"
  local tx1=0 ev1=0 rt1=0
  for u in "$@"; do
    tx1=$((tx1 + $(metric "$u" store_commit_transactions_total)))
    ev1=$((ev1 + $(metric "$u" store_committed_events_total)))
    rt1=$((rt1 + $(metric "$u" store_round_trips_total)))
  done
  local events=$((ev1 - ev0)) lg_s orders
  lg_s=$(awk '{ print $1 + $2 }' <<<"$out")
  # orders stored: from the store's counter; in memory (no counter), the loadgen's successes
  orders=$events
  [ "$orders" -gt 0 ] || orders=$(field "$(cat "$LOCAL_RUN_DIR/loadgen.json")" requests)
  python3 - "$(cat "$LOCAL_RUN_DIR/loadgen.json")" "$events" "$((tx1 - tx0))" "$((rt1 - rt0))" \
    "$(cpu_per_k "$LOCAL_RUN_DIR/cpu.before" "$LOCAL_RUN_DIR/cpu.after" "$((orders > 0 ? orders : 1))" "$lg_s")" <<'PY'
import json, sys
out = json.loads(sys.argv[1])
events, tx, rt = (int(x) for x in sys.argv[2:5])
out["orders_per_tx"] = round(events / tx, 1) if tx else 0
out["round_trips_per_order"] = round(rt / events, 2) if events else 0
out["cpu_s_per_1k"] = sys.argv[5]
print(json.dumps(out))
PY
}

timed() { # command… → its output, then a line "cpu <user> <system>" (its CPU seconds)
  local TIMEFORMAT='cpu %U %S'
  { time "$@" 2>/dev/null; } 2>&1
}
# Writes driven by wrk (bench/wrk/put.lua: a new key per request), a client as light as the
# reads' (loadgen's reqwest costs about twice wrk's CPU per request, and on two cores the
# client's CPU is the server's): the floor and the all-in-one are compared this way.
wrk_json() { # seconds ← wrk's output (with timed's cpu line) → JSON {per_second, p99_ms,
  # non_200 (counted by bench/wrk/put.lua; 0 without it), client_cpu (s per 1k requests)}
  awk -v s="$1" '
    $1 == "cpu" { cpu = $2 + $3 }
    $1 == "non-200" { bad = $2 }
    /Requests\/sec:/ { rps = $2 }
    $1 == "99%" { v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
                  p99 = (unit == "us") ? v / 1000 : (unit == "s") ? v * 1000 : v }
    END { printf "{\"per_second\": %.0f, \"p99_ms\": %.3f, \"non_200\": %d, \"client_cpu\": %.3f}", rps, p99, bad, cpu / (rps * s) * 1000 }'
}
# Each wrk run places new orders: its run number goes into every key (bench/wrk/put.lua).
WRK_RUN=0
wput() { # base-url connections [seconds] [per-thread limit] → JSON as wrk_json's
  local seconds=${3:-$S}
  WRK_RUN=$((WRK_RUN + 1))
  timed wrk -t2 -c"$2" -d"${seconds}s" --latency ${WRK_AUTH:+-H "Authorization: Bearer $WRK_AUTH"} \
    -s bench/wrk/put.lua "$1" -- "$WRK_RUN" ${4:-} | wrk_json "$seconds"
}
placed() { # write base-url → orders this process placed (its 200s to PUT /buy_order)
  curl -fsS -m 5 "$1/metrics" |
    awk '/^http_requests_total/ && /route="\/buy_order"/ && /status="200"/ { s += $2 } END { printf "%d", s }'
}
rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
start_all_in_one() { # name [env…] → starts it on 9760/9761 (pid file $name.pid), waits until healthy
  local name=$1; shift
  (unset DATABASE_URL AMQP_URL; export "$@"; WRITE_ADDR=127.0.0.1:9760 READ_ADDR=127.0.0.1:9761 exec target/release/buy-orders) \
    > "$LOCAL_RUN_DIR/$name.log" 2>&1 &
  echo $! > "$LOCAL_RUN_DIR/$name.pid"
  until curl -fsS -m 1 http://127.0.0.1:9760/healthcheck >/dev/null 2>&1; do sleep 0.2; done
}
stop_pid() { # name → SIGTERM, wait for it to exit (SIGKILL after 15 s)
  local pid; pid=$(cat "$LOCAL_RUN_DIR/$1.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$LOCAL_RUN_DIR/$1.pid"
}

echo "writes: the HTTP + JSON floor (bench/floor)…" >&2
target/release/floor 127.0.0.1:9770 > "$LOCAL_RUN_DIR/floor.log" 2>&1 &
echo $! > "$LOCAL_RUN_DIR/floor.pid"
until curl -fsS -m 1 http://127.0.0.1:9770/healthcheck >/dev/null 2>&1; do sleep 0.2; done
floor16=$(wput http://127.0.0.1:9770 16); floor64=$(wput http://127.0.0.1:9770 64)
stop_pid floor

echo "writes: the all-in-one on its in-memory store…" >&2
start_all_in_one all-in-one DUMMY=
mem16=$(unset BUY_ORDERS_API_KEY; write_run 16 http://127.0.0.1:9761 http://127.0.0.1:9760)
aio16=$(wput http://127.0.0.1:9760 16); aio64=$(wput http://127.0.0.1:9760 64)
default_requests=$(( $(placed http://127.0.0.1:9760) + $(field "$mem16" requests) ))
stop_pid all-in-one

echo "writes: the all-in-one with a log line per request (REQUEST_LOG=all)…" >&2
start_all_in_one all-in-one-logged REQUEST_LOG=all REQUEST_LOG_MAX_PER_S=1000000
logged16=$(wput http://127.0.0.1:9760 16)
logged_bytes=$(stat -c %s "$LOCAL_RUN_DIR/all-in-one-logged.log")
logged_requests=$(placed http://127.0.0.1:9760)
stop_pid all-in-one-logged
default_bytes=$(stat -c %s "$LOCAL_RUN_DIR/all-in-one.log")

# The in-memory store as it grows: throughput with 10,000 orders stored, then with 1,000,000
# (each measured for STORE_SECONDS, short, so the store grows little during it), and the
# resident memory each stored order takes (RSS growth over the orders stored).
STORE_SECONDS=${BENCH_STORE_SECONDS:-5} STORE_ORDERS=${BENCH_STORE_ORDERS:-1000000}
echo "writes: the in-memory store at 10,000 and at $STORE_ORDERS orders…" >&2
start_all_in_one all-in-one-store DUMMY=
store_pid=$(cat "$LOCAL_RUN_DIR/all-in-one-store.pid")
rss_empty=$(rss_kib "$store_pid")
wput http://127.0.0.1:9760 16 2 5000 >/dev/null # 2 threads × 5,000
store_small_n=$(placed http://127.0.0.1:9760)
store_small=$(wput http://127.0.0.1:9760 16 "$STORE_SECONDS")
until [ "$(placed http://127.0.0.1:9760)" -ge "$STORE_ORDERS" ]; do wput http://127.0.0.1:9760 64 3 >/dev/null; done
store_big_n=$(placed http://127.0.0.1:9760)
rss_big=$(rss_kib "$store_pid")
store_big=$(wput http://127.0.0.1:9760 16 "$STORE_SECONDS")
stop_pid all-in-one-store
bytes_per_order=$(awk -v a="$rss_empty" -v b="$rss_big" -v n="$store_big_n" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')

echo "writes: api-write alone on PostgreSQL…" >&2
# The same binary on a database of its own, without AMQP_URL: no relay, no RabbitMQ, no projector.
ALONE="${LOCAL_NAME}_alone"
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $ALONE WITH (FORCE)" -c "CREATE DATABASE $ALONE"
ALONE_URL="postgres://postgres@127.0.0.1:5432/$ALONE$Q"
DATABASE_URL=$ALONE_URL target/release/buy-orders migrate >/dev/null
ALONE_KEY=$(DATABASE_URL=$ALONE_URL target/release/buy-orders clients add local 2>/dev/null)
A=http://127.0.0.1:9750
(unset AMQP_URL; DATABASE_URL=$ALONE_URL WRITE_ADDR=127.0.0.1:9750 exec target/release/api-write) \
  > "$LOCAL_RUN_DIR/api-write-alone.log" 2>&1 &
echo $! > "$LOCAL_RUN_DIR/api-write-alone.pid"
until curl -fsS -m 1 "$A/healthcheck" >/dev/null 2>&1; do sleep 0.2; done
alone16=$(BUY_ORDERS_API_KEY=$ALONE_KEY write_run 16 "" $A)
alone64=$(BUY_ORDERS_API_KEY=$ALONE_KEY write_run 64 "" $A)
stop_pid api-write-alone
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $ALONE WITH (FORCE)" >/dev/null 2>&1 || true

echo "writes: the full topology…" >&2
w16=$(write_run 16 $R $W)
w64=$(write_run 64 $R $W)
# Read-your-writes under the same load: 8 probers place an order and read it back at once
# through buy-orders-client, with the consistency token and without (twice as long, for over
# 1,000 probes of each).
echo "writes: the full topology, 64 conn, with the read-back probe…" >&2
probe64=$(PROBE=8 RUN_SECONDS=$((2 * S)) write_run 64 $R $W)

echo "pgbench…" >&2
"${PSQL[@]}" -d postgres -c "CREATE DATABASE $SCRATCH"
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$SCRATCH$Q" target/release/buy-orders migrate >/dev/null
"${PSQL[@]}" -d "$SCRATCH" -c "CREATE SEQUENCE bench_position START 1000000000; UPDATE btc_ledger SET cap_sats = 2100000000000000"
pgb() { # clients script → tps; a failure says why (it used to end the run without a word)
  local out
  if ! out=$(pgbench -h 127.0.0.1 -U postgres -n -c "$1" -j 2 -T "$S" -f "bench/pgbench/$2" "$SCRATCH" 2>&1); then
    echo "bench: pgbench $2 with $1 clients failed (connections left by other processes?): $(tail -n 3 <<<"$out")" >&2
    exit 1
  fi
  awk '/^tps = / { printf "%.0f", $3 }' <<<"$out"
}
"${PSQL[@]}" -d "$SCRATCH" -c "ALTER TABLE events DISABLE TRIGGER events_position_and_cap"
a16=$(pgb 16 insert_event.sql); a64=$(pgb 64 insert_event.sql)
"${PSQL[@]}" -d "$SCRATCH" -c "ALTER TABLE events ENABLE TRIGGER events_position_and_cap"
b16=$(pgb 16 commit.sql); b64=$(pgb 64 commit.sql)

# The pipeline's steady rate: open-loop PUTs at a fixed rate for STEADY_SECONDS (60), the lag
# PUT → readable sampled every 50 ms; a rate holds when the lag p99 is within 100 ms, every PUT
# was answered 200 and none had to wait for a free connection. Three rates, bisecting around
# 0.35 × pgbench (a) (the goal): the highest that held is reported, with the lowest that did not.
STEADY_SECONDS=${BENCH_STEADY_SECONDS:-60}
steady_try() { # fraction-of-(a) → JSON of loadgen, plus "holds"
  local rate; rate=$(awk -v f="$1" -v a="$a16" 'BEGIN { printf "%d", f * a }')
  target/release/loadgen write --write-url $W --read-url $R --rate "$rate" --connections 256 \
    --seconds "$STEADY_SECONDS" --lag-every-ms 50 |
    python3 -c '
import json, sys
out = json.loads(sys.stdin.read())
out["holds"] = (out["lag_p99_ms"] <= 100 and out["errors"] == 0 and out["late"] == 0
                and out["requests"] >= 0.98 * out["rate"] * '"$STEADY_SECONDS"')
print(json.dumps(out))'
}
steady_ok=""; steady_fail=""; fraction=0.35; step=0.10
for _ in 1 2 3; do
  echo "pipeline: open-loop at $fraction × (a) for ${STEADY_SECONDS} s…" >&2
  try=$(steady_try "$fraction")
  if [ "$(field "$try" holds)" = True ]; then
    steady_ok=$try; fraction=$(awk -v f="$fraction" -v s="$step" 'BEGIN { print f + s }')
  else
    steady_fail=$try; fraction=$(awk -v f="$fraction" -v s="$step" 'BEGIN { print f - s }')
  fi
  step=$(awk -v s="$step" 'BEGIN { print s / 2 }')
done
steady_cell() { # JSON or "" → one cell
  [ -n "$1" ] || { echo "none tried"; return; }
  echo "$(field "$1" rate)/s: lag p50 $(field "$1" lag_p50_ms) ms, p99 $(field "$1" lag_p99_ms) ms ($(field "$1" lag_samples) samples); PUT p99 $(field "$1" p99_ms) ms; $(field "$1" errors) errors, $(field "$1" late) late"
}
steady_rate=$( [ -n "$steady_ok" ] && field "$steady_ok" rate || echo 0)

# Catch-up: api-write and the projector stopped; BACKLOG events stored meanwhile by an api-write
# without its relay; then both started again. The projector applies a backlog from the store
# itself (at start, and whenever the queue is silent while the log moves), while the relay
# publishes it (the queue's copies then change nothing): the row gives the rate at which the
# read table catches up (first step to the log's head) and, beside it, the relay's.
BACKLOG=${BENCH_BACKLOG:-100000}
echo "pipeline: catch-up after a backlog of $BACKLOG events…" >&2
DB_URL="postgres://postgres@127.0.0.1:5432/$LOCAL_NAME$Q"
BUS_URL="amqp://guest:guest@127.0.0.1:5672/$LOCAL_NAME"
sql() { "${PSQL[@]}" -d "$LOCAL_NAME" -At -c "$1"; }
stop_pid api-write-0
stop_pid projector
(unset AMQP_URL; DATABASE_URL=$DB_URL WRITE_ADDR=127.0.0.1:9750 exec target/release/api-write) \
  > "$LOCAL_RUN_DIR/api-write-norelay.log" 2>&1 &
echo $! > "$LOCAL_RUN_DIR/api-write-norelay.pid"
until curl -fsS -m 1 "http://127.0.0.1:9750/healthcheck" >/dev/null 2>&1; do sleep 0.2; done
published=$(sql "SELECT position FROM relay_checkpoint WHERE name = 'rabbitmq'")
projected0=$(sql "SELECT position FROM projector_checkpoint WHERE name = 'buy_order_view'")
until [ $(( $(sql "SELECT coalesce(max(position), 0) FROM events") - projected0 )) -ge "$BACKLOG" ]; do
  WRK_AUTH=$BUY_ORDERS_API_KEY wput http://127.0.0.1:9750 64 3 >/dev/null
done
stop_pid api-write-norelay
if [ "$(sql "SELECT position FROM relay_checkpoint WHERE name = 'rabbitmq'")" != "$published" ] ||
   [ "$(sql "SELECT position FROM projector_checkpoint WHERE name = 'buy_order_view'")" != "$projected0" ]; then
  echo "bench: a relay or projector ran while none should (left over from an earlier run?)" >&2
  exit 1
fi
head_position=$(sql "SELECT max(position) FROM events")
backlog=$((head_position - projected0))
ticks > "$LOCAL_RUN_DIR/cpu.before"
(DATABASE_URL=$DB_URL AMQP_URL=$BUS_URL WRITE_ADDR=127.0.0.1:9700 exec target/release/api-write) \
  > "$LOCAL_RUN_DIR/api-write-0.log" 2>&1 &
echo $! > "$LOCAL_RUN_DIR/api-write-0.pid"
(DATABASE_URL=$DB_URL AMQP_URL=$BUS_URL PROJECTOR_ADDR=127.0.0.1:9702 exec target/release/projector run) \
  > "$LOCAL_RUN_DIR/projector.log" 2>&1 &
echo $! > "$LOCAL_RUN_DIR/projector.pid"
catch_up=$(python3 - "$head_position" "${PSQL[*]} -d $LOCAL_NAME" <<'PY'
import json, subprocess, sys, time
head, psql = int(sys.argv[1]), sys.argv[2].split()
def at(table, name):
    query = f"SELECT position FROM {table} WHERE name = '{name}'"
    return int(subprocess.run(psql + ["-At", "-c", query], capture_output=True, text=True, check=True).stdout)
watched = {"projector": ("projector_checkpoint", "buy_order_view"), "relay": ("relay_checkpoint", "rabbitmq")}
start = {k: at(*v) for k, v in watched.items()}
first, done = {}, {}
give_up = time.monotonic() + 600
while len(done) < len(watched) and time.monotonic() < give_up:
    for key, where in watched.items():
        if key in done:
            continue
        now, position = time.monotonic(), at(*where)
        if key not in first and position > start[key]:
            first[key] = (now, position)
        if position >= head:
            done[key] = now
    time.sleep(0.05)
out = {}
for key in watched:
    if key in first and key in done:
        seconds = max(done[key] - first[key][0], 0.001)
        out[key] = {"per_second": round((head - first[key][1]) / seconds), "seconds": round(seconds, 2),
                    "events": head - first[key][1]}
    else:
        out[key] = {"per_second": 0, "seconds": 0, "events": 0}
print(json.dumps(out))
PY
)
ticks > "$LOCAL_RUN_DIR/cpu.after"
catch_up_cpu=$(cpu_per_k "$LOCAL_RUN_DIR/cpu.before" "$LOCAL_RUN_DIR/cpu.after" "$backlog" 0 | sed 's/ · loadgen 0.00//')
projector_catch_up=$(python3 -c "import json,sys; print(json.dumps(json.loads(sys.argv[1])['projector']))" "$catch_up")
relay_catch_up=$(python3 -c "import json,sys; print(json.dumps(json.loads(sys.argv[1])['relay']))" "$catch_up")
until curl -fsS -m 1 "$W/healthcheck" >/dev/null 2>&1; do sleep 0.2; done

echo "reads: $ROWS synthetic rows in the read table…" >&2
"${PSQL[@]}" -d "$LOCAL_NAME" -c "
INSERT INTO buy_order_view (position, id, created_at, currency, currency_amount, btc_rate, btc_amount, client_id)
SELECT 1000000000 + g, gen_random_uuid(), now(), 'USD', 10.00, 48478.88, 0.00020628, 'local'
  FROM generate_series(1, $ROWS) g; ANALYZE buy_order_view;"
deep_id=$("${PSQL[@]}" -d "$LOCAL_NAME" -At -c "SELECT id FROM buy_order_view WHERE position = 1000000150")
# Reads are driven by wrk, a C client like pgbench, so that on two shared cores the client takes
# about what pgbench takes from the reference (loadgen's reqwest client took ~2x wrk's CPU per
# request: the first-page row with loadgen stays, for continuity with earlier runs). Each row
# also gives the client's CPU s per 1,000 requests.
wread() { # url → JSON as wrk_json's
  timed wrk -t2 -c16 -d"${S}s" --latency -H "Authorization: Bearer $BUY_ORDERS_API_KEY" "$1" |
    wrk_json "$S"
}
first=$(wread "$R/buy_orders?page_size=10")
deep=$(wread "$R/buy_orders?page_size=10&last_reference=$deep_id")
first_loadgen=$(target/release/loadgen read --url "$R/buy_orders?page_size=10" --connections 16 --seconds "$S")
# The same SELECTs straight from pgbench (prepared statements, 16 clients): what the read path
# costs on top of the query.
pgread() { # script [extra args] → JSON {per_second, client_cpu (s per 1k transactions)}
  timed pgbench -h 127.0.0.1 -U postgres -n -M prepared -c 16 -j 2 -T "$S" "${@:2}" -f "bench/pgbench/$1" "$LOCAL_NAME" |
    awk -v s="$S" '
    $1 == "cpu" { cpu = $2 + $3 }
    /^tps = / { tps = $3 }
    END { printf "{\"per_second\": %.0f, \"client_cpu\": %.3f}", tps, cpu / (tps * s) * 1000 }'
}
c16j=$(pgread first_page.sql); d16j=$(pgread deep_page.sql -D "deep_id=$deep_id")
c16=$(field "$c16j" per_second); d16=$(field "$d16j" per_second)

echo "writes: two api-write processes…" >&2
deploy/local.sh down >/dev/null 2>&1
deploy/local.sh up --write-instances 2 >&2
BUY_ORDERS_API_KEY=$(cat "$LOCAL_RUN_DIR/api-key")
two16=$(write_run 16 $R $W http://127.0.0.1:9710)

echo "writes: the full topology with a quorum queue…" >&2
# The projector's queue as AMQP_QUEUE_TYPE=quorum (Raft log, at-least-once dead letters) on the
# same single node: what the replicated type costs against the classic one measured above.
deploy/local.sh down >/dev/null 2>&1
AMQP_QUEUE_TYPE=quorum deploy/local.sh up --write-instances 1 >&2
BUY_ORDERS_API_KEY=$(cat "$LOCAL_RUN_DIR/api-key")
quorum16=$(write_run 16 $R $W)

echo "writes: the full topology over amqps://…" >&2
# The same topology with the relay and the projector on amqps:// (certificate and host name
# verified against a CA made here), through Debian's stunnel4 in front of the same broker: what
# TLS to a managed broker costs against the plain AMQP measured above. stunnel's own hop is in
# the figure (a broker's native TLS listener would have none), so it overstates the cost.
command -v stunnel4 >/dev/null || { apt-get update -qq && apt-get install -y -qq stunnel4 >/dev/null; }
deploy/local.sh down >/dev/null 2>&1
TLS_DIR=$LOCAL_RUN_DIR/tls
mkdir -p "$TLS_DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=bench CA" \
  -addext basicConstraints=critical,CA:TRUE -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
  -keyout "$TLS_DIR/broker.key" -out "$TLS_DIR/broker.csr" 2>/dev/null
openssl x509 -req -in "$TLS_DIR/broker.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" -CAcreateserial \
  -days 2 -extfile <(echo subjectAltName=DNS:localhost) -out "$TLS_DIR/broker.pem" 2>/dev/null
printf 'foreground = yes\npid =\n[amqps]\naccept = 127.0.0.1:9790\nconnect = 127.0.0.1:5672\ncert = %s\nkey = %s\n' \
  "$TLS_DIR/broker.pem" "$TLS_DIR/broker.key" >"$TLS_DIR/stunnel.conf"
stunnel4 "$TLS_DIR/stunnel.conf" >/dev/null 2>&1 &
STUNNEL=$!
trap 'kill $STUNNEL 2>/dev/null || true; cleanup' EXIT
LOCAL_AMQP_BASE=amqps://guest:guest@localhost:9790 LOCAL_AMQP_QUERY="cacertfile=$TLS_DIR/ca.pem" \
  deploy/local.sh up --write-instances 1 >&2
BUY_ORDERS_API_KEY=$(cat "$LOCAL_RUN_DIR/api-key")
amqps16=$(write_run 16 $R $W)

rss() { awk '/VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$(cat "$LOCAL_RUN_DIR/$1.pid")/status" 2>/dev/null || echo "?"; }
rss_write=$(rss api-write-0); rss_read=$(rss api-read); rss_projector=$(rss projector)

table=$(cat <<EOT

### Benchmark, $(date -u +%Y-%m-%d) — $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL, RabbitMQ and the services on the same machine; ${S} s per run

| measurement | result | reference (same run) | ratio |
|---|---|---|---|
| PUT /buy_order, HTTP + JSON floor (\`bench/floor\`: parse the body, answer a fixed order), wrk | 16 conn: $(field "$floor16" per_second) req/s, p99 $(field "$floor16" p99_ms) ms · 64 conn: $(field "$floor64" per_second) req/s, p99 $(field "$floor64" p99_ms) ms | | |
| **PUT /buy_order, all-in-one in memory, wrk, 16 conn** | $(field "$aio16" per_second) orders/s, p99 $(field "$aio16" p99_ms) ms, $(field "$aio16" non_200) non-200; wrk CPU $(field "$aio16" client_cpu) s per 1k | floor, 16 conn: $(field "$floor16" per_second) req/s | **all-in-one/floor $(ratio "$(field "$aio16" per_second)" "$(field "$floor16" per_second)")** |
| **PUT /buy_order, all-in-one in memory, wrk, 64 conn** | $(field "$aio64" per_second) orders/s, p99 $(field "$aio64" p99_ms) ms, $(field "$aio64" non_200) non-200; wrk CPU $(field "$aio64" client_cpu) s per 1k | floor, 64 conn: $(field "$floor64" per_second) req/s | **all-in-one/floor $(ratio "$(field "$aio64" per_second)" "$(field "$floor64" per_second)")** |
| PUT /buy_order, all-in-one in memory, 16 conn | $(wrow "$mem16") | (no database: the services' own ceiling) | |
| PUT /buy_order, all-in-one, a log line per request (\`REQUEST_LOG=all\`), wrk, 16 conn | $(field "$logged16" per_second) orders/s, p99 $(field "$logged16" p99_ms) ms; log $(awk -v b="$logged_bytes" -v n="$logged_requests" 'BEGIN { printf "%.0f", b / n }') bytes per request | default (\`errors-and-slow\`), 16 conn: $(field "$aio16" per_second) orders/s; log $(awk -v b="$default_bytes" -v n="$default_requests" 'BEGIN { printf "%.3f", b / n }') bytes per request ($default_bytes bytes in all) | all/default $(ratio "$(field "$logged16" per_second)" "$(field "$aio16" per_second)") |
| **in-memory store as it grows**: PUT, wrk, 16 conn, ${STORE_SECONDS} s from $store_big_n orders stored | $(field "$store_big" per_second) orders/s, p99 $(field "$store_big" p99_ms) ms; **RSS $(awk -v b="$rss_big" 'BEGIN { printf "%.0f", b / 1024 }') MiB: $bytes_per_order bytes per stored order** (RSS growth / orders, read table included) | from $store_small_n orders stored: $(field "$store_small" per_second) orders/s, p99 $(field "$store_small" p99_ms) ms | **1M/10k $(ratio "$(field "$store_big" per_second)" "$(field "$store_small" per_second)")** |
| PUT /buy_order, api-write alone, 16 conn | $(wrow "$alone16") | pgbench (a) insert event alone: $a16 tx/s · (b) insert + ledger update: $b16 tx/s | API/(a) $(ratio "$(field "$alone16" per_second)" "$a16") · API/(b) $(ratio "$(field "$alone16" per_second)" "$b16") |
| PUT /buy_order, api-write alone, 64 conn | $(wrow "$alone64") | (a) $a64 tx/s · (b) $b64 tx/s | API/(a) $(ratio "$(field "$alone64" per_second)" "$a64") · API/(b) $(ratio "$(field "$alone64" per_second)" "$b64") |
| **PUT /buy_order, full topology, 16 conn** | $(wrow "$w16") | (a) $a16 tx/s · (b) $b16 tx/s | **API/(a) $(ratio "$(field "$w16" per_second)" "$a16")** · API/(b) $(ratio "$(field "$w16" per_second)" "$b16") |
| **PUT /buy_order, full topology, 64 conn** | $(wrow "$w64") | (a) $a64 tx/s · (b) $b64 tx/s | **API/(a) $(ratio "$(field "$w64" per_second)" "$a64")** · API/(b) $(ratio "$(field "$w64" per_second)" "$b64") |
| PUT /buy_order, full topology, two api-write, 16 conn | $(wrow "$two16") | one api-write, 16 conn: $(field "$w16" per_second) orders/s | two/one $(ratio "$(field "$two16" per_second)" "$(field "$w16" per_second)") |
| PUT /buy_order, full topology, quorum queue (\`AMQP_QUEUE_TYPE=quorum\`), 16 conn | $(wrow "$quorum16"); lag p50 $(field "$quorum16" lag_p50_ms) ms, p99 $(field "$quorum16" lag_p99_ms) ms | classic queue, 16 conn: $(field "$w16" per_second) orders/s, lag p99 $(field "$w16" lag_p99_ms) ms | quorum/classic $(ratio "$(field "$quorum16" per_second)" "$(field "$w16" per_second)") |
| PUT /buy_order, full topology over amqps:// (stunnel TLS in front of RabbitMQ, verified), 16 conn | $(wrow "$amqps16"); lag p50 $(field "$amqps16" lag_p50_ms) ms, p99 $(field "$amqps16" lag_p99_ms) ms | plain AMQP, 16 conn: $(field "$w16" per_second) orders/s, lag p99 $(field "$w16" lag_p99_ms) ms | amqps/AMQP $(ratio "$(field "$amqps16" per_second)" "$(field "$w16" per_second)") |
| **pipeline steady rate** (open-loop, ${STEADY_SECONDS} s, full topology): the highest rate tried whose lag p99 ≤ 100 ms | held: $(steady_cell "$steady_ok") · the lowest that did not: $(steady_cell "$steady_fail") | pgbench (a) insert event alone, 16 clients: $a16 tx/s | **steady/(a) $(ratio "$steady_rate" "$a16")** |
| **pipeline catch-up**: api-write (relay) and projector restarted after $backlog events were stored without them | read table: **$(field "$projector_catch_up" per_second) events/s** ($(field "$projector_catch_up" events) events in $(field "$projector_catch_up" seconds) s, applied from the store) · relay to RabbitMQ meanwhile: $(field "$relay_catch_up" per_second) events/s ($(field "$relay_catch_up" seconds) s); CPU s per 1k events: $catch_up_cpu | steady rate: $steady_rate orders/s | **catch-up/steady $(ratio "$(field "$projector_catch_up" per_second)" "$( [ "$steady_rate" -gt 0 ] && echo "$steady_rate" || echo 1)")** · relay/steady $(ratio "$(field "$relay_catch_up" per_second)" "$( [ "$steady_rate" -gt 0 ] && echo "$steady_rate" || echo 1)") |
| lag PUT 200 → in GET (under the 16-conn load) | p50 $(field "$w16" lag_p50_ms) ms, p99 $(field "$w16" lag_p99_ms) ms | | |
| lag (under the 64-conn load) | p50 $(field "$w64" lag_p50_ms) ms, p99 $(field "$w64" lag_p99_ms) ms | | |
| read-your-writes probe under the 64-conn load ($((2 * S)) s, 8 probers: place, then read back at once) | **with the token: $(field "$probe64" probe_with_token_missed) missed of $(field "$probe64" probe_with_token)**; read-back p50 $(field "$probe64" readback_p50_ms) ms, p99 $(field "$probe64" readback_p99_ms) ms · without: $(field "$probe64" probe_without_token_missed) missed of $(field "$probe64" probe_without_token) | load meanwhile: $(field "$probe64" per_second) orders/s, lag p99 $(field "$probe64" lag_p99_ms) ms | |
| GET first page (10 rows), 16 conn (wrk) | $(field "$first" per_second) req/s, p99 $(field "$first" p99_ms) ms; wrk CPU $(field "$first" client_cpu) s per 1k | pgbench (c) the same SELECT: $c16 tx/s; pgbench CPU $(field "$c16j" client_cpu) s per 1k | **API/(c) $(ratio "$(field "$first" per_second)" "$c16")** |
| GET page $ROWS rows deep, 16 conn (wrk) | $(field "$deep" per_second) req/s, p99 $(field "$deep" p99_ms) ms; wrk CPU $(field "$deep" client_cpu) s per 1k | pgbench (d) the same SELECT: $d16 tx/s; pgbench CPU $(field "$d16j" client_cpu) s per 1k · first page | **API/(d) $(ratio "$(field "$deep" per_second)" "$d16")** · deep/first $(ratio "$(field "$deep" per_second)" "$(field "$first" per_second)") |
| GET first page, 16 conn, loadgen (reqwest) as the client | $(field "$first_loadgen" per_second) req/s, p99 $(field "$first_loadgen" p99_ms) ms | (c) $c16 tx/s | API/(c) $(ratio "$(field "$first_loadgen" per_second)" "$c16") |
| peak RSS | api-write $rss_write · api-read $rss_read · projector $rss_projector | | |
EOT
)
echo "$table"
echo "$table" >> bench/RESULTS.md
echo "rebuild…" >&2
bench/rebuild.sh "$ROWS" >/dev/null
tail -7 bench/RESULTS.md
