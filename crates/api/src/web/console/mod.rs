//! The web console under `/console/` on the HTTP listener: an admin signs
//! in with an admin credential and manages the tokens ([`tokens`]); and the
//! hosted token page under `/console/mine/`, where a product's user, sent
//! with a one-time link (`/console/link/…`, made by CreateConsoleLink),
//! manages their own tokens.
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
mod limits;
mod owners;
mod pages;
mod tokens;
mod usage;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderValue};

use self::exchange::{
    Form, Realm, console, cookie, cookie_value, is_secret, posted, problem, refused, see_other,
    set_cookie, signed_in,
};
use super::api::{Console, WebApi, read_body};
use crate::error::Error;

/// The sign-in form's own cookie, whose value its CSRF token is made from.
const LOGIN_COOKIE: &str = "latchkey_console_login";
/// How long a sign-in form stays usable.
const LOGIN_FORM_SECONDS: u64 = 600;
/// The Content-Security-Policy of every page but the frame ancestors.
macro_rules! csp {
    () => {
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         form-action 'self'; base-uri 'none'"
    };
}
const CSP: &str = csp!();
/// The policy of a page no other page may frame.
const CSP_UNFRAMED: &str = concat!(csp!(), "; frame-ancestors 'none'");

/// The console's routes, each answer with the console's security headers:
/// the admin's pages may not be framed; the hosted page only by
/// `console.frame_ancestors`.
pub(super) fn routes(api: &WebApi) -> Router<Arc<WebApi>> {
    let admin = Router::new()
        .route("/console", get(|| async { see_other("/console/") }))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(|s, r| logout(s, r, Realm::Admin)))
        .route("/console/console.css", get(stylesheet))
        .route("/console/console.js", get(script))
        .merge(tokens::admin_routes())
        .merge(owners::routes())
        .layer(axum::middleware::map_response(|r| {
            security_headers(r, Framing::Nobody)
        }));
    let ancestors = &console(api).frame_ancestors;
    let framing = if ancestors.is_empty() {
        Framing::Nobody
    } else {
        // Checked at start-up: origins and 'self', nothing a header refuses.
        HeaderValue::from_str(&format!("{CSP}; frame-ancestors {ancestors}"))
            .map_or(Framing::Nobody, Framing::By)
    };
    let hosted = Router::new()
        .route("/console/link/{secret}", get(open_link))
        .route(
            "/console/mine/logout",
            post(|s, r| logout(s, r, Realm::Hosted)),
        )
        .route(
            "/console/mine",
            get(|| async { see_other("/console/mine/") }),
        )
        .merge(tokens::hosted_routes())
        .layer(axum::middleware::map_response(move |r| {
            security_headers(r, framing.clone())
        }));
    admin.merge(hosted)
}

/// Who may show a page in a frame.
#[derive(Clone)]
enum Framing {
    Nobody,
    /// The Content-Security-Policy naming the pages that may.
    By(HeaderValue),
}

/// The console's security headers.
async fn security_headers(mut response: Response, framing: Framing) -> Response {
    let headers = response.headers_mut();
    match framing {
        Framing::Nobody => {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP_UNFRAMED),
            );
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        }
        Framing::By(csp) => {
            headers.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
    }
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
    asset(
        "text/css; charset=utf-8",
        include_str!("../../../assets/console.css"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../../assets/console.js"),
    )
}

/// A file embedded in the binary, cacheable for an hour.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Opens a console link, once: a session on the hosted page of the link's
/// owner, in a cookie of its own; then on to the page. The answer is a
/// page, not a redirect: the browser arrived from the product's site, and
/// a `SameSite=Strict` cookie set now is sent only with a navigation that
/// starts here.
async fn open_link(State(api): State<Arc<WebApi>>, Path(secret): Path<String>) -> Response {
    let console = console(&api);
    let opened = if is_secret(&secret) {
        match console.sessions.open_link(&secret).await {
            Ok(opened) => opened,
            Err(e) => return refused(&e),
        }
    } else {
        None
    };
    let Some((session_secret, session)) = opened else {
        return problem(
            StatusCode::GONE,
            "This link has expired or was already used. Go back and open your tokens page again.",
        );
    };
    let mut page = pages::opening(&session);
    set_cookie(
        &mut page,
        &cookie(
            Realm::Hosted.cookie(),
            &session_secret,
            Realm::Hosted.base(),
            console.sessions.ttl().as_secs(),
            console.secure,
        ),
    );
    page
}

/// The sign-in form, with a fresh form cookie.
async fn login_form(State(api): State<Arc<WebApi>>, headers: HeaderMap) -> Response {
    let console = console(&api);
    if let Ok(Some(_)) = signed_in(console, &headers, Realm::Admin).await {
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
                &cookie(
                    Realm::Admin.cookie(),
                    &secret,
                    Realm::Admin.base(),
                    ttl,
                    console.secure,
                ),
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

/// Signs out: the session ends on every replica; then to the sign-in page,
/// or from the hosted page back to the product (or a page saying so).
async fn logout(State(api): State<Arc<WebApi>>, request: Request<Body>, realm: Realm) -> Response {
    let console = console(&api);
    let (secret, session, _) = match posted(console, request, realm).await {
        Ok(posted) => posted,
        Err(answer) => return answer,
    };
    if let Err(e) = console.sessions.sign_out(&secret).await {
        return refused(&e);
    }
    let mut answer = match realm {
        Realm::Admin => see_other("/console/login"),
        Realm::Hosted if !session.return_url.is_empty() => see_other(&session.return_url),
        Realm::Hosted => pages::signed_out(),
    };
    set_cookie(
        &mut answer,
        &cookie(realm.cookie(), "", realm.base(), 0, console.secure),
    );
    answer
}
