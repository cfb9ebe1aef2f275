//! Persistence: the only module that imports sea_orm.
//!
//! It stores [`TokenRecord`]s with their digest, owners and the audit trail,
//! and answers the queries the service needs. Reads go through [`Store`];
//! every change goes through a [`Txn`], so a change and its audit event commit
//! together or not at all, and a refused or failed request leaves nothing
//! half-written. Rows are converted to domain types here; entities never leave
//! the module.

mod bounded;
mod entity;
mod lanes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use migrations::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectOptions, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, FromQueryResult, JoinType, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, RelationTrait, RuntimeErr, Statement,
    TransactionTrait,
};
use uuid::Uuid;

use bounded::Bounded;
use entity::{meta, owners, token_changes, token_events, tokens};
use lanes::Lanes;
use latchkey_core::audit::{Event, EventFilter, EventKind};
use latchkey_core::changes::{Change, Logged};
use latchkey_core::clock::Timestamp;
use latchkey_core::owner::OwnerRecord;
pub use latchkey_core::query::{Cursor, ListFilter, TokenPatch};
use latchkey_core::token::{Digest, Status, TokenRecord};

/// Rows per last-used statement: a few parameters each, far below every
/// backend's bind-parameter limit.
const LAST_USED_CHUNK: usize = 500;

/// Rows per multi-row INSERT in bulk loads: 1,000 tokens bind about 19,000
/// parameters, under both SQLite's and PostgreSQL's limits.
pub const BULK_CHUNK: usize = 1_000;

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

/// A record and the digest it is stored under (to invalidate the cache).
#[derive(Clone, Debug)]
pub struct StoredToken {
    pub record: TokenRecord,
    pub digest: Digest,
}

/// What Verify needs from the database about one digest.
#[derive(Clone, Debug)]
pub struct FoundToken {
    pub record: TokenRecord,
    pub owner_disabled: bool,
}

/// An owner's creations inside a rate window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Creations {
    pub count: u64,
    /// The earliest of them: the window frees a slot once it is old enough.
    pub oldest: Option<Timestamp>,
}

/// How a renewal ends the old token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retirement {
    /// Revoked at once, with reason "renewed".
    RevokeNow,
    /// Keeps working until then (already min(old expiry, now + grace)).
    ExpireAt(Timestamp),
}

/// The database, behind a connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    db: Bounded<DatabaseConnection>,
    /// PostgreSQL only: connections kept for [`Store::find_by_digest`].
    lanes: Option<Arc<Lanes>>,
    /// [`Store::find_by_digest`]'s statement, built once: a cache miss
    /// should cost the database round trip, not query building.
    find_by_digest_sql: Arc<str>,
    /// Drawn at connect: marks the change-log rows this process writes.
    origin: i64,
}

/// How long the database may take to answer, by default: to connect, to
/// give a connection from the pool, to answer a statement.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Column alias for the owner's disable time in [`Store::find_by_digest`].
const OWNER_DISABLE_TIME: &str = "owner_disable_time";

/// The token with a given digest (unique, so at most one row), with its
/// owner's disable time; the digest is the only parameter.
fn find_by_digest_sql(backend: DbBackend) -> Arc<str> {
    tokens::Entity::find()
        .column_as(owners::Column::DisableTime, OWNER_DISABLE_TIME)
        .join(JoinType::LeftJoin, tokens::Relation::Owner.def())
        .filter(tokens::Column::Digest.eq(Vec::<u8>::new()))
        .build(backend)
        .sql
        .into()
}

