-- Email subscribers (issue 28): an address, what it follows (components, kinds of mail),
-- whether it confirmed (double opt-in, or imported as confirmed by an operator moving from
-- another status page), and whether mail to it bounces.
CREATE TABLE subscribers (
    id              INTEGER PRIMARY KEY,
    -- As written (an international domain in Unicode).
    address         TEXT NOT NULL,
    -- Lowercase local part and ASCII domain: one subscriber however it is spelt.
    address_key     TEXT NOT NULL UNIQUE,
    -- JSON [component id, …]; NULL: everything.
    components      TEXT,
    -- Comma-separated: maintenance, reminders, incidents, rollouts.
    kinds           TEXT NOT NULL,
    confirmed_at    INTEGER,
    created_at      INTEGER NOT NULL,
    -- The last confirmation mail (at most one per address every 10 minutes).
    confirm_sent_at INTEGER,
    -- Permanent refusals in a row; after a few the address is marked bouncing and not mailed.
    bounces         INTEGER NOT NULL DEFAULT 0,
    bouncing_at     INTEGER
);
CREATE INDEX subscribers_mailed ON subscribers (id) WHERE confirmed_at IS NOT NULL AND bouncing_at IS NULL;
