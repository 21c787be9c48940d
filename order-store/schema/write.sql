-- The write store as the migrations in migrations/write leave it: constraints, indexes,
-- functions and triggers, as PostgreSQL prints them. Generated; do not edit. Change a
-- migration, then: UPDATE_SCHEMA=1 cargo test -p order-store --test migrations

ALTER TABLE api_clients ADD CONSTRAINT api_clients_key_hash_check CHECK ((octet_length(key_hash) = 32));

ALTER TABLE api_clients ADD CONSTRAINT api_clients_key_id_key UNIQUE (key_id);

ALTER TABLE api_clients ADD CONSTRAINT api_clients_name_check CHECK ((name ~ '^[A-Za-z0-9._-]{1,64}$'::text));

ALTER TABLE api_clients ADD CONSTRAINT api_clients_pkey PRIMARY KEY (name);

ALTER TABLE api_keys ADD CONSTRAINT api_keys_key_hash_check CHECK ((octet_length(key_hash) = 32));

ALTER TABLE api_keys ADD CONSTRAINT api_keys_pkey PRIMARY KEY (key_id);

ALTER TABLE btc_cap_changes ADD CONSTRAINT btc_cap_changes_cap_sats_check CHECK ((cap_sats > 0));

ALTER TABLE btc_cap_changes ADD CONSTRAINT btc_cap_changes_pkey PRIMARY KEY (id);

ALTER TABLE btc_ledger ADD CONSTRAINT btc_ledger_cap_sats_check CHECK ((cap_sats > 0));

ALTER TABLE btc_ledger ADD CONSTRAINT btc_ledger_pkey PRIMARY KEY (singleton);

ALTER TABLE btc_ledger ADD CONSTRAINT btc_ledger_singleton_check CHECK (singleton);

ALTER TABLE btc_ledger ADD CONSTRAINT btc_ledger_sold_sats_check CHECK ((sold_sats >= 0));

ALTER TABLE btc_ledger ADD CONSTRAINT btc_ledger_within_cap CHECK ((sold_sats <= cap_sats));

ALTER TABLE events ADD CONSTRAINT events_buy_order_position CHECK (((aggregate_type <> 'BuyOrder'::text) OR ("position" IS NOT NULL)));

ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (aggregate_type, aggregate_id, sequence);

ALTER TABLE events ADD CONSTRAINT events_position_is_buy_order CHECK ((("position" IS NULL) OR (aggregate_type = 'BuyOrder'::text)));

ALTER TABLE events ADD CONSTRAINT events_sequence_check CHECK ((sequence >= 0));

ALTER TABLE log_epochs ADD CONSTRAINT log_epochs_first_position_check CHECK ((first_position >= 1));

ALTER TABLE log_epochs ADD CONSTRAINT log_epochs_pkey PRIMARY KEY (epoch);

ALTER TABLE log_rewinds ADD CONSTRAINT log_rewinds_pkey PRIMARY KEY (id);

ALTER TABLE relay_checkpoint ADD CONSTRAINT relay_checkpoint_pkey PRIMARY KEY (name);

ALTER TABLE relay_checkpoint ADD CONSTRAINT relay_checkpoint_position_check CHECK (("position" >= 0));

ALTER TABLE snapshots ADD CONSTRAINT snapshots_current_snapshot_check CHECK ((current_snapshot >= 0));

ALTER TABLE snapshots ADD CONSTRAINT snapshots_last_sequence_check CHECK ((last_sequence >= 0));

ALTER TABLE snapshots ADD CONSTRAINT snapshots_pkey PRIMARY KEY (aggregate_type, aggregate_id, last_sequence);

CREATE INDEX api_keys_client ON public.api_keys USING btree (client, created_at);

CREATE UNIQUE INDEX events_position ON public.events USING btree ("position");

CREATE OR REPLACE FUNCTION public.api_clients_mirror_keys(client_name text)
 RETURNS void
 LANGUAGE sql
