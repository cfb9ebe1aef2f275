//! Verify: is this token good for these scopes, right now?
//!
//! The path, cheapest first: shape and checksum (a MALFORMED token costs no
//! lookup), the HMAC digest, the cache, and the database only on a miss. Verify
//! never writes to the database: a use is noted in memory for the last-used
//! flusher.

mod by_secret;
mod steps;
mod warm;

pub use warm::Warmed;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use once_cell::race::OnceBox;
use uuid::Uuid;

use crate::cache::{CacheConfig, Cached, VerifyCache};
use crate::changes::Freshness;
use crate::client::ClientRef;
use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::limits::{Allowances, Limits, RateState};
use crate::lookups::LookupLimit;
use crate::observe::{Observe, Unobserved};
use crate::store::{FoundToken, Store};
use crate::token::{Digest, KeyRing, Lifetime, Prefix, Status, TokenRecord};
use crate::usage::{HoldsUses, LastUsed, Rekeys, UseCell};
pub use crate::verdict::Verdict;

/// What the cache holds for a known token: what Verify judges and what the
/// API surfaces answer with, built once per fill, in two allocations (every
/// cached token holds one). Its domain view (id, owner, scopes, metadata,
/// times) is what the HTTP surfaces and Envoy's Check read; beside it, the
/// token as the gRPC API shows it, kept encoded ([`Render`]), so a Verify
/// hit builds no message.
#[derive(Debug)]
pub struct Snapshot {
    pub id: Uuid,
    pub lifetime: Lifetime,
    pub create_time: Timestamp,
    uses: UseCell,
    /// The granted scopes, space-separated (a scope has no spaces); the
    /// owner; the metadata as key NUL value NUL pairs (text fields hold no
    /// control characters); then the output of [`Render`].
    bytes: Box<[u8]>,
    scopes_end: u32,
    owner_end: u32,
    metadata_end: u32,
    pub owner_disabled: bool,
    /// The token's usage limits; `None` if it has none.
    pub limits: Option<Box<Limits>>,
    /// Taken by the one call that reads the token again as its answer
    /// lapses (see [`Verifier::verify`]).
    refreshing: std::sync::atomic::AtomicBool,
    /// The [`View`]s written so far; allocated on the first (one pointer,
    /// so that a cached token stays in its 192-byte allocation class).
    views: OnceBox<[OnceLock<bytes::Bytes>; View::COUNT]>,
}

/// An answer about a known token that depends on nothing but the token and
/// the server's settings: written once, on first need, and kept with the
/// cached token, so that a hit copies no field.
#[derive(Clone, Copy, Debug)]
pub enum View {
    /// RFC 7662's answer for an active token.
    Introspection,
    /// A TokenReview's `user`.
    ReviewUser,
}

impl View {
    const COUNT: usize = 2;
}

impl Snapshot {
    pub fn new(record: &TokenRecord, owner_disabled: bool, render: Render) -> Self {
        let end = |bytes: &Vec<u8>| {
            u32::try_from(bytes.len()).expect("a token's fields are bounded far below 4 GiB")
        };
        let mut bytes = record.scopes.join(" ").into_bytes();
        let scopes_end = end(&bytes);
        bytes.extend_from_slice(record.owner.as_bytes());
        let owner_end = end(&bytes);
        for (k, v) in &record.metadata {
            for part in [k, v] {
                bytes.extend_from_slice(part.as_bytes());
                bytes.push(0);
            }
        }
        let metadata_end = end(&bytes);
        render(record, &mut bytes);
        Snapshot {
            id: record.id,
            lifetime: record.lifetime(),
            create_time: record.create_time,
            uses: UseCell::default(),
            bytes: bytes.into_boxed_slice(),
            scopes_end,
            owner_end,
            metadata_end,
            owner_disabled,
            limits: None,
            refreshing: std::sync::atomic::AtomicBool::new(false),
            views: OnceBox::new(),
        }
    }

    /// The `view` of this token, written by `write` the first time it is
    /// asked for. A view must not depend on the time, the token's uses or
    /// anything that changes without a new snapshot.
    pub fn view(&self, view: View, write: impl FnOnce(&Snapshot) -> bytes::Bytes) -> bytes::Bytes {
        self.views.get_or_init(Box::default)[view as usize]
            .get_or_init(|| write(self))
            .clone()
    }

