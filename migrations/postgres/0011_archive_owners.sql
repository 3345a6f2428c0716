-- An archive's owner is whoever owns the archive: an account, or a MUC room (XEP-0313 §6:
-- a room keeps its own archive, queried at the room's JID). A room is not an account, so
-- the owner can no longer reference `accounts`: the two foreign keys go. Preferences stay
-- tied to accounts (only accounts have them).
--
-- Without the cascade, whoever deletes an owner deletes its archive in the same
-- transaction: `AccountStore::delete`/`delete_everywhere` for an account, `MucStore::delete`
-- for a room. The archive writer only inserts rows whose owner exists as one or the other.
-- Retention (`delete_older_than`) applies to room archives as well, on purpose.
--
-- The names are PostgreSQL's defaults for the unnamed constraints of 0009
-- (<table>_<column>_fkey).
ALTER TABLE archive_messages DROP CONSTRAINT archive_messages_owner_fkey;
ALTER TABLE archive_usage DROP CONSTRAINT archive_usage_owner_fkey;
