//! The token pages, for both realms: the list, a new token (its secret
//! shown once, in a dialog), revoke, restore, and delete after a
//! confirmation; for admins also a token's own page (rename, revoke with a
//! reason, renew with a grace period, its audit trail).
//!
//! On the hosted page (`/console/mine/`) every token is the session's
//! owner's: the list shows only theirs, a new token is theirs with the
//! lifetimes and scopes the operator offers, and a token of anyone else is
//! "not found". Every change is a form posted with the session's CSRF
//! token, made as the session's actor; then the browser is sent back to
//! the page it came from.

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
    Form, Realm, back, console, posted, problem, query_value, recent_events, refusal, refused,
    require_session, see_other,
};
use super::pages::{self, GRACE_PERIODS, NewTokenForm, TokenQuery};
use super::usage::{self, UsageTable};
use crate::audit::EventFilter;
use crate::console::Session;
use crate::error::Error;
use crate::lifecycle::{Expiry, ListQuery, NewToken, Renewal};
use crate::query::{ListFilter, TokenPatch};
use crate::web::api::{Console, WebApi};

/// Tokens per page.
const PAGE_SIZE: i32 = 50;

/// The admin console's token routes.
pub(super) fn admin_routes() -> Router<Arc<WebApi>> {
    Router::new()
        .route("/console/", get(|s, r| list(s, r, Realm::Admin)))
        .route(
            "/console/tokens/new",
            get(|s, r| new_form(s, r, Realm::Admin)),
        )
        .route("/console/tokens", post(|s, r| create(s, r, Realm::Admin)))
        .route("/console/tokens/{id}", get(token_page))
        .route("/console/tokens/{id}/update", post(update))
        .route(
            "/console/tokens/{id}/revoke",
            post(|s, p, r| revoke(s, p, r, Realm::Admin)),
        )
        .route(
            "/console/tokens/{id}/restore",
            post(|s, p, r| restore(s, p, r, Realm::Admin)),
        )
        .route("/console/tokens/{id}/renew", post(renew))
        .route(
            "/console/tokens/{id}/delete",
            get(|s, p, r| confirm_delete(s, p, r, Realm::Admin))
                .post(|s, p, r| delete(s, p, r, Realm::Admin)),
        )
}

/// The hosted token page's routes.
pub(super) fn hosted_routes() -> Router<Arc<WebApi>> {
    Router::new()
        .route("/console/mine/", get(|s, r| list(s, r, Realm::Hosted)))
        .route(
            "/console/mine/tokens/new",
            get(|s, r| new_form(s, r, Realm::Hosted)),
        )
        .route(
            "/console/mine/tokens",
            post(|s, r| create(s, r, Realm::Hosted)),
        )
        .route(
            "/console/mine/tokens/{id}/revoke",
            post(|s, p, r| revoke(s, p, r, Realm::Hosted)),
        )
        .route(
            "/console/mine/tokens/{id}/restore",
            post(|s, p, r| restore(s, p, r, Realm::Hosted)),
        )
        .route(
            "/console/mine/tokens/{id}/delete",
            get(|s, p, r| confirm_delete(s, p, r, Realm::Hosted))
                .post(|s, p, r| delete(s, p, r, Realm::Hosted)),
        )
}

/// The page for a path that names no token (or, on the hosted page, a
/// token of someone else: the two look the same).
fn no_such_token() -> Response {
    problem(StatusCode::NOT_FOUND, "There is no such token.")
}

/// The token `id` names, if the session may see it: any token for an
/// admin, only the owner's own on the hosted page.
async fn visible(
    console: &Console,
    session: &Session,
    id: &str,
) -> Result<crate::token::TokenRecord, Response> {
    let Ok(id) = Uuid::parse_str(id) else {
        return Err(no_such_token());
    };
    match console.lifecycle.get(id).await {
        Ok(record) if session.owner.as_ref().is_none_or(|o| *o == record.owner) => Ok(record),
        Ok(_) | Err(Error::NotFound) => Err(no_such_token()),
        Err(e) => Err(refused(&e)),
    }
}

