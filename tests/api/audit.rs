//! The audit trail: an event for every change and for nothing else, written
//! atomically with the change; ListTokenEvents pages through it.

use latchkey::grpc::pb::{self, EventKind, Verdict};
use tonic::Code;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    every_change_writes_one_event_with_actor_and_detail,
    reads_refusals_and_no_op_changes_write_no_event,
    a_change_whose_transaction_fails_leaves_neither_change_nor_event,
    events_page_by_token_and_by_owner_newest_first,
);

async fn every_change_writes_one_event_with_actor_and_detail(backend: Backend) {
    let app = spawn_app(backend).await;
    let (admin_token, admin_secret) = app.create_token("ops", &["latchkey:admin"]).await;
    // A change made with an admin token is attributed to that token.
    let created = app
        .admin
        .clone()
        .create_token(with_bearer(
            pb::CreateTokenRequest {
                owner: "alice".into(),
                name: "laptop".into(),
                scopes: vec!["repo:read".into()],
                ..Default::default()
            },
            &admin_secret,
        ))
        .await
        .unwrap()
        .into_inner();
    let token = created.token.unwrap();
    let mut renamed = token.clone();
    renamed.name = "work laptop".into();
    app.update(renamed, &["name"]).await.unwrap();
    app.revoke(&token.id, "left on a train").await.unwrap();
    app.restore(&token.id).await.unwrap();
    let (next, _) = app.renew_with_grace(&token.id, 3600).await;
    app.delete(&next.id).await.unwrap();
    app.disable_owner("alice", "offboarding").await.unwrap();
    app.enable_owner("alice").await.unwrap();

    let events = app.events(&token.id, "").await;
    let kinds: Vec<_> = events.iter().rev().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Created,
            EventKind::Updated,
            EventKind::Revoked,
            EventKind::Restored,
            EventKind::Renewed,
        ]
    );
    let [renewed, restored, revoked, updated, first] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(first.actor, admin_token.id);
    assert_eq!(first.owner, "alice");
    assert_eq!(first.detail["name"], "laptop");
    assert_eq!(first.detail["scopes"], "repo:read");
    assert_eq!(updated.actor, "admin");
    assert_eq!(updated.detail["fields"], "name");
    assert_eq!(revoked.detail["reason"], "left on a train");
    assert_eq!(restored.detail["from"], "REVOKED");
    assert_eq!(renewed.detail["replaced_by"], next.id);
    assert!(renewed.detail.contains_key("old_secret_valid_until"));
    assert!(events.iter().all(|e| e.time.is_some() && !e.id.is_empty()));

    assert_eq!(
        app.event_kinds(&next.id).await,
        [EventKind::Created, EventKind::Deleted]
    );
    let owner_events: Vec<_> = app
        .events("", "alice")
        .await
        .into_iter()
        .filter(|e| e.token_id.is_empty())
        .collect();
    assert_eq!(owner_events.len(), 2);
    assert_eq!(owner_events[0].kind(), EventKind::OwnerEnabled);
    assert_eq!(owner_events[1].kind(), EventKind::OwnerDisabled);
    assert_eq!(owner_events[1].detail["reason"], "offboarding");
    // Never a secret.
    assert!(!format!("{:?}", app.events("", "").await).contains(&created.secret));
}

