-- Message archive (XEP-0313) with XEP-0359 stanza ids, and archiving preferences (XEP-0441).
--
-- `ts` is the archive's order and its timestamps at once: microseconds since the epoch,
-- given by the server as max(now, previous + 1) when it accepts the message, so it is
-- unique and increasing. A page of an account's archive, a time range (`start`/`end`) and a position
-- (RSM `after`/`before`, `after-id`/`before-id`) are all ranges of (owner, ts) or
-- (owner, with_bare, ts): one index range read, whatever the archive's size. The archive id
-- clients see (the XEP-0359 stanza-id) is not stored: it is `ts` under a keyed permutation
-- (storage/archive.rs), so it reveals nothing, and finding a message by id is a primary key
-- lookup with no index of random ids to keep (which halved SQLite's insert rate). Retention
-- deletes the oldest rows through the primary key.
CREATE TABLE archive_messages (
    ts            BIGINT PRIMARY KEY,
    owner         TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    with_bare     TEXT NOT NULL,          -- the other party: bare JID...
    with_resource TEXT NOT NULL,          -- ...and resource ('' when addressed to a bare JID)
    stanza        TEXT NOT NULL           -- the message as routed, serialised
);
CREATE INDEX archive_messages_owner ON archive_messages (owner, ts);
CREATE INDEX archive_messages_with ON archive_messages (owner, with_bare, ts);

-- The key of the permutation between positions and archive ids: made once, at first use,
-- and never changed (changing it would change every id clients know).
CREATE TABLE archive_secret (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    secret    BYTEA NOT NULL
);

-- Messages per account, kept with every insert and delete: RSM <count> without a COUNT(*).
CREATE TABLE archive_usage (
    owner    TEXT PRIMARY KEY NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    messages BIGINT NOT NULL
);

-- Preferences (XEP-0441): the default, and JIDs always or never archived.
CREATE TABLE archive_prefs (
    owner        TEXT PRIMARY KEY NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    default_mode TEXT NOT NULL            -- 'always' | 'roster' | 'never'
);
CREATE TABLE archive_prefs_jids (
    owner TEXT NOT NULL REFERENCES archive_prefs (owner) ON DELETE CASCADE,
    rule  TEXT NOT NULL,                  -- 'always' | 'never'
    jid   TEXT NOT NULL,
    PRIMARY KEY (owner, rule, jid)
);
