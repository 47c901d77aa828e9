-- The officer app (issue 4, DESIGN §6): accounts, sessions, login throttling, the append-only
-- audit log, key community contacts, and the app's query-side projections of set-ups, door
-- knocks and area activity (rebuilt from Kafka by the web service's projection consumer).

-- Accounts. account_id is the officer's pseudonym: it is what events carry (officer_id,
-- created_by), never the username or the name. Scope: ward codes and/or local authority codes
-- (Code-Point Open 2014 codes, as in ref_postcodes); admins are force-wide whatever their scope.
-- auth_backend names who vouches for the person: 'password' (argon2id hash here) or an SSO
-- provider (then external_subject is the provider's subject id and password_hash is NULL).
CREATE TABLE officer_accounts (
    account_id            text PRIMARY KEY CHECK (account_id ~ '^[A-Za-z0-9_-]{8,64}$'),
    username              text NOT NULL,
    display_name          text NOT NULL,
    role                  text NOT NULL CHECK (role IN ('officer', 'supervisor', 'analyst', 'admin')),
    team                  text NULL,
    ward_codes            text[] NOT NULL DEFAULT '{}',
    local_authority_codes text[] NOT NULL DEFAULT '{}',
    auth_backend          text NOT NULL DEFAULT 'password',
    external_subject      text NULL,
    password_hash         text NULL,
    demo                  boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    disabled_at           timestamptz NULL,
    CHECK (auth_backend <> 'password' OR password_hash IS NOT NULL)
);
CREATE UNIQUE INDEX officer_accounts_username ON officer_accounts (lower(username));
CREATE UNIQUE INDEX officer_accounts_subject ON officer_accounts (auth_backend, external_subject)
    WHERE external_subject IS NOT NULL;

-- Sessions: the cookie holds a random token; only its SHA-256 is stored, so a copy of this
-- table cannot be used to log in. The CSRF token is per session (synchroniser token).
CREATE TABLE officer_sessions (
    token_hash    bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    account_id    text NOT NULL REFERENCES officer_accounts(account_id) ON DELETE CASCADE,
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX officer_sessions_account ON officer_sessions (account_id);
CREATE INDEX officer_sessions_expiry ON officer_sessions (expires_at);

-- Login attempts, for throttling across processes (per username and per client address).
-- username_key is lower(username) even for unknown names: throttling must not reveal which
-- names exist.
CREATE TABLE officer_login_attempts (
    id            bigserial PRIMARY KEY,
    username_key  text NOT NULL,
    client        text NOT NULL,
    succeeded     boolean NOT NULL,
    attempted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX officer_login_attempts_user ON officer_login_attempts (username_key, attempted_at);
CREATE INDEX officer_login_attempts_client ON officer_login_attempts (client, attempted_at);

-- The audit log: every view or export of an identified person, with who, when, what and why.
-- Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE for every role, so a row once
-- written stays as written (the database owner would have to drop the trigger, itself a
-- visible schema change).
CREATE TABLE officer_audit_log (
    audit_id      bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    account_id    text NOT NULL,
    username      text NOT NULL,
    role          text NOT NULL,
    action        text NOT NULL CHECK (action IN ('view', 'export')),
    subject_kind  text NOT NULL,
    subject_ids   text[] NOT NULL DEFAULT '{}',
    area          text NULL,
    reason        text NOT NULL CHECK (length(btrim(reason)) > 0),
    detail        text NULL
);
CREATE INDEX officer_audit_log_at ON officer_audit_log (at DESC);
CREATE INDEX officer_audit_log_account ON officer_audit_log (account_id, at DESC);

CREATE FUNCTION officer_audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'officer_audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER officer_audit_log_no_update_delete
    BEFORE UPDATE OR DELETE ON officer_audit_log
    FOR EACH ROW EXECUTE FUNCTION officer_audit_log_refuse();
CREATE TRIGGER officer_audit_log_no_truncate
    BEFORE TRUNCATE ON officer_audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION officer_audit_log_refuse();

-- Key community contacts and advisory group members who agreed to be contacted by officers.
-- Part of the identity store (DESIGN §6): the personal fields live here and nowhere else, are
-- shown only inside an officer's scope, and every view is audited. Erasure deletes the row.
CREATE TABLE identity_contacts (
    contact_id            text PRIMARY KEY,
    kind                  text NOT NULL CHECK (kind IN ('key_contact', 'advisory_group')),
    name                  text NOT NULL,
    organisation          text NULL,
    email                 text NULL,
    phone                 text NULL,
    ward_code             text NOT NULL,
    local_authority_code  text NULL,
    community_group       text NULL,
    consent_given_at      timestamptz NOT NULL,
    consent_note          text NOT NULL,
    created_by            text NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX identity_contacts_ward ON identity_contacts (ward_code);
CREATE INDEX identity_contacts_la ON identity_contacts (local_authority_code);

-- Targeted set-ups as the setups.lifecycle topic says (projection; Kafka is the truth).
-- Targets are app-side planning figures the SetupCreated event has no field for yet; they are
-- kept here and not rebuilt by a replay.
CREATE TABLE officer_setups (
    setup_id            text PRIMARY KEY,
    name                text NOT NULL,
    goal                text NOT NULL,
    area_cells          text[] NOT NULL DEFAULT '{}',
    ward_codes          text[] NOT NULL DEFAULT '{}',
    community_group     text NULL,
    starts_on           date NOT NULL,
    ends_on             date NOT NULL,
    revisit_registered  boolean NOT NULL DEFAULT false,
    created_by          text NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    archived_at         timestamptz NULL,
    archived_by         text NULL,
    last_event_id       uuid NOT NULL
);
CREATE TABLE officer_setup_targets (
    setup_id             text PRIMARY KEY,
    doors                integer NULL CHECK (doors >= 0),
    registrations        integer NULL CHECK (registrations >= 0),
    survey_responses     integer NULL CHECK (survey_responses >= 0)
);

-- Door knocks from doorknocks.visits, one row per event (event id = idempotency key).
CREATE TABLE officer_doorknocks (
    event_id      uuid PRIMARY KEY,
    occurred_at   timestamptz NOT NULL,
    officer_id    text NOT NULL,
    postcode      text NOT NULL,
    address_ref   text NULL,
    door_key      text NULL,     -- normalised address_ref, to match doors across knocks
    outcome       text NOT NULL,
    setup_id      text NULL,
    cell          text NULL,     -- resolution 9
    ward_code     text NULL,
    local_authority_code text NULL
);
CREATE INDEX officer_doorknocks_door ON officer_doorknocks (postcode, door_key, occurred_at DESC);
CREATE INDEX officer_doorknocks_setup ON officer_doorknocks (setup_id, occurred_at);
CREATE INDEX officer_doorknocks_ward ON officer_doorknocks (ward_code, occurred_at);

-- "Not in": an address hidden from every officer's list for the rest of that (local) day.
CREATE TABLE officer_not_in (
    postcode      text NOT NULL,
    door_key      text NOT NULL,
    day           date NOT NULL,
    marked_by     text NOT NULL,
    marked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (postcode, door_key, day)
);

-- Registrations and survey responses per area over time, for progress reports: one row per
-- event (no resident id, no answers: counts by area only).
CREATE TABLE officer_area_activity (
    event_id      uuid PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('registration', 'survey_response')),
    occurred_at   timestamptz NOT NULL,
    cell          text NULL,     -- resolution 9
    ward_code     text NULL,
    local_authority_code text NULL,
    community_groups text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX officer_area_activity_ward ON officer_area_activity (ward_code, occurred_at);
CREATE INDEX officer_area_activity_cell ON officer_area_activity (cell, occurred_at);

-- Feedback ("you said, we did") the app sent, for the compose page's history and scope checks.
CREATE TABLE officer_feedback (
    notification_id text PRIMARY KEY,
    sender          text NOT NULL,
    ward_codes      text[] NOT NULL DEFAULT '{}',
    setup_id        text NULL,
    subject         text NOT NULL,
    body            text NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now()
);
