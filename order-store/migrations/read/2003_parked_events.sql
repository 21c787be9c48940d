-- Events of the log a projection could not read (a newer major version, an older one with no
-- upcaster, JSON that is not its version's shape: docs/events.md). Each is parked here with
-- why, in the transaction that moves the projection's checkpoint past it, so one never stalls
-- the events after it. Once an upcaster for it is deployed, `projector rebuild` projects it and
-- clears its row.
CREATE TABLE parked_events
(
    projection   text        NOT NULL,
    position     bigint      NOT NULL CHECK (position > 0),
    aggregate_id text        NOT NULL,
    sequence     bigint      NOT NULL,
    reason       text        NOT NULL,
    parked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, position)
);
