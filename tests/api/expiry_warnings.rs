//! EXPIRING events at `notifications.expiry_warnings` before a token's
//! expiry, once per token and lead time however many replicas look; and
//! ListTokens' `expire_before`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use latchkey::grpc::pb;
use tonic::Streaming;

use crate::helpers::*;
use crate::on_both_databases;
use crate::watch_events::{next, watch};

on_both_databases!(
    expiry_warnings_are_given_once_per_token_and_lead_time_across_replicas,
    tokens_expiring_before_a_time_are_listed,
);

const DAY: u64 = 86_400;

fn settings(s: &mut latchkey::Settings) {
    s.changes.poll_interval = Duration::from_millis(100);
    s.notifications.check_interval = Duration::from_millis(20);
    s.limits.create_per_owner_per_minute = 0;
}

/// (token id, lead) of every EXPIRING event, with how many times each was
/// given.
type Warnings = BTreeMap<(String, String), usize>;

fn warnings<'a>(events: impl IntoIterator<Item = &'a pb::TokenEvent>) -> Warnings {
    let mut given = Warnings::new();
    for e in events {
        if e.kind() == pb::EventKind::Expiring {
            *given
                .entry((e.token_id.clone(), e.detail["lead"].clone()))
                .or_default() += 1;
        }
    }
    given
}

