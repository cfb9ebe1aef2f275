//! The HTTP listener (`LATCHKEY_HTTP_ADDR`, off unless set): the standard
//! delegation protocols, answered from the same cache and verdicts as
//! Verify, so that existing infrastructure can use latchkey with
//! configuration only.
//!
//! - `POST /oauth2/introspect`: OAuth 2.0 Token Introspection (RFC 7662)
//!   ([`introspect`]).
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews`: Kubernetes webhook
//!   token authentication ([`token_review`]).
//!
//! HTTP/1.1, served by [`crate::serve`] with every port's connection limits
//! and timeouts; bodies are capped at 64 KiB.

mod introspect;
mod token_review;

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::auth::bearer_credential;
use crate::error::Error;
use crate::observe::Observe;
use crate::token::{INTROSPECT_SCOPE, TOKEN_REVIEW_SCOPE};
use crate::verifier::{Verdict, Verifier};

pub use token_review::TOKEN_REVIEW_PATH;

/// RFC 7662 introspection.
pub const INTROSPECT_PATH: &str = "/oauth2/introspect";

/// Largest request body accepted, in bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

type Answer = Response<Full<Bytes>>;

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

pub struct WebApi {
    verifier: Arc<Verifier>,
    observer: Arc<dyn Observe>,
    introspect_scope: [String; 1],
    /// The scope a TokenReview caller's bearer token needs.
    reviewer_scope: [String; 1],
    /// The scope a token needs to authenticate to Kubernetes (none: empty).
    review_scopes: Vec<String>,
    group_prefix: String,
    username_prefix: String,
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
        }
    }

    /// Whether the caller's bearer token (`authorization: Bearer …`) is
    /// valid and holds `scope`.
    async fn caller(&self, headers: &HeaderMap, scope: &[String; 1]) -> Result<(), Refusal> {
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

    async fn handle(&self, request: Request<Incoming>) -> Answer {
        let endpoint = match request.uri().path() {
            INTROSPECT_PATH => Endpoint::Introspect,
            path if token_review::is_path(path) => Endpoint::TokenReview,
            _ => {
                return json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({ "error": "not_found" }),
                );
            }
        };
        if request.method() != Method::POST {
            let mut answer = json(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({ "error": "invalid_request", "error_description": "use POST" }),
            );
            answer
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return answer;
        }
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                return json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &serde_json::json!({
                        "error": "invalid_request",
                        "error_description": format!("the body exceeds {MAX_BODY_BYTES} bytes"),
                    }),
                );
            }
            // The client went away mid-body; nobody reads this answer.
            Err(_) => return json(StatusCode::BAD_REQUEST, &serde_json::json!({})),
        };
        match endpoint {
            Endpoint::Introspect => self.introspect(&parts.headers, &body).await,
            Endpoint::TokenReview => self.token_review(&parts, &body).await,
        }
    }
}

/// Why a caller was not let in.
enum Refusal {
    /// No bearer credential.
    NoCredential,
    /// A token that is not valid.
    Invalid(Verdict),
    /// A valid token without the scope the endpoint needs.
    MissingScope,
    /// The credential could not be checked (the database unreachable).
    Undecided(Answer),
}

#[derive(Clone, Copy)]
enum Endpoint {
    Introspect,
    TokenReview,
}

/// The HTTP listener's service: `api`, each request answered within
/// `timeout` (or 503).
pub fn service(
    api: Arc<WebApi>,
    timeout: std::time::Duration,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Answer,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Answer, Infallible>> + Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    hyper::service::service_fn(move |request| {
        let api = Arc::clone(&api);
        async move {
            let answer = tokio::time::timeout(timeout, api.handle(request))
                .await
                .unwrap_or_else(|_| {
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "the request took too long",
                    )
                });
            Ok::<_, Infallible>(answer)
        }
    })
}

/// A JSON answer that no cache may keep (it describes a credential).
fn json(status: StatusCode, body: &serde_json::Value) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body.to_string())));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

/// An OAuth-style error answer (RFC 6749 5.2).
fn error(status: StatusCode, code: &str, description: &str) -> Answer {
    json(
        status,
        &serde_json::json!({ "error": code, "error_description": description }),
    )
}

/// The answer when latchkey could not decide (the database unreachable on a
/// cache miss, or too many lookups in progress): the caller fails closed
/// and may retry. Logged as the gRPC services log it.
fn undecided(e: Error) -> Answer {
    let status = crate::status::status(e);
    match status.code() {
        tonic::Code::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            status.message(),
        ),
        tonic::Code::InvalidArgument => {
            error(StatusCode::BAD_REQUEST, "invalid_request", status.message())
        }
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        ),
    }
}
