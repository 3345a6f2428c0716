//! Multi-user chat rooms (XEP-0045) that outlive their occupants: configuration, subject,
//! the occupant salt, and the affiliation lists. Who is in a room right now is the running
//! room's state and is not stored.
//!
//! A room's message archive is kept in the archive tables under the room's JID (the archive's
//! owner is an account or a room, see migration 0011), so deleting a room deletes it here.
//!
//! Each room has one owner of its state (the MUC module's room task), so a load, a decision
//! and a write of one room see no interleaved change; the transactions here make each write
//! all or nothing for readers.

use jid::BareJid;
use sqlx::Row;

use super::{Db, Result, StorageError, on_pool};

/// Who may see occupants' real JIDs (`muc#roomconfig_whois`): semi-anonymous or non-anonymous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whois {
    Moderators,
    Anyone,
}

impl Whois {
    pub fn as_str(self) -> &'static str {
        match self {
            Whois::Moderators => "moderators",
            Whois::Anyone => "anyone",
        }
    }

    pub fn parse(s: &str) -> Option<Whois> {
        Some(match s {
            "moderators" => Whois::Moderators,
            "anyone" => Whois::Anyone,
            _ => return None,
        })
    }
}

/// Who may send private messages to occupants (`muc#roomconfig_allowpm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowPm {
    Anyone,
    Participants,
    Moderators,
    /// `none`: nobody.
    NoOne,
}

impl AllowPm {
    pub fn as_str(self) -> &'static str {
        match self {
            AllowPm::Anyone => "anyone",
            AllowPm::Participants => "participants",
            AllowPm::Moderators => "moderators",
            AllowPm::NoOne => "none",
        }
    }

    pub fn parse(s: &str) -> Option<AllowPm> {
        Some(match s {
            "anyone" => AllowPm::Anyone,
            "participants" => AllowPm::Participants,
            "moderators" => AllowPm::Moderators,
            "none" => AllowPm::NoOne,
            _ => return None,
        })
    }
}

/// The roles whose presence is broadcast to the other occupants
/// (`muc#roomconfig_presencebroadcast`, XEP-0045 §10.2). Stored as the role names separated
/// by spaces, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceBroadcast {
    pub moderator: bool,
    pub participant: bool,
    pub visitor: bool,
}

impl PresenceBroadcast {
    pub const ALL: PresenceBroadcast = PresenceBroadcast { moderator: true, participant: true, visitor: true };
    pub const ROLES: [&'static str; 3] = ["moderator", "participant", "visitor"];

    /// Whether presence of an occupant with this role (by its XEP-0045 name) is broadcast.
    pub fn includes(self, role: &str) -> bool {
        match role {
            "moderator" => self.moderator,
            "participant" => self.participant,
            "visitor" => self.visitor,
            _ => false,
        }
    }

    pub fn roles(self) -> Vec<&'static str> {
        Self::ROLES.into_iter().filter(|r| self.includes(r)).collect()
    }

    /// From role names; `None` if one is not a role whose presence can be broadcast.
    pub fn from_roles<'a>(roles: impl IntoIterator<Item = &'a str>) -> Option<PresenceBroadcast> {
        let mut set = PresenceBroadcast { moderator: false, participant: false, visitor: false };
        for role in roles {
            match role {
                "moderator" => set.moderator = true,
                "participant" => set.participant = true,
                "visitor" => set.visitor = true,
                _ => return None,
            }
        }
        Some(set)
    }

    pub fn as_stored(self) -> String {
        self.roles().join(" ")
    }

    pub fn parse_stored(s: &str) -> Option<PresenceBroadcast> {
        Self::from_roles(s.split_whitespace())
    }
}

/// A stored affiliation (XEP-0045 §5.2), in order of privilege: `Outcast < Member < Admin <
/// Owner`. `none` is not stored: it is the absence of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Affiliation {
    Outcast,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// A room's configuration (the `muc#roomconfig` fields the server keeps).
#[derive(Debug, Clone, PartialEq)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub language: String,
    pub public: bool,
    pub members_only: bool,
    pub moderated: bool,
    /// `""`: no password.
    pub password: String,
    pub max_users: u32,
    pub whois: Whois,
    pub allow_invites: bool,
    pub change_subject: bool,
    pub allow_pm: AllowPm,
    pub archive: bool,
    pub history_length: u32,
    pub presence_broadcast: PresenceBroadcast,
}

/// One row of a room's affiliation lists.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAffiliation {
    /// A bare JID, or a domain (XEP-0045 §9.4 lets a list name a whole server).
    pub jid: String,
    pub affiliation: Affiliation,
    /// The reserved nick, `""` for none.
    pub nick: String,
    pub reason: String,
}

