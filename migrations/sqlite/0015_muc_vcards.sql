-- Room vCards (vcard-temp on a room's JID, set by the room's owners, read by anyone), with
-- the SHA-1 of the PHOTO's image ('' = no photo) that the room's disco#info gives as its
-- avatar hash. A room's vCard goes with the room.
CREATE TABLE muc_vcards (
    room       TEXT PRIMARY KEY NOT NULL REFERENCES muc_rooms (jid) ON DELETE CASCADE,
    vcard      TEXT NOT NULL,              -- the serialised <vCard xmlns='vcard-temp'/>
    photo_hash TEXT NOT NULL DEFAULT ''    -- lower-case hex
);
