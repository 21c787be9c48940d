-- How far the relay has published the event log to RabbitMQ (advanced only after the broker
-- confirms). One row per relay name.
CREATE TABLE relay_checkpoint
(
    name     text PRIMARY KEY,
    position bigint NOT NULL CHECK (position >= 0)
);

INSERT INTO relay_checkpoint (name, position) VALUES ('rabbitmq', 0);
