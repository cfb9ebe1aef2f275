//! Tokens: the `tokens` table, read by digest for Verify, listed, changed
//! inside a [`Txn`], and converted between rows and [`TokenRecord`]s.

use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QueryResult, QuerySelect, Statement,
};
use uuid::Uuid;

use crate::connection::{Store, Txn};
use crate::entity::tokens;
use crate::error::{Result, StoreError};
use crate::limit_rows::{credit_columns, credits_of};
use crate::lookup::{OWNER_DISABLE_TIME, OWNER_RATE_LIMITS};
use crate::sql::{BULK_CHUNK, before, encode_map};
use crate::status::{not_expired, status_condition};
use latchkey_core::client::Client;
use latchkey_core::clock::Timestamp;
use latchkey_core::limit::{Credits, RateLimit};
use latchkey_core::query::{Cursor, ListFilter, TokenPatch};
use latchkey_core::token::{Digest, Status, TokenRecord};

/// A record and the digest it is stored under (to invalidate the cache).
#[derive(Clone, Debug)]
pub struct StoredToken {
    pub record: TokenRecord,
    pub digest: Digest,
}

/// What Verify needs from the database about one digest.
#[derive(Clone, Debug)]
pub struct FoundToken {
    pub record: TokenRecord,
    pub owner_disabled: bool,
    /// The owner's rate limits, shared by its tokens.
    pub owner_rate_limits: Vec<RateLimit>,
}

/// How a renewal ends the old token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retirement {
    /// Revoked at once, with reason "renewed".
    RevokeNow,
    /// Keeps working until then (already min(old expiry, now + grace)).
    ExpireAt(Timestamp),
}

/// A token to insert: its record, digest and the id of the key that made it.
#[derive(Clone, Copy, Debug)]
pub struct NewRow<'a> {
    pub record: &'a TokenRecord,
    pub digest: &'a Digest,
    pub key_id: &'a str,
}

