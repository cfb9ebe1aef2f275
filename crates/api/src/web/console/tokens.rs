//! The console's token pages: a new token (its secret shown once, in a
//! dialog), a token's own page (rename, revoke with a reason, restore,
//! renew with a grace period, its audit trail), and deleting one after a
//! confirmation. Every change is a form posted with the session's CSRF
//! token, made as the signed-in admin; then the browser is sent back to the
//! page it came from.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use hyper::StatusCode;
use uuid::Uuid;

use super::exchange::{
    Form, back, console, posted, problem, refusal, refused, require_session, see_other,
};
use super::pages::{self, GRACE_PERIODS, NewTokenForm};
use crate::audit::EventFilter;
use crate::lifecycle::{EventQuery, Expiry, NewToken, Renewal};
use crate::query::TokenPatch;
use crate::web::api::WebApi;

/// The audit events a token's page shows, newest first.
const EVENTS_SHOWN: i32 = 50;

pub(super) fn routes() -> Router<Arc<WebApi>> {
    Router::new()
        .route("/console/tokens/new", get(new_form))
        .route("/console/tokens", post(create))
        .route("/console/tokens/{id}", get(token_page))
        .route("/console/tokens/{id}/update", post(update))
        .route("/console/tokens/{id}/revoke", post(revoke))
        .route("/console/tokens/{id}/restore", post(restore))
        .route("/console/tokens/{id}/renew", post(renew))
        .route(
            "/console/tokens/{id}/delete",
            get(confirm_delete).post(delete),
        )
}

/// The page for a path that names no token.
fn no_such_token() -> Response {
    problem(StatusCode::NOT_FOUND, "There is no such token.")
}

/// The query parameter `name` of `request`, if given.
fn query_value(request: &Request<Body>, name: &str) -> Option<String> {
    form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

async fn new_form(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    let console = console(&api);
    let (secret, session) = match require_session(console, request.headers()).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let form = NewTokenForm {
        owner: query_value(&request, "owner").unwrap_or_default(),
        ..NewTokenForm::default()
    };
    pages::new_token(
        StatusCode::OK,
        &session,
        &console.sessions.csrf_token(&secret),
        &console.expiry_presets,
        &form,
        None,
    )
}

async fn create(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    let console = console(&api);
    let (secret, session, form) = match posted(console, request).await {
        Ok(posted) => posted,
        Err(answer) => return answer,
    };
    let field = |name: &str| form.get(name).map_or_else(String::new, |v| v.to_string());
    let entered = NewTokenForm {
        owner: field("owner").trim().to_owned(),
        name: field("name").trim().to_owned(),
        description: field("description").trim().to_owned(),
        scopes: field("scopes"),
        expiry: field("expiry"),
    };
    let again = |status, message: &str| {
        pages::new_token(
            status,
            &session,
            &console.sessions.csrf_token(&secret),
            &console.expiry_presets,
            &entered,
            Some(message),
        )
    };
    let expiry = match entered.expiry.as_str() {
        "never" => Expiry::Never,
        chosen => match chosen
            .parse::<usize>()
            .ok()
            .and_then(|i| console.expiry_presets.get(i))
        {
            Some(&lifetime) => Expiry::After(lifetime),
            None => {
                return again(
                    StatusCode::BAD_REQUEST,
                    "expiry: choose one of the lifetimes offered",
                );
            }
        },
    };
    let new = NewToken {
        owner: entered.owner.clone(),
        name: entered.name.clone(),
        description: entered.description.clone(),
        scopes: entered
            .scopes
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        metadata: Default::default(),
        expiry,
        idle_timeout: None,
    };
    match console.lifecycle.create(new, session.actor).await {
        Ok((record, token)) => pages::created(
            &session,
            &console.sessions.csrf_token(&secret),
            "Token created",
            &record,
            &token,
        ),
        Err(e) => {
            let (status, message) = refusal(&e);
            again(status, &message)
        }
    }
}

async fn token_page(
    State(api): State<Arc<WebApi>>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    let console = console(&api);
    let (secret, session) = match require_session(console, request.headers()).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return no_such_token();
    };
    let record = match console.lifecycle.get(id).await {
        Ok(record) => record,
        Err(e) => return refused(&e),
    };
    let events = console
        .lifecycle
        .list_events(EventQuery {
            filter: EventFilter {
                token_id: Some(id),
                owner: None,
            },
            page_size: EVENTS_SHOWN,
            page_token: String::new(),
        })
        .await;
    match events {
        Ok(events) => pages::token(
            &session,
            &console.sessions.csrf_token(&secret),
            console.sessions.now(),
            &record,
            &events.items,
        ),
        Err(e) => refused(&e),
    }
}

