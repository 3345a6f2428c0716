-- Per-account byte quota on offline messages (XEP-0160), issue 10 defect 9.
-- Each message records its size, and a running total per account lets the group-commit
-- writer check both limits (messages and bytes) with one conditional UPDATE instead of a
-- COUNT/SUM over the account's rows for every message stored.
ALTER TABLE offline_messages ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
UPDATE offline_messages SET bytes = OCTET_LENGTH(stanza);

-- The flush at login picks its batches from (id, bytes) alone: with `bytes` in the index,
-- sizing a batch never reads the stanzas themselves.
DROP INDEX offline_messages_owner;
CREATE INDEX offline_messages_owner ON offline_messages (owner, id, bytes);

CREATE TABLE offline_usage (
    owner    TEXT PRIMARY KEY NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    messages BIGINT NOT NULL,
    bytes    BIGINT NOT NULL
);
INSERT INTO offline_usage (owner, messages, bytes)
    SELECT owner, COUNT(*), SUM(bytes) FROM offline_messages GROUP BY owner;
