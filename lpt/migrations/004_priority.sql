-- Priority tables (query side of the stream processors, streams/scorer.py). Kafka is the source
-- of truth: every row here can be rebuilt by replaying the topics into an empty database.
-- Writes are idempotent upserts; a row never goes back in event time (as_of).

-- Current state per area and level: 'res9' | 'res8' | 'res7' (H3 cells), 'ward',
-- 'local_authority', 'force'. Components hold raw values (as of as_of), percentiles, weights
-- and data dates; survey is NULL when fewer than 10 responses (small-number suppression).
CREATE TABLE priority_areas (
    level                text NOT NULL,
    area_id              text NOT NULL,
    resolution           smallint,
    score                double precision NOT NULL,
    rank                 integer NOT NULL,
    areas_ranked         integer NOT NULL,
    in_top               boolean NOT NULL,
    ward_code            text,
    local_authority_code text,
    components           jsonb NOT NULL,
    reasons              jsonb NOT NULL,
    actions              jsonb NOT NULL,
    streets              jsonb NOT NULL,
    counts               jsonb NOT NULL,
    survey               jsonb,
    engagement           jsonb NOT NULL,
    extra                jsonb NOT NULL DEFAULT '{}'::jsonb,
    as_of                timestamptz NOT NULL,
    weights_version      text NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (level, area_id)
);
CREATE INDEX priority_areas_rank ON priority_areas (level, rank);
CREATE INDEX priority_areas_ward ON priority_areas (ward_code) WHERE ward_code IS NOT NULL;
CREATE INDEX priority_areas_la ON priority_areas (local_authority_code)
    WHERE local_authority_code IS NOT NULL;

-- One snapshot per area and event-time day (the last state written that day), for trends and
-- "what changed since last week".
CREATE TABLE priority_history (
    level           text NOT NULL,
    area_id         text NOT NULL,
    day             date NOT NULL,
    score           double precision NOT NULL,
    rank            integer NOT NULL,
    areas_ranked    integer NOT NULL,
    in_top          boolean NOT NULL,
    components      jsonb NOT NULL,
    reasons         jsonb NOT NULL,
    as_of           timestamptz NOT NULL,
    weights_version text NOT NULL,
    PRIMARY KEY (level, area_id, day)
);
CREATE INDEX priority_history_day ON priority_history (level, day);

-- What priority.changed last announced per area (change detection survives restarts).
CREATE TABLE priority_announced (
    level    text NOT NULL,
    area_id  text NOT NULL,
    score    double precision NOT NULL,
    in_top   boolean NOT NULL,
    as_of    timestamptz NOT NULL,
    PRIMARY KEY (level, area_id)
);

-- The scorer's progress: event time of the tables and whether every row is written exactly
-- (settled) or some rank shifts are still deferred while input is flowing.
CREATE TABLE priority_status (
    id         text PRIMARY KEY,
    as_of      timestamptz,
    settled    boolean NOT NULL,
    cells      integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
