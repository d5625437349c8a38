-- Signed webhooks and email, the fourth and fifth kinds of channel: the channels table rebuilt with the new kind in
-- its CHECK constraint, as SQLite's documentation says (https://sqlite.org/lang_altertable.html,
-- "other kinds of table schema changes"). Not a sqlx migration: sqlx 0.8 runs every SQLite
-- migration inside a transaction, where foreign keys cannot be switched off, and with them on
-- dropping the old table would cascade into every delivery and thread. SqliteStore::migrate
-- runs this after the migrations, with foreign keys off, in one transaction, once (it checks
-- the table's definition first). Deliveries and threads keep pointing at "channels".
CREATE TABLE channels_v2 (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL CHECK (kind IN ('discord_webhook', 'discord_bot', 'bluesky', 'webhook', 'email')),
    -- Public part of the address: webhook id, channel id, Bluesky handle/DID, or the URL a
    -- signed webhook posts to.
    target       TEXT NOT NULL,
    -- Webhook token, bot token, app password or signing secret. Write-only in the UI, never
    -- logged.
    secret       TEXT NOT NULL,
    api_url      TEXT,
    events       TEXT NOT NULL,
    milestones   TEXT NOT NULL DEFAULT '',
    mention_role TEXT,
    langs        TEXT NOT NULL DEFAULT 'en',
    enabled      INTEGER NOT NULL DEFAULT 1,
    source       TEXT NOT NULL CHECK (source IN ('env', 'admin')),
    session      TEXT,
    created_at   INTEGER NOT NULL
);
INSERT INTO channels_v2 (id, name, kind, target, secret, api_url, events, milestones,
                         mention_role, langs, enabled, source, session, created_at)
SELECT id, name, kind, target, secret, api_url, events, milestones, mention_role, langs,
       enabled, source, session, created_at
FROM channels;
DROP TABLE channels;
ALTER TABLE channels_v2 RENAME TO channels;
