//! ListTokens: newest first, filters, and cursor pages that stay correct
//! while tokens are added.

use std::collections::HashSet;
use std::time::Duration;

use latchkey::grpc::pb::{self, TokenStatus};

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    tokens_are_listed_newest_first_and_filtered_by_owner,
    tokens_are_filtered_by_status,
    pages_default_to_fifty_and_end_with_an_empty_token,
    pages_stay_correct_while_tokens_are_added,
);

async fn tokens_are_listed_newest_first_and_filtered_by_owner(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = Vec::new();
    for i in 0..3 {
        alice.push(app.create_token("alice", &[]).await.0.id);
        app.create_token(&format!("bob-{i}"), &[]).await;
        app.clock.advance(Duration::from_secs(1));
    }
    let page = app
        .list(pb::ListTokensRequest {
            owner: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = page.tokens.iter().map(|t| t.id.clone()).collect();
    alice.reverse();
    assert_eq!(ids, alice);
    assert!(page.next_page_token.is_empty());
    assert_eq!(app.list_all().await.len(), 6);
}

async fn tokens_are_filtered_by_status(backend: Backend) {
    let app = spawn_app(backend).await;
    let (active, _) = app.create_token("u", &[]).await;
    let (revoked, _) = app.create_token("u", &[]).await;
    app.revoke(&revoked.id, "").await.unwrap();
    let expiring = app.create_with_ttl("u", 60).await.token.unwrap();
    app.clock.advance(Duration::from_secs(60));

    let ids = |statuses: &[TokenStatus]| {
        let app = &app;
        let statuses: Vec<i32> = statuses.iter().map(|s| *s as i32).collect();
        async move {
            let page = app
                .list(pb::ListTokensRequest {
                    owner: "u".into(),
                    statuses,
                    ..Default::default()
                })
                .await
                .unwrap();
            page.tokens
                .into_iter()
                .map(|t| t.id)
                .collect::<HashSet<_>>()
        }
    };
    let set = |v: &[&pb::Token]| v.iter().map(|t| t.id.clone()).collect::<HashSet<_>>();
    assert_eq!(ids(&[TokenStatus::Active]).await, set(&[&active]));
    assert_eq!(ids(&[TokenStatus::Revoked]).await, set(&[&revoked]));
    assert_eq!(ids(&[TokenStatus::Expired]).await, set(&[&expiring]));
    assert_eq!(
        ids(&[TokenStatus::Active, TokenStatus::Expired]).await,
        set(&[&active, &expiring])
    );
    assert_eq!(ids(&[]).await.len(), 3);
}

async fn pages_default_to_fifty_and_end_with_an_empty_token(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 0..51 {
        app.create_token(&format!("u{i}"), &[]).await;
    }
    let first = app.list(pb::ListTokensRequest::default()).await.unwrap();
    assert_eq!(first.tokens.len(), 50);
    assert!(!first.next_page_token.is_empty());
    let second = app
        .list(pb::ListTokensRequest {
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(second.tokens.len(), 1);
    assert!(second.next_page_token.is_empty());
}

async fn pages_stay_correct_while_tokens_are_added(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.limits.create_per_owner_per_minute = 0).await;
    let mut before = HashSet::new();
    for _ in 0..7 {
        before.insert(app.create_token("u", &[]).await.0.id);
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .list(pb::ListTokensRequest {
                owner: "u".into(),
                page_size: 3,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.tokens.iter().map(|t| t.id.clone()));
        // Newer tokens arrive between pages, some within the same clock tick.
        app.create_token("u", &[]).await;
        app.clock.advance(Duration::from_millis(1));
        app.create_token("u", &[]).await;
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), 7, "a token was repeated or skipped: {seen:?}");
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), before);
}