/// A room as stored. [`MucStore::load`] gives the affiliations sorted by JID.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRoom {
    pub jid: BareJid,
    pub config: RoomConfig,
    pub subject: String,
    /// The nick that set the subject.
    pub subject_from: String,
    /// The XEP-0421 occupant id of who set it ('' when unknown).
    pub subject_occupant_id: String,
    /// Random bytes made by the caller when the room is created (16), kept so that what is
    /// derived from them stays the same across restarts.
    pub occupant_salt: Vec<u8>,
    /// Unix seconds.
    pub created: i64,
    /// Kept when empty (`muc#roomconfig_persistentroom`); a temporary room is deleted with
    /// its last occupant.
    pub persistent: bool,
    pub affiliations: Vec<StoredAffiliation>,
}

/// A room in a service's list (disco#items).
#[derive(Debug, Clone, PartialEq)]
pub struct RoomSummary {
    pub jid: String,
    pub name: String,
    pub public: bool,
}

/// One change of an affiliation list: `None` removes the JID's row.
#[derive(Debug, Clone, PartialEq)]
pub struct AffiliationChange {
    pub jid: String,
    pub affiliation: Option<Affiliation>,
    pub nick: String,
    pub reason: String,
}

#[derive(Clone, Debug)]
pub struct MucStore {
    pub(super) db: Db,
}

/// Inside a transaction: remove every affiliation of `$jid` in every room, evaluating to how
/// many rows went. Account deletion runs it in its own transaction, so that a deleted
/// account keeps no affiliation (XEP-0045 leaves this to the service; an affiliation left
/// behind would pass to whoever registers the name next).
macro_rules! forget_jid {
    ($tx:expr, $jid:expr) => {{
        let jid: &str = $jid;
        sqlx::query("DELETE FROM muc_affiliations WHERE jid = $1").bind(jid).execute(&mut *$tx).await?.rows_affected()
    }};
}
pub(super) use forget_jid;

/// Inside a transaction: apply one affiliation change to `$room`.
macro_rules! apply_change {
    ($tx:expr, $room:expr, $jid:expr, $affiliation:expr, $nick:expr, $reason:expr) => {{
        let affiliation: Option<Affiliation> = $affiliation;
        match affiliation {
            Some(affiliation) => {
                sqlx::query(
                    "INSERT INTO muc_affiliations (room, jid, affiliation, nick, reason) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (room, jid) DO UPDATE SET affiliation = excluded.affiliation, nick = excluded.nick, \
                     reason = excluded.reason",
                )
                .bind($room)
                .bind($jid)
                .bind(affiliation.as_str())
                .bind($nick)
                .bind($reason)
                .execute(&mut *$tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM muc_affiliations WHERE room = $1 AND jid = $2")
                    .bind($room)
                    .bind($jid)
                    .execute(&mut *$tx)
                    .await?;
            }
        }
    }};
}

/// A room's columns but its JID, as a literal for `concat!` (sqlx takes only literal SQL).
macro_rules! room_columns {
    () => {
        "name, description, language, public, members_only, moderated, allow_invites, change_subject, archive, \
         password, max_users, whois, allow_pm, history_length, presence_broadcast, subject, subject_from, subject_occupant_id, occupant_salt, created"
    };
}

/// Bind a configuration's columns after whatever came before, in `room_columns!` order
/// from `name` to `presence_broadcast`.
macro_rules! bind_config {
    ($query:expr, $config:expr) => {{
        let c: &RoomConfig = $config;
        $query
            .bind(c.name.as_str())
            .bind(c.description.as_str())
            .bind(c.language.as_str())
            .bind(c.public)
            .bind(c.members_only)
            .bind(c.moderated)
            .bind(c.allow_invites)
            .bind(c.change_subject)
            .bind(c.archive)
            .bind(c.password.as_str())
            .bind(i64::from(c.max_users))
            .bind(c.whois.as_str())
            .bind(c.allow_pm.as_str())
            .bind(i64::from(c.history_length))
            .bind(c.presence_broadcast.as_stored())
    }};
}

fn corrupt(room: &BareJid, what: &str, value: &str) -> StorageError {
    StorageError::Corrupt(format!("room {room}: {what} {value:?}"))
}

/// A count column back into a `u32`; anything else was not written here.
fn count(room: &BareJid, what: &str, n: i64) -> Result<u32> {
    u32::try_from(n).map_err(|_| corrupt(room, what, &n.to_string()))
}

/// A room row (without its affiliations).
fn room_from_row<R: Row>(jid: &BareJid, row: &R) -> Result<StoredRoom>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    let whois: String = row.try_get("whois")?;
    let allow_pm: String = row.try_get("allow_pm")?;
    let presence_broadcast: String = row.try_get("presence_broadcast")?;
    Ok(StoredRoom {
        jid: jid.clone(),
        config: RoomConfig {
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            language: row.try_get("language")?,
            public: row.try_get("public")?,
            members_only: row.try_get("members_only")?,
            moderated: row.try_get("moderated")?,
            password: row.try_get("password")?,
            max_users: count(jid, "max_users", row.try_get("max_users")?)?,
            whois: Whois::parse(&whois).ok_or_else(|| corrupt(jid, "whois", &whois))?,
            allow_invites: row.try_get("allow_invites")?,
            change_subject: row.try_get("change_subject")?,
            allow_pm: AllowPm::parse(&allow_pm).ok_or_else(|| corrupt(jid, "allow_pm", &allow_pm))?,
            archive: row.try_get("archive")?,
            history_length: count(jid, "history_length", row.try_get("history_length")?)?,
            presence_broadcast: PresenceBroadcast::parse_stored(&presence_broadcast).ok_or_else(|| corrupt(jid, "presence_broadcast", &presence_broadcast))?,
        },
        subject: row.try_get("subject")?,
        subject_from: row.try_get("subject_from")?,
        subject_occupant_id: row.try_get("subject_occupant_id")?,
        occupant_salt: row.try_get("occupant_salt")?,
        created: row.try_get("created")?,
        persistent: row.try_get("persistent")?,
        affiliations: Vec::new(),
    })
}

