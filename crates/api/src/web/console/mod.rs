//! The web console under `/console/` on the HTTP listener: an admin signs
//! in with an admin credential and manages the tokens ([`tokens`]).
//!
//! Pages are HTML rendered on the server from templates checked at compile
//! time ([`pages`]), with plain forms that work without script; one small
//! script of our own (`console.js`) adds the Copy button. The session is a
//! cookie (`HttpOnly`, `SameSite=Strict`, `Secure` under TLS, path
//! `/console`) whose secret the database keeps only as a digest
//! ([`crate::console::ConsoleSessions`]); every form that changes state carries a CSRF
//! token derived from the session (or, on the sign-in form, from a cookie
//! of its own). Every answer carries a strict Content-Security-Policy.

mod exchange;
mod pages;
mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderValue};
use zeroize::Zeroizing;

use self::exchange::{
    Form, SESSION_COOKIE, console, cookie, cookie_value, problem, refused, require_session,
    see_other, set_cookie, signed_in,
};
use super::api::{Console, WebApi, read_body};
use crate::error::Error;
use crate::lifecycle::ListQuery;
use crate::query::ListFilter;

/// The sign-in form's own cookie, whose value its CSRF token is made from.
const LOGIN_COOKIE: &str = "latchkey_console_login";
/// How long a sign-in form stays usable.
const LOGIN_FORM_SECONDS: u64 = 600;
/// Tokens per page.
const PAGE_SIZE: i32 = 50;

/// The console's routes, each answer with the console's security headers.
pub(super) fn routes() -> Router<Arc<WebApi>> {
    Router::new()
        .route("/console", get(|| async { see_other("/console/") }))
        .route("/console/", get(token_list))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/console.css", get(stylesheet))
        .route("/console/console.js", get(script))
        .merge(tokens::routes())
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../assets/console.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../assets/console.js"),
    )
        .into_response()
}

/// The token list, filtered by the query's `owner` and `status`.
async fn token_list(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    let console = console(&api);
    let (secret, session) = match require_session(console, request.headers()).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let query = pages::TokenQuery::parse(request.uri().query().unwrap_or(""));
    if !query.owner.is_empty()
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
        },
        page_size: PAGE_SIZE,
        page_token: query.page_token.clone(),
    };
    match console.lifecycle.list(list).await {
        Ok(page) => pages::tokens(
            &session,
            &console.sessions.csrf_token(&secret),
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

/// The sign-in form, with a fresh form cookie.
async fn login_form(State(api): State<Arc<WebApi>>, headers: HeaderMap) -> Response {
    let console = console(&api);
    if let Ok(Some(_)) = signed_in(console, &headers).await {
        return see_other("/console/");
    }
    login_page(console, StatusCode::OK, None)
}

/// The sign-in form with `problem` said above it, and a fresh form cookie.
fn login_page(console: &Console, status: StatusCode, message: Option<&str>) -> Response {
    let Ok(nonce) = crate::console::random_secret() else {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    let mut page = pages::login(status, &console.sessions.csrf_token(&nonce), message);
    set_cookie(
        &mut page,
        &cookie(
            LOGIN_COOKIE,
            &nonce,
            "/console/login",
            LOGIN_FORM_SECONDS,
            console.secure,
        ),
    );
    page
}

async fn login(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    let console = console(&api);
    let nonce = cookie_value(request.headers(), LOGIN_COOKIE).map(str::to_owned);
    let (_, body) = match read_body(request).await {
        Ok(read) => read,
        Err(refused) => return refused.into_response(),
    };
    let form = Form::parse(&body);
    let fresh = nonce.as_deref().is_some_and(|nonce| {
        console
            .sessions
            .csrf_matches(nonce, form.get("csrf").map_or("", |v| v.as_str()))
    });
    if !fresh {
        return login_page(
            console,
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired or came from elsewhere. Sign in again."),
        );
    }
    let credential = form.get("credential").map_or("", |v| v.as_str());
    match console.sessions.sign_in(credential).await {
        Ok((secret, _)) => {
            let ttl = console.sessions.ttl().as_secs();
            let mut answer = see_other("/console/");
            set_cookie(
                &mut answer,
                &cookie(SESSION_COOKIE, &secret, "/console", ttl, console.secure),
            );
            set_cookie(
                &mut answer,
                &cookie(LOGIN_COOKIE, "", "/console/login", 0, console.secure),
            );
            answer
        }
        Err(Error::Unauthenticated) => login_page(
            console,
            StatusCode::UNAUTHORIZED,
            Some("That is not a valid admin credential."),
        ),
        Err(Error::PermissionDenied(scope)) => login_page(
            console,
            StatusCode::FORBIDDEN,
            Some(&format!("That token does not hold the scope {scope}.")),
        ),
        Err(e) => refused(&e),
    }
}

async fn logout(State(api): State<Arc<WebApi>>, request: Request<Body>) -> Response {
    let console = console(&api);
    let secret =
        cookie_value(request.headers(), SESSION_COOKIE).map(|s| Zeroizing::new(s.to_owned()));
    let (_, body) = match read_body(request).await {
        Ok(read) => read,
        Err(refused) => return refused.into_response(),
    };
    let Some(secret) = secret else {
        return see_other("/console/login");
    };
    let form = Form::parse(&body);
    if !console
        .sessions
        .csrf_matches(&secret, form.get("csrf").map_or("", |v| v.as_str()))
    {
        return problem(
            StatusCode::FORBIDDEN,
            "The form expired or came from elsewhere; nothing was changed.",
        );
    }
    if let Err(e) = console.sessions.sign_out(&secret).await {
        return refused(&e);
    }
    let mut answer = see_other("/console/login");
    set_cookie(
        &mut answer,
        &cookie(SESSION_COOKIE, "", "/console", 0, console.secure),
    );
    answer
}
