-- The public pages (issue 5, DESIGN §6): residents' own links, their audit trail, survey waves
-- and response rates, and area counts of the optional equality questions.
--
-- Nothing here holds a contact detail or anything a resident typed: tokens are stored as
-- SHA-256 hashes, and rows tied to a living person go with the identity row on erasure.

-- Links sent to a resident for acting on their own registration without logging in:
-- 'confirm_email' (single use) and 'manage' (preferences, copy of data, erasure; reusable until
-- it expires). Only the SHA-256 of the token is stored, so a copy of this table is useless.
CREATE TABLE public_tokens (
    token_hash   bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    purpose      text NOT NULL CHECK (purpose IN ('confirm_email', 'manage')),
    resident_id  text NOT NULL REFERENCES identity_people(resident_id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz NULL
);
CREATE INDEX public_tokens_resident ON public_tokens (resident_id);
CREATE INDEX public_tokens_expiry ON public_tokens (expires_at);

-- What residents did with their own data through a link: every view or export of their
-- details, every erasure. Pseudonymous id only. Append-only: a trigger refuses UPDATE, DELETE
-- and TRUNCATE, as for the officers' audit log.
CREATE TABLE public_audit_log (
    audit_id     bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    resident_id  text NOT NULL,
    action       text NOT NULL CHECK (action IN ('view', 'export', 'erase', 'preferences')),
    via          text NOT NULL,
    detail       text NULL
);
CREATE INDEX public_audit_log_resident ON public_audit_log (resident_id, at DESC);

CREATE FUNCTION public_audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'public_audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER public_audit_log_no_update BEFORE UPDATE OR DELETE ON public_audit_log
    FOR EACH ROW EXECUTE FUNCTION public_audit_log_refuse();
CREATE TRIGGER public_audit_log_no_truncate BEFORE TRUNCATE ON public_audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION public_audit_log_refuse();

-- Quarterly survey waves. A wave's invitations go out as survey_invitation notifications
-- (one per batch of residents); the personal, single-use link is the reply link the
-- notification worker puts in each message, so the wave is found from the notification id.
CREATE TABLE survey_waves (
    wave        text PRIMARY KEY CHECK (wave ~ '^[0-9]{4}Q[1-4]$'),
    issued_at   timestamptz NOT NULL,
    invited     integer NOT NULL DEFAULT 0
);
CREATE TABLE survey_wave_notifications (
    notification_id  text PRIMARY KEY,
    wave             text NOT NULL REFERENCES survey_waves(wave)
);
-- Who was invited in which wave, and whether they answered: the response rates by area.
-- The ward is copied at invitation time so rates survive erasure (aggregates remain); the
-- resident id is pseudonymous and links to nothing once the identity row is gone.
CREATE TABLE survey_invitations (
    wave                  text NOT NULL REFERENCES survey_waves(wave),
    resident_id           text NOT NULL,
    ward_code             text NULL,
    local_authority_code  text NULL,
    invited_at            timestamptz NOT NULL,
    notification_id       text NULL,    -- the survey_invitation that carried the link
    responded_at          timestamptz NULL,
    PRIMARY KEY (wave, resident_id)
);
CREATE INDEX survey_invitations_ward ON survey_invitations (wave, ward_code);

-- Answers to the optional equality questions that are not part of the registration event
-- (sex, disability). Kept only as counts per ward, never against a person, so they cannot be
-- used to pick anyone out (DESIGN §6); figures under 10 people are never shown.
CREATE TABLE equality_counts (
    ward_code  text NOT NULL,          -- '' when the postcode has no ward
    question   text NOT NULL,
    answer     text NOT NULL,
    residents  integer NOT NULL CHECK (residents >= 0),
    PRIMARY KEY (ward_code, question, answer)
);
