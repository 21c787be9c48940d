-- Each order's client, so that a client pages only its own orders. Rows projected before this
-- migration get their client from the event log when the projector next starts (or on
-- `buy-orders migrate`: PgReadModel::backfill_clients); until then only admins see them.
ALTER TABLE buy_order_view ADD COLUMN client_id text;

-- One client's pages, newest first, are a forward scan of this index from (client, -bound).
-- It is on -position, not position, on purpose: ordered by position, a client's page could also
-- be served by the primary key with a filter, and the planner takes that plan when it misjudges
-- the client's share (for a client whose orders are old or few it reads most of the table).
-- Ordered by -position, only this index gives the order, so every page is this bounded scan.
CREATE INDEX buy_order_view_client_id_expr_idx ON buy_order_view (client_id, (-position));
