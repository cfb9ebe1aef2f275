//! Rate limits, the token's own and its owner's: exactly the limit per
//! window on one replica, within it over two under uneven load, refused
//! calls never counted, and the answers every surface gives.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use latchkey::clock::Timestamp;
use latchkey::grpc::pb;
use tonic::Code;

use crate::console::{request as console_request, sign_in, tokens_of};
use crate::credits::verify_costing;
use crate::ext_authz::{check, check_request, denial, headers};
use crate::helpers::*;
use crate::introspection::{introspect, resource_server};
use crate::on_both_databases;
use crate::replicas::pair;

on_both_databases!(
    a_rate_limit_admits_exactly_its_limit_per_window,
    owner_limits_are_shared_by_every_token_of_the_owner,
    bad_rate_limits_are_refused_by_name_and_change_nothing,
    a_rate_limit_holds_over_two_replicas_under_uneven_load,
);

fn per_second(name: &str, limit: i64) -> pb::RateLimit {
    pb::RateLimit {
        name: name.into(),
        limit,
        window: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
    }
}

/// Stops `app`'s clock a tenth into a whole second, so that a burst of
/// calls stays in one window.
fn at_start_of_a_second(app: &TestApp) {
    let now = latchkey::clock::Clock::now(&*app.clock).as_micros();
    app.clock.set(Timestamp::from_micros(
        (now / 1_000_000 + 1) * 1_000_000 + 100_000,
    ));
}

async fn limited(
    app: &TestApp,
    owner: &str,
    limits: Vec<pb::RateLimit>,
    credits: Option<i64>,
) -> String {
    app.create(pb::CreateTokenRequest {
        owner: owner.into(),
        name: "limited".into(),
        scopes: vec!["repo:read".into()],
        rate_limits: limits,
        credits: credits.map(|remaining| pb::Credits {
            remaining,
            refill: None,
        }),
        ..Default::default()
    })
    .await
    .unwrap()
    .secret
}

async fn verify(
    app: &TestApp,
    secret: &str,
    scopes: &[&str],
    cost: Option<i64>,
) -> pb::VerifyResponse {
    verify_costing(app, secret, scopes, cost).await.unwrap()
}

/// The verdicts of `calls` concurrent Verify calls on each of `secrets`.
async fn burst(app: &TestApp, secrets: &[&str], calls: usize) -> BTreeMap<String, usize> {
    let mut handles = Vec::new();
    for secret in secrets {
        for _ in 0..calls {
            let mut client = app.verifier.clone();
            let token = (*secret).to_owned();
            handles.push(tokio::spawn(async move {
                client
                    .verify(pb::VerifyRequest {
                        token,
                        required_scopes: vec![],
                        cost: None,
                        client: None,
                    })
                    .await
                    .unwrap()
                    .into_inner()
            }));
        }
    }
    let mut tally = BTreeMap::new();
    for handle in handles {
        let answer = handle.await.unwrap();
        if answer.verdict() == pb::Verdict::RateLimited {
            let after = answer.retry_after.expect("RATE_LIMITED says when to retry");
            assert_eq!((after.seconds, after.nanos), (1, 0));
        }
        *tally
            .entry(answer.verdict().as_str_name().to_owned())
            .or_default() += 1;
    }
    tally
}

fn count(tally: &BTreeMap<String, usize>, verdict: pb::Verdict) -> usize {
    tally.get(verdict.as_str_name()).copied().unwrap_or(0)
}

