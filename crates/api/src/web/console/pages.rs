//! The console's pages: askama templates (`templates/console/`, checked at
//! compile time, every value HTML-escaped) and what they show.

use std::time::{Duration, UNIX_EPOCH};

use askama::Template;
use axum::response::{Html, IntoResponse, Response};
use hyper::StatusCode;

use crate::clock::Timestamp;
use crate::console::Session;
use crate::token::{Status, TokenRecord};

/// The token list's query: `owner`, `status` and `page_token`.
#[derive(Clone, Debug, Default)]
pub(super) struct TokenQuery {
    pub owner: String,
    pub status: String,
    pub page_token: String,
}

/// The status filter's choices: (query value, label).
const STATUSES: [(&str, &str); 5] = [
    ("", "Any"),
    ("active", "Active"),
    ("revoked", "Revoked"),
    ("expired", "Expired"),
    ("inactive", "Inactive"),
];

impl TokenQuery {
    pub fn parse(query: &str) -> TokenQuery {
        let mut out = TokenQuery::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "owner" => out.owner = value.trim().to_owned(),
                "status" => out.status = value.into_owned(),
                "page_token" => out.page_token = value.into_owned(),
                _ => {}
            }
        }
        out
    }

    /// The statuses to list (empty: all); `None` for an unknown one.
    pub fn statuses(&self) -> Option<Vec<Status>> {
        Some(match self.status.as_str() {
            "" => vec![],
            "active" => vec![Status::Active],
            "revoked" => vec![Status::Revoked],
            "expired" => vec![Status::Expired],
            "inactive" => vec![Status::Inactive],
            _ => return None,
        })
    }

    /// This query's link with `page_token`.
    fn link(&self, page_token: &str) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !self.owner.is_empty() {
            query.append_pair("owner", &self.owner);
        }
        if !self.status.is_empty() {
            query.append_pair("status", &self.status);
        }
        query.append_pair("page_token", page_token);
        format!("/console/?{}", query.finish())
    }
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct Login<'a> {
    csrf: &'a str,
    problem: Option<&'a str>,
}

pub(super) fn login(status: StatusCode, csrf: &str, problem: Option<&str>) -> Response {
    render(status, &Login { csrf, problem })
}

/// A token as a row of the list.
struct Row {
    name: String,
    owner: String,
    hint: String,
    /// (RFC 3339, as shown)
    created: (String, String),
    last_used: Option<(String, String)>,
    expires: Option<(String, String)>,
    status: &'static str,
}

#[derive(Template)]
#[template(path = "console/tokens.html")]
struct Tokens<'a> {
    actor: String,
    csrf: &'a str,
    owner: &'a str,
    /// The status filter's choices: (value, label, selected).
    statuses: Vec<(&'static str, &'static str, bool)>,
    tokens: Vec<Row>,
    next: Option<String>,
}

pub(super) fn tokens(
    session: &Session,
    csrf: &str,
    query: &TokenQuery,
    now: Timestamp,
    tokens: &[TokenRecord],
    next_page_token: &str,
) -> Response {
    let rows = tokens
        .iter()
        .map(|t| Row {
            name: t.name.clone(),
            owner: t.owner.clone(),
            hint: t.display_hint.clone(),
            created: time(t.create_time),
            last_used: t.last_used_time.map(time),
            expires: t.expire_time.map(time),
            status: match t.status(now) {
                Status::Active => "active",
                Status::Revoked => "revoked",
                Status::Expired => "expired",
                Status::Inactive => "inactive",
            },
        })
        .collect();
    let page = Tokens {
        actor: match session.actor {
            crate::auth::Actor::Admin => "the admin credential".to_owned(),
            actor => format!("token {actor}"),
        },
        csrf,
        owner: &query.owner,
        statuses: STATUSES
            .iter()
            .map(|&(value, label)| (value, label, value == query.status))
            .collect(),
        tokens: rows,
        next: (!next_page_token.is_empty()).then(|| query.link(next_page_token)),
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(
    source = r#"{% extends "console/base.html" %}{% block title %}Problem{% endblock %}{% block main %}<h1>Something is wrong</h1><p class="problem" role="alert">{{ message }}</p><p><a href="/console/">Back to the tokens</a></p>{% endblock %}"#,
    ext = "html"
)]
struct Problem<'a> {
    message: &'a str,
}

pub(super) fn problem(status: StatusCode, message: &str) -> Response {
    render(status, &Problem { message })
}

fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console: a page did not render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// (RFC 3339 to the second, "2026-11-29 14:20 UTC").
fn time(t: Timestamp) -> (String, String) {
    let micros = u64::try_from(t.as_micros()).unwrap_or(0);
    let iso =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_micros(micros)).to_string();
    let shown = format!("{} {} UTC", &iso[..10], &iso[11..16]);
    (iso, shown)
}
