-- Ingest ledger: which event ids a producer has already published, so re-importing a file or
-- re-posting an incident publishes nothing new. Downstream consumers dedupe by event id as well
-- (the ledger is written after the broker acknowledged, so a crash in between may re-publish).
CREATE TABLE ingest_ledger (
    event_id     uuid PRIMARY KEY,
    source       text NOT NULL,
    topic        text NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);

-- One row per import run: what the importer read, published and skipped (by reason).
CREATE TABLE import_runs (
    id           bigserial PRIMARY KEY,
    source       text NOT NULL,
    file_name    text NOT NULL,
    file_sha256  text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    rows_read    integer NOT NULL DEFAULT 0,
    published    integer NOT NULL DEFAULT 0,
    skipped      jsonb NOT NULL DEFAULT '{}'::jsonb,
    flagged      jsonb NOT NULL DEFAULT '{}'::jsonb
);
