//! WatchEvents: every replica's audit events as they commit, from a cursor
//! a watcher resumes at without losing or repeating an event.

use std::collections::HashSet;
use std::time::Duration;

use latchkey::grpc::pb;
use tonic::{Code, Streaming};

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    a_watcher_that_disconnects_resumes_without_losing_or_repeating_an_event,
    a_watcher_sees_the_events_of_every_replica_and_only_its_owner,
    watch_requests_are_checked,
    a_watch_ends_when_its_credential_is_revoked,
);

/// Test settings with a fast change-log poll, so that watchers on SQLite
/// (no notifications) are prompted quickly.
fn fast(s: &mut latchkey::Settings) {
    s.changes.poll_interval = Duration::from_millis(100);
}

pub async fn watch(
    app: &TestApp,
    after: &str,
    owner: &str,
) -> Result<Streaming<pb::WatchEventsResponse>, tonic::Status> {
    app.admin
        .clone()
        .watch_events(app.admin_request(pb::WatchEventsRequest {
            after: after.to_owned(),
            owner: owner.to_owned(),
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// The next message, within 10 s.
pub async fn next(stream: &mut Streaming<pb::WatchEventsResponse>) -> pb::WatchEventsResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message within 10 s")
        .expect("the stream is open")
        .expect("the stream has not ended")
}

/// The next `n` events (skipping cursor-only messages), each with its cursor.
pub async fn next_events(
    stream: &mut Streaming<pb::WatchEventsResponse>,
    n: usize,
) -> Vec<(pb::TokenEvent, String)> {
    let mut events = Vec::new();
    while events.len() < n {
        let message = next(stream).await;
        if let Some(event) = message.event {
            events.push((event, message.cursor));
        }
    }
    events
}

/// Nothing but cursor-only messages arrive for a while.
async fn quiet(stream: &mut Streaming<pb::WatchEventsResponse>) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(message) = tokio::time::timeout_at(deadline, stream.message()).await {
        let message = message.expect("open").expect("not ended");
        assert!(message.event.is_none(), "unexpected {:?}", message.event);
    }
}

fn ids(events: &[(pb::TokenEvent, String)]) -> Vec<String> {
    events.iter().map(|(e, _)| e.id.clone()).collect()
}

/// `got` holds each of `expected` exactly once (writes made at once may be
/// numbered in any order).
fn assert_once(got: &[String], expected: &[String]) {
    let distinct: HashSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), got.len(), "an event came twice: {got:?}");
    assert_eq!(distinct, expected.iter().collect::<HashSet<_>>());
}

/// Every event of `owner` in the order the log numbered them (the order a
/// watcher that saw no gaps receives them).
async fn oldest_first(app: &TestApp, owner: &str) -> Vec<String> {
    let mut all: Vec<String> = app
        .events("", owner)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    all.reverse();
    all
}

