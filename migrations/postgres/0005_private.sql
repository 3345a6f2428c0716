-- Private XML storage (XEP-0049): one element per namespace.
CREATE TABLE private_xml (
    owner     TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    namespace TEXT NOT NULL,
    element   TEXT NOT NULL,
    PRIMARY KEY (owner, namespace)
);
