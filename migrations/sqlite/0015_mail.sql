-- Mail to subscribers (issue 28).
--
-- The site's own secrets, made at first start: the key that signs subscribers' links (manage,
-- confirm, unsubscribe), so the links need no stored token and nothing in the subscribers
-- table is a credential.
CREATE TABLE site_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One mail to send to many subscribers: an event (through the email channel's delivery) or
-- one subscriber's confirmation. Written in one insert however many subscribers there are;
-- mail workers cut it into batches of subscriber ids as they go.
CREATE TABLE mail_fanouts (
    id              INTEGER PRIMARY KEY,
    -- maintenance, reminders, incidents, rollouts (to subscribers who chose it), or
    -- confirm / manage (to subscriber_id alone).
    kind            TEXT NOT NULL,
    subscriber_id   INTEGER REFERENCES subscribers (id) ON DELETE CASCADE,
    -- What the mail is about ('window:3', 'incident:7', 'rollout:2'); mails about one thread.
    thread          TEXT,
    -- JSON [component id, …] affected; NULL: names none (goes to everyone of its kind).
    components      TEXT,
    subject         TEXT NOT NULL,
    -- Without the footer, which carries each subscriber's own links.
    text_body       TEXT NOT NULL,
    html_body       TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    in_reply_to     TEXT,
    refs            TEXT,
    -- Steps fold: an event arriving while this is not yet cut into batches joins it.
    folds           INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL,
    due_ms          INTEGER NOT NULL,
    -- The highest subscriber id it goes to, fixed when the first batch is cut.
    last_id         INTEGER,
    -- Subscriber ids up to here are in batches.
    batched_through INTEGER NOT NULL DEFAULT 0,
    -- Every subscriber is in a batch.
    batched         INTEGER NOT NULL DEFAULT 0,
    done_at         INTEGER
);
CREATE INDEX mail_fanouts_open ON mail_fanouts (due_ms) WHERE batched = 0;
CREATE INDEX mail_fanouts_thread ON mail_fanouts (thread, id);

-- Which email-channel deliveries a fan-out carries (a folded one carries several): a delivery
-- retried after a crash finds its mail already queued.
CREATE TABLE mail_fanout_deliveries (
    delivery_id INTEGER PRIMARY KEY,
    fanout_id   INTEGER NOT NULL REFERENCES mail_fanouts (id) ON DELETE CASCADE
);

-- A run of subscriber ids of one fan-out, claimed by one worker at a time under a lease.
-- `cursor` is the last subscriber handled: advanced after each message the server accepted,
-- so after a crash only the messages in flight can go twice.
CREATE TABLE mail_batches (
    id           INTEGER PRIMARY KEY,
    fanout_id    INTEGER NOT NULL REFERENCES mail_fanouts (id) ON DELETE CASCADE,
    first_id     INTEGER NOT NULL,
    last_id      INTEGER NOT NULL,
    cursor       INTEGER NOT NULL,
    lease_owner  TEXT,
    lease_until_ms INTEGER,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    done_at      INTEGER
);
CREATE INDEX mail_batches_open ON mail_batches (next_attempt_ms) WHERE done_at IS NULL;
CREATE INDEX mail_batches_fanout ON mail_batches (fanout_id) WHERE done_at IS NULL;
