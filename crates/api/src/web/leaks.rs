//! When a token leaks, on the HTTP listener:
//!
//! - `POST /leaks/github`: GitHub's secret-scanning partner endpoint. The
//!   body, a JSON array of `{token, type, url, source}`, is signed with
//!   ECDSA P-256 (`Github-Public-Key-Identifier`,
//!   `Github-Public-Key-Signature`: base64 of a DER signature of the raw
//!   body); only a body signed by a configured key is read. Every active
//!   token found is revoked (`LEAKED`); the answer labels each token
//!   `true_positive` (latchkey issued it) or `false_positive`, by the
//!   SHA-256 of the token, as GitHub's feedback expects. Served only when
//!   keys are configured.
//! - `POST /v1/tokens/revoke`: public revocation. Anyone holding tokens may
//!   revoke them: `{"tokens": [...]}`, up to 1,000, no credential. The
//!   answer is `202` whatever the tokens were, so it tells nothing about
//!   them; each active one is revoked (`LEAKED`). Limited per client
//!   address.
//!
//! Tokens are found by their secret in the database (every key), within
//! the bounds on lookups that cache misses share.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::answer::{Answer, error, json, undecided};
use crate::lifecycle::{Leak, Lifecycle};
use crate::verifier::Verifier;

pub const GITHUB_PATH: &str = "/leaks/github";
pub const REVOKE_PATH: &str = "/v1/tokens/revoke";
/// Most tokens one request may name (either endpoint).
pub const MAX_TOKENS: usize = 1_000;
const KEY_ID_HEADER: &str = "github-public-key-identifier";
const SIGNATURE_HEADER: &str = "github-public-key-signature";

/// `leaks.*`: where leak reports come from.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeakSettings {
    /// GitHub's secret-scanning public keys (from
    /// `https://api.github.com/meta/public_keys/secret_scanning`); none:
    /// `POST /leaks/github` is not served.
    pub github_public_keys: Vec<GithubPublicKey>,
    /// Public revocation requests accepted from one client address per
    /// minute.
    pub revocations_per_minute: u32,
}

impl LeakSettings {
    /// The GitHub keys, read, once the settings are checked.
    ///
    /// # Errors
    /// The setting that does not read, and why.
    fn github_keys(&self) -> Result<Vec<(String, VerifyingKey)>, String> {
        if self.revocations_per_minute == 0 {
            return Err("leaks.revocations_per_minute: must be at least 1".to_owned());
        }
        self.github_public_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                VerifyingKey::from_public_key_pem(k.key.trim())
                    .map(|key| (k.key_identifier.clone(), key))
                    .map_err(|_| {
                        format!("leaks.github_public_keys[{i}].key: not a PEM P-256 public key")
                    })
            })
            .collect()
    }

    /// # Errors
    /// The setting that does not read, and why.
    pub fn validate(&self) -> Result<(), String> {
        self.github_keys().map(drop)
    }
}

impl Default for LeakSettings {
    fn default() -> Self {
        LeakSettings {
            github_public_keys: Vec::new(),
            revocations_per_minute: 10,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubPublicKey {
    pub key_identifier: String,
    /// PEM (`-----BEGIN PUBLIC KEY-----`), a P-256 key.
    pub key: String,
}

/// The leak endpoints' state.
pub struct Leaks {
    lifecycle: Arc<Lifecycle>,
    github_keys: Vec<(String, VerifyingKey)>,
    per_address: AddressLimit,
}

impl Leaks {
    /// # Errors
    /// The setting that does not read, and why.
    pub fn new(lifecycle: Arc<Lifecycle>, settings: &LeakSettings) -> Result<Self, String> {
        Ok(Leaks {
            lifecycle,
            github_keys: settings.github_keys()?,
            per_address: AddressLimit::new(settings.revocations_per_minute),
        })
    }

    pub(super) fn serves_github(&self) -> bool {
        !self.github_keys.is_empty()
    }

    /// Whether `body` is signed by a configured key, as the headers say.
    fn signed(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(id), Some(signature)) = (header(KEY_ID_HEADER), header(SIGNATURE_HEADER)) else {
            return Err(
                "Github-Public-Key-Identifier and Github-Public-Key-Signature are required",
            );
        };
        let key = self
            .github_keys
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, key)| key)
            .ok_or("Github-Public-Key-Identifier: not a configured key")?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .ok()
            .and_then(|der| Signature::from_der(&der).ok())
            .ok_or("Github-Public-Key-Signature: not a base64 DER ECDSA signature")?;
        key.verify(body, &signature)
            .map_err(|_| "Github-Public-Key-Signature: does not match the body")
    }

