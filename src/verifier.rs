//! Verify: is this token good for these scopes, right now?
//!
//! The path, cheapest first: shape and checksum (a MALFORMED token costs no
//! lookup), the HMAC digest, the cache, and the database only on a miss. Verify
//! never writes to the database: a use is noted in memory for the last-used
//! flusher.
//!
//! Imports neither tonic nor sea_orm.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use crate::cache::{CacheConfig, Cached, Lookup, VerifyCache};
use crate::changes::Freshness;
use crate::clock::Clock;
use crate::error::Error;
use crate::lookups::LookupLimit;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tasks::last_used::{HoldsUses, LastUsed, UseCell};
use crate::tasks::rekey::Rekeys;
use crate::token::{self, Digest, KeyRing, Lifetime, Prefix, Status, TokenRecord, format, scope};

/// The answer, in the order it is judged: the first that applies wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Malformed,
    Unknown,
    Revoked,
    Expired,
    OwnerDisabled,
    Inactive,
    InsufficientScope,
}

impl Verdict {
    /// What a client is told about a token that was not accepted: no more
    /// than RFC 6750 allows, and the same for every kind of bad token.
    pub fn reason(self) -> &'static str {
        match self {
            Verdict::Valid => "the token is valid",
            Verdict::InsufficientScope => "the token lacks a required scope",
            Verdict::Expired | Verdict::Inactive => "the token has expired",
            Verdict::Revoked | Verdict::OwnerDisabled => "the token has been revoked",
            Verdict::Malformed | Verdict::Unknown => "the token is not valid",
        }
    }
}

/// What the cache holds for a known token: only what Verify judges and
/// answers from, built once per fill, in two allocations (every cached token
/// holds one). The token as the API shows it is kept encoded ([`Render`]), so
/// a hit builds no message.
#[derive(Debug)]
pub struct Snapshot {
    pub id: Uuid,
    pub lifetime: Lifetime,
    uses: UseCell,
    /// The granted scopes, space-separated (a scope has no spaces), then the
    /// output of [`Render`].
    bytes: Box<[u8]>,
    scopes_len: u32,
    pub owner_disabled: bool,
    /// Taken by the one call that reads the token again as its answer
    /// lapses (see [`Verifier::verify`]).
    refreshing: std::sync::atomic::AtomicBool,
}

