//! The token lifecycle: create, read, list, update, revoke, restore, delete.
//!
//! Every field is checked before anything is written, so a refused request
//! writes nothing. Each change invalidates this process's cache entry before
//! it returns.
//!
//! Imports neither tonic nor sea_orm.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use uuid::Uuid;

use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::store::{Cursor, ListFilter, Store, TokenPatch};
use crate::token::{
    self, ADMIN_SCOPE, Prefix, Secret, Status, TokenKey, TokenRecord, format, limits,
};
use crate::verifier::Verifier;

/// Default and largest ListTokens page.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Owner of the bootstrap admin token.
pub const BOOTSTRAP_OWNER: &str = "latchkey";
/// `latchkey_meta` key recording that the bootstrap token was issued.
const BOOTSTRAP_META_KEY: &str = "bootstrap_admin_token_id";

/// Rules set by the operator.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    /// Longest lifetime a token may be given; `None`: no limit.
    pub max_ttl: Option<Duration>,
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
pub struct Page {
    pub tokens: Vec<TokenRecord>,
    pub next_page_token: String,
}

pub struct Lifecycle {
    store: Store,
    verifier: Arc<Verifier>,
    key: TokenKey,
    prefix: Prefix,
    clock: Arc<dyn Clock>,
    policy: Policy,
    /// Keeps ids minted in one millisecond in creation order, so that
    /// newest-first paging never shows a later token after an earlier one.
    ids: Mutex<uuid::ContextV7>,
}

impl Lifecycle {
    pub fn new(
        store: Store,
        verifier: Arc<Verifier>,
        key: TokenKey,
        prefix: Prefix,
        clock: Arc<dyn Clock>,
        policy: Policy,
    ) -> Self {
        Lifecycle {
            store,
            verifier,
            key,
            prefix,
            clock,
            policy,
            ids: Mutex::new(uuid::ContextV7::new()),
        }
    }

    /// Creates a token; the secret is returned here and never again.
    ///
    /// # Errors
    /// `InvalidArgument` naming the first bad field; store faults.
    pub async fn create(&self, new: NewToken) -> Result<(TokenRecord, Secret), Error> {
        token::check_owner("owner", &new.owner)?;
        token::check_len("name", &new.name, limits::MAX_NAME_CHARS)?;
        token::check_len(
            "description",
            &new.description,
            limits::MAX_DESCRIPTION_CHARS,
        )?;
        token::check_scopes("scopes", &new.scopes)?;
        token::check_metadata("metadata", &new.metadata)?;
        let now = self.clock.now();
        let expire_time = self.expire_time(new.expiry, now)?;
        let (record, secret) = self.mint(new, expire_time, now)?;
        let digest = self.key.digest(secret.expose());
        self.store
            .insert_token(&record, &digest, self.key.id())
            .await?;
        tracing::info!(token_id = %record.id, owner = %record.owner, "token created");
        Ok((record, secret))
    }

    /// # Errors
    /// `NotFound`; store faults.
    pub async fn get(&self, id: Uuid) -> Result<TokenRecord, Error> {
        self.store.get_token(id).await?.ok_or(Error::NotFound)
    }

    /// # Errors
    /// `InvalidArgument` for a bad page size or page token; store faults.
    pub async fn list(&self, query: ListQuery) -> Result<Page, Error> {
        let page_size = match query.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n @ 1.. if n.unsigned_abs() <= MAX_PAGE_SIZE => n.unsigned_abs(),
            _ => {
                return Err(Error::invalid(
                    "page_size",
                    format!("must be between 0 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"),
                ));
            }
        };
        let fingerprint = filter_fingerprint(&query.filter);
        let after = match query.page_token.as_str() {
            "" => None,
            t => Some(decode_page_token(t, fingerprint)?),
        };
        let now = self.clock.now();
        let mut tokens = self
            .store
            .list_tokens(&query.filter, after, u64::from(page_size) + 1, now)
            .await?;
        let next_page_token = if tokens.len() > page_size as usize {
            tokens.truncate(page_size as usize);
            tokens
                .last()
                .map(|t| {
                    encode_page_token(
                        Cursor {
                            create_time: t.create_time,
                            id: t.id,
                        },
                        fingerprint,
                    )
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            tokens,
            next_page_token,
        })
    }

