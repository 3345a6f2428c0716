-- Multi-user chat rooms (XEP-0045): each room's configuration and subject, and its
-- affiliation lists. Persistent rooms outlive their occupants; a temporary room has a row
-- while it exists, so that its archive has an owner (rows left by a crash are deleted at
-- start). Occupants (who is in the room now) are not
-- stored: they are a running room's state. A room's message archive lives in
-- archive_messages under the room's JID (see 0011).
--
-- Room JIDs compare byte by byte (COLLATE "C"), as SQLite compares text: a service's rooms
-- are listed, and paged after a JID, in the same order on both databases, whatever the
-- database's locale.
CREATE TABLE muc_rooms (
    jid            TEXT COLLATE "C" PRIMARY KEY NOT NULL,  -- the room's bare JID: room@conference.example
    service        TEXT NOT NULL,              -- its domain: the MUC service listing it
    name           TEXT NOT NULL,
    description    TEXT NOT NULL,
    language       TEXT NOT NULL DEFAULT '',
    public         BOOLEAN NOT NULL,           -- listed in disco#items
    members_only   BOOLEAN NOT NULL,
    moderated      BOOLEAN NOT NULL,
    allow_invites  BOOLEAN NOT NULL,           -- occupants (not only admins) may invite
    change_subject BOOLEAN NOT NULL,           -- occupants (not only moderators) may
    archive        BOOLEAN NOT NULL,           -- messages go to the room's archive
    password       TEXT NOT NULL DEFAULT '',   -- '' = none
    max_users      BIGINT NOT NULL,
    whois          TEXT NOT NULL,              -- 'moderators' | 'anyone' (who sees real JIDs)
    allow_pm       TEXT NOT NULL,              -- 'anyone' | 'participants' | 'moderators' | 'none'
    history_length BIGINT NOT NULL,            -- messages sent to a joining occupant
    subject        TEXT NOT NULL DEFAULT '',
    subject_from   TEXT NOT NULL DEFAULT '',   -- the nick that set it
    occupant_salt  BYTEA NOT NULL,             -- 16 random bytes, made at creation
    created        BIGINT NOT NULL,            -- unix seconds
    persistent     BOOLEAN NOT NULL            -- kept when empty; a temporary room's row (and
                                               -- archive) goes with its last occupant
);
-- A service's rooms in JID order, for disco#items pages.
CREATE INDEX muc_rooms_service ON muc_rooms (service, jid);

-- Affiliations (XEP-0045 §5.2), one row per room and JID; 'none' is no row.
CREATE TABLE muc_affiliations (
    room        TEXT COLLATE "C" NOT NULL REFERENCES muc_rooms (jid) ON DELETE CASCADE,
    jid         TEXT NOT NULL,                 -- a bare JID, or a domain
    affiliation TEXT NOT NULL,                 -- 'owner' | 'admin' | 'member' | 'outcast'
    nick        TEXT NOT NULL DEFAULT '',      -- reserved nick ('' = none)
    reason      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (room, jid)
);
-- A deleted account loses its affiliations in every room.
CREATE INDEX muc_affiliations_jid ON muc_affiliations (jid);
