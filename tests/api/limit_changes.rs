//! Changing a token's limits (UpdateToken `credits`, `rate_limits`) and
//! credits that refill: the change applies at once, what replicas held of
//! the old credits is dropped, and each change is in the audit trail.

use std::time::Duration;

use latchkey::grpc::pb;
use tonic::Code;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    the_console_sets_limits_and_refuses_what_does_not_read,
    new_limits_apply_at_once_and_are_audited,
    credits_refill_at_each_period,
    bad_limit_changes_are_refused_by_name,
);

fn credits(remaining: i64, refill: Option<(i64, i64)>) -> pb::Credits {
    pb::Credits {
        remaining,
        refill: refill.map(|(amount, seconds)| pb::CreditsRefill {
            amount,
            interval: Some(prost_types::Duration { seconds, nanos: 0 }),
        }),
    }
}

async fn update(
    app: &TestApp,
    token: pb::Token,
    paths: &[&str],
) -> Result<pb::Token, tonic::Status> {
    app.admin
        .clone()
        .update_token(app.admin_request(pb::UpdateTokenRequest {
            token: Some(token),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// The verdicts of `n` Verify calls, one after another.
async fn verdicts(app: &TestApp, secret: &str, n: usize) -> Vec<pb::Verdict> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(app.verify(secret, &[]).await.verdict());
    }
    seen
}

async fn kinds_and_details(app: &TestApp, id: &str) -> Vec<(String, String)> {
    let mut events = app
        .admin
        .clone()
        .list_token_events(app.admin_request(pb::ListTokenEventsRequest {
            token_id: id.to_owned(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .events;
    events.reverse();
    events
        .into_iter()
        .map(|e| {
            let mut detail: Vec<_> = e.detail.iter().map(|(k, v)| format!("{k}={v}")).collect();
            detail.sort();
            (e.kind().as_str_name().to_owned(), detail.join(" "))
        })
        .collect()
}

async fn new_limits_apply_at_once_and_are_audited(backend: Backend) {
    use pb::Verdict::{RateLimited, UsageExceeded, Valid};
    let app = spawn_app(backend).await;
    let created = app
        .create(pb::CreateTokenRequest {
            owner: "user-1".into(),
            name: "metered".into(),
            credits: Some(credits(10_000, None)),
            ..Default::default()
        })
        .await
        .unwrap();
    let (token, secret) = (created.token.unwrap(), created.secret);
    // The first call takes a block of several hundred into this replica.
    assert_eq!(
        app.verify(&secret, &[]).await.credits_remaining,
        Some(9_999)
    );

    // New credits replace what was left, held blocks included.
    let changed = update(
        &app,
        pb::Token {
            id: token.id.clone(),
            credits: Some(credits(3, None)),
            ..Default::default()
        },
        &["credits"],
    )
    .await
    .unwrap();
    assert_eq!(changed.credits.unwrap().remaining, 3);
    assert_eq!(
        verdicts(&app, &secret, 5).await,
        [Valid, Valid, Valid, UsageExceeded, UsageExceeded]
    );

    // A rate limit added, then credits removed: unlimited but for it.
    app.clock.set(latchkey::clock::Timestamp::from_micros(
        (latchkey::clock::Clock::now(&*app.clock).as_micros() / 1_000_000 + 1) * 1_000_000,
    ));
    let limited = update(
        &app,
        pb::Token {
            id: token.id.clone(),
            rate_limits: vec![pb::RateLimit {
                name: "per-second".into(),
                limit: 2,
                window: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
            }],
            ..Default::default()
        },
        &["rate_limits", "credits"],
    )
    .await
    .unwrap();
    assert!(limited.credits.is_none());
    assert_eq!(limited.rate_limits.len(), 1);
    assert_eq!(
        verdicts(&app, &secret, 3).await,
        [Valid, Valid, RateLimited]
    );
    let answer = app.verify(&secret, &[]).await;
    assert_eq!(answer.credits_remaining, None);
    // Removed: unlimited again.
    update(
        &app,
        pb::Token {
            id: token.id.clone(),
            ..Default::default()
        },
        &["rate_limits"],
    )
    .await
    .unwrap();
    assert_eq!(verdicts(&app, &secret, 3).await, [Valid, Valid, Valid]);

    // A name change beside a limit change: one event each.
    update(
        &app,
        pb::Token {
            id: token.id.clone(),
            name: "renamed".into(),
            credits: Some(credits(100, Some((100, 86_400)))),
            ..Default::default()
        },
        &["name", "credits"],
    )
    .await
    .unwrap();
    let trail = kinds_and_details(&app, &token.id).await;
    let limits: Vec<_> = trail
        .iter()
        .filter(|(k, _)| k != "EVENT_KIND_CREATED")
        .map(|(k, d)| format!("{k}: {d}"))
        .collect();
    assert_eq!(
        limits,
        [
            "EVENT_KIND_LIMITS_CHANGED: credits=3 fields=credits rate_limits=",
            "EVENT_KIND_CREDITS_EXHAUSTED: ",
            "EVENT_KIND_LIMITS_CHANGED: credits= fields=rate_limits,credits rate_limits=per-second=2/1",
            "EVENT_KIND_LIMITS_CHANGED: credits= fields=rate_limits rate_limits=",
            "EVENT_KIND_UPDATED: fields=name",
            "EVENT_KIND_LIMITS_CHANGED: credits=100+100/86400 fields=credits rate_limits=",
        ],
        "{trail:?}"
    );
}

async fn credits_refill_at_each_period(backend: Backend) {
    use pb::Verdict::{UsageExceeded, Valid};
    let app = spawn_app(backend).await;
    // A second into a one-minute period, well before its end.
    let now = latchkey::clock::Clock::now(&*app.clock).as_micros();
    app.clock.set(latchkey::clock::Timestamp::from_micros(
        (now / 60_000_000 + 1) * 60_000_000 + 1_000_000,
    ));
    let created = app
        .create(pb::CreateTokenRequest {
            owner: "user-1".into(),
            credits: Some(credits(2, Some((4, 60)))),
            ..Default::default()
        })
        .await
        .unwrap();
    let (token, secret) = (created.token.unwrap(), created.secret);
    assert_eq!(
        verdicts(&app, &secret, 3).await,
        [Valid, Valid, UsageExceeded]
    );
    let get = |app: &TestApp| {
        let mut admin = app.admin.clone();
        let request = app.admin_request(pb::GetTokenRequest {
            id: token.id.clone(),
        });
        async move { admin.get_token(request).await.unwrap().into_inner() }
    };
    assert_eq!(get(&app).await.credits.unwrap().remaining, 0);
    // The next period starts from the refill's amount; nothing carries over.
    app.clock.advance(Duration::from_secs(60));
    let shown = get(&app).await.credits.unwrap();
    assert_eq!(shown.remaining, 4);
    assert_eq!(shown.refill.unwrap().amount, 4);
    assert_eq!(
        verdicts(&app, &secret, 5).await,
        [Valid, Valid, Valid, Valid, UsageExceeded]
    );
    app.clock.advance(Duration::from_secs(60));
    let first = app.verify(&secret, &[]).await;
    assert_eq!((first.verdict(), first.credits_remaining), (Valid, Some(3)));
}

async fn bad_limit_changes_are_refused_by_name(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, _) = app.create_token("user-1", &[]).await;
    for (given, field) in [
        (credits(1, Some((5, 59))), "credits.refill.interval"),
        (
            credits(1, Some((5, 367 * 86_400))),
            "credits.refill.interval",
        ),
        (credits(1, Some((-5, 60))), "credits.refill.amount"),
        (credits(-1, None), "credits.remaining"),
        (
            pb::Credits {
                remaining: 1,
                refill: Some(pb::CreditsRefill {
                    amount: 1,
                    interval: None,
                }),
            },
            "credits.refill.interval",
        ),
    ] {
        let created = app
            .create(pb::CreateTokenRequest {
                owner: "user-2".into(),
                credits: Some(given),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(created.code(), Code::InvalidArgument);
        assert!(
            created.message().starts_with(&format!("{field}:")),
            "{field}: {}",
            created.message()
        );
        let updated = update(
            &app,
            pb::Token {
                id: token.id.clone(),
                credits: Some(given),
                ..Default::default()
            },
            &["credits"],
        )
        .await
        .unwrap_err();
        assert_eq!(updated.code(), Code::InvalidArgument);
        assert!(
            updated.message().starts_with(&format!("token.{field}:")),
            "token.{field}: {}",
            updated.message()
        );
    }
    let bad_rate = update(
        &app,
        pb::Token {
            id: token.id.clone(),
            rate_limits: vec![pb::RateLimit {
                name: "x y".into(),
                limit: 1,
                window: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
            }],
            ..Default::default()
        },
        &["rate_limits"],
    )
    .await
    .unwrap_err();
    assert!(
        bad_rate.message().starts_with("token.rate_limits[0].name:"),
        "{}",
        bad_rate.message()
    );
    // Nothing was written: no token for user-2, and user-1's trail holds
    // only its creation.
    assert!(crate::console::tokens_of(&app, "user-2").await.is_empty());
    let trail = kinds_and_details(&app, &token.id).await;
    assert_eq!(trail.len(), 1, "{trail:?}");
}

async fn the_console_sets_limits_and_refuses_what_does_not_read(backend: Backend) {
    use crate::console::{Page as _, encode, request, sign_in};
    let app = spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = app.http_addr.unwrap();
    let (token, _) = app.create_token("team-1", &[]).await;
    let (_, session) = sign_in(addr, ADMIN_TOKEN).await;
    let session = session.unwrap();
    let token_page = format!("/console/tokens/{}", token.id);
    let page = request(addr, "GET", &token_page, Some(&session), "").await;
    let csrf = page.csrf();
    let post = |path: String, fields: Vec<(&str, &str)>| {
        let body = format!("{}&csrf={csrf}", encode(&fields));
        let session = session.clone();
        async move { request(addr, "POST", &path, Some(&session), &body).await }
    };
    let get = |app: &TestApp| {
        let mut admin = app.admin.clone();
        let request = app.admin_request(pb::GetTokenRequest {
            id: token.id.clone(),
        });
        async move { admin.get_token(request).await.unwrap().into_inner() }
    };
    let update = format!("/console/tokens/{}/update", token.id);

    // What does not read, or what the lifecycle refuses, is named, and
    // nothing changes.
    for (fields, says) in [
        (vec![("rate_limits", "per-second=fifty/1s")], "rate_limits"),
        (vec![("rate_limits", "per-second")], "rate_limits"),
        (vec![("rate_limits", "per-second=5/soon")], "rate_limits"),
        (
            vec![("rate_limits", "a b=5/1s")],
            "token.rate_limits[0].name",
        ),
        (
            vec![("rate_limits", "a=5/1500ms")],
            "token.rate_limits[0].window",
        ),
        (vec![("credits", "-3")], "credits"),
        (vec![("credits", "5"), ("refill", "10")], "refill"),
        (
            vec![("credits", "5"), ("refill", "10/30s")],
            "token.credits.refill.interval",
        ),
    ] {
        let refused = post(update.clone(), fields.clone()).await;
        assert_eq!(refused.status, 400, "{fields:?}: {}", refused.body);
        assert!(refused.body.contains(says), "{says}: {}", refused.body);
    }
    let unchanged = get(&app).await;
    assert!(unchanged.rate_limits.is_empty() && unchanged.credits.is_none());

    let saved = post(
        update.clone(),
        vec![("rate_limits", "per-second=50/1s, per-day=1000/1d")],
    )
    .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let saved = post(
        update.clone(),
        vec![("credits", "25"), ("refill", "100/1d")],
    )
    .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let got = get(&app).await;
    assert_eq!(
        got.rate_limits
            .iter()
            .map(|l| (l.name.as_str(), l.limit, l.window.unwrap().seconds))
            .collect::<Vec<_>>(),
        [("per-second", 50, 1), ("per-day", 1000, 86_400)]
    );
    let credits = got.credits.unwrap();
    assert_eq!(
        (credits.remaining, credits.refill.unwrap().amount),
        (25, 100)
    );
    let page = request(addr, "GET", &token_page, Some(&session), "").await;
    assert!(
        page.body
            .contains(r#"value="per-second=50/1s, per-day=1000/1day""#),
        "{}",
        page.body
    );
    // Blank credits: unlimited again.
    let saved = post(update.clone(), vec![("credits", ""), ("refill", "")]).await;
    assert_eq!(saved.status, 303);
    assert!(get(&app).await.credits.is_none());

    // The owner's limits.
    let saved = post(
        "/console/owners/limits".to_owned(),
        vec![("owner", "team-1"), ("rate_limits", "per-minute=600/1m")],
    )
    .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let owner_page = request(
        addr,
        "GET",
        "/console/owners?owner=team-1",
        Some(&session),
        "",
    )
    .await;
    assert!(
        owner_page.body.contains("600 per 1m (per-minute)"),
        "{}",
        owner_page.body
    );
    let refused = post(
        "/console/owners/limits".to_owned(),
        vec![("owner", "team-1"), ("rate_limits", "x=0/1m")],
    )
    .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.body.contains("rate_limits[0].limit"),
        "{}",
        refused.body
    );
}
