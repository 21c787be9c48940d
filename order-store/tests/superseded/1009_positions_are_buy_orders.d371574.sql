-- Only BuyOrder's events have a position, now as a constraint: with 1007's converse
-- (`events_buy_order_position`), an event has a position exactly when it is BuyOrder's.
--
-- Why it matters: readers of the log (the relay, the projector's fallback, `rebuild`, `audit`)
-- ask for `position > $1 ORDER BY position LIMIT $2` and nothing else, so PostgreSQL has one
-- index to read them by (`events_position`). With `aggregate_type = 'BuyOrder'` in the query
-- too, a table without statistics yet (a fresh store in its first minute of load, before
-- autovacuum's first ANALYZE) was read by ANDing a bitmap of the primary key's every BuyOrder
-- entry: the relay's read of ~60 events cost 8 ms instead of 0.3 ms, growing with the table,
-- and took half of PostgreSQL's CPU under load. The trigger (1007) already gives other
-- aggregates' events no position; this makes it impossible for any path to do otherwise.
--
-- Adding it scans the table once under its lock (about a second per few million events).
ALTER TABLE events ADD CONSTRAINT events_position_is_buy_order
    CHECK (position IS NULL OR aggregate_type = 'BuyOrder');
