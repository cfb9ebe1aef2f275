//! Self-service: a token renewing or revoking itself, and reuse detection.
//!
//! A token that renews itself (RenewSelf) continues a *chain*: the new token
//! is linked to the old one as a self-renewal. A replaced token of the chain
//! is never renewed again. If its holder presents it for renewal anyway, two
//! parties hold the chain (the device that renewed, and whoever copied an
//! older secret), so every token of the chain is revoked, each with an audit
//! event saying why: the refresh-token reuse detection of OAuth 2.0 Security
//! BCP (RFC 9700, 4.14.2), applied to long-lived tokens.
//!
//! Two narrowings keep it from hurting the holder it protects:
//!
//! - Only self-renewal links count. An admin renewal (RenewToken, the usual
//!   answer to a leak) or a restore starts a new chain, so a secret from
//!   before it is outside the current chain: presenting it is
//!   UNAUTHENTICATED and changes nothing.
//! - A retry is not a reuse. A device whose RenewSelf answer was lost
//!   presents the old secret again; if that comes within
//!   `self_renew.retry_window` and the replacement was never used (no use
//!   recorded in the database or seen by this replica), the unused
//!   replacement is revoked and a fresh one issued (the graceful refresh
//!   rotation of Ory Hydra). Once the replacement has been used, the old
//!   secret coming back is a reuse again.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use uuid::Uuid;

use crate::audit::EventKind;
use crate::auth::Actor;
use crate::changes::Change;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::store::{StoredToken, Txn};
use crate::token::{SELF_RENEW_SCOPE, Secret, TokenRecord};

use super::Lifecycle;
use super::requests::{Gain, Renewal, Renewer};

/// The revoke reason of a token the holder revoked without giving one.
pub const SELF_REVOKE_REASON: &str = "revoked by its holder";

impl Lifecycle {
    /// Renews token `id` for its own holder, as [`Lifecycle::renew`] does
    /// with the old lifetime's length. `valid` says whether the token
    /// verified as VALID when presented. A token that was already replaced
    /// is judged by [`Lifecycle::replayed`], whatever it verified as.
    ///
    /// # Errors
    /// `InvalidArgument` for a grace period over `policy.max_self_renew_grace`;
    /// `Unauthenticated` for a token that is not valid (and not replaced),
    /// or one replaced outside its current chain; `TokenReused` if it was
    /// replaced within its chain and this is no retry (the chain is now
    /// revoked); otherwise as [`Lifecycle::renew`].
    #[tracing::instrument(skip_all, fields(token_id = %id))]
    pub async fn renew_self(
        &self,
        id: Uuid,
        grace_period: Duration,
        valid: bool,
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
        if !valid {
            let txn = self.store.begin().await?;
            let Some(stored) = txn.get_token(id).await? else {
                return Err(Error::Unauthenticated);
            };
            if stored.record.replaced_by.is_none() {
                return Err(Error::Unauthenticated);
            }
            return self.replayed(txn, stored.record, self.clock.now()).await;
        }
        let renewal = Renewal {
            id,
            grace_period,
            expiry: None,
        };
        self.renew_as(renewal, Actor::Token(id), Renewer::Holder)
            .await
    }

    /// A replaced token presented for renewal by its holder: outside its
    /// current chain, refused with no side effect; the retry of a renewal
    /// whose replacement was never used, a fresh replacement; otherwise a
    /// reuse, which revokes the chain. Commits or drops `txn`.
    pub(super) async fn replayed(
        &self,
        txn: Txn,
        presented: TokenRecord,
        now: Timestamp,
    ) -> Result<(TokenRecord, Secret), Error> {
        // Forward to the chain's newest token, along self-renewals only.
        let mut forward: Vec<StoredToken> = Vec::new();
        let mut seen = HashSet::from([presented.id]);
        let mut next = presented.replaced_by;
        while let Some(id) = next {
            let Some(stored) = txn.get_token(id).await? else {
                // Deleted: the chain was ended by an admin.
                return Err(Error::Unauthenticated);
            };
            if !stored.record.self_renewed || !seen.insert(id) {
                return Err(Error::Unauthenticated);
            }
            next = stored.record.replaced_by;
            forward.push(stored);
        }
        if !presented.scopes.iter().any(|s| s == SELF_RENEW_SCOPE) {
            return Err(Error::Unauthenticated);
        }
        if let [head] = forward.as_slice()
            && self.never_used_since_renewal(head, now)
        {
            return self.retry_renewal(txn, &presented, head, now).await;
        }
        Err(self.revoke_chain(txn, &presented, &forward, now).await?)
    }

