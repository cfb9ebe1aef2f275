//! The opt-in cache of Verify answers ([`crate::Builder::cache`]), keyed by
//! a SHA-256 digest of the token and the scopes asked for, never the token.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::pb;

#[derive(Clone)]
pub(crate) struct Cache(moka::sync::Cache<[u8; 32], pb::VerifyResponse>);

impl Cache {
    pub(crate) fn new(ttl: Duration, capacity: u64) -> Cache {
        Cache(
            moka::sync::Cache::builder()
                .time_to_live(ttl)
                .max_capacity(capacity)
                .build(),
        )
    }

    pub(crate) fn get(&self, token: &str, scopes: &[String]) -> Option<pb::VerifyResponse> {
        self.0.get(&key(token, scopes))
    }

    pub(crate) fn insert(&self, token: &str, scopes: &[String], answer: pb::VerifyResponse) {
        self.0.insert(key(token, scopes), answer);
    }
}

fn key(token: &str, scopes: &[String]) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(token.as_bytes());
    for scope in scopes {
        // A scope never holds a control character: NUL separates them.
        digest.update([0]);
        digest.update(scope.as_bytes());
    }
    digest.finalize().into()
}
