//! A token's status as SQL, mirroring [`TokenRecord::status`]: the filters
//! behind listing by status and counting an owner's active tokens.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, Condition};

use crate::entity::tokens;
use latchkey_core::clock::Timestamp;
use latchkey_core::token::Status;

pub(crate) fn not_expired(now: Timestamp) -> Condition {
    Condition::any()
        .add(tokens::Column::ExpireTime.is_null())
        .add(tokens::Column::ExpireTime.gt(now.as_micros()))
}

/// `column + idle_timeout`: when the token goes idle, counting from `column`.
fn idle_deadline(column: tokens::Column) -> Expr {
    Expr::col(column).add(Expr::col(tokens::Column::IdleTimeout))
}

/// SQL for "idle_timeout has passed since creation, last use and the idle
/// clock's restart", mirroring [`TokenRecord::inactive_time`]. A NULL last
/// use or restart does not count.
fn idle(now: Timestamp) -> Condition {
    let now = now.as_micros();
    Condition::all()
        .add(tokens::Column::IdleTimeout.is_not_null())
        .add(idle_deadline(tokens::Column::CreateTime).lte(now))
        .add(
            Condition::any()
                .add(tokens::Column::LastUsedTime.is_null())
                .add(idle_deadline(tokens::Column::LastUsedTime).lte(now)),
        )
        .add(
            Condition::any()
                .add(tokens::Column::IdleResetTime.is_null())
                .add(idle_deadline(tokens::Column::IdleResetTime).lte(now)),
        )
}

/// The negation of [`idle`], spelled out so that NULLs cannot make a token
/// both or neither.
fn not_idle(now: Timestamp) -> Condition {
    let now = now.as_micros();
    Condition::any()
        .add(tokens::Column::IdleTimeout.is_null())
        .add(idle_deadline(tokens::Column::CreateTime).gt(now))
        .add(
            Condition::all()
                .add(tokens::Column::LastUsedTime.is_not_null())
                .add(idle_deadline(tokens::Column::LastUsedTime).gt(now)),
        )
        .add(
            Condition::all()
                .add(tokens::Column::IdleResetTime.is_not_null())
                .add(idle_deadline(tokens::Column::IdleResetTime).gt(now)),
        )
}

/// SQL for "has status `s` at `now`", mirroring [`TokenRecord::status`].
pub(crate) fn status_condition(s: Status, now: Timestamp) -> Condition {
    let not_revoked = || tokens::Column::RevokeTime.is_null();
    match s {
        Status::Revoked => Condition::all().add(tokens::Column::RevokeTime.is_not_null()),
        Status::Expired => Condition::all()
            .add(not_revoked())
            .add(tokens::Column::ExpireTime.lte(now.as_micros())),
        Status::Inactive => Condition::all()
            .add(not_revoked())
            .add(not_expired(now))
            .add(idle(now)),
        Status::Active => Condition::all()
            .add(not_revoked())
            .add(not_expired(now))
            .add(not_idle(now)),
    }
}
