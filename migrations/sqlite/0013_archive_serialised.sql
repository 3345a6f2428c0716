-- Whether an archived message's `stanza` is known to be the server's own serialisation of the
-- message (`xml::Serialised`): well-formed and self-contained, so that a query writes it into
-- its result as it is, instead of parsing it into a tree and serialising that again. Rows
-- written from now on are (the messages the server archives, and imports, which it parses
-- and serialises again); rows from before are not known to be (an import kept its input as
-- it came) and are parsed as before. False for them is the default, so adding the column
-- rewrites no row.
ALTER TABLE archive_messages ADD COLUMN serialised BOOLEAN NOT NULL DEFAULT 0;
