-- Grouped loads: the events of many aggregates with one call (order-store's loader).
--
-- The query is planned afresh at each call (EXECUTE), with the ids it is given. As a prepared
-- statement, PostgreSQL switches to a generic plan after five runs, planned while `events` was
-- small, and for `aggregate_id = ANY($2)` that plan reads every event of the aggregate type and
-- filters: on a fresh database under load, a growing scan per order until autovacuum's next
-- ANALYZE. Planned with the ids, it is one index lookup per id.
CREATE FUNCTION buy_orders_load(aggregate_type_in text, aggregate_ids text[])
    RETURNS TABLE (aggregate_id text, sequence bigint, event_type text, event_version text,
                   payload json, metadata json)
    LANGUAGE plpgsql STABLE AS
$$
BEGIN
    RETURN QUERY EXECUTE
        'SELECT aggregate_id, sequence, event_type, event_version, payload, metadata
           FROM events
          WHERE aggregate_type = $1 AND aggregate_id = ANY($2)
          ORDER BY aggregate_id, sequence'
        USING aggregate_type_in, aggregate_ids;
END
$$;
