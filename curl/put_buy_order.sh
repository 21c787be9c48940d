#!/usr/bin/env bash
# Places a buy order: put_buy_order.sh [CURRENCY] [AMOUNT] [IDEMPOTENCE_KEY]
# Defaults: USD, 123.45, a fresh UUID. Run it twice with the same key to see an idempotent replay.
# WRITE_URL overrides the write API's address (default http://127.0.0.1:8777).
set -euo pipefail
currency=${1:-USD}
amount=${2:-123.45}
key=${3:-$(cat /proc/sys/kernel/random/uuid 2>/dev/null || uuidgen)}
curl -sS -i -X PUT "${WRITE_URL:-http://127.0.0.1:8777}/buy_order" \
  -H 'content-type: application/json' \
  -d "{\"currency\":\"${currency}\",\"amount\":\"${amount}\",\"idempotence_key\":\"${key}\"}"
echo
