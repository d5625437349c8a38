-- Idempotency-Key on /api/v1 POSTs: the first answer to a key, replayed when a client sends
-- the same request again (a retry after a timeout), for 24 hours. A row whose status is 0 is
-- a request still being answered; its owner finishes or removes it.
CREATE TABLE idempotency_keys (
    -- Whose key: a hash of the bearer token, so two clients cannot see each other's answers.
    scope        TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    -- A hash of the method, path and body: the same key with another request is refused.
    fingerprint  TEXT NOT NULL,
    status       BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
