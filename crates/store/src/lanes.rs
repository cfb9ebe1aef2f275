//! Connections held for Verify's cache misses on PostgreSQL, and the misses
//! that share them.
//!
//! sqlx pings a connection (a full round trip, Sync and ReadyForQuery) each
//! time one goes back to its pool, so a lookup through the pool costs two
//! round trips. A lane keeps its connection between lookups and pays only the
//! query's own. Lanes take their connections from the shared pool, lazily;
//! a lane idle for [`IDLE_LIMIT`] gives its connection back, and a lookup
//! that fails on a held connection is tried once more on one from the pool
//! (which closes the failed one if it is broken).
//!
//! Misses queue for the lanes, and whichever lookup gets the next free lane
//! takes every digest waiting then (up to [`MAX_BATCH`]) and sends them in
//! one statement. It pairs each digest, unnested with its position, with the
//! token of that digest through the unique index: the database probes the
//! index once per digest, exactly as a lookup of each alone would, but the
//! batch pays one round trip, one exchange of messages and one reply. Under
//! light load a batch is one digest, sent as the plain point select.
//!
//! A lookup whose digest went out with another's batch only waits for its
//! answer. And a new miss first lets the tasks woken with it run, so that
//! misses arriving together (those paced by the lookup bound wake on the
//! same timer tick) are all queued, and share a statement, even when lanes
//! are free.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::postgres::PgRow;
use sea_orm::sqlx::{self, AssertSqlSafe, PgPool, Postgres, Row};
use sea_orm::{ConnAcquireErr, DbErr, QueryResult, RuntimeErr};
use tokio::sync::{Semaphore, oneshot};

/// A lane idle this long gives its connection back rather than trust it.
const IDLE_LIMIT: Duration = Duration::from_secs(10);

/// The most digests one statement looks up.
pub const MAX_BATCH: usize = 64;

/// The column of a batch's rows naming the digest's position (from 1).
pub const BATCH_POSITION: &str = "lookup_position";

/// The statements a lane sends: `one` takes a digest (`bytea`), `many` an
/// array of them (`bytea[]`) and names each row's position in it in
/// [`BATCH_POSITION`]; both return at most one row per digest.
#[derive(Debug)]
pub struct Statements {
    pub one: Arc<str>,
    pub many: Arc<str>,
}

/// What one round trip asks.
enum Lookup {
    One(Vec<u8>),
    Many(Vec<Vec<u8>>),
}

/// A connection that answered cleanly, and its rows. A connection whose
/// query failed is dropped: the pool tests it before taking it back.
type Answer = (PoolConnection<Postgres>, Vec<PgRow>);

async fn run(
    mut conn: PoolConnection<Postgres>,
    statements: &Statements,
    lookup: &Lookup,
) -> Result<Answer, DbErr> {
    let rows = match lookup {
        Lookup::One(digest) => sqlx::query(AssertSqlSafe(Arc::clone(&statements.one)))
            .bind(digest.as_slice())
            .fetch_optional(&mut *conn)
            .await
            .map(|row| row.into_iter().collect()),
        Lookup::Many(digests) => {
            sqlx::query(AssertSqlSafe(Arc::clone(&statements.many)))
                .bind(digests.as_slice())
                .fetch_all(&mut *conn)
                .await
        }
    }
    .map_err(|err| DbErr::Query(RuntimeErr::SqlxError(err.into())))?;
    Ok((conn, rows))
}

/// A connection kept after a clean answer, and when that was.
type Held = (PoolConnection<Postgres>, Instant);

/// Misses not yet taken into a batch, oldest first.
#[derive(Default)]
struct Queue {
    misses: VecDeque<Waiting>,
    next_ticket: u64,
}

/// A miss waiting for a lane.
struct Waiting {
    /// Ascending in queue order: the queue is drained from the front, so a
    /// miss is still queued exactly when the front's ticket is not later.
    ticket: u64,
    digest: Vec<u8>,
    reply: oneshot::Sender<Result<Option<PgRow>, DbErr>>,
}

pub struct Lanes {
    pool: PgPool,
    statements: Statements,
    /// One permit per lane: lookups wait here, first come first served, for
    /// whichever lane frees first.
    turns: Semaphore,
    waiting: std::sync::Mutex<Queue>,
    /// Connections kept between lookups, the latest used last; never more
    /// than the lanes, since each batch puts back at most the one it took.
    held: std::sync::Mutex<Vec<Held>>,
    count: u32,
    /// How long a lookup may wait for its answer, and a batch for its
    /// statement's (`database_timeout`).
    wait: Duration,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("free", &self.turns.available_permits())
            .finish_non_exhaustive()
    }
}

