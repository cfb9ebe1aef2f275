//! The console's pages: askama templates (`templates/console/`, checked at
//! compile time, every value HTML-escaped) and what they show.

use std::time::{Duration, UNIX_EPOCH};

use askama::Template;
use axum::response::{Html, IntoResponse, Response};
use hyper::StatusCode;

use super::limits;
use super::usage::UsageTable;
use crate::audit::Event;
use crate::clock::Timestamp;
use crate::console::Session;
use crate::lifecycle::KeyUsage;
use crate::owner::{OwnerRecord, TokenCounts};
use crate::token::{Secret, Status, TokenRecord};
use crate::web::api::Console;

/// How long a renewed token's old secret may keep working: (seconds, label).
pub(super) const GRACE_PERIODS: [(u64, &str); 4] = [
    (0, "None: the old token stops at once"),
    (3600, "1 hour"),
    (86_400, "1 day"),
    (7 * 86_400, "7 days"),
];

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

    /// This query's link under `base` with `page_token`.
    fn link(&self, base: &str, page_token: &str) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !self.owner.is_empty() {
            query.append_pair("owner", &self.owner);
        }
        if !self.status.is_empty() {
            query.append_pair("status", &self.status);
        }
        query.append_pair("page_token", page_token);
        format!("{base}/?{}", query.finish())
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

/// What every signed-in page shows around its content: who is signed in,
/// the CSRF token of its forms, and where its realm's pages are.
pub(super) struct Chrome {
    /// Who is signed in, as the header says it.
    actor: String,
    csrf: String,
    /// `/console` or `/console/mine`: where the forms post.
    base: &'static str,
    /// The hosted page's owner; `None` on an admin's pages.
    owner: Option<String>,
    /// The hosted page's link back to the product, and its host.
    return_url: String,
    return_host: String,
}

pub(super) fn chrome(session: &Session, csrf: &str) -> Chrome {
    let return_host = session
        .return_url
        .split_once("://")
        .map(|(_, rest)| {
            rest.split(['/', '?', '#'])
                .next()
                .unwrap_or(rest)
                .to_owned()
        })
        .unwrap_or_default();
    Chrome {
        actor: match session.actor {
            crate::auth::Actor::Admin => "the admin credential".to_owned(),
            actor => format!("token {actor}"),
        },
        csrf: csrf.to_owned(),
        base: if session.owner.is_some() {
            "/console/mine"
        } else {
            "/console"
        },
        owner: session.owner.clone(),
        return_url: session.return_url.clone(),
        return_host,
    }
}

/// A token as pages show it.
struct TokenView {
    id: String,
    name: String,
    description: String,
    owner: String,
    /// The owner's token list.
    owner_link: String,
    /// The owner's own page.
    owner_page: String,
    hint: String,
    scopes: Vec<String>,
    /// (RFC 3339, as shown)
    created: (String, String),
    last_used: Option<(String, String)>,
    /// The last use's address and user agent, and the recent addresses.
    last_client: Option<(String, String)>,
    recent_ips: String,
    expires: Option<(String, String)>,
    status: &'static str,
    revoke_reason: String,
    replaces: Option<String>,
    replaced_by: Option<String>,
    /// Its rate limits and credits, in words; "none" if it has neither.
    limits: String,
    /// Its rate limits, its credits left, and their refill, as the forms
    /// write them.
    limit_fields: [String; 3],
}

/// `owner=…`, encoded for a URL.
fn owner_query(owner: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("owner", owner)
        .finish()
}

/// The owner's own page.
pub(super) fn owner_page_link(owner: &str) -> String {
    format!("/console/owners?{}", owner_query(owner))
}

impl TokenView {
    fn new(t: &TokenRecord, now: Timestamp) -> TokenView {
        TokenView {
            id: t.id.to_string(),
            name: t.name.clone(),
            description: t.description.clone(),
            owner: t.owner.clone(),
            owner_link: format!("/console/?{}", owner_query(&t.owner)),
            owner_page: owner_page_link(&t.owner),
            hint: t.display_hint.clone(),
            scopes: t.scopes.clone(),
            created: time(t.create_time),
            last_used: t.last_used_time.map(time),
            last_client: t.last_used_client.as_ref().map(|c| {
                let ip =
                    c.ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
                (ip, c.user_agent.clone())
            }),
            recent_ips: t
                .recent_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            expires: t.expire_time.map(time),
            status: match t.status(now) {
                Status::Active => "active",
                Status::Revoked => "revoked",
                Status::Expired => "expired",
                Status::Inactive => "inactive",
            },
            revoke_reason: t.revoke_reason.clone(),
            replaces: t.replaces.map(|id| id.to_string()),
            replaced_by: t.replaced_by.map(|id| id.to_string()),
            limits: limits::in_words(&t.rate_limits, t.credits.as_ref(), now),
            limit_fields: limits::fields(&t.rate_limits, t.credits.as_ref(), now),
        }
    }
}

