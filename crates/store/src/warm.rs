//! The bulk read a starting replica warms its cache with: the tokens used
//! recently, in one query streamed row by row.

use futures_util::TryStreamExt as _;
use sea_orm::{
    ColumnTrait, ConnectionTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, StreamTrait,
};

use crate::connection::Store;
use crate::entity::tokens;
use crate::error::{Result, StoreError};
use crate::lookup::with_owner;
use crate::tokens::{FoundToken, found_token};
use latchkey_core::clock::Timestamp;
use latchkey_core::token::Digest;

impl Store {
    /// Calls `each` with every token stored under the key `key_id` and used
    /// at or after `since`, most recently used first, at most `limit` of
    /// them, as Verify would find it by its digest. Returns how many.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn recently_used(
        &self,
        key_id: &str,
        since: Timestamp,
        limit: u64,
        mut each: impl FnMut(Digest, FoundToken) + Send,
    ) -> Result<u64> {
        let statement = with_owner()
            .filter(tokens::Column::KeyId.eq(key_id))
            .filter(tokens::Column::LastUsedTime.gte(since.as_micros()))
            .order_by_desc(tokens::Column::LastUsedTime)
            .limit(limit)
            .build(self.db.get_database_backend());
        // Not bounded by `database_timeout` as one statement: a large read
        // may take longer, and the caller bounds the whole (cache.warm_timeout).
        let mut rows = self.db.inner.stream_raw(statement).await?;
        let mut count = 0;
        while let Some(row) = rows.try_next().await? {
            let model = tokens::Model::from_query_result(&row, "")?;
            let digest = Digest::from_slice(&model.digest).ok_or_else(|| {
                StoreError::Corrupt(anyhow::anyhow!("token {} has a bad digest", model.id))
            })?;
            each(digest, found_token(model, &row)?);
            count += 1;
        }
        Ok(count)
    }
}
