//! Bulk loading (what the benchmark seeder uses): tokens created in batched
//! transactions behave exactly like tokens made by CreateToken.

use latchkey::auth::Actor;
use latchkey::grpc::pb::{self, Verdict};
use latchkey::lifecycle::{Expiry, Lifecycle, NewToken};
use latchkey::setup::offline_lifecycle;
use latchkey::store::{BULK_CHUNK, Store};

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    bulk_created_tokens_verify_list_and_have_their_events,
    a_bulk_load_with_a_bad_token_writes_nothing,
);

/// A second connection to the app's database, and a lifecycle over it
/// configured like the app.
async fn loader(app: &TestApp) -> Lifecycle {
    let store = Store::connect(
        &app.settings.database_url,
        app.settings.database_max_connections,
    )
    .await
    .unwrap();
    offline_lifecycle(store, &app.settings).await.unwrap()
}

fn new_token(owner: &str, i: usize) -> NewToken {
    NewToken {
        owner: owner.into(),
        name: format!("seeded {i}"),
        description: String::new(),
        scopes: vec!["read".into()],
        metadata: Default::default(),
        expiry: Expiry::Never,
        idle_timeout: None,
        credits: None,
        rate_limits: Vec::new(),
    }
}

async fn bulk_created_tokens_verify_list_and_have_their_events(backend: Backend) {
    let app = spawn_app(backend).await;
    // More than one INSERT statement's worth, over the default per-owner cap
    // (bulk loads are not subject to creation limits).
    let count = BULK_CHUNK + 7;
    let batch = (0..count).map(|i| new_token("bulk", i)).collect();
    let created = loader(&app)
        .await
        .bulk_create(batch, Actor::System)
        .await
        .unwrap();
    assert_eq!(created.len(), count);

    for (record, secret) in [&created[0], &created[count - 1]] {
        let v = app.verify(secret.expose(), &["read"]).await;
        assert_eq!(v.verdict(), Verdict::Valid);
        assert_eq!(v.token.unwrap().id, record.id.to_string());
        assert_eq!(
            app.event_kinds(&record.id.to_string()).await,
            vec![pb::EventKind::Created]
        );
    }
    let listed = app.list_all().await;
    assert_eq!(listed.iter().filter(|t| t.owner == "bulk").count(), count);
}

async fn a_bulk_load_with_a_bad_token_writes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let loader = loader(&app).await;
    let before = app.database_dump().await;
    let mut batch: Vec<NewToken> = (0..3).map(|i| new_token("bulk", i)).collect();
    batch[2].scopes = vec!["not a scope".into()];
    let err = loader.bulk_create(batch, Actor::System).await.unwrap_err();
    assert!(err.to_string().contains("scopes[0]"), "{err}");
    assert_eq!(app.database_dump().await, before);
}
