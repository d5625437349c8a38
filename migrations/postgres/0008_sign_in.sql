-- Sign-in state every instance on one database shares, so that three instances behind a load
-- balancer throttle as one and accept the same first-run setup code.

-- Attempt counters of the sign-in throttle (one account from one address, one address, one
-- account). Keys hold a hash of the typed name, never the name itself: people type passwords
-- into the name field.
CREATE TABLE login_attempts (
    attempt_key  TEXT PRIMARY KEY,
    n            BIGINT NOT NULL,
    since_ms     BIGINT NOT NULL,
    last_ms      BIGINT NOT NULL
);
CREATE INDEX login_attempts_since ON login_attempts (since_ms);

-- While no user exists: the one setup code of /admin/setup, made by the first instance to
-- start and printed by each.
CREATE TABLE setup_code (
    id           BIGINT PRIMARY KEY CHECK (id = 1),
    code         TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
