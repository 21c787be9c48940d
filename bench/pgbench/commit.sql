-- (b) The equivalent of our commit: insert one event row with the ledger trigger on, which
-- updates the one-row btc_ledger (cap check + position) in the same transaction.
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ('BuyOrder', gen_random_uuid()::text, 1, 'BuyOrderPlaced', '1.0',
        '{"BuyOrderPlaced":{"satoshis":20627}}', '{"request_id":"bench"}');
