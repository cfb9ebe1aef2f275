//! The admin console's owner and key pages: look an owner up, disable or
//! enable it with a reason, delete all its tokens after a confirmation, its
//! audit trail; and the HMAC keys with the tokens under each.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, post};

use super::exchange::{
    Form, Realm, console, posted, query_value, recent_events, refused, require_session, see_other,
};
use super::pages;
use crate::audit::EventFilter;
use crate::auth::Actor;
use crate::error::Error;
use crate::lifecycle::Lifecycle;
use crate::web::api::WebApi;

pub(super) fn routes() -> Router<Arc<WebApi>> {
    Router::new()
        .route("/console/owners", get(owner_page))
        .route("/console/owners/disable", post(disable))
        .route("/console/owners/enable", post(enable))
        .route("/console/owners/limits", post(set_limits))
        .route(
            "/console/owners/delete",
            get(confirm_delete).post(delete_tokens),
        )
        .route("/console/keys", get(keys))
}

/// The `owner` of the request's query, trimmed; empty if not given.
fn owner_of(request: &Request<Body>) -> String {
    query_value(request, "owner")
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// Runs `change` on the owner a posted form names, then shows the owner's
/// page, or why it was refused.
async fn change<F, Fut>(api: Arc<WebApi>, request: Request<Body>, change: F) -> Response
where
    F: FnOnce(Arc<Lifecycle>, String, Form, Actor) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let console = console(&api);
    let (_, session, form) = match posted(console, request, Realm::Admin).await {
        Ok(posted) => posted,
        Err(answer) => return answer,
    };
    let owner = form.text("owner").to_owned();
    let lifecycle = Arc::clone(&console.lifecycle);
    match change(lifecycle, owner.clone(), form, session.actor).await {
        Ok(()) => see_other(&pages::owner_page_link(&owner)),
        Err(e) => refused(&e),
    }
}

/// The search form, and with `owner` given, the owner: its status, its
/// tokens by status, what may be done to it, and its audit trail.
async fn owner_page(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    let console = console(&api);
    let (secret, session) = match require_session(console, request.headers(), Realm::Admin).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let chrome = pages::chrome(&session, &console.sessions.csrf_token(&secret));
    let owner = owner_of(&request);
    if owner.is_empty() {
        return pages::owner(&chrome, None, &[]);
    }
    let found = match console.lifecycle.get_owner(&owner).await {
        Ok(found) => found,
        Err(e) => return refused(&e),
    };
    let filter = EventFilter {
        token_id: None,
        owner: Some(owner),
    };
    match recent_events(console, filter).await {
        Ok(events) => pages::owner(&chrome, Some(&found), &events),
        Err(e) => refused(&e),
    }
}

async fn disable(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    change(api, request, |lifecycle, owner, form, actor| async move {
        lifecycle
            .disable_owner(&owner, form.text("reason"), actor)
            .await
            .map(drop)
    })
    .await
}

async fn set_limits(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    change(api, request, |lifecycle, owner, form, actor| async move {
        let limits = super::limits::rate_limits(form.get("rate_limits").map(|v| v.as_str()))?
            .unwrap_or_default();
        lifecycle
            .set_owner_limits(&owner, &limits, actor)
            .await
            .map(drop)
    })
    .await
}

async fn enable(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    change(api, request, |lifecycle, owner, _, actor| async move {
        lifecycle.enable_owner(&owner, actor).await.map(drop)
    })
    .await
}

async fn confirm_delete(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    let console = console(&api);
    let (secret, session) = match require_session(console, request.headers(), Realm::Admin).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let owner = owner_of(&request);
    match console.lifecycle.get_owner(&owner).await {
        Ok(found) => pages::confirm_delete_owner(
            &pages::chrome(&session, &console.sessions.csrf_token(&secret)),
            &found,
        ),
        Err(e) => refused(&e),
    }
}

async fn delete_tokens(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    change(api, request, |lifecycle, owner, _, actor| async move {
        lifecycle.delete_owner_tokens(&owner, actor).await.map(drop)
    })
    .await
}

async fn keys(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    let console = console(&api);
    let (secret, session) = match require_session(console, request.headers(), Realm::Admin).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    match console.lifecycle.keys(&console.key_ids).await {
        Ok(keys) => pages::keys(
            &pages::chrome(&session, &console.sessions.csrf_token(&secret)),
            &keys,
        ),
        Err(e) => refused(&e),
    }
}
