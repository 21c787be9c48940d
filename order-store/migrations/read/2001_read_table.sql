-- The read table: what GET /buy_orders returns, keyed by the event's global position, which is
-- also the page order (newest first = position descending; positions are unique, so ties
-- cannot happen). Every page is a backward range scan of the primary key.
CREATE TABLE buy_order_view
(
    position        bigint PRIMARY KEY,
    id              uuid           NOT NULL UNIQUE,
    created_at      timestamptz    NOT NULL,
    currency        text           NOT NULL CHECK (currency IN ('USD', 'EUR', 'GBP')),
    currency_amount numeric(11, 2) NOT NULL CHECK (currency_amount > 0),
    btc_rate        numeric        NOT NULL CHECK (btc_rate > 0),
    btc_amount      numeric(16, 8) NOT NULL CHECK (btc_amount > 0)
);

-- How far the projector has applied the event log; moved in the same transaction as the rows.
CREATE TABLE projector_checkpoint
(
    name     text PRIMARY KEY,
    position bigint NOT NULL CHECK (position >= 0)
);

INSERT INTO projector_checkpoint (name, position) VALUES ('buy_order_view', 0);
