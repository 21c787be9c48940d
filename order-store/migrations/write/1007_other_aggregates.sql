-- Other aggregates in the same tables. postgres-es's `events` may hold the events of an
-- application's own aggregates next to BuyOrder's. They take no position (the log is BuyOrder's
-- alone: a reader of it never meets an event it cannot read) and no part in the ledger (the
-- trigger lets them through before it touches `btc_ledger`, so they never wait on its lock, nor
-- hold it). BuyOrder's events must still have one.
ALTER TABLE events ALTER COLUMN position DROP NOT NULL;
ALTER TABLE events ADD CONSTRAINT events_buy_order_position
    CHECK (aggregate_type <> 'BuyOrder' OR position IS NOT NULL);