impl Store {
    /// The token with this digest, and whether its owner is disabled, in one
    /// query.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn find_by_digest(&self, digest: &Digest) -> Result<Option<FoundToken>> {
        let row = match &self.lanes {
            Some(lanes) => lanes.lookup(digest.as_bytes()).await?,
            None => {
                let statement = Statement::from_sql_and_values(
                    self.db.get_database_backend(),
                    self.find_by_digest_sql.as_ref(),
                    [digest.as_bytes().to_vec().into()],
                );
                self.db.query_one_raw(statement).await?
            }
        };
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(found_token(
            tokens::Model::from_query_result(&row, "")?,
            &row,
        )?))
    }

    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn get_token(&self, id: Uuid) -> Result<Option<TokenRecord>> {
        tokens::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(to_record)
            .transpose()
    }

    /// Up to `limit` tokens matching `filter`, newest first, strictly after
    /// `after`. Status filters are judged at `now`.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn list_tokens(
        &self,
        filter: &ListFilter,
        after: Option<Cursor>,
        limit: u64,
        now: Timestamp,
    ) -> Result<Vec<TokenRecord>> {
        let mut query = tokens::Entity::find();
        if let Some(owner) = &filter.owner {
            query = query.filter(tokens::Column::Owner.eq(owner.as_str()));
        }
        if !filter.statuses.is_empty() {
            let any = filter
                .statuses
                .iter()
                .fold(Condition::any(), |c, s| c.add(status_condition(*s, now)));
            query = query.filter(any);
        }
        if let Some(t) = filter.expire_before {
            query = query.filter(tokens::Column::ExpireTime.lt(t.as_micros()));
        }
        if let Some(c) = after {
            query = query.filter(before(tokens::Column::CreateTime, tokens::Column::Id, c));
        }
        query
            .order_by_desc(tokens::Column::CreateTime)
            .order_by_desc(tokens::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// Every token of `owner` (for counting them by status).
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn owner_tokens(&self, owner: &str) -> Result<Vec<TokenRecord>> {
        tokens::Entity::find()
            .filter(tokens::Column::Owner.eq(owner))
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// Whether any token is stored, whatever its status.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn has_tokens(&self) -> Result<bool> {
        Ok(tokens::Entity::find()
            .select_only()
            .column(tokens::Column::Id)
            .into_tuple::<Uuid>()
            .one(&self.db)
            .await?
            .is_some())
    }

    /// The digests of every token of `owner` (to invalidate them).
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn owner_digests(&self, owner: &str) -> Result<Vec<Digest>> {
        let rows: Vec<Vec<u8>> = tokens::Entity::find()
            .select_only()
            .column(tokens::Column::Digest)
            .filter(tokens::Column::Owner.eq(owner))
            .into_tuple()
            .all(&self.db)
            .await?;
        rows.iter()
            .map(|d| {
                Digest::from_slice(d).ok_or_else(|| {
                    StoreError::Corrupt(anyhow::anyhow!("a token of {owner} has a bad digest"))
                })
            })
            .collect()
    }
}

impl Txn {
    /// The owner's ACTIVE tokens at `now`: every secret that works, those a
    /// renewal replaced but whose grace period runs yet included.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn count_active(&self, owner: &str, now: Timestamp) -> Result<u64> {
        Ok(tokens::Entity::find()
            .filter(tokens::Column::Owner.eq(owner))
            .filter(status_condition(Status::Active, now))
            .count(&self.txn)
            .await?)
    }

    /// # Errors
    /// On a database fault, or if the digest or id already exists.
    pub async fn insert_token(&self, row: &NewRow<'_>) -> Result<()> {
        tokens::Entity::insert(to_active_model(row))
            .exec_without_returning(&self.txn)
            .await?;
        Ok(())
    }

    /// Inserts many tokens, [`BULK_CHUNK`] rows per statement.
    ///
    /// # Errors
    /// On a database fault or a duplicate digest.
    pub async fn insert_tokens(&self, rows: &[NewRow<'_>]) -> Result<()> {
        for chunk in rows.chunks(BULK_CHUNK) {
            tokens::Entity::insert_many(chunk.iter().map(to_active_model))
                .exec_without_returning(&self.txn)
                .await?;
        }
        Ok(())
    }

    /// Reads a token inside the transaction.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn get_token(&self, id: Uuid) -> Result<Option<StoredToken>> {
        tokens::Entity::find_by_id(id)
            .one(&self.txn)
            .await?
            .map(stored)
            .transpose()
    }

    /// Applies `patch`. `None` if there is no such token.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn update_token(
        &self,
        id: Uuid,
        patch: &TokenPatch,
        now: Timestamp,
    ) -> Result<Option<StoredToken>> {
        let mut update = tokens::Entity::update_many()
            .col_expr(tokens::Column::UpdateTime, Expr::value(now.as_micros()));
        if let Some(name) = &patch.name {
            update = update.col_expr(tokens::Column::Name, Expr::value(name.clone()));
        }
        if let Some(description) = &patch.description {
            update = update.col_expr(
                tokens::Column::Description,
                Expr::value(description.clone()),
            );
        }
        if let Some(metadata) = &patch.metadata {
            update = update.col_expr(tokens::Column::Metadata, Expr::value(encode_map(metadata)));
        }
        if let Some(limits) = &patch.rate_limits {
            update = update.col_expr(
                tokens::Column::RateLimits,
                Expr::value(crate::limit_rows::encode(limits)),
            );
        }
        if let Some(credits) = &patch.credits {
            let (remaining, amount, interval, period) = credit_columns(credits.as_ref());
            update = update
                .col_expr(tokens::Column::CreditsRemaining, Expr::value(remaining))
                .col_expr(tokens::Column::CreditsRefillAmount, Expr::value(amount))
                .col_expr(tokens::Column::CreditsRefillInterval, Expr::value(interval))
                .col_expr(tokens::Column::CreditsPeriod, Expr::value(period))
                .col_expr(
                    tokens::Column::CreditsGeneration,
                    Expr::col(tokens::Column::CreditsGeneration).add(1i64),
                );
        }
        let rows = update
            .filter(tokens::Column::Id.eq(id))
            .exec_with_returning(&self.txn)
            .await?;
        first_stored(rows)
    }

    /// Marks the token revoked if it is not already. Returns it if this call
    /// revoked it; `None` if it is absent or was already revoked.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn revoke_token(
        &self,
        id: Uuid,
        reason: &str,
        now: Timestamp,
    ) -> Result<Option<StoredToken>> {
        let rows = revocation(id, reason, now)
            .exec_with_returning(&self.txn)
            .await?;
        first_stored(rows)
    }

    /// Clears a revocation, restarts the idle clock and cuts the token from
    /// the self-renewals before it, provided the token
    /// was not replaced by a renewal and has not expired at `now`. Returns
    /// the token if it changed; `None` if it is absent or no longer qualifies
    /// (the caller reads it again).
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn restore_token(&self, id: Uuid, now: Timestamp) -> Result<Option<StoredToken>> {
        let rows = tokens::Entity::update_many()
            .col_expr(tokens::Column::RevokeTime, Expr::value(Option::<i64>::None))
            .col_expr(tokens::Column::RevokeReason, Expr::value(String::new()))
            .col_expr(tokens::Column::IdleResetTime, Expr::value(now.as_micros()))
            // A restored token starts a renewal chain of its own: secrets
            // that came before it are no longer part of it.
            .col_expr(tokens::Column::SelfRenewed, Expr::value(false))
            .col_expr(tokens::Column::UpdateTime, Expr::value(now.as_micros()))
            .filter(tokens::Column::Id.eq(id))
            .filter(tokens::Column::ReplacedBy.is_null())
            .filter(not_expired(now))
            .exec_with_returning(&self.txn)
            .await?;
        first_stored(rows)
    }

    /// Links the old token of a renewal to its replacement and retires it,
    /// provided it is neither revoked nor already replaced. Returns it if
    /// this call changed it; `None` otherwise (the caller reads it again).
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn replace_token(
        &self,
        id: Uuid,
        replaced_by: Uuid,
        retirement: Retirement,
        now: Timestamp,
    ) -> Result<Option<StoredToken>> {
        // Its credits move to the replacement ([`Txn::lock_credits`]).
        let mut update = tokens::Entity::update_many()
            .col_expr(tokens::Column::ReplacedBy, Expr::value(replaced_by))
            .col_expr(tokens::Column::UpdateTime, Expr::value(now.as_micros()))
            .col_expr(
                tokens::Column::CreditsRemaining,
                Expr::case(
                    Expr::col(tokens::Column::CreditsRemaining).is_null(),
                    Expr::value(Option::<i64>::None),
                )
                .finally(0i64)
                .into(),
            );
        update = match retirement {
            Retirement::RevokeNow => update
                .col_expr(tokens::Column::RevokeTime, Expr::value(now.as_micros()))
                .col_expr(tokens::Column::RevokeReason, Expr::value("renewed")),
            Retirement::ExpireAt(t) => {
                update.col_expr(tokens::Column::ExpireTime, Expr::value(t.as_micros()))
            }
        };
        let rows = update
            .filter(tokens::Column::Id.eq(id))
            .filter(tokens::Column::RevokeTime.is_null())
            .filter(tokens::Column::ReplacedBy.is_null())
            .exec_with_returning(&self.txn)
            .await?;
        first_stored(rows)
    }

    /// Token `id`'s credits (`None`: unlimited, or no such token), locked
    /// until the transaction ends, so that no replica takes any meanwhile:
    /// a renewal moves them to the replacement.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn lock_credits(&self, id: Uuid) -> Result<Option<Credits>> {
        let found = tokens::Entity::find_by_id(id)
            .lock_exclusive()
            .one(&self.txn)
            .await?;
        Ok(found.and_then(|m| credits_of(&m)))
    }

    /// Points `id`'s renewal link from `from` to `to` (a retried renewal
    /// replacing an unused replacement). Returns the token if this call
    /// changed it; `None` if it is absent or no longer replaced by `from`.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn relink_token(
        &self,
        id: Uuid,
        from: Uuid,
        to: Uuid,
        now: Timestamp,
    ) -> Result<Option<StoredToken>> {
        let rows = tokens::Entity::update_many()
            .col_expr(tokens::Column::ReplacedBy, Expr::value(to))
            .col_expr(tokens::Column::UpdateTime, Expr::value(now.as_micros()))
            .filter(tokens::Column::Id.eq(id))
            .filter(tokens::Column::ReplacedBy.eq(from))
            .exec_with_returning(&self.txn)
            .await?;
        first_stored(rows)
    }

    /// Revokes the token provided it was never used (no recorded use) and
    /// is neither revoked nor replaced. Returns it if this call revoked it.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn revoke_unused_token(
        &self,
        id: Uuid,
        reason: &str,
        now: Timestamp,
    ) -> Result<Option<StoredToken>> {
        let rows = revocation(id, reason, now)
            .filter(tokens::Column::LastUsedTime.is_null())
            .filter(tokens::Column::ReplacedBy.is_null())
            .exec_with_returning(&self.txn)
            .await?;
        first_stored(rows)
    }

    /// Deletes the token; returns what it was, or `None` if there was none.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn delete_token(&self, id: Uuid) -> Result<Option<StoredToken>> {
        tokens::Entity::delete_by_id(id)
            .exec_with_returning(&self.txn)
            .await?
            .map(stored)
            .transpose()
    }

    /// Deletes every token of `owner`; returns what they were.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn delete_owner_tokens(&self, owner: &str) -> Result<Vec<StoredToken>> {
        tokens::Entity::delete_many()
            .filter(tokens::Column::Owner.eq(owner))
            .exec_with_returning(&self.txn)
            .await?
            .into_iter()
            .map(stored)
            .collect()
    }
}

