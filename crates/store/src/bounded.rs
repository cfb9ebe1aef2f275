//! Every statement the store sends waits at most `database_timeout` for its
//! answer. A database that stops answering without closing the connection
//! (packets dropped by a network policy, a dead node, a failover behind a
//! stale address) would otherwise hold a call until its request timeout, or
//! a background task for as long as TCP takes to give up, which is minutes.
//! Past the bound the statement's future is dropped and the caller gets an
//! "unreachable" error; sqlx tests such a connection before it is used
//! again. PostgreSQL's own `statement_timeout` is set to the same bound, so
//! the server gives up on the statement too.

use std::future::Future;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr, Statement};

/// A connection or transaction whose statements are bounded in time.
#[derive(Clone, Debug)]
pub(super) struct Bounded<C> {
    pub(super) inner: C,
    pub(super) timeout: Duration,
}

/// `work`, or an "unreachable" error once `timeout` has passed.
pub(super) async fn bounded<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, DbErr>>,
) -> Result<T, DbErr> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(timed_out(timeout)))
}

/// The error of a statement that got no answer in time: the database is
/// unreachable, as far as the caller can tell.
pub(super) fn timed_out(timeout: Duration) -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(format!(
        "the database did not answer within {timeout:?} (database_timeout)"
    )))
}

#[async_trait::async_trait]
impl<C: ConnectionTrait + Send + Sync> ConnectionTrait for Bounded<C> {
    fn get_database_backend(&self) -> DbBackend {
        self.inner.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        bounded(self.timeout, self.inner.execute_raw(stmt)).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        bounded(self.timeout, self.inner.execute_unprepared(sql)).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        bounded(self.timeout, self.inner.query_one_raw(stmt)).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        bounded(self.timeout, self.inner.query_all_raw(stmt)).await
    }

    fn support_returning(&self) -> bool {
        self.inner.support_returning()
    }
}