    /// Whether `head`, issued by a self-renewal, is young enough for a retry
    /// of that renewal and was never presented: no use written, none seen
    /// by this replica, not revoked.
    fn never_used_since_renewal(&self, head: &StoredToken, now: Timestamp) -> bool {
        let window = self.self_renew.retry_window;
        let record = &head.record;
        !window.is_zero()
            && now.saturating_since(record.create_time) <= window
            && record.last_used_time.is_none()
            && !record.is_revoked()
            && !self.cache.seen_in_use(&head.digest)
    }

    /// Issues a fresh replacement for `presented` in place of `unused`,
    /// which is revoked. If `unused` turns out to have been used after all
    /// (its use written meanwhile), this is a reuse.
    async fn retry_renewal(
        &self,
        txn: Txn,
        presented: &TokenRecord,
        unused: &StoredToken,
        now: Timestamp,
    ) -> Result<(TokenRecord, Secret), Error> {
        let actor = Actor::Token(presented.id);
        self.admit(&txn, &presented.owner, now, Gain::Renewal)
            .await?;
        let reason = format!(
            "superseded: the renewal of {} was retried before this token was used",
            presented.id
        );
        let Some(revoked) = txn
            .revoke_unused_token(unused.record.id, &reason, now)
            .await?
        else {
            return Err(self
                .revoke_chain(txn, presented, std::slice::from_ref(unused), now)
                .await?);
        };
        let old = &unused.record;
        // The unused replacement's lifetime, on a copy of the presented token.
        let (mut record, secret, digest) =
            self.mint_replacement(presented, old.expire_time, now, Renewer::Holder)?;
        // The unused replacement is revoked below: its credits come along.
        record.credits = txn.lock_credits(old.id).await?.map(|c| c.carried_over(now));
        let Some(relinked) = txn
            .relink_token(presented.id, old.id, record.id, now)
            .await?
        else {
            return Err(Error::FailedPrecondition(
                "the token changed while its renewal was retried; try again".into(),
            ));
        };
        txn.insert_token(&self.row(&record, &digest)).await?;
        let events = [
            self.event(
                EventKind::Revoked,
                &revoked.record,
                actor,
                now,
                [("reason", reason.clone())],
            ),
            self.event(
                EventKind::Renewed,
                &relinked.record,
                actor,
                now,
                [
                    ("replaced_by", record.id.to_string()),
                    ("retry_of", old.id.to_string()),
                ],
            ),
            self.event(
                EventKind::Created,
                &record,
                actor,
                now,
                super::writing::created_detail(&record)
                    .into_iter()
                    .chain([("replaces".to_owned(), presented.id.to_string())]),
            ),
        ];
        for event in &events {
            txn.insert_event(event).await?;
        }
        txn.log_changes(
            &[
                Change::Token(revoked.digest),
                Change::Token(relinked.digest),
            ],
            now,
        )
        .await?;
        txn.commit().await?;
        self.cache.forget(&revoked.digest);
        self.cache.forget(&relinked.digest);
        tracing::info!(
            token_id = %presented.id,
            superseded = %old.id,
            new_token_id = %record.id,
            "a self-renewal was retried before its replacement was used; issued a fresh one"
        );
        Ok((record, secret))
    }

    /// Revokes every token of `presented`'s chain (the self-renewals that
    /// led to it, it, and `forward`, the ones after it), with an event each,
    /// and commits `txn`. Returns the error to answer.
    async fn revoke_chain(
        &self,
        txn: Txn,
        presented: &TokenRecord,
        forward: &[StoredToken],
        now: Timestamp,
    ) -> Result<Error, Error> {
        let mut chain = vec![presented.id];
        let mut current = presented.clone();
        let mut seen = HashSet::from([presented.id]);
        while current.self_renewed
            && let Some(id) = current.replaces.filter(|id| seen.insert(*id))
            && let Some(stored) = txn.get_token(id).await?
        {
            chain.push(id);
            current = stored.record;
        }
        chain.extend(forward.iter().map(|t| t.record.id));
        let reason = format!(
            "reuse detected: token {} was presented for renewal after it had been replaced, so a \
             secret of its renewal chain has leaked",
            presented.id
        );
        let actor = Actor::Token(presented.id);
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
