-- Time-driven changes to windows: automatic start and completion, reminders before the start,
-- overrun noticed, and a sequence number for calendars.

ALTER TABLE maintenances
    -- Start by itself at the scheduled start / complete at the expected end (0 or 1).
    ADD COLUMN auto_start BIGINT NOT NULL DEFAULT 0 CHECK (auto_start IN (0, 1)),
    ADD COLUMN auto_complete BIGINT NOT NULL DEFAULT 0 CHECK (auto_complete IN (0, 1)),
    -- Comma-separated offsets before the start, in seconds, at which a reminder goes out.
    ADD COLUMN reminders TEXT NOT NULL DEFAULT '86400,3600',
    -- The offsets already done for the current start: sent, or already past when it was set.
    ADD COLUMN reminded TEXT NOT NULL DEFAULT '',
    -- When the window was noticed running past its expected end (cleared when the end moves).
    ADD COLUMN overran_at BIGINT,
    -- Raised on each reschedule (iCalendar SEQUENCE).
    ADD COLUMN sequence BIGINT NOT NULL DEFAULT 0;