    /// Revokes the token whose secret is `token` if it is active; whether
    /// latchkey issued it.
    async fn revoke(&self, verifier: &Verifier, token: &str, leak: &Leak) -> Result<bool, Answer> {
        let Some(found) = verifier.find_by_secret(token).await.map_err(undecided)? else {
            return Ok(false);
        };
        self.lifecycle
            .revoke_leaked(&found, leak)
            .await
            .map_err(undecided)?;
        Ok(true)
    }
}

/// One match GitHub reports. Other fields are ignored.
#[derive(Deserialize)]
struct Found {
    token: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    source: String,
}

/// `POST /leaks/github`.
pub(super) async fn github(
    leaks: &Leaks,
    verifier: &Verifier,
    headers: &HeaderMap,
    body: &Bytes,
) -> Answer {
    if let Err(why) = leaks.signed(headers, body) {
        return error(StatusCode::UNAUTHORIZED, "invalid_signature", why);
    }
    let found: Vec<Found> = match serde_json::from_slice(body) {
        Ok(found) => found,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "body: expected a JSON array of {token, type, url, source}",
            );
        }
    };
    if found.len() > MAX_TOKENS {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("body: at most {MAX_TOKENS} tokens"),
        );
    }
    let mut labels = Vec::with_capacity(found.len());
    for f in found {
        let leak = Leak {
            url: f.url,
            source: if f.source.is_empty() {
                "github".to_owned()
            } else {
                f.source
            },
        };
        let ours = match leaks.revoke(verifier, &f.token, &leak).await {
            Ok(ours) => ours,
            Err(answer) => return answer,
        };
        labels.push(serde_json::json!({
            "token_hash": hex::encode(Sha256::digest(f.token.as_bytes())),
            "token_type": f.kind,
            "label": if ours { "true_positive" } else { "false_positive" },
        }));
    }
    json(StatusCode::OK, &serde_json::Value::Array(labels))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revocation {
    tokens: Vec<String>,
}

/// `POST /v1/tokens/revoke` from `address`.
pub(super) async fn revoke(
    leaks: &Leaks,
    verifier: &Verifier,
    address: Option<IpAddr>,
    body: &Bytes,
) -> Answer {
    if let Some(address) = address
        && let Err(wait) = leaks.per_address.admit(address, Instant::now())
    {
        let mut answer = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many revocations from this address; retry later",
        );
        answer
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
        return answer;
    }
    let Ok(request) = serde_json::from_slice::<Revocation>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "tokens: expected {\"tokens\": [\"...\"]}",
        );
    };
    if request.tokens.len() > MAX_TOKENS {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("tokens: at most {MAX_TOKENS}"),
        );
    }
    let leak = Leak {
        url: String::new(),
        source: "public".to_owned(),
    };
    for token in &request.tokens {
        if let Err(answer) = leaks.revoke(verifier, token, &leak).await {
            return answer;
        }
    }
    json(StatusCode::ACCEPTED, &serde_json::json!({}))
}

/// At most `per_minute` requests from one address in each minute.
struct AddressLimit {
    per_minute: u32,
    /// Per address: the minute counted (since `start`) and its requests.
    seen: Mutex<HashMap<IpAddr, (u64, u32)>>,
    start: Instant,
}

/// Addresses remembered before the ones of past minutes are forgotten.
const MAX_ADDRESSES: usize = 100_000;

impl AddressLimit {
    fn new(per_minute: u32) -> Self {
        AddressLimit {
            per_minute,
            seen: Mutex::new(HashMap::new()),
            start: Instant::now(),
        }
    }

    /// Counts a request from `address` at `now`; past the limit, how long
    /// until the next minute.
    fn admit(&self, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.start);
        let minute = elapsed.as_secs() / 60;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_ADDRESSES {
            seen.retain(|_, (m, _)| *m == minute);
        }
        let entry = seen.entry(address).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= self.per_minute {
            return Err(Duration::from_secs((minute + 1) * 60) - elapsed);
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_requests_per_minute_and_then_waits_for_the_next() {
        let limit = AddressLimit::new(2);
        let (a, b): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap());
        let t = limit.start + Duration::from_secs(10);
        assert_eq!(limit.admit(a, t), Ok(()));
        assert_eq!(limit.admit(a, t), Ok(()));
        assert_eq!(limit.admit(a, t), Err(Duration::from_secs(50)));
        assert_eq!(limit.admit(b, t), Ok(()));
        assert_eq!(limit.admit(a, t + Duration::from_secs(50)), Ok(()));
    }
}