impl MucStore {
    /// Insert a room with its affiliations in one transaction; false if it exists.
    /// A JID listed twice in `room.affiliations` gets the later entry.
    pub async fn create(&self, room: &StoredRoom) -> Result<bool> {
        let insert = concat!(
            "INSERT INTO muc_rooms (jid, service, ",
            room_columns!(),
            ", persistent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23) \
             ON CONFLICT (jid) DO NOTHING"
        );
        let jid = room.jid.as_str();
        on_pool!(self.db, |pool| {
            // The insert comes first: on SQLite the transaction takes the write lock at once.
            let mut tx = pool.begin().await?;
            let query = sqlx::query(insert).bind(jid).bind(room.jid.domain().as_str());
            let inserted = bind_config!(query, &room.config)
                .bind(room.subject.as_str())
                .bind(room.subject_from.as_str())
                .bind(room.subject_occupant_id.as_str())
                .bind(&room.occupant_salt[..])
                .bind(room.created)
                .bind(room.persistent)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 0 {
                return Ok(false);
            }
            for a in &room.affiliations {
                apply_change!(tx, jid, a.jid.as_str(), Some(a.affiliation), a.nick.as_str(), a.reason.as_str());
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// The room with its affiliations (sorted by JID), `None` if there is no such room.
    pub async fn load(&self, jid: &BareJid) -> Result<Option<StoredRoom>> {
        let select = concat!("SELECT ", room_columns!(), ", persistent FROM muc_rooms WHERE jid = $1");
        let affiliations = "SELECT jid, affiliation, nick, reason FROM muc_affiliations WHERE room = $1 ORDER BY jid";
        on_pool!(self.db, |pool| {
            let Some(row) = sqlx::query(select).bind(jid.as_str()).fetch_optional(pool).await? else {
                return Ok(None);
            };
            let mut room = room_from_row(jid, &row)?;
            let rows: Vec<(String, String, String, String)> =
                sqlx::query_as(affiliations).bind(jid.as_str()).fetch_all(pool).await?;
            room.affiliations = rows
                .into_iter()
                .map(|(who, affiliation, nick, reason)| {
                    let affiliation = Affiliation::parse(&affiliation).ok_or_else(|| corrupt(jid, "affiliation", &affiliation))?;
                    Ok(StoredAffiliation { jid: who, affiliation, nick, reason })
                })
                .collect::<Result<_>>()?;
            Ok(Some(room))
        })
    }

    /// Replace the room's configuration and whether it is persistent (nothing happens if
    /// there is no such room).
    pub async fn save_config(&self, jid: &BareJid, config: &RoomConfig, persistent: bool) -> Result<()> {
        let update = "UPDATE muc_rooms SET name = $2, description = $3, language = $4, public = $5, members_only = $6, \
                      moderated = $7, allow_invites = $8, change_subject = $9, archive = $10, password = $11, \
                      max_users = $12, whois = $13, allow_pm = $14, history_length = $15, presence_broadcast = $16, \
                      persistent = $17 WHERE jid = $1";
        on_pool!(self.db, |pool| {
            let query = sqlx::query(update).bind(jid.as_str());
            bind_config!(query, config).bind(persistent).execute(pool).await?;
            Ok(())
        })
    }

    /// Set the room's subject, the nick that set it and that occupant's id (nothing happens
    /// if there is no such room).
    pub async fn save_subject(&self, jid: &BareJid, subject: &str, from: &str, occupant_id: &str) -> Result<()> {
        on_pool!(self.db, |pool| {
            sqlx::query("UPDATE muc_rooms SET subject = $2, subject_from = $3, subject_occupant_id = $4 WHERE jid = $1")
                .bind(jid.as_str())
                .bind(subject)
                .bind(from)
                .bind(occupant_id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// All changes in one transaction (an admin list set is atomic), applied in order: a JID
    /// changed twice ends as the later change says. A room that does not exist is an error
    /// (its foreign key) if any change adds a row.
    pub async fn set_affiliations(&self, jid: &BareJid, changes: &[AffiliationChange]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            for c in changes {
                apply_change!(tx, jid.as_str(), c.jid.as_str(), c.affiliation, c.nick.as_str(), c.reason.as_str());
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// The room, its affiliations, and its archive (archive_messages and archive_usage
    /// rows whose owner is the room JID), in one transaction; false if there was no room.
    pub async fn delete(&self, jid: &BareJid) -> Result<bool> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            // The room first (its affiliations go by the cascade): on PostgreSQL this waits
            // for an archive write to the room that holds the room's row, so the archive
            // delete below sees its rows; a later write finds no room and archives nothing.
            let n = sqlx::query("DELETE FROM muc_rooms WHERE jid = $1").bind(jid.as_str()).execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                return Ok(false);
            }
            super::archive::delete_archive!(tx, jid.as_str());
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Persistent rooms of one service (domain) sorted by jid, only public ones if asked, those with
    /// jid > `after` if given, at most `limit`. JIDs compare byte by byte on both databases
    /// (see migration 0012), so pages are the same on either.
    pub async fn list(&self, service: &str, public_only: bool, after: Option<&str>, limit: usize) -> Result<Vec<RoomSummary>> {
        // Every JID is greater than "": no `after` is after "".
        let sql = "SELECT jid, name, public FROM muc_rooms WHERE service = $1 AND persistent AND (public OR NOT $2) AND jid > $3 \
                   ORDER BY jid LIMIT $4";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        on_pool!(self.db, |pool| {
            let rows: Vec<(String, String, bool)> = sqlx::query_as(sql)
                .bind(service)
                .bind(public_only)
                .bind(after.unwrap_or(""))
                .bind(limit)
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(|(jid, name, public)| RoomSummary { jid, name, public }).collect())
        })
    }

    /// How many persistent rooms one service has, or how many public ones.
    pub async fn count(&self, service: &str, public_only: bool) -> Result<i64> {
        on_pool!(self.db, |pool| {
            Ok(sqlx::query_scalar("SELECT COUNT(*) FROM muc_rooms WHERE service = $1 AND persistent AND (public OR NOT $2)")
                .bind(service)
                .bind(public_only)
                .fetch_one(pool)
                .await?)
        })
    }

    /// Delete the temporary rooms (with their archives): at start, those a crash left.
    pub async fn delete_temporary(&self) -> Result<u64> {
        let rooms: Vec<String> = on_pool!(self.db, |pool| sqlx::query_scalar("SELECT jid FROM muc_rooms WHERE NOT persistent").fetch_all(pool).await?);
        let mut n = 0;
        for room in rooms {
            let Ok(jid) = BareJid::new(&room) else { continue };
            n += u64::from(self.delete(&jid).await?);
        }
        Ok(n)
    }

    /// Remove every affiliation of `jid` in every room (a deleted account); how many.
    pub async fn forget_jid(&self, jid: &str) -> Result<u64> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let n = forget_jid!(tx, jid);
            tx.commit().await?;
            Ok(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The XEP-0045 strings, both ways, and nothing else.
    #[test]
    fn names_round_trip() {
        for w in [Whois::Moderators, Whois::Anyone] {
            assert_eq!(Whois::parse(w.as_str()), Some(w));
        }
        for p in [AllowPm::Anyone, AllowPm::Participants, AllowPm::Moderators, AllowPm::NoOne] {
            assert_eq!(AllowPm::parse(p.as_str()), Some(p));
        }
        for a in [Affiliation::Outcast, Affiliation::Member, Affiliation::Admin, Affiliation::Owner] {
            assert_eq!(Affiliation::parse(a.as_str()), Some(a));
        }
        assert_eq!(AllowPm::NoOne.as_str(), "none");
        assert_eq!(Affiliation::parse("none"), None, "'none' is no row");
        assert_eq!(Whois::parse("Anyone"), None);
        assert!(Affiliation::Outcast < Affiliation::Member && Affiliation::Admin < Affiliation::Owner);
    }
}
