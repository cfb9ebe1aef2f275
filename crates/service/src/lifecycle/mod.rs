//! The token lifecycle: create, read, list, update, revoke, restore, delete and
//! renew tokens; disable, enable and clear owners; the creation limits; the
//! audit trail.
//!
//! Every field is checked before anything is written, so a refused request
//! writes nothing. Every change runs in one store transaction together with
//! its audit event and, if it changes how a token verifies, a change-log row
//! for the other replicas ([`crate::changes`]); it invalidates this process's
//! cache entries after it commits and before it returns.

mod owners;
mod paging;
mod self_renewal;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;

pub use paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use self_renewal::SELF_REVOKE_REASON;

use crate::audit::{Event, EventFilter, EventKind};
use crate::auth::Actor;
use crate::changes::Change;
use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::store::{ListFilter, NewRow, Retirement, Store, StoredToken, TokenPatch, Txn};
use crate::token::{
    self, ADMIN_SCOPE, Digest, Prefix, Secret, Status, Text, TokenKey, TokenRecord, format, limits,
};
use crate::verifier::Invalidate;
use paging::Paging;

/// Owner of the admin tokens `latchkey admin-token issue` makes.
pub const ADMIN_OWNER: &str = "latchkey";
/// The window of the per-owner creation rate.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Rules set by the operator (configuration section `policy`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Longest lifetime a token may be given; `None`: no limit.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Option<Duration>,
    /// Idle timeout of tokens created without one; `None`: no idle expiry.
    #[serde(with = "humantime_serde")]
    pub default_idle_timeout: Option<Duration>,
    /// Longest grace period a token may give its old secret when it renews
    /// itself (TokenSelf/RenewSelf); admins are not bound by it.
    #[serde(with = "humantime_serde")]
    pub max_self_renew_grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_ttl: None,
            default_idle_timeout: None,
            max_self_renew_grace: Duration::from_secs(3600),
        }
    }
}

/// Self-renewal (configuration section `self_renew`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelfRenew {
    /// A RenewSelf whose answer was lost may be sent again with the old
    /// secret within this window, as long as the new secret was never
    /// used: it gets a fresh replacement (the unused one is revoked)
    /// instead of counting as reuse. Zero turns retries off.
    #[serde(with = "humantime_serde")]
    pub retry_window: Duration,
}

impl Default for SelfRenew {
    fn default() -> Self {
        SelfRenew {
            retry_window: Duration::from_secs(30),
        }
    }
}

/// Creation limits per owner (configuration section `limits`); 0 turns one
/// off. Both hold across every replica sharing the database.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// New tokens (renewals included) in any [`RATE_WINDOW`].
    pub create_per_owner_per_minute: u32,
    /// ACTIVE tokens held, counting those still in a renewal's grace period.
    pub max_active_tokens_per_owner: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            create_per_owner_per_minute: 10,
            max_active_tokens_per_owner: 100,
        }
    }
}

/// How an owner gains an active token, which decides the checks it passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gain {
    /// A new token: owner enabled, under the rate, under the active cap.
    Creation,
    /// A new token replacing one at once: enabled, under the rate; the
    /// replaced token leaves the active count as the new one joins it.
    Renewal,
    /// A new token replacing one after a grace period: enabled, under the
    /// rate, and under the active cap, since both secrets live until the
    /// grace period ends (and renewing again and again would otherwise
    /// keep any number alive).
    OverlappingRenewal,
    /// A token brought back: under the active cap.
    Restore,
}

/// Who renews a token, which decides what renewing one that was already
/// replaced does, and whether the new token continues a self-renewal chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Renewer {
    /// An admin (RenewToken): a second renewal of the same token is
    /// refused, and the new token starts a chain of its own.
    Admin,
    /// The token's holder (RenewSelf): the new token continues the chain,
    /// and a replaced token presented again is a retry or a reuse
    /// ([`Lifecycle::replayed`]).
    Holder,
}

