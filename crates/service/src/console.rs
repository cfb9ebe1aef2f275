//! Sessions of the web console: signing in with an admin credential, the
//! session each page load checks, CSRF tokens, and signing out; and the
//! one-time links to the hosted token page, which open a session limited to
//! one owner's tokens.
//!
//! A session is a random secret in a cookie; the database keeps only its
//! HMAC digest, so sessions work on every replica and survive a restart.
//! Each check also asks whether the credential signed in with is still an
//! admin credential (the static one unchanged; the token active, holding
//! `latchkey:admin`, its owner enabled), so revoking it or disabling its
//! owner ends its sessions at the next page load.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;
use zeroize::Zeroizing;

use crate::auth::{Actor, AdminAuth};
use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::store::{ConsoleSession, Store};
use crate::token::{ADMIN_SCOPE, Digest, Status, TokenKey};

/// A signed-in session, as a page sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Who acts: the admin signed in, or for a hosted page, the credential
    /// that made its link.
    pub actor: Actor,
    /// The only owner whose tokens a hosted page's session may see and
    /// change; `None` for an admin's session.
    pub owner: Option<String>,
    /// Where a hosted page links back to (may be empty).
    pub return_url: String,
}

/// How long a console link lasts unless told: 15 minutes.
pub const LINK_TTL: Duration = Duration::from_secs(15 * 60);
/// The longest a console link may last: an hour.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(3600);
/// The longest `return_url` a console link takes.
pub const MAX_RETURN_URL_BYTES: usize = 2048;

pub struct ConsoleSessions {
    store: Store,
    key: TokenKey,
    auth: Arc<AdminAuth>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
}