    /// Applies the fields set in `patch`.
    ///
    /// # Errors
    /// `InvalidArgument` naming a bad field; `NotFound`; store faults.
    pub async fn update(&self, id: Uuid, patch: TokenPatch) -> Result<TokenRecord, Error> {
        if let Some(name) = &patch.name {
            token::check_len("token.name", name, limits::MAX_NAME_CHARS)?;
        }
        if let Some(description) = &patch.description {
            token::check_len(
                "token.description",
                description,
                limits::MAX_DESCRIPTION_CHARS,
            )?;
        }
        if let Some(metadata) = &patch.metadata {
            token::check_metadata("token.metadata", metadata)?;
        }
        let now = self.clock.now();
        let stored = self
            .store
            .update_token(id, &patch, now)
            .await?
            .ok_or(Error::NotFound)?;
        self.verifier.forget(&stored.digest);
        tracing::info!(token_id = %id, "token updated");
        Ok(stored.record)
    }

    /// Revokes at once. Idempotent: revoking a revoked token changes nothing.
    ///
    /// # Errors
    /// `InvalidArgument` for an over-long reason; `NotFound`; store faults.
    pub async fn revoke(&self, id: Uuid, reason: &str) -> Result<TokenRecord, Error> {
        token::check_len("reason", reason, limits::MAX_REASON_CHARS)?;
        let now = self.clock.now();
        let stored = self
            .store
            .revoke_token(id, reason, now)
            .await?
            .ok_or(Error::NotFound)?;
        self.verifier.forget(&stored.digest);
        tracing::info!(token_id = %id, "token revoked");
        Ok(stored.record)
    }

