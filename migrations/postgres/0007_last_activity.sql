-- Last activity (XEP-0012): when the account's last session ended, with its status.
CREATE TABLE last_activity (
    owner  TEXT PRIMARY KEY NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    at     BIGINT NOT NULL,                  -- unix seconds
    status TEXT NOT NULL DEFAULT ''
);
