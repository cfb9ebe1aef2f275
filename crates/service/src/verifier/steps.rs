//! Verify's steps: the token's shape, its digest, the cached answer, the
//! verdict and what the token's held limits allow, none of which waits
//! ([`Verifier::verify_cached`] is all of them, answering a cache hit
//! without a future), and the same with the database read where the cache
//! cannot answer ([`Verifier::verify_waiting`]).

use std::sync::Arc;
use std::time::Instant;

use super::{Known, Snapshot, Verification, Verifier};
use crate::cache::{Cached, Lookup};
use crate::client::ClientRef;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::limits::{Limits, Outcome, Spending};
use crate::token::{self, Digest, Status, format, scope};
use crate::verdict::Verdict;

/// What the cache says of a token.
enum Looked {
    /// An answer with no token (MALFORMED, UNKNOWN).
    Answer(Verdict),
    /// A token the cache holds.
    Known(Arc<Snapshot>),
    /// The database has to be read, as this says.
    Fill(Digest, Fill),
    /// The database has to be read, and this call may not wait for it.
    Wait,
}

/// Why the database is read.
enum Fill {
    /// The token's answer is live but due to be read again, and this call
    /// took the reading: the cached answer stands if it fails.
    Refresh(Arc<Snapshot>),
    /// The answer lapsed, and this call took the reading.
    Lapsed(Arc<Snapshot>),
    /// Nothing usable is cached: a lookup, within the bounds on lookups.
    Admitted,
}

/// A verdict, or a VALID one whose credits or rate limits need more than
/// this replica holds.
enum Judged {
    Done(Verification),
    Spend(Partial),
}

/// A verdict before its spending.
struct Partial {
    snapshot: Arc<Snapshot>,
    status: Status,
    verdict: Verdict,
    missing_scopes: Vec<String>,
    at: Timestamp,
}

impl Partial {
    /// The limits to spend from (only a token with limits is spent from).
    fn limits(&self) -> &Limits {
        self.snapshot
            .limits
            .as_deref()
            .expect("only a token with limits spends")
    }
}

impl Verifier {
    /// [`Verifier::verify_spending`], reading the database where it must.
    pub(super) async fn verify_waiting(
        &self,
        token: &str,
        required_scopes: &[impl AsRef<str> + Sync],
        cost: u64,
        client: Option<ClientRef<'_>>,
    ) -> Result<Verification, Error> {
        token::check_scopes("required_scopes", required_scopes)?;
        let snapshot = match self.look(token, true) {
            Looked::Answer(verdict) => return Ok(Verification::without_token(verdict)),
            Looked::Known(snapshot) => snapshot,
            Looked::Fill(digest, fill) => match self.fill_as(token, digest, fill).await? {
                Cached::Known(snapshot) => snapshot,
                Cached::Unknown => return Ok(Verification::without_token(Verdict::Unknown)),
            },
            Looked::Wait => unreachable!("a call that may wait is never told to"),
        };
        match self.judge(snapshot, required_scopes, cost, client) {
            Judged::Done(answer) => Ok(answer),
            Judged::Spend(judged) => {
                let spent = self
                    .allowances
                    .spend(judged.limits(), cost, judged.at)
                    .await?;
                Ok(self.settle(judged, Some(spent)))
            }
        }
    }

    /// The database read [`Verifier::look`] called for.
    async fn fill_as(
        &self,
        token: &str,
        digest: Digest,
        fill: Fill,
    ) -> Result<Cached<Snapshot>, Error> {
        match fill {
            // One call reads a token in use again before its answer lapses,
            // ahead of every lookup the bounds hold back; if the database
            // cannot answer, the cached answer stands.
            Fill::Refresh(snapshot) => match self.fill(token, digest).await {
                Ok(fresh) => Ok(fresh),
                Err(_) => {
                    snapshot.release_refresh();
                    Ok(Cached::Known(snapshot))
                }
            },
            // A token this cache knew goes ahead of unknown digests too.
            Fill::Lapsed(snapshot) => {
                let fresh = self.fill(token, digest).await;
                if fresh.is_err() {
                    snapshot.release_refresh();
                }
                fresh
            }
            Fill::Admitted => {
                let _admitted = self.lookups.admit().await.map_err(|_| {
                    self.observer.lookup_refused();
                    Error::Overloaded
                })?;
                self.fill(token, digest).await
            }
        }
    }

    /// [`Verifier::verify_spending`] when the cache and what this replica
    /// holds of the token's limits answer it: `None` when the call would
    /// have to wait for the database (a miss, an answer due to be read
    /// again, credits to take), having changed nothing a later
    /// `verify_spending` of the same call would not.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad required scope.
    pub fn verify_cached(
        &self,
        token: &str,
        required_scopes: &[impl AsRef<str> + Sync],
        cost: u64,
        client: Option<ClientRef<'_>>,
    ) -> Option<Result<Verification, Error>> {
        if let Err(e) = token::check_scopes("required_scopes", required_scopes) {
            return Some(Err(e.into()));
        }
        let snapshot = match self.look(token, false) {
            Looked::Answer(verdict) => return Some(Ok(Verification::without_token(verdict))),
            Looked::Known(snapshot) => snapshot,
            Looked::Fill(..) | Looked::Wait => return None,
        };
        match self.judge(snapshot, required_scopes, cost, client) {
            Judged::Done(answer) => Some(Ok(answer)),
            Judged::Spend(_) => None,
        }
    }

