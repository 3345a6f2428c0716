-- XEP-0421 §4: the subject sent on entry carries the occupant id of whoever set it, as every
-- message from a room does; kept with the subject's nick ('' when unknown: subjects set
-- before this column existed).
ALTER TABLE muc_rooms ADD COLUMN subject_occupant_id TEXT NOT NULL DEFAULT '';