/// Waits until the audit trail holds exactly `expected`, then a while
/// longer (both replicas look every 20 ms) to see that nothing is given
/// twice.
async fn given_exactly(app: &TestApp, expected: &Warnings) {
    for _ in 0..200 {
        let given = warnings(&app.events("", "").await);
        if given.values().sum::<usize>() >= expected.values().sum::<usize>() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(&warnings(&app.events("", "").await), expected);
}

/// Every event a watcher receives until it has been quiet for a while.
async fn drain(stream: &mut Streaming<pb::WatchEventsResponse>) -> Vec<pb::TokenEvent> {
    let mut events = Vec::new();
    while let Ok(message) =
        tokio::time::timeout(Duration::from_millis(1500), stream.message()).await
    {
        if let Some(event) = message.expect("open").expect("not ended").event {
            events.push(event);
        }
    }
    events
}

async fn expiry_warnings_are_given_once_per_token_and_lead_time_across_replicas(backend: Backend) {
    let one = spawn_app_with(backend, settings).await;
    let mut two_settings = test_settings(&one.db);
    settings(&mut two_settings);
    let two = spawn_app_on(Arc::clone(&one.db), two_settings).await;
    two.clock.set_timestamp(one.clock.now_timestamp());
    let advance = |d: u64| {
        one.clock.advance(Duration::from_secs(d));
        two.clock.advance(Duration::from_secs(d));
    };
    let mut on_one = watch(&one, "", "").await.unwrap();
    let mut on_two = watch(&two, "", "").await.unwrap();
    next(&mut on_one).await;
    next(&mut on_two).await;

    let ten_days = one.create_with_ttl("alice", 10 * DAY as i64).await;
    let three_days = one.create_with_ttl("alice", 3 * DAY as i64).await;
    // Made to last half a day: never warned.
    one.create_with_ttl("alice", (DAY / 2) as i64).await;
    // Revoked, never expiring, of a disabled owner: never warned.
    let revoked = one.create_with_ttl("alice", 10 * DAY as i64).await;
    one.revoke(&revoked.token.unwrap().id, "gone")
        .await
        .unwrap();
    one.create_token("alice", &[]).await;
    two.create_with_ttl("gone", 10 * DAY as i64).await;
    two.disable_owner("gone", "left").await.unwrap();
    // Many at once, for both replicas to find together.
    let mut bulk = Vec::new();
    for _ in 0..30 {
        bulk.push(
            two.create_with_ttl("bulk", 10 * DAY as i64)
                .await
                .token
                .unwrap()
                .id,
        );
    }
    let ten_days = ten_days.token.unwrap();
    let three_days = three_days.token.unwrap();
    given_exactly(&one, &Warnings::new()).await;

    let mut expected = Warnings::new();
    let mut expect = |id: &str, lead: &str| {
        expected.insert((id.to_owned(), lead.to_owned()), 1);
        expected.clone()
    };
    // 2 days 1 hour on: the 3-day token expires within a day; it never had
    // a week, so it is warned only at the day.
    advance(2 * DAY + 3600);
    given_exactly(&one, &expect(&three_days.id, "1day")).await;
    // A day later: a week before the 10-day tokens' expiry.
    advance(DAY);
    expect(&ten_days.id, "7days");
    for id in &bulk {
        expect(id, "7days");
    }
    given_exactly(&two, &expect(&ten_days.id, "7days")).await;
    // Six days later: a day before.
    advance(6 * DAY);
    expect(&ten_days.id, "1day");
    for id in &bulk {
        expect(id, "1day");
    }
    let all = expect(&three_days.id, "1day");
    given_exactly(&one, &all).await;

    // What the warning says.
    let event = one
        .events(&ten_days.id, "")
        .await
        .into_iter()
        .find(|e| e.kind() == pb::EventKind::Expiring && e.detail["lead"] == "7days")
        .unwrap();
    assert_eq!(event.actor, "system");
    assert_eq!(event.owner, "alice");
    let expire_time = ten_days.expire_time.unwrap();
    let said = humantime::parse_rfc3339(&event.detail["expire_time"]).unwrap();
    assert_eq!(
        said.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        u64::try_from(expire_time.seconds).unwrap()
    );
    // A watcher on either replica got each warning once.
    for stream in [&mut on_one, &mut on_two] {
        assert_eq!(warnings(&drain(stream).await), all);
    }
}

async fn tokens_expiring_before_a_time_are_listed(backend: Backend) {
    let app = spawn_app(backend).await;
    let soon = app
        .create_with_ttl("alice", DAY as i64)
        .await
        .token
        .unwrap();
    let later = app
        .create_with_ttl("alice", 10 * DAY as i64)
        .await
        .token
        .unwrap();
    app.create_token("alice", &[]).await;
    let revoked = app
        .create_with_ttl("alice", DAY as i64)
        .await
        .token
        .unwrap();
    app.revoke(&revoked.id, "gone").await.unwrap();
    app.create_with_ttl("bob", DAY as i64).await;
    let list = |statuses: Vec<i32>, days: u64, page_size: i32, page_token: String| {
        let before = now_plus(&app.clock, Duration::from_secs(days * DAY));
        app.list(pb::ListTokensRequest {
            owner: "alice".into(),
            statuses,
            expire_before: Some(before),
            page_size,
            page_token,
        })
    };
    let ids =
        |r: pb::ListTokensResponse| -> Vec<String> { r.tokens.into_iter().map(|t| t.id).collect() };
    let active = pb::TokenStatus::Active as i32;
    assert_eq!(
        ids(list(vec![active], 2, 0, String::new()).await.unwrap()),
        [soon.id.as_str()]
    );
    assert_eq!(
        ids(list(vec![], 2, 0, String::new()).await.unwrap()),
        [revoked.id.clone(), soon.id.clone()]
    );
    assert_eq!(
        ids(list(vec![active], 11, 0, String::new()).await.unwrap()),
        [later.id.clone(), soon.id.clone()]
    );
    // Pages follow the bound they were made for.
    let first = list(vec![active], 11, 1, String::new()).await.unwrap();
    let token = first.next_page_token.clone();
    assert_eq!(
        ids(list(vec![active], 11, 1, token.clone()).await.unwrap()),
        [soon.id.as_str()]
    );
    assert_invalid(list(vec![active], 12, 1, token).await, "page_token");
    // A timestamp out of range is refused naming the field.
    let bad = pb::ListTokensRequest {
        expire_before: Some(prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        }),
        ..Default::default()
    };
    assert_invalid(app.list(bad).await, "expire_before");
}
