//! Kubernetes webhook token authentication: the API server, started with
//! `--authentication-token-webhook-config-file`, posts a `TokenReview` with
//! the bearer token a client presented, and latchkey answers who it is.
//!
//! The caller must authenticate as kube-apiserver's webhook client does:
//! with a bearer token holding `latchkey:tokenreview`, or (with TLS and
//! `tls.client_ca_file`) a client certificate from the configured CA.
//! Others get a Kubernetes `Status`, 401 or 403, and no review.
//!
//! A valid token holding `token_review.required_scope` authenticates as
//! user `token_review.username_prefix` + owner (so that no owner can name a
//! Kubernetes user), uid the token's id, groups its scopes each prefixed
//! with `token_review.group_prefix`, and extra its metadata (one value per
//! key). Any other token is exactly `authenticated: false`: like RFC 7662
//! introspection, the answer says nothing more about a token the cluster
//! will not take. `status.audiences` is left empty: a latchkey token is good
//! for the API server's own audiences and no other.
//! Both `authentication.k8s.io/v1` and `v1beta1` are answered, in the
//! version asked (the API server's `--authentication-token-webhook-version`
//! picks one, v1beta1 by default).

use std::borrow::Cow;
use std::collections::BTreeMap;

use hyper::StatusCode;
use hyper::body::Bytes;

use serde::{Deserialize, Serialize};

use super::api::{Answer, Refusal, WebApi, json, json_body, json_bytes, undecided};
use crate::observe::Api;
use crate::peer::PeerCertificates;
use crate::verifier::{Snapshot, Verdict, View};

pub const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
pub(super) const V1BETA1_PATH: &str = "/apis/authentication.k8s.io/v1beta1/tokenreviews";
const API_VERSIONS: [&str; 2] = ["authentication.k8s.io/v1", "authentication.k8s.io/v1beta1"];

/// A review as sent, its strings borrowed from the body where they have
/// no escapes (the usual case) and copied where they do.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenReview<'a> {
    #[serde(borrow)]
    api_version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    spec: Spec<'a>,
}

#[derive(Default, Deserialize)]
struct Spec<'a> {
    #[serde(default, borrow)]
    token: Cow<'a, str>,
}

impl Drop for Spec<'_> {
    fn drop(&mut self) {
        // A copy is wiped; a borrowed token lies in the request's body.
        if let Cow::Owned(token) = &mut self.token {
            zeroize::Zeroize::zeroize(token);
        }
    }
}

impl WebApi {
    pub(super) async fn token_review(
        &self,
        request: &hyper::http::request::Parts,
        body: &[u8],
    ) -> Answer {
        // A certificate the TLS handshake verified against the client CA.
        if request.extensions.get::<PeerCertificates>().is_none()
            && let Err(refusal) = self.caller(&request.headers, &self.reviewer_scope).await
        {
            return match refusal {
                Refusal::MissingScope => status(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "the caller's token lacks scope latchkey:tokenreview",
                ),
                Refusal::NoCredential | Refusal::Invalid(_) => status(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "authenticate with a bearer token holding scope latchkey:tokenreview, or a \
                     client certificate from the configured CA",
                ),
                Refusal::Undecided(answer) => answer,
            };
        }
        let review: TokenReview = match serde_json::from_slice(body) {
            Ok(review) => review,
            // The position only: serde's message may quote the body, token
            // included.
            Err(e) => {
                return bad_request(&format!(
                    "the body is not a TokenReview (JSON error at line {} column {})",
                    e.line(),
                    e.column()
                ));
            }
        };
        let Some(api_version) = API_VERSIONS
            .into_iter()
            .find(|v| *v == review.api_version.as_ref())
        else {
            return bad_request(&format!(
                "apiVersion must be one of {}",
                API_VERSIONS.join(", ")
            ));
        };
        if review.kind != "TokenReview" {
            return bad_request("kind must be TokenReview");
        }
        let user = if review.spec.token.is_empty() {
            None
        } else {
            match self.review(&review.spec.token).await {
                Ok(user) => user,
                Err(answer) => return answer,
            }
        };
        json_bytes(StatusCode::OK, reviewed(api_version, user.as_deref()))
    }

