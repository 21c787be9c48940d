-- (a) The database's own limit for the write path's row: insert one event row, nothing else
-- (the ledger trigger is disabled for this run; positions from a sequence).
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position)
VALUES ('BuyOrder', gen_random_uuid()::text, 1, 'BuyOrderPlaced', '1.0',
        '{"BuyOrderPlaced":{"satoshis":20627}}', '{"request_id":"bench"}', nextval('bench_position'));
