//! Owners: disable, enable, read, and delete every token of one.
//!
//! Disabling or enabling an owner changes how all of its tokens verify, so
//! after the change commits every cached answer about them is dropped, with
//! the same race-safe invalidation a revoke uses; the owner's tokens keep
//! their own status.

use crate::audit::{Event, EventKind};
use crate::auth::Actor;
use crate::changes::Change;
use crate::error::Error;
use crate::owner::{OwnerRecord, TokenCounts};
use crate::token::{self, Text, limits};
use latchkey_core::limit::{RateLimit, check_rate_limits};

use super::Lifecycle;

impl Lifecycle {
    /// The owner's record (enabled if it has none) and its tokens by status.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad owner; store faults.
    #[tracing::instrument(skip_all, fields(owner = ?owner))]
    pub async fn get_owner(&self, owner: &str) -> Result<(OwnerRecord, TokenCounts), Error> {
        token::check_owner("owner", owner)?;
        let record = self
            .store
            .get_owner(owner)
            .await?
            .unwrap_or_else(|| OwnerRecord::enabled(owner));
        let now = self.clock.now();
        let mut counts = TokenCounts::default();
        for t in self.store.owner_tokens(owner).await? {
            counts.add(t.status(now));
        }
        Ok((record, counts))
    }

    /// Disables the owner: its tokens verify as OWNER_DISABLED until
    /// [`Lifecycle::enable_owner`]. Disabling a disabled owner changes nothing.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad owner or reason; store faults.
    #[tracing::instrument(skip_all, fields(owner = ?owner))]
    pub async fn disable_owner(
        &self,
        owner: &str,
        reason: &str,
        actor: Actor,
    ) -> Result<(OwnerRecord, TokenCounts), Error> {
        token::check_owner("owner", owner)?;
        token::check_text("reason", reason, limits::MAX_REASON_CHARS, Text::Prose)?;
        self.set_owner_disabled(owner, Some(reason), actor).await?;
        self.get_owner(owner).await
    }

    /// Enables the owner again. Enabling an enabled owner changes nothing.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad owner; store faults.
    #[tracing::instrument(skip_all, fields(owner = ?owner))]
    pub async fn enable_owner(
        &self,
        owner: &str,
        actor: Actor,
    ) -> Result<(OwnerRecord, TokenCounts), Error> {
        token::check_owner("owner", owner)?;
        self.set_owner_disabled(owner, None, actor).await?;
        self.get_owner(owner).await
    }

    /// Deletes every token of the owner (the owner left the system); one
    /// DELETED event per token. Returns how many there were.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad owner; store faults.
    #[tracing::instrument(skip_all, fields(owner = ?owner))]
    pub async fn delete_owner_tokens(&self, owner: &str, actor: Actor) -> Result<u64, Error> {
        token::check_owner("owner", owner)?;
        let now = self.clock.now();
        let txn = self.store.begin().await?;
        let deleted = txn.delete_owner_tokens(owner).await?;
        let events: Vec<Event> = deleted
            .iter()
            .map(|stored| {
                self.event(
                    EventKind::Deleted,
                    &stored.record,
                    actor,
                    now,
                    [
                        ("name", stored.record.name.clone()),
                        ("cause", "DeleteOwnerTokens".to_owned()),
                    ],
                )
            })
            .collect();
        let digests: Vec<_> = deleted.iter().map(|stored| stored.digest).collect();
        self.commit_tokens(txn, &events, &digests, now).await?;
        tracing::info!(?owner, tokens = deleted.len(), %actor, "owner's tokens deleted");
        Ok(u64::try_from(deleted.len()).unwrap_or(u64::MAX))
    }

    /// Replaces the rate limits shared by the owner's tokens (empty: none),
    /// with a LIMITS_CHANGED event. Setting the same limits changes nothing.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad owner or limit, naming the field; store
    /// faults.
    #[tracing::instrument(skip_all, fields(owner = ?owner))]
    pub async fn set_owner_limits(
        &self,
        owner: &str,
        rate_limits: &[RateLimit],
        actor: Actor,
    ) -> Result<(OwnerRecord, TokenCounts), Error> {
        token::check_owner("owner", owner)?;
        check_rate_limits("rate_limits", rate_limits)?;
        let now = self.clock.now();
        let txn = self.store.begin().await?;
        if txn
            .set_owner_rate_limits(owner, rate_limits, now)
            .await?
            .is_some()
        {
            let described = super::describe_rate_limits(rate_limits);
            txn.insert_event(&Event {
                id: self.new_id(now),
                time: now,
                kind: EventKind::LimitsChanged,
                token_id: None,
                owner: owner.to_owned(),
                actor: actor.to_string(),
                detail: [("rate_limits".to_owned(), described)].into(),
            })
            .await?;
            txn.log_changes(&[Change::Owner(owner.to_owned())], now)
                .await?;
            txn.commit().await?;
            crate::verifier::forget_owner(&self.store, self.cache.as_ref(), owner).await;
            tracing::info!(?owner, limits = rate_limits.len(), %actor, "owner's rate limits set");
        } else {
            // Unchanged: let go of the owner's row before reading it.
            drop(txn);
        }
        self.get_owner(owner).await
    }

    async fn set_owner_disabled(
        &self,
        owner: &str,
        reason: Option<&str>,
        actor: Actor,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let txn = self.store.begin().await?;
        let changed = txn
            .set_owner_disabled(owner, reason.map(|r| (now, r)), now)
            .await?;
        if changed.is_none() {
            return Ok(());
        }
        let (kind, detail) = match reason {
            Some(r) => (
                EventKind::OwnerDisabled,
                [("reason".to_owned(), r.to_owned())].into(),
            ),
            None => (EventKind::OwnerEnabled, Default::default()),
        };
        txn.insert_event(&Event {
            id: self.new_id(now),
            time: now,
            kind,
            token_id: None,
            owner: owner.to_owned(),
            actor: actor.to_string(),
            detail,
        })
        .await?;
        txn.log_changes(&[Change::Owner(owner.to_owned())], now)
            .await?;
        txn.commit().await?;
        crate::verifier::forget_owner(&self.store, self.cache.as_ref(), owner).await;
        tracing::info!(?owner, disabled = reason.is_some(), %actor, "owner changed");
        Ok(())
    }
}
