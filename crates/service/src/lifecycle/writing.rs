//! What every change goes through: the owner's admission (disabled, rate,
//! active cap), minting and checking a new token's fields, its expiry, and
//! the commit with its audit events and change-log rows, after which this
//! process's cache entries are dropped.

use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::time::Duration;

use uuid::Uuid;

use super::Lifecycle;
use super::requests::{Expiry, Gain, NewToken};
use super::settings::RATE_WINDOW;
use crate::audit::{Event, EventKind};
use crate::auth::Actor;
use crate::changes::Change;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::store::{NewRow, StoredToken, Txn};
use crate::token::{self, Digest, Secret, Status, Text, TokenRecord, format, limits};
use latchkey_core::limit::{Credits, check_credits, check_rate_limits};

impl Lifecycle {
    /// Locks `owner` for the rest of `txn` (which serialises its changes
    /// across replicas, so the counts below stay true until commit) and
    /// checks that it may gain a token this way.
    pub(super) async fn admit(
        &self,
        txn: &Txn,
        owner: &str,
        now: Timestamp,
        gain: Gain,
    ) -> Result<(), Error> {
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

    /// Commits a change, its event and its change-log row, then drops the
    /// token's cache entry.
    pub(super) async fn commit(
        &self,
        txn: Txn,
        event: &Event,
        stored: &StoredToken,
    ) -> Result<(), Error> {
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
    pub(super) async fn commit_tokens(
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
    pub(super) fn event<K: Into<String>>(
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
    pub(super) fn new_id(&self, now: Timestamp) -> Uuid {
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
    pub(super) fn prepare(
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
        if let Some(c) = &new.credits {
            check_credits("credits", c.remaining, c.refill)?;
        }
        check_rate_limits("rate_limits", &new.rate_limits)?;
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
    pub(super) fn mint(
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
            credits: new
                .credits
                .map(|c| Credits::new(c.remaining, c.refill, now, 0)),
            rate_limits: new.rate_limits,
            ..TokenRecord::new(self.new_id(now), new.owner, now)
        };
        let digest = self.key.digest(secret.expose());
        Ok((record, secret, digest))
    }

    /// The row that stores `record` under `digest`, made with this key.
    pub(super) fn row<'a>(&'a self, record: &'a TokenRecord, digest: &'a Digest) -> NewRow<'a> {
        NewRow {
            record,
            digest,
            key_id: self.key.id(),
        }
    }

    /// The absolute expiry for `expiry`, checked against the clock and policy.
    pub(super) fn expire_time(
        &self,
        expiry: Expiry,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, Error> {
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

pub(super) fn expired_precondition() -> Error {
    Error::FailedPrecondition("the token has expired and cannot be restored".into())
}

pub(super) fn status_name(s: Status) -> &'static str {
    match s {
        Status::Active => "ACTIVE",
        Status::Revoked => "REVOKED",
        Status::Expired => "EXPIRED",
        Status::Inactive => "INACTIVE",
    }
}

/// What a CREATED event records: the token's name, scopes and expiry.
pub(super) fn created_detail(r: &TokenRecord) -> BTreeMap<String, String> {
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
pub(super) fn rfc3339(t: Timestamp) -> String {
    let micros = u64::try_from(t.min(Timestamp::LATEST).as_micros()).unwrap_or(0);
    humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + Duration::from_micros(micros))
        .to_string()
}
