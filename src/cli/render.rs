//! What the client commands print: tables and field lists for people, and
//! each response message as proto3 JSON for scripts.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::SystemTime;

use latchkey_client::pb;
use prost_reflect::{DescriptorPool, DynamicMessage};

/// `message` (whose full proto name is `name`) as proto3 JSON.
pub fn json<M: prost::Message>(message: &M, name: &str) -> String {
    let mut out = serde_json::to_string_pretty(&dynamic(message, name)).expect("proto3 JSON");
    out.push('\n');
    out
}

/// [`json`] on one line, for a stream of messages (JSON Lines).
pub fn json_line<M: prost::Message>(message: &M, name: &str) -> String {
    let mut out = serde_json::to_string(&dynamic(message, name)).expect("proto3 JSON");
    out.push('\n');
    out
}

fn dynamic<M: prost::Message>(message: &M, name: &str) -> DynamicMessage {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("the descriptors built with the API")
    });
    let descriptor = pool
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is in the API's descriptors"));
    DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message decodes as its own type")
}

/// Columns of text, each as wide as its widest cell, under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Labelled lines, the labels aligned.
pub fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (label, value) in rows {
        let value = if value.is_empty() { "-" } else { value };
        let _ = writeln!(out, "{:<width$} {value}", format!("{label}:"));
    }
    out
}

/// Text from the server, with control characters shown as `?` so that a
/// stored name cannot drive the terminal.
pub fn text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A time in RFC 3339 (UTC, seconds), or `none`.
pub fn time(t: Option<&prost_types::Timestamp>, none: &str) -> String {
    t.and_then(|t| SystemTime::try_from(*t).ok()).map_or_else(
        || none.to_owned(),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    )
}

fn duration(d: Option<&prost_types::Duration>) -> String {
    d.and_then(|d| std::time::Duration::try_from(*d).ok())
        .map_or_else(
            || "none".to_owned(),
            |d| humantime::format_duration(d).to_string(),
        )
}

/// A proto enum's value name without its prefix, in lower case
/// (`TOKEN_STATUS_ACTIVE` → `active`).
pub fn enum_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_lowercase()
}

pub fn status(token: &pb::Token) -> String {
    enum_name(token.status().as_str_name(), "TOKEN_STATUS_")
}

/// The token table's columns: what a token page shows, and the id.
pub const TOKEN_COLUMNS: [&str; 7] = [
    "ID",
    "Name",
    "Token",
    "Created",
    "Last used",
    "Expires",
    "Status",
];

pub fn token_row(token: &pb::Token) -> Vec<String> {
    vec![
        token.id.clone(),
        text(&token.name),
        text(&token.display_hint),
        time(token.create_time.as_ref(), "-"),
        time(token.last_used_time.as_ref(), "Never"),
        time(token.expire_time.as_ref(), "Never"),
        status(token),
    ]
}

pub fn tokens(tokens: &[pb::Token]) -> String {
    let rows: Vec<Vec<String>> = tokens.iter().map(token_row).collect();
    table(&TOKEN_COLUMNS, &rows)
}

/// A token's calls: a row per day, a column per verdict given.
pub fn usage(days: &[pb::TokenUsageDay], span: i32) -> String {
    if days.is_empty() {
        return format!("No calls in the last {span} days\n");
    }
    let mut verdicts: Vec<i32> = days
        .iter()
        .flat_map(|d| d.counts.iter().map(|c| c.verdict))
        .collect();
    verdicts.sort_unstable();
    verdicts.dedup();
    let names: Vec<String> = verdicts
        .iter()
        .map(|v| {
            pb::Verdict::try_from(*v).map_or_else(
                |_| v.to_string(),
                |v| v.as_str_name().trim_start_matches("VERDICT_").to_owned(),
            )
        })
        .collect();
    let mut header = vec!["DATE"];
    header.extend(names.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = days
        .iter()
        .map(|d| {
            let mut row = vec![d.date.clone()];
            row.extend(verdicts.iter().map(|v| {
                d.counts
                    .iter()
                    .find(|c| c.verdict == *v)
                    .map_or(0, |c| c.count)
                    .to_string()
            }));
            row
        })
        .collect();
    table(&header, &rows)
}

/// One token, every field.
pub fn token(token: &pb::Token) -> String {
    let map = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{}={}", text(k), text(v)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rows = vec![
        ("ID", token.id.clone()),
        ("Owner", text(&token.owner)),
        ("Name", text(&token.name)),
        ("Description", text(&token.description)),
        ("Token", text(&token.display_hint)),
        ("Scopes", text(&token.scopes.join(" "))),
        ("Metadata", map(&token.metadata)),
        ("Status", status(token)),
        ("Created", time(token.create_time.as_ref(), "-")),
        ("Updated", time(token.update_time.as_ref(), "-")),
        ("Last used", time(token.last_used_time.as_ref(), "Never")),
        ("Expires", time(token.expire_time.as_ref(), "Never")),
        ("Idle timeout", duration(token.idle_timeout.as_ref())),
        (
            "Credits",
            token.credits.as_ref().map_or_else(
                || "unlimited".to_owned(),
                |c| match &c.refill {
                    Some(r) => format!(
                        "{}, refilled to {} every {}",
                        c.remaining,
                        r.amount,
                        duration(r.interval.as_ref())
                    ),
                    None => c.remaining.to_string(),
                },
            ),
        ),
        ("Rate limits", rate_limits(&token.rate_limits)),
    ];
    if !token.last_used_ip.is_empty() {
        rows.push(("Last used from", token.last_used_ip.clone()));
    }
    if !token.last_used_user_agent.is_empty() {
        rows.push(("Last user agent", text(&token.last_used_user_agent)));
    }
    if !token.recent_ips.is_empty() {
        rows.push(("Recent addresses", token.recent_ips.join(", ")));
    }
    if token.revoke_time.is_some() {
        rows.push(("Revoked", time(token.revoke_time.as_ref(), "-")));
        rows.push(("Revoke reason", text(&token.revoke_reason)));
    }
    if !token.replaces.is_empty() {
        rows.push(("Replaces", token.replaces.clone()));
    }
    if !token.replaced_by.is_empty() {
        rows.push(("Replaced by", token.replaced_by.clone()));
    }
    fields(&rows)
}

