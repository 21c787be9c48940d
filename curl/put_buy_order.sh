#!/usr/bin/env bash
# Places a buy order: put_buy_order.sh [CURRENCY] [AMOUNT] [IDEMPOTENCE_KEY]
# Defaults: USD, 123.45, a fresh UUID. Run it twice with the same key to see an idempotent replay.
# WRITE_URL overrides the write API's address (default http://127.0.0.1:8777).
# BUY_ORDERS_API_KEY, when set, is sent as `Authorization: Bearer …` (passed on curl's standard
# input, so the key never shows in the process list).
set -euo pipefail
# curl reads the header from its standard input (--config -): printf is a shell builtin.
auth() {
  if [ -n "${BUY_ORDERS_API_KEY:-}" ]; then
    printf 'header = "Authorization: Bearer %s"\n' "$BUY_ORDERS_API_KEY"
  fi
}
currency=${1:-USD}
amount=${2:-123.45}
key=${3:-$(cat /proc/sys/kernel/random/uuid 2>/dev/null || uuidgen)}
auth | curl -sS -i --config - -X PUT "${WRITE_URL:-http://127.0.0.1:8777}/buy_order" \
  -H 'content-type: application/json' \
  -d "{\"currency\":\"${currency}\",\"amount\":\"${amount}\",\"idempotence_key\":\"${key}\"}"
echo
