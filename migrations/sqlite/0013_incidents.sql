-- Incidents: the unplanned, told as well as the planned. An incident, the components it
-- affects (each with its own status), its timeline, the alert groups that opened it, and
-- where its announcements hang together. The outbox learns incidents: a delivery announces a
-- window's update, a rollout's or an incident's.
CREATE TABLE incidents (
    id                      INTEGER PRIMARY KEY,
    title                   TEXT NOT NULL,
    impact                  TEXT NOT NULL CHECK (impact IN ('none', 'minor', 'major', 'critical')),
    status                  TEXT NOT NULL CHECK (status IN ('investigating', 'identified', 'monitoring', 'resolved')),
    -- NULL while a draft: never public, never announced.
    published_at            INTEGER,
    started_at              INTEGER NOT NULL,
    resolved_at             INTEGER,
    postmortem              TEXT,
    postmortem_published_at INTEGER,
    -- Opened from a window's failed step or a failed or stalled rollout.
    maintenance_id          INTEGER REFERENCES maintenances (id) ON DELETE SET NULL,
    rollout_id              INTEGER REFERENCES rollouts (id) ON DELETE SET NULL,
    -- Who opened it: manual (a maintainer), or the monitor (alertmanager, grafana, uptime-kuma).
    source                  TEXT NOT NULL DEFAULT 'manual',
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    version                 INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX incidents_open ON incidents (id) WHERE status <> 'resolved';
CREATE INDEX incidents_history ON incidents (started_at DESC, id DESC);
CREATE INDEX incidents_window ON incidents (maintenance_id) WHERE maintenance_id IS NOT NULL;
CREATE INDEX incidents_rollout ON incidents (rollout_id) WHERE rollout_id IS NOT NULL;

CREATE TABLE incident_components (
    incident_id  INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    component_id INTEGER NOT NULL REFERENCES components (id) ON DELETE CASCADE,
    status       TEXT NOT NULL CHECK (status IN ('degraded_performance', 'partial_outage', 'major_outage')),
    PRIMARY KEY (incident_id, component_id)
);
CREATE INDEX incident_components_component ON incident_components (component_id);

CREATE TABLE incident_updates (
    id          INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('published', 'status', 'note', 'resolved', 'reopened', 'postmortem')),
    status      TEXT NOT NULL,
    body        TEXT NOT NULL,
    -- JSON [[component id, status], …] when the update changed the components' statuses.
    components  TEXT,
    -- Who posted it: user:NAME, token:NAME, alerts:SOURCE.
    actor       TEXT NOT NULL,
    announced   INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL
);
CREATE INDEX incident_updates_incident ON incident_updates (incident_id, id);

-- One incident per alert group of a monitor (Alertmanager's groupKey, Grafana's group, an
-- Uptime Kuma monitor): repeats of the same state change nothing, a group firing again
-- within the quiet time reopens its incident.
CREATE TABLE incident_alerts (
    source      TEXT NOT NULL,
    group_key   TEXT NOT NULL,
    incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    -- 'firing' or 'resolved', as last reported.
    state       TEXT NOT NULL CHECK (state IN ('firing', 'resolved')),
    -- JSON: the firing alerts' identities, so a new alert joining the group is told apart.
    alerts      TEXT NOT NULL DEFAULT '[]',
    -- What fired, for the maintainer publishing a draft (JSON, the last payload's labels).
    detail      TEXT NOT NULL DEFAULT '',
    changed_at  INTEGER NOT NULL,
    PRIMARY KEY (source, group_key)
);
CREATE INDEX incident_alerts_incident ON incident_alerts (incident_id);

-- A component's status set by hand (Statuspage's manual status), with the words saying why
-- and when; NULL when nothing is set. Its shown status is the worst of this, its open
-- incidents and its running windows.
ALTER TABLE components ADD COLUMN manual_status TEXT;
ALTER TABLE components ADD COLUMN manual_note TEXT;
ALTER TABLE components ADD COLUMN manual_at INTEGER;

-- Per channel and incident: Discord's live incident message, or the incident's Bluesky thread.
CREATE TABLE incident_threads (
    channel_id  INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    root_id     TEXT NOT NULL,
    root_cid    TEXT,
    parent_id   TEXT,
    parent_cid  TEXT,
    PRIMARY KEY (channel_id, incident_id)
);

-- Deliveries, rebuilt (SQLite cannot change a CHECK constraint in place; nothing refers to
-- deliveries by key): exactly one of maintenance_id, rollout_id and incident_id says what a
-- delivery announces.
CREATE TABLE deliveries_v3 (
    id                 INTEGER PRIMARY KEY,
    channel_id         INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    maintenance_id     INTEGER REFERENCES maintenances (id) ON DELETE CASCADE,
    update_id          INTEGER REFERENCES updates (id) ON DELETE CASCADE,
    rollout_id         INTEGER REFERENCES rollouts (id) ON DELETE CASCADE,
    rollout_update_id  INTEGER REFERENCES rollout_updates (id) ON DELETE CASCADE,
    incident_id        INTEGER REFERENCES incidents (id) ON DELETE CASCADE,
    incident_update_id INTEGER REFERENCES incident_updates (id) ON DELETE CASCADE,
    kind               TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'skipped')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms    INTEGER NOT NULL,
    lease_until_ms     INTEGER,
    deadline_at        INTEGER NOT NULL,
    idem_key           TEXT NOT NULL,
    remote_id          TEXT,
    remote_url         TEXT,
    last_error         TEXT,
    created_ms         INTEGER NOT NULL,
    sent_at            INTEGER,
    lease_owner        TEXT,
    action             TEXT NOT NULL DEFAULT 'post',
    corrects_id        INTEGER,
    CHECK ((maintenance_id IS NOT NULL) + (rollout_id IS NOT NULL) + (incident_id IS NOT NULL) = 1)
);
INSERT INTO deliveries_v3 (id, channel_id, maintenance_id, update_id, rollout_id,
    rollout_update_id, kind, state, attempts, next_attempt_ms, lease_until_ms, deadline_at,
    idem_key, remote_id, remote_url, last_error, created_ms, sent_at, lease_owner, action,
    corrects_id)
SELECT id, channel_id, maintenance_id, update_id, rollout_id, rollout_update_id, kind, state,
    attempts, next_attempt_ms, lease_until_ms, deadline_at, idem_key, remote_id, remote_url,
    last_error, created_ms, sent_at, lease_owner, action, corrects_id
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v3 RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (channel_id, state, next_attempt_ms);
CREATE INDEX deliveries_window ON deliveries (maintenance_id, channel_id, id) WHERE maintenance_id IS NOT NULL;
CREATE INDEX deliveries_rollout ON deliveries (rollout_id, channel_id, id) WHERE rollout_id IS NOT NULL;
CREATE INDEX deliveries_incident ON deliveries (incident_id, channel_id, id) WHERE incident_id IS NOT NULL;

-- Channels made before incidents existed announce them as new channels do.
UPDATE channels SET events = events || ',incident_opened,incident_updated,incident_resolved,incident_reopened,incident_postmortem';
UPDATE channels SET milestones = milestones || ',incident_updated,incident_resolved,incident_reopened,incident_postmortem'
WHERE kind IN ('discord_webhook', 'discord_bot');
