//! GetTokenUsage: the calls that presented a token, per day and verdict,
//! counted in memory and written behind with the last-use times.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use latchkey::clock::Clock as _;
use latchkey::grpc::pb;
use tonic::Code;

use crate::console::token_page;
use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    usage_counts_calls_per_day_and_verdict,
    usage_requests_are_checked,
);

async fn usage(
    app: &TestApp,
    id: &str,
    days: i32,
) -> Result<pb::GetTokenUsageResponse, tonic::Status> {
    app.admin
        .clone()
        .get_token_usage(app.admin_request(pb::GetTokenUsageRequest {
            id: id.to_owned(),
            days,
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// (date, {verdict: calls}) per day, the latest first.
type Days = Vec<(String, BTreeMap<i32, i64>)>;

fn days(answer: &pb::GetTokenUsageResponse) -> Days {
    answer
        .days
        .iter()
        .map(|d| {
            let counts = d.counts.iter().map(|c| (c.verdict, c.count)).collect();
            (d.date.clone(), counts)
        })
        .collect()
}

/// Polls GetTokenUsage until it answers `expected` (the flusher writes
/// behind, every 100 ms in tests).
async fn usage_when(app: &TestApp, id: &str, expected: &Days) {
    let mut last = Vec::new();
    for _ in 0..100 {
        last = days(&usage(app, id, 90).await.unwrap());
        if last == *expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("usage never became {expected:?}: {last:?}");
}

fn date(app: &TestApp) -> String {
    let at =
        UNIX_EPOCH + Duration::from_micros(u64::try_from(app.clock.now().as_micros()).unwrap());
    humantime::format_rfc3339_seconds(at).to_string()[..10].to_owned()
}

fn counts(pairs: &[(pb::Verdict, i64)]) -> BTreeMap<i32, i64> {
    pairs.iter().map(|(v, n)| (*v as i32, *n)).collect()
}

async fn usage_counts_calls_per_day_and_verdict(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (token, secret) = app.create_token("alice", &["repo:read"]).await;
    let (other, other_secret) = app.create_token("bob", &[]).await;
    for _ in 0..5 {
        assert_eq!(app.verify(&secret, &[]).await.verdict(), pb::Verdict::Valid);
    }
    for _ in 0..2 {
        let answer = app.verify(&secret, &["admin"]).await;
        assert_eq!(answer.verdict(), pb::Verdict::InsufficientScope);
    }
    app.verify(&other_secret, &[]).await;
    let first = date(&app);
    let day_one = (
        first.clone(),
        counts(&[(pb::Verdict::Valid, 5), (pb::Verdict::InsufficientScope, 2)]),
    );
    usage_when(&app, &token.id, &vec![day_one.clone()]).await;

    // The next day the token is revoked; calls still count, as REVOKED.
    app.clock.advance(Duration::from_secs(86_400));
    app.revoke(&token.id, "rotated").await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            app.verify(&secret, &[]).await.verdict(),
            pb::Verdict::Revoked
        );
    }
    let second = date(&app);
    assert!(second > first);
    let day_two = (second, counts(&[(pb::Verdict::Revoked, 3)]));
    usage_when(&app, &token.id, &vec![day_two.clone(), day_one]).await;
    // `days` counts today: one day is today's alone.
    assert_eq!(
        days(&usage(&app, &token.id, 1).await.unwrap()),
        vec![day_two]
    );
    // Another token's calls are its own.
    assert_eq!(
        days(&usage(&app, &other.id, 0).await.unwrap()),
        vec![(first, counts(&[(pb::Verdict::Valid, 1)]))]
    );

    // The CLI shows a row per day, a column per verdict.
    let shown = run_client(&app, &["token", "usage", &token.id, "--days", "2"], b"").await;
    let lines: Vec<Vec<String>> = shown
        .ok()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(lines[0], ["DATE", "VALID", "REVOKED", "INSUFFICIENT_SCOPE"]);
    assert_eq!(lines[1][1..], ["0", "3", "0"]);
    assert_eq!(lines[2][1..], ["5", "0", "2"]);

    // So does the console's token page.
    let page = token_page(&app, &token.id).await;
    let table = page.body.split("Calls, last 7 days").nth(1).unwrap();
    let cells: String = table
        .split("</table>")
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    for expected in [
        r#"<thscope="col">valid</th><thscope="col">revoked</th><thscope="col">insufficient_scope</th>"#,
        "<td>0</td><td>3</td><td>0</td>",
        "<td>5</td><td>0</td><td>2</td>",
    ] {
        assert!(cells.contains(expected), "{expected} in {cells}");
    }
}

async fn usage_requests_are_checked(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, _) = app.create_token("alice", &[]).await;
    for (days, code, field) in [
        (91, Code::InvalidArgument, "days"),
        (-1, Code::InvalidArgument, "days"),
    ] {
        let status = usage(&app, &token.id, days).await.unwrap_err();
        assert_eq!(status.code(), code, "{days}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    let status = usage(&app, "not-an-id", 7).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("id"), "{}", status.message());
    let unknown = "01937c4e-8f2a-7c3d-9e1f-0a1b2c3d4e5f";
    assert_eq!(
        usage(&app, unknown, 7).await.unwrap_err().code(),
        Code::NotFound
    );
    let anonymous = app
        .admin
        .clone()
        .get_token_usage(pb::GetTokenUsageRequest {
            id: token.id.clone(),
            days: 7,
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert!(usage(&app, &token.id, 90).await.unwrap().days.is_empty());
}