/// The token list: an admin's filtered by the query's `owner` and
/// `status`, the hosted page's the owner's own by `status`.
async fn list(State(api): State<Arc<WebApi>>, request: Request<Body>, realm: Realm) -> Response {
    let console = console(&api);
    let (secret, session) = match require_session(console, request.headers(), realm).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let mut query = TokenQuery::parse(request.uri().query().unwrap_or(""));
    if let Some(owner) = &session.owner {
        query.owner.clone_from(owner);
    } else if !query.owner.is_empty()
        && let Err(e) = crate::token::check_owner("owner", &query.owner)
    {
        return problem(
            StatusCode::BAD_REQUEST,
            &format!("{}: {}", e.field, e.reason),
        );
    }
    let Some(statuses) = query.statuses() else {
        return problem(
            StatusCode::BAD_REQUEST,
            "status: one of active, revoked, expired, inactive",
        );
    };
    let list = ListQuery {
        filter: ListFilter {
            owner: Some(query.owner.clone()).filter(|o| !o.is_empty()),
            statuses,
            expire_before: None,
        },
        page_size: PAGE_SIZE,
        page_token: query.page_token.clone(),
    };
    match console.lifecycle.list(list).await {
        Ok(page) => pages::tokens(
            &pages::chrome(&session, &console.sessions.csrf_token(&secret)),
            &query,
            request
                .uri()
                .path_and_query()
                .map_or("/console/", |p| p.as_str()),
            console.sessions.now(),
            &page.items,
            &page.next_page_token,
        ),
        Err(e) => refused(&e),
    }
}

async fn new_form(
    State(api): State<Arc<WebApi>>,
    request: Request<Body>,
    realm: Realm,
) -> Response {
    let console = console(&api);
    let (secret, session) = match require_session(console, request.headers(), realm).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let form = NewTokenForm {
        owner: query_value(&request, "owner").unwrap_or_default(),
        ..NewTokenForm::default()
    };
    pages::new_token(
        StatusCode::OK,
        &pages::chrome(&session, &console.sessions.csrf_token(&secret)),
        console,
        &form,
        None,
    )
}

