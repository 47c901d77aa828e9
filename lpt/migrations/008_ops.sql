-- Operations (issue 6): the registry of worker processes and the record of dead-letter replays.

-- Worker processes announce themselves here at start-up and refresh last_seen every few
-- seconds (lpt/metrics_server.py). The web service reads it to scrape each worker's /metrics
-- (aggregated into its own /metrics) and to show worker health on the ops page. A clean stop
-- sets stopped_at; a crashed worker simply stops refreshing last_seen.
CREATE TABLE ops_workers (
    name        text PRIMARY KEY,
    kind        text NOT NULL,
    url         text NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz NULL
);
CREATE INDEX ops_workers_last_seen ON ops_workers (last_seen DESC);

-- Who replayed which dead letter, and where it went. One row per dead letter: a second replay
-- of the same message is refused (the consumers are idempotent, but an accidental double click
-- should not even look like two). replayed_by is an account id (a pseudonym) or 'ops-token'.
CREATE TABLE ops_replays (
    replay_id          bigserial PRIMARY KEY,
    dead_letter_topic  text NOT NULL,
    dead_letter_partition integer NOT NULL,
    dead_letter_offset bigint NOT NULL,
    original_topic     text NOT NULL,
    original_partition integer NULL,
    original_offset    bigint NULL,
    reason             text NOT NULL DEFAULT '',
    replayed_to_partition integer NULL,
    replayed_to_offset bigint NULL,
    replayed_by        text NOT NULL,
    note               text NULL,
    replayed_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dead_letter_topic, dead_letter_partition, dead_letter_offset)
);
CREATE INDEX ops_replays_at ON ops_replays (replayed_at DESC);
