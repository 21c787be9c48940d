-- (c) The read API's first page for one client, as api-read sends it (client_id = 'local', the
-- benchmark's client; 10 rows): the reference for GET /buy_orders.
SELECT id, created_at, currency, currency_amount, btc_rate, btc_amount
  FROM buy_order_view WHERE client_id = 'local' ORDER BY -position LIMIT 10;
