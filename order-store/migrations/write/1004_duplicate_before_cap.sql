-- A duplicate is a duplicate before it is a cap refusal.
--
-- The trigger used to add an event's satoshis to the ledger before the primary key of `events`
-- was checked: the losing request of a duplicate pair, which waits on the ledger row's lock,
-- added its satoshis a second time and, near the cap, failed on btc_ledger_within_cap (23514):
-- "btc_cap_exceeded, nothing stored" for an order that was committed.
--
-- Now the trigger takes the ledger row's lock first. Once it holds it, every insert that held it
-- before has committed or rolled back, and the next statement (a fresh snapshot: READ COMMITTED,
-- volatile function) sees a duplicate that committed. Such an insert fails as the duplicate it is
-- (23505, which postgres-es reports as a concurrency conflict, and the writer answers with the
-- stored order), before any satoshi is counted.
CREATE OR REPLACE FUNCTION buy_orders_event_inserted() RETURNS trigger
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
    PERFORM 1 FROM btc_ledger FOR UPDATE;
    IF EXISTS (SELECT 1
                 FROM events
                WHERE aggregate_type = NEW.aggregate_type
                  AND aggregate_id = NEW.aggregate_id
                  AND sequence = NEW.sequence) THEN
        RAISE EXCEPTION 'event % of % % exists already', NEW.sequence, NEW.aggregate_type, NEW.aggregate_id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'events_pkey';
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
