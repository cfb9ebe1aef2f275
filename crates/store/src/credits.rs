//! Usage credits (`tokens.credits_remaining`): a replica takes a block of a
//! token's credits from the database with one compare-and-set update and
//! spends it in memory, so however many replicas spend, the total never
//! exceeds what the token was given.

use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::connection::Store;
use crate::entity::tokens;
use crate::error::{Result, StoreError};
use crate::limit_rows::{as_i64, block, credits_of};
use latchkey_core::audit::{Event, EventKind};
use latchkey_core::clock::Timestamp;

/// What a take found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditTake {
    /// `taken` credits moved from the database to the caller; `left`
    /// remain; they belong to `epoch` ([`Credits::epoch_at`]).
    Taken { taken: u64, left: u64, epoch: i64 },
    /// Fewer than needed are left: nothing was taken.
    Short { left: u64 },
    /// The token has no credits (unlimited use).
    Unlimited,
    /// No such token.
    Missing,
}

impl Store {
    /// Takes at least `need` of token `id`'s credits at `now`: a sixteenth
    /// of what is left (so that replicas share the last ones), at least
    /// `need`, at most `want` (see [`crate::MAX_CREDIT_BLOCK`]); exactly
    /// `need` if the caller's `epoch` is not the database's (its answer is
    /// older than the last change: it keeps nothing). A new refill period
    /// starts from the refill's amount. The take that leaves none records a
    /// CREDITS_EXHAUSTED event at `now`.
    ///
    /// # Errors
    /// On a database fault, or when other takes kept winning the race.
    pub async fn take_credits(
        &self,
        id: Uuid,
        need: u64,
        now: Timestamp,
        epoch: i64,
        want: u64,
    ) -> Result<CreditTake> {
        // Single statements, no transaction: the update only applies if the
        // row is still what was read, and SQLite lets a statement wait for
        // the write lock where a read-then-write transaction would fail.
        // Each lost race means another replica took credits meanwhile; a
        // few in a row are possible, a hundred are not.
        for _ in 0..100 {
            let Some(row) = tokens::Entity::find_by_id(id).one(&self.db).await? else {
                return Ok(CreditTake::Missing);
            };
            let Some(credits) = credits_of(&row) else {
                return Ok(CreditTake::Unlimited);
            };
            let remaining = credits.remaining_at(now);
            if remaining < need {
                return Ok(CreditTake::Short { left: remaining });
            }
            let current = credits.epoch_at(now);
            let taken = if current == epoch {
                block(remaining, need, want)
            } else {
                need
            };
            let left = remaining - taken;
            let updated = tokens::Entity::update_many()
                .col_expr(tokens::Column::CreditsRemaining, Expr::value(as_i64(left)))
                .col_expr(
                    tokens::Column::CreditsPeriod,
                    Expr::value(credits.period_at(now)),
                )
                .filter(tokens::Column::Id.eq(id))
                .filter(tokens::Column::CreditsRemaining.eq(as_i64(credits.remaining)))
                .filter(tokens::Column::CreditsPeriod.eq(credits.period))
                .filter(tokens::Column::CreditsGeneration.eq(credits.generation))
                .exec(&self.db)
                .await?;
            if updated.rows_affected != 1 {
                continue;
            }
            // Only the take that reached zero gets here with `left == 0`.
            if left == 0 && taken > 0 {
                let event = Event {
                    id: Uuid::now_v7(),
                    time: now,
                    kind: EventKind::CreditsExhausted,
                    token_id: Some(id),
                    owner: row.owner,
                    actor: "system".to_owned(),
                    detail: Default::default(),
                };
                let txn = self.begin().await?;
                txn.insert_event(&event).await?;
                txn.commit().await?;
            }
            return Ok(CreditTake::Taken {
                taken,
                left,
                epoch: current,
            });
        }
        Err(StoreError::Database(DbErr::Custom(format!(
            "taking credits of token {id} lost the race 100 times"
        ))))
    }

    /// Gives `amount` credits of `epoch` back to token `id` (a replica
    /// stopping with credits taken and not spent). A token deleted, made
    /// unlimited, given new credits or refilled meanwhile takes nothing
    /// back.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn return_credits(&self, id: Uuid, amount: u64, epoch: i64) -> Result<()> {
        tokens::Entity::update_many()
            .col_expr(
                tokens::Column::CreditsRemaining,
                Expr::col(tokens::Column::CreditsRemaining).add(as_i64(amount)),
            )
            .filter(tokens::Column::Id.eq(id))
            .filter(tokens::Column::CreditsRemaining.is_not_null())
            .filter(tokens::Column::CreditsGeneration.eq(epoch >> 32))
            .filter(tokens::Column::CreditsPeriod.eq(epoch & 0xFFFF_FFFF))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
