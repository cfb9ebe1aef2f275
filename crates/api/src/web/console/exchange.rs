//! What every console page does with a request: find its session, read
//! its form and check the form's CSRF token, and answer (a redirect, a
//! cookie, or a page saying what was refused).

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderValue};
use zeroize::Zeroizing;

use super::pages;
use crate::audit::{Event, EventFilter};
use crate::console::Session;
use crate::error::Error;
use crate::lifecycle::EventQuery;
use crate::web::api::{Console, WebApi, read_body};

/// The audit events a token's or an owner's page shows, newest first.
const EVENTS_SHOWN: i32 = 50;

/// Whose pages: an admin's console over every token, or the hosted token
/// page over one owner's. Each has its own session cookie, and a session
/// of one is no session of the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Realm {
    Admin,
    Hosted,
}

impl Realm {
    /// The session cookie's name.
    pub fn cookie(self) -> &'static str {
        match self {
            Realm::Admin => "latchkey_console",
            Realm::Hosted => "latchkey_hosted",
        }
    }

    /// Where the realm's pages are, and its cookie's path.
    pub fn base(self) -> &'static str {
        match self {
            Realm::Admin => "/console",
            Realm::Hosted => "/console/mine",
        }
    }

    fn admits(self, session: &Session) -> bool {
        (self == Realm::Hosted) == session.owner.is_some()
    }

    /// The answer to a request without a live session.
    fn away(self) -> Response {
        match self {
            Realm::Admin => see_other("/console/login"),
            Realm::Hosted => problem(
                StatusCode::UNAUTHORIZED,
                "This page's session has ended. Go back and open your tokens page again.",
            ),
        }
    }
}

pub(super) fn console(api: &WebApi) -> &Console {
    api.console
        .as_ref()
        .expect("console routes are served only with a console")
}

/// The live session of `realm` the request's cookie names, or the answer:
/// to the sign-in page without one (on the hosted page, that it ended).
pub(super) async fn require_session(
    console: &Console,
    headers: &HeaderMap,
    realm: Realm,
) -> Result<(Zeroizing<String>, Session), Response> {
    match signed_in(console, headers, realm).await {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(realm.away()),
        Err(e) => Err(refused(&e)),
    }
}

/// A form posted in a live session with that session's CSRF token: the
/// session, its secret and the form; or the answer that refuses it, having
/// changed nothing.
pub(super) async fn posted(
    console: &Console,
    request: Request<Body>,
    realm: Realm,
) -> Result<(Zeroizing<String>, Session, Form), Response> {
    let (secret, session) = require_session(console, request.headers(), realm).await?;
    let (_, body) = read_body(request)
        .await
        .map_err(IntoResponse::into_response)?;
    let form = Form::parse(&body);
    if !console
        .sessions
        .csrf_matches(&secret, form.get("csrf").map_or("", |v| v.as_str()))
    {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "The form expired or came from elsewhere; nothing was changed.",
        ));
    }
    Ok((secret, session, form))
}

/// The session of `realm` the request's cookie names, if it is live.
pub(super) async fn signed_in(
    console: &Console,
    headers: &HeaderMap,
    realm: Realm,
) -> Result<Option<(Zeroizing<String>, Session)>, Error> {
    let Some(secret) = cookie_value(headers, realm.cookie()) else {
        return Ok(None);
    };
    let secret = Zeroizing::new(secret.to_owned());
    Ok(console
        .sessions
        .session(&secret)
        .await?
        .filter(|session| realm.admits(session))
        .map(|session| (secret, session)))
}

/// The value of cookie `name`, if it is there and looks like one of ours
/// (64 hex digits); anything else is no cookie.
pub(super) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
        .filter(|v| is_secret(v))
}

/// Whether `s` has the shape of a console secret (a session's, a form's or
/// a link's): 64 hex digits.
pub(super) fn is_secret(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The query parameter `name` of `request`, if given.
pub(super) fn query_value(request: &Request<Body>, name: &str) -> Option<String> {
    form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

/// The newest audit events `filter` selects, as many as a page shows.
pub(super) async fn recent_events(
    console: &Console,
    filter: EventFilter,
) -> Result<Vec<Event>, Error> {
    let page = console
        .lifecycle
        .list_events(EventQuery {
            filter,
            page_size: EVENTS_SHOWN,
            page_token: String::new(),
        })
        .await?;
    Ok(page.items)
}

pub(super) fn cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

pub(super) fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

pub(super) fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => problem(StatusCode::BAD_REQUEST, "back: not a console page"),
    }
}

/// Where a `back` field or parameter says to go afterwards: a page of
/// this server in `realm` (a path under its base), or the realm's token
/// list.
pub(super) fn back(back: Option<&str>, realm: Realm) -> String {
    let home = format!("{}/", realm.base());
    let back = back.unwrap_or("");
    let ours = back.starts_with(&home)
        && !back.contains("//")
        && !back.contains('\\')
        && back.len() <= 2048
        && back.bytes().all(|b| b.is_ascii_graphic());
    if ours { back.to_owned() } else { home }
}

pub(super) fn problem(status: StatusCode, message: &str) -> Response {
    pages::problem(status, message)
}

/// The page for a request the lifecycle refused, saying why; when the
/// database could not answer, that nothing changed and it may be tried
/// again.
pub(super) fn refused(error: &Error) -> Response {
    let (status, message) = refusal(error);
    problem(status, &message)
}

/// What a page says when the lifecycle refuses a request.
pub(super) fn refusal(error: &Error) -> (StatusCode, String) {
    match error {
        Error::InvalidArgument { field, reason } => {
            (StatusCode::BAD_REQUEST, format!("{field}: {reason}"))
        }
        Error::NotFound => (StatusCode::NOT_FOUND, "There is no such token.".to_owned()),
        Error::FailedPrecondition(why) => (StatusCode::CONFLICT, why.clone()),
        Error::TokenReused => (StatusCode::CONFLICT, error.to_string()),
        Error::ResourceExhausted { message, .. } => {
            (StatusCode::TOO_MANY_REQUESTS, message.clone())
        }
        Error::Unauthenticated | Error::PermissionDenied(_) => (
            StatusCode::FORBIDDEN,
            "Your credential no longer administers latchkey.".to_owned(),
        ),
        _ => {
            tracing::warn!(%error, "console: cannot answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "latchkey cannot reach its database right now. Nothing was changed; try again."
                    .to_owned(),
            )
        }
    }
}

/// A submitted form's fields (the last of each name), zeroed when dropped:
/// the sign-in form carries a credential.
pub(super) struct Form(Vec<(String, Zeroizing<String>)>);

impl Form {
    pub(super) fn parse(body: &[u8]) -> Form {
        Form(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Zeroizing::new(v.into_owned())))
                .collect(),
        )
    }

    /// Every value of `name`, in order (checkboxes).
    pub(super) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(super) fn get(&self, name: &str) -> Option<&Zeroizing<String>> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The value of `name`, trimmed; empty if not given.
    pub(super) fn text(&self, name: &str) -> &str {
        self.get(name).map_or("", |v| v.trim())
    }
}
