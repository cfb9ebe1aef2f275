//! The HTTP listener's service: introspection and TokenReview, called for
//! every request a protected service or cluster gets, are answered
//! directly, in the span and within the timeout the router's requests
//! get; everything else goes through the router. The router (its
//! middleware, route table, method router and handler boxing) costs each
//! call about as much as a cached verification does.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use tower_service::Service as _;

use super::api::WebApi;
use super::{
    INTROSPECT_PATH, TOKEN_REVIEW_PATH, introspection, review, router, token_review, within,
};

/// The HTTP listener's routes on `api`, the two verification endpoints
/// answered without the router.
#[derive(Clone)]
pub struct WebService {
    router: Router,
    api: Arc<WebApi>,
    timeout: Duration,
}

impl WebService {
    /// Every request answered within `timeout` (or 503).
    pub fn new(api: Arc<WebApi>, timeout: Duration) -> Self {
        WebService {
            router: router(Arc::clone(&api), timeout),
            api,
            timeout,
        }
    }
}

/// The endpoints answered directly.
#[derive(Clone, Copy)]
enum Direct {
    Introspect,
    TokenReview,
}

impl hyper::service::Service<Request<Incoming>> for WebService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let direct = match request.uri().path() {
            _ if request.method() != Method::POST => None,
            INTROSPECT_PATH => Some(Direct::Introspect),
            TOKEN_REVIEW_PATH | token_review::V1BETA1_PATH => Some(Direct::TokenReview),
            _ => None,
        };
        let Some(direct) = direct else {
            let mut router = self.router.clone();
            return Box::pin(async move { router.call(request).await });
        };
        let (api, timeout) = (Arc::clone(&self.api), self.timeout);
        Box::pin(async move {
            let uri = request.uri().clone();
            let answer = async {
                let answer = match direct {
                    Direct::Introspect => introspection(&api, request).await,
                    Direct::TokenReview => review(&api, request).await,
                };
                answer.map(Body::new)
            };
            Ok(within(timeout, uri.path(), answer).await)
        })
    }
}
