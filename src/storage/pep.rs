//! Personal eventing (XEP-0163): each account's nodes with their configuration, the items
//! they keep (newest last, trimmed to the node's maximum), explicit subscriptions, and a
//! running total of the bytes an account's items take, checked on publish.
//!
//! Writers of one account take turns (the PEP module's per-account lock), so a read, a
//! decision and a write of one account's nodes see no interleaved change.

use jid::BareJid;
use sqlx::Row;

use super::{Db, LimitReached, Result, StorageError, now_unix, on_pool};

/// XEP-0060 §4.5 access models (`authorize` is not offered: PEP has no pending subscribers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessModel {
    Open,
    Presence,
    Roster,
    Whitelist,
}

impl AccessModel {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
        }
    }

    pub fn parse(s: &str) -> Option<AccessModel> {
        Some(match s {
            "open" => AccessModel::Open,
            "presence" => AccessModel::Presence,
            "roster" => AccessModel::Roster,
            "whitelist" => AccessModel::Whitelist,
            _ => return None,
        })
    }
}

/// `pubsub#send_last_published_item`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendLast {
    Never,
    OnSub,
    OnSubAndPresence,
}

impl SendLast {
    pub fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }

    pub fn parse(s: &str) -> Option<SendLast> {
        Some(match s {
            "never" => SendLast::Never,
            "on_sub" => SendLast::OnSub,
            "on_sub_and_presence" => SendLast::OnSubAndPresence,
            _ => return None,
        })
    }
}

/// `pubsub#notification_type`: the message type of notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationType {
    Headline,
    Normal,
}

impl NotificationType {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::Headline => "headline",
            NotificationType::Normal => "normal",
        }
    }

    pub fn parse(s: &str) -> Option<NotificationType> {
        Some(match s {
            "headline" => NotificationType::Headline,
            "normal" => NotificationType::Normal,
            _ => return None,
        })
    }
}

/// A node's configuration (the `pubsub#node_config` fields PEP supports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub access_model: AccessModel,
    /// For the `roster` access model: the owner's roster groups allowed.
    pub roster_groups: Vec<String>,
    /// `None` is `max`: the server's limit (`[pep] max_items_per_node`).
    pub max_items: Option<u64>,
    pub persist_items: bool,
    pub send_last: SendLast,
    pub deliver_notifications: bool,
    pub deliver_payloads: bool,
    pub notify_retract: bool,
    pub notify_delete: bool,
    pub notify_config: bool,
    pub notification_type: NotificationType,
    pub title: String,
    pub description: String,
    pub payload_type: String,
}

/// XEP-0163 §7 "smart defaults": presence access, notifications with payloads, the last
/// item sent on presence; one item kept (as PEP payloads are mostly singletons: a tune, a
/// device list, an avatar), persisted so that it can be fetched.
impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            access_model: AccessModel::Presence,
            roster_groups: Vec::new(),
            max_items: Some(1),
            persist_items: true,
            send_last: SendLast::OnSubAndPresence,
            deliver_notifications: true,
            deliver_payloads: true,
            notify_retract: true,
            notify_delete: true,
            notify_config: false,
            notification_type: NotificationType::Headline,
            title: String::new(),
            description: String::new(),
            payload_type: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepNode {
    pub id: i64,
    pub name: String,
    pub config: NodeConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepItem {
    pub id: String,
    /// The publisher's JID, as the server stamped it.
    pub publisher: String,
    /// Unix seconds.
    pub published_at: i64,
    /// The payload element, serialised.
    pub payload: String,
}

/// A node's newest item, with whose node it is (for the last items sent at login).
#[derive(Debug, Clone)]
pub struct LastItem {
    pub owner: BareJid,
    pub node: PepNode,
    pub item: PepItem,
}

/// What creating a node did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Yes(PepNode),
    /// A node of that name exists.
    Exists,
}