async fn create(State(api): State<Arc<WebApi>>, request: Request<Body>, realm: Realm) -> Response {
    let console = console(&api);
    let (secret, session, form) = match posted(console, request, realm).await {
        Ok(posted) => posted,
        Err(answer) => return answer,
    };
    let chrome = pages::chrome(&session, &console.sessions.csrf_token(&secret));
    let field = |name: &str| form.get(name).map_or_else(String::new, |v| v.to_string());
    let entered = NewTokenForm {
        owner: session
            .owner
            .clone()
            .unwrap_or_else(|| field("owner").trim().to_owned()),
        name: field("name").trim().to_owned(),
        description: field("description").trim().to_owned(),
        scopes: match realm {
            Realm::Admin => field("scopes"),
            Realm::Hosted => form.all("scope").join(" "),
        },
        expiry: field("expiry"),
    };
    let again =
        |status, message: &str| pages::new_token(status, &chrome, console, &entered, Some(message));
    let expiry = match entered.expiry.as_str() {
        "never" if realm == Realm::Admin => Expiry::Never,
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
    let scopes: Vec<String> = entered
        .scopes
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    // A product's user gets only the scopes the operator offers.
    if realm == Realm::Hosted
        && let Some(other) = scopes
            .iter()
            .find(|s| !console.scopes.iter().any(|(offered, _)| offered == *s))
    {
        return again(
            StatusCode::BAD_REQUEST,
            &format!("scope: {other:?} is not one of the scopes offered"),
        );
    }
    let new = NewToken {
        owner: entered.owner.clone(),
        name: entered.name.clone(),
        description: entered.description.clone(),
        scopes,
        metadata: Default::default(),
        expiry,
        idle_timeout: None,
        credits: None,
        rate_limits: Vec::new(),
    };
    match console.lifecycle.create(new, session.actor).await {
        Ok((record, token)) => pages::created(&chrome, "Token created", &record, &token),
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
    let (secret, session) = match require_session(console, request.headers(), Realm::Admin).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let record = match visible(console, &session, &id).await {
        Ok(record) => record,
        Err(answer) => return answer,
    };
    let filter = EventFilter {
        token_id: Some(record.id),
        owner: None,
    };
    let found = async {
        let usage = console.lifecycle.usage(record.id, usage::DAYS).await?;
        Ok::<_, Error>((usage, recent_events(console, filter).await?))
    };
    match found.await {
        Ok((usage, events)) => pages::token(
            &pages::chrome(&session, &console.sessions.csrf_token(&secret)),
            console.sessions.now(),
            (&record, UsageTable::new(&usage)),
            &events,
        ),
        Err(e) => refused(&e),
    }
}

/// Runs `change` on the token of a posted form, if the session may see
/// it, then sends the browser where `change` says (given the form), or
/// shows why it was refused.
async fn change<F, Fut>(
    api: Arc<WebApi>,
    id: String,
    request: Request<Body>,
    realm: Realm,
    change: F,
) -> Response
where
    F: FnOnce(Uuid, Form, crate::auth::Actor, Arc<crate::lifecycle::Lifecycle>) -> Fut,
    Fut: Future<Output = Result<String, Error>>,
{
    let console = console(&api);
    let (_, session, form) = match posted(console, request, realm).await {
        Ok(posted) => posted,
        Err(answer) => return answer,
    };
    let record = match visible(console, &session, &id).await {
        Ok(record) => record,
        Err(answer) => return answer,
    };
    let lifecycle = Arc::clone(&console.lifecycle);
    match change(record.id, form, session.actor, lifecycle).await {
        Ok(location) => see_other(&location),
        Err(e) => refused(&e),
    }
}

async fn update(
    State(api): State<Arc<WebApi>>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    change(
        api,
        id,
        request,
        Realm::Admin,
        |id, form, actor, lifecycle| async move {
            let patch = TokenPatch {
                name: form.get("name").map(|v| v.trim().to_owned()),
                description: form.get("description").map(|v| v.trim().to_owned()),
                rate_limits: super::limits::rate_limits(
                    form.get("rate_limits").map(|v| v.as_str()),
                )?,
                credits: super::limits::credits(
                    form.get("credits").map(|v| v.as_str()),
                    form.get("refill").map(|v| v.as_str()),
                )?,
                ..TokenPatch::default()
            };
            lifecycle.update(id, patch, actor).await?;
            Ok(format!("/console/tokens/{id}"))
        },
    )
    .await
}

async fn revoke(
    State(api): State<Arc<WebApi>>,
    Path(id): Path<String>,
    request: Request<Body>,
    realm: Realm,
) -> Response {
    change(
        api,
        id,
        request,
        realm,
        move |id, form, actor, lifecycle| async move {
            let reason = match realm {
                Realm::Admin => form.text("reason"),
                Realm::Hosted => "revoked by its owner",
            };
            lifecycle.revoke(id, reason, actor).await?;
            Ok(back(form.get("back").map(|v| v.as_str()), realm))
        },
    )
    .await
}

async fn restore(
    State(api): State<Arc<WebApi>>,
    Path(id): Path<String>,
    request: Request<Body>,
    realm: Realm,
) -> Response {
    change(
        api,
        id,
        request,
        realm,
        move |id, form, actor, lifecycle| async move {
            lifecycle.restore(id, actor).await?;
            Ok(back(form.get("back").map(|v| v.as_str()), realm))
        },
    )
    .await
}

async fn renew(
    State(api): State<Arc<WebApi>>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    let console = console(&api);
    let (secret, session, form) = match posted(console, request, Realm::Admin).await {
        Ok(posted) => posted,
        Err(answer) => return answer,
    };
    let record = match visible(console, &session, &id).await {
        Ok(record) => record,
        Err(answer) => return answer,
    };
    let grace = form.get("grace").map_or("", |v| v.as_str());
    let Some(&(seconds, _)) = GRACE_PERIODS.iter().find(|(s, _)| s.to_string() == grace) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "grace: choose one of the grace periods offered",
        );
    };
    let renewal = Renewal {
        id: record.id,
        grace_period: Duration::from_secs(seconds),
        expiry: None,
    };
    match console.lifecycle.renew(renewal, session.actor).await {
        Ok((record, token)) => pages::created(
            &pages::chrome(&session, &console.sessions.csrf_token(&secret)),
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
    realm: Realm,
) -> Response {
    let console = console(&api);
    let (secret, session) = match require_session(console, request.headers(), realm).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let record = match visible(console, &session, &id).await {
        Ok(record) => record,
        Err(answer) => return answer,
    };
    pages::confirm_delete(
        &pages::chrome(&session, &console.sessions.csrf_token(&secret)),
        &record,
        &back(query_value(&request, "back").as_deref(), realm),
    )
}

async fn delete(
    State(api): State<Arc<WebApi>>,
    Path(id): Path<String>,
    request: Request<Body>,
    realm: Realm,
) -> Response {
    change(
        api,
        id,
        request,
        realm,
        move |id, form, actor, lifecycle| async move {
            lifecycle.delete(id, actor).await?;
            let back = back(form.get("back").map(|v| v.as_str()), realm);
            // The token's own pages are gone with it.
            Ok(if back.starts_with(&format!("/console/tokens/{id}")) {
                "/console/".to_owned()
            } else {
                back
            })
        },
    )
    .await
}
