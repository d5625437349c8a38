-- Accounts: users (admin UI), API tokens (automation), and the audit log of admin actions.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'maintainer')),
    created_at    INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'maintainer')),
    -- SHA-256 of the token: tokens are 256-bit random, so a fast hash is enough, and lookups
    -- by hash need no scan. The token itself is shown once and never stored.
    token_hash   TEXT NOT NULL UNIQUE,
    -- The first characters, to tell tokens apart in listings.
    prefix       TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX audit_log_recent ON audit_log (created_at DESC, id DESC);