impl Snapshot {
    pub fn new(record: &TokenRecord, owner_disabled: bool, render: Render) -> Self {
        let mut bytes = record.scopes.join(" ").into_bytes();
        let scopes_len = bytes.len();
        render(record, &mut bytes);
        Snapshot {
            id: record.id,
            lifetime: record.lifetime(),
            uses: UseCell::default(),
            bytes: bytes.into_boxed_slice(),
            scopes_len: u32::try_from(scopes_len).expect("scopes are bounded far below 4 GiB"),
            owner_disabled,
            refreshing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether this call is the one to read the token again (no other is).
    fn claim_refresh(&self) -> bool {
        !self
            .refreshing
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// Lets another call read it again (this one failed to).
    fn release_refresh(&self) {
        self.refreshing
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// The token as the API shows it, without its status (which depends on
    /// the time of the call).
    pub fn rendered(&self) -> &[u8] {
        &self.bytes[self.scopes_len as usize..]
    }

    fn scopes(&self) -> &str {
        // Built from a `String` above, so always UTF-8.
        std::str::from_utf8(&self.bytes[..self.scopes_len as usize]).unwrap_or_default()
    }
}

impl HoldsUses for Snapshot {
    fn uses(&self) -> &UseCell {
        &self.uses
    }
}

/// Appends a token record, encoded as the API shows it with its status left
/// out, to a buffer; called once per cache fill. The gRPC layer supplies it.
pub type Render = fn(&TokenRecord, &mut Vec<u8>);

/// A known token as Verify judged it.
#[derive(Debug)]
pub struct Known {
    pub snapshot: Arc<Snapshot>,
    /// The token's own status at the time of the call.
    pub status: Status,
}

/// A verdict, the token it is about (for every known token), and for
/// INSUFFICIENT_SCOPE the scopes that were missing.
#[derive(Debug)]
pub struct Verification {
    pub verdict: Verdict,
    pub token: Option<Known>,
    pub missing_scopes: Vec<String>,
}

/// Runs after a cache miss has read the database and before the answer is
/// cached. Tests use it to interleave a revoke with a fill.
pub type MissHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

pub struct Verifier {
    prefix: Prefix,
    keys: KeyRing,
    cache: VerifyCache<Snapshot>,
    store: Store,
    last_used: Arc<LastUsed>,
    clock: Arc<dyn Clock>,
    render: Render,
    miss_hook: Option<MissHook>,
    freshness: Arc<Freshness>,
    rekeys: Arc<Rekeys>,
    metrics: Arc<Metrics>,
    lookups: LookupLimit,
}

impl Verifier {
    pub fn new(
        prefix: Prefix,
        keys: impl Into<KeyRing>,
        cache: CacheConfig,
        store: Store,
        last_used: Arc<LastUsed>,
        clock: Arc<dyn Clock>,
        render: Render,
    ) -> Self {
        Verifier {
            prefix,
            keys: keys.into(),
            cache: VerifyCache::new(cache),
            store,
            last_used,
            clock,
            render,
            miss_hook: None,
            // Never stale until told how to judge it.
            freshness: Arc::new(Freshness::new(std::time::Duration::MAX)),
            rekeys: Arc::new(Rekeys::new()),
            metrics: Arc::new(Metrics::new()),
            lookups: LookupLimit::unbounded(),
        }
    }

    /// Judges the cache's answers stale by `freshness`, which the change
    /// feed keeps.
    #[must_use]
    pub fn with_freshness(mut self, freshness: Arc<Freshness>) -> Self {
        self.freshness = freshness;
        self
    }

    /// Queues tokens found under an older key in `rekeys`, for the
    /// last-used flusher to move to the primary key.
    #[must_use]
    pub fn with_rekeys(mut self, rekeys: Arc<Rekeys>) -> Self {
        self.rekeys = rekeys;
        self
    }

    /// Counts cache hits and misses, and times lookups, in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Bounds cache misses by `lookups`.
    #[must_use]
    pub fn with_lookup_limit(mut self, lookups: LookupLimit) -> Self {
        self.lookups = lookups;
        self
    }

    /// Sets the [`MissHook`].
    #[must_use]
    pub fn with_miss_hook(mut self, hook: Option<MissHook>) -> Self {
        self.miss_hook = hook;
        self
    }

    /// # Errors
    /// `InvalidArgument` for a bad required scope; `Unavailable` if the answer
    /// needed the database and it could not be reached; `Overloaded` if it
    /// needed a lookup and [`LookupLimit`] refused one more. Every verdict,
    /// including a rejection, is `Ok`.
    pub async fn verify(
        &self,
        token: &str,
        required_scopes: &[String],
    ) -> Result<Verification, Error> {
        token::check_scopes("required_scopes", required_scopes)?;
        if !format::is_well_formed(&self.prefix, token) {
            return Ok(Verification::without_token(Verdict::Malformed));
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
        // Boxed: the database read's state machine is large, and the hit
        // path should not carry (or move) it.
        let cached = match found {
            Lookup::Live {
                value: Cached::Known(snapshot),
                refresh: true,
            } if snapshot.claim_refresh() => {
                // One call reads a token in use again before its answer
                // lapses, ahead of every lookup the bounds hold back; if the
                // database cannot answer, the cached answer stands.
                self.metrics.cache_hits.inc();
                match Box::pin(self.fill(token, digest)).await {
                    Ok(fresh) => fresh,
                    Err(_) => {
                        snapshot.release_refresh();
                        Cached::Known(snapshot)
                    }
                }
            }
            Lookup::Live { value, .. } => {
                self.metrics.cache_hits.inc();
                value
            }
            Lookup::Lapsed(snapshot) if snapshot.claim_refresh() => {
                // A token this cache knew goes ahead of unknown digests too.
                self.metrics.cache_misses.inc();
                let fresh = Box::pin(self.fill(token, digest)).await;
                if fresh.is_err() {
                    snapshot.release_refresh();
                }
                fresh?
            }
            Lookup::Lapsed(_) | Lookup::Absent => {
                self.metrics.cache_misses.inc();
                let _admitted = self.lookups.admit().await.map_err(|_| {
                    self.metrics.lookups_refused.inc();
                    Error::Overloaded
                })?;
                Box::pin(self.fill(token, digest)).await?
            }
        };
        let Cached::Known(snapshot) = cached else {
            return Ok(Verification::without_token(Verdict::Unknown));
        };
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
            self.last_used.record(snapshot.id, &snapshot, at);
        }
        Ok(Verification {
            verdict,
            token: Some(Known { snapshot, status }),
            missing_scopes,
        })
    }

    /// Drops `digest` from this process's cache, and any fill of it under way.
    /// Call after the change is committed and before answering the caller.
    pub fn forget(&self, digest: &Digest) {
        self.cache.invalidate(digest);
    }

    /// Whether this process has seen the token of `digest` presented
    /// (Verify, Check, introspection, TokenSelf) while it stayed cached: a
    /// use that may not be written yet.
    pub fn seen_in_use(&self, digest: &Digest) -> bool {
        matches!(self.cache.get(digest), Some(Cached::Known(s)) if s.uses.latest().is_some())
    }

    /// Tokens and unknown digests cached now.
    pub fn cache_entries(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Drops every cached answer, and every fill under way: the fallback
    /// when the digests a change affects cannot be listed.
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    /// Drops every cached answer about the owner's tokens. Listed after the
    /// change committed, so that any token a fill could have read with the
    /// old owner state is in the list. If they cannot be listed, the whole
    /// cache goes.
    pub async fn forget_owner(&self, owner: &str) {
        match self.store.owner_digests(owner).await {
            Ok(digests) => {
                for d in &digests {
                    self.forget(d);
                }
            }
            Err(e) => {
                tracing::warn!(
                    ?owner,
                    error = format!("{:#}", anyhow::Error::from(e)),
                    "could not list the owner's tokens; dropping the whole verification cache"
                );
                self.forget_all();
            }
        }
    }

    async fn fill(&self, token: &str, digest: Digest) -> Result<Cached<Snapshot>, Error> {
        let ticket = self.cache.begin_fill(&digest);
        let started = Instant::now();
        let found = self.store.find_by_digest(&digest).await;
        self.metrics.lookup(started.elapsed(), found.is_err());
        let found = found?;
        if found.is_none()
            && let Some(known) = self.find_under_older_key(token, digest).await?
        {
            return Ok(known);
        }
        if let Some(hook) = &self.miss_hook {
            hook().await;
        }
        // What the cache keeps (the snapshot, and the bucket and entry
        // holding it) is allocated apart from the request's own buffers.
        let entry = crate::memory::long_lived(|| {
            let entry = match found {
                Some(found) => Cached::Known(Arc::new(Snapshot::new(
                    &found.record,
                    found.owner_disabled,
                    self.render,
                ))),
                None => Cached::Unknown,
            };
            self.cache.complete_fill(ticket, digest, entry.clone());
            entry
        });
        Ok(entry)
    }
}

impl Verifier {
    /// A token stored under an older key, if any: answered from the row but
    /// not cached (invalidations name it by the digest it is stored under,
    /// not by the primary's), and queued to move to the primary key, after
    /// which it is cached like any other.
    async fn find_under_older_key(
        &self,
        token: &str,
        primary: Digest,
    ) -> Result<Option<Cached<Snapshot>>, Error> {
        for key in self.keys.older() {
            let stored = key.digest(token);
            if let Some(found) = self.store.find_by_digest(&stored).await? {
                self.rekeys.push(found.record.id, stored, primary);
                return Ok(Some(Cached::Known(Arc::new(Snapshot::new(
                    &found.record,
                    found.owner_disabled,
                    self.render,
                )))));
            }
        }
        Ok(None)
    }
}

impl Verification {
    fn without_token(verdict: Verdict) -> Self {
        Verification {
            verdict,
            token: None,
            missing_scopes: Vec::new(),
        }
    }
}
