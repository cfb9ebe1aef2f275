//! Creation limits: a per-owner rate counted in the database (so it holds
//! across replicas) and a cap on active tokens.

use std::sync::Arc;
use std::time::Duration;

use latchkey::grpc::pb;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    the_eleventh_creation_in_a_minute_is_refused_naming_the_limit,
    deleting_tokens_does_not_refund_the_rate,
    the_active_cap_refuses_creation_restore_and_overlapping_renewal,
    the_rate_holds_across_replicas_sharing_the_database,
    limits_can_be_turned_off,
);

fn request(owner: &str) -> pb::CreateTokenRequest {
    pb::CreateTokenRequest {
        owner: owner.into(),
        name: "t".into(),
        ..Default::default()
    }
}

#[track_caller]
fn assert_exhausted<T: std::fmt::Debug>(result: Result<T, tonic::Status>, limit: &str) {
    let status = assert_code(result, Code::ResourceExhausted);
    assert!(
        status.message().contains(limit),
        "{:?} does not name {limit}",
        status.message()
    );
    let details = status.get_error_details();
    let quota = details.quota_failure().expect("QuotaFailure details");
    assert_eq!(quota.violations[0].description, limit);
}

async fn the_eleventh_creation_in_a_minute_is_refused_naming_the_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    for _ in 0..10 {
        app.create(request("alice")).await.unwrap();
        app.clock.advance(Duration::from_secs(5));
    }
    let refused = app.create(request("alice")).await;
    let status = refused.as_ref().unwrap_err().clone();
    assert_exhausted(refused, "limits.create_per_owner_per_minute");
    // The first creation leaves the window 60 s after it was made: 10 s on.
    let retry = status.get_error_details().retry_info().unwrap().retry_delay;
    assert_eq!(retry, Some(Duration::from_secs(10)));
    // Nothing was written, and other owners are not affected.
    assert_eq!(app.list_all().await.len(), 10);
    assert_eq!(app.events("", "alice").await.len(), 10);
    app.create(request("bob")).await.unwrap();

    app.clock.advance(Duration::from_secs(10));
    app.create(request("alice")).await.unwrap();
    assert_exhausted(
        app.create(request("alice")).await,
        "limits.create_per_owner_per_minute",
    );
}

async fn deleting_tokens_does_not_refund_the_rate(backend: Backend) {
    let app = spawn_app(backend).await;
    for _ in 0..10 {
        let t = app.create(request("carol")).await.unwrap().token.unwrap();
        app.delete(&t.id).await.unwrap();
    }
    assert_exhausted(
        app.create(request("carol")).await,
        "limits.create_per_owner_per_minute",
    );
    // Renewals issue new secrets and count as creations.
    app.clock.advance(Duration::from_secs(60));
    let (t, _) = app.create_token("carol", &[]).await;
    let mut id = t.id;
    for _ in 0..9 {
        id = app.renew_with_grace(&id, 0).await.0.id;
    }
    assert_exhausted(
        app.try_renew(&id).await,
        "limits.create_per_owner_per_minute",
    );
}

async fn the_active_cap_refuses_creation_restore_and_overlapping_renewal(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.limits.max_active_tokens_per_owner = 3;
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.create_token("dave", &[]).await.0.id);
    }
    assert_exhausted(
        app.create(request("dave")).await,
        "limits.max_active_tokens_per_owner",
    );
    // A renewal that kills the old secret at once keeps the count at three;
    // one with a grace period would make four live secrets, and is refused
    // like a creation.
    assert_exhausted(
        app.renew(pb::RenewTokenRequest {
            id: ids[0].clone(),
            grace_period: Some(duration(3600)),
            expiration: None,
        })
        .await,
        "limits.max_active_tokens_per_owner",
    );
    let (renewed, _) = app.renew_with_grace(&ids[0], 0).await;
    assert_eq!(
        app.get_owner("dave")
            .await
            .unwrap()
            .token_counts
            .unwrap()
            .active,
        3
    );
    assert_exhausted(
        app.create(request("dave")).await,
        "limits.max_active_tokens_per_owner",
    );
    // Revoking frees a slot; restoring it while the slot is taken again is
    // refused.
    app.revoke(&ids[1], "").await.unwrap();
    let (fourth, _) = app.create_token("dave", &[]).await;
    assert_exhausted(
        app.restore(&ids[1]).await,
        "limits.max_active_tokens_per_owner",
    );
    app.delete(&fourth.id).await.unwrap();
    app.restore(&ids[1]).await.unwrap();
    assert_ne!(renewed.id, ids[0]);
}

async fn the_rate_holds_across_replicas_sharing_the_database(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let a = spawn_app_on(db.clone(), test_settings(&db)).await;
    let b = spawn_app_on(db.clone(), test_settings(&db)).await;
    let calls: Vec<_> = (0..30)
        .map(|i| {
            let mut client = if i % 2 == 0 { &a } else { &b }.admin.clone();
            tokio::spawn(async move {
                client
                    .create_token(with_bearer(request("erin"), ADMIN_TOKEN))
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    let codes: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().map(|_| ()).map_err(tonic::Status::code))
        .collect();
    assert_eq!((ok, exhausted), (10, 20), "{codes:?}");
    assert_eq!(a.list_all().await.len(), 10);
}

async fn limits_can_be_turned_off(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.limits.create_per_owner_per_minute = 0;
        s.limits.max_active_tokens_per_owner = 0;
    })
    .await;
    for _ in 0..120 {
        app.create(request("frank")).await.unwrap();
    }
}
