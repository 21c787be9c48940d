-- Keys belong to a client, several at once, so a leaked key is rotated without a new client
-- (whose name, and so whose orders, would differ). A key is in force while it is neither
-- revoked nor past its expiry; `clients rotate --grace` gives the old keys an expiry, a key
-- revoked alone gets revoked_at. last_used_at is written by the services every few seconds
-- (never per request), for `clients keys`.
--
-- api_clients keeps key_id and key_hash as a mirror of the client's newest key in force,
-- maintained by every change here: a service of the previous version, still running during a
-- rolling upgrade, reads only those columns, so it accepts that key (the new one, right after a
-- rotation) and no other. A client left with no key in force is mirrored by an unusable one
-- (a hash of nothing anyone holds).
CREATE TABLE api_keys
(
    key_id       text PRIMARY KEY,
    client       text        NOT NULL REFERENCES api_clients (name),
    key_hash     bytea       NOT NULL CHECK (octet_length(key_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

CREATE INDEX api_keys_client ON api_keys (client, created_at);

INSERT INTO api_keys (key_id, client, key_hash, created_at, revoked_at)
SELECT key_id, name, key_hash, created_at, revoked_at
  FROM api_clients;

-- The mirror of `client`'s newest key in force (see above).
CREATE FUNCTION api_clients_mirror_keys(client_name text) RETURNS void
    LANGUAGE sql AS
$$
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
$$;
