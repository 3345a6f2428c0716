-- Accounts and their SCRAM credentials (RFC 5802 / RFC 7677). No password is stored:
-- only the salted StoredKey and ServerKey per hash function.
CREATE TABLE accounts (
    jid        TEXT PRIMARY KEY NOT NULL,   -- normalised bare JID
    domain     TEXT NOT NULL,
    created_at INTEGER NOT NULL             -- unix seconds
);
CREATE INDEX accounts_domain ON accounts (domain);

CREATE TABLE scram_credentials (
    jid        TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    mechanism  TEXT NOT NULL,               -- 'SCRAM-SHA-1' | 'SCRAM-SHA-256'
    salt       BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (jid, mechanism)
);
