//! Accounts and their SCRAM credentials.

use jid::BareJid;
use sqlx::Row;

use super::{Db, Result, StorageError, now_unix, on_pool};
use crate::auth::{ScramCredential, ScramHash};

/// Insert one credential row; a macro so that it expands inside each backend's arm.
macro_rules! insert_credential {
    ($tx:expr, $jid:expr, $c:expr) => {
        sqlx::query(
            "INSERT INTO scram_credentials (jid, mechanism, salt, iterations, stored_key, server_key) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($jid)
        .bind($c.hash.mechanism())
        .bind(&$c.salt[..])
        .bind(i64::from($c.iterations))
        .bind(&$c.stored_key[..])
        .bind(&$c.server_key[..])
        .execute(&mut *$tx)
        .await?
    };
}

/// Inside a transaction: delete the account's row (what references it goes by the
/// cascade), then what does not reference it: its message archive and its affiliations in
/// every room. Evaluates to whether there was such an account. The account's row goes first:
/// on PostgreSQL that waits for an archive write to the account in progress, so the archive
/// delete sees its rows (see `archive::insert_sql`).
macro_rules! delete_account {
    ($tx:expr, $jid:expr) => {{
        let jid: &str = $jid;
        let n = sqlx::query("DELETE FROM accounts WHERE jid = $1").bind(jid).execute(&mut *$tx).await?.rows_affected();
        if n > 0 {
            super::archive::delete_archive!($tx, jid);
            let _affiliations = super::muc::forget_jid!($tx, jid);
        }
        n > 0
    }};
}

#[derive(Clone, Debug)]
pub struct AccountStore {
    pub(super) db: Db,
}

/// An account to create, with its credentials already derived.
pub struct NewAccount {
    pub jid: BareJid,
    pub credentials: Vec<ScramCredential>,
}

impl AccountStore {
    /// Create an account; `false` if it already exists.
    pub async fn create(&self, account: &NewAccount) -> Result<bool> {
        Ok(self.create_many(std::slice::from_ref(account)).await? == 1)
    }

    /// Create many accounts in one transaction; existing ones are skipped. Returns how
    /// many were created.
    pub async fn create_many(&self, accounts: &[NewAccount]) -> Result<usize> {
        let now = now_unix();
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let mut created = 0;
            for account in accounts {
                let jid = account.jid.as_str();
                let domain = account.jid.domain().as_str();
                let inserted = sqlx::query(
                    "INSERT INTO accounts (jid, domain, created_at) VALUES ($1, $2, $3) ON CONFLICT (jid) DO NOTHING",
                )
                .bind(jid)
                .bind(domain)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    continue;
                }
                created += 1;
                for c in &account.credentials {
                    insert_credential!(tx, jid, c);
                }
            }
            tx.commit().await?;
            Ok(created)
        })
    }

    /// Replace the credentials of an existing account; `false` if there is no such account.
    pub async fn set_credentials(&self, jid: &BareJid, credentials: &[ScramCredential]) -> Result<bool> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let exists = sqlx::query("SELECT 1 FROM accounts WHERE jid = $1").bind(jid.as_str()).fetch_optional(&mut *tx).await?;
            if exists.is_none() {
                return Ok(false);
            }
            sqlx::query("DELETE FROM scram_credentials WHERE jid = $1").bind(jid.as_str()).execute(&mut *tx).await?;
            for c in credentials {
                insert_credential!(tx, jid.as_str(), c);
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// The credential for one hash, or `None` if there is no such account (or it has no
    /// credential for that hash).
    pub async fn credential(&self, jid: &BareJid, hash: ScramHash) -> Result<Option<ScramCredential>> {
        let sql = "SELECT salt, iterations, stored_key, server_key FROM scram_credentials WHERE jid = $1 AND mechanism = $2";
        let params = (jid.as_str(), hash.mechanism());
        // Columns in order: salt, iterations, stored_key, server_key.
        type Columns = (Vec<u8>, i64, Vec<u8>, Vec<u8>);
        let read = self.db.read_here(|c| {
            use rusqlite::OptionalExtension;
            c.prepare_cached(sql)?.query_row(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).optional()
        });
        let columns: Option<Columns> = match read {
            Some(read) => read?,
            None => on_pool!(self.db, |pool| sqlx::query_as(sql).bind(params.0).bind(params.1).fetch_optional(pool).await?),
        };
        let Some((salt, iterations, stored_key, server_key)) = columns else { return Ok(None) };
        let iterations = u32::try_from(iterations).unwrap_or(0);
        if iterations == 0 || salt.is_empty() {
            return Err(StorageError::Corrupt(format!("bad SCRAM credential for {jid}")));
        }
        Ok(Some(ScramCredential { hash, salt, iterations, stored_key, server_key }))
    }

    pub async fn exists(&self, jid: &BareJid) -> Result<bool> {
        on_pool!(self.db, |pool| {
            Ok(sqlx::query("SELECT 1 FROM accounts WHERE jid = $1").bind(jid.as_str()).fetch_optional(pool).await?.is_some())
        })
    }

    /// Delete an account and everything stored for it, in one transaction: most of it
    /// through foreign keys; its archive and its affiliations in rooms explicitly (an
    /// archive's owner may be a room, so the archive has no foreign key to accounts, and
    /// an affiliation may name any JID).
    pub async fn delete(&self, jid: &BareJid) -> Result<bool> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            if !delete_account!(tx, jid.as_str()) {
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Delete an account, everything stored for it (as [`AccountStore::delete`]), and every
    /// row of other accounts that refers to it (roster items, stored subscription requests;
    /// their roster versions are bumped), in one transaction. For when no server runs: a
    /// running server does the same through `accounts::delete_account`, which also tells the
    /// contacts.
    pub async fn delete_everywhere(&self, jid: &BareJid) -> Result<bool> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            if !delete_account!(tx, jid.as_str()) {
                return Ok(false);
            }
            let _owners = super::roster::forget_contact!(tx, jid.as_str());
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Bare JIDs of all accounts, optionally of one domain, sorted.
    pub async fn list(&self, domain: Option<&str>) -> Result<Vec<String>> {
        on_pool!(self.db, |pool| {
            let rows = match domain {
                Some(d) => sqlx::query("SELECT jid FROM accounts WHERE domain = $1 ORDER BY jid").bind(d).fetch_all(pool).await?,
                None => sqlx::query("SELECT jid FROM accounts ORDER BY jid").fetch_all(pool).await?,
            };
            rows.iter().map(|r| r.try_get::<String, _>("jid").map_err(Into::into)).collect()
        })
    }
}