/// Runs `change` for the token of a posted form, then sends the browser
/// to `then` (given the form's `back`), or shows why it was refused.
async fn change<F, Fut>(api: Arc<WebApi>, id: String, request: Request<Body>, change: F) -> Response
where
    F: FnOnce(Uuid, Form, crate::auth::Actor, Arc<crate::lifecycle::Lifecycle>) -> Fut,
    Fut: Future<Output = Result<String, crate::error::Error>>,
{
    let console = console(&api);
    let (_, session, form) = match posted(console, request).await {
        Ok(posted) => posted,
        Err(answer) => return answer,
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return no_such_token();
    };
    match change(id, form, session.actor, Arc::clone(&console.lifecycle)).await {
        Ok(location) => see_other(&location),
        Err(e) => refused(&e),
    }
}

async fn update(
    State(api): State<Arc<WebApi>>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    change(api, id, request, |id, form, actor, lifecycle| async move {
        let patch = TokenPatch {
            name: form.get("name").map(|v| v.trim().to_owned()),
            description: form.get("description").map(|v| v.trim().to_owned()),
            metadata: None,
        };
        lifecycle.update(id, patch, actor).await?;
        Ok(format!("/console/tokens/{id}"))
    })
    .await
}

async fn revoke(
    State(api): State<Arc<WebApi>>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    change(api, id, request, |id, form, actor, lifecycle| async move {
        let reason = form.get("reason").map_or("", |v| v.trim());
        lifecycle.revoke(id, reason, actor).await?;
        Ok(back(&form))
    })
    .await
}

async fn restore(
    State(api): State<Arc<WebApi>>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    change(api, id, request, |id, form, actor, lifecycle| async move {
        lifecycle.restore(id, actor).await?;
        Ok(back(&form))
    })
    .await
}

async fn renew(
    State(api): State<Arc<WebApi>>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    let console = console(&api);
    let (secret, session, form) = match posted(console, request).await {
        Ok(posted) => posted,
        Err(answer) => return answer,
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return no_such_token();
    };
    let grace = form.get("grace").map_or("", |v| v.as_str());
    let Some(&(seconds, _)) = GRACE_PERIODS.iter().find(|(s, _)| s.to_string() == grace) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "grace: choose one of the grace periods offered",
        );
    };
    let renewal = Renewal {
        id,
        grace_period: Duration::from_secs(seconds),
        expiry: None,
    };
    match console.lifecycle.renew(renewal, session.actor).await {
        Ok((record, token)) => pages::created(
            &session,
            &console.sessions.csrf_token(&secret),
            "Token renewed",
            &record,
            &token,
        ),
        Err(e) => refused(&e),
    }
}

async fn confirm_delete(
    State(api): State<Arc<WebApi>>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    let console = console(&api);
    let (secret, session) = match require_session(console, request.headers()).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return no_such_token();
    };
    let mut asked = Form::default();
    if let Some(back) = query_value(&request, "back") {
        asked.push("back", back);
    }
    match console.lifecycle.get(id).await {
        Ok(record) => pages::confirm_delete(
            &session,
            &console.sessions.csrf_token(&secret),
            &record,
            &back(&asked),
        ),
        Err(e) => refused(&e),
    }
}

async fn delete(
    State(api): State<Arc<WebApi>>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    change(api, id, request, |id, form, actor, lifecycle| async move {
        lifecycle.delete(id, actor).await?;
        let back = back(&form);
        // The token's own pages are gone with it.
        Ok(if back.starts_with(&format!("/console/tokens/{id}")) {
            "/console/".to_owned()
        } else {
            back
        })
    })
    .await
}
