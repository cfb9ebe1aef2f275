//! What outlives the process, and what never leaves it: tokens survive a
//! restart; secrets appear in no database row, log line, Debug print or error.

use latchkey::grpc::pb::{self, Verdict};
use prost::Message as _;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    tokens_survive_a_restart,
    a_database_on_the_first_schema_upgrades_with_its_tokens,
    the_secret_appears_nowhere_but_the_create_response,
);

async fn tokens_survive_a_restart(backend: Backend) {
    let app = spawn_app(backend).await;
    let (kept, kept_secret) = app.create_token("u", &["a:*"]).await;
    let (revoked, revoked_secret) = app.create_token("u", &[]).await;
    app.revoke(&revoked.id, "gone").await.unwrap();
    let before = app.list_all().await;

    let app = app.restart().await;
    assert_eq!(app.list_all().await, before);
    assert_eq!(app.get(&kept.id).await.unwrap().name, kept.name);
    assert_eq!(
        app.verify(&kept_secret, &["a:b"]).await.verdict(),
        Verdict::Valid
    );
    assert_eq!(
        app.verify(&revoked_secret, &[]).await.verdict(),
        Verdict::Revoked
    );
}

async fn a_database_on_the_first_schema_upgrades_with_its_tokens(backend: Backend) {
    use migrations::{Migrator, MigratorTrait as _};

    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("u", &["a:b"]).await;
    let (db, settings) = app.stop().await;
    // Take the schema back to the first migration, tokens and all, as a
    // database written by the first release would be.
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    Migrator::down(&conn, Some(1)).await.unwrap();
    assert_eq!(
        Migrator::get_pending_migrations(&conn).await.unwrap().len(),
        1
    );
    conn.close().await.unwrap();

    let app = spawn_app_on(db, settings).await;
    assert_eq!(
        app.verify(&secret, &["a:b"]).await.verdict(),
        Verdict::Valid
    );
    let (renewed, renewed_secret) = app.renew_with_grace(&token.id, 0).await;
    assert_eq!(renewed.replaces, token.id);
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Revoked);
    app.disable_owner("u", "").await.unwrap();
    assert_eq!(
        app.verify(&renewed_secret, &[]).await.verdict(),
        Verdict::OwnerDisabled
    );
}

