//! Key rotation in the database: which key each token's digest was made
//! with, and moving digests to the primary key.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use crate::connection::Store;
use crate::entity::tokens;
use crate::error::Result;
use latchkey_core::token::Digest;

impl Store {
    /// Stores each token `(id, stored, primary)` under the primary key's
    /// digest, unless it has changed digest meanwhile; returns how many moved.
    /// One transaction: all or none.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn rekey_tokens(
        &self,
        moves: &[(Uuid, Digest, Digest)],
        key_id: &str,
    ) -> Result<u64> {
        let txn = self.begin().await?;
        let mut moved = 0;
        for (id, stored, primary) in moves {
            moved += tokens::Entity::update_many()
                .col_expr(
                    tokens::Column::Digest,
                    Expr::value(primary.as_bytes().to_vec()),
                )
                .col_expr(tokens::Column::KeyId, Expr::value(key_id))
                .filter(tokens::Column::Id.eq(*id))
                .filter(tokens::Column::Digest.eq(stored.as_bytes().to_vec()))
                .exec(&txn.txn)
                .await?
                .rows_affected;
        }
        txn.commit().await?;
        Ok(moved)
    }

    /// How many tokens are stored under each key id.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn tokens_by_key(&self) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = tokens::Entity::find()
            .select_only()
            .column(tokens::Column::KeyId)
            .column_as(tokens::Column::Id.count(), "count")
            .group_by(tokens::Column::KeyId)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, n)| (id, u64::try_from(n).unwrap_or(0)))
            .collect())
    }
}