    /// With usage limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Option<Box<Limits>>) -> Self {
        self.limits = limits;
        self
    }

    /// Whether this call is the one to read the token again (no other is).
    fn claim_refresh(&self) -> bool {
        !self
            .refreshing
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// Whether a call has taken the reading again and not let it go.
    fn refresh_claimed(&self) -> bool {
        self.refreshing.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Lets another call read it again (this one failed to).
    fn release_refresh(&self) {
        self.refreshing
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// The token as the gRPC API shows it, without its status (which
    /// depends on the time of the call).
    pub fn rendered(&self) -> &[u8] {
        &self.bytes[self.metadata_end as usize..]
    }

    fn text(&self, from: u32, to: u32) -> &str {
        // Built from `String`s above, so always UTF-8.
        std::str::from_utf8(&self.bytes[from as usize..to as usize]).unwrap_or_default()
    }

    /// The granted scopes, space-separated.
    pub fn scopes(&self) -> &str {
        self.text(0, self.scopes_end)
    }

    pub fn owner(&self) -> &str {
        self.text(self.scopes_end, self.owner_end)
    }

    /// The metadata's (key, value) pairs, in key order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut parts = self.text(self.owner_end, self.metadata_end).split('\0');
        std::iter::from_fn(move || {
            let key = parts.next().filter(|k| !k.is_empty())?;
            Some((key, parts.next().unwrap_or_default()))
        })
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

/// A verdict, the token it is about (for every known token), for
/// INSUFFICIENT_SCOPE the scopes that were missing, and for a token with
/// usage limits what is left of them.
#[derive(Debug)]
pub struct Verification {
    pub verdict: Verdict,
    pub token: Option<Known>,
    pub missing_scopes: Vec<String>,
    pub credits_remaining: Option<u64>,
    /// For a token with rate limits, the one closest to its end.
    pub rate: Option<RateState>,
    /// For RATE_LIMITED: until the window ends.
    pub retry_after: Option<std::time::Duration>,
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
    observer: Arc<dyn Observe>,
    lookups: LookupLimit,
    allowances: Arc<Allowances>,
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
            last_used,
            clock,
            render,
            miss_hook: None,
            // Never stale until told how to judge it.
            freshness: Arc::new(Freshness::new(std::time::Duration::MAX)),
            rekeys: Arc::new(Rekeys::new()),
            observer: Arc::new(Unobserved),
            lookups: LookupLimit::unbounded(),
            allowances: Arc::new(Allowances::new(store.clone())),
            store,
        }
    }

    /// Spends usage limits through `allowances` (shared with whoever
    /// gives unspent credits back at shutdown).
    #[must_use]
    pub fn with_allowances(mut self, allowances: Arc<Allowances>) -> Self {
        self.allowances = allowances;
        self
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

    /// Reports cache hits and misses, and times lookups, to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn Observe>) -> Self {
        self.observer = observer;
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
        self.verify_spending(token, required_scopes, 0, None).await
    }

    /// [`Verifier::verify`], spending `cost` of the token's credits if it
    /// has credits and is otherwise VALID: USAGE_EXCEEDED, spending
    /// nothing, when fewer are left. A cost of 0 checks without spending.
    /// A use of a live token is noted as coming from `client`, if given.
    ///
    /// # Errors
    /// As [`Verifier::verify`]; `Unavailable` also when more credits had
    /// to be taken from the database and it could not be reached.
    pub async fn verify_spending(
        &self,
        token: &str,
        required_scopes: &[impl AsRef<str> + Sync],
        cost: u64,
        client: Option<ClientRef<'_>>,
    ) -> Result<Verification, Error> {
        match self.verify_cached(token, required_scopes, cost, client) {
            Some(answer) => answer,
            // Boxed: a hit's future carries none of the waiting's state.
            None => Box::pin(self.verify_waiting(token, required_scopes, cost, client)).await,
        }
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

    /// Drops every cached answer about the owner's tokens (see
    /// [`forget_owner`]).
    pub async fn forget_owner(&self, owner: &str) {
        forget_owner(&self.store, self, owner).await;
    }

    async fn fill(&self, token: &str, digest: Digest) -> Result<Cached<Snapshot>, Error> {
        let ticket = self.cache.begin_fill(&digest);
        let started = Instant::now();
        let found = self.store.find_by_digest(&digest).await;
        self.observer.lookup(started.elapsed(), found.is_err());
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
                Some(found) => Cached::Known(Arc::new(self.snapshot(&found))),
                None => Cached::Unknown,
            };
            self.cache.complete_fill(ticket, digest, entry.clone());
            entry
        });
        Ok(entry)
    }
}

