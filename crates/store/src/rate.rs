//! Rate limits' windows: `rate_windows`, the calls taken in each window
//! (the limits themselves are stored by [`crate::limit_rows`]). A replica takes a block of a window's calls with one
//! compare-and-set statement and admits them in memory, as with credits,
//! so however many replicas admit, a window never admits more than its
//! limit.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, TryInsertResult,
};

use crate::connection::Store;
use crate::entity::rate_windows;
use crate::error::{Result, StoreError};
use crate::limit_rows::{as_i64, block};
use latchkey_core::clock::Timestamp;
use latchkey_core::limit::Window;

/// What a take of a window's calls found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateTake {
    /// `taken` calls moved to the caller; `left` remain in the window.
    Taken { taken: u64, left: u64 },
    /// Fewer than needed are left in the window: nothing was taken.
    Short { left: u64 },
}

impl Store {
    /// Takes at least `need` of the calls `limit` allows in `window` of
    /// the limit stored as `key`: a sixteenth of what is left, at least
    /// `need`, at most `want` (see [`crate::MAX_CREDIT_BLOCK`]).
    ///
    /// # Errors
    /// On a database fault, or when other takes kept winning the race.
    pub async fn take_rate(
        &self,
        key: &str,
        window: Window,
        need: u64,
        limit: u64,
        want: u64,
    ) -> Result<RateTake> {
        for _ in 0..100 {
            let used: Option<i64> = rate_windows::Entity::find()
                .select_only()
                .column(rate_windows::Column::Used)
                .filter(rate_windows::Column::Key.eq(key))
                .filter(rate_windows::Column::WindowIndex.eq(window.index))
                .into_tuple()
                .one(&self.db)
                .await?;
            let used_before = used.map_or(0, |u| u64::try_from(u).unwrap_or(u64::MAX));
            let remaining = limit.saturating_sub(used_before);
            if remaining < need {
                return Ok(RateTake::Short { left: remaining });
            }
            let taken = block(remaining, need, want);
            let now_used = as_i64(used_before + taken);
            let won = match used {
                None => matches!(
                    rate_windows::Entity::insert(rate_windows::ActiveModel {
                        key: Set(key.to_owned()),
                        window_index: Set(window.index),
                        window_end: Set(window.end.as_micros()),
                        used: Set(now_used),
                    })
                    .on_conflict_do_nothing()
                    .exec_without_returning(&self.db)
                    .await?,
                    TryInsertResult::Inserted(1)
                ),
                Some(before) => {
                    rate_windows::Entity::update_many()
                        .col_expr(rate_windows::Column::Used, Expr::value(now_used))
                        .filter(rate_windows::Column::Key.eq(key))
                        .filter(rate_windows::Column::WindowIndex.eq(window.index))
                        .filter(rate_windows::Column::Used.eq(before))
                        .exec(&self.db)
                        .await?
                        .rows_affected
                        == 1
                }
            };
            if won {
                return Ok(RateTake::Taken {
                    taken,
                    left: remaining - taken,
                });
            }
        }
        Err(StoreError::Database(DbErr::Custom(format!(
            "taking calls of rate limit {key:?} lost the race 100 times"
        ))))
    }

    /// Deletes the counts of windows that ended before `before`.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn prune_rate_windows(&self, before: Timestamp) -> Result<u64> {
        Ok(rate_windows::Entity::delete_many()
            .filter(rate_windows::Column::WindowEnd.lt(before.as_micros()))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}