/// When a new token expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Never,
    /// This long after creation (already checked positive).
    After(Duration),
    At(Timestamp),
}

/// A CreateToken request, before validation.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub owner: String,
    pub name: String,
    pub description: String,
    pub scopes: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub expiry: Expiry,
    pub idle_timeout: Option<Duration>,
}

/// A RenewToken request, before validation.
#[derive(Clone, Copy, Debug)]
pub struct Renewal {
    pub id: Uuid,
    /// How long the old secret keeps working; zero: it is revoked at once.
    pub grace_period: Duration,
    /// `None`: the old token's lifetime length.
    pub expiry: Option<Expiry>,
}

/// A ListTokens request, before validation.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub filter: ListFilter,
    /// 0: the default page size.
    pub page_size: i32,
    pub page_token: String,
}

/// One page and the token for the next (empty on the last page).
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// A ListTokenEvents request, before validation.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub filter: EventFilter,
    pub page_size: i32,
    pub page_token: String,
}

pub struct Lifecycle {
    store: Store,
    cache: Arc<dyn Invalidate>,
    key: TokenKey,
    prefix: Prefix,
    clock: Arc<dyn Clock>,
    policy: Policy,
    limits: Limits,
    self_renew: SelfRenew,
    /// Keeps ids minted in one millisecond in creation order, so that
    /// newest-first paging never shows a later token after an earlier one.
    ids: Mutex<uuid::ContextV7>,
}

impl Lifecycle {
    pub fn new(
        store: Store,
        cache: Arc<dyn Invalidate>,
        key: TokenKey,
        prefix: Prefix,
        clock: Arc<dyn Clock>,
        policy: Policy,
        limits: Limits,
    ) -> Self {
        Lifecycle {
            store,
            cache,
            key,
            prefix,
            clock,
            policy,
            limits,
            self_renew: SelfRenew::default(),
            ids: Mutex::new(uuid::ContextV7::new()),
        }
    }

    /// Sets how self-renewal retries are judged.
    #[must_use]
    pub fn with_self_renew(mut self, self_renew: SelfRenew) -> Self {
        self.self_renew = self_renew;
        self
    }

    /// Creates a token; the secret is returned here and never again.
    ///
    /// # Errors
    /// `InvalidArgument` naming the first bad field; `FailedPrecondition` if
    /// the owner is disabled; `ResourceExhausted` naming the creation limit
    /// reached; store faults.
    pub async fn create(
        &self,
        new: NewToken,
        actor: Actor,
    ) -> Result<(TokenRecord, Secret), Error> {
        let now = self.clock.now();
        let (record, secret, digest) = self.prepare(new, now)?;

        let txn = self.store.begin().await?;
        self.admit(&txn, &record.owner, now, Gain::Creation).await?;
        txn.insert_token(&self.row(&record, &digest)).await?;
        txn.insert_event(&self.event(
            EventKind::Created,
            &record,
            actor,
            now,
            created_detail(&record),
        ))
        .await?;
        txn.commit().await?;
        tracing::info!(token_id = %record.id, owner = ?record.owner, %actor, "token created");
        Ok((record, secret))
    }

    /// Creates many tokens in one transaction with batched inserts, each with
    /// its CREATED event: for loading a token store (benchmarks, migrations
    /// from another system). Fields are checked as CreateToken checks them;
    /// creation limits do not apply.
    ///
    /// # Errors
    /// `InvalidArgument` naming the first bad field (nothing is written);
    /// store faults (nothing is written).
    pub async fn bulk_create(
        &self,
        batch: Vec<NewToken>,
        actor: Actor,
    ) -> Result<Vec<(TokenRecord, Secret)>, Error> {
        let now = self.clock.now();
        let mut minted = Vec::with_capacity(batch.len());
        for new in batch {
            minted.push(self.prepare(new, now)?);
        }
        let rows: Vec<NewRow<'_>> = minted
            .iter()
            .map(|(record, _, digest)| self.row(record, digest))
            .collect();
        let events: Vec<Event> = minted
            .iter()
            .map(|(record, _, _)| {
                self.event(
                    EventKind::Created,
                    record,
                    actor,
                    now,
                    created_detail(record),
                )
            })
            .collect();
        let txn = self.store.begin().await?;
        txn.insert_tokens(&rows).await?;
        txn.insert_events(&events).await?;
        txn.commit().await?;
        Ok(minted
            .into_iter()
            .map(|(record, secret, _)| (record, secret))
            .collect())
    }