impl Verifier {
    fn snapshot(&self, found: &FoundToken) -> Snapshot {
        let r = &found.record;
        Snapshot::new(r, found.owner_disabled, self.render).with_limits(self.allowances.limits(
            r.id,
            &r.owner,
            r.credits,
            &r.rate_limits,
            &found.owner_rate_limits,
        ))
    }
}

/// What changes need of the verification cache: to drop what it holds about
/// a token (after the change committed, before answering), and whether a
/// token was seen in use by this process. The [`Verifier`] is one; tools
/// that write tokens with no Verify traffic to serve use [`NoCache`].
pub trait Invalidate: Send + Sync {
    /// Drops `digest`'s cached answer, and any fill of it under way.
    fn forget(&self, digest: &Digest);
    /// Drops every cached answer.
    fn forget_all(&self);
    /// Whether the token of `digest` was presented to this process while
    /// its answer stayed cached.
    fn seen_in_use(&self, digest: &Digest) -> bool;
}

impl Invalidate for Verifier {
    fn forget(&self, digest: &Digest) {
        Verifier::forget(self, digest);
    }

    fn forget_all(&self) {
        Verifier::forget_all(self);
    }

    fn seen_in_use(&self, digest: &Digest) -> bool {
        Verifier::seen_in_use(self, digest)
    }
}

/// No cache at all.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCache;

impl Invalidate for NoCache {
    fn forget(&self, _: &Digest) {}
    fn forget_all(&self) {}
    fn seen_in_use(&self, _: &Digest) -> bool {
        false
    }
}

/// Drops every answer `cache` holds about `owner`'s tokens. Listed after the
/// change committed, so that any token a fill could have read with the old
/// owner state is in the list. If they cannot be listed, the whole cache
/// goes.
pub async fn forget_owner(store: &Store, cache: &dyn Invalidate, owner: &str) {
    match store.owner_digests(owner).await {
        Ok(digests) => {
            for d in &digests {
                cache.forget(d);
            }
        }
        Err(e) => {
            tracing::warn!(
                ?owner,
                error = format!("{:#}", anyhow::Error::from(e)),
                "could not list the owner's tokens; dropping the whole verification cache"
            );
            cache.forget_all();
        }
    }
}

impl Verification {
    /// Names the verified token in the call's span (`grpc` or `http`, at
    /// DEBUG), when that span is recorded: a span of Verify's own would
    /// double the size of the hit path's future.
    /// Then logs the verdict (TRACE).
    pub fn record_in_span(&self) {
        if let Some(known) = &self.token
            && tracing::enabled!(tracing::Level::DEBUG)
        {
            tracing::Span::current().record("token_id", tracing::field::display(known.snapshot.id));
        }
        tracing::trace!(verdict = ?self.verdict, "verified");
    }

    fn without_token(verdict: Verdict) -> Self {
        Verification {
            verdict,
            token: None,
            missing_scopes: Vec::new(),
            credits_remaining: None,
            rate: None,
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_token_fits_the_192_byte_allocation_class() {
        // Its Arc's two counts, then the snapshot: every cached token holds
        // one, and mimalloc's next class up is 224 bytes.
        assert!(2 * size_of::<usize>() + size_of::<Snapshot>() <= 192);
    }

    #[test]
    fn a_view_is_written_once() {
        let record = TokenRecord::new(Uuid::nil(), "alice".into(), Timestamp::from_micros(0));
        let snapshot = Snapshot::new(&record, false, |_, _| {});
        let mut writes = 0;
        for _ in 0..3 {
            let view = snapshot.view(View::Introspection, |s| {
                writes += 1;
                bytes::Bytes::from(s.owner().to_owned())
            });
            assert_eq!(&view[..], b"alice");
        }
        let other = snapshot.view(View::ReviewUser, |_| bytes::Bytes::from_static(b"r"));
        assert_eq!((writes, &other[..]), (1, &b"r"[..]));
    }
}