/// A new token and its secret, with the warning that it is shown once.
pub fn created(answer: &pb::CreateTokenResponse) -> String {
    let token = answer.token.clone().unwrap_or_default();
    format!(
        "{}\nSecret (shown once: copy it now, it cannot be shown again):\n\n    {}\n",
        self::token(&token),
        answer.secret
    )
}

/// A console link, with how to treat it.
pub fn console_link(link: &pb::CreateConsoleLinkResponse) -> String {
    format!(
        "Opens once, until {} (send it to the owner's browser only; it carries a secret):\n\n    {}\n",
        time(link.expire_time.as_ref(), "-"),
        link.url
    )
}

/// `name limit/window` each, comma-separated; "none" for none.
fn rate_limits(limits: &[pb::RateLimit]) -> String {
    if limits.is_empty() {
        return "none".to_owned();
    }
    limits
        .iter()
        .map(|l| {
            format!(
                "{} {}/{}",
                text(&l.name),
                l.limit,
                duration(l.window.as_ref())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn owner(owner: &pb::Owner) -> String {
    let mut rows = vec![
        ("Owner", text(&owner.owner)),
        (
            "Disabled",
            if owner.disabled { "yes" } else { "no" }.to_owned(),
        ),
    ];
    if owner.disabled {
        rows.push(("Disabled at", time(owner.disable_time.as_ref(), "-")));
        rows.push(("Reason", text(&owner.reason)));
    }
    rows.push(("Rate limits", rate_limits(&owner.rate_limits)));
    let counts = &owner.token_counts;
    if let Some(c) = counts {
        rows.push((
            "Tokens",
            format!(
                "{} active, {} revoked, {} expired, {} inactive",
                c.active, c.revoked, c.expired, c.inactive
            ),
        ));
    }
    fields(&rows)
}

pub fn events(events: &[pb::TokenEvent]) -> String {
    let rows: Vec<Vec<String>> = events.iter().map(event_cells).collect();
    table(
        &["Time", "Kind", "Token", "Owner", "Actor", "Detail"],
        &rows,
    )
}

/// An event as it arrives while watching: one line, the columns of
/// [`events`] separated by two spaces, then `cursor=` and its cursor.
pub fn watched_event(event: &pb::TokenEvent, cursor: &str) -> String {
    let mut cells = event_cells(event);
    cells.retain(|c| !c.is_empty());
    cells.push(format!("cursor={}", text(cursor)));
    let mut line = cells.join("  ");
    line.push('\n');
    line
}

fn event_cells(e: &pb::TokenEvent) -> Vec<String> {
    let detail = e
        .detail
        .iter()
        .map(|(k, v)| format!("{}={}", text(k), text(v)))
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        time(e.time.as_ref(), "-"),
        enum_name(e.kind().as_str_name(), "EVENT_KIND_"),
        e.token_id.clone(),
        text(&e.owner),
        text(&e.actor),
        detail,
    ]
}

pub fn keys(keys: &[pb::KeyUsage]) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                text(&k.id),
                yes(k.primary),
                yes(k.configured),
                k.token_count.to_string(),
            ]
        })
        .collect();
    table(&["ID", "Primary", "Configured", "Tokens"], &rows)
}

pub fn verdict(answer: &pb::VerifyResponse) -> String {
    let mut out = enum_name(answer.verdict().as_str_name(), "VERDICT_").to_uppercase();
    if let Some(token) = &answer.token {
        let _ = write!(out, ": token {} of {}", token.id, text(&token.owner));
    }
    if !answer.missing_scopes.is_empty() {
        let _ = write!(
            out,
            "; missing scopes: {}",
            text(&answer.missing_scopes.join(" "))
        );
    }
    if let Some(left) = answer.credits_remaining {
        let _ = write!(out, "; {left} credits left");
    }
    if let Some(after) = &answer.retry_after {
        let _ = write!(out, "; retry after {}", duration(Some(after)));
    }
    if let Some(rate) = &answer.rate_limit {
        let _ = write!(
            out,
            "; {} calls left of {} ({}), window ends in {}",
            rate.remaining,
            rate.limit,
            text(&rate.name),
            duration(rate.reset.as_ref())
        );
    }
    out.push('\n');
    out
}