async fn a_rate_limit_admits_exactly_its_limit_per_window(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    at_start_of_a_second(&app);
    let secret = limited(&app, "user-1", vec![per_second("per-second", 50)], None).await;
    let token = tokens_of(&app, "user-1").await.remove(0);
    assert_eq!(token.rate_limits, vec![per_second("per-second", 50)]);

    // Refused and check-only calls count for nothing.
    for _ in 0..10 {
        let lacking = verify(&app, &secret, &["repo:write"], None).await;
        assert_eq!(lacking.verdict(), pb::Verdict::InsufficientScope);
        assert_eq!(lacking.rate_limit, None);
        let checked = verify(&app, &secret, &[], Some(0)).await;
        assert_eq!(checked.verdict(), pb::Verdict::Valid);
    }
    let first = verify(&app, &secret, &[], None).await;
    let state = first.rate_limit.unwrap();
    assert_eq!(
        (state.name.as_str(), state.limit, state.remaining),
        ("per-second", 50, 49)
    );
    assert_eq!(
        state.reset.unwrap(),
        prost_types::Duration {
            seconds: 1,
            nanos: 0
        },
        "the window ends within the second, said in whole seconds"
    );

    // 80 at once: 49 more pass, and the rest are told when to retry.
    let tally = burst(&app, &[&secret], 80).await;
    assert_eq!(count(&tally, pb::Verdict::Valid), 49, "{tally:?}");
    assert_eq!(count(&tally, pb::Verdict::RateLimited), 31, "{tally:?}");

    // Envoy's client gets 429 with Retry-After and the RateLimit fields.
    let bearer = format!("Bearer {secret}");
    let denied = check(&app, check_request(Some(&bearer), None))
        .await
        .unwrap();
    let (status, headers_sent, body) = denial(&denied);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(headers_sent["retry-after"], "1");
    assert_eq!(headers_sent["ratelimit-policy"], r#""per-second";q=50;w=1"#);
    assert_eq!(headers_sent["ratelimit"], r#""per-second";r=0;t=1"#);
    // Introspection answers inactive: RFC 7662 has no "try later".
    let caller = resource_server(&app).await;
    assert_eq!(
        introspect(&app, &caller, &secret).await.body,
        r#"{"active":false}"#
    );

    // The next window admits 50 again, and an allowed Check tells the
    // client what is left.
    app.clock.advance(Duration::from_secs(1));
    let allowed = check(&app, check_request(Some(&bearer), None))
        .await
        .unwrap();
    let Some(envoy_types::ext_authz::v3::pb::HttpResponse::OkResponse(ok)) = &allowed.http_response
    else {
        panic!("not allowed: {allowed:?}");
    };
    let added = headers(&ok.response_headers_to_add);
    assert_eq!(added["ratelimit"], r#""per-second";r=49;t=1"#);
    let tally = burst(&app, &[&secret], 80).await;
    assert_eq!(count(&tally, pb::Verdict::Valid), 49, "{tally:?}");

    // A call its credits refuse is not counted against its rate limit.
    let metered = limited(&app, "user-2", vec![per_second("per-second", 5)], Some(3)).await;
    let mut left = Vec::new();
    for _ in 0..6 {
        let answer = verify(&app, &metered, &[], None).await;
        left.push((answer.verdict(), answer.rate_limit.unwrap().remaining));
    }
    use pb::Verdict::{UsageExceeded, Valid};
    assert_eq!(
        left,
        [
            (Valid, 4),
            (Valid, 3),
            (Valid, 2),
            (UsageExceeded, 2),
            (UsageExceeded, 2),
            (UsageExceeded, 2)
        ]
    );
}

async fn owner_limits_are_shared_by_every_token_of_the_owner(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    at_start_of_a_second(&app);
    let (_, one) = app.create_token("team-1", &[]).await;
    let (_, two) = app.create_token("team-1", &[]).await;
    let (_, other) = app.create_token("team-2", &[]).await;
    let set = |limits: Vec<pb::RateLimit>| {
        let mut admin = app.admin.clone();
        let request = app.admin_request(pb::SetOwnerLimitsRequest {
            owner: "team-1".into(),
            rate_limits: limits,
        });
        async move { admin.set_owner_limits(request).await.unwrap().into_inner() }
    };
    let owner = set(vec![per_second("team", 20)]).await;
    assert_eq!(owner.rate_limits, vec![per_second("team", 20)]);
    // The same limits again change nothing.
    set(vec![per_second("team", 20)]).await;
    let events = app
        .admin
        .clone()
        .list_token_events(app.admin_request(pb::ListTokenEventsRequest {
            owner: "team-1".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .events;
    let changed: Vec<_> = events
        .iter()
        .filter(|e| e.kind() == pb::EventKind::LimitsChanged)
        .collect();
    assert_eq!(changed.len(), 1, "{events:?}");
    assert_eq!(changed[0].detail["rate_limits"], "team=20/1");

    // The console shows the owner's limits, and a token's own.
    let limited_token = app
        .create(pb::CreateTokenRequest {
            owner: "team-3".into(),
            rate_limits: vec![per_second("per-second", 50)],
            credits: Some(pb::Credits {
                remaining: 7,
                refill: None,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .token
        .unwrap();
    let addr = app.http_addr.unwrap();
    let (_, session) = sign_in(addr, ADMIN_TOKEN).await;
    let session = session.unwrap();
    let page = console_request(
        addr,
        "GET",
        "/console/owners?owner=team-1",
        Some(&session),
        "",
    )
    .await;
    assert!(
        page.body
            .contains("<dt>Rate limits</dt><dd>20 per 1s (team)</dd>"),
        "{}",
        page.body
    );
    let page = console_request(
        addr,
        "GET",
        &format!("/console/tokens/{}", limited_token.id),
        Some(&session),
        "",
    )
    .await;
    assert!(
        page.body
            .contains("<dt>Limits</dt><dd>50 per 1s (per-second), 7 credits left</dd>"),
        "{}",
        page.body
    );

    // 15 calls on each token: 20 pass between them; the other owner's
    // token is not limited.
    let tally = burst(&app, &[&one, &two], 15).await;
    assert_eq!(count(&tally, pb::Verdict::Valid), 20, "{tally:?}");
    assert_eq!(count(&tally, pb::Verdict::RateLimited), 10, "{tally:?}");
    let tally = burst(&app, &[&other], 30).await;
    assert_eq!(count(&tally, pb::Verdict::Valid), 30, "{tally:?}");

    // Removed: the owner's tokens are unlimited again at once.
    assert!(set(vec![]).await.rate_limits.is_empty());
    let tally = burst(&app, &[&one], 30).await;
    assert_eq!(count(&tally, pb::Verdict::Valid), 30, "{tally:?}");
}

async fn bad_rate_limits_are_refused_by_name_and_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let window = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
    let limit = |name: &str, limit: i64, window| pb::RateLimit {
        name: name.into(),
        limit,
        window,
    };
    let cases: Vec<(Vec<pb::RateLimit>, &str)> = vec![
        (vec![limit("", 1, window(1, 0))], "rate_limits[0].name"),
        (
            vec![limit(&"n".repeat(65), 1, window(1, 0))],
            "rate_limits[0].name",
        ),
        (
            vec![limit("per\nsecond", 1, window(1, 0))],
            "rate_limits[0].name",
        ),
        (
            vec![limit("per second", 1, window(1, 0))],
            "rate_limits[0].name",
        ),
        (
            vec![limit("a", 1, window(1, 0)), limit("a", 2, window(1, 0))],
            "rate_limits[1].name",
        ),
        (vec![limit("a", 0, window(1, 0))], "rate_limits[0].limit"),
        (vec![limit("a", -5, window(1, 0))], "rate_limits[0].limit"),
        (
            vec![limit("a", 1_000_000_000_001, window(1, 0))],
            "rate_limits[0].limit",
        ),
        (vec![limit("a", 1, None)], "rate_limits[0].window"),
        (vec![limit("a", 1, window(0, 0))], "rate_limits[0].window"),
        (vec![limit("a", 1, window(-1, 0))], "rate_limits[0].window"),
        (
            vec![limit("a", 1, window(1, 500_000_000))],
            "rate_limits[0].window",
        ),
        (
            vec![limit("a", 1, window(32 * 86_400, 0))],
            "rate_limits[0].window",
        ),
        (
            (0..9)
                .map(|i| limit(&format!("l{i}"), 1, window(1, 0)))
                .collect(),
            "rate_limits",
        ),
    ];
    for (limits, field) in cases {
        let created = app
            .create(pb::CreateTokenRequest {
                owner: "user-1".into(),
                rate_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(created.code(), Code::InvalidArgument, "{limits:?}");
        assert!(
            created.message().starts_with(&format!("{field}:")),
            "{field}: {}",
            created.message()
        );
        let set = app
            .admin
            .clone()
            .set_owner_limits(app.admin_request(pb::SetOwnerLimitsRequest {
                owner: "user-1".into(),
                rate_limits: limits,
            }))
            .await
            .unwrap_err();
        assert_eq!(set.code(), Code::InvalidArgument);
        assert!(
            set.message().starts_with(&format!("{field}:")),
            "{}",
            set.message()
        );
    }
    // Without an admin credential: refused.
    let unauthenticated = app
        .admin
        .clone()
        .set_owner_limits(pb::SetOwnerLimitsRequest {
            owner: "user-1".into(),
            rate_limits: vec![per_second("a", 1)],
        })
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    assert!(tokens_of(&app, "user-1").await.is_empty());
    let owner = app
        .admin
        .clone()
        .get_owner(app.admin_request(pb::GetOwnerRequest {
            owner: "user-1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(owner.rate_limits.is_empty());
}

/// The second (since the epoch) it is now: the test and the replicas
/// share one clock.
fn second_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn a_rate_limit_holds_over_two_replicas_under_uneven_load(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, b) = pair(&db, &[]).await;
    let created = crate::replicas::try_create_with(
        a.admin.clone(),
        pb::CreateTokenRequest {
            owner: "user-1".into(),
            name: "limited".into(),
            rate_limits: vec![per_second("per-second", 50)],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let until = tokio::time::Instant::now() + Duration::from_millis(3600);
    // Three callers on one replica, one on the other, and one whose calls
    // lack a scope (refused, never counted).
    let mut handles = Vec::new();
    for (replica, scopes) in [
        (&a, vec![]),
        (&a, vec![]),
        (&a, vec![]),
        (&b, vec![]),
        (&b, vec!["repo:write".to_owned()]),
    ] {
        let mut client = replica.verifier.clone();
        let token = created.secret.clone();
        handles.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while tokio::time::Instant::now() < until {
                let sent = second_now();
                let answer = client
                    .verify(pb::VerifyRequest {
                        token: token.clone(),
                        required_scopes: scopes.clone(),
                        cost: None,
                        client: None,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                // The window the replica counted the call in: the second it
                // was sent and answered in, or either of two when the call
                // spanned a boundary.
                seen.push((answer.verdict(), sent, second_now()));
            }
            seen
        }));
    }
    // VALID answers per second: (surely in it, perhaps in it).
    let mut valid: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    let (mut limited, mut lacking) = (0, 0);
    for handle in handles {
        for (verdict, sent, answered) in handle.await.unwrap() {
            match verdict {
                pb::Verdict::Valid if sent == answered => valid.entry(sent).or_default().0 += 1,
                pb::Verdict::Valid => {
                    valid.entry(sent).or_default().1 += 1;
                    valid.entry(answered).or_default().1 += 1;
                }
                pb::Verdict::RateLimited => limited += 1,
                pb::Verdict::InsufficientScope => lacking += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    eprintln!("VALID per second over two replicas (sure, spanning a boundary): {valid:?}");
    let ended = second_now();
    // Never more than the limit in a second; in every whole second the load
    // covered, the limit (counting the calls that may belong to it).
    for (second, (sure, _)) in &valid {
        assert!(*sure <= 50, "second {second}: {sure} VALID; {valid:?}");
    }
    let full: Vec<_> = valid
        .iter()
        .filter(|(w, _)| **w > started && **w < ended)
        .collect();
    assert!(full.len() >= 2, "{valid:?}");
    for (second, (sure, perhaps)) in &full {
        assert!(
            sure + perhaps >= 50,
            "second {second}: {sure} (+{perhaps}) VALID; {valid:?}"
        );
    }
    assert!(limited > 100, "the load went over the limit: {limited}");
    assert!(lacking > 0);
}