/// How much one account may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PepLimits {
    pub max_nodes: usize,
    /// Items a node keeps at most, whatever its own `max_items`.
    pub max_items: usize,
    pub max_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct PepStore {
    pub(super) db: Db,
    pub(super) limits: PepLimits,
}

/// A node's columns, as a literal for `concat!` (sqlx takes only literal SQL).
macro_rules! node_columns {
    () => {
        "id, node, access_model, roster_groups, max_items, persist_items, send_last, deliver_notifications, \
         deliver_payloads, notify_retract, notify_delete, notify_config, notification_type, title, description, \
         payload_type"
    };
    (n) => {
        "n.id, n.node, n.access_model, n.roster_groups, n.max_items, n.persist_items, n.send_last, \
         n.deliver_notifications, n.deliver_payloads, n.notify_retract, n.notify_delete, n.notify_config, \
         n.notification_type, n.title, n.description, n.payload_type"
    };
}

fn corrupt(what: &str, value: &str) -> StorageError {
    StorageError::Corrupt(format!("PEP {what} {value:?}"))
}

fn node_from_row<R: Row>(row: &R) -> Result<PepNode>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    let access: String = row.try_get("access_model")?;
    let send_last: String = row.try_get("send_last")?;
    let notification_type: String = row.try_get("notification_type")?;
    let groups: String = row.try_get("roster_groups")?;
    let max_items: Option<i64> = row.try_get("max_items")?;
    Ok(PepNode {
        id: row.try_get("id")?,
        name: row.try_get("node")?,
        config: NodeConfig {
            access_model: AccessModel::parse(&access).ok_or_else(|| corrupt("access model", &access))?,
            roster_groups: groups.lines().map(str::to_string).collect(),
            max_items: max_items.map(|n| u64::try_from(n).unwrap_or(0)),
            persist_items: row.try_get("persist_items")?,
            send_last: SendLast::parse(&send_last).ok_or_else(|| corrupt("send_last_published_item", &send_last))?,
            deliver_notifications: row.try_get("deliver_notifications")?,
            deliver_payloads: row.try_get("deliver_payloads")?,
            notify_retract: row.try_get("notify_retract")?,
            notify_delete: row.try_get("notify_delete")?,
            notify_config: row.try_get("notify_config")?,
            notification_type: NotificationType::parse(&notification_type)
                .ok_or_else(|| corrupt("notification type", &notification_type))?,
            title: row.try_get("title")?,
            description: row.try_get("description")?,
            payload_type: row.try_get("payload_type")?,
        },
    })
}

fn item_from_row<R: Row>(row: &R) -> Result<PepItem>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    Ok(PepItem {
        id: row.try_get("item_id")?,
        publisher: row.try_get("publisher")?,
        published_at: row.try_get("published_at")?,
        payload: row.try_get("payload")?,
    })
}

