-- Which instance id is in use: each running instance keeps its row fresh (heartbeat_ms), so
-- a second one started with the same HERALD_INSTANCE_ID is refused instead of releasing the
-- first one's live delivery leases. A clean stop deletes the row; a crashed instance's row
-- goes stale. `token` tells the run that holds the id from another.
CREATE TABLE instance_presence (
    id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);