    /// Brings a revoked token back. An active token is returned unchanged.
    ///
    /// # Errors
    /// `FailedPrecondition` if the token has expired or was replaced by a
    /// renewal; `NotFound`; store faults.
    pub async fn restore(&self, id: Uuid) -> Result<TokenRecord, Error> {
        // Two rounds: if the token changed between the read and the
        // conditional write, judge it again as it now stands.
        for _ in 0..2 {
            let now = self.clock.now();
            let current = self.get(id).await?;
            match current.status(now) {
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
            if let Some(stored) = self.store.unrevoke_token(id, now).await? {
                self.verifier.forget(&stored.digest);
                tracing::info!(token_id = %id, "token restored");
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
    pub async fn delete(&self, id: Uuid) -> Result<(), Error> {
        let digest = self.store.delete_token(id).await?.ok_or(Error::NotFound)?;
        self.verifier.forget(&digest);
        tracing::info!(token_id = %id, "token deleted");
        Ok(())
    }

    /// Issues the bootstrap admin token (scope `latchkey:admin`, owner
    /// `latchkey`, no expiry) unless one was ever issued on this database.
    /// Returns its secret only to the one caller that issued it.
    ///
    /// # Errors
    /// Store faults.
    pub async fn issue_bootstrap_token(&self) -> Result<Option<(TokenRecord, Secret)>, Error> {
        if self.store.meta(BOOTSTRAP_META_KEY).await?.is_some() {
            return Ok(None);
        }
        let now = self.clock.now();
        let new = NewToken {
            owner: BOOTSTRAP_OWNER.to_owned(),
            name: "bootstrap admin".to_owned(),
            description: "Created at first start because LATCHKEY_ADMIN_TOKEN is unset.".to_owned(),
            scopes: vec![ADMIN_SCOPE.to_owned()],
            metadata: BTreeMap::new(),
            expiry: Expiry::Never,
            idle_timeout: None,
        };
        let (record, secret) = self.mint(new, None, now)?;
        let digest = self.key.digest(secret.expose());
        let issued = self
            .store
            .insert_token_once(BOOTSTRAP_META_KEY, &record, &digest, self.key.id())
            .await?;
        Ok(issued.then_some((record, secret)))
    }

    /// Draws a secret and builds the record for it.
    fn mint(
        &self,
        new: NewToken,
        expire_time: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(TokenRecord, Secret), Error> {
        let secret = format::generate(&self.prefix)
            .map_err(|e| Error::Internal(anyhow::anyhow!("the OS random source failed: {e}")))?;
        let (secs, nanos) = now.to_unix();
        let id = {
            let context = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
            Uuid::new_v7(uuid::Timestamp::from_unix(
                &*context,
                u64::try_from(secs).unwrap_or(0),
                u32::try_from(nanos).unwrap_or(0),
            ))
        };
        let record = TokenRecord {
            id,
            owner: new.owner,
            name: new.name,
            description: new.description,
            scopes: new.scopes,
            metadata: new.metadata,
            display_hint: format::display_hint(&self.prefix, &secret),
            create_time: now,
            update_time: now,
            expire_time,
            idle_timeout: new.idle_timeout,
            last_used_time: None,
            revoke_time: None,
            revoke_reason: String::new(),
            replaces: None,
            replaced_by: None,
        };
        Ok((record, secret))
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
            Expiry::After(ttl) => (
                "ttl",
                now.checked_add(ttl)
                    .ok_or_else(|| Error::invalid("ttl", "is too long"))?,
            ),
            Expiry::At(at) => {
                if at <= now {
                    return Err(Error::invalid("expire_time", "must be in the future"));
                }
                ("expire_time", at)
            }
        };
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

/// Page tokens are opaque: a version byte, the cursor, and a fingerprint of
/// the filter they were issued for, so a token cannot be replayed against
/// another query.
const PAGE_TOKEN_VERSION: u8 = 1;
const PAGE_TOKEN_LEN: usize = 1 + 8 + 16 + 4;

fn filter_fingerprint(filter: &ListFilter) -> u32 {
    let mut h = crc32fast::Hasher::new();
    if let Some(owner) = &filter.owner {
        h.update(b"o");
        h.update(owner.as_bytes());
    }
    let mut statuses = filter.statuses.clone();
    statuses.sort();
    statuses.dedup();
    for s in statuses {
        h.update(&[0, s as u8]);
    }
    h.finalize()
}

fn encode_page_token(c: Cursor, fingerprint: u32) -> String {
    let mut b = Vec::with_capacity(PAGE_TOKEN_LEN);
    b.push(PAGE_TOKEN_VERSION);
    b.extend_from_slice(&c.create_time.as_micros().to_be_bytes());
    b.extend_from_slice(c.id.as_bytes());
    b.extend_from_slice(&fingerprint.to_be_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn decode_page_token(token: &str, fingerprint: u32) -> Result<Cursor, Error> {
    let bad = || Error::invalid("page_token", "is not a page token issued for this query");
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    if b.len() != PAGE_TOKEN_LEN || b[0] != PAGE_TOKEN_VERSION {
        return Err(bad());
    }
    let micros = i64::from_be_bytes(b[1..9].try_into().map_err(|_| bad())?);
    let id = Uuid::from_slice(&b[9..25]).map_err(|_| bad())?;
    let fp = u32::from_be_bytes(b[25..29].try_into().map_err(|_| bad())?);
    if fp != fingerprint {
        return Err(bad());
    }
    Ok(Cursor {
        create_time: Timestamp::from_micros(micros),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_round_trips_for_its_own_query_only() {
        let owner_a = ListFilter {
            owner: Some("a".into()),
            statuses: vec![],
        };
        let owner_b = ListFilter {
            owner: Some("b".into()),
            statuses: vec![],
        };
        let c = Cursor {
            create_time: Timestamp::from_micros(42),
            id: Uuid::now_v7(),
        };
        let t = encode_page_token(c, filter_fingerprint(&owner_a));
        assert_eq!(
            decode_page_token(&t, filter_fingerprint(&owner_a)).unwrap(),
            c
        );
        assert!(decode_page_token(&t, filter_fingerprint(&owner_b)).is_err());
        assert!(decode_page_token("garbage", filter_fingerprint(&owner_a)).is_err());
    }

    #[test]
    fn the_status_filter_fingerprint_ignores_order_and_repeats() {
        let f = |s: Vec<Status>| {
            filter_fingerprint(&ListFilter {
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
}