async fn a_watcher_that_disconnects_resumes_without_losing_or_repeating_an_event(backend: Backend) {
    let app = spawn_app_with(backend, fast).await;
    let mut stream = watch(&app, "", "").await.unwrap();
    let first = next(&mut stream).await;
    assert!(first.event.is_none(), "the stream opens with its cursor");
    assert!(!first.cursor.is_empty());

    let (a, _) = app.create_token("alice", &[]).await;
    let (b, _) = app.create_token("alice", &[]).await;
    app.revoke(&a.id, "gone").await.unwrap();
    let seen = next_events(&mut stream, 3).await;
    let kinds: Vec<_> = seen
        .iter()
        .map(|(e, _)| (e.kind(), e.token_id.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            (pb::EventKind::Created, a.id.clone()),
            (pb::EventKind::Created, b.id.clone()),
            (pb::EventKind::Revoked, a.id.clone()),
        ]
    );
    // The watcher goes away after the first event: it resumes from there.
    let resume_at = seen[0].1.clone();
    drop(stream);
    // Changes while it is away, some at once from several tasks (of other
    // owners, which do not wait for one another).
    let writes: Vec<_> = (0..8)
        .map(|i| {
            let app_admin = app.admin.clone();
            tokio::spawn(async move {
                let mut admin = app_admin;
                admin
                    .create_token(with_bearer(
                        pb::CreateTokenRequest {
                            owner: format!("burst-{i}"),
                            name: "burst".into(),
                            ..Default::default()
                        },
                        ADMIN_TOKEN,
                    ))
                    .await
                    .unwrap();
            })
        })
        .collect();
    for w in writes {
        w.await.unwrap();
    }
    app.delete(&b.id).await.unwrap();

    let mut resumed = watch(&app, &resume_at, "").await.unwrap();
    let opening = next(&mut resumed).await;
    assert_eq!(
        (opening.event, opening.cursor.as_str()),
        (None, resume_at.as_str()),
        "a resumed stream opens where it was resumed"
    );
    // Everything after the first event, once: 2 from before, 8 + 1 since.
    let again = next_events(&mut resumed, 11).await;
    assert_eq!(ids(&again)[..2], ids(&seen[1..]));
    assert_once(&ids(&again), &oldest_first(&app, "").await[1..]);
    quiet(&mut resumed).await;

    // While watching, more writes at once; a second watcher resumes from
    // the middle and both end with every event exactly once.
    let middle = again[5].1.clone();
    let burst: Vec<_> = (0..12)
        .map(|i| {
            let admin = app.admin.clone();
            tokio::spawn(async move {
                let mut admin = admin;
                admin
                    .create_token(with_bearer(
                        pb::CreateTokenRequest {
                            owner: format!("second-burst-{i}"),
                            name: "second burst".into(),
                            ..Default::default()
                        },
                        ADMIN_TOKEN,
                    ))
                    .await
                    .unwrap();
            })
        })
        .collect();
    for w in burst {
        w.await.unwrap();
    }
    let live = next_events(&mut resumed, 12).await;
    let all = oldest_first(&app, "").await;
    assert_once(&ids(&live), &all[all.len() - 12..]);
    let mut from_middle = watch(&app, &middle, "").await.unwrap();
    let replayed = next_events(&mut from_middle, 5 + 12).await;
    let after_middle: Vec<String> = ids(&again[6..]).into_iter().chain(ids(&live)).collect();
    assert_once(&ids(&replayed), &after_middle);
    quiet(&mut resumed).await;
    quiet(&mut from_middle).await;

    // Resuming from the same cursor twice replays the same events.
    let mut twice = watch(&app, &middle, "").await.unwrap();
    assert_eq!(ids(&next_events(&mut twice, 17).await), ids(&replayed));

    // The server stopping ends the stream UNAVAILABLE.
    let mut app = app;
    app.signal_stop();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), twice.message())
            .await
            .expect("the stream ends within 10 s")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("last cursor"), "{ended:?}");
}

async fn a_watcher_sees_the_events_of_every_replica_and_only_its_owner(backend: Backend) {
    let one = spawn_app_with(backend, fast).await;
    let mut settings = test_settings(&one.db);
    fast(&mut settings);
    let two = spawn_app_on(std::sync::Arc::clone(&one.db), settings).await;
    let mut everyone = watch(&one, "", "").await.unwrap();
    let mut bobs = watch(&one, "", "bob").await.unwrap();
    next(&mut everyone).await;
    next(&mut bobs).await;

    let (a, _) = two.create_token("alice", &[]).await;
    let (b, _) = two.create_token("bob", &[]).await;
    two.revoke(&b.id, "left").await.unwrap();
    one.disable_owner("bob", "left").await.unwrap();

    let all = next_events(&mut everyone, 4).await;
    let seen: Vec<_> = all
        .iter()
        .map(|(e, _)| (e.kind(), e.owner.clone(), e.token_id.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (pb::EventKind::Created, "alice".into(), a.id.clone()),
            (pb::EventKind::Created, "bob".into(), b.id.clone()),
            (pb::EventKind::Revoked, "bob".into(), b.id.clone()),
            (pb::EventKind::OwnerDisabled, "bob".into(), String::new()),
        ]
    );
    let only_bob = next_events(&mut bobs, 3).await;
    assert!(only_bob.iter().all(|(e, _)| e.owner == "bob"));
    assert_eq!(ids(&only_bob), ids(&all[1..]));
    quiet(&mut bobs).await;
    // A cursor from one replica resumes on the other.
    let mut on_two = watch(&two, &all[0].1, "").await.unwrap();
    assert_eq!(ids(&next_events(&mut on_two, 3).await), ids(&all[1..]));
}

