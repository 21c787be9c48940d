#!/usr/bin/env bash
# The page after a given order: get_buy_orders_pass_last_ref.sh <LAST_REFERENCE> [PAGE_SIZE]
# LAST_REFERENCE is the "last_reference" of the previous page (the id of its last row).
# READ_URL overrides the read API's address (default http://127.0.0.1:8778).
# BUY_ORDERS_API_KEY, when set, is sent as `Authorization: Bearer …` (passed on curl's standard
# input, so the key never shows in the process list).
# CONSISTENCY_TOKEN, when set (the Consistency-Token header of a put_buy_order.sh answer), makes
# the read answer only once it shows that order: read-your-writes (503 not_yet_consistent if the
# read side has not caught up within its bound).
set -euo pipefail
# curl reads the header from its standard input (--config -): printf is a shell builtin.
auth() {
  if [ -n "${BUY_ORDERS_API_KEY:-}" ]; then
    printf 'header = "Authorization: Bearer %s"\n' "$BUY_ORDERS_API_KEY"
  fi
  if [ -n "${CONSISTENCY_TOKEN:-}" ]; then
    printf 'header = "Consistency-Token: %s"\n' "$CONSISTENCY_TOKEN"
  fi
}
if [ $# -lt 1 ]; then
  echo "usage: $0 <last_reference> [page_size]" >&2
  exit 2
fi
auth | curl -sS -i --config - "${READ_URL:-http://127.0.0.1:8778}/buy_orders?last_reference=${1}&page_size=${2:-10}"
echo