/// Locks `mutex`: a panic while holding one of the lanes' locks cannot leave
/// what it guards invalid.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Lanes {
    pub fn new(pool: PgPool, statements: Statements, count: usize, wait: Duration) -> Self {
        let count = count.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Lanes {
            pool,
            statements,
            turns: Semaphore::new(count),
            waiting: std::sync::Mutex::default(),
            held: std::sync::Mutex::new(Vec::with_capacity(count)),
            count: u32::try_from(count).unwrap_or(u32::MAX),
            wait,
        }
    }

    /// The row for `digest`, if any.
    ///
    /// # Errors
    /// As the pool's: `ConnectionAcquire` if no answer came in time, `Conn`
    /// if a connection could not be opened, `Query` if the query failed.
    pub async fn lookup(&self, digest: &[u8]) -> Result<Option<QueryResult>, DbErr> {
        let (mut ticket, mut answer) = self.enqueue(digest);
        let deadline = tokio::time::sleep(self.wait);
        tokio::pin!(deadline);
        // Misses woken in the same tick queue before any takes a lane.
        tokio::task::yield_now().await;
        loop {
            // Once another lane's batch has taken this digest, competing for
            // a lane would only take (and give back) free ones in a loop.
            let queued = self.is_queued(ticket);
            tokio::select! {
                biased;
                answered = &mut answer => match answered {
                    Ok(row) => return Ok(row?.map(QueryResult::from)),
                    // The batch was dropped unanswered: the lookup running it
                    // was cancelled (its caller went away). Queue again.
                    Err(_) => (ticket, answer) = self.enqueue(digest),
                },
                turn = self.turns.acquire(), if queued => {
                    let _turn = turn.map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed))?;
                    // This lookup's own digest may have gone out with another
                    // lane's batch meanwhile; the batch taken here then holds
                    // later ones (or none), and the answer comes either way.
                    self.serve_batch().await;
                }
                () = &mut deadline => {
                    return Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout));
                }
            }
        }
    }

    fn enqueue(&self, digest: &[u8]) -> (u64, oneshot::Receiver<Result<Option<PgRow>, DbErr>>) {
        let (reply, answer) = oneshot::channel();
        let mut queue = lock(&self.waiting);
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.misses.push_back(Waiting {
            ticket,
            digest: digest.to_vec(),
            reply,
        });
        (ticket, answer)
    }

    /// Whether the miss with `ticket` is still waiting for a batch.
    fn is_queued(&self, ticket: u64) -> bool {
        lock(&self.waiting)
            .misses
            .front()
            .is_some_and(|front| front.ticket <= ticket)
    }

    /// Takes the misses waiting now and answers them with one statement.
    async fn serve_batch(&self) {
        let batch: Vec<Waiting> = {
            let misses = &mut lock(&self.waiting).misses;
            let taken = misses.len().min(MAX_BATCH);
            misses
                .drain(..taken)
                // A lookup that gave up waiting needs no answer.
                .filter(|w| !w.reply.is_closed())
                .collect()
        };
        let (digests, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|w| (w.digest, w.reply)).unzip();
        let lookup = match <[Vec<u8>; 1]>::try_from(digests) {
            Ok([digest]) => Lookup::One(digest),
            Err(digests) if digests.is_empty() => return,
            Err(digests) => Lookup::Many(digests),
        };
        let mut replies: Vec<Option<_>> = replies.into_iter().map(Some).collect();
        // A connection whose database stopped answering must not hold this
        // lane (and the lookups queued behind it) past the bound.
        let answered = tokio::time::timeout(self.wait, self.query(&lookup))
            .await
            .unwrap_or_else(|_| Err(super::bounded::timed_out(self.wait)));
        match answered {
            Ok(rows) => {
                for row in rows {
                    let at = match lookup {
                        Lookup::One(_) => Some(0),
                        Lookup::Many(_) => row
                            .try_get::<i64, _>(BATCH_POSITION)
                            .ok()
                            .and_then(|p| usize::try_from(p - 1).ok()),
                    };
                    if let Some(reply) = at.and_then(|at| replies.get_mut(at)?.take()) {
                        // A receiver gone has stopped waiting: nothing to do.
                        let _ = reply.send(Ok(Some(row)));
                    }
                }
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Ok(None));
                }
            }
            Err(err) => {
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Runs `lookup` on a held connection, or on one from the pool.
    async fn query(&self, lookup: &Lookup) -> Result<Vec<PgRow>, DbErr> {
        let (conn, rows) = match self.take() {
            Some(conn) => match run(conn, &self.statements, lookup).await {
                Ok(done) => done,
                // A held connection may have been cut since its last use (a
                // database restart, a proxy's idle timeout): one more try, on
                // a connection from the pool.
                Err(_) => self.run_fresh(lookup).await?,
            },
            None => self.run_fresh(lookup).await?,
        };
        self.put(conn);
        Ok(rows)
    }

    async fn run_fresh(&self, lookup: &Lookup) -> Result<Answer, DbErr> {
        let conn = self.pool.acquire().await.map_err(|err| match err {
            sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            // Opening a connection failed: unreachable, whatever the reason.
            err => DbErr::Conn(RuntimeErr::SqlxError(err.into())),
        })?;
        run(conn, &self.statements, lookup).await
    }

    /// Gives every held connection back to the pool (before it closes).
    pub async fn release(&self) {
        // Waits (a while) for lookups under way to put theirs back.
        let _all = tokio::time::timeout(self.wait, self.turns.acquire_many(self.count)).await;
        lock(&self.held).clear();
    }

    /// The connection used last, unless it has sat idle too long.
    fn take(&self) -> Option<PoolConnection<Postgres>> {
        let (conn, at) = lock(&self.held).pop()?;
        (at.elapsed() <= IDLE_LIMIT).then_some(conn)
    }

    /// The connection used last is the first taken again, so under light
    /// load a few stay busy and the rest, once idle, go back to the pool
    /// here.
    fn put(&self, conn: PoolConnection<Postgres>) {
        let now = Instant::now();
        let mut held = lock(&self.held);
        held.retain(|(_, at)| now - *at <= IDLE_LIMIT);
        held.push((conn, now));
    }
}