async fn reads_refusals_and_no_op_changes_write_no_event(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("bob", &[]).await;
    let (revoked, _) = app.create_token("bob", &[]).await;
    app.revoke(&revoked.id, "").await.unwrap();
    app.disable_owner("carol", "").await.unwrap();
    let before = app.events("", "").await;

    // Reads and Verify (and the last-use write it causes).
    app.get(&token.id).await.unwrap();
    app.list_all().await;
    app.get_owner("bob").await.unwrap();
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
    app.wait_for_last_used(&token.id, None).await;
    // Changes that change nothing.
    app.revoke(&revoked.id, "again").await.unwrap();
    app.restore(&token.id).await.unwrap();
    app.disable_owner("carol", "again").await.unwrap();
    app.enable_owner("bob").await.unwrap();
    assert_eq!(app.delete_owner_tokens("nobody").await.unwrap(), 0);
    // Refusals.
    let absent = uuid::Uuid::now_v7().to_string();
    assert_code(app.delete(&absent).await, Code::NotFound);
    assert_code(app.revoke(&absent, "").await, Code::NotFound);
    assert_invalid(app.create(pb::CreateTokenRequest::default()).await, "owner");
    assert_code(
        app.create(pb::CreateTokenRequest {
            owner: "carol".into(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
    );
    let mut bad = token.clone();
    bad.name = "n".repeat(129);
    assert_invalid(app.update(bad, &["name"]).await, "token.name");

    assert_eq!(app.events("", "").await, before);
}

/// Makes every write of an audit event fail: on SQLite as the event is
/// inserted (after the change it records was written in the same
/// transaction); on PostgreSQL at commit, after both were written.
async fn break_event_writes(app: &TestApp) {
    match app.db.backend {
        Backend::Sqlite => {
            app.execute_sql(
                "CREATE TRIGGER fail_events BEFORE INSERT ON token_events \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
            )
            .await;
        }
        Backend::Postgres => {
            app.execute_sql(
                "CREATE FUNCTION fail_events() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
            )
            .await;
            app.execute_sql(
                "CREATE CONSTRAINT TRIGGER fail_events AFTER INSERT ON token_events \
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_events()",
            )
            .await;
        }
    }
}

async fn repair_event_writes(app: &TestApp) {
    app.execute_sql(match app.db.backend {
        Backend::Sqlite => "DROP TRIGGER fail_events",
        Backend::Postgres => "DROP TRIGGER fail_events ON token_events",
    })
    .await;
}

async fn a_change_whose_transaction_fails_leaves_neither_change_nor_event(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("dave", &[]).await;
    let (revoked, revoked_secret) = app.create_token("dave", &[]).await;
    app.revoke(&revoked.id, "").await.unwrap();
    let tokens_before = app.list_all().await;
    let events_before = app.events("", "").await;

    break_event_writes(&app).await;
    let internal = |r: Result<(), tonic::Status>| {
        let s = assert_code(r, Code::Internal);
        assert_eq!(s.message(), "internal error");
    };
    internal(
        app.create(pb::CreateTokenRequest {
            owner: "dave".into(),
            ..Default::default()
        })
        .await
        .map(drop),
    );
    let mut renamed = token.clone();
    renamed.name = "renamed".into();
    internal(app.update(renamed, &["name"]).await.map(drop));
    internal(app.revoke(&token.id, "").await.map(drop));
    internal(app.restore(&revoked.id).await.map(drop));
    internal(app.try_renew(&token.id).await.map(drop));
    internal(app.delete(&token.id).await);
    internal(app.disable_owner("dave", "").await.map(drop));
    internal(app.delete_owner_tokens("dave").await.map(drop));
    repair_event_writes(&app).await;

    assert_eq!(app.list_all().await, tokens_before);
    assert_eq!(app.events("", "").await, events_before);
    assert!(!app.get_owner("dave").await.unwrap().disabled);
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
    assert_eq!(
        app.verify(&revoked_secret, &[]).await.verdict(),
        Verdict::Revoked
    );
}

async fn events_page_by_token_and_by_owner_newest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let (a, _) = app.create_token("erin", &[]).await;
    for i in 0..4 {
        app.clock.advance(std::time::Duration::from_millis(1));
        app.revoke(&a.id, &format!("r{i}")).await.unwrap();
        app.restore(&a.id).await.unwrap();
    }
    app.create_token("frank", &[]).await;

    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .list_events(pb::ListTokenEventsRequest {
                token_id: a.id.clone(),
                page_size: 3,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.events.len() <= 3);
        seen.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), 9);
    assert_eq!(seen.last().unwrap().kind(), EventKind::Created);
    assert_eq!(seen[0].kind(), EventKind::Restored);
    let times: Vec<_> = seen
        .iter()
        .map(|e| {
            let t = e.time.unwrap();
            (t.seconds, t.nanos)
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "not newest first");

    assert_eq!(app.events("", "erin").await.len(), 9);
    assert_eq!(app.events("", "").await.len(), 10);
    assert!(app.events(&a.id, "frank").await.is_empty());

    // A page token belongs to its query.
    let first = app
        .list_events(pb::ListTokenEventsRequest {
            owner: "erin".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_invalid(
        app.list_events(pb::ListTokenEventsRequest {
            owner: "frank".into(),
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await,
        "page_token",
    );
    assert_invalid(
        app.list_events(pb::ListTokenEventsRequest {
            token_id: "42".into(),
            ..Default::default()
        })
        .await,
        "token_id",
    );
    assert_invalid(
        app.list_events(pb::ListTokenEventsRequest {
            page_size: 1001,
            ..Default::default()
        })
        .await,
        "page_size",
    );
}
