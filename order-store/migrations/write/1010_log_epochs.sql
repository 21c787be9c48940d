-- Epochs of the log: what makes a position unique across database failovers.
--
-- After an asynchronous failover the promoted standby lacks the last commits of the old
-- primary, and it hands their positions out again, to other orders. A position alone then
-- names two different events. PostgreSQL's timeline changes at every promotion, so each
-- timeline is an epoch of the log: `log_epochs` records the first position appended on each
-- one. An event's epoch is the last epoch that began at or before its position; (epoch,
-- position) is unique. The relay publishes it with each event (docs/events.md says how a
-- subscriber uses it).
--
-- The ledger row is updated once per commit batch (and once per event on the trigger's path),
-- so a trigger on it notices a new timeline at the first append after a promotion, for the
-- cost of reading the current WAL file's name once per batch.
CREATE TABLE log_epochs
(
    epoch          integer PRIMARY KEY,
    first_position bigint      NOT NULL CHECK (first_position >= 1),
    began_at       timestamptz NOT NULL DEFAULT now()
);

-- What a relay found when it checked what it had published against what the log now holds:
-- positions it had published that the log no longer has, or holds as other events.
CREATE TABLE log_rewinds
(
    id              bigserial PRIMARY KEY,
    detected_at     timestamptz NOT NULL DEFAULT now(),
    epoch           integer,
    first_position  bigint      NOT NULL,
    published_up_to bigint      NOT NULL,
    detail          text        NOT NULL
);

-- The timeline this primary writes WAL on (the first eight hex digits of the WAL file name).
CREATE FUNCTION buy_orders_timeline() RETURNS integer
    LANGUAGE sql VOLATILE AS
$$
SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::integer
$$;

ALTER TABLE btc_ledger ADD COLUMN epoch integer;
UPDATE btc_ledger SET epoch = buy_orders_timeline();
-- Everything stored so far is of the epoch it was migrated in.
INSERT INTO log_epochs (epoch, first_position) VALUES (buy_orders_timeline(), 1);

CREATE FUNCTION buy_orders_ledger_epoch() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    now_epoch integer;
BEGIN
    IF NEW.last_position = OLD.last_position THEN
        RETURN NEW;
    END IF;
    now_epoch := buy_orders_timeline();
    IF now_epoch IS DISTINCT FROM OLD.epoch THEN
        INSERT INTO log_epochs (epoch, first_position)
        VALUES (now_epoch, OLD.last_position + 1)
        ON CONFLICT (epoch) DO NOTHING;
        NEW.epoch := now_epoch;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER btc_ledger_epoch
    BEFORE UPDATE ON btc_ledger
    FOR EACH ROW EXECUTE FUNCTION buy_orders_ledger_epoch();
