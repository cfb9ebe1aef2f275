//! Persistence: the only module that imports sea_orm.
//!
//! It stores [`TokenRecord`]s with their digest and answers the queries the
//! service needs. Each operation is one statement (or one short transaction), so
//! a refused or failed request leaves nothing half-written. Rows are converted
//! to domain types here; entities never leave the module.

mod entity;

use std::collections::BTreeMap;
use std::time::Duration;

use migrations::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectOptions, ConnectionTrait, DatabaseConnection,
    DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, RuntimeErr,
    TransactionTrait, TryInsertResult,
};
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::token::{Digest, Status, TokenRecord};
use entity::{meta, tokens};

/// Rows per last-used statement: a few parameters each, far below every
/// backend's bind-parameter limit.
const LAST_USED_CHUNK: usize = 500;

/// What went wrong talking to the database. Its `Display` never includes
/// database text; the cause is kept as the error source, for logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached (connect, pool or I/O failure).
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    /// The database answered with an error.
    #[error("database error")]
    Database(#[source] DbErr),
    /// A stored row could not be read back.
    #[error("stored row is corrupt")]
    Corrupt(#[source] anyhow::Error),
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if is_unreachable(&err) {
            StoreError::Unavailable(err)
        } else {
            StoreError::Database(err)
        }
    }
}

fn is_unreachable(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                Sqlx::Io(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::Tls(_) => true,
                Sqlx::Protocol(_) | Sqlx::WorkerCrashed => true,
                // PostgreSQL: class 08 (connection exception), 57P01-57P03
                // (server shutting down or not yet accepting connections).
                Sqlx::Database(db) => db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")),
                _ => false,
            }
        }
        _ => false,
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which tokens ListTokens wants.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// `None`: every owner.
    pub owner: Option<String>,
    /// Empty: every status.
    pub statuses: Vec<Status>,
}

/// A position in the newest-first order: the last token of the previous page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub create_time: Timestamp,
    pub id: Uuid,
}

/// The fields UpdateToken may change; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct TokenPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A record and the digest it is stored under (to invalidate the cache).
#[derive(Clone, Debug)]
pub struct StoredToken {
    pub record: TokenRecord,
    pub digest: Digest,
}

