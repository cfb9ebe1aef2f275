//! [`RequireToken`]: a tower layer that lets a request through only with a
//! bearer token latchkey says is valid for the route's scopes.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use zeroize::Zeroizing;

use crate::client::Client;
use crate::pb::{self, Verdict};

/// The token a request carried, once latchkey has said it is valid; in the
/// request's extensions for the handler (axum: `Extension<VerifiedToken>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The token's id (a UUIDv7), as the audit trail names it.
    pub id: String,
    /// Whose token it is: the user, device or app it was issued to.
    pub owner: String,
    pub name: String,
    /// Every scope the token holds (the route asked for some of them).
    pub scopes: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// When it stops working; `None`: never.
    pub expire_time: Option<SystemTime>,
}

impl From<pb::Token> for VerifiedToken {
    fn from(token: pb::Token) -> Self {
        VerifiedToken {
            id: token.id,
            owner: token.owner,
            name: token.name,
            scopes: token.scopes,
            metadata: token.metadata.into_iter().collect(),
            expire_time: token.expire_time.and_then(|t| SystemTime::try_from(t).ok()),
        }
    }
}

/// Guards the services it wraps with latchkey's Verify: a request needs
/// `Authorization: Bearer <token>` for a valid token holding every scope
/// given to [`RequireToken::scopes`]. Refusals follow RFC 6750 (401 with
/// `WWW-Authenticate: Bearer`, adding `error="invalid_token"` when a token
/// was sent; 403 with `error="insufficient_scope"` and the scopes needed),
/// and 503 when latchkey cannot answer: it fails closed. A gRPC request
/// (`content-type: application/grpc…`) is refused with the gRPC status
/// instead: `UNAUTHENTICATED`, `PERMISSION_DENIED` or `UNAVAILABLE`.
#[derive(Clone)]
pub struct RequireToken {
    client: Client,
    scopes: Arc<[String]>,
}

impl RequireToken {
    /// Any valid token passes; add required scopes with
    /// [`RequireToken::scopes`].
    pub fn new(client: Client) -> Self {
        RequireToken {
            client,
            scopes: Arc::from([]),
        }
    }

    /// The scopes a token must hold (each, as latchkey matches scopes:
    /// exactly, or by a granted `prefix:*`).
    #[must_use]
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

impl<S> tower_layer::Layer<S> for RequireToken {
    type Service = RequireTokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireTokenService {
            inner,
            client: self.client.clone(),
            scopes: Arc::clone(&self.scopes),
        }
    }
}

/// The service [`RequireToken`] wraps around another.
#[derive(Clone)]
pub struct RequireTokenService<S> {
    inner: S,
    client: Client,
    scopes: Arc<[String]>,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for RequireTokenService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone is ready only if polled; the one that was polled serves
        // this request (tower's guidance for services that move into futures).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let client = self.client.clone();
        let scopes = Arc::clone(&self.scopes);
        Box::pin(async move {
            let grpc = is_grpc(&request);
            let Some(token) = bearer(&request) else {
                return Ok(refuse(Refusal::NoToken, grpc));
            };
            // No token is this long; latchkey would refuse the message, and
            // the refusal would read as an outage (503).
            if token.len() > MAX_TOKEN_BYTES {
                return Ok(refuse(Refusal::InvalidToken(Verdict::Malformed), grpc));
            }
            let refusal = match client.verify(&token, &scopes).await {
                Ok(answer) => match answer.verdict() {
                    Verdict::Valid => {
                        let token = answer.token.unwrap_or_default();
                        request.extensions_mut().insert(VerifiedToken::from(token));
                        return inner.call(request).await;
                    }
                    Verdict::InsufficientScope => Refusal::InsufficientScope(&scopes),
                    Verdict::UsageExceeded => Refusal::UsageExceeded,
                    Verdict::RateLimited => Refusal::RateLimited(
                        answer
                            .retry_after
                            .and_then(|d| u64::try_from(d.seconds + i64::from(d.nanos > 0)).ok()),
                    ),
                    verdict => Refusal::InvalidToken(verdict),
                },
                Err(error) => {
                    tracing::warn!(%error, "cannot verify a bearer token; refusing the request");
                    Refusal::Unavailable
                }
            };
            Ok(refuse(refusal, grpc))
        })
    }
}

/// Longer bearer tokens are malformed without asking latchkey (its tokens
/// are about 50 characters, with any prefix).
const MAX_TOKEN_BYTES: usize = 1024;

/// The bearer token of `Authorization: Bearer <token>` (the scheme in any
/// case), if there is one.
fn bearer<B>(request: &Request<B>) -> Option<Zeroizing<String>> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
        .then(|| Zeroizing::new(token.to_owned()))
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

enum Refusal<'a> {
    NoToken,
    InvalidToken(Verdict),
    InsufficientScope(&'a [String]),
    /// The token's credits are spent.
    UsageExceeded,
    /// A rate limit is reached; retry after this many seconds.
    RateLimited(Option<u64>),
    Unavailable,
}

/// The answer to a refused request, as RFC 6750 (or gRPC) words it.
fn refuse<B: Default>(refusal: Refusal<'_>, grpc: bool) -> Response<B> {
    let retry_after = match refusal {
        Refusal::RateLimited(after) => after,
        _ => None,
    };
    let (status, grpc_status, challenge, message) = match refusal {
        Refusal::NoToken => (
            StatusCode::UNAUTHORIZED,
            tonic::Code::Unauthenticated,
            Some("Bearer".to_owned()),
            "a bearer token is required".to_owned(),
        ),
        Refusal::InvalidToken(verdict) => {
            let why = match verdict {
                Verdict::Malformed => "the token is malformed",
                Verdict::Unknown => "the token is unknown",
                Verdict::Revoked => "the token is revoked",
                Verdict::Expired => "the token is expired",
                Verdict::OwnerDisabled => "the token's owner is disabled",
                Verdict::Inactive => "the token is inactive",
                _ => "the token is not valid",
            };
            (
                StatusCode::UNAUTHORIZED,
                tonic::Code::Unauthenticated,
                Some(format!(
                    "Bearer error=\"invalid_token\", error_description=\"{why}\""
                )),
                why.to_owned(),
            )
        }
        Refusal::InsufficientScope(scopes) => {
            let scopes = scopes.join(" ");
            (
                StatusCode::FORBIDDEN,
                tonic::Code::PermissionDenied,
                Some(format!(
                    "Bearer error=\"insufficient_scope\", scope=\"{scopes}\""
                )),
                format!("the token needs the scopes {scopes}"),
            )
        }
        Refusal::UsageExceeded => (
            StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::ResourceExhausted,
            None,
            "the token has used up its credits".to_owned(),
        ),
        Refusal::RateLimited(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::ResourceExhausted,
            None,
            "the token has made too many calls; retry later".to_owned(),
        ),
        Refusal::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            None,
            "tokens cannot be verified right now".to_owned(),
        ),
    };
    let mut response = Response::new(B::default());
    let headers = response.headers_mut();
    if let Some(challenge) = challenge.and_then(|c| HeaderValue::try_from(c).ok()) {
        headers.insert(WWW_AUTHENTICATE, challenge);
    }
    if let Some(seconds) = retry_after {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if grpc {
        // Trailers-only: the status in the headers of an HTTP 200.
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(grpc_status as i32));
        if let Ok(message) = HeaderValue::try_from(message) {
            headers.insert("grpc-message", message);
        }
    } else {
        *response.status_mut() = status;
    }
    response
}
