-- vcard-temp (XEP-0054): the vCard element, serialised.
CREATE TABLE vcards (
    owner TEXT PRIMARY KEY NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    vcard TEXT NOT NULL
);