/// Revokes token `id` with `reason` at `now`, unless it is revoked already.
fn revocation(id: Uuid, reason: &str, now: Timestamp) -> sea_orm::UpdateMany<tokens::Entity> {
    tokens::Entity::update_many()
        .col_expr(tokens::Column::RevokeTime, Expr::value(now.as_micros()))
        .col_expr(tokens::Column::RevokeReason, Expr::value(reason.to_owned()))
        .col_expr(tokens::Column::UpdateTime, Expr::value(now.as_micros()))
        .filter(tokens::Column::Id.eq(id))
        .filter(tokens::Column::RevokeTime.is_null())
}

fn first_stored(rows: Vec<tokens::Model>) -> Result<Option<StoredToken>> {
    rows.into_iter().next().map(stored).transpose()
}

fn stored(m: tokens::Model) -> Result<StoredToken> {
    let digest = digest_of(&m)?;
    Ok(StoredToken {
        record: to_record(m)?,
        digest,
    })
}

fn digest_of(m: &tokens::Model) -> Result<Digest> {
    Digest::from_slice(&m.digest).ok_or_else(|| {
        StoreError::Corrupt(anyhow::anyhow!(
            "token {} has a digest of {} bytes",
            m.id,
            m.digest.len()
        ))
    })
}

fn to_active_model(row: &NewRow<'_>) -> tokens::ActiveModel {
    let NewRow {
        record: r,
        digest,
        key_id,
    } = *row;
    let (remaining, refill_amount, refill_interval, period) = credit_columns(r.credits.as_ref());
    let (last_used_ip, last_used_user_agent) = Client::as_text(r.last_used_client.as_ref());
    tokens::ActiveModel {
        id: Set(r.id),
        owner: Set(r.owner.clone()),
        name: Set(r.name.clone()),
        description: Set(r.description.clone()),
        scopes: Set(r.scopes.join(" ")),
        metadata: Set(encode_map(&r.metadata)),
        digest: Set(digest.as_bytes().to_vec()),
        key_id: Set(key_id.to_owned()),
        display_hint: Set(r.display_hint.clone()),
        create_time: Set(r.create_time.as_micros()),
        update_time: Set(r.update_time.as_micros()),
        expire_time: Set(r.expire_time.map(Timestamp::as_micros)),
        idle_timeout: Set(r.idle_timeout.map(duration_micros)),
        last_used_time: Set(r.last_used_time.map(Timestamp::as_micros)),
        revoke_time: Set(r.revoke_time.map(Timestamp::as_micros)),
        revoke_reason: Set(r.revoke_reason.clone()),
        replaces: Set(r.replaces),
        replaced_by: Set(r.replaced_by),
        idle_reset_time: Set(r.idle_reset_time.map(Timestamp::as_micros)),
        self_renewed: Set(r.self_renewed),
        credits_remaining: Set(remaining),
        credits_refill_amount: Set(refill_amount),
        credits_refill_interval: Set(refill_interval),
        credits_period: Set(period),
        credits_generation: Set(r.credits.map_or(0, |c| c.generation)),
        rate_limits: Set(crate::limit_rows::encode(&r.rate_limits)),
        last_used_ip: Set(last_used_ip),
        last_used_user_agent: Set(last_used_user_agent),
        recent_ips: Set(crate::uses::encode_ips(&r.recent_ips)),
        expiry_warned: Set(None),
    }
}

