-- API clients: who may call the APIs. The key is shown once, at creation; only its public id
-- (for lookup) and the SHA-256 of its secret part are stored. Names are never reused (orders
-- belong to a name), so a revoked client stays here with revoked_at set.
CREATE TABLE api_clients
(
    name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    admin      boolean     NOT NULL DEFAULT false,
    key_id     text        NOT NULL UNIQUE,
    key_hash   bytea       NOT NULL CHECK (octet_length(key_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Every change of the BTC cap, with when it happened and what it was before. The ledger row holds
-- the cap in force; this is its history. A store with no row here has never had its cap set:
-- the first process to start seeds it from MAX_TOTAL_BTC.
CREATE TABLE btc_cap_changes
(
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    previous_sats bigint,
    cap_sats     bigint      NOT NULL CHECK (cap_sats > 0),
    reason       text        NOT NULL
);
