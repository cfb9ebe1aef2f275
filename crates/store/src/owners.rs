//! Owners: the `owners` row that disables an owner and serialises its
//! creations, and the count of those creations for the rate limit.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::connection::{Store, Txn};
use crate::entity::{owners, token_events};
use crate::error::Result;
use latchkey_core::audit::EventKind;
use latchkey_core::clock::Timestamp;
use latchkey_core::limit::RateLimit;
use latchkey_core::owner::OwnerRecord;

/// An owner's creations inside a rate window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Creations {
    pub count: u64,
    /// The earliest of them: the window frees a slot once it is old enough.
    pub oldest: Option<Timestamp>,
}

impl Store {
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
}

impl Txn {
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
            rate_limits: Set(String::new()),
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

impl Txn {
    /// Replaces the owner's rate limits. Returns its record if this call
    /// changed them; `None` if they were already these.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn set_owner_rate_limits(
        &self,
        owner: &str,
        limits: &[RateLimit],
        now: Timestamp,
    ) -> Result<Option<OwnerRecord>> {
        let current = self.lock_owner(owner, now).await?;
        if current.rate_limits == limits {
            return Ok(None);
        }
        let rows = owners::Entity::update_many()
            .col_expr(
                owners::Column::RateLimits,
                Expr::value(crate::limit_rows::encode(limits)),
            )
            .col_expr(owners::Column::UpdateTime, Expr::value(now.as_micros()))
            .filter(owners::Column::Owner.eq(owner))
            .exec_with_returning(&self.txn)
            .await?;
        Ok(rows.into_iter().next().map(to_owner))
    }
}

fn to_owner(m: owners::Model) -> OwnerRecord {
    OwnerRecord {
        owner: m.owner,
        disable_time: m.disable_time.map(Timestamp::from_micros),
        reason: m.disable_reason,
        rate_limits: crate::limit_rows::decode(&m.rate_limits).unwrap_or_default(),
    }
}