/// PostgreSQL: [`find_by_digest_sql`] for an array of digests (`$1`,
/// `bytea[]`), each row naming its digest's position in the array (from 1).
/// The point select runs once per digest, unchanged (its `LIMIT` keeps the
/// planner from turning the lot into one join, which on a small table may
/// scan it): a probe of the unique index each, as alone.
fn find_by_digests_sql(one: &str) -> Arc<str> {
    let select = one
        .strip_suffix("$1")
        .expect("the point select ends with its digest parameter");
    format!(
        r#"SELECT "found".*, "lookup"."position" AS "{position}" FROM unnest($1::bytea[]) WITH ORDINALITY AS "lookup"("digest", "position") CROSS JOIN LATERAL ({select}"lookup"."digest" LIMIT 1) AS "found""#,
        position = lanes::BATCH_POSITION,
    )
    .into()
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`). A PostgreSQL pool
    /// holds up to `max_connections`, of which up to half are kept for
    /// [`Store::find_by_digest`]; SQLite, which has one writer, is reached
    /// through one connection.
    ///
    /// # Errors
    /// If the URL is malformed or the database cannot be reached.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        Self::connect_bounded(url, max_connections, DEFAULT_TIMEOUT).await
    }

    /// [`Store::connect`], waiting at most `timeout` for the database each
    /// time: to connect, for a pooled connection, for a statement's answer
    /// (see [`bounded`]).
    ///
    /// # Errors
    /// If the URL is malformed or the database cannot be reached.
    pub async fn connect_bounded(
        url: &str,
        max_connections: u32,
        timeout: Duration,
    ) -> Result<Self> {
        if let Some(file) = sqlite_file(url) {
            create_private(&file)?;
        }
        let mut options = ConnectOptions::new(url);
        if !url.starts_with("sqlite:") {
            options.max_connections(max_connections);
        }
        options
            .connect_timeout(timeout)
            .acquire_timeout(timeout)
            // Pinging every connection before each use would double the
            // round trips of a cache miss; only one idle for a while (which
            // may have been cut meanwhile) is checked first.
            .test_before_acquire_if_idle_for(Duration::from_secs(10))
            // Statements are traced by the service itself; sqlx's own log
            // lines would only repeat them.
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(move |o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(timeout)
            })
            // The server gives up on a statement when the client does.
            .map_sqlx_postgres_opts(move |o| {
                o.options([("statement_timeout", format!("{}ms", timeout.as_millis()))])
            });
        let db = sea_orm::Database::connect(options)
            .await
            .map_err(refused_connection)?;
        // With a single connection there is none to spare for lookups.
        let find_by_digest_sql = find_by_digest_sql(db.get_database_backend());
        let lanes = (db.get_database_backend() == DbBackend::Postgres && max_connections >= 2)
            .then(|| {
                let statements = lanes::Statements {
                    many: find_by_digests_sql(&find_by_digest_sql),
                    one: Arc::clone(&find_by_digest_sql),
                };
                Arc::new(Lanes::new(
                    db.get_postgres_connection_pool().clone(),
                    statements,
                    (max_connections / 2) as usize,
                    timeout,
                ))
            });
        // Random keys, drawn from the OS per process and varied per instance.
        let origin = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::process::id(),
        );
        Ok(Store {
            lanes,
            find_by_digest_sql,
            origin: i64::from_ne_bytes(origin.to_ne_bytes()),
            db: Bounded { inner: db, timeout },
        })
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
            let txn = self.db.inner.begin().await?;
            // Migrations (an index on a large table, the wait for another
            // replica's migration) may take longer than a statement is
            // allowed at other times.
            txn.execute_unprepared("SET LOCAL statement_timeout = 0")
                .await?;
            // An arbitrary constant: "latchkey" in ASCII.
            txn.execute_unprepared("SELECT pg_advisory_xact_lock(7809615462931736953)")
                .await?;
            Migrator::up(&txn, None).await?;
            txn.commit().await?;
        } else {
            Migrator::up(&self.db.inner, None).await?;
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
        if let Some(lanes) = &self.lanes {
            lanes.release().await;
        }
        self.db.inner.clone().close().await?;
        Ok(())
    }

    /// Starts a change. Dropping the [`Txn`] without [`Txn::commit`] rolls it
    /// back.
    ///
    /// # Errors
    /// If no connection can be had.
    pub async fn begin(&self) -> Result<Txn> {
        let timeout = self.db.timeout;
        Ok(Txn {
            txn: Bounded {
                inner: bounded::bounded(timeout, self.db.inner.begin()).await?,
                timeout,
            },
            origin: self.origin,
        })
    }

    /// The token with this digest, and whether its owner is disabled, in one
    /// query.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn find_by_digest(&self, digest: &Digest) -> Result<Option<FoundToken>> {
        let row = match &self.lanes {
            Some(lanes) => lanes.lookup(digest.as_bytes()).await?,
            None => {
                let statement = Statement::from_sql_and_values(
                    self.db.get_database_backend(),
                    self.find_by_digest_sql.as_ref(),
                    [digest.as_bytes().to_vec().into()],
                );
                self.db.query_one_raw(statement).await?
            }
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let owner_disable_time: Option<i64> = row.try_get("", OWNER_DISABLE_TIME)?;
        Ok(Some(FoundToken {
            record: to_record(tokens::Model::from_query_result(&row, "")?)?,
            owner_disabled: owner_disable_time.is_some(),
        }))
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
            query = query.filter(before(tokens::Column::CreateTime, tokens::Column::Id, c));
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

    /// Every token of `owner` (for counting them by status).
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn owner_tokens(&self, owner: &str) -> Result<Vec<TokenRecord>> {
        tokens::Entity::find()
            .filter(tokens::Column::Owner.eq(owner))
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// Where a replica starting now begins reading the change log: after
    /// the last change written before `settled` (later numbers may still be
    /// filling in), or before the oldest kept; 0 for an empty log.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn change_log_start(&self, settled: Timestamp) -> Result<i64> {
        let settled_only =
            Condition::all().add(token_changes::Column::Time.lt(settled.as_micros()));
        if let Some(seq) = self
            .change_seq(token_changes::Column::Seq.max(), settled_only)
            .await?
        {
            return Ok(seq);
        }
        let oldest = self
            .change_seq(token_changes::Column::Seq.min(), Condition::all())
            .await?;
        Ok(oldest.map_or(0, |seq| seq - 1))
    }

    /// `aggregate` (MIN or MAX) of the change log's numbers over the rows
    /// `matching`; `None` if there are none.
    async fn change_seq(
        &self,
        aggregate: sea_orm::sea_query::SimpleExpr,
        matching: Condition,
    ) -> Result<Option<i64>> {
        Ok(token_changes::Entity::find()
            .select_only()
            .column_as(aggregate, "seq")
            .filter(matching)
            .into_tuple()
            .one(&self.db)
            .await?
            .flatten())
    }

    /// Up to `limit` changes numbered above `after` or among `also`, in order.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn changes_since(&self, after: i64, also: &[i64], limit: u64) -> Result<Vec<Logged>> {
        let mut wanted = Condition::any().add(token_changes::Column::Seq.gt(after));
        if !also.is_empty() {
            wanted = wanted.add(token_changes::Column::Seq.is_in(also.iter().copied()));
        }
        token_changes::Entity::find()
            .filter(wanted)
            .order_by_asc(token_changes::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| logged(row, self.origin))
            .collect()
    }

    /// Deletes changes written before `before`, except the newest, whose
    /// number tells a replica starting later where the log stands.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn prune_changes(&self, before: Timestamp) -> Result<u64> {
        let newest = self
            .change_seq(token_changes::Column::Seq.max(), Condition::all())
            .await?;
        let Some(newest) = newest else {
            return Ok(0);
        };
        let done = token_changes::Entity::delete_many()
            .filter(token_changes::Column::Time.lt(before.as_micros()))
            .filter(token_changes::Column::Seq.lt(newest))
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected)
    }

    /// PostgreSQL only: a connection of its own that waits for
    /// notifications on [`CHANGES_CHANNEL`].
    ///
    /// # Errors
    /// If the connection or the LISTEN fails.
    pub async fn change_listener(&self, url: &str) -> Result<ChangeListener> {
        let connect = async {
            let mut listener = sea_orm::sqlx::postgres::PgListener::connect(url)
                .await
                .map_err(listener_lost)?;
            listener
                .listen(CHANGES_CHANNEL)
                .await
                .map_err(listener_lost)?;
            Ok(ChangeListener { listener })
        };
        tokio::time::timeout(self.db.timeout, connect)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable(bounded::timed_out(self.db.timeout))))
    }

    /// Stores each token `(id, stored, primary)` under the primary key's
    /// digest, unless it has changed digest meanwhile; returns how many moved.
    /// One transaction: all or none.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn rekey_tokens(
        &self,
        moves: &[(Uuid, Digest, Digest)],
        key_id: &str,
    ) -> Result<u64> {
        let txn = self.begin().await?;
        let mut moved = 0;
        for (id, stored, primary) in moves {
            moved += tokens::Entity::update_many()
                .col_expr(
                    tokens::Column::Digest,
                    Expr::value(primary.as_bytes().to_vec()),
                )
                .col_expr(tokens::Column::KeyId, Expr::value(key_id))
                .filter(tokens::Column::Id.eq(*id))
                .filter(tokens::Column::Digest.eq(stored.as_bytes().to_vec()))
                .exec(&txn.txn)
                .await?
                .rows_affected;
        }
        txn.commit().await?;
        Ok(moved)
    }

    /// How many tokens are stored under each key id.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn tokens_by_key(&self) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = tokens::Entity::find()
            .select_only()
            .column(tokens::Column::KeyId)
            .column_as(tokens::Column::Id.count(), "count")
            .group_by(tokens::Column::KeyId)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, n)| (id, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Whether any token is stored, whatever its status.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn has_tokens(&self) -> Result<bool> {
        Ok(tokens::Entity::find()
            .select_only()
            .column(tokens::Column::Id)
            .into_tuple::<Uuid>()
            .one(&self.db)
            .await?
            .is_some())
    }

    /// The digests of every token of `owner` (to invalidate them).
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn owner_digests(&self, owner: &str) -> Result<Vec<Digest>> {
        let rows: Vec<Vec<u8>> = tokens::Entity::find()
            .select_only()
            .column(tokens::Column::Digest)
            .filter(tokens::Column::Owner.eq(owner))
            .into_tuple()
            .all(&self.db)
            .await?;
        rows.iter()
            .map(|d| {
                Digest::from_slice(d).ok_or_else(|| {
                    StoreError::Corrupt(anyhow::anyhow!("a token of {owner} has a bad digest"))
                })
            })
            .collect()
    }

    /// The owner's record; `None` if it has none (it is enabled).
    ///
    /// # Errors
    /// On a database fault.
    pub async fn get_owner(&self, owner: &str) -> Result<Option<OwnerRecord>> {
        Ok(owners::Entity::find_by_id(owner.to_owned())
            .one(&self.db)
            .await?
            .map(to_owner))
    }

    /// Up to `limit` events matching `filter`, newest first, strictly after
    /// `after`.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn list_events(
        &self,
        filter: &EventFilter,
        after: Option<Cursor>,
        limit: u64,
    ) -> Result<Vec<Event>> {
        let mut query = token_events::Entity::find();
        if let Some(id) = filter.token_id {
            query = query.filter(token_events::Column::TokenId.eq(id));
        }
        if let Some(owner) = &filter.owner {
            query = query.filter(token_events::Column::Owner.eq(owner.as_str()));
        }
        if let Some(c) = after {
            query = query.filter(before(
                token_events::Column::Time,
                token_events::Column::Id,
                c,
            ));
        }
        query
            .order_by_desc(token_events::Column::Time)
            .order_by_desc(token_events::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_event)
            .collect()
    }

    /// Records last-use times, many tokens per statement. A time never moves
    /// backwards: a replica flushing an older time leaves a newer one alone.
    /// Deleted tokens are skipped. Not an admin change: no event.
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
}

/// A token to insert: its record, digest and the id of the key that made it.
#[derive(Clone, Copy, Debug)]
pub struct NewRow<'a> {
    pub record: &'a TokenRecord,
    pub digest: &'a Digest,
    pub key_id: &'a str,
}

/// The PostgreSQL channel notified when changes are logged.
pub const CHANGES_CHANNEL: &str = "latchkey_changes";

/// Waits for changes logged by any replica (PostgreSQL).
pub struct ChangeListener {
    listener: sea_orm::sqlx::postgres::PgListener,
}

impl std::fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeListener").finish_non_exhaustive()
    }
}

impl ChangeListener {
    /// Waits for a notification: `true`; or for the connection to be lost
    /// and made again: `false`, since notifications sent meanwhile are gone.
    ///
    /// # Errors
    /// If the connection failed and could not be made again.
    pub async fn wait(&mut self) -> Result<bool> {
        self.listener
            .try_recv()
            .await
            .map(|n| n.is_some())
            .map_err(listener_lost)
    }
}

/// The listening connection failed: the database is unreachable to it.
fn listener_lost(e: sea_orm::sqlx::Error) -> StoreError {
    StoreError::Unavailable(DbErr::Conn(RuntimeErr::SqlxError(e.into())))
}

/// One change in progress: a database transaction. Every method that changes
/// a token or an owner is here, and so is [`Txn::insert_event`], so a change
/// and its audit event commit together. Dropped without [`Txn::commit`], it
/// rolls back.
pub struct Txn {
    txn: Bounded<DatabaseTransaction>,
    origin: i64,
}

impl Txn {
    /// # Errors
    /// If the commit fails (or gets no answer in time); then nothing of the
    /// transaction is kept, as far as this process knows.
    pub async fn commit(self) -> Result<()> {
        let timeout = self.txn.timeout;
        bounded::bounded(timeout, self.txn.inner.commit()).await?;
        Ok(())
    }

    /// Takes the owner's row (creating it, enabled, if absent) and holds it
    /// until the transaction ends: one owner's creations are serialised
    /// across every replica, so counting them for the limits is exact. On
    /// SQLite the write also takes the database's write lock up front.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn lock_owner(&self, owner: &str, now: Timestamp) -> Result<OwnerRecord> {
        let row = owners::Entity::insert(owners::ActiveModel {
            owner: Set(owner.to_owned()),
            disable_time: Set(None),
            disable_reason: Set(String::new()),
            update_time: Set(now.as_micros()),
        })
        .on_conflict(
            OnConflict::column(owners::Column::Owner)
                .update_column(owners::Column::Owner)
                .to_owned(),
        )
        .exec_with_returning(&self.txn)
        .await?;
        Ok(to_owner(row))
    }

    /// The owner's tokens created after `since` (CREATED events, so deleted
    /// tokens still count).
    ///
    /// # Errors
    /// On a database fault.
    pub async fn creations_since(&self, owner: &str, since: Timestamp) -> Result<Creations> {
        let row: Option<(i64, Option<i64>)> = token_events::Entity::find()
            .select_only()
            .column_as(Expr::col(token_events::Column::Id).count(), "count")
            .column_as(Expr::col(token_events::Column::Time).min(), "oldest")
            .filter(token_events::Column::Owner.eq(owner))
            .filter(token_events::Column::Kind.eq(EventKind::Created.as_str()))
            .filter(token_events::Column::Time.gt(since.as_micros()))
            .into_tuple()
            .one(&self.txn)
            .await?;
        Ok(row
            .map(|(count, oldest)| Creations {
                count: u64::try_from(count).unwrap_or(0),
                oldest: oldest.map(Timestamp::from_micros),
            })
            .unwrap_or_default())
    }

    /// The owner's ACTIVE tokens at `now`: every secret that works, those a
    /// renewal replaced but whose grace period runs yet included.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn count_active(&self, owner: &str, now: Timestamp) -> Result<u64> {
        Ok(tokens::Entity::find()
            .filter(tokens::Column::Owner.eq(owner))
            .filter(status_condition(Status::Active, now))
            .count(&self.txn)
            .await?)
    }

    /// # Errors
    /// On a database fault, or if the digest or id already exists.
    pub async fn insert_token(&self, row: &NewRow<'_>) -> Result<()> {
        tokens::Entity::insert(to_active_model(row))
            .exec_without_returning(&self.txn)
            .await?;
        Ok(())
    }

    /// Inserts many tokens, [`BULK_CHUNK`] rows per statement.
    ///
    /// # Errors
    /// On a database fault or a duplicate digest.
    pub async fn insert_tokens(&self, rows: &[NewRow<'_>]) -> Result<()> {
        for chunk in rows.chunks(BULK_CHUNK) {
            tokens::Entity::insert_many(chunk.iter().map(to_active_model))
                .exec_without_returning(&self.txn)
                .await?;
        }
        Ok(())
    }

    /// # Errors
    /// On a database fault.
    pub async fn insert_event(&self, event: &Event) -> Result<()> {
        token_events::Entity::insert(event_model(event))
            .exec_without_returning(&self.txn)
            .await?;
        Ok(())
    }

    /// Appends `changes` to the change log. On PostgreSQL, replicas
    /// listening on [`CHANGES_CHANNEL`] are woken when (and only if) the
    /// transaction commits.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn log_changes(&self, changes: &[Change], now: Timestamp) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        for chunk in changes.chunks(BULK_CHUNK) {
            token_changes::Entity::insert_many(
                chunk.iter().map(|c| change_model(c, now, self.origin)),
            )
            .exec_without_returning(&self.txn)
            .await?;
        }
        if self.txn.get_database_backend() == DbBackend::Postgres {
            self.txn
                .execute_unprepared(&format!("NOTIFY {CHANGES_CHANNEL}"))
                .await?;
        }
        Ok(())
    }

    /// Inserts many events, [`BULK_CHUNK`] rows per statement.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn insert_events(&self, events: &[Event]) -> Result<()> {
        for chunk in events.chunks(BULK_CHUNK) {
            token_events::Entity::insert_many(chunk.iter().map(event_model))
                .exec_without_returning(&self.txn)
                .await?;
        }
        Ok(())
    }

    /// Reads a token inside the transaction.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn get_token(&self, id: Uuid) -> Result<Option<StoredToken>> {
        tokens::Entity::find_by_id(id)
            .one(&self.txn)
            .await?
            .map(stored)
            .transpose()
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
            update = update.col_expr(tokens::Column::Metadata, Expr::value(encode_map(metadata)));
        }
        let rows = update
            .filter(tokens::Column::Id.eq(id))
            .exec_with_returning(&self.txn)
            .await?;
        first_stored(rows)
    }

    /// Marks the token revoked if it is not already. Returns it if this call
    /// revoked it; `None` if it is absent or was already revoked.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn revoke_token(
        &self,
        id: Uuid,
        reason: &str,
        now: Timestamp,
    ) -> Result<Option<StoredToken>> {
        let rows = revocation(id, reason, now)
            .exec_with_returning(&self.txn)
            .await?;
        first_stored(rows)
    }

    /// Clears a revocation, restarts the idle clock and cuts the token from
    /// the self-renewals before it, provided the token
    /// was not replaced by a renewal and has not expired at `now`. Returns
    /// the token if it changed; `None` if it is absent or no longer qualifies
    /// (the caller reads it again).
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn restore_token(&self, id: Uuid, now: Timestamp) -> Result<Option<StoredToken>> {
        let rows = tokens::Entity::update_many()
            .col_expr(tokens::Column::RevokeTime, Expr::value(Option::<i64>::None))
            .col_expr(tokens::Column::RevokeReason, Expr::value(String::new()))
            .col_expr(tokens::Column::IdleResetTime, Expr::value(now.as_micros()))
            // A restored token starts a renewal chain of its own: secrets
            // that came before it are no longer part of it.
            .col_expr(tokens::Column::SelfRenewed, Expr::value(false))
            .col_expr(tokens::Column::UpdateTime, Expr::value(now.as_micros()))
            .filter(tokens::Column::Id.eq(id))
            .filter(tokens::Column::ReplacedBy.is_null())
            .filter(not_expired(now))
            .exec_with_returning(&self.txn)
            .await?;
        first_stored(rows)
    }

    /// Links the old token of a renewal to its replacement and retires it,
    /// provided it is neither revoked nor already replaced. Returns it if
    /// this call changed it; `None` otherwise (the caller reads it again).
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn replace_token(
        &self,
        id: Uuid,
        replaced_by: Uuid,
        retirement: Retirement,
        now: Timestamp,
    ) -> Result<Option<StoredToken>> {
        let mut update = tokens::Entity::update_many()
            .col_expr(tokens::Column::ReplacedBy, Expr::value(replaced_by))
            .col_expr(tokens::Column::UpdateTime, Expr::value(now.as_micros()));
        update = match retirement {
            Retirement::RevokeNow => update
                .col_expr(tokens::Column::RevokeTime, Expr::value(now.as_micros()))
                .col_expr(tokens::Column::RevokeReason, Expr::value("renewed")),
            Retirement::ExpireAt(t) => {
                update.col_expr(tokens::Column::ExpireTime, Expr::value(t.as_micros()))
            }
        };
        let rows = update
            .filter(tokens::Column::Id.eq(id))
            .filter(tokens::Column::RevokeTime.is_null())
            .filter(tokens::Column::ReplacedBy.is_null())
            .exec_with_returning(&self.txn)
            .await?;
        first_stored(rows)
    }

    /// Points `id`'s renewal link from `from` to `to` (a retried renewal
    /// replacing an unused replacement). Returns the token if this call
    /// changed it; `None` if it is absent or no longer replaced by `from`.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn relink_token(
        &self,
        id: Uuid,
        from: Uuid,
        to: Uuid,
        now: Timestamp,
    ) -> Result<Option<StoredToken>> {
        let rows = tokens::Entity::update_many()
            .col_expr(tokens::Column::ReplacedBy, Expr::value(to))
            .col_expr(tokens::Column::UpdateTime, Expr::value(now.as_micros()))
            .filter(tokens::Column::Id.eq(id))
            .filter(tokens::Column::ReplacedBy.eq(from))
            .exec_with_returning(&self.txn)
            .await?;
        first_stored(rows)
    }

    /// Revokes the token provided it was never used (no recorded use) and
    /// is neither revoked nor replaced. Returns it if this call revoked it.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn revoke_unused_token(
        &self,
        id: Uuid,
        reason: &str,
        now: Timestamp,
    ) -> Result<Option<StoredToken>> {
        let rows = revocation(id, reason, now)
            .filter(tokens::Column::LastUsedTime.is_null())
            .filter(tokens::Column::ReplacedBy.is_null())
            .exec_with_returning(&self.txn)
            .await?;
        first_stored(rows)
    }

    /// Deletes the token; returns what it was, or `None` if there was none.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn delete_token(&self, id: Uuid) -> Result<Option<StoredToken>> {
        tokens::Entity::delete_by_id(id)
            .exec_with_returning(&self.txn)
            .await?
            .map(stored)
            .transpose()
    }

    /// Deletes every token of `owner`; returns what they were.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn delete_owner_tokens(&self, owner: &str) -> Result<Vec<StoredToken>> {
        tokens::Entity::delete_many()
            .filter(tokens::Column::Owner.eq(owner))
            .exec_with_returning(&self.txn)
            .await?
            .into_iter()
            .map(stored)
            .collect()
    }

    /// Disables (`Some((time, reason))`) or enables (`None`) the owner.
    /// Returns its record if this call changed it; `None` if it already was
    /// in that state (a disabled owner keeps its first disable time and
    /// reason).
    ///
    /// # Errors
    /// On a database fault.
    pub async fn set_owner_disabled(
        &self,
        owner: &str,
        disable: Option<(Timestamp, &str)>,
        now: Timestamp,
    ) -> Result<Option<OwnerRecord>> {
        let current = self.lock_owner(owner, now).await?;
        if current.is_disabled() == disable.is_some() {
            return Ok(None);
        }
        let (time, reason) = match disable {
            Some((t, r)) => (Some(t.as_micros()), r.to_owned()),
            None => (None, String::new()),
        };
        let rows = owners::Entity::update_many()
            .col_expr(owners::Column::DisableTime, Expr::value(time))
            .col_expr(owners::Column::DisableReason, Expr::value(reason))
            .col_expr(owners::Column::UpdateTime, Expr::value(now.as_micros()))
            .filter(owners::Column::Owner.eq(owner))
            .exec_with_returning(&self.txn)
            .await?;
        Ok(rows.into_iter().next().map(to_owner))
    }
}

/// Rows strictly after cursor `c` in newest-first `(time, id)` order.
fn before<C: ColumnTrait>(time: C, id: C, c: Cursor) -> Condition {
    let t = c.time.as_micros();
    Condition::any()
        .add(time.lt(t))
        .add(Condition::all().add(time.eq(t)).add(id.lt(c.id)))
}

fn not_expired(now: Timestamp) -> Condition {
    Condition::any()
        .add(tokens::Column::ExpireTime.is_null())
        .add(tokens::Column::ExpireTime.gt(now.as_micros()))
}

/// `column + idle_timeout`: when the token goes idle, counting from `column`.
fn idle_deadline(column: tokens::Column) -> Expr {
    Expr::col(column).add(Expr::col(tokens::Column::IdleTimeout))
}

/// SQL for "idle_timeout has passed since creation, last use and the idle
/// clock's restart", mirroring [`TokenRecord::inactive_time`]. A NULL last
/// use or restart does not count.
fn idle(now: Timestamp) -> Condition {
    let now = now.as_micros();
    Condition::all()
        .add(tokens::Column::IdleTimeout.is_not_null())
        .add(idle_deadline(tokens::Column::CreateTime).lte(now))
        .add(
            Condition::any()
                .add(tokens::Column::LastUsedTime.is_null())
                .add(idle_deadline(tokens::Column::LastUsedTime).lte(now)),
        )
        .add(
            Condition::any()
                .add(tokens::Column::IdleResetTime.is_null())
                .add(idle_deadline(tokens::Column::IdleResetTime).lte(now)),
        )
}

/// The negation of [`idle`], spelled out so that NULLs cannot make a token
/// both or neither.
fn not_idle(now: Timestamp) -> Condition {
    let now = now.as_micros();
    Condition::any()
        .add(tokens::Column::IdleTimeout.is_null())
        .add(idle_deadline(tokens::Column::CreateTime).gt(now))
        .add(
            Condition::all()
                .add(tokens::Column::LastUsedTime.is_not_null())
                .add(idle_deadline(tokens::Column::LastUsedTime).gt(now)),
        )
        .add(
            Condition::all()
                .add(tokens::Column::IdleResetTime.is_not_null())
                .add(idle_deadline(tokens::Column::IdleResetTime).gt(now)),
        )
}

/// SQL for "has status `s` at `now`", mirroring [`TokenRecord::status`].
fn status_condition(s: Status, now: Timestamp) -> Condition {
    let not_revoked = || tokens::Column::RevokeTime.is_null();
    match s {
        Status::Revoked => Condition::all().add(tokens::Column::RevokeTime.is_not_null()),
        Status::Expired => Condition::all()
            .add(not_revoked())
            .add(tokens::Column::ExpireTime.lte(now.as_micros())),
        Status::Inactive => Condition::all()
            .add(not_revoked())
            .add(not_expired(now))
            .add(idle(now)),
        Status::Active => Condition::all()
            .add(not_revoked())
            .add(not_expired(now))
            .add(not_idle(now)),
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

/// A map of strings as a JSON object (metadata, event detail).
fn encode_map(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_owned())
}

fn to_owner(m: owners::Model) -> OwnerRecord {
    OwnerRecord {
        owner: m.owner,
        disable_time: m.disable_time.map(Timestamp::from_micros),
        reason: m.disable_reason,
    }
}

fn to_event(m: token_events::Model) -> Result<Event> {
    let corrupt = |what: String| StoreError::Corrupt(anyhow::anyhow!(what));
    Ok(Event {
        kind: EventKind::parse(&m.kind)
            .ok_or_else(|| corrupt(format!("event {} has unknown kind {:?}", m.id, m.kind)))?,
        detail: serde_json::from_str(&m.detail)
            .map_err(|_| corrupt(format!("event {} has a corrupt detail", m.id)))?,
        id: m.id,
        time: Timestamp::from_micros(m.time),
        token_id: m.token_id,
        owner: m.owner,
        actor: m.actor,
    })
}

fn change_model(change: &Change, now: Timestamp, origin: i64) -> token_changes::ActiveModel {
    let (digest, owner) = match change {
        Change::Token(d) => (Some(d.as_bytes().to_vec()), None),
        Change::Owner(o) => (None, Some(o.clone())),
    };
    token_changes::ActiveModel {
        seq: sea_orm::ActiveValue::NotSet,
        time: Set(now.as_micros()),
        digest: Set(digest),
        owner: Set(owner),
        origin: Set(origin),
    }
}

fn logged(row: token_changes::Model, origin: i64) -> Result<Logged> {
    let change = match (row.digest, row.owner) {
        (Some(d), None) => Change::Token(Digest::from_slice(&d).ok_or_else(|| {
            StoreError::Corrupt(anyhow::anyhow!("change {} has a bad digest", row.seq))
        })?),
        (None, Some(owner)) => Change::Owner(owner),
        _ => {
            return Err(StoreError::Corrupt(anyhow::anyhow!(
                "change {} names neither a token nor an owner",
                row.seq
            )));
        }
    };
    Ok(Logged {
        seq: row.seq,
        change,
        time: Timestamp::from_micros(row.time),
        ours: row.origin == origin,
    })
}

fn event_model(event: &Event) -> token_events::ActiveModel {
    token_events::ActiveModel {
        id: Set(event.id),
        time: Set(event.time.as_micros()),
        kind: Set(event.kind.as_str().to_owned()),
        token_id: Set(event.token_id),
        owner: Set(event.owner.clone()),
        actor: Set(event.actor.clone()),
        detail: Set(encode_map(&event.detail)),
    }
}

fn to_active_model(row: &NewRow<'_>) -> tokens::ActiveModel {
    let NewRow {
        record: r,
        digest,
        key_id,
    } = *row;
    tokens::ActiveModel {
        id: Set(r.id),
        owner: Set(r.owner.clone()),
        name: Set(r.name.clone()),
        description: Set(r.description.clone()),
        scopes: Set(r.scopes.join(" ")),
        metadata: Set(encode_map(&r.metadata)),
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
        idle_reset_time: Set(r.idle_reset_time.map(Timestamp::as_micros)),
        self_renewed: Set(r.self_renewed),
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
        idle_reset_time: m.idle_reset_time.map(Timestamp::from_micros),
        self_renewed: m.self_renewed,
    })
}

/// A connection the database refused (no such database, wrong password),
/// said in the database's own words and what to do, without the driver's
/// source position; any other error as it is.
fn refused_connection(err: DbErr) -> StoreError {
    let refusal = match &err {
        DbErr::Conn(RuntimeErr::SqlxError(e)) => match e.as_ref() {
            sea_orm::sqlx::Error::Database(db) => Some((db.message().to_owned(), db.code())),
            _ => None,
        },
        _ => None,
    };
    let Some((message, code)) = refusal else {
        return err.into();
    };
    let hint = match code.as_deref() {
        Some("3D000") => {
            ": create it (CREATE DATABASE …) or point LATCHKEY_DATABASE_URL at one that exists"
        }
        Some("28P01" | "28000") => ": check the user and password in LATCHKEY_DATABASE_URL",
        _ => "",
    };
    StoreError::Database(DbErr::Custom(format!(
        "the database refused the connection: {message}{hint}"
    )))
}

/// Revokes token `id` with `reason` at `now`, unless it is revoked already.
fn revocation(id: Uuid, reason: &str, now: Timestamp) -> sea_orm::UpdateMany<tokens::Entity> {
    tokens::Entity::update_many()
        .col_expr(tokens::Column::RevokeTime, Expr::value(now.as_micros()))
        .col_expr(tokens::Column::RevokeReason, Expr::value(reason.to_owned()))
        .col_expr(tokens::Column::UpdateTime, Expr::value(now.as_micros()))
        .filter(tokens::Column::Id.eq(id))
        .filter(tokens::Column::RevokeTime.is_null())
}

/// The file of a `sqlite:` URL, or `None` for an in-memory database.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.split('&').any(|kv| kv == "mode=memory") {
        None
    } else {
        Some(std::path::PathBuf::from(path))
    }
}

/// Creates the SQLite file readable by its owner only (0600), if it does not
/// exist yet; SQLite gives its `-wal` and `-shm` files the database's mode.
/// The umask would otherwise leave token digests, owners and the audit trail
/// readable by every local user.
fn create_private(file: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(DbErr::Custom(format!(
            "creating the SQLite database {}: {e}",
            file.display()
        )))),
    }
}
