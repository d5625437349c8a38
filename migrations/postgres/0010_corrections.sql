-- Corrections: a posted update (or the note on a step) edited or withdrawn after it went out.
-- The timeline shows the new text, marked edited; a withdrawn entry is no longer shown.
ALTER TABLE updates ADD COLUMN edited_at BIGINT;
ALTER TABLE updates ADD COLUMN withdrawn_at BIGINT;

-- A delivery that corrects one sent earlier (corrects_id): 'edit' sends the new text where it
-- was posted (Discord edits its message, Bluesky replies with a correction), 'withdraw' takes
-- the post down where the network allows it. Every other delivery is a 'post'.
ALTER TABLE deliveries ADD COLUMN action TEXT NOT NULL DEFAULT 'post';
ALTER TABLE deliveries ADD COLUMN corrects_id BIGINT;
