//! Self-service: a token renewing or revoking itself, and reuse detection.
//!
//! A token replaced by a renewal is never renewed again. If its holder
//! presents it for renewal anyway, two parties hold the chain (the device
//! that renewed, and whoever copied an older secret), so every token of the
//! renewal chain is revoked, each with an audit event saying why. This is
//! the refresh-token reuse detection of OAuth 2.0 Security BCP (RFC 9700,
//! 4.14.2), applied to long-lived tokens.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use uuid::Uuid;

use crate::audit::EventKind;
use crate::auth::Actor;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::store::Txn;
use crate::token::{Secret, TokenRecord};

use super::{Lifecycle, OnReplaced, Renewal};

/// The revoke reason of a token the holder revoked without giving one.
pub const SELF_REVOKE_REASON: &str = "revoked by its holder";

impl Lifecycle {
    /// Renews token `id` for its own holder, as [`Lifecycle::renew`] does
    /// with the old lifetime's length; if it was already replaced, revokes
    /// its renewal chain instead.
    ///
    /// # Errors
    /// `InvalidArgument` for a grace period over `policy.max_self_renew_grace`;
    /// `TokenReused` if the token was already replaced (its chain is now
    /// revoked); otherwise as [`Lifecycle::renew`].
    pub async fn renew_self(
        &self,
        id: Uuid,
        grace_period: Duration,
    ) -> Result<(TokenRecord, Secret), Error> {
        let max = self.policy.max_self_renew_grace;
        if grace_period > max {
            return Err(Error::invalid(
                "grace_period",
                format!(
                    "exceeds policy.max_self_renew_grace of {}",
                    humantime::format_duration(max)
                ),
            ));
        }
        let renewal = Renewal {
            id,
            grace_period,
            expiry: None,
        };
        self.renew_as(renewal, Actor::Token(id), OnReplaced::RevokeChain)
            .await
    }

    /// Reuse detection for a token that did not verify as valid (revoked or
    /// expired by its renewal, say): if it was replaced, revokes its chain.
    ///
    /// # Errors
    /// `TokenReused` if it was replaced (its chain is now revoked); store
    /// faults.
    pub async fn detect_reuse(&self, id: Uuid) -> Result<(), Error> {
        let txn = self.store.begin().await?;
        match txn.get_token(id).await? {
            Some(stored) if stored.record.replaced_by.is_some() => Err(self
                .revoke_chain(txn, &stored.record, Actor::Token(id), self.clock.now())
                .await?),
            _ => Ok(()),
        }
    }

    /// Revokes every token linked to `presented` by renewal, both ways,
    /// with an event each, and commits `txn`. Returns the error to answer.
    pub(super) async fn revoke_chain(
        &self,
        txn: Txn,
        presented: &TokenRecord,
        actor: Actor,
        now: Timestamp,
    ) -> Result<Error, Error> {
        let chain = chain_of(&txn, presented).await?;
        let reason = format!(
            "reuse detected: token {} was presented for renewal after it had been replaced, so a \
             secret of its renewal chain has leaked",
            presented.id
        );
        let mut events = Vec::new();
        let mut digests = Vec::new();
        for id in chain {
            if let Some(stored) = txn.revoke_token(id, &reason, now).await? {
                let detail = BTreeMap::from([
                    ("reason", reason.clone()),
                    ("reused_token_id", presented.id.to_string()),
                ]);
                events.push(self.event(EventKind::Revoked, &stored.record, actor, now, detail));
                digests.push(stored.digest);
            }
        }
        self.commit_tokens(txn, &events, &digests, now).await?;
        tracing::warn!(
            token_id = %presented.id,
            owner = ?presented.owner,
            revoked = events.len(),
            "a replaced token was presented for renewal; its renewal chain is revoked"
        );
        Ok(Error::TokenReused)
    }
}

/// The ids of every token reachable from `from` through `replaces` and
/// `replaced_by`, `from` included. Deleted tokens end a walk.
async fn chain_of(txn: &Txn, from: &TokenRecord) -> Result<Vec<Uuid>, Error> {
    let mut seen = HashSet::from([from.id]);
    let mut chain = vec![from.id];
    for backwards in [true, false] {
        let link = |r: &TokenRecord| if backwards { r.replaces } else { r.replaced_by };
        let mut next = link(from);
        while let Some(id) = next.filter(|id| seen.insert(*id)) {
            let Some(stored) = txn.get_token(id).await? else {
                break;
            };
            chain.push(id);
            next = link(&stored.record);
        }
    }
    Ok(chain)
}