#[derive(Template)]
#[template(path = "console/tokens.html")]
struct Tokens<'a> {
    chrome: &'a Chrome,
    owner: &'a str,
    /// The status filter's choices: (value, label, selected).
    statuses: Vec<(&'static str, &'static str, bool)>,
    tokens: Vec<TokenView>,
    /// This page's own address, where row actions come back to.
    here: &'a str,
    /// The new-token form's address, for the owner filtered on.
    new_link: String,
    next: Option<String>,
}

pub(super) fn tokens(
    chrome: &Chrome,
    query: &TokenQuery,
    here: &str,
    now: Timestamp,
    tokens: &[TokenRecord],
    next_page_token: &str,
) -> Response {
    let mut new_link = form_urlencoded::Serializer::new(String::new());
    if !query.owner.is_empty() && chrome.owner.is_none() {
        new_link.append_pair("owner", &query.owner);
    }
    let page = Tokens {
        chrome,
        owner: &query.owner,
        statuses: STATUSES
            .iter()
            .map(|&(value, label)| (value, label, value == query.status))
            .collect(),
        tokens: tokens.iter().map(|t| TokenView::new(t, now)).collect(),
        here,
        new_link: format!("{}/tokens/new?{}", chrome.base, new_link.finish()),
        next: (!next_page_token.is_empty()).then(|| query.link(chrome.base, next_page_token)),
    };
    render(StatusCode::OK, &page)
}

/// What the new-token form holds, as entered.
#[derive(Clone, Debug, Default)]
pub(super) struct NewTokenForm {
    pub owner: String,
    pub name: String,
    pub description: String,
    /// Separated by spaces.
    pub scopes: String,
    /// The index of an expiry preset, or `never`.
    pub expiry: String,
}

#[derive(Template)]
#[template(path = "console/new_token.html")]
struct NewTokenPage<'a> {
    chrome: &'a Chrome,
    form: &'a NewTokenForm,
    /// The lifetimes offered: (value, label, checked).
    expiries: Vec<(String, String, bool)>,
    /// The hosted page's scopes: (scope, what it allows, checked).
    scopes: Vec<(&'a str, &'a str, bool)>,
    problem: Option<&'a str>,
}

pub(super) fn new_token(
    status: StatusCode,
    chrome: &Chrome,
    console: &Console,
    form: &NewTokenForm,
    problem: Option<&str>,
) -> Response {
    let chosen = if form.expiry.is_empty() {
        "0"
    } else {
        &form.expiry
    };
    // Only an admin may make a token that never expires.
    let never = chrome
        .owner
        .is_none()
        .then(|| ("never".to_owned(), "Never".to_owned()));
    let expiries = console
        .expiry_presets
        .iter()
        .enumerate()
        .map(|(i, preset)| (i.to_string(), lifetime(*preset)))
        .chain(never)
        .map(|(value, label)| {
            let checked = value == chosen;
            (value, label, checked)
        })
        .collect();
    let picked: Vec<&str> = form.scopes.split_whitespace().collect();
    let page = NewTokenPage {
        chrome,
        form,
        expiries,
        scopes: console
            .scopes
            .iter()
            .map(|(scope, about)| {
                (
                    scope.as_str(),
                    about.as_str(),
                    picked.contains(&scope.as_str()),
                )
            })
            .collect(),
        problem,
    };
    render(status, &page)
}

/// A lifetime as a person says it: "30 days", "1 year", "12 hours".
fn lifetime(d: Duration) -> String {
    const DAY: u64 = 86_400;
    let secs = d.as_secs();
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if secs.is_multiple_of(365 * DAY) {
        plural(secs / (365 * DAY), "year")
    } else if secs.is_multiple_of(DAY) {
        plural(secs / DAY, "day")
    } else if secs.is_multiple_of(3600) {
        plural(secs / 3600, "hour")
    } else {
        plural(secs.div_ceil(60), "minute")
    }
}

#[derive(Template)]
#[template(path = "console/created.html")]
struct Created<'a> {
    chrome: &'a Chrome,
    heading: &'a str,
    token: TokenView,
    secret: &'a str,
    /// Where "Done" leads: the token's page, or the hosted list.
    done: String,
}

/// The dialog that shows a new token's secret, the only page that ever
/// shows one.
pub(super) fn created(
    chrome: &Chrome,
    heading: &str,
    record: &TokenRecord,
    secret: &Secret,
) -> Response {
    let token = TokenView::new(record, record.create_time);
    let done = match chrome.owner {
        Some(_) => format!("{}/", chrome.base),
        None => format!("/console/tokens/{}", token.id),
    };
    let page = Created {
        chrome,
        heading,
        token,
        secret: secret.expose(),
        done,
    };
    render(StatusCode::OK, &page)
}

/// An audit event as a row.
struct EventRow {
    time: (String, String),
    kind: String,
    actor: String,
    /// The token it is about, if any: (id, name).
    token: Option<(String, String)>,
    detail: String,
}