/// Bind a node configuration's columns after whatever came before, in `NODE_COLUMNS`
/// order without `id` and `node`.
macro_rules! bind_config {
    ($query:expr, $config:expr) => {{
        let c: &NodeConfig = $config;
        $query
            .bind(c.access_model.as_str())
            .bind(c.roster_groups.join("\n"))
            .bind(c.max_items.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
            .bind(c.persist_items)
            .bind(c.send_last.as_str())
            .bind(c.deliver_notifications)
            .bind(c.deliver_payloads)
            .bind(c.notify_retract)
            .bind(c.notify_delete)
            .bind(c.notify_config)
            .bind(c.notification_type.as_str())
            .bind(c.title.as_str())
            .bind(c.description.as_str())
            .bind(c.payload_type.as_str())
    }};
}

/// Inside a transaction: delete a node's items past the newest `$keep`, evaluating to their
/// ids and sizes, oldest first.
macro_rules! trim {
    ($tx:expr, $node_id:expr, $keep:expr) => {{
        let mut evicted: Vec<(String, i64, i64)> = sqlx::query_as(
            "DELETE FROM pep_items WHERE node_id = $1 AND seq <= \
             (SELECT seq FROM pep_items WHERE node_id = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2) \
             RETURNING item_id, bytes, seq",
        )
        .bind($node_id)
        .bind($keep)
        .fetch_all(&mut *$tx)
        .await?;
        evicted.sort_by_key(|(_, _, seq)| *seq);
        evicted.into_iter().map(|(id, bytes, _)| (id, bytes)).collect::<Vec<(String, i64)>>()
    }};
}

/// Inside a transaction: give back `$bytes` of the owner's running total.
macro_rules! release {
    ($tx:expr, $owner:expr, $bytes:expr) => {{
        let bytes: i64 = $bytes;
        if bytes != 0 {
            sqlx::query("UPDATE pep_usage SET bytes = bytes - $2 WHERE owner = $1")
                .bind($owner.as_str())
                .bind(bytes)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

impl PepStore {
    pub fn limits(&self) -> PepLimits {
        self.limits
    }

    /// The same store with other limits.
    pub fn with_limits(mut self, limits: PepLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How many items a node keeps: its own maximum within the server's.
    pub fn kept(&self, config: &NodeConfig) -> usize {
        let own = config.max_items.map_or(self.limits.max_items, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let own = if config.persist_items { own } else { 1 };
        own.clamp(1, self.limits.max_items)
    }

    pub async fn node(&self, owner: &BareJid, name: &str) -> Result<Option<PepNode>> {
        let sql = concat!("SELECT ", node_columns!(), " FROM pep_nodes WHERE owner = $1 AND node = $2");
        on_pool!(self.db, |pool| {
            match sqlx::query(sql).bind(owner.as_str()).bind(name).fetch_optional(pool).await? {
                Some(row) => Ok(Some(node_from_row(&row)?)),
                None => Ok(None),
            }
        })
    }

    /// All of an account's nodes, by name.
    pub async fn nodes(&self, owner: &BareJid) -> Result<Vec<PepNode>> {
        let sql = concat!("SELECT ", node_columns!(), " FROM pep_nodes WHERE owner = $1 ORDER BY node");
        on_pool!(self.db, |pool| {
            let rows = sqlx::query(sql).bind(owner.as_str()).fetch_all(pool).await?;
            rows.iter().map(node_from_row).collect()
        })
    }

    /// Create a node, unless the account has as many as allowed
    /// ([`LimitReached::PepNodes`]) or one of that name exists.
    pub async fn create(&self, owner: &BareJid, name: &str, config: &NodeConfig) -> Result<Created> {
        let max = i64::try_from(self.limits.max_nodes).unwrap_or(i64::MAX);
        let insert = concat!(
            "INSERT INTO pep_nodes (owner, node, access_model, roster_groups, max_items, persist_items, send_last, \
             deliver_notifications, deliver_payloads, notify_retract, notify_delete, notify_config, notification_type, \
             title, description, payload_type, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             ON CONFLICT (owner, node) DO NOTHING RETURNING ",
            node_columns!()
        );
        on_pool!(self.db, |pool| {
            // The insert comes first (see offline.rs: a SQLite transaction that starts by
            // writing holds the write lock at once); the count after it includes it.
            let mut tx = pool.begin().await?;
            let query = sqlx::query(insert).bind(owner.as_str()).bind(name);
            let Some(row) = bind_config!(query, config).bind(now_unix()).fetch_optional(&mut *tx).await? else {
                return Ok(Created::Exists);
            };
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pep_nodes WHERE owner = $1")
                .bind(owner.as_str())
                .fetch_one(&mut *tx)
                .await?;
            if count > max {
                return Err(LimitReached::PepNodes(self.limits.max_nodes).into());
            }
            sqlx::query("INSERT INTO pep_usage (owner, bytes) VALUES ($1, 0) ON CONFLICT (owner) DO NOTHING")
                .bind(owner.as_str())
                .execute(&mut *tx)
                .await?;
            let node = node_from_row(&row)?;
            tx.commit().await?;
            Ok(Created::Yes(node))
        })
    }

    /// Change a node's configuration, and drop the items past its new maximum (their ids,
    /// oldest first, are returned).
    pub async fn configure(&self, owner: &BareJid, node: &PepNode, config: &NodeConfig) -> Result<Vec<String>> {
        let keep = i64::try_from(self.kept(config)).unwrap_or(i64::MAX);
        let update = "UPDATE pep_nodes SET access_model = $2, roster_groups = $3, max_items = $4, persist_items = $5, \
                      send_last = $6, deliver_notifications = $7, deliver_payloads = $8, notify_retract = $9, \
                      notify_delete = $10, notify_config = $11, notification_type = $12, title = $13, \
                      description = $14, payload_type = $15 WHERE id = $1";
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let query = sqlx::query(update).bind(node.id);
            bind_config!(query, config).execute(&mut *tx).await?;
            let evicted = trim!(tx, node.id, keep);
            release!(tx, owner, evicted.iter().map(|(_, b)| *b).sum::<i64>());
            tx.commit().await?;
            Ok(evicted.into_iter().map(|(id, _)| id).collect())
        })
    }

    /// Delete a node with its items and subscriptions; `false` if there was none.
    pub async fn delete(&self, owner: &BareJid, name: &str) -> Result<bool> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            // The items first, to count their bytes (the cascade would take them unseen).
            let sizes: Vec<i64> = sqlx::query_scalar(
                "DELETE FROM pep_items WHERE node_id = (SELECT id FROM pep_nodes WHERE owner = $1 AND node = $2) RETURNING bytes",
            )
            .bind(owner.as_str())
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
            let deleted = sqlx::query("DELETE FROM pep_nodes WHERE owner = $1 AND node = $2")
                .bind(owner.as_str())
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            release!(tx, owner, sizes.iter().sum::<i64>());
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Remove every item of a node (XEP-0060 §8.5).
    pub async fn purge(&self, owner: &BareJid, node: &PepNode) -> Result<()> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let sizes: Vec<i64> = sqlx::query_scalar("DELETE FROM pep_items WHERE node_id = $1 RETURNING bytes")
                .bind(node.id)
                .fetch_all(&mut *tx)
                .await?;
            release!(tx, owner, sizes.iter().sum::<i64>());
            tx.commit().await?;
            Ok(())
        })
    }

    /// Publish an item: it replaces one with the same id and becomes the newest; the oldest
    /// items past the node's maximum go (their ids are returned). Refused with
    /// [`LimitReached::PepBytes`] if the account's items would take more than allowed.
    pub async fn publish(&self, owner: &BareJid, node: &PepNode, item: &PepItem) -> Result<Vec<String>> {
        let keep = i64::try_from(self.kept(&node.config)).unwrap_or(i64::MAX);
        let bytes = i64::try_from(item.payload.len()).unwrap_or(i64::MAX);
        let max_bytes = i64::try_from(self.limits.max_bytes).unwrap_or(i64::MAX);
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            // The write first (the replaced item, if any), then the reads.
            let replaced: i64 = sqlx::query_scalar("DELETE FROM pep_items WHERE node_id = $1 AND item_id = $2 RETURNING bytes")
                .bind(node.id)
                .bind(item.id.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0);
            let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM pep_items WHERE node_id = $1")
                .bind(node.id)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO pep_items (node_id, item_id, seq, publisher, published_at, payload, bytes) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(node.id)
            .bind(item.id.as_str())
            .bind(seq)
            .bind(item.publisher.as_str())
            .bind(item.published_at)
            .bind(item.payload.as_str())
            .bind(bytes)
            .execute(&mut *tx)
            .await?;
            let evicted = trim!(tx, node.id, keep);
            let delta = bytes - replaced - evicted.iter().map(|(_, b)| *b).sum::<i64>();
            let within = sqlx::query("UPDATE pep_usage SET bytes = bytes + $2 WHERE owner = $1 AND ($2 <= 0 OR bytes + $2 <= $3)")
                .bind(owner.as_str())
                .bind(delta)
                .bind(max_bytes)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !within {
                // Dropping the transaction rolls it back.
                return Err(LimitReached::PepBytes(self.limits.max_bytes).into());
            }
            tx.commit().await?;
            Ok(evicted.into_iter().map(|(id, _)| id).collect())
        })
    }

    /// Retract one item; `false` if the node has no such item.
    pub async fn retract(&self, owner: &BareJid, node: &PepNode, item_id: &str) -> Result<bool> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let Some(bytes): Option<i64> = sqlx::query_scalar("DELETE FROM pep_items WHERE node_id = $1 AND item_id = $2 RETURNING bytes")
                .bind(node.id)
                .bind(item_id)
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Ok(false);
            };
            release!(tx, owner, bytes);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// A node's items, oldest first: all of them, the newest `max`, or those with the given
    /// ids (unknown ids are left out).
    pub async fn items(&self, node: &PepNode, max: Option<usize>, ids: &[String]) -> Result<Vec<PepItem>> {
        on_pool!(self.db, |pool| {
            let rows = if !ids.is_empty() {
                let mut found = Vec::with_capacity(ids.len());
                for id in ids {
                    let sql = "SELECT item_id, publisher, published_at, payload, seq FROM pep_items WHERE node_id = $1 AND item_id = $2";
                    if let Some(row) = sqlx::query(sql).bind(node.id).bind(id.as_str()).fetch_optional(pool).await? {
                        let seq: i64 = row.try_get("seq")?;
                        found.push((seq, item_from_row(&row)?));
                    }
                }
                found.sort_by_key(|(seq, _)| *seq);
                return Ok(found.into_iter().map(|(_, item)| item).collect());
            } else {
                let limit = max.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX));
                let sql = "SELECT item_id, publisher, published_at, payload FROM pep_items WHERE node_id = $1 ORDER BY seq DESC LIMIT $2";
                sqlx::query(sql).bind(node.id).bind(limit).fetch_all(pool).await?
            };
            let mut items = rows.iter().map(item_from_row).collect::<Result<Vec<_>>>()?;
            items.reverse();
            Ok(items)
        })
    }

    /// The newest item of each of an account's nodes that has one.
    pub async fn own_last_items(&self, owner: &BareJid) -> Result<Vec<LastItem>> {
        let sql = concat!(
            "SELECT ",
            node_columns!(n),
            ", i.item_id, i.publisher, i.published_at, i.payload \
             FROM pep_nodes n JOIN pep_items i ON i.node_id = n.id \
             WHERE n.owner = $1 AND i.seq = (SELECT MAX(seq) FROM pep_items WHERE node_id = n.id)"
        );
        on_pool!(self.db, |pool| {
            let rows = sqlx::query(sql).bind(owner.as_str()).fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok(LastItem { owner: owner.clone(), node: node_from_row(r)?, item: item_from_row(r)? }))
                .collect()
        })
    }

    /// The newest item of each node of the given accounts, for `contact`: only of accounts
    /// whose roster gives `contact` a subscription to their presence (`from` or `both`),
    /// checked here on the owner's side (the roster's primary key), and never of nodes
    /// with the `whitelist` access model.
    pub async fn contacts_last_items(&self, owners: &[BareJid], contact: &BareJid) -> Result<Vec<LastItem>> {
        let mut found = Vec::new();
        for chunk in owners.chunks(100) {
            // $1 is the contact; the owners follow.
            let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                concat!(
                    "SELECT n.owner, ",
                    node_columns!(n),
                    ", i.item_id, i.publisher, i.published_at, i.payload \
                     FROM pep_nodes n \
                     JOIN roster_items r ON r.owner = n.owner AND r.contact = $1 AND r.subscription IN ('from', 'both') \
                     JOIN pep_items i ON i.node_id = n.id \
                     WHERE n.owner IN ({}) AND n.access_model <> 'whitelist' \
                     AND i.seq = (SELECT MAX(seq) FROM pep_items WHERE node_id = n.id)"
                ),
                list.join(", ")
            );
            let rows = on_pool!(self.db, |pool| {
                // Audited: the only text added to the literal is the list of placeholders.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(contact.as_str());
                for owner in chunk {
                    query = query.bind(owner.as_str());
                }
                let rows = query.fetch_all(pool).await?;
                rows.iter()
                    .map(|r| {
                        let owner: String = r.try_get("owner")?;
                        let owner = BareJid::new(&owner).map_err(|_| corrupt("owner", &owner))?;
                        Ok(LastItem { owner, node: node_from_row(r)?, item: item_from_row(r)? })
                    })
                    .collect::<Result<Vec<_>>>()?
            });
            found.extend(rows);
        }
        Ok(found)
    }

    /// Explicit subscriptions to a node (XEP-0060 §6.1), as subscribed.
    pub async fn subscribers(&self, node: &PepNode) -> Result<Vec<String>> {
        on_pool!(self.db, |pool| {
            Ok(sqlx::query_scalar("SELECT jid FROM pep_subscriptions WHERE node_id = $1 ORDER BY jid")
                .bind(node.id)
                .fetch_all(pool)
                .await?)
        })
    }

    /// Subscribe `jid` to a node; `false` if it was subscribed already. Refused with
    /// [`LimitReached::PepSubscribers`] past `max` subscriptions to the node.
    pub async fn subscribe(&self, node: &PepNode, jid: &str, max: usize) -> Result<bool> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let added = sqlx::query("INSERT INTO pep_subscriptions (node_id, jid) VALUES ($1, $2) ON CONFLICT (node_id, jid) DO NOTHING")
                .bind(node.id)
                .bind(jid)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pep_subscriptions WHERE node_id = $1")
                .bind(node.id)
                .fetch_one(&mut *tx)
                .await?;
            if count > max {
                return Err(LimitReached::PepSubscribers(usize::try_from(max).unwrap_or(usize::MAX)).into());
            }
            tx.commit().await?;
            Ok(added)
        })
    }

    /// Remove a subscription; `false` if there was none.
    pub async fn unsubscribe(&self, node: &PepNode, jid: &str) -> Result<bool> {
        on_pool!(self.db, |pool| {
            Ok(sqlx::query("DELETE FROM pep_subscriptions WHERE node_id = $1 AND jid = $2")
                .bind(node.id)
                .bind(jid)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }

    /// Remove the explicit subscriptions of an account that is deleted, bare or full, to
    /// anyone's nodes (its own nodes go with it).
    pub async fn forget_subscriber(&self, account: &BareJid) -> Result<u64> {
        let escaped: String = account.as_str().chars().flat_map(|c| match c {
            '\\' | '%' | '_' => vec!['\\', c],
            c => vec![c],
        }).collect();
        let pattern = format!("{escaped}/%");
        on_pool!(self.db, |pool| {
            Ok(sqlx::query("DELETE FROM pep_subscriptions WHERE jid = $1 OR jid LIKE $2 ESCAPE '\\'")
                .bind(account.as_str())
                .bind(pattern.as_str())
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// The bytes an account's items take, as counted.
    pub async fn usage(&self, owner: &BareJid) -> Result<i64> {
        on_pool!(self.db, |pool| {
            let bytes: Option<i64> = sqlx::query_scalar("SELECT bytes FROM pep_usage WHERE owner = $1")
                .bind(owner.as_str())
                .fetch_optional(pool)
                .await?;
            Ok(bytes.unwrap_or(0))
        })
    }
}
