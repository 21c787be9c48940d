-- A store in a schema of its own (PG_SCHEMA) notifies new positions on a channel of its own,
-- `buy_order_events.<schema>`: NOTIFY channels are per database, and a listener woken by another
-- schema's position would take it for its own log's head. In `public` the channel keeps its name.
--
-- The two functions that notify (the trigger's and the group committer's) are rewritten in
-- place from their own definitions, the literal channel name swapped, so their bodies are not
-- repeated here. The migration runs with search_path set to the store's schema.
DO $migration$
DECLARE
    fn      oid;
    body    text;
    renamed text;
BEGIN
    IF current_schema() = 'public' THEN
        RETURN;
    END IF;
    FOR fn IN
        SELECT p.oid FROM pg_proc p
         WHERE p.pronamespace = current_schema()::regnamespace
           AND p.proname IN ('buy_orders_event_inserted', 'buy_orders_append')
    LOOP
        body := pg_get_functiondef(fn);
        renamed := replace(body, 'pg_notify(''buy_order_events'',',
                           format('pg_notify(%L,', 'buy_order_events.' || current_schema()));
        IF renamed = body THEN
            RAISE EXCEPTION 'function % does not notify as expected', fn::regprocedure;
        END IF;
        EXECUTE renamed;
    END LOOP;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the notifying functions are missing from schema %', current_schema();
    END IF;
END
$migration$;