async fn the_secret_appears_nowhere_but_the_create_response(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .create(pb::CreateTokenRequest {
            owner: "u".into(),
            name: "n".into(),
            scopes: vec!["latchkey:admin".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let secret = created.secret.clone();
    let token = created.token.clone().unwrap();
    // Use it every way there is: verify (hit and miss), admin calls with it,
    // rejected calls, revoke, restore.
    app.verify(&secret, &["x"]).await;
    app.verify(&secret, &[]).await;
    let list = pb::ListTokensRequest::default();
    app.admin
        .clone()
        .list_tokens(with_bearer(list, &secret))
        .await
        .unwrap();
    let bad_scope = app.try_verify(&secret, &["bad scope"]).await.unwrap_err();
    app.revoke(&token.id, "test").await.unwrap();
    let list = pb::ListTokensRequest::default();
    let revoked_call = app
        .admin
        .clone()
        .list_tokens(with_bearer(list, &secret))
        .await
        .unwrap_err();
    app.restore(&token.id).await.unwrap();
    app.wait_for_last_used(&token.id, None).await;
    // Renewal issues a second secret; owner changes and the audit trail add
    // rows of their own.
    let (renewed, renewed_secret) = app.renew_with_grace(&token.id, 60).await;
    app.disable_owner("u", "suspended").await.unwrap();
    app.enable_owner("u").await.unwrap();
    assert!(app.events(&renewed.id, "").await.len() == 1);

    let dump = app.database_dump().await;
    assert!(!dump.is_empty());
    for s in [&secret, &renewed_secret] {
        assert!(
            !dump.windows(s.len()).any(|w| w == s.as_bytes()),
            "a secret is stored in the database"
        );
    }
    // Not even its random body.
    let body = &secret.as_bytes()[3..46];
    assert!(!dump.windows(body.len()).any(|w| w == body));

    for status in [&bad_scope, &revoked_call] {
        assert!(!status.message().contains(&secret));
        assert!(!format!("{status:?}").contains(&secret));
    }
    assert!(
        !format!("{created:?}").contains(&secret),
        "CreateTokenResponse Debug"
    );
    let request = pb::VerifyRequest {
        token: secret.clone(),
        required_scopes: vec![],
        cost: None,
        client: None,
    };
    assert!(
        !format!("{request:?}").contains(&secret),
        "VerifyRequest Debug"
    );
    // The response itself does carry it, once.
    assert!(String::from_utf8_lossy(&created.encode_to_vec()).contains(&secret));

    let logs = captured_logs();
    assert!(logs.contains(&token.id), "the log capture is not working");
    assert!(!logs.contains(&secret), "the secret reached a log line");
    assert!(
        !logs.contains(&renewed_secret),
        "a renewed secret reached a log line"
    );
    assert!(!logs.contains(std::str::from_utf8(body).unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_database_and_its_wal_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;

    let app = spawn_app(Backend::Sqlite).await;
    app.create_token("u", &[]).await;
    let files = app.db.sqlite_files();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for suffix in ["latchkey.db", "latchkey.db-wal", "latchkey.db-shm"] {
        assert!(names.iter().any(|n| n == suffix), "{suffix} in {names:?}");
    }
    for file in files {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_key_file_beside_a_database_with_tokens_stops_the_start() {
    let db = std::sync::Arc::new(TestDb::new(Backend::Sqlite).await);
    // The key generated beside the database, as on a first start with no
    // key configured.
    let mut settings = test_settings(&db);
    settings.hmac_key = None;
    let app = spawn_app_on(std::sync::Arc::clone(&db), settings.clone()).await;
    let (_, secret) = app.create_token("u", &[]).await;
    let (db, settings) = app.stop().await;
    let database = db
        .sqlite_files()
        .into_iter()
        .find(|f| f.ends_with("latchkey.db"))
        .unwrap();
    let key_file = &database.with_file_name("latchkey.db.key");
    let saved = std::fs::read(key_file).unwrap();

    std::fs::remove_file(key_file).unwrap();
    let err = match try_spawn_app_on(std::sync::Arc::clone(&db), settings.clone()).await {
        Ok(_) => panic!("started with a new key over a database full of tokens"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("key file") && err.contains("holds tokens"),
        "{err}"
    );
    assert!(!key_file.exists(), "a new key was written");

    // Put back, everything verifies again.
    std::fs::write(key_file, saved).unwrap();
    let app = spawn_app_on(db, settings).await;
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_url_without_mode_rwc_makes_its_new_file() {
    let db = TestDb::new(Backend::Sqlite).await;
    // The test database's directory, and a file no one made yet.
    let dir = db
        .url
        .strip_prefix("sqlite://")
        .and_then(|rest| rest.rsplit_once('/'))
        .unwrap()
        .0
        .to_owned();
    let mut settings = test_settings(&db);
    settings.database_url = format!("sqlite://{dir}/new.db");
    let app = spawn_app_on(std::sync::Arc::new(db), settings).await;
    let (_, secret) = app.create_token("u", &[]).await;
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
    assert!(std::path::Path::new(&format!("{dir}/new.db")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_postgres_database_is_named_with_what_to_do() {
    if !postgres_available() {
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let url = db.url.rsplit_once('/').unwrap().0.to_owned() + "/latchkey_no_such_database";
    let mut settings = test_settings(&db);
    settings.database_url = url;
    let err = match try_spawn_app_on(std::sync::Arc::new(db), settings).await {
        Ok(_) => panic!("started on a database that does not exist"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("\"latchkey_no_such_database\" does not exist")
            && err.contains("CREATE DATABASE"),
        "{err}"
    );
    assert!(!err.contains(" at line "), "{err}");
}
