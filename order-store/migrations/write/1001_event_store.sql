-- The write store: postgres-es's schema (events, snapshots), plus what buy-orders needs next to it:
-- a global, gap-free, commit-ordered position on every event, and the BTC ledger that enforces
-- the cap in the same transaction as the event insert.

CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    -- set by the trigger below, never by the application
    position       bigint                       NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_position ON events (position);

CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- One row. Every event insert updates it, so its row lock serialises commits: the position it
-- hands out is in commit order, and a rolled-back insert rolls the counter back (no gaps).
-- sold_sats is the sum of satoshis of all BuyOrderPlaced events; the CHECK is the cap.
CREATE TABLE btc_ledger
(
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    cap_sats      bigint  NOT NULL CHECK (cap_sats > 0),
    sold_sats     bigint  NOT NULL DEFAULT 0 CHECK (sold_sats >= 0),
    last_position bigint  NOT NULL DEFAULT 0,
    CONSTRAINT btc_ledger_within_cap CHECK (sold_sats <= cap_sats)
);

-- The cap is set from MAX_TOTAL_BTC by every process at start-up; 100 BTC until then.
INSERT INTO btc_ledger (cap_sats) VALUES (10000000000);

CREATE FUNCTION buy_orders_event_inserted() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    sats bigint := 0;
BEGIN
    IF NEW.event_type = 'BuyOrderPlaced' THEN
        sats := (NEW.payload::jsonb -> 'BuyOrderPlaced' ->> 'satoshis')::bigint;
        IF sats IS NULL OR sats <= 0 THEN
            RAISE EXCEPTION 'BuyOrderPlaced without positive satoshis' USING ERRCODE = 'check_violation',
                CONSTRAINT = 'events_satoshis_positive';
        END IF;
    END IF;
    UPDATE btc_ledger
       SET sold_sats = sold_sats + sats,
           last_position = last_position + 1
     RETURNING last_position INTO NEW.position;
    -- delivered at commit, and only if it commits
    PERFORM pg_notify('buy_order_events', NEW.position::text);
    RETURN NEW;
END
$$;

CREATE TRIGGER events_position_and_cap
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION buy_orders_event_inserted();
