//! Kubernetes webhook token authentication: the API server, started with
//! `--authentication-token-webhook-config-file`, posts a `TokenReview` with
//! the bearer token a client presented, and latchkey answers who it is.
//!
//! A valid token holding `token_review.required_scope` authenticates as
//! user `owner`, uid the token's id, groups its scopes each prefixed with
//! `token_review.group_prefix`, and extra its metadata (one value per key).
//! Any other token is `authenticated: false` with an `error` saying why,
//! which the API server logs. `status.audiences` is left empty: a latchkey
//! token is good for the API server's own audiences and no other.
//! Both `authentication.k8s.io/v1` and `v1beta1` are answered, in the
//! version asked (the API server's `--authentication-token-webhook-version`
//! picks one, v1beta1 by default).

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde::Deserialize;

use super::{Answer, WebApi, json, undecided};
use crate::grpc::pb;
use crate::metrics::Api;
use crate::verifier::Verdict;

pub const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const V1BETA1_PATH: &str = "/apis/authentication.k8s.io/v1beta1/tokenreviews";
const API_VERSIONS: [&str; 2] = ["authentication.k8s.io/v1", "authentication.k8s.io/v1beta1"];

pub(super) fn is_path(path: &str) -> bool {
    path == TOKEN_REVIEW_PATH || path == V1BETA1_PATH
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenReview {
    api_version: String,
    kind: String,
    #[serde(default)]
    spec: Spec,
}

#[derive(Default, Deserialize)]
struct Spec {
    #[serde(default)]
    token: String,
}

impl Drop for Spec {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

impl WebApi {
    pub(super) async fn token_review(&self, body: &[u8]) -> Answer {
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
        let Some(api_version) = API_VERSIONS.into_iter().find(|v| *v == review.api_version) else {
            return bad_request(&format!(
                "apiVersion must be one of {}",
                API_VERSIONS.join(", ")
            ));
        };
        if review.kind != "TokenReview" {
            return bad_request("kind must be TokenReview");
        }
        let status = if review.spec.token.is_empty() {
            refused("no token was given")
        } else {
            match self.review(&review.spec.token).await {
                Ok(status) => status,
                Err(answer) => return answer,
            }
        };
        json(
            StatusCode::OK,
            &serde_json::json!({
                "apiVersion": api_version,
                "kind": "TokenReview",
                "status": status,
            }),
        )
    }

    /// The review's `status` for `token`, or the answer if latchkey could
    /// not decide.
    async fn review(&self, token: &str) -> Result<serde_json::Value, Answer> {
        let checked = self
            .verifier
            .verify(token, &self.review_scopes)
            .await
            .map_err(undecided)?;
        self.metrics.verdict(Api::TokenReview, checked.verdict);
        match (checked.verdict, checked.token) {
            (Verdict::Valid, Some(known)) => {
                let token = crate::grpc::decode_rendered(&known.snapshot).map_err(undecided)?;
                Ok(self.authenticated(&token))
            }
            (Verdict::InsufficientScope, _) => Ok(refused(&format!(
                "the token lacks scope {}",
                checked.missing_scopes.join(" ")
            ))),
            (verdict, _) => Ok(refused(verdict.reason())),
        }
    }

    fn authenticated(&self, token: &pb::Token) -> serde_json::Value {
        let groups: Vec<String> = token
            .scopes
            .iter()
            .map(|s| format!("{}{s}", self.group_prefix))
            .collect();
        let extra: BTreeMap<&str, [&str; 1]> = token
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), [v.as_str()]))
            .collect();
        serde_json::json!({
            "authenticated": true,
            "user": {
                "username": token.owner,
                "uid": token.id,
                "groups": groups,
                "extra": extra,
            },
        })
    }
}

fn refused(why: &str) -> serde_json::Value {
    serde_json::json!({ "authenticated": false, "error": why })
}

/// A Kubernetes `Status` for a request that is not a TokenReview.
fn bad_request(message: &str) -> Answer {
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "message": message,
            "reason": "BadRequest",
            "code": 400,
        }),
    )
}
