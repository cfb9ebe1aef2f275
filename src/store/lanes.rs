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

pub struct Lanes {
    pool: PgPool,
    /// One permit per lane: waiting lookups queue here, first come first
    /// served, for whichever lane frees first.
    turns: Semaphore,
    /// Free lanes; a lookup holding a permit always finds one.
    free: std::sync::Mutex<Vec<Lane>>,
    count: u32,
    /// How long a lookup may wait for a lane (the pool's acquire timeout).
    wait: Duration,
}

#[derive(Default)]
struct Lane {
    conn: Option<PoolConnection<Postgres>>,
    used: Option<Instant>,
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
            free: std::sync::Mutex::new((0..count).map(|_| Lane::default()).collect()),
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
        let mut lane = self.take();
        let held = lane
            .conn
            .take()
            .filter(|_| lane.used.is_some_and(|at| at.elapsed() <= IDLE_LIMIT));
        let result = match held {
            Some(conn) => match run(conn, sql, param).await {
                Ok(done) => Ok(done),
                // A held connection may have been cut since its last use (a
                // database restart, a proxy's idle timeout): one more try, on
                // a connection from the pool.
                Err(_) => self.run_fresh(sql, param).await,
            },
            None => self.run_fresh(sql, param).await,
        };
        let row = result.map(|(conn, row)| {
            lane.conn = Some(conn);
            lane.used = Some(Instant::now());
            row
        });
        self.put(lane);
        Ok(row?.map(QueryResult::from))
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
        // Waits (a while) for lookups under way to put their lanes back.
        let _all = tokio::time::timeout(self.wait, self.turns.acquire_many(self.count)).await;
        for lane in self.free_lanes().iter_mut() {
            lane.conn = None;
        }
    }

    fn take(&self) -> Lane {
        self.free_lanes().pop().unwrap_or_default()
    }

    /// The lane last used is the first taken again, so under light load a
    /// few lanes stay busy and the rest, once idle, give their connections
    /// back here.
    fn put(&self, lane: Lane) {
        let now = Instant::now();
        let mut free = self.free_lanes();
        for idle in free.iter_mut() {
            if idle.used.is_some_and(|at| now - at > IDLE_LIMIT) {
                idle.conn = None;
                idle.used = None;
            }
        }
        free.push(lane);
    }

    fn free_lanes(&self) -> std::sync::MutexGuard<'_, Vec<Lane>> {
        // A panic while holding this lock cannot leave the list invalid.
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
