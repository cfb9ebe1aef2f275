//! Sessions of the web console: signing in with an admin credential, the
//! session each page load checks, CSRF tokens, and signing out.
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
    pub actor: Actor,
}

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
        };
        self.store
            .insert_console_session(&self.key.digest(&secret), &session)
            .await?;
        tracing::info!(%actor, "console: signed in");
        Ok((secret, Session { actor }))
    }

    /// The session whose secret is `secret`, if it is live and its
    /// credential still admits it.
    ///
    /// # Errors
    /// Store faults.
    pub async fn session(&self, secret: &str) -> Result<Option<Session>, Error> {
        let now = self.clock.now();
        let Some(stored) = self
            .store
            .get_console_session(&self.key.digest(secret), now)
            .await?
        else {
            return Ok(None);
        };
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
        Ok(Some(Session { actor }))
    }

    /// Whether token `id` is still an admin credential at `now`.
    async fn token_admits(&self, id: Uuid, now: Timestamp) -> Result<bool, Error> {
        let Some(token) = self.store.get_token(id).await? else {
            return Ok(false);
        };
        let owner_disabled = self
            .store
            .get_owner(&token.owner)
            .await?
            .is_some_and(|o| o.disable_time.is_some());
        Ok(token.status(now) == Status::Active
            && !owner_disabled
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