/// The database, behind a connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`).
    ///
    /// # Errors
    /// If the URL is malformed or the database cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let mut options = ConnectOptions::new(url);
        options
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            // Statements are traced by the service itself; sqlx's own log
            // lines would only repeat them.
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5))
            });
        let db = sea_orm::Database::connect(options).await?;
        Ok(Store { db })
    }

    pub fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Postgres
    }

    /// Applies pending migrations. On PostgreSQL this holds an advisory lock,
    /// so replicas starting together migrate one at a time.
    ///
    /// # Errors
    /// If a migration fails; nothing of that migration is kept on PostgreSQL.
    pub async fn migrate(&self) -> Result<()> {
        if self.is_postgres() {
            let txn = self.db.begin().await?;
            // An arbitrary constant: "latchkey" in ASCII.
            txn.execute_unprepared("SELECT pg_advisory_xact_lock(7809615462931736953)")
                .await?;
            Migrator::up(&txn, None).await?;
            txn.commit().await?;
        } else {
            Migrator::up(&self.db, None).await?;
        }
        Ok(())
    }

    /// How many migrations have not been applied yet.
    ///
    /// # Errors
    /// If the database cannot be read.
    pub async fn pending_migrations(&self) -> Result<usize> {
        Ok(Migrator::get_pending_migrations(&self.db).await?.len())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    ///
    /// # Errors
    /// If closing fails.
    pub async fn close(self) -> Result<()> {
        self.db.close().await?;
        Ok(())
    }

    /// # Errors
    /// On a database fault, or if the digest or id already exists.
    pub async fn insert_token(
        &self,
        record: &TokenRecord,
        digest: &Digest,
        key_id: &str,
    ) -> Result<()> {
        tokens::Entity::insert(to_active_model(record, digest, key_id))
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// Inserts the bootstrap admin token unless one was ever issued (recorded
    /// under `meta_key`), atomically: of several replicas starting at once,
    /// exactly one issues it. Returns whether this call did.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn insert_token_once(
        &self,
        meta_key: &str,
        record: &TokenRecord,
        digest: &Digest,
        key_id: &str,
    ) -> Result<bool> {
        let txn = self.db.begin().await?;
        let marker = meta::ActiveModel {
            key: Set(meta_key.to_owned()),
            value: Set(record.id.to_string()),
        };
        let claimed = meta::Entity::insert(marker)
            .on_conflict_do_nothing_on([meta::Column::Key])
            .exec_without_returning(&txn)
            .await?;
        let claimed = matches!(claimed, TryInsertResult::Inserted(n) if n > 0);
        if claimed {
            tokens::Entity::insert(to_active_model(record, digest, key_id))
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(claimed)
    }

    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn find_by_digest(&self, digest: &Digest) -> Result<Option<TokenRecord>> {
        tokens::Entity::find()
            .filter(tokens::Column::Digest.eq(digest.as_bytes().to_vec()))
            .one(&self.db)
            .await?
            .map(to_record)
            .transpose()
    }

    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn get_token(&self, id: Uuid) -> Result<Option<TokenRecord>> {
        tokens::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(to_record)
            .transpose()
    }

    /// Up to `limit` tokens matching `filter`, newest first, strictly after
    /// `after`. Status filters are judged at `now`.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn list_tokens(
        &self,
        filter: &ListFilter,
        after: Option<Cursor>,
        limit: u64,
        now: Timestamp,
    ) -> Result<Vec<TokenRecord>> {
        let mut query = tokens::Entity::find();
        if let Some(owner) = &filter.owner {
            query = query.filter(tokens::Column::Owner.eq(owner.as_str()));
        }
        if !filter.statuses.is_empty() {
            let any = filter
                .statuses
                .iter()
                .fold(Condition::any(), |c, s| c.add(status_condition(*s, now)));
            query = query.filter(any);
        }
        if let Some(c) = after {
            let t = c.create_time.as_micros();
            query = query.filter(
                Condition::any().add(tokens::Column::CreateTime.lt(t)).add(
                    Condition::all()
                        .add(tokens::Column::CreateTime.eq(t))
                        .add(tokens::Column::Id.lt(c.id)),
                ),
            );
        }
        query
            .order_by_desc(tokens::Column::CreateTime)
            .order_by_desc(tokens::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// Applies `patch`. `None` if there is no such token.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn update_token(
        &self,
        id: Uuid,
        patch: &TokenPatch,
        now: Timestamp,
    ) -> Result<Option<StoredToken>> {
        let mut update = tokens::Entity::update_many()
            .col_expr(tokens::Column::UpdateTime, Expr::value(now.as_micros()));
        if let Some(name) = &patch.name {
            update = update.col_expr(tokens::Column::Name, Expr::value(name.clone()));
        }
        if let Some(description) = &patch.description {
            update = update.col_expr(
                tokens::Column::Description,
                Expr::value(description.clone()),
            );
        }
        if let Some(metadata) = &patch.metadata {
            update = update.col_expr(
                tokens::Column::Metadata,
                Expr::value(encode_metadata(metadata)),
            );
        }
        let rows = update
            .filter(tokens::Column::Id.eq(id))
            .exec_with_returning(&self.db)
            .await?;
        first_stored(rows)
    }

    /// Marks the token revoked unless it already is. Returns the token as it
    /// now stands (unchanged if it was already revoked); `None` if absent.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn revoke_token(
        &self,
        id: Uuid,
        reason: &str,
        now: Timestamp,
    ) -> Result<Option<StoredToken>> {
        let rows = tokens::Entity::update_many()
            .col_expr(tokens::Column::RevokeTime, Expr::value(now.as_micros()))
            .col_expr(tokens::Column::RevokeReason, Expr::value(reason.to_owned()))
            .col_expr(tokens::Column::UpdateTime, Expr::value(now.as_micros()))
            .filter(tokens::Column::Id.eq(id))
            .filter(tokens::Column::RevokeTime.is_null())
            .exec_with_returning(&self.db)
            .await?;
        match first_stored(rows)? {
            Some(changed) => Ok(Some(changed)),
            None => self.get_stored(id).await,
        }
    }

    /// Clears a revocation, provided the token was not replaced by a renewal
    /// and has not expired at `now`. Returns the token if it changed; `None`
    /// if it is absent or no longer qualifies (the caller reads it again).
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn unrevoke_token(&self, id: Uuid, now: Timestamp) -> Result<Option<StoredToken>> {
        let rows = tokens::Entity::update_many()
            .col_expr(tokens::Column::RevokeTime, Expr::value(Option::<i64>::None))
            .col_expr(tokens::Column::RevokeReason, Expr::value(String::new()))
            .col_expr(tokens::Column::UpdateTime, Expr::value(now.as_micros()))
            .filter(tokens::Column::Id.eq(id))
            .filter(tokens::Column::RevokeTime.is_not_null())
            .filter(tokens::Column::ReplacedBy.is_null())
            .filter(
                Condition::any()
                    .add(tokens::Column::ExpireTime.is_null())
                    .add(tokens::Column::ExpireTime.gt(now.as_micros())),
            )
            .exec_with_returning(&self.db)
            .await?;
        first_stored(rows)
    }

    /// Deletes the token; returns its digest, or `None` if there was none.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn delete_token(&self, id: Uuid) -> Result<Option<Digest>> {
        let deleted = tokens::Entity::delete_by_id(id)
            .exec_with_returning(&self.db)
            .await?;
        deleted.map(|m| digest_of(&m)).transpose()
    }

    /// Records last-use times, many tokens per statement. A time never moves
    /// backwards: a replica flushing an older time leaves a newer one alone.
    /// Deleted tokens are skipped.
    ///
    /// # Errors
    /// On a database fault; nothing of the failing chunk is written.
    pub async fn record_last_used(&self, uses: &[(Uuid, Timestamp)]) -> Result<()> {
        let column = || Expr::col(tokens::Column::LastUsedTime);
        for chunk in uses.chunks(LAST_USED_CHUNK) {
            let mut when = sea_orm::sea_query::CaseStatement::new();
            for (id, t) in chunk {
                when = when.case(tokens::Column::Id.eq(*id), Expr::value(t.as_micros()));
            }
            let new_time: Expr = when.into();
            let newer = Expr::case(
                Condition::any()
                    .add(column().is_null())
                    .add(column().lt(new_time.clone())),
                new_time,
            )
            .finally(column());
            tokens::Entity::update_many()
                .col_expr(tokens::Column::LastUsedTime, newer.into())
                .filter(tokens::Column::Id.is_in(chunk.iter().map(|(id, _)| *id)))
                .exec(&self.db)
                .await?;
        }
        Ok(())
    }

    /// The raw value of a `latchkey_meta` key.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(meta::Entity::find_by_id(key.to_owned())
            .one(&self.db)
            .await?
            .map(|m| m.value))
    }

    async fn get_stored(&self, id: Uuid) -> Result<Option<StoredToken>> {
        tokens::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(stored)
            .transpose()
    }
}