impl ConsoleSessions {
    /// Sessions digested with `key`, for credentials `auth` accepts, each
    /// lasting `ttl`.
    pub fn new(
        store: Store,
        key: TokenKey,
        auth: Arc<AdminAuth>,
        clock: Arc<dyn Clock>,
        ttl: Duration,
    ) -> Self {
        ConsoleSessions {
            store,
            key,
            auth,
            clock,
            ttl,
        }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs in with `credential` (the static admin credential, or a token
    /// with `latchkey:admin`); returns the new session's secret, for the
    /// cookie.
    ///
    /// # Errors
    /// `Unauthenticated`, `PermissionDenied` as TokenAdmin answers them;
    /// store faults.
    pub async fn sign_in(&self, credential: &str) -> Result<(Zeroizing<String>, Session), Error> {
        let header = Zeroizing::new(format!("Bearer {credential}"));
        let actor = self.auth.authorize(Some(&header)).await?;
        let secret = random_secret()?;
        let now = self.clock.now();
        let session = ConsoleSession {
            actor: actor.to_string(),
            credential_digest: self.key.digest(credential),
            create_time: now,
            expire_time: now.checked_add(self.ttl).ok_or(Error::Unauthenticated)?,
            owner: None,
            return_url: String::new(),
        };
        self.store
            .insert_console_session(&self.key.digest(&secret), &session)
            .await?;
        tracing::info!(%actor, "console: signed in");
        Ok((
            secret,
            Session {
                actor,
                owner: None,
                return_url: String::new(),
            },
        ))
    }

    /// Makes a one-time link to the hosted token page of `owner`, on behalf
    /// of `actor` (an admin, typically the product's backend): the link's
    /// secret and when it expires. Opening it opens a session limited to
    /// `owner`'s tokens, linking back to `return_url`.
    ///
    /// # Errors
    /// `InvalidArgument` naming `owner`, `ttl` or `return_url`;
    /// `FailedPrecondition` if the owner is disabled; store faults.
    pub async fn create_link(
        &self,
        actor: Actor,
        owner: &str,
        ttl: Option<Duration>,
        return_url: &str,
    ) -> Result<(Zeroizing<String>, Timestamp), Error> {
        crate::token::check_owner("owner", owner)?;
        let ttl = ttl.unwrap_or(LINK_TTL);
        if ttl.is_zero() || ttl > MAX_LINK_TTL {
            return Err(Error::invalid("ttl", "must be positive and at most 1h"));
        }
        check_return_url(return_url)?;
        if self.owner_disabled(owner).await? {
            return Err(Error::FailedPrecondition(format!(
                "owner {owner:?} is disabled"
            )));
        }
        let credential_digest = match actor {
            Actor::Admin => *self
                .auth
                .static_credential()
                .ok_or(Error::Unauthenticated)?,
            // A token's sessions are checked by its id.
            actor => self.key.digest(&actor.to_string()),
        };
        let secret = random_secret()?;
        let now = self.clock.now();
        let expire_time = now.checked_add(ttl).ok_or(Error::Unauthenticated)?;
        let link = ConsoleSession {
            actor: actor.to_string(),
            credential_digest,
            create_time: now,
            expire_time,
            owner: Some(owner.to_owned()),
            return_url: return_url.to_owned(),
        };
        self.store
            .insert_console_link(&self.key.digest(&secret), &link)
            .await?;
        tracing::info!(%actor, owner, "console: link made");
        Ok((secret, expire_time))
    }

    /// Opens the link whose secret is `secret`, once: a session limited to
    /// its owner (its secret, for the cookie), or `None` if the link is
    /// unknown, used, expired, or its maker's credential no longer admits
    /// it.
    ///
    /// # Errors
    /// Store faults.
    pub async fn open_link(
        &self,
        secret: &str,
    ) -> Result<Option<(Zeroizing<String>, Session)>, Error> {
        let now = self.clock.now();
        let Some(link) = self
            .store
            .take_console_link(&self.key.digest(secret), now)
            .await?
        else {
            return Ok(None);
        };
        let session_secret = random_secret()?;
        let session = ConsoleSession {
            create_time: now,
            expire_time: now.checked_add(self.ttl).ok_or(Error::Unauthenticated)?,
            ..link
        };
        let Some(admitted) = self.admitted(&session, now).await? else {
            return Ok(None);
        };
        self.store
            .insert_console_session(&self.key.digest(&session_secret), &session)
            .await?;
        tracing::info!(actor = %admitted.actor, owner = ?admitted.owner, "console: link opened");
        Ok(Some((session_secret, admitted)))
    }

    /// The session whose secret is `secret`, if it is live and its
    /// credential still admits it.
    ///
    /// # Errors
    /// Store faults.
    pub async fn session(&self, secret: &str) -> Result<Option<Session>, Error> {
        let now = self.clock.now();
        match self
            .store
            .get_console_session(&self.key.digest(secret), now)
            .await?
        {
            Some(stored) => self.admitted(&stored, now).await,
            None => Ok(None),
        }
    }

    /// `stored` as a page sees it, if its credential still admits it at
    /// `now` (and, for a hosted page's session, its owner is enabled).
    async fn admitted(
        &self,
        stored: &ConsoleSession,
        now: Timestamp,
    ) -> Result<Option<Session>, Error> {
        if let Some(owner) = &stored.owner
            && self.owner_disabled(owner).await?
        {
            return Ok(None);
        }
        let actor = match stored.actor.as_str() {
            "admin" if self.auth.is_static_credential(&stored.credential_digest) => Actor::Admin,
            "admin" => return Ok(None),
            id => {
                let Ok(id) = Uuid::parse_str(id) else {
                    return Ok(None);
                };
                if !self.token_admits(id, now).await? {
                    return Ok(None);
                }
                Actor::Token(id)
            }
        };
        Ok(Some(Session {
            actor,
            owner: stored.owner.clone(),
            return_url: stored.return_url.clone(),
        }))
    }

    /// Whether `owner` is disabled.
    async fn owner_disabled(&self, owner: &str) -> Result<bool, Error> {
        Ok(self
            .store
            .get_owner(owner)
            .await?
            .is_some_and(|o| o.is_disabled()))
    }

    /// Whether token `id` is still an admin credential at `now`.
    async fn token_admits(&self, id: Uuid, now: Timestamp) -> Result<bool, Error> {
        let Some(token) = self.store.get_token(id).await? else {
            return Ok(false);
        };
        Ok(token.status(now) == Status::Active
            && !self.owner_disabled(&token.owner).await?
            && token.scopes.iter().any(|s| s == ADMIN_SCOPE))
    }

    /// Ends the session whose secret is `secret`.
    ///
    /// # Errors
    /// Store faults.
    pub async fn sign_out(&self, secret: &str) -> Result<(), Error> {
        self.store
            .delete_console_session(&self.key.digest(secret))
            .await?;
        Ok(())
    }

    /// The CSRF token of the forms shown with `secret` (a session's, or a
    /// sign-in form's own): an HMAC of it, so it needs no storage and no
    /// other site can compute it.
    pub fn csrf_token(&self, secret: &str) -> String {
        hex::encode(
            self.key
                .digest(&format!("console csrf\n{secret}"))
                .as_bytes(),
        )
    }

    /// Whether `presented` is the CSRF token of `secret`, compared in
    /// constant time.
    pub fn csrf_matches(&self, secret: &str, presented: &str) -> bool {
        // As written: lower-case hex only.
        if !presented
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return false;
        }
        hex::decode(presented)
            .ok()
            .and_then(|bytes| Digest::from_slice(&bytes))
            .is_some_and(|digest| self.key.matches(&csrf_input(secret), &digest))
    }

    /// The time pages show statuses at: the server's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// A console link's `return_url`: empty, or an absolute `http(s)` URL of at
/// most [`MAX_RETURN_URL_BYTES`] visible ASCII characters.
fn check_return_url(url: &str) -> Result<(), Error> {
    if url.is_empty() {
        return Ok(());
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host_given = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
    if url.len() > MAX_RETURN_URL_BYTES
        || !host_given
        || !url
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"<>\\`".contains(&b))
    {
        return Err(Error::invalid(
            "return_url",
            format!(
                "an absolute http(s) URL of at most {MAX_RETURN_URL_BYTES} characters, without \
                 spaces or control characters"
            ),
        ));
    }
    Ok(())
}

/// What a CSRF token is the digest of.
fn csrf_input(secret: &str) -> String {
    format!("console csrf\n{secret}")
}

/// 256 random bits from the OS, hex-encoded.
pub fn random_secret() -> Result<Zeroizing<String>, Error> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut())
        .map_err(|e| Error::Internal(anyhow::anyhow!("the OS random source: {e}")))?;
    Ok(Zeroizing::new(hex::encode(bytes.as_ref())))
}
