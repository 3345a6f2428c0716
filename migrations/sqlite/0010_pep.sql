-- Personal eventing (XEP-0163 on the XEP-0060 subset it needs): each account's nodes with
-- their configuration, the items they keep, explicit subscriptions, and a running total of
-- the bytes an account's items take (checked against [pep] max_bytes_per_user on publish
-- without a SUM over the rows).
CREATE TABLE pep_nodes (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    owner                 TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    node                  TEXT NOT NULL,
    access_model          TEXT NOT NULL,           -- 'open' | 'presence' | 'roster' | 'whitelist'
    roster_groups         TEXT NOT NULL,           -- for 'roster': group names, one a line
    max_items             INTEGER,                 -- NULL: 'max', the server's limit
    persist_items         BOOLEAN NOT NULL,
    send_last             TEXT NOT NULL,           -- 'never' | 'on_sub' | 'on_sub_and_presence'
    deliver_notifications BOOLEAN NOT NULL,
    deliver_payloads      BOOLEAN NOT NULL,
    notify_retract        BOOLEAN NOT NULL,
    notify_delete         BOOLEAN NOT NULL,
    notify_config         BOOLEAN NOT NULL,
    notification_type     TEXT NOT NULL,           -- 'headline' | 'normal'
    title                 TEXT NOT NULL,
    description           TEXT NOT NULL,
    payload_type          TEXT NOT NULL,
    created_at            INTEGER NOT NULL,        -- unix seconds
    UNIQUE (owner, node)
);

CREATE TABLE pep_items (
    node_id      INTEGER NOT NULL REFERENCES pep_nodes (id) ON DELETE CASCADE,
    item_id      TEXT NOT NULL,
    seq          INTEGER NOT NULL,                 -- publication order within the node
    publisher    TEXT NOT NULL,
    published_at INTEGER NOT NULL,                 -- unix seconds
    payload      TEXT NOT NULL,                    -- the payload element, serialised
    bytes        INTEGER NOT NULL,
    PRIMARY KEY (node_id, item_id)
);
-- The newest items, the last one, and trimming to max_items go by publication order.
CREATE INDEX pep_items_seq ON pep_items (node_id, seq);

CREATE TABLE pep_subscriptions (
    node_id INTEGER NOT NULL REFERENCES pep_nodes (id) ON DELETE CASCADE,
    jid     TEXT NOT NULL,                         -- as subscribed: bare or full
    PRIMARY KEY (node_id, jid)
);
-- An account's subscriptions go when the account is deleted.
CREATE INDEX pep_subscriptions_jid ON pep_subscriptions (jid);

CREATE TABLE pep_usage (
    owner TEXT PRIMARY KEY NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    bytes INTEGER NOT NULL
);