AS $function$
UPDATE api_clients c
   SET (key_id, key_hash) = (
        SELECT coalesce(newest.key_id, 'retired_' || md5(random()::text || clock_timestamp()::text)),
               coalesce(newest.key_hash, sha256(convert_to(random()::text || clock_timestamp()::text, 'UTF8')))
          FROM (SELECT NULL) AS one
          LEFT JOIN LATERAL (
                SELECT k.key_id, k.key_hash
                  FROM api_keys k
                 WHERE k.client = c.name
                   AND k.revoked_at IS NULL
                   AND (k.expires_at IS NULL OR k.expires_at > now())
                 ORDER BY k.created_at DESC, k.key_id DESC
                 LIMIT 1) AS newest ON true)
 WHERE c.name = client_name;
$function$
;

CREATE OR REPLACE FUNCTION public.buy_orders_append(aggregate_types text[], aggregate_ids text[], sequences bigint[], event_types text[], event_versions text[], payloads text[], metadatas text[])
 RETURNS TABLE(outcome text, event_position bigint, placed_at timestamp with time zone, remaining_sats bigint)
 LANGUAGE plpgsql
AS $function$
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
$function$
;

CREATE OR REPLACE FUNCTION public.buy_orders_event_inserted()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
DECLARE
    sats bigint := 0;
    placed timestamptz;
BEGIN
    IF current_setting('buy_orders.appending', true) = 'on' THEN
        -- buy_orders_append holds the ledger's lock, has checked the duplicate, the satoshis and
        -- the cap, and set the position; it moves the ledger once for its whole batch.
        IF NEW.position IS NULL THEN
            RAISE EXCEPTION 'an appended event needs its position' USING ERRCODE = 'not_null_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.aggregate_type <> 'BuyOrder' THEN
        -- Another aggregate's event (the table is postgres-es's, and may be shared): no
        -- position, no part in the ledger, and so never a wait on its lock (migration 1007).
        NEW.position := NULL;
        RETURN NEW;
    END IF;
    IF NEW.event_type = 'BuyOrderPlaced' THEN
        sats := (NEW.payload::jsonb -> 'BuyOrderPlaced' ->> 'satoshis')::bigint;
        IF sats IS NULL OR sats <= 0 THEN
            RAISE EXCEPTION 'BuyOrderPlaced without positive satoshis' USING ERRCODE = 'check_violation',
                CONSTRAINT = 'events_satoshis_positive';
        END IF;
        placed := (NEW.payload::jsonb -> 'BuyOrderPlaced' ->> 'placed_at')::timestamptz;
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
$function$
;

CREATE OR REPLACE FUNCTION public.buy_orders_ledger_epoch()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
$function$
;

CREATE OR REPLACE FUNCTION public.buy_orders_load(aggregate_type_in text, aggregate_ids text[])
 RETURNS TABLE(aggregate_id text, sequence bigint, event_type text, event_version text, payload json, metadata json)
 LANGUAGE plpgsql
 STABLE
AS $function$
#variable_conflict use_column
DECLARE
    one text;
BEGIN
    FOREACH one IN ARRAY aggregate_ids LOOP
        RETURN QUERY
            SELECT e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
              FROM events e
             WHERE e.aggregate_type = aggregate_type_in AND e.aggregate_id = one
             ORDER BY e.sequence;
    END LOOP;
END
$function$
;

CREATE OR REPLACE FUNCTION public.buy_orders_load_positioned(aggregate_type_in text, aggregate_ids text[])
 RETURNS TABLE(aggregate_id text, sequence bigint, event_type text, event_version text, payload json, metadata json, log_position bigint)
 LANGUAGE plpgsql
 STABLE
AS $function$
#variable_conflict use_column
DECLARE
    one text;
BEGIN
    FOREACH one IN ARRAY aggregate_ids LOOP
        RETURN QUERY
            SELECT e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload,
                   e.metadata, e.position
              FROM events e
             WHERE e.aggregate_type = aggregate_type_in AND e.aggregate_id = one
             ORDER BY e.sequence;
    END LOOP;
END
$function$
;

CREATE OR REPLACE FUNCTION public.buy_orders_timeline()
 RETURNS integer
 LANGUAGE sql
AS $function$
SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::integer
$function$
;

CREATE TRIGGER btc_ledger_epoch BEFORE UPDATE ON public.btc_ledger FOR EACH ROW EXECUTE FUNCTION buy_orders_ledger_epoch();

CREATE TRIGGER events_position_and_cap BEFORE INSERT ON public.events FOR EACH ROW EXECUTE FUNCTION buy_orders_event_inserted();
