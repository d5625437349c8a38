-- Announcements: channels (where to post), deliveries (the outbox: one event for one channel,
-- kept until confirmed sent), and per channel and window the thread Herald posts into.

CREATE TABLE channels (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL CHECK (kind IN ('discord_webhook', 'discord_bot', 'bluesky')),
    -- Public part of the address: webhook id, channel id, or Bluesky handle/DID.
    target       TEXT NOT NULL,
    -- Webhook token, bot token or app password. Write-only in the UI, never logged.
    secret       TEXT NOT NULL,
    -- Discord API base or PDS URL; NULL for the service's own.
    api_url      TEXT,
    -- Comma-separated update kinds this channel receives.
    events       TEXT NOT NULL,
    -- Discord: update kinds that also get a short message of their own.
    milestones   TEXT NOT NULL DEFAULT '',
    -- Discord: role id mentioned when a window starts.
    mention_role TEXT,
    -- Bluesky: comma-separated post languages.
    langs        TEXT NOT NULL DEFAULT 'en',
    enabled      INTEGER NOT NULL DEFAULT 1,
    -- 'env' for channels from the environment (updated at every start), 'admin' otherwise.
    source       TEXT NOT NULL CHECK (source IN ('env', 'admin')),
    -- Bluesky: the session (JSON), kept so posts do not log in again.
    session      TEXT,
    created_at   INTEGER NOT NULL
);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    channel_id      INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    maintenance_id  INTEGER NOT NULL REFERENCES maintenances (id) ON DELETE CASCADE,
    update_id       INTEGER NOT NULL REFERENCES updates (id) ON DELETE CASCADE,
    -- The update's kind, copied so workers need no join.
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'skipped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- Milliseconds: retries come sooner than a second apart.
    next_attempt_ms INTEGER NOT NULL,
    -- A claimed delivery is its worker's until then (milliseconds); a crashed worker's lapses.
    lease_until_ms  INTEGER,
    deadline_at     INTEGER NOT NULL,
    -- Chosen before the first attempt: Discord nonce or Bluesky record key.
    idem_key        TEXT NOT NULL,
    remote_id       TEXT,
    remote_url      TEXT,
    last_error      TEXT,
    -- Commit time in milliseconds, for the commit-to-delivery latency.
    created_ms      INTEGER NOT NULL,
    sent_at         INTEGER
);
-- Workers walk a channel's due deliveries in order; the admin lists a window's.
CREATE INDEX deliveries_due ON deliveries (channel_id, state, next_attempt_ms);
CREATE INDEX deliveries_window ON deliveries (maintenance_id, channel_id, id);

CREATE TABLE channel_threads (
    channel_id     INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    maintenance_id INTEGER NOT NULL REFERENCES maintenances (id) ON DELETE CASCADE,
    -- Discord: the live announcement message; Bluesky: the thread's root post (uri, cid).
    root_id        TEXT NOT NULL,
    root_cid       TEXT,
    -- Bluesky: the newest post, which the next reply answers.
    parent_id      TEXT,
    parent_cid     TEXT,
    PRIMARY KEY (channel_id, maintenance_id)
);