fn event_rows(events: &[Event]) -> Vec<EventRow> {
    events
        .iter()
        .map(|e| EventRow {
            time: time(e.time),
            kind: e.kind.as_str().to_owned(),
            actor: e.actor.clone(),
            token: e.token_id.map(|id| {
                let name = e.detail.get("name").cloned().unwrap_or_default();
                (id.to_string(), name)
            }),
            detail: e
                .detail
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect()
}

/// An owner as its page shows it.
struct OwnerView {
    name: String,
    disabled: Option<(String, String)>,
    reason: String,
    counts: TokenCounts,
    tokens_link: String,
    page_link: String,
    /// The rate limits its tokens share, in words, and as the form writes
    /// them.
    limits: String,
    limits_field: String,
}

impl OwnerView {
    fn new(record: &OwnerRecord, counts: &TokenCounts) -> OwnerView {
        let query = owner_query(&record.owner);
        OwnerView {
            name: record.owner.clone(),
            disabled: record.disable_time.map(time),
            reason: record.reason.clone(),
            counts: *counts,
            tokens_link: format!("/console/?{query}"),
            page_link: owner_page_link(&record.owner),
            limits: limits::in_words(&record.rate_limits, None, Timestamp::from_micros(0)),
            limits_field: limits::written(&record.rate_limits),
        }
    }
}

#[derive(Template)]
#[template(path = "console/owners.html")]
struct OwnerPage<'a> {
    chrome: &'a Chrome,
    owner: Option<OwnerView>,
    events: Vec<EventRow>,
}

pub(super) fn owner(
    chrome: &Chrome,
    found: Option<&(OwnerRecord, TokenCounts)>,
    events: &[Event],
) -> Response {
    let page = OwnerPage {
        chrome,
        owner: found.map(|(record, counts)| OwnerView::new(record, counts)),
        events: event_rows(events),
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "console/confirm_delete_owner.html")]
struct ConfirmDeleteOwner<'a> {
    chrome: &'a Chrome,
    owner: OwnerView,
}

pub(super) fn confirm_delete_owner(
    chrome: &Chrome,
    (record, counts): &(OwnerRecord, TokenCounts),
) -> Response {
    let page = ConfirmDeleteOwner {
        chrome,
        owner: OwnerView::new(record, counts),
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "console/keys.html")]
struct Keys<'a> {
    chrome: &'a Chrome,
    keys: &'a [KeyUsage],
}

pub(super) fn keys(chrome: &Chrome, keys: &[KeyUsage]) -> Response {
    render(StatusCode::OK, &Keys { chrome, keys })
}

#[derive(Template)]
#[template(path = "console/token.html")]
struct TokenPage<'a> {
    chrome: &'a Chrome,
    token: TokenView,
    here: String,
    /// The renewal form's choices: (seconds, label).
    grace_periods: &'static [(u64, &'static str)],
    events: Vec<EventRow>,
    usage: UsageTable,
}

pub(super) fn token(
    chrome: &Chrome,
    now: Timestamp,
    (record, usage): (&TokenRecord, UsageTable),
    events: &[Event],
) -> Response {
    let token = TokenView::new(record, now);
    let page = TokenPage {
        chrome,
        here: format!("/console/tokens/{}", token.id),
        token,
        grace_periods: &GRACE_PERIODS,
        events: event_rows(events),
        usage,
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "console/confirm_delete.html")]
struct ConfirmDelete<'a> {
    chrome: &'a Chrome,
    token: TokenView,
    back: &'a str,
}

pub(super) fn confirm_delete(chrome: &Chrome, record: &TokenRecord, back: &str) -> Response {
    let page = ConfirmDelete {
        chrome,
        token: TokenView::new(record, record.update_time),
        back,
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "console/opening.html")]
struct Opening<'a> {
    owner: &'a str,
}

/// The page a console link answers with: it sends the browser on to the
/// hosted page (a navigation that starts here carries the new cookie).
pub(super) fn opening(session: &Session) -> Response {
    let owner = session.owner.as_deref().unwrap_or("");
    render(StatusCode::OK, &Opening { owner })
}

#[derive(Template)]
#[template(
    source = r#"{% extends "console/base.html" %}{% block title %}Signed out{% endblock %}{% block main %}<h1>Signed out</h1><p>You have left your tokens page. To come back, open it again from where you came.</p>{% endblock %}"#,
    ext = "html"
)]
struct SignedOut;

pub(super) fn signed_out() -> Response {
    render(StatusCode::OK, &SignedOut)
}

#[derive(Template)]
#[template(
    source = r#"{% extends "console/base.html" %}{% block title %}Problem{% endblock %}{% block main %}<h1>Something is wrong</h1><p class="problem" role="alert">{{ message }}</p><p>Go back to the page you came from to try again.</p>{% endblock %}"#,
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