mod an_event_that_commits_late_is_delivered_once_to_live_and_resumed_watchers {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if crate::helpers::postgres_available() {
            super::an_event_that_commits_late_is_delivered_once_to_live_and_resumed_watchers()
                .await;
        }
    }
}

/// PostgreSQL numbers an event when it is written, not when it commits: a
/// transaction that stays open lets later numbers through first. Its event
/// is still delivered when it commits, once, to a watcher that saw the
/// later ones and to one resumed from a cursor taken meanwhile.
async fn an_event_that_commits_late_is_delivered_once_to_live_and_resumed_watchers() {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let app = spawn_app_with(Backend::Postgres, fast).await;
    let mut live = watch(&app, "", "").await.unwrap();
    next(&mut live).await;
    let conn = Database::connect(&app.db.url).await.unwrap();
    let slow = conn.begin().await.unwrap();
    let late_id = uuid::Uuid::now_v7();
    slow.execute_unprepared(&format!(
        "INSERT INTO token_events (id, time, kind, token_id, owner, actor, detail) \
         VALUES ('{late_id}', 0, 'OWNER_ENABLED', NULL, 'slow', 'admin', '{{}}'); \
         INSERT INTO event_log (event_id, owner) VALUES ('{late_id}', 'slow')"
    ))
    .await
    .unwrap();
    let (a, _) = app.create_token("alice", &[]).await;
    let first = next_events(&mut live, 1).await;
    assert_eq!(first[0].0.token_id, a.id);
    let mut resumed = watch(&app, &first[0].1, "").await.unwrap();
    next(&mut resumed).await;
    quiet(&mut live).await;
    slow.commit().await.unwrap();
    // Nothing wakes the replicas for it but their poll.
    for stream in [&mut live, &mut resumed] {
        let late = next_events(stream, 1).await;
        assert_eq!(late[0].0.id, late_id.to_string());
        quiet(stream).await;
    }
    conn.close().await.ok();
}

async fn a_watch_ends_when_its_credential_is_revoked(backend: Backend) {
    let app = spawn_app_with(backend, fast).await;
    let (admin, secret) = app.create_token("ops", &["latchkey:admin"]).await;
    let mut stream = app
        .admin
        .clone()
        .watch_events(with_bearer(pb::WatchEventsRequest::default(), &secret))
        .await
        .unwrap()
        .into_inner();
    next(&mut stream).await;
    app.revoke(&admin.id, "rotated").await.unwrap();
    // Checked again every 15 s, events or not.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the stream ends within 30 s")
        {
            Ok(Some(message)) => assert!(message.event.is_some() || !message.cursor.is_empty()),
            Ok(None) => panic!("the stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
}

async fn watch_requests_are_checked(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_token("alice", &[]).await;
    let mut stream = watch(&app, "", "").await.unwrap();
    let end = next(&mut stream).await.cursor;

    for (after, owner, field) in [
        ("garbage", "", "after"),
        ("-1", "", "after"),
        ("5.7-1", "", "after"),
        ("1\u{7}", "", "after"),
        ("999999", "", "after"),
        ("", "bad\u{1b}[31mowner", "owner"),
        ("", &"o".repeat(1000), "owner"),
    ] {
        assert_invalid(watch(&app, after, owner).await, field);
    }
    // Oversized.
    assert_code(
        watch(&app, &"1".repeat(70 * 1024), "").await,
        Code::ResourceExhausted,
    );
    // Unauthenticated, and a token without latchkey:admin.
    let bare = pb::WatchEventsRequest::default();
    assert_code(
        app.admin.clone().watch_events(bare.clone()).await,
        Code::Unauthenticated,
    );
    let (_, plain) = app.create_token("alice", &["read"]).await;
    assert_code(
        app.admin
            .clone()
            .watch_events(with_bearer(bare, &plain))
            .await,
        Code::PermissionDenied,
    );
    // The log's end is a valid cursor; watching from it writes nothing.
    let before = app.events("", "").await.len();
    let mut again = watch(&app, &end, "").await.unwrap();
    assert_eq!(next(&mut again).await.cursor, end);
    assert_eq!(app.events("", "").await.len(), before);
}
