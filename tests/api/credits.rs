//! Usage credits: spent only by VALID answers, never over-spent, exact over
//! two replicas (and never over-spent when one is killed), on every
//! surface that verifies.

use latchkey::grpc::pb;
use tonic::Code;

use crate::ext_authz::{check, check_request, denial};
use crate::helpers::*;
use crate::introspection::{introspect, resource_server};
use crate::on_both_databases;
use crate::replicas::{Replica, pair};

on_both_databases!(
    only_valid_calls_spend_credits_and_none_overspends,
    credits_are_exact_over_two_replicas,
    a_killed_replica_never_lets_credits_be_spent_twice,
);

async fn with_credits(
    app: &TestApp,
    owner: &str,
    credits: i64,
    scopes: &[&str],
) -> (pb::Token, String) {
    let created = app
        .create(pb::CreateTokenRequest {
            owner: owner.into(),
            name: "metered".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            credits: Some(pb::Credits {
                remaining: credits,
                refill: None,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    (created.token.unwrap(), created.secret)
}

pub(crate) async fn verify_costing(
    app: &TestApp,
    secret: &str,
    scopes: &[&str],
    cost: Option<i64>,
) -> Result<pb::VerifyResponse, tonic::Status> {
    app.verifier
        .clone()
        .verify(pb::VerifyRequest {
            token: secret.to_owned(),
            required_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            client: None,
            cost,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn events_of(app: &TestApp, id: &str) -> Vec<String> {
    app.admin
        .clone()
        .list_token_events(app.admin_request(pb::ListTokenEventsRequest {
            token_id: id.to_owned(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.kind().as_str_name().to_owned())
        .collect()
}

async fn only_valid_calls_spend_credits_and_none_overspends(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (token, secret) = with_credits(&app, "user-1", 5, &["repo:read"]).await;
    assert_eq!(token.credits.unwrap().remaining, 5);

    // Refused and check-only calls spend nothing.
    let lacking = verify_costing(&app, &secret, &["repo:write"], None)
        .await
        .unwrap();
    assert_eq!(lacking.verdict(), pb::Verdict::InsufficientScope);
    assert_eq!(lacking.credits_remaining, None);
    let checked = verify_costing(&app, &secret, &[], Some(0)).await.unwrap();
    assert_eq!(checked.verdict(), pb::Verdict::Valid);
    assert_eq!(checked.credits_remaining, None);
    // Each VALID call spends its cost.
    let mut left = Vec::new();
    for cost in [None, Some(2), None] {
        let answer = verify_costing(&app, &secret, &["repo:read"], cost)
            .await
            .unwrap();
        assert_eq!(answer.verdict(), pb::Verdict::Valid);
        assert!(
            answer.token.unwrap().credits.is_none(),
            "the reply's token leaves credits out"
        );
        left.push(answer.credits_remaining.unwrap());
    }
    assert_eq!(left, [4, 2, 1]);
    // More than is left: refused, and nothing spent.
    let over = verify_costing(&app, &secret, &[], Some(2)).await.unwrap();
    assert_eq!(
        (over.verdict(), over.credits_remaining),
        (pb::Verdict::UsageExceeded, Some(1))
    );
    let last = verify_costing(&app, &secret, &[], None).await.unwrap();
    assert_eq!(
        (last.verdict(), last.credits_remaining),
        (pb::Verdict::Valid, Some(0))
    );
    let spent = verify_costing(&app, &secret, &[], None).await.unwrap();
    assert_eq!(spent.verdict(), pb::Verdict::UsageExceeded);
    // Checking still works; the token is otherwise fine.
    let checked = verify_costing(&app, &secret, &[], Some(0)).await.unwrap();
    assert_eq!(checked.verdict(), pb::Verdict::Valid);
    let exhausted = events_of(&app, &token.id).await;
    assert_eq!(
        exhausted
            .iter()
            .filter(|k| *k == "EVENT_KIND_CREDITS_EXHAUSTED")
            .count(),
        1,
        "{exhausted:?}"
    );
    let got = app
        .admin
        .clone()
        .get_token(app.admin_request(pb::GetTokenRequest {
            id: token.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.credits.unwrap().remaining, 0);

    // Envoy's Check and introspection spend one each, and refuse at zero.
    let (_, two) = with_credits(&app, "user-2", 2, &[]).await;
    let bearer = format!("Bearer {two}");
    let allowed = check(&app, check_request(Some(&bearer), None))
        .await
        .unwrap();
    assert_eq!(allowed.status.unwrap().code, 0);
    let caller = resource_server(&app).await;
    let active = introspect(&app, &caller, &two).await;
    assert!(active.body.contains(r#""active":true"#), "{}", active.body);
    let denied = check(&app, check_request(Some(&bearer), None))
        .await
        .unwrap();
    let (status, _, body) = denial(&denied);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "usage_exceeded");
    let inactive = introspect(&app, &caller, &two).await;
    assert_eq!(inactive.body, r#"{"active":false}"#);

    // Hostile costs and credits, each named.
    for cost in [-1, 1_000_000_001] {
        let status = verify_costing(&app, &secret, &[], Some(cost))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("cost"), "{}", status.message());
    }
    for credits in [-1, 1_000_000_000_000_001] {
        let status = app
            .create(pb::CreateTokenRequest {
                owner: "user-3".into(),
                credits: Some(pb::Credits {
                    remaining: credits,
                    refill: None,
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{credits}");
        assert!(
            status.message().starts_with("credits.remaining"),
            "{}",
            status.message()
        );
    }

    // A renewal moves what is left to the new token.
    let (old, old_secret) = with_credits(&app, "user-4", 10, &[]).await;
    for _ in 0..3 {
        verify_costing(&app, &old_secret, &[], None).await.unwrap();
    }
    let renewed = app
        .admin
        .clone()
        .renew_token(app.admin_request(pb::RenewTokenRequest {
            id: old.id.clone(),
            grace_period: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let moved = renewed.token.unwrap().credits.unwrap().remaining;
    assert!((6..=7).contains(&moved), "{moved}");
    // The old secret, still in its grace period, spends only what this
    // replica had already taken.
    let mut old_valid = 0;
    for _ in 0..5 {
        if verify_costing(&app, &old_secret, &[], None)
            .await
            .unwrap()
            .verdict()
            == pb::Verdict::Valid
        {
            old_valid += 1;
        }
    }
    let mut new_valid = 0;
    for _ in 0..10 {
        if verify_costing(&app, &renewed.secret, &[], None)
            .await
            .unwrap()
            .verdict()
            == pb::Verdict::Valid
        {
            new_valid += 1;
        }
    }
    assert_eq!(
        3 + old_valid + new_valid,
        10,
        "old {old_valid}, new {new_valid}"
    );
}

/// A token of `owner` with `credits`, created through `replica`.
async fn metered(replica: &Replica, owner: &str, credits: i64) -> pb::CreateTokenResponse {
    crate::replicas::try_create_with(
        replica.admin.clone(),
        pb::CreateTokenRequest {
            owner: owner.into(),
            name: "metered".into(),
            credits: Some(pb::Credits {
                remaining: credits,
                refill: None,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Tallies the verdicts (VALID, USAGE_EXCEEDED) of `calls` Verify calls on
/// `secret`, all at once, alternating over `replicas`.
async fn spread(replicas: &[&Replica], secret: &str, calls: usize) -> (usize, usize) {
    let mut handles = Vec::new();
    for i in 0..calls {
        let replica = replicas[i % replicas.len()];
        let mut client = replica.verifier.clone();
        let secret = secret.to_owned();
        handles.push(tokio::spawn(async move {
            client
                .verify(pb::VerifyRequest {
                    token: secret,
                    required_scopes: vec![],
                    cost: None,
                    client: None,
                })
                .await
                .map(|r| r.into_inner().verdict())
        }));
    }
    let (mut valid, mut exceeded) = (0, 0);
    for handle in handles {
        match handle.await.unwrap() {
            Ok(pb::Verdict::Valid) => valid += 1,
            Ok(pb::Verdict::UsageExceeded) => exceeded += 1,
            other => panic!("{other:?}"),
        }
    }
    (valid, exceeded)
}

async fn credits_are_exact_over_two_replicas(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, b) = pair(&db, &[]).await;
    let created = metered(&a, "user-1", 100).await;
    // Rounds of concurrent calls over both, as a load balancer spreads them.
    let mut valid = 0;
    for _ in 0..3 {
        let (v, _) = spread(&[&a, &b], &created.secret, 100).await;
        valid += v;
    }
    assert_eq!(valid, 100, "VALID answers out of 300 calls for 100 credits");
}

async fn a_killed_replica_never_lets_credits_be_spent_twice(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, b) = pair(&db, &[]).await;
    let created = metered(&a, "user-1", 100).await;
    let (first, _) = spread(&[&a, &b], &created.secret, 100).await;
    // Killed with a block of credits in hand: those are lost, never spent.
    a.kill().await;
    let (rest, _) = spread(&[&b], &created.secret, 200).await;
    assert!(
        first + rest <= 100,
        "{first} + {rest} VALID for 100 credits"
    );
    assert!(
        first + rest >= 90,
        "{first} + {rest}: more lost than one block"
    );
    // A replica stopped gracefully gives back what it held.
    let (c, d) = pair(&db, &[]).await;
    let more = metered(&c, "user-2", 1000).await;
    let (spent, _) = spread(&[&c], &more.secret, 10).await;
    assert_eq!(spent, 10);
    c.stop().await;
    let (after, _) = spread(&[&d], &more.secret, 1000).await;
    assert_eq!(
        spent + after,
        1000,
        "a graceful stop gave back what it held"
    );
}
