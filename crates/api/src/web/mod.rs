//! The HTTP listener (`LATCHKEY_HTTP_ADDR`, off unless set): the standard
//! delegation protocols, answered from the same cache and verdicts as
//! Verify, so that existing infrastructure can use latchkey with
//! configuration only.
//!
//! - `POST /oauth2/introspect`: OAuth 2.0 Token Introspection (RFC 7662)
//!   ([`introspect`]).
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews`: Kubernetes webhook
//!   token authentication ([`token_review`]).
//! - `POST /leaks/github` and `POST /v1/tokens/revoke`: leak reports
//!   ([`leaks`]).
//! - `/console/…`: the web console, when it is served.
//!
//! One axum [`router`], served over HTTP/1.1 with every port's connection
//! limits and timeouts; bodies are capped at 64 KiB, each request at the
//! server's request timeout. [`WebService`] answers introspection and
//! TokenReview, the endpoints every request of a protected service may
//! call, without the router (same span, timeout and body cap).

mod answer;
mod api;
mod console;
mod introspect;
mod leaks;
mod service;
mod token_review;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::routing::{MethodRouter, post};
use hyper::StatusCode;
use hyper::header::{self, HeaderValue};

use api::{Answer, RequestBody, error, json, read_body};

pub use api::{Console, TokenReviewSettings, WebApi};
pub use introspect::INTROSPECT_PATH;
pub use leaks::{GITHUB_PATH, GithubPublicKey, LeakSettings, Leaks, MAX_TOKENS, REVOKE_PATH};
pub use service::WebService;
pub use token_review::TOKEN_REVIEW_PATH;

/// The HTTP listener's routes on `api`, each request answered within
/// `timeout` (or 503).
pub fn router(api: Arc<WebApi>, timeout: Duration) -> Router {
    let mut router = Router::new();
    if api.console.is_some() {
        router = router.merge(console::routes(&api));
    }
    if let Some(leaks) = &api.leaks {
        router = router.route(REVOKE_PATH, post_only(post(revoke_leaked)));
        if leaks.serves_github() {
            router = router.route(GITHUB_PATH, post_only(post(github_leaks)));
        }
    }
    router
        .route(INTROSPECT_PATH, post_only(post(introspect)))
        .route(TOKEN_REVIEW_PATH, post_only(post(token_review)))
        .route(token_review::V1BETA1_PATH, post_only(post(token_review)))
        .fallback(not_found)
        .with_state(api)
        .layer(middleware::from_fn(
            move |request: Request, next: Next| async move {
                // A reference-counted copy of the path, no allocation.
                let uri = request.uri().clone();
                within(timeout, uri.path(), next.run(request)).await
            },
        ))
}

/// `answer` in the request's span (its path; a console link's path holds
/// its secret, so not that), answered within `timeout`, else 503.
async fn within(
    timeout: Duration,
    path: &str,
    answer: impl Future<Output = axum::response::Response>,
) -> axum::response::Response {
    let path = if path.starts_with("/console/link/") {
        "/console/link/…"
    } else {
        path
    };
    let span = tracing::debug_span!("http", path, token_id = tracing::field::Empty);
    let answer = tracing::Instrument::instrument(answer, span);
    tokio::time::timeout(timeout, answer)
        .await
        .unwrap_or_else(|_| {
            axum::response::IntoResponse::into_response(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the request took too long",
            ))
        })
}

async fn introspect(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Answer {
    introspection(&api, request).await
}

async fn token_review(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Answer {
    review(&api, request).await
}

/// Introspection of `request`, its body read first (the router's and
/// [`WebService`]'s).
async fn introspection<B: RequestBody>(api: &WebApi, request: hyper::Request<B>) -> Answer {
    match read_body(request).await {
        Ok((parts, body)) => api.introspect(&parts.headers, &body).await,
        Err(refused) => refused,
    }
}

/// TokenReview of `request`, its body read first.
async fn review<B: RequestBody>(api: &WebApi, request: hyper::Request<B>) -> Answer {
    match read_body(request).await {
        Ok((parts, body)) => api.token_review(&parts, &body).await,
        Err(refused) => refused,
    }
}

async fn github_leaks(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Answer {
    let Some(leaks) = &api.leaks else {
        return not_found().await;
    };
    match read_body(request).await {
        Ok((parts, body)) => leaks::github(leaks, &api.verifier, &parts.headers, &body).await,
        Err(refused) => refused,
    }
}

async fn revoke_leaked(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Answer {
    let Some(leaks) = &api.leaks else {
        return not_found().await;
    };
    let address = request
        .extensions()
        .get::<crate::peer::PeerAddr>()
        .map(|peer| peer.0.ip());
    match read_body(request).await {
        Ok((_, body)) => leaks::revoke(leaks, &api.verifier, address, &body).await,
        Err(refused) => refused,
    }
}

/// Every endpoint takes POST only: anything else is 405 with `Allow`.
fn post_only(route: MethodRouter<Arc<WebApi>>) -> MethodRouter<Arc<WebApi>> {
    route.fallback(|| async {
        let mut answer = json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({ "error": "invalid_request", "error_description": "use POST" }),
        );
        answer
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        answer
    })
}

async fn not_found() -> Answer {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({ "error": "not_found" }),
    )
}
