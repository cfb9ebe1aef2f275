//! Expiry warnings: finding the tokens a warning is due for and marking it
//! given, in one statement, so that each is warned once however many
//! replicas look at the same time.

use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter};

use crate::connection::Txn;
use crate::entity::{owners, tokens};
use crate::error::Result;
use crate::status::status_condition;
use crate::tokens::{duration_micros, to_record};
use latchkey_core::clock::Timestamp;
use latchkey_core::token::{Status, TokenRecord};

/// Which tokens a warning at one lead time is due for.
#[derive(Clone, Copy, Debug)]
pub struct Due {
    /// The lead time: the token expires within it.
    pub lead: Duration,
    /// The next shorter lead time configured (zero: none): a token that
    /// expires within it is due for that warning instead.
    pub shorter: Duration,
    /// The most tokens marked in one go.
    pub limit: u64,
}

impl Txn {
    /// Marks the tokens `due` a warning at `now` as warned and returns them:
    /// active ones, not replaced by a renewal, of enabled owners, that
    /// expire after `now + shorter` and by `now + lead`, that lived longer
    /// than `lead` (a token made to last a day is not warned a week ahead),
    /// and were not warned at this lead or a shorter one. On PostgreSQL a
    /// replica marking the same token at the same time waits for this
    /// transaction and then finds it warned.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn mark_expiry_warned(&self, due: Due, now: Timestamp) -> Result<Vec<TokenRecord>> {
        let lead = duration_micros(due.lead);
        let lead_secs = i64::try_from(due.lead.as_secs()).unwrap_or(i64::MAX);
        let from = now.as_micros().saturating_add(duration_micros(due.shorter));
        let until = now.as_micros().saturating_add(lead);
        let not_warned = || {
            Condition::any()
                .add(tokens::Column::ExpiryWarned.is_null())
                .add(tokens::Column::ExpiryWarned.gt(lead_secs))
        };
        let disabled = Query::select()
            .column(owners::Column::Owner)
            .from(owners::Entity)
            .and_where(owners::Column::DisableTime.is_not_null())
            .to_owned();
        let due_ids = Query::select()
            .column(tokens::Column::Id)
            .from(tokens::Entity)
            .cond_where(
                Condition::all()
                    .add(tokens::Column::ExpireTime.gt(from))
                    .add(tokens::Column::ExpireTime.lte(until))
                    .add(
                        Expr::col(tokens::Column::ExpireTime)
                            .sub(Expr::col(tokens::Column::CreateTime))
                            .gt(lead),
                    )
                    .add(tokens::Column::ReplacedBy.is_null())
                    .add(status_condition(Status::Active, now))
                    .add(tokens::Column::Owner.not_in_subquery(disabled))
                    .add(not_warned()),
            )
            .limit(due.limit)
            .to_owned();
        let marked = tokens::Entity::update_many()
            .col_expr(tokens::Column::ExpiryWarned, Expr::value(lead_secs))
            .filter(tokens::Column::Id.in_subquery(due_ids))
            // Checked again on the row as it is when this replica gets to
            // it: another may have marked it meanwhile.
            .filter(not_warned())
            .exec_with_returning(&self.txn)
            .await?;
        marked.into_iter().map(to_record).collect()
    }
}
