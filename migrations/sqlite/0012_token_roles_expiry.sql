-- API tokens: the `reporter` role (reports rollout progress and nothing else, for the token on
-- every instance) and an optional expiry. SQLite cannot change a CHECK constraint in place:
-- the table is rebuilt with the same rows (nothing refers to it by key).
CREATE TABLE api_tokens_new (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'maintainer', 'reporter')),
    token_hash   TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    expires_at   INTEGER
);
INSERT INTO api_tokens_new
    (id, name, role, token_hash, prefix, created_by, created_at, last_used_at, revoked_at)
SELECT id, name, role, token_hash, prefix, created_by, created_at, last_used_at, revoked_at
FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_new RENAME TO api_tokens;