/// SQL for "has status `s` at `now`", mirroring [`TokenRecord::status`].
fn status_condition(s: Status, now: Timestamp) -> Condition {
    let now = now.as_micros();
    let not_revoked = || tokens::Column::RevokeTime.is_null();
    match s {
        Status::Revoked => Condition::all().add(tokens::Column::RevokeTime.is_not_null()),
        Status::Expired => Condition::all()
            .add(not_revoked())
            .add(tokens::Column::ExpireTime.lte(now)),
        Status::Active => Condition::all().add(not_revoked()).add(
            Condition::any()
                .add(tokens::Column::ExpireTime.is_null())
                .add(tokens::Column::ExpireTime.gt(now)),
        ),
        // Idle expiry is not judged yet: no token is inactive.
        Status::Inactive => Condition::all().add(Expr::value(false)),
    }
}

fn first_stored(rows: Vec<tokens::Model>) -> Result<Option<StoredToken>> {
    rows.into_iter().next().map(stored).transpose()
}

fn stored(m: tokens::Model) -> Result<StoredToken> {
    let digest = digest_of(&m)?;
    Ok(StoredToken {
        record: to_record(m)?,
        digest,
    })
}

fn digest_of(m: &tokens::Model) -> Result<Digest> {
    Digest::from_slice(&m.digest).ok_or_else(|| {
        StoreError::Corrupt(anyhow::anyhow!(
            "token {} has a digest of {} bytes",
            m.id,
            m.digest.len()
        ))
    })
}

fn encode_metadata(metadata: &BTreeMap<String, String>) -> String {
    serde_json::to_string(metadata).unwrap_or_else(|_| "{}".to_owned())
}

fn to_active_model(r: &TokenRecord, digest: &Digest, key_id: &str) -> tokens::ActiveModel {
    tokens::ActiveModel {
        id: Set(r.id),
        owner: Set(r.owner.clone()),
        name: Set(r.name.clone()),
        description: Set(r.description.clone()),
        scopes: Set(r.scopes.join(" ")),
        metadata: Set(encode_metadata(&r.metadata)),
        digest: Set(digest.as_bytes().to_vec()),
        key_id: Set(key_id.to_owned()),
        display_hint: Set(r.display_hint.clone()),
        create_time: Set(r.create_time.as_micros()),
        update_time: Set(r.update_time.as_micros()),
        expire_time: Set(r.expire_time.map(Timestamp::as_micros)),
        idle_timeout: Set(r.idle_timeout.map(duration_micros)),
        last_used_time: Set(r.last_used_time.map(Timestamp::as_micros)),
        revoke_time: Set(r.revoke_time.map(Timestamp::as_micros)),
        revoke_reason: Set(r.revoke_reason.clone()),
        replaces: Set(r.replaces),
        replaced_by: Set(r.replaced_by),
    }
}

fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn to_record(m: tokens::Model) -> Result<TokenRecord> {
    let metadata = serde_json::from_str(&m.metadata).map_err(|e| {
        StoreError::Corrupt(anyhow::Error::new(e).context(format!("metadata of token {}", m.id)))
    })?;
    Ok(TokenRecord {
        id: m.id,
        owner: m.owner,
        name: m.name,
        description: m.description,
        scopes: m.scopes.split_whitespace().map(str::to_owned).collect(),
        metadata,
        display_hint: m.display_hint,
        create_time: Timestamp::from_micros(m.create_time),
        update_time: Timestamp::from_micros(m.update_time),
        expire_time: m.expire_time.map(Timestamp::from_micros),
        idle_timeout: m
            .idle_timeout
            .map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(0))),
        last_used_time: m.last_used_time.map(Timestamp::from_micros),
        revoke_time: m.revoke_time.map(Timestamp::from_micros),
        revoke_reason: m.revoke_reason,
        replaces: m.replaces,
        replaced_by: m.replaced_by,
    })
}