    /// The token's shape, digest and cached answer, cheapest first. A call
    /// that `may_wait` takes the reading of a token whose answer is due
    /// (one call per token does); one that may not is told to
    /// [`Looked::Wait`] instead, having counted nothing.
    fn look(&self, token: &str, may_wait: bool) -> Looked {
        if !format::has_shape(&self.prefix, token) {
            return Looked::Answer(Verdict::Malformed);
        }
        let digest = self.keys.primary().digest(token);
        // Once the change log has gone unread too long, the cache may hold
        // what another replica has since changed: ask the database.
        let now = Instant::now();
        let found = if self.freshness.is_fresh(now) {
            self.cache.lookup_as_of(&digest, now)
        } else {
            Lookup::Absent
        };
        // A known token's digest proves it genuine; anything else must pass
        // the checksum before it is answered UNKNOWN or costs a lookup.
        if !matches!(
            found,
            Lookup::Live {
                value: Cached::Known(_),
                ..
            } | Lookup::Lapsed(_)
        ) && !format::checksum_matches(token)
        {
            return Looked::Answer(Verdict::Malformed);
        }
        match found {
            Lookup::Live {
                value: Cached::Known(snapshot),
                refresh: true,
            } if !snapshot.refresh_claimed() => {
                if !may_wait {
                    return Looked::Wait;
                }
                self.observer.cache_hit();
                if snapshot.claim_refresh() {
                    Looked::Fill(digest, Fill::Refresh(snapshot))
                } else {
                    Looked::Known(snapshot)
                }
            }
            Lookup::Live { value, .. } => {
                self.observer.cache_hit();
                match value {
                    Cached::Known(snapshot) => Looked::Known(snapshot),
                    Cached::Unknown => Looked::Answer(Verdict::Unknown),
                }
            }
            _ if !may_wait => Looked::Wait,
            Lookup::Lapsed(snapshot) if snapshot.claim_refresh() => {
                self.observer.cache_miss();
                Looked::Fill(digest, Fill::Lapsed(snapshot))
            }
            Lookup::Lapsed(_) | Lookup::Absent => {
                self.observer.cache_miss();
                Looked::Fill(digest, Fill::Admitted)
            }
        }
    }

    /// The verdict on a known token, its use noted, and what it spends if
    /// what this replica holds allows: [`Judged::Spend`] when the database
    /// must be asked for more.
    fn judge(
        &self,
        snapshot: Arc<Snapshot>,
        required_scopes: &[impl AsRef<str> + Sync],
        cost: u64,
        client: Option<ClientRef<'_>>,
    ) -> Judged {
        let at = self.clock.now();
        let status = snapshot.lifetime.status(at, snapshot.uses.latest());
        let mut missing_scopes = Vec::new();
        let verdict = match status {
            Status::Revoked => Verdict::Revoked,
            Status::Expired => Verdict::Expired,
            _ if snapshot.owner_disabled => Verdict::OwnerDisabled,
            Status::Inactive => Verdict::Inactive,
            Status::Active => {
                missing_scopes =
                    scope::missing(snapshot.scopes().split_ascii_whitespace(), required_scopes)
                        .into_iter()
                        .map(str::to_owned)
                        .collect();
                if missing_scopes.is_empty() {
                    Verdict::Valid
                } else {
                    Verdict::InsufficientScope
                }
            }
        };
        // A live token presented to a service counts as used, even when it
        // lacked a scope for this particular call.
        if matches!(verdict, Verdict::Valid | Verdict::InsufficientScope) {
            self.last_used.record(snapshot.id, &snapshot, at, client);
        }
        let judged = Partial {
            snapshot,
            status,
            verdict,
            missing_scopes,
            at,
        };
        let spent = if verdict == Verdict::Valid
            && cost > 0
            && let Some(limits) = &judged.snapshot.limits
        {
            match self.allowances.spend_held(limits, cost, at) {
                Some(spent) => Some(spent),
                None => return Judged::Spend(judged),
            }
        } else {
            None
        };
        Judged::Done(self.settle(judged, spent))
    }

    /// The answer to a judged call, with what it spent.
    fn settle(&self, judged: Partial, spent: Option<Spending>) -> Verification {
        let Partial {
            snapshot,
            status,
            verdict,
            missing_scopes,
            ..
        } = judged;
        let mut answer = Verification {
            verdict,
            token: None,
            missing_scopes,
            credits_remaining: None,
            rate: None,
            retry_after: None,
        };
        if let Some(spent) = spent {
            answer.verdict = match spent.outcome {
                Outcome::Admitted => Verdict::Valid,
                Outcome::RateLimited { retry_after } => {
                    answer.retry_after = Some(retry_after);
                    Verdict::RateLimited
                }
                Outcome::UsageExceeded => Verdict::UsageExceeded,
            };
            answer.credits_remaining = spent.credits_remaining;
            answer.rate = spent.rate;
        }
        self.last_used.count(snapshot.id, &snapshot, answer.verdict);
        answer.token = Some(Known { snapshot, status });
        answer
    }
}
