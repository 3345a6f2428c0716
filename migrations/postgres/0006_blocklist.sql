-- Blocking command (XEP-0191).
CREATE TABLE blocklist (
    owner   TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    blocked TEXT NOT NULL,
    PRIMARY KEY (owner, blocked)
);
