-- Rosters (RFC 6121 §2) with subscription states (RFC 6121 Appendix A) and versions
-- (XEP-0237). Pending inbound subscription requests are kept apart: a contact can have
-- one without being in the roster, and the stored request is redelivered at login.
CREATE TABLE roster_items (
    owner        TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    contact      TEXT NOT NULL,
    name         TEXT,
    subscription TEXT NOT NULL,            -- 'none' | 'to' | 'from' | 'both'
    ask_out      INTEGER NOT NULL DEFAULT 0, -- pending-out: we asked to subscribe
    PRIMARY KEY (owner, contact)
);

CREATE TABLE roster_groups (
    owner   TEXT NOT NULL,
    contact TEXT NOT NULL,
    name    TEXT NOT NULL,
    PRIMARY KEY (owner, contact, name),
    FOREIGN KEY (owner, contact) REFERENCES roster_items (owner, contact) ON DELETE CASCADE
);

CREATE TABLE roster_pending_in (
    owner   TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    contact TEXT NOT NULL,
    stanza  TEXT NOT NULL,                 -- the subscribe presence, serialised
    PRIMARY KEY (owner, contact)
);

CREATE TABLE roster_versions (
    owner   TEXT PRIMARY KEY NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    version INTEGER NOT NULL
);