    /// # Errors
    /// `NotFound`; store faults.
    pub async fn get(&self, id: Uuid) -> Result<TokenRecord, Error> {
        self.store.get_token(id).await?.ok_or(Error::NotFound)
    }

    /// # Errors
    /// `InvalidArgument` for a bad page size or page token; store faults.
    pub async fn list(&self, query: ListQuery) -> Result<Page<TokenRecord>, Error> {
        let paging = Paging::new(
            query.page_size,
            &query.page_token,
            list_fingerprint(&query.filter),
        )?;
        let now = self.clock.now();
        let mut items = self
            .store
            .list_tokens(&query.filter, paging.after, paging.limit(), now)
            .await?;
        let next_page_token = paging.finish(&mut items, |t| crate::store::Cursor {
            time: t.create_time,
            id: t.id,
        });
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Applies the fields set in `patch`.
    ///
    /// # Errors
    /// `InvalidArgument` naming a bad field; `NotFound`; store faults.
    pub async fn update(
        &self,
        id: Uuid,
        patch: TokenPatch,
        actor: Actor,
    ) -> Result<TokenRecord, Error> {
        if let Some(name) = &patch.name {
            token::check_text("token.name", name, limits::MAX_NAME_CHARS, Text::Line)?;
        }
        if let Some(description) = &patch.description {
            token::check_text(
                "token.description",
                description,
                limits::MAX_DESCRIPTION_CHARS,
                Text::Prose,
            )?;
        }
        if let Some(metadata) = &patch.metadata {
            token::check_metadata("token.metadata", metadata)?;
        }
        let now = self.clock.now();
        let txn = self.store.begin().await?;
        let stored = txn
            .update_token(id, &patch, now)
            .await?
            .ok_or(Error::NotFound)?;
        let fields = [
            ("name", patch.name.is_some()),
            ("description", patch.description.is_some()),
            ("metadata", patch.metadata.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(f, _)| *f)
        .collect::<Vec<_>>()
        .join(",");
        let event = self.event(
            EventKind::Updated,
            &stored.record,
            actor,
            now,
            [("fields", fields)],
        );
        self.commit(txn, &event, &stored).await?;
        tracing::info!(token_id = %id, %actor, "token updated");
        Ok(stored.record)
    }

    /// Revokes at once. Idempotent: revoking a revoked token changes nothing
    /// and writes no event.
    ///
    /// # Errors
    /// `InvalidArgument` for an over-long reason; `NotFound`; store faults.
    pub async fn revoke(&self, id: Uuid, reason: &str, actor: Actor) -> Result<TokenRecord, Error> {
        token::check_text("reason", reason, limits::MAX_REASON_CHARS, Text::Prose)?;
        let now = self.clock.now();
        let txn = self.store.begin().await?;
        let Some(stored) = txn.revoke_token(id, reason, now).await? else {
            drop(txn);
            return self.get(id).await;
        };
        let event = self.event(
            EventKind::Revoked,
            &stored.record,
            actor,
            now,
            [("reason", reason.to_owned())],
        );
        self.commit(txn, &event, &stored).await?;
        tracing::info!(token_id = %id, %actor, "token revoked");
        Ok(stored.record)
    }

    /// Brings a revoked or inactive token back to ACTIVE and restarts its
    /// idle clock. An active token is returned unchanged.
    ///
    /// # Errors
    /// `FailedPrecondition` if the token has expired or was replaced by a
    /// renewal; `ResourceExhausted` if the owner already holds the most
    /// active tokens allowed; `NotFound`; store faults.
    pub async fn restore(&self, id: Uuid, actor: Actor) -> Result<TokenRecord, Error> {
        // Two rounds: if the token changed between the read and the
        // conditional write, judge it again as it now stands.
        for _ in 0..2 {
            let now = self.clock.now();
            let current = self.get(id).await?;
            let from = current.status(now);
            match from {
                Status::Active => return Ok(current),
                Status::Expired => return Err(expired_precondition()),
                Status::Revoked | Status::Inactive => {}
            }
            if current.replaced_by.is_some() {
                return Err(Error::FailedPrecondition(
                    "the token was replaced by a renewal and cannot be restored".into(),
                ));
            }
            if current.is_expired(now) {
                return Err(expired_precondition());
            }
            let txn = self.store.begin().await?;
            self.admit(&txn, &current.owner, now, Gain::Restore).await?;
            if let Some(stored) = txn.restore_token(id, now).await? {
                let event = self.event(
                    EventKind::Restored,
                    &stored.record,
                    actor,
                    now,
                    [("from", status_name(from).to_owned())],
                );
                self.commit(txn, &event, &stored).await?;
                tracing::info!(token_id = %id, %actor, "token restored");
                return Ok(stored.record);
            }
        }
        Err(Error::FailedPrecondition(
            "the token changed while it was being restored; try again".into(),
        ))
    }

    /// Deletes permanently, whatever the status.
    ///
    /// # Errors
    /// `NotFound`; store faults.
    pub async fn delete(&self, id: Uuid, actor: Actor) -> Result<(), Error> {
        let now = self.clock.now();
        let txn = self.store.begin().await?;
        let stored = txn.delete_token(id).await?.ok_or(Error::NotFound)?;
        let event = self.event(
            EventKind::Deleted,
            &stored.record,
            actor,
            now,
            [("name", stored.record.name.clone())],
        );
        self.commit(txn, &event, &stored).await?;
        tracing::info!(token_id = %id, %actor, "token deleted");
        Ok(())
    }

    /// Issues a new token in place of `renewal.id`: same owner, name,
    /// description, scopes, metadata and idle timeout; the old one's lifetime
    /// length unless told otherwise. The old token is revoked at once, or with
    /// a grace period keeps working until min(its expiry, now + grace).
    ///
    /// # Errors
    /// `InvalidArgument` for a bad expiry; `NotFound`; `FailedPrecondition` if
    /// the token is revoked or already replaced, or its owner is disabled;
    /// `ResourceExhausted` past the creation rate; store faults.
    pub async fn renew(
        &self,
        renewal: Renewal,
        actor: Actor,
    ) -> Result<(TokenRecord, Secret), Error> {
        self.renew_as(renewal, actor, Renewer::Admin).await
    }

    /// [`Lifecycle::renew`], with `on_replaced` deciding what a token that
    /// was already replaced gets.
    async fn renew_as(
        &self,
        renewal: Renewal,
        actor: Actor,
        renewer: Renewer,
    ) -> Result<(TokenRecord, Secret), Error> {
        let now = self.clock.now();
        let explicit = renewal
            .expiry
            .map(|e| self.expire_time(e, now))
            .transpose()?;
        let txn = self.store.begin().await?;
        let old = txn
            .get_token(renewal.id)
            .await?
            .ok_or(Error::NotFound)?
            .record;
        if let Some(by) = old.replaced_by {
            return match renewer {
                Renewer::Admin => Err(Error::FailedPrecondition(format!(
                    "the token was already replaced by {by} and cannot be renewed again"
                ))),
                Renewer::Holder => self.replayed(txn, old, now).await,
            };
        }
        if old.is_revoked() {
            return Err(Error::FailedPrecondition(
                "the token is revoked and cannot be renewed".into(),
            ));
        }
        let gain = if renewal.grace_period.is_zero() {
            Gain::Renewal
        } else {
            Gain::OverlappingRenewal
        };
        self.admit(&txn, &old.owner, now, gain).await?;
        let expire_time = match explicit {
            Some(t) => t,
            None => self.inherited_expiry(&old, now),
        };
        let (record, secret, digest) = self.mint_replacement(&old, expire_time, now, renewer)?;
        let retirement = if renewal.grace_period.is_zero() {
            Retirement::RevokeNow
        } else {
            let grace_end = now
                .checked_add(renewal.grace_period)
                .map_or(Timestamp::LATEST, |t| t.min(Timestamp::LATEST));
            Retirement::ExpireAt(old.expire_time.map_or(grace_end, |t| t.min(grace_end)))
        };
        let Some(retired) = txn
            .replace_token(old.id, record.id, retirement, now)
            .await?
        else {
            // Renewed (or revoked) by someone else since it was read: as it
            // now stands, under the owner's lock.
            if renewer == Renewer::Holder
                && let Some(now_stored) = txn.get_token(old.id).await?
                && now_stored.record.replaced_by.is_some()
            {
                return self.replayed(txn, now_stored.record, now).await;
            }
            return Err(Error::FailedPrecondition(
                "the token changed while it was being renewed; try again".into(),
            ));
        };
        txn.insert_token(&self.row(&record, &digest)).await?;
        let mut detail = BTreeMap::from([("replaced_by".to_owned(), record.id.to_string())]);
        match retirement {
            Retirement::RevokeNow => detail.insert("old_secret".into(), "revoked".into()),
            Retirement::ExpireAt(t) => detail.insert("old_secret_valid_until".into(), rfc3339(t)),
        };
        txn.insert_event(&self.event(EventKind::Renewed, &retired.record, actor, now, detail))
            .await?;
        let mut created = created_detail(&record);
        created.insert("replaces".into(), old.id.to_string());
        txn.insert_event(&self.event(EventKind::Created, &record, actor, now, created))
            .await?;
        txn.log_changes(&[Change::Token(retired.digest)], now)
            .await?;
        txn.commit().await?;
        self.cache.forget(&retired.digest);
        tracing::info!(token_id = %old.id, new_token_id = %record.id, %actor, "token renewed");
        Ok((record, secret))
    }

    /// # Errors
    /// `InvalidArgument` for a bad filter, page size or page token; store
    /// faults.
    pub async fn list_events(&self, query: EventQuery) -> Result<Page<Event>, Error> {
        if let Some(owner) = &query.filter.owner {
            token::check_owner("owner", owner)?;
        }
        let paging = Paging::new(
            query.page_size,
            &query.page_token,
            event_fingerprint(&query.filter),
        )?;
        let mut items = self
            .store
            .list_events(&query.filter, paging.after, paging.limit())
            .await?;
        let next_page_token = paging.finish(&mut items, |e| crate::store::Cursor {
            time: e.time,
            id: e.id,
        });
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Issues an admin token (scope `latchkey:admin`, owner `latchkey`)
    /// named `name`, lasting `ttl` (none: no expiry, unless `policy.max_ttl`
    /// requires one), with a CREATED event by [`Actor::System`].
    ///
    /// # Errors
    /// As [`Lifecycle::create`].
    pub async fn issue_admin_token(
        &self,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<(TokenRecord, Secret), Error> {
        let new = NewToken {
            owner: ADMIN_OWNER.to_owned(),
            name: name.to_owned(),
            description: "Issued by `latchkey admin-token issue`.".to_owned(),
            scopes: vec![ADMIN_SCOPE.to_owned()],
            metadata: BTreeMap::new(),
            expiry: ttl.map_or(Expiry::Never, Expiry::After),
            idle_timeout: None,
        };
        self.create(new, Actor::System).await
    }

    /// Locks `owner` for the rest of `txn` (which serialises its changes
    /// across replicas, so the counts below stay true until commit) and
    /// checks that it may gain a token this way.
    async fn admit(&self, txn: &Txn, owner: &str, now: Timestamp, gain: Gain) -> Result<(), Error> {
        let record = txn.lock_owner(owner, now).await?;
        if record.is_disabled() && gain != Gain::Restore {
            return Err(Error::FailedPrecondition(format!(
                "owner {owner:?} is disabled; enable it before giving it tokens"
            )));
        }
        let rate = self.limits.create_per_owner_per_minute;
        if rate > 0 && gain != Gain::Restore {
            let recent = txn
                .creations_since(owner, now.saturating_sub(RATE_WINDOW))
                .await?;
            if recent.count >= u64::from(rate) {
                let retry_after = recent.oldest.map(|t| {
                    t.checked_add(RATE_WINDOW)
                        .unwrap_or(Timestamp::MAX)
                        .saturating_since(now)
                });
                return Err(Error::ResourceExhausted {
                    limit: "limits.create_per_owner_per_minute",
                    subject: format!("owner:{owner}"),
                    message: format!(
                        "creation rate limit reached: owner {owner:?} was given {rate} tokens in the \
                         last minute, the most limits.create_per_owner_per_minute allows"
                    ),
                    retry_after,
                });
            }
        }
        let cap = self.limits.max_active_tokens_per_owner;
        if cap > 0 && gain != Gain::Renewal && txn.count_active(owner, now).await? >= u64::from(cap)
        {
            return Err(Error::ResourceExhausted {
                limit: "limits.max_active_tokens_per_owner",
                subject: format!("owner:{owner}"),
                message: format!(
                    "active token limit reached: owner {owner:?} holds {cap} active tokens, the \
                     most limits.max_active_tokens_per_owner allows (tokens in a renewal's grace \
                     period count); revoke or delete one first"
                ),
                retry_after: None,
            });
        }
        Ok(())
    }

    /// How many tokens are stored under each HMAC key id.
    ///
    /// # Errors
    /// Store faults.
    pub async fn tokens_by_key(&self) -> Result<Vec<(String, u64)>, Error> {
        Ok(self.store.tokens_by_key().await?)
    }

    /// Commits a change, its event and its change-log row, then drops the
    /// token's cache entry.
    async fn commit(&self, txn: Txn, event: &Event, stored: &StoredToken) -> Result<(), Error> {
        self.commit_tokens(
            txn,
            std::slice::from_ref(event),
            &[stored.digest],
            event.time,
        )
        .await
    }

    /// Commits changes to the tokens stored under `digests`, with `events`
    /// and a change-log row each, then drops their cache entries.
    async fn commit_tokens(
        &self,
        txn: Txn,
        events: &[Event],
        digests: &[Digest],
        now: Timestamp,
    ) -> Result<(), Error> {
        txn.insert_events(events).await?;
        let changes: Vec<Change> = digests.iter().copied().map(Change::Token).collect();
        txn.log_changes(&changes, now).await?;
        txn.commit().await?;
        for digest in digests {
            self.cache.forget(digest);
        }
        Ok(())
    }

    /// An event about `token`, with a fresh id.
    fn event<K: Into<String>>(
        &self,
        kind: EventKind,
        token: &TokenRecord,
        actor: Actor,
        now: Timestamp,
        detail: impl IntoIterator<Item = (K, String)>,
    ) -> Event {
        Event {
            id: self.new_id(now),
            time: now,
            kind,
            token_id: Some(token.id),
            owner: token.owner.clone(),
            actor: actor.to_string(),
            detail: detail.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        }
    }

    /// A UUIDv7 for `now`, after every id this process minted before.
    fn new_id(&self, now: Timestamp) -> Uuid {
        let (secs, nanos) = now.to_unix();
        let context = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        Uuid::new_v7(uuid::Timestamp::from_unix(
            &*context,
            u64::try_from(secs).unwrap_or(0),
            u32::try_from(nanos).unwrap_or(0),
        ))
    }

    /// Checks a CreateToken request's fields and policy, applies the default
    /// idle timeout, and mints the token.
    fn prepare(
        &self,
        new: NewToken,
        now: Timestamp,
    ) -> Result<(TokenRecord, Secret, Digest), Error> {
        token::check_owner("owner", &new.owner)?;
        token::check_text("name", &new.name, limits::MAX_NAME_CHARS, Text::Line)?;
        token::check_text(
            "description",
            &new.description,
            limits::MAX_DESCRIPTION_CHARS,
            Text::Prose,
        )?;
        token::check_scopes("scopes", &new.scopes)?;
        token::check_metadata("metadata", &new.metadata)?;
        let expire_time = self.expire_time(new.expiry, now)?;
        let new = NewToken {
            idle_timeout: new.idle_timeout.or(self.policy.default_idle_timeout),
            ..new
        };
        self.mint(new, expire_time, now)
    }

    /// Draws a secret and builds the record for it and its digest;
    /// `expire_time` is `new.expiry` already resolved against the clock and
    /// policy.
    fn mint(
        &self,
        new: NewToken,
        expire_time: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(TokenRecord, Secret, Digest), Error> {
        let secret = format::generate(&self.prefix)
            .map_err(|e| Error::Internal(anyhow::anyhow!("the OS random source failed: {e}")))?;
        let record = TokenRecord {
            name: new.name,
            description: new.description,
            scopes: new.scopes,
            metadata: new.metadata,
            display_hint: format::display_hint(&self.prefix, &secret),
            expire_time,
            idle_timeout: new.idle_timeout,
            ..TokenRecord::new(self.new_id(now), new.owner, now)
        };
        let digest = self.key.digest(secret.expose());
        Ok((record, secret, digest))
    }

    /// A new token in place of `old`: its owner, name, description, scopes,
    /// metadata and idle timeout, expiring at `expire_time`, linked to it as
    /// `renewer`'s renewal.
    fn mint_replacement(
        &self,
        old: &TokenRecord,
        expire_time: Option<Timestamp>,
        now: Timestamp,
        renewer: Renewer,
    ) -> Result<(TokenRecord, Secret, Digest), Error> {
        let (mut record, secret, digest) = self.mint(
            NewToken {
                owner: old.owner.clone(),
                name: old.name.clone(),
                description: old.description.clone(),
                scopes: old.scopes.clone(),
                metadata: old.metadata.clone(),
                expiry: Expiry::Never,
                idle_timeout: old.idle_timeout,
            },
            expire_time,
            now,
        )?;
        record.replaces = Some(old.id);
        record.self_renewed = renewer == Renewer::Holder;
        Ok((record, secret, digest))
    }

    /// The row that stores `record` under `digest`, made with this key.
    fn row<'a>(&'a self, record: &'a TokenRecord, digest: &'a Digest) -> NewRow<'a> {
        NewRow {
            record,
            digest,
            key_id: self.key.id(),
        }
    }

    /// A renewal's expiry when none is asked for: the old token's lifetime
    /// length from now, within `policy.max_ttl`.
    fn inherited_expiry(&self, old: &TokenRecord, now: Timestamp) -> Option<Timestamp> {
        let length = old
            .expire_time
            .map(|t| t.saturating_since(old.create_time))
            .or(self.policy.max_ttl);
        let length = match (length, self.policy.max_ttl) {
            (Some(l), Some(max)) => Some(l.min(max)),
            (l, _) => l,
        };
        length.map(|l| {
            now.checked_add(l)
                .map_or(Timestamp::LATEST, |t| t.min(Timestamp::LATEST))
        })
    }

    /// The absolute expiry for `expiry`, checked against the clock and policy.
    fn expire_time(&self, expiry: Expiry, now: Timestamp) -> Result<Option<Timestamp>, Error> {
        let (field, at) = match expiry {
            Expiry::Never => {
                return match self.policy.max_ttl {
                    Some(max) => Err(Error::invalid(
                        "ttl",
                        format!(
                            "is required: policy.max_ttl allows at most {}",
                            humantime::format_duration(max)
                        ),
                    )),
                    None => Ok(None),
                };
            }
            Expiry::After(ttl) => ("ttl", now.checked_add(ttl).unwrap_or(Timestamp::MAX)),
            Expiry::At(at) => {
                if at <= now {
                    return Err(Error::invalid("expire_time", "must be in the future"));
                }
                ("expire_time", at)
            }
        };
        if at > Timestamp::LATEST {
            return Err(Error::invalid(
                field,
                "puts the expiry after 9999-12-31T23:59:59Z, the latest time a timestamp can carry",
            ));
        }
        if let Some(max) = self.policy.max_ttl
            && at.saturating_since(now) > max
        {
            return Err(Error::invalid(
                field,
                format!(
                    "exceeds policy.max_ttl of {}",
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(Some(at))
    }
}

fn expired_precondition() -> Error {
    Error::FailedPrecondition("the token has expired and cannot be restored".into())
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Active => "ACTIVE",
        Status::Revoked => "REVOKED",
        Status::Expired => "EXPIRED",
        Status::Inactive => "INACTIVE",
    }
}

/// What a CREATED event records: the token's name, scopes and expiry.
fn created_detail(r: &TokenRecord) -> BTreeMap<String, String> {
    let mut d = BTreeMap::from([("name".to_owned(), r.name.clone())]);
    if !r.scopes.is_empty() {
        d.insert("scopes".into(), r.scopes.join(" "));
    }
    if let Some(t) = r.expire_time {
        d.insert("expire_time".into(), rfc3339(t));
    }
    if let Some(idle) = r.idle_timeout {
        d.insert(
            "idle_timeout".into(),
            humantime::format_duration(idle).to_string(),
        );
    }
    d
}

/// RFC 3339 in UTC, to the microsecond.
fn rfc3339(t: Timestamp) -> String {
    let micros = u64::try_from(t.min(Timestamp::LATEST).as_micros()).unwrap_or(0);
    humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + Duration::from_micros(micros))
        .to_string()
}

fn list_fingerprint(filter: &ListFilter) -> u32 {
    let mut statuses = filter.statuses.clone();
    statuses.sort();
    statuses.dedup();
    let statuses: Vec<u8> = statuses.into_iter().map(|s| s as u8).collect();
    let owner = filter.owner.as_deref().map(str::as_bytes);
    paging::fingerprint([
        b"tokens".as_slice(),
        owner.map_or(b"*".as_slice(), |o| o),
        if owner.is_some() { b"o" } else { b"-" },
        &statuses,
    ])
}

fn event_fingerprint(filter: &EventFilter) -> u32 {
    let id = filter.token_id.map(|u| *u.as_bytes());
    let owner = filter.owner.as_deref().map(str::as_bytes);
    paging::fingerprint([
        b"events".as_slice(),
        id.as_ref().map_or(b"-".as_slice(), |b| b.as_slice()),
        owner.map_or(b"-".as_slice(), |o| o),
        if owner.is_some() { b"o" } else { b"-" },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_filter_fingerprint_ignores_order_and_repeats() {
        let f = |s: Vec<Status>| {
            list_fingerprint(&ListFilter {
                owner: None,
                statuses: s,
            })
        };
        assert_eq!(
            f(vec![Status::Revoked, Status::Active]),
            f(vec![Status::Active, Status::Revoked, Status::Active])
        );
        assert_ne!(f(vec![Status::Active]), f(vec![Status::Revoked]));
    }

    #[test]
    fn owner_filters_fingerprint_apart_from_no_filter() {
        let f = |owner: Option<&str>| {
            list_fingerprint(&ListFilter {
                owner: owner.map(str::to_owned),
                statuses: vec![],
            })
        };
        assert_ne!(f(Some("*")), f(None));
        assert_ne!(f(Some("a")), f(Some("b")));
    }
}
