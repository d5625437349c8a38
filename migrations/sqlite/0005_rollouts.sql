-- Rollouts: a deployment of version A → B across named targets (instances), the targets'
-- states and drains, and the rollout's timeline. The outbox and threads learn rollouts: a
-- delivery announces either a window's update or a rollout's.

CREATE TABLE rollouts (
    id                INTEGER PRIMARY KEY,
    title             TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    from_version      TEXT,
    to_version        TEXT NOT NULL,
    maintenance_id    INTEGER REFERENCES maintenances (id) ON DELETE SET NULL,
    state             TEXT NOT NULL CHECK (state IN ('pending', 'in_progress', 'paused', 'completed', 'failed', 'aborted')),
    -- Seconds.
    progress_deadline INTEGER NOT NULL,
    stale_after       INTEGER NOT NULL,
    public_names      INTEGER NOT NULL DEFAULT 1,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    -- The stall clock runs from here; stalled_at is set when a stall was announced.
    last_progress_at  INTEGER,
    stalled_at        INTEGER,
    rollback_of       INTEGER REFERENCES rollouts (id) ON DELETE SET NULL,
    rolled_back_by    INTEGER REFERENCES rollouts (id) ON DELETE SET NULL,
    version           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX rollouts_state ON rollouts (state);
CREATE INDEX rollouts_history ON rollouts (finished_at DESC, id DESC) WHERE finished_at IS NOT NULL;
CREATE INDEX rollouts_window ON rollouts (maintenance_id) WHERE maintenance_id IS NOT NULL;

CREATE TABLE rollout_targets (
    id                 INTEGER PRIMARY KEY,
    rollout_id         INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    position           INTEGER NOT NULL,
    name               TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('pending', 'draining', 'drained', 'updating', 'healthy', 'failed')),
    version            TEXT,
    -- JSON objects {label: count}: now, and when the drain began.
    remaining          TEXT NOT NULL DEFAULT '{}',
    drain_start_counts TEXT NOT NULL DEFAULT '{}',
    -- JSON [[unix seconds, {label: count}], …]: the drain's recent reports, for the estimate.
    samples            TEXT NOT NULL DEFAULT '[]',
    drain_started_at   INTEGER,
    drained_at         INTEGER,
    changed_at         INTEGER,
    finished_at        INTEGER,
    last_report_at     INTEGER,
    forced             INTEGER NOT NULL DEFAULT 0,
    forced_reason      TEXT,
    note               TEXT,
    attempts           INTEGER NOT NULL DEFAULT 1,
    UNIQUE (rollout_id, name)
);
CREATE INDEX rollout_targets_rollout ON rollout_targets (rollout_id, position);

CREATE TABLE rollout_updates (
    id         INTEGER PRIMARY KEY,
    rollout_id INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    body       TEXT NOT NULL,
    note       TEXT,
    -- The target concerned, by its real name.
    target     TEXT,
    -- Who made the change: user:NAME, token:NAME, scheduler.
    actor      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX rollout_updates_rollout ON rollout_updates (rollout_id, id);

-- Deliveries, rebuilt: exactly one of maintenance_id and rollout_id says what a delivery
-- announces; a refresh of Discord's live rollout message has no update of its own.
CREATE TABLE deliveries_v2 (
    id                INTEGER PRIMARY KEY,
    channel_id        INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    maintenance_id    INTEGER REFERENCES maintenances (id) ON DELETE CASCADE,
    update_id         INTEGER REFERENCES updates (id) ON DELETE CASCADE,
    rollout_id        INTEGER REFERENCES rollouts (id) ON DELETE CASCADE,
    rollout_update_id INTEGER REFERENCES rollout_updates (id) ON DELETE CASCADE,
    kind              TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'skipped')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms   INTEGER NOT NULL,
    lease_until_ms    INTEGER,
    deadline_at       INTEGER NOT NULL,
    idem_key          TEXT NOT NULL,
    remote_id         TEXT,
    remote_url        TEXT,
    last_error        TEXT,
    created_ms        INTEGER NOT NULL,
    sent_at           INTEGER,
    CHECK ((maintenance_id IS NULL) <> (rollout_id IS NULL))
);
INSERT INTO deliveries_v2 (id, channel_id, maintenance_id, update_id, kind, state, attempts,
    next_attempt_ms, lease_until_ms, deadline_at, idem_key, remote_id, remote_url, last_error,
    created_ms, sent_at)
SELECT id, channel_id, maintenance_id, update_id, kind, state, attempts, next_attempt_ms,
    lease_until_ms, deadline_at, idem_key, remote_id, remote_url, last_error, created_ms, sent_at
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v2 RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (channel_id, state, next_attempt_ms);
CREATE INDEX deliveries_window ON deliveries (maintenance_id, channel_id, id) WHERE maintenance_id IS NOT NULL;
CREATE INDEX deliveries_rollout ON deliveries (rollout_id, channel_id, id) WHERE rollout_id IS NOT NULL;

-- Per channel and rollout: Discord's live rollout message, or the rollout's own Bluesky thread
-- (a rollout linked to a window posts in the window's thread instead).
CREATE TABLE rollout_threads (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    rollout_id INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    root_id    TEXT NOT NULL,
    root_cid   TEXT,
    parent_id  TEXT,
    parent_cid TEXT,
    -- When the live message was last drawn (milliseconds): refreshes fold behind it.
    drawn_ms   INTEGER,
    PRIMARY KEY (channel_id, rollout_id)
);

-- Channels made before rollouts existed announce them as new channels do.
UPDATE channels SET events = events || ',rollout_started,target_draining,rollout_drain,target_drained,target_updating,target_healthy,target_failed,target_forced,target_retried,rollout_paused,rollout_resumed,rollout_stalled,rollout_completed,rollout_failed,rollout_aborted,rollout_rolled_back,rollout_note'
WHERE kind IN ('discord_webhook', 'discord_bot');
UPDATE channels SET milestones = milestones || ',rollout_started,target_failed,target_forced,rollout_stalled,rollout_completed,rollout_failed,rollout_aborted,rollout_rolled_back,rollout_note'
WHERE kind IN ('discord_webhook', 'discord_bot');
UPDATE channels SET events = events || ',rollout_started,target_failed,target_forced,rollout_stalled,rollout_completed,rollout_failed,rollout_aborted,rollout_rolled_back,rollout_note'
WHERE kind = 'bluesky';
