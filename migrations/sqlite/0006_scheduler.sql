-- Time-driven changes to windows: automatic start and completion, reminders before the start,
-- overrun noticed, and a sequence number for calendars.

-- Start by itself at the scheduled start / complete at the expected end (0 or 1).
ALTER TABLE maintenances ADD COLUMN auto_start INTEGER NOT NULL DEFAULT 0;
ALTER TABLE maintenances ADD COLUMN auto_complete INTEGER NOT NULL DEFAULT 0;
-- Comma-separated offsets before the start, in seconds, at which a reminder goes out.
ALTER TABLE maintenances ADD COLUMN reminders TEXT NOT NULL DEFAULT '86400,3600';
-- The offsets already done for the current start: sent, or already past when it was set.
ALTER TABLE maintenances ADD COLUMN reminded TEXT NOT NULL DEFAULT '';
-- When the window was noticed running past its expected end (cleared when the end moves).
ALTER TABLE maintenances ADD COLUMN overran_at INTEGER;
-- Raised on each reschedule (iCalendar SEQUENCE).
ALTER TABLE maintenances ADD COLUMN sequence INTEGER NOT NULL DEFAULT 0;

-- Windows dated before this: reminders whose time has passed are not sent after the fact.
UPDATE maintenances SET reminded =
    (CASE WHEN starts_at - 86400 <= CAST(strftime('%s', 'now') AS INTEGER) THEN '86400' ELSE '' END)
    || ',' ||
    (CASE WHEN starts_at - 3600 <= CAST(strftime('%s', 'now') AS INTEGER) THEN '3600' ELSE '' END)
WHERE starts_at IS NOT NULL;

-- Channels made before reminders and overruns existed get them as new channels do.
UPDATE channels SET events = events || ',reminder,overrunning';
UPDATE channels SET milestones = milestones || ',reminder,overrunning'
WHERE kind IN ('discord_webhook', 'discord_bot');
