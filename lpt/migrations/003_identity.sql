-- The identity store (DESIGN §6): the only place personal data lives.
-- Events carry the pseudonymous resident_id; personal fields that travel are sealed with the
-- person's key from identity_keys. Erasure deletes both rows: sealed copies elsewhere
-- (Kafka, stream state, outbox) become unreadable (crypto-shredding).

CREATE TABLE identity_keys (
    resident_id  text PRIMARY KEY,
    key_id       text NOT NULL UNIQUE,
    wrapped_key  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identity_people (
    resident_id  text PRIMARY KEY REFERENCES identity_keys(resident_id) ON DELETE CASCADE,
    email        text NULL,
    phone        text NULL,
    name         text NULL,
    postcode     text NOT NULL,
    address      text NULL,
    cell         text NULL,          -- H3 res 10 of the postcode; NULL when unlocated
    unlocated    boolean NOT NULL DEFAULT false,
    ward_code    text NULL,
    local_authority_code text NULL,
    channels     text[] NOT NULL,
    community_groups text[] NOT NULL DEFAULT '{}',
    consent_version text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    email_confirmed_at timestamptz NULL,
    opted_out_at timestamptz NULL
);
CREATE UNIQUE INDEX identity_people_email ON identity_people (lower(email)) WHERE email IS NOT NULL;
CREATE INDEX identity_people_cell ON identity_people (cell);
CREATE INDEX identity_people_ward ON identity_people (ward_code);

-- Erasure requests are kept (pseudonymous id only) as proof the request was honoured.
CREATE TABLE identity_erasures (
    resident_id  text PRIMARY KEY,
    requested_at timestamptz NOT NULL,
    completed_at timestamptz NULL
);
