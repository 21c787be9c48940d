#!/usr/bin/env bash
# The first page of orders, newest first: get_buy_orders.sh [PAGE_SIZE]   (1..100, default 10)
# READ_URL overrides the read API's address (default http://127.0.0.1:8778).
set -euo pipefail
curl -sS -i "${READ_URL:-http://127.0.0.1:8778}/buy_orders?page_size=${1:-10}"
echo
