-- Notifications to residents (issue 5, DESIGN §6): outbox, message budget, digests, reply
-- tokens, replies inbox, urgent-send log.
--
-- Nothing here holds a contact detail: addresses are read from identity_people at send time,
-- so erasure (which deletes that row and the person's key) leaves only pseudonymous ids and
-- sealed reply bodies nobody can open. Rows that only make sense while the person exists
-- (preferences, budget charges, held messages, reply tokens) go with the identity row.

-- One row per notification id: the record that a request was accepted. The notification id is
-- the idempotency key of the whole request (a redelivered or re-published request finds it).
CREATE TABLE notification_requests (
    notification_id text PRIMARY KEY,
    event_id        uuid NOT NULL,
    kind            text NOT NULL,
    urgent          boolean NOT NULL,
    sender          text NOT NULL,
    subject         text NOT NULL,
    body            text NOT NULL,
    allow_reply     boolean NOT NULL,
    audience        jsonb NOT NULL,
    requested_at    timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    audience_size   integer NULL,
    completed_at    timestamptz NULL
);

-- The outbox: one row per (message, resident, channel), written before anything is sent. Its
-- status is the idempotency record of each delivery: only 'pending' rows are ever sent, and a
-- row leaves 'pending' in the same statement that records the outcome.
-- message_id is a notification id, or a digest id for weekly digests.
CREATE TABLE notification_outbox (
    message_id     text NOT NULL,
    resident_id    text NOT NULL,
    channel        text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    status         text NOT NULL CHECK (status IN (
                       'pending', 'scheduled', 'held_for_digest', 'digested', 'sent', 'failed',
                       'suppressed_opted_out')),
    urgent         boolean NOT NULL DEFAULT false,
    is_digest      boolean NOT NULL DEFAULT false,
    scheduled_for  timestamptz NULL,
    attempts       smallint NOT NULL DEFAULT 0,
    detail         text NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz NULL,
    PRIMARY KEY (message_id, resident_id, channel)
);
CREATE INDEX notification_outbox_due ON notification_outbox (scheduled_for)
    WHERE status = 'scheduled';
CREATE INDEX notification_outbox_pending ON notification_outbox (updated_at)
    WHERE status = 'pending';
CREATE INDEX notification_outbox_resident ON notification_outbox (resident_id);

-- Per-resident preferences; a resident without a row gets the defaults below.
CREATE TABLE notification_preferences (
    resident_id   text PRIMARY KEY REFERENCES identity_people(resident_id) ON DELETE CASCADE,
    channels      text[] NULL,                 -- NULL = the channels given at registration
    topics        text[] NULL,                 -- notification kinds wanted; NULL = all
    quiet_start   time NOT NULL DEFAULT '21:00',
    quiet_end     time NOT NULL DEFAULT '08:00',  -- quiet_start = quiet_end: no quiet hours
    timezone      text NOT NULL DEFAULT 'Europe/London',
    max_per_week  smallint NOT NULL DEFAULT 1 CHECK (max_per_week BETWEEN 0 AND 7),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The message budget, across all senders: one charge per non-urgent message (or digest) a
-- resident was sent or scheduled to be sent, whatever the number of channels.
CREATE TABLE notification_budget_ledger (
    resident_id  text NOT NULL REFERENCES identity_people(resident_id) ON DELETE CASCADE,
    message_id   text NOT NULL,
    charged_at   timestamptz NOT NULL,
    PRIMARY KEY (resident_id, message_id)
);
CREATE INDEX notification_budget_ledger_window
    ON notification_budget_ledger (resident_id, charged_at);

-- Messages held because the budget was used up: they go out together as the weekly digest.
CREATE TABLE notification_held (
    resident_id      text NOT NULL REFERENCES identity_people(resident_id) ON DELETE CASCADE,
    notification_id  text NOT NULL REFERENCES notification_requests(notification_id),
    held_at          timestamptz NOT NULL,
    digest_id        text NULL,
    PRIMARY KEY (resident_id, notification_id)
);
CREATE INDEX notification_held_waiting ON notification_held (resident_id) WHERE digest_id IS NULL;
CREATE INDEX notification_held_digest ON notification_held (digest_id);

-- Urgent safety alerts bypass the budget and quiet hours; every one is logged here.
CREATE TABLE notification_urgent_log (
    notification_id        text PRIMARY KEY,
    kind                   text NOT NULL,
    sender                 text NOT NULL,
    audience               jsonb NOT NULL,
    recipients             integer NOT NULL,
    over_budget            integer NOT NULL,  -- recipients whose weekly budget was already used
    in_quiet_hours         integer NOT NULL,  -- recipients inside their quiet hours
    logged_at              timestamptz NOT NULL
);

-- Reply tokens: single-use, expiring, unguessable (secrets.token_urlsafe(32)); only the
-- SHA-256 of the token is stored, so a copy of this table cannot be used to reply. No foreign
-- key: tokens are issued while sending, when a resident may be erased at any instant; a token
-- of an erased resident cannot be used (the reply would have no key to be sealed with).
CREATE TABLE reply_tokens (
    token_hash       bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    message_id       text NOT NULL,
    notification_id  text NOT NULL,
    resident_id      text NOT NULL,
    area_cell        text NULL,   -- resolution-9 cell of the resident's street
    ward_code        text NULL,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    used_at          timestamptz NULL
);
CREATE INDEX reply_tokens_resident ON reply_tokens (resident_id);
CREATE INDEX reply_tokens_expiry ON reply_tokens (expires_at);

-- Replies, in the inbox of the area they came from. The body is sealed with the resident's own
-- key (AES-GCM), so erasure makes it unreadable; nothing else here identifies the person.
CREATE TABLE reply_inbox (
    reply_id         text PRIMARY KEY,
    notification_id  text NOT NULL,
    resident_id      text NOT NULL,
    area_cell        text NULL,
    ward_code        text NULL,
    body_key_id      text NOT NULL,
    body_nonce       text NOT NULL,
    body_ciphertext  text NOT NULL,
    escalated        boolean NOT NULL DEFAULT false,
    received_at      timestamptz NOT NULL,
    read_at          timestamptz NULL
);
CREATE INDEX reply_inbox_ward ON reply_inbox (ward_code, received_at DESC);
CREATE INDEX reply_inbox_cell ON reply_inbox (area_cell, received_at DESC);
CREATE INDEX reply_inbox_escalated ON reply_inbox (received_at DESC) WHERE escalated;

-- The notification worker's own view of targeted set-ups (from setups.lifecycle), so a
-- request addressed to a set-up resolves to its area and community group.
CREATE TABLE notification_setups (
    setup_id         text PRIMARY KEY,
    area_cells       text[] NOT NULL DEFAULT '{}',
    ward_codes       text[] NOT NULL DEFAULT '{}',
    community_group  text NULL,
    archived_at      timestamptz NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
