-- Offline messages (XEP-0160), serialised with their XEP-0203 delay, in arrival order.
CREATE TABLE offline_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner     TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    stanza    TEXT NOT NULL,
    stored_at INTEGER NOT NULL
);
CREATE INDEX offline_messages_owner ON offline_messages (owner, id);
