-- An archive's owner is whoever owns the archive: an account, or a MUC room (XEP-0313 §6:
-- a room keeps its own archive, queried at the room's JID). A room is not an account, so
-- the owner can no longer reference `accounts`: the two foreign keys go. Preferences stay
-- tied to accounts (only accounts have them).
--
-- Without the cascade, whoever deletes an owner deletes its archive in the same
-- transaction: `AccountStore::delete`/`delete_everywhere` for an account, `MucStore::delete`
-- for a room. The archive writer only inserts rows whose owner exists as one or the other.
-- Retention (`delete_older_than`) applies to room archives as well, on purpose.
--
-- SQLite cannot drop a constraint: both tables are made again without it, their rows
-- copied, and the indexes of 0009 made again under the same names (the archive's page
-- queries name them in INDEXED BY). `ts` stays INTEGER PRIMARY KEY, the rowid, so rows keep
-- their order and retention still deletes from the front of the table. This copies the
-- whole archive once, in the migration's transaction.
CREATE TABLE archive_messages_new (
    ts            INTEGER PRIMARY KEY,
    owner         TEXT NOT NULL,          -- an account's or a room's bare JID
    with_bare     TEXT NOT NULL,          -- the other party: bare JID...
    with_resource TEXT NOT NULL,          -- ...and resource ('' when addressed to a bare JID)
    stanza        TEXT NOT NULL           -- the message as routed, serialised
);
INSERT INTO archive_messages_new (ts, owner, with_bare, with_resource, stanza)
    SELECT ts, owner, with_bare, with_resource, stanza FROM archive_messages ORDER BY ts;
DROP TABLE archive_messages;
ALTER TABLE archive_messages_new RENAME TO archive_messages;
CREATE INDEX archive_messages_owner ON archive_messages (owner, ts);
CREATE INDEX archive_messages_with ON archive_messages (owner, with_bare, ts);

CREATE TABLE archive_usage_new (
    owner    TEXT PRIMARY KEY NOT NULL,
    messages INTEGER NOT NULL
);
INSERT INTO archive_usage_new (owner, messages) SELECT owner, messages FROM archive_usage;
DROP TABLE archive_usage;
ALTER TABLE archive_usage_new RENAME TO archive_usage;
