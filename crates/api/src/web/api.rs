//! What the HTTP endpoints share: the [`WebApi`] state, the check of the
//! caller's bearer credential, the body limit and the JSON answers.

use std::sync::Arc;

use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap};
use hyper::{Request, StatusCode};

use crate::auth::bearer_credential;
use crate::observe::Observe;
use crate::token::{INTROSPECT_SCOPE, TOKEN_REVIEW_SCOPE};
use crate::verifier::{Verdict, Verifier};

pub(super) use super::answer::{Answer, error, json, json_body, json_bytes, undecided};

/// Largest request body accepted, in bytes.
pub(super) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Kubernetes webhook token authentication (`POST
/// /apis/authentication.k8s.io/v1/tokenreviews` on `http_addr`).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenReviewSettings {
    /// The scope a token needs to authenticate to Kubernetes, so that not
    /// every API token is a cluster credential; empty: any valid token.
    pub required_scope: String,
    /// Put before each of the token's scopes to make its groups, so that no
    /// scope can name a Kubernetes system group (`system:masters`); like
    /// the API server's `--oidc-groups-prefix`.
    pub group_prefix: String,
    /// Put before the token's owner to make its username, so that no owner
    /// can name a Kubernetes user (`system:kube-controller-manager`); like
    /// the API server's `--oidc-username-prefix`.
    pub username_prefix: String,
}

impl Default for TokenReviewSettings {
    fn default() -> Self {
        TokenReviewSettings {
            required_scope: "kubernetes:authenticate".to_owned(),
            group_prefix: "latchkey:".to_owned(),
            username_prefix: "latchkey:".to_owned(),
        }
    }
}

/// What the web console needs beside the HTTP listener's state.
pub struct Console {
    pub sessions: Arc<crate::console::ConsoleSessions>,
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    /// Whether the listener speaks TLS: the console's cookies are then
    /// `Secure`.
    pub secure: bool,
    /// The lifetimes a new token's form offers (`console.expiry_presets`).
    pub expiry_presets: Vec<std::time::Duration>,
    /// The scopes the hosted token page offers: (scope, what it allows).
    pub scopes: Vec<(String, String)>,
    /// The CSP `frame-ancestors` sources that may embed the hosted token
    /// page, separated by spaces; empty: none may.
    pub frame_ancestors: String,
    /// The configured HMAC keys' ids, the primary first.
    pub key_ids: Vec<String>,
}

pub struct WebApi {
    pub(super) verifier: Arc<Verifier>,
    pub(super) observer: Arc<dyn Observe>,
    pub(super) introspect_scope: [String; 1],
    /// The scope a TokenReview caller's bearer token needs.
    pub(super) reviewer_scope: [String; 1],
    /// The scope a token needs to authenticate to Kubernetes (none: empty).
    pub(super) review_scopes: Vec<String>,
    pub(super) group_prefix: String,
    pub(super) username_prefix: String,
    /// The web console, if it is served.
    pub(super) console: Option<Console>,
    /// The leak endpoints, if they are served.
    pub(super) leaks: Option<super::leaks::Leaks>,
}

impl WebApi {
    pub fn new(
        verifier: Arc<Verifier>,
        observer: Arc<dyn Observe>,
        review: TokenReviewSettings,
    ) -> Self {
        WebApi {
            verifier,
            observer,
            introspect_scope: [INTROSPECT_SCOPE.to_owned()],
            reviewer_scope: [TOKEN_REVIEW_SCOPE.to_owned()],
            review_scopes: Some(review.required_scope)
                .filter(|s| !s.is_empty())
                .into_iter()
                .collect(),
            group_prefix: review.group_prefix,
            username_prefix: review.username_prefix,
            console: None,
            leaks: None,
        }
    }

    /// Serves the leak endpoints too.
    #[must_use]
    pub fn with_leaks(mut self, leaks: super::leaks::Leaks) -> Self {
        self.leaks = Some(leaks);
        self
    }

    /// Serves the web console too.
    #[must_use]
    pub fn with_console(mut self, console: Console) -> Self {
        self.console = Some(console);
        self
    }

    /// Whether the caller's bearer token (`authorization: Bearer …`) is
    /// valid and holds `scope`.
    pub(super) async fn caller(
        &self,
        headers: &HeaderMap,
        scope: &[String; 1],
    ) -> Result<(), Refusal> {
        let credential = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_credential)
            .ok_or(Refusal::NoCredential)?;
        let checked = self
            .verifier
            .verify(credential, scope)
            .await
            .map_err(|e| Refusal::Undecided(undecided(e)))?;
        match checked.verdict {
            Verdict::Valid => Ok(()),
            Verdict::InsufficientScope => Err(Refusal::MissingScope),
            verdict => Err(Refusal::Invalid(verdict)),
        }
    }
}

/// A request body as the listener hands it over (hyper's, or axum's).
pub(super) trait RequestBody:
    hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
{
}

impl<B> RequestBody for B where
    B: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
{
}

/// The request's head and its body, read whole up to [`MAX_BODY_BYTES`];
/// past that, the 413 answer.
pub(super) async fn read_body<B: RequestBody>(
    request: Request<B>,
) -> Result<(hyper::http::request::Parts, Bytes), Answer> {
    let (parts, body) = request.into_parts();
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(e) if e.is::<LengthLimitError>() => Err(json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({
                "error": "invalid_request",
                "error_description": format!("the body exceeds {MAX_BODY_BYTES} bytes"),
            }),
        )),
        // The client went away mid-body; nobody reads this answer.
        Err(_) => Err(json(StatusCode::BAD_REQUEST, &serde_json::json!({}))),
    }
}

/// Why a caller was not let in.
pub(super) enum Refusal {
    /// No bearer credential.
    NoCredential,
    /// A token that is not valid.
    Invalid(Verdict),
    /// A valid token without the scope the endpoint needs.
    MissingScope,
    /// The credential could not be checked (the database unreachable).
    Undecided(Answer),
}
