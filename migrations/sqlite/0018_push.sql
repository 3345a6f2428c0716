-- Push notifications (XEP-0357): the app servers' push services an account's clients
-- enabled, one row per (service JID, node).
CREATE TABLE push_registrations (
    owner    TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    service  TEXT NOT NULL,
    node     TEXT NOT NULL,
    -- The resource of the client that enabled it (its device's session).
    resource TEXT NOT NULL,
    -- The publish-options data form sent along with each notification, serialised; NULL
    -- when the client gave none.
    options  TEXT,
    -- Seconds since the Unix epoch: when first enabled (re-enabling keeps it).
    created  BIGINT NOT NULL,
    PRIMARY KEY (owner, service, node)
);
