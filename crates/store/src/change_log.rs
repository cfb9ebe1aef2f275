//! The change log (`token_changes`) through which replicas drop what they
//! cached: appended in the transaction of each change, read in order,
//! pruned, and on PostgreSQL announced with NOTIFY to a [`ChangeListener`].

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, RuntimeErr,
};

use crate::connection::{Store, Txn};
use crate::entity::token_changes;
use crate::error::{Result, StoreError};
use crate::sql::BULK_CHUNK;
use latchkey_core::changes::{Change, Logged};
use latchkey_core::clock::Timestamp;
use latchkey_core::token::Digest;

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

impl Store {
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
        token_changes::Entity::find()
            .filter(numbered_since(token_changes::Column::Seq, after, also))
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
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(crate::bounded::timed_out(
                    self.db.timeout,
                )))
            })
    }
}

impl Txn {
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
        self.announce().await
    }

    /// On PostgreSQL, wakes the replicas listening on [`CHANGES_CHANNEL`]
    /// when (and only if) the transaction commits; several in one
    /// transaction wake them once.
    ///
    /// # Errors
    /// On a database fault.
    pub(crate) async fn announce(&self) -> Result<()> {
        if self.txn.get_database_backend() == DbBackend::Postgres {
            self.txn
                .execute_unprepared(&format!("NOTIFY {CHANGES_CHANNEL}"))
                .await?;
        }
        Ok(())
    }
}

/// Rows numbered above `after` or among `also` (the gaps a reader still
/// waits for).
pub(crate) fn numbered_since<C: ColumnTrait>(seq: C, after: i64, also: &[i64]) -> Condition {
    let mut wanted = Condition::any().add(seq.gt(after));
    if !also.is_empty() {
        wanted = wanted.add(seq.is_in(also.iter().copied()));
    }
    wanted
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
