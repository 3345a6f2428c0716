-- XEP-0045 §10.2 muc#roomconfig_presencebroadcast: the roles whose presence the other
-- occupants get, as role names separated by spaces ('' = none); existing rooms broadcast
-- every role's, as before.
ALTER TABLE muc_rooms ADD COLUMN presence_broadcast TEXT NOT NULL DEFAULT 'moderator participant visitor';
