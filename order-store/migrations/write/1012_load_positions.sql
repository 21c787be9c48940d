-- Grouped loads that also say where each event stands in the log, so a replayed order answers
-- with its position (the consistency token of `PUT /buy_order`), as a first placement does.
--
-- A function of its own beside 1006's `buy_orders_load`, which stays as it is: a service of the
-- previous version, still running during a rolling upgrade, calls that one. Same plan shape (one
-- index lookup per id, in a loop; 1006 says why).
CREATE FUNCTION buy_orders_load_positioned(aggregate_type_in text, aggregate_ids text[])
    RETURNS TABLE (aggregate_id text, sequence bigint, event_type text, event_version text,
                   payload json, metadata json, log_position bigint)
    LANGUAGE plpgsql STABLE AS
$$
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
$$;
