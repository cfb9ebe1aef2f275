//! Renewing a token: a new secret, and the old one revoked at once or kept
//! for a grace period (by an admin, or by the token's holder through
//! [`super::self_renewal`]).

use std::collections::BTreeMap;

use super::Lifecycle;
use super::requests::{Expiry, Gain, NewToken, Renewal, Renewer};
use super::writing::{created_detail, rfc3339};
use crate::audit::EventKind;
use crate::auth::Actor;
use crate::changes::Change;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::store::Retirement;
use crate::token::{Digest, Secret, TokenRecord};

impl Lifecycle {
    /// Issues a new token in place of `renewal.id`: same owner, name,
    /// description, scopes, metadata and idle timeout; the old one's lifetime
    /// length unless told otherwise. The old token is revoked at once, or with
    /// a grace period keeps working until min(its expiry, now + grace).
    ///
    /// # Errors
    /// `InvalidArgument` for a bad expiry; `NotFound`; `FailedPrecondition` if
    /// the token is revoked or already replaced, or its owner is disabled;
    /// `ResourceExhausted` past the creation rate; store faults.
    #[tracing::instrument(skip_all, fields(token_id = %renewal.id))]
    pub async fn renew(
        &self,
        renewal: Renewal,
        actor: Actor,
    ) -> Result<(TokenRecord, Secret), Error> {
        self.renew_as(renewal, actor, Renewer::Admin).await
    }

    /// [`Lifecycle::renew`], with `on_replaced` deciding what a token that
    /// was already replaced gets.
    pub(super) async fn renew_as(
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
        let (mut record, secret, digest) =
            self.mint_replacement(&old, expire_time, now, renewer)?;
        record.credits = txn.lock_credits(old.id).await?.map(|c| c.carried_over(now));
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

    /// A new token in place of `old`: its owner, name, description, scopes,
    /// metadata and idle timeout, expiring at `expire_time`, linked to it as
    /// `renewer`'s renewal.
    pub(super) fn mint_replacement(
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
                credits: None,
                rate_limits: old.rate_limits.clone(),
            },
            expire_time,
            now,
        )?;
        record.replaces = Some(old.id);
        record.self_renewed = renewer == Renewer::Holder;
        Ok((record, secret, digest))
    }

    /// A renewal's expiry when none is asked for: the old token's lifetime
    /// length from now, within `policy.max_ttl`.
    pub(super) fn inherited_expiry(&self, old: &TokenRecord, now: Timestamp) -> Option<Timestamp> {
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
}
