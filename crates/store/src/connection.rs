//! [`Store`], the database behind a connection pool (connect, migrate,
//! close), and [`Txn`], one change in progress. The queries on them are in
//! the module of the table they touch.

use std::sync::Arc;
use std::time::Duration;

use migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, TransactionTrait,
};

use crate::bounded::{self, Bounded};
use crate::entity::meta;
use crate::error::{Result, StoreError, refused_connection};
use crate::lanes::{self, Lanes};
use crate::lookup;

/// The database, behind a connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Bounded<DatabaseConnection>,
    /// PostgreSQL only: connections kept for [`Store::find_by_digest`].
    pub(crate) lanes: Option<Arc<Lanes>>,
    /// [`Store::find_by_digest`]'s statement, built once: a cache miss
    /// should cost the database round trip, not query building.
    pub(crate) find_by_digest_sql: Arc<str>,
    /// Drawn at connect: marks the change-log rows this process writes.
    pub(crate) origin: i64,
}

/// How long the database may take to answer, by default: to connect, to
/// give a connection from the pool, to answer a statement.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

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
        let find_by_digest_sql = lookup::find_by_digest_sql(db.get_database_backend());
        let lanes = (db.get_database_backend() == DbBackend::Postgres && max_connections >= 2)
            .then(|| {
                let statements = lanes::Statements {
                    many: lookup::find_by_digests_sql(&find_by_digest_sql),
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

/// One change in progress: a database transaction. Every method that changes
/// a token or an owner is here, and so is [`Txn::insert_event`], so a change
/// and its audit event commit together. Dropped without [`Txn::commit`], it
/// rolls back.
pub struct Txn {
    pub(crate) txn: Bounded<DatabaseTransaction>,
    pub(crate) origin: i64,
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