pub(crate) fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A row of [`crate::lookup::find_by_digest_sql`] (or a query with its
/// columns), its token part already read into `model`.
pub(crate) fn found_token(model: tokens::Model, row: &QueryResult) -> Result<FoundToken> {
    let owner_disable_time: Option<i64> = row.try_get("", OWNER_DISABLE_TIME)?;
    let owner_rate_limits: Option<String> = row.try_get("", OWNER_RATE_LIMITS)?;
    let record = to_record(model)?;
    let owner_rate_limits = crate::limit_rows::decode(owner_rate_limits.as_deref().unwrap_or(""))
        .map_err(|e| {
        StoreError::Corrupt(e.context(format!("rate limits of owner {:?}", record.owner)))
    })?;
    Ok(FoundToken {
        record,
        owner_disabled: owner_disable_time.is_some(),
        owner_rate_limits,
    })
}

pub(crate) fn to_record(m: tokens::Model) -> Result<TokenRecord> {
    let credits = credits_of(&m);
    let metadata = serde_json::from_str(&m.metadata).map_err(|e| {
        StoreError::Corrupt(anyhow::Error::new(e).context(format!("metadata of token {}", m.id)))
    })?;
    Ok(TokenRecord {
        id: m.id,
        owner: m.owner,
        name: m.name,
        description: m.description,
        scopes: m.scopes.split_whitespace().map(str::to_owned).collect(),
        metadata,
        display_hint: m.display_hint,
        create_time: Timestamp::from_micros(m.create_time),
        update_time: Timestamp::from_micros(m.update_time),
        expire_time: m.expire_time.map(Timestamp::from_micros),
        idle_timeout: m
            .idle_timeout
            .map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(0))),
        last_used_time: m.last_used_time.map(Timestamp::from_micros),
        revoke_time: m.revoke_time.map(Timestamp::from_micros),
        revoke_reason: m.revoke_reason,
        replaces: m.replaces,
        replaced_by: m.replaced_by,
        idle_reset_time: m.idle_reset_time.map(Timestamp::from_micros),
        self_renewed: m.self_renewed,
        credits,
        rate_limits: crate::limit_rows::decode(&m.rate_limits).map_err(|e| {
            StoreError::Corrupt(e.context(format!("rate limits of token {}", m.id)))
        })?,
        last_used_client: crate::uses::decode_client(&m.last_used_ip, m.last_used_user_agent),
        recent_ips: crate::uses::decode_ips(&m.recent_ips),
    })
}
