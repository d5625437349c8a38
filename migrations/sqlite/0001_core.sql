-- Components, maintenance windows, their steps and timeline updates.
-- Timestamps are unix seconds (INTEGER) so the same SQL runs on SQLite and PostgreSQL.

CREATE TABLE components (
    id          INTEGER PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    description TEXT,
    group_name  TEXT,
    position    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

CREATE TABLE maintenances (
    id            INTEGER PRIMARY KEY,
    title         TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    state         TEXT NOT NULL CHECK (state IN ('draft', 'planned', 'scheduled', 'in_progress', 'completed', 'cancelled')),
    impact        TEXT NOT NULL CHECK (impact IN ('none', 'minor', 'major', 'critical')),
    starts_at     INTEGER,
    ends_at       INTEGER,
    schedule_hint TEXT,
    started_at    INTEGER,
    finished_at   INTEGER,
    announced_at  INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    version       INTEGER NOT NULL DEFAULT 0
);

-- The status page asks for open windows by state, and history pages walk finished ones newest first.
CREATE INDEX maintenances_state ON maintenances (state);
CREATE INDEX maintenances_history ON maintenances (finished_at DESC, id DESC) WHERE announced_at IS NOT NULL AND finished_at IS NOT NULL;

CREATE TABLE maintenance_components (
    maintenance_id INTEGER NOT NULL REFERENCES maintenances (id) ON DELETE CASCADE,
    component_id   INTEGER NOT NULL REFERENCES components (id) ON DELETE CASCADE,
    PRIMARY KEY (maintenance_id, component_id)
);
CREATE INDEX maintenance_components_component ON maintenance_components (component_id);

CREATE TABLE steps (
    id             INTEGER PRIMARY KEY,
    maintenance_id INTEGER NOT NULL REFERENCES maintenances (id) ON DELETE CASCADE,
    position       INTEGER NOT NULL,
    title          TEXT NOT NULL,
    description    TEXT,
    state          TEXT NOT NULL CHECK (state IN ('pending', 'in_progress', 'done', 'failed', 'skipped')),
    started_at     INTEGER,
    finished_at    INTEGER,
    note           TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX steps_maintenance ON steps (maintenance_id, position);

CREATE TABLE updates (
    id             INTEGER PRIMARY KEY,
    maintenance_id INTEGER NOT NULL REFERENCES maintenances (id) ON DELETE CASCADE,
    kind           TEXT NOT NULL,
    body           TEXT NOT NULL,
    note           TEXT,
    step_position  INTEGER,
    created_at     INTEGER NOT NULL
);
CREATE INDEX updates_maintenance ON updates (maintenance_id, id);
