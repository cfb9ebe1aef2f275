//! Connections held for Verify's cache misses on PostgreSQL.
//!
//! sqlx pings a connection (a full round trip, Sync and ReadyForQuery) each
//! time one goes back to its pool, so a lookup through the pool costs two
//! round trips. A lane keeps its connection between lookups and pays only the
//! query's own. Lanes take their connections from the shared pool, lazily;
//! a lane idle for [`IDLE_LIMIT`] gives its connection back, and a lookup
//! that fails on a held connection is tried once more on one from the pool
//! (which closes the failed one if it is broken).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::postgres::PgRow;
use sea_orm::sqlx::{self, AssertSqlSafe, PgPool, Postgres};
use sea_orm::{ConnAcquireErr, DbErr, QueryResult, RuntimeErr};
use tokio::sync::Semaphore;

/// A lane idle this long gives its connection back rather than trust it.
const IDLE_LIMIT: Duration = Duration::from_secs(10);

/// A connection that answered cleanly, and its answer. A connection whose
/// query failed is dropped: the pool tests it before taking it back.
type Answer = (PoolConnection<Postgres>, Option<PgRow>);

async fn run(
    mut conn: PoolConnection<Postgres>,
    sql: &Arc<str>,
    param: &[u8],
) -> Result<Answer, DbErr> {
    let row = sqlx::query(AssertSqlSafe(Arc::clone(sql)))
        .bind(param)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|err| DbErr::Query(RuntimeErr::SqlxError(err.into())))?;
    Ok((conn, row))
}

/// A connection kept after a clean answer, and when that was.
type Held = (PoolConnection<Postgres>, Instant);

pub struct Lanes {
    pool: PgPool,
    /// One permit per lane: waiting lookups queue here, first come first
    /// served, for whichever lane frees first.
    turns: Semaphore,
    /// Connections kept between lookups, the latest used last; never more
    /// than the lanes, since each lookup puts back at most the one it took.
    held: std::sync::Mutex<Vec<Held>>,
    count: u32,
    /// How long a lookup may wait for a lane (the pool's acquire timeout).
    wait: Duration,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("free", &self.turns.available_permits())
            .finish_non_exhaustive()
    }
}

impl Lanes {
    pub fn new(pool: PgPool, count: usize, wait: Duration) -> Self {
        let count = count.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Lanes {
            pool,
            turns: Semaphore::new(count),
            held: std::sync::Mutex::new(Vec::with_capacity(count)),
            count: u32::try_from(count).unwrap_or(u32::MAX),
            wait,
        }
    }

    /// Runs `sql` with one bytea parameter; at most one row is expected.
    ///
    /// # Errors
    /// As the pool's: `ConnectionAcquire` if no lane or connection could be
    /// had in time, `Conn` if a connection could not be opened, `Query` if
    /// the query failed.
    pub async fn query_one(
        &self,
        sql: &Arc<str>,
        param: &[u8],
    ) -> Result<Option<QueryResult>, DbErr> {
        let _turn = tokio::time::timeout(self.wait, self.turns.acquire())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))?;
        let (conn, row) = match self.take() {
            Some(conn) => match run(conn, sql, param).await {
                Ok(done) => done,
                // A held connection may have been cut since its last use (a
                // database restart, a proxy's idle timeout): one more try, on
                // a connection from the pool.
                Err(_) => self.run_fresh(sql, param).await?,
            },
            None => self.run_fresh(sql, param).await?,
        };
        self.put(conn);
        Ok(row.map(QueryResult::from))
    }

    async fn run_fresh(&self, sql: &Arc<str>, param: &[u8]) -> Result<Answer, DbErr> {
        let conn = self.pool.acquire().await.map_err(|err| match err {
            sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            // Opening a connection failed: unreachable, whatever the reason.
            err => DbErr::Conn(RuntimeErr::SqlxError(err.into())),
        })?;
        run(conn, sql, param).await
    }

    /// Gives every held connection back to the pool (before it closes).
    pub async fn release(&self) {
        // Waits (a while) for lookups under way to put theirs back.
        let _all = tokio::time::timeout(self.wait, self.turns.acquire_many(self.count)).await;
        self.held_connections().clear();
    }

    /// The connection used last, unless it has sat idle too long.
    fn take(&self) -> Option<PoolConnection<Postgres>> {
        let (conn, at) = self.held_connections().pop()?;
        (at.elapsed() <= IDLE_LIMIT).then_some(conn)
    }

    /// The connection used last is the first taken again, so under light
    /// load a few stay busy and the rest, once idle, go back to the pool
    /// here.
    fn put(&self, conn: PoolConnection<Postgres>) {
        let now = Instant::now();
        let mut held = self.held_connections();
        held.retain(|(_, at)| now - *at <= IDLE_LIMIT);
        held.push((conn, now));
    }

    fn held_connections(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        // A panic while holding this lock cannot leave the list invalid.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
