//! Who is calling TokenAdmin: the static admin credential, or a token holding
//! scope `latchkey:admin`, presented as `authorization: Bearer <credential>`.

use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

pub use latchkey_core::credential::bearer_credential;

use crate::error::Error;
use crate::token::{ADMIN_SCOPE, Digest, TokenKey};
use crate::verifier::{Verdict, Verifier};

/// Who made an admin change (recorded in the audit trail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The static credential `LATCHKEY_ADMIN_TOKEN`.
    Admin,
    /// A token with scope `latchkey:admin`.
    Token(Uuid),
    /// latchkey itself, run by an operator with access to its database
    /// (`latchkey admin-token issue`).
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Admin => f.write_str("admin"),
            Actor::Token(id) => write!(f, "{id}"),
            Actor::System => f.write_str("system"),
        }
    }
}

pub struct AdminAuth {
    key: TokenKey,
    /// HMAC of the static credential: compared in constant time, and the
    /// credential itself is not kept.
    static_credential: Option<Digest>,
    verifier: Arc<Verifier>,
    required: [String; 1],
}

impl AdminAuth {
    pub fn new(key: TokenKey, static_credential: Option<&str>, verifier: Arc<Verifier>) -> Self {
        AdminAuth {
            static_credential: static_credential.map(|c| key.digest(c)),
            key,
            verifier,
            required: [ADMIN_SCOPE.to_owned()],
        }
    }

    /// Whether `digest` is the digest of the static admin credential (and
    /// there is one): a console session signed in with it lives as long as
    /// the credential is unchanged.
    pub fn is_static_credential(&self, digest: &Digest) -> bool {
        self.static_credential.as_ref() == Some(digest)
    }

    /// The digest of the static credential, if one is configured.
    pub fn static_credential(&self) -> Option<&Digest> {
        self.static_credential.as_ref()
    }

    /// Authenticates the value of the `authorization` header.
    ///
    /// # Errors
    /// `Unauthenticated` for a missing or invalid credential, `PermissionDenied`
    /// for a valid token without `latchkey:admin`, `Unavailable` if checking the
    /// token needed the database and it was unreachable.
    pub async fn authorize(&self, authorization: Option<&str>) -> Result<Actor, Error> {
        let credential = authorization
            .and_then(bearer_credential)
            .ok_or(Error::Unauthenticated)?;
        if let Some(expected) = &self.static_credential
            && self.key.matches(credential, expected)
        {
            return Ok(Actor::Admin);
        }
        let checked = self.verifier.verify(credential, &self.required).await?;
        match (checked.verdict, checked.token) {
            (Verdict::Valid, Some(t)) => Ok(Actor::Token(t.snapshot.id)),
            (Verdict::InsufficientScope, _) => Err(Error::PermissionDenied(ADMIN_SCOPE)),
            _ => Err(Error::Unauthenticated),
        }
    }
}
