-- Group commit: many orders in one transaction, the ledger row locked and moved once per batch.
--
-- `buy_orders_append` is what the store's committer calls with every order waiting in the
-- process (one statement, so one round trip and one implicit transaction). Under the ledger's
-- row lock it takes the orders in the order given and decides each on its own, as a lone commit
-- would have been decided at that moment:
--   * `conflict`      the aggregate already has an event at that sequence (committed earlier,
--                     by anyone, or earlier in this very batch): nothing stored for it;
--   * `cap_exceeded`  its satoshis do not fit after every order placed before it: nothing
--                     stored; `remaining_sats` says what was left;
--   * `invalid`       the payload carries no positive satoshis (a bug, never a client's input);
--   * `placed`        stored, with the next position and its `placed_at` stamped here.
-- One order's refusal never fails another. Anything that fails the statement fails the whole
-- batch (nothing of it is stored).
--
-- `placed_at` is stamped where the position is assigned: the database's clock, read under the
-- lock, and never earlier than the stamp before it (`btc_ledger.last_placed_at`). So along the
-- positions, whatever process committed them, `placed_at` never goes back. The writer sends the
-- payload with `placed_at` at the Unix epoch; it is replaced here, and the stamp is returned.
--
-- The per-row trigger stays for any other insert (postgres-es's own path: commits of several
-- events, older processes during an upgrade). Inside `buy_orders_append` it only checks the row:
-- the function has done the ledger's work and moves the ledger once, at the end.

ALTER TABLE btc_ledger ADD COLUMN last_placed_at timestamptz;

UPDATE btc_ledger
   SET last_placed_at = (SELECT max((payload -> 'BuyOrderPlaced' ->> 'placed_at')::timestamptz)
                           FROM events
                          WHERE event_type = 'BuyOrderPlaced');

CREATE OR REPLACE FUNCTION buy_orders_event_inserted() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    sats bigint := 0;
    placed timestamptz;
BEGIN
    IF NEW.event_type = 'BuyOrderPlaced' THEN
        sats := (NEW.payload::jsonb -> 'BuyOrderPlaced' ->> 'satoshis')::bigint;
        IF sats IS NULL OR sats <= 0 THEN
            RAISE EXCEPTION 'BuyOrderPlaced without positive satoshis' USING ERRCODE = 'check_violation',
                CONSTRAINT = 'events_satoshis_positive';
        END IF;
        placed := (NEW.payload::jsonb -> 'BuyOrderPlaced' ->> 'placed_at')::timestamptz;
    END IF;
    IF current_setting('buy_orders.appending', true) = 'on' THEN
        -- buy_orders_append holds the ledger's lock, has checked the duplicate and the cap, and
        -- set the position; it moves the ledger once for its whole batch.
        IF NEW.position IS NULL THEN
            RAISE EXCEPTION 'an appended event needs its position' USING ERRCODE = 'not_null_violation';
        END IF;
        RETURN NEW;
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
           last_position = last_position + 1,
           last_placed_at = greatest(last_placed_at, placed)
     RETURNING last_position INTO NEW.position;
    -- delivered at commit, and only if it commits
    PERFORM pg_notify('buy_order_events', NEW.position::text);
    RETURN NEW;
END
$$;

CREATE FUNCTION buy_orders_append(aggregate_types text[], aggregate_ids text[], sequences bigint[],
                                  event_types text[], event_versions text[], payloads text[],
                                  metadatas text[])
    RETURNS TABLE (outcome text, event_position bigint, placed_at timestamptz, remaining_sats bigint)
    LANGUAGE plpgsql AS
$$
#variable_conflict use_column
DECLARE
    cap       bigint;
    sold      bigint;
    last_pos  bigint;
    stamp     timestamptz;
    sats      bigint;
    body      text;
    appended  boolean := false;
    -- what the writer puts in placed_at, to be replaced by the stamp
    unstamped constant text := '"placed_at":"1970-01-01T00:00:00Z"';
BEGIN
    SELECT l.cap_sats, l.sold_sats, l.last_position, l.last_placed_at
      INTO cap, sold, last_pos, stamp
      FROM btc_ledger l FOR UPDATE;
    PERFORM set_config('buy_orders.appending', 'on', true);
    FOR i IN 1 .. coalesce(array_length(aggregate_ids, 1), 0) LOOP
        outcome := NULL; event_position := NULL; placed_at := NULL; remaining_sats := NULL;
        sats := 0;
        body := payloads[i];
        IF event_types[i] = 'BuyOrderPlaced' THEN
            sats := (body::json -> 'BuyOrderPlaced' ->> 'satoshis')::bigint;
        END IF;
        -- Each statement here takes a fresh snapshot, after the lock: every commit that held the
        -- lock before this one is visible, and so is every row this batch has inserted.
        IF EXISTS (SELECT 1
                     FROM events e
                    WHERE e.aggregate_type = aggregate_types[i]
                      AND e.aggregate_id = aggregate_ids[i]
                      AND e.sequence = sequences[i]) THEN
            outcome := 'conflict';
        ELSIF sats IS NULL OR sats < 0 OR (event_types[i] = 'BuyOrderPlaced' AND sats = 0)
              OR (event_types[i] = 'BuyOrderPlaced' AND strpos(body, unstamped) = 0) THEN
            outcome := 'invalid';
        ELSIF sold + sats > cap THEN
            outcome := 'cap_exceeded';
            remaining_sats := cap - sold;
        ELSE
            stamp := greatest(clock_timestamp(), stamp);
            IF event_types[i] = 'BuyOrderPlaced' THEN
                body := replace(body, unstamped, '"placed_at":"'
                    || to_char(stamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"');
            END IF;
            last_pos := last_pos + 1;
            sold := sold + sats;
            INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                payload, metadata, position)
            VALUES (aggregate_types[i], aggregate_ids[i], sequences[i], event_types[i],
                    event_versions[i], body::json, metadatas[i]::json, last_pos);
            appended := true;
            outcome := 'placed';
            event_position := last_pos;
            placed_at := stamp;
            remaining_sats := cap - sold;
        END IF;
        RETURN NEXT;
    END LOOP;
    PERFORM set_config('buy_orders.appending', 'off', true);
    IF appended THEN
        UPDATE btc_ledger SET sold_sats = sold, last_position = last_pos, last_placed_at = stamp;
        -- delivered at commit, and only if it commits; readers take the newest position
        PERFORM pg_notify('buy_order_events', last_pos::text);
    END IF;
END
$$;
