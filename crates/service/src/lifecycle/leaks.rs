//! Revoking a token found leaked: by a secret scanner's report or by its
//! holder (public revocation). The caller found the token by its secret.

use super::Lifecycle;
use crate::audit::EventKind;
use crate::auth::Actor;
use crate::error::Error;
use crate::token::{TokenRecord, limits};

/// Where a leaked token was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leak {
    /// Where it was seen (a scanner's URL); empty when its holder reported
    /// it.
    pub url: String,
    /// Who reported it: a scanner's source (`content`, `commit`, …), or
    /// `public` for public revocation.
    pub source: String,
}

impl Leak {
    /// The revocation reason: `leaked: <url>` (or the source when there is
    /// no URL), cut to fit and without control characters.
    fn reason(&self) -> String {
        let place = if self.url.is_empty() {
            &self.source
        } else {
            &self.url
        };
        let reason: String = format!("leaked: {place}")
            .chars()
            .filter(|c| !c.is_control())
            .take(limits::MAX_REASON_CHARS)
            .collect();
        reason
    }
}

impl Lifecycle {
    /// Revokes `token` as leaked, with a `LEAKED` event. Returns whether
    /// this call revoked it: a token already revoked or expired is left as
    /// it is, with no event, so a report replayed writes nothing.
    ///
    /// # Errors
    /// Store faults.
    #[tracing::instrument(skip_all, fields(token_id = %token.id))]
    pub async fn revoke_leaked(&self, token: &TokenRecord, leak: &Leak) -> Result<bool, Error> {
        let (id, now) = (token.id, self.clock.now());
        if token.is_expired(now) {
            return Ok(false);
        }
        let reason = leak.reason();
        let txn = self.store.begin().await?;
        let Some(stored) = txn.revoke_token(id, &reason, now).await? else {
            return Ok(false);
        };
        let detail = [("reason", reason), ("source", leak.source.clone())]
            .into_iter()
            .chain((!leak.url.is_empty()).then(|| ("url", leak.url.clone())));
        let event = self.event(
            EventKind::Leaked,
            &stored.record,
            Actor::System,
            now,
            detail,
        );
        self.commit(txn, &event, &stored).await?;
        tracing::warn!(token_id = %id, source = %leak.source, "leaked token revoked");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_names_where_the_token_was_seen_and_fits() {
        let leak = |url: &str, source: &str| Leak {
            url: url.to_owned(),
            source: source.to_owned(),
        };
        assert_eq!(
            leak("https://github.com/o/r/blob/x/f", "content").reason(),
            "leaked: https://github.com/o/r/blob/x/f"
        );
        assert_eq!(leak("", "public").reason(), "leaked: public");
        assert_eq!(leak("a\nb\u{7}", "content").reason(), "leaked: ab");
        let long = leak(&"u".repeat(5_000), "content").reason();
        assert_eq!(long.chars().count(), limits::MAX_REASON_CHARS);
    }
}
