//! The admin console's owner and key pages: look an owner up, disable or
//! enable it with a reason, delete all its tokens after a confirmation, its
//! audit trail; and the HMAC keys with the tokens under each.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;

use super::exchange::{Realm, console, posted, refused, require_session, see_other};
use super::pages;
use crate::audit::EventFilter;
use crate::lifecycle::EventQuery;
use crate::web::api::WebApi;

/// The audit events an owner's page shows, newest first.
const EVENTS_SHOWN: i32 = 50;

pub(super) fn routes() -> Router<Arc<WebApi>> {
    Router::new()
        .route("/console/owners", get(owner_page))
        .route("/console/owners/disable", axum::routing::post(disable))
        .route("/console/owners/enable", axum::routing::post(enable))
        .route(
            "/console/owners/delete",
            get(confirm_delete).post(delete_tokens),
        )
        .route("/console/keys", get(keys))
}

/// The `owner` of a query string, trimmed; empty if not given.
fn owner_of(request: &Request<Body>) -> String {
    form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(n, _)| n == "owner")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

/// The owner page's address.
fn owner_link(owner: &str) -> String {
    format!(
        "/console/owners?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("owner", owner)
            .finish()
    )
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
    let events = console
        .lifecycle
        .list_events(EventQuery {
            filter: EventFilter {
                token_id: None,
                owner: Some(owner.clone()),
            },
            page_size: EVENTS_SHOWN,
            page_token: String::new(),
        })
        .await;
    match events {
        Ok(events) => pages::owner(&chrome, Some(&found), &events.items),
        Err(e) => refused(&e),
    }
}

async fn disable(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    let console = console(&api);
    let (_, session, form) = match posted(console, request, Realm::Admin).await {
        Ok(posted) => posted,
        Err(answer) => return answer,
    };
    let owner = form.get("owner").map_or("", |v| v.trim());
    let reason = form.get("reason").map_or("", |v| v.trim());
    match console
        .lifecycle
        .disable_owner(owner, reason, session.actor)
        .await
    {
        Ok(_) => see_other(&owner_link(owner)),
        Err(e) => refused(&e),
    }
}

async fn enable(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    let console = console(&api);
    let (_, session, form) = match posted(console, request, Realm::Admin).await {
        Ok(posted) => posted,
        Err(answer) => return answer,
    };
    let owner = form.get("owner").map_or("", |v| v.trim());
    match console.lifecycle.enable_owner(owner, session.actor).await {
        Ok(_) => see_other(&owner_link(owner)),
        Err(e) => refused(&e),
    }
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
    let console = console(&api);
    let (_, session, form) = match posted(console, request, Realm::Admin).await {
        Ok(posted) => posted,
        Err(answer) => return answer,
    };
    let owner = form.get("owner").map_or("", |v| v.trim());
    match console
        .lifecycle
        .delete_owner_tokens(owner, session.actor)
        .await
    {
        Ok(_) => see_other(&owner_link(owner)),
        Err(e) => refused(&e),
    }
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