    /// The review's `user` for `token` (none unless it authenticates), or
    /// the answer if latchkey could not decide.
    async fn review(&self, token: &str) -> Result<Option<Bytes>, Answer> {
        let checked = self
            .verifier
            .verify_spending(token, &self.review_scopes, 1, None)
            .await
            .map_err(undecided)?;
        checked.record_in_span();
        self.observer.verdict(Api::TokenReview, checked.verdict);
        Ok(match (checked.verdict, checked.token) {
            (Verdict::Valid, Some(known)) => Some(known.snapshot.view(View::ReviewUser, |token| {
                json_body(&User {
                    token,
                    username_prefix: &self.username_prefix,
                    group_prefix: &self.group_prefix,
                })
            })),
            _ => None,
        })
    }
}

/// A TokenReview answer, its fields in name order at every level:
/// `apiVersion` (one of [`API_VERSIONS`], which need no escaping), `kind`,
/// and `status`, authenticated as `user` (JSON) if there is one.
fn reviewed(api_version: &str, user: Option<&[u8]>) -> Bytes {
    // Everything but the user is at most 107 bytes (v1beta1, authenticated).
    let mut out = Vec::with_capacity(112 + user.map_or(0, <[u8]>::len));
    out.extend_from_slice(br#"{"apiVersion":""#);
    out.extend_from_slice(api_version.as_bytes());
    out.extend_from_slice(br#"","kind":"TokenReview","status":{"authenticated":"#);
    match user {
        Some(user) => {
            out.extend_from_slice(br#"true,"user":"#);
            out.extend_from_slice(user);
        }
        None => out.extend_from_slice(b"false"),
    }
    out.extend_from_slice(b"}}");
    Bytes::from(out)
}

/// Who a valid token is to Kubernetes, written from the cached token once
/// ([`View::ReviewUser`]): the settings' prefixes are the server's.
struct User<'a> {
    token: &'a Snapshot,
    username_prefix: &'a str,
    group_prefix: &'a str,
}

impl Serialize for User<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let token = self.token;
        let mut id = [0u8; 36];
        let mut user = serializer.serialize_struct("User", 4)?;
        user.serialize_field("extra", &Extra(token))?;
        user.serialize_field(
            "groups",
            &Groups {
                prefix: self.group_prefix,
                scopes: token.scopes(),
            },
        )?;
        user.serialize_field("uid", token.id.hyphenated().encode_lower(&mut id))?;
        user.serialize_field("username", &Prefixed(self.username_prefix, token.owner()))?;
        user.end()
    }
}

/// `prefix` then `text`, as one JSON string.
struct Prefixed<'a>(&'a str, &'a str);

impl Serialize for Prefixed<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}{}", self.0, self.1))
    }
}

/// The token's scopes, each a group with the prefix.
struct Groups<'a> {
    prefix: &'a str,
    scopes: &'a str,
}

impl Serialize for Groups<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.scopes
                .split_ascii_whitespace()
                .map(|s| Prefixed(self.prefix, s)),
        )
    }
}

/// The token's metadata, one value per key, keys in order.
struct Extra<'a>(&'a Snapshot);

impl Serialize for Extra<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let sorted: BTreeMap<&str, [&str; 1]> = self.0.metadata().map(|(k, v)| (k, [v])).collect();
        serializer.collect_map(sorted)
    }
}

/// A Kubernetes `Status` for a request that is not a TokenReview.
fn bad_request(message: &str) -> Answer {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// A Kubernetes `Status` failure.
fn status(code: StatusCode, reason: &str, message: &str) -> Answer {
    json(
        code,
        &serde_json::json!({
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_the_json_of_its_fields_in_name_order() {
        let parse = |b: Bytes| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
        for api_version in API_VERSIONS {
            let not = reviewed(api_version, None);
            assert_eq!(
                std::str::from_utf8(&not).unwrap(),
                format!(
                    r#"{{"apiVersion":"{api_version}","kind":"TokenReview","status":{{"authenticated":false}}}}"#
                )
            );
            let user = br#"{"groups":["latchkey:a"],"uid":"x","username":"latchkey:o"}"#;
            assert_eq!(
                parse(reviewed(api_version, Some(user))),
                serde_json::json!({
                    "apiVersion": api_version, "kind": "TokenReview",
                    "status": {"authenticated": true, "user": parse(Bytes::from_static(user))},
                })
            );
        }
    }
}
