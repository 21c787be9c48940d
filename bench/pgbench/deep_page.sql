-- (d) The read API's page after a reference deep in the table, as api-read sends it (the
-- reference's position found in an InitPlan): the reference for GET /buy_orders?last_reference=….
-- :deep_id is set with pgbench -D deep_id=<uuid> (with -M prepared it is a parameter).
SELECT id, created_at, currency, currency_amount, btc_rate, btc_amount
  FROM buy_order_view
 WHERE client_id = 'local'
   AND -position > -(SELECT position FROM buy_order_view WHERE id = :deep_id AND client_id = 'local')
 ORDER BY -position LIMIT 10;
