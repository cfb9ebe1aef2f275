//! Finding a token by its secret under every HMAC key: a token stored
//! under an older key (Verify), and a token reported leaked.

use std::sync::Arc;

use super::{Cached, Snapshot, Verifier};
use crate::error::Error;
use crate::token::{Digest, TokenRecord, format};

impl Verifier {
    /// The token whose secret is `token`, under any key, read from the
    /// database: for revoking a token reported leaked. Not a use of the
    /// token, and not cached; each read counts against the bounds on
    /// lookups, as a cache miss does.
    ///
    /// # Errors
    /// `Overloaded` past `lookups.max_pending`; store faults.
    pub async fn find_by_secret(&self, token: &str) -> Result<Option<TokenRecord>, Error> {
        if !format::is_well_formed(&self.prefix, token) {
            return Ok(None);
        }
        for key in std::iter::once(self.keys.primary()).chain(self.keys.older()) {
            let _admitted = self.lookups.admit().await.map_err(|_| {
                self.observer.lookup_refused();
                Error::Overloaded
            })?;
            if let Some(found) = self.store.find_by_digest(&key.digest(token)).await? {
                return Ok(Some(found.record));
            }
        }
        Ok(None)
    }

    /// A token stored under an older key, if any: answered from the row but
    /// not cached (invalidations name it by the digest it is stored under,
    /// not by the primary's), and queued to move to the primary key, after
    /// which it is cached like any other.
    pub(super) async fn find_under_older_key(
        &self,
        token: &str,
        primary: Digest,
    ) -> Result<Option<Cached<Snapshot>>, Error> {
        for key in self.keys.older() {
            let stored = key.digest(token);
            if let Some(found) = self.store.find_by_digest(&stored).await? {
                self.rekeys.push(found.record.id, stored, primary);
                return Ok(Some(Cached::Known(Arc::new(self.snapshot(&found)))));
            }
        }
        Ok(None)
    }
}
