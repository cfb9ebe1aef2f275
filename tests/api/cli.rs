//! The `latchkey` client commands against a real server: every command,
//! table and JSON output, and the errors a user meets.

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    cli_drives_a_token_through_its_life,
    cli_manages_owners_and_shows_events_and_keys,
    cli_reports_errors_with_the_field_and_a_failing_status,
    cli_lists_every_page,
    cli_watches_events_and_lists_tokens_near_their_expiry,
);

async fn cli_watches_events_and_lists_tokens_near_their_expiry(backend: Backend) {
    use tokio::io::AsyncBufReadExt as _;

    let app = spawn_app_with(backend, |s| {
        s.changes.poll_interval = std::time::Duration::from_millis(100);
    })
    .await;
    let mut opening = crate::watch_events::watch(&app, "", "").await.unwrap();
    let start = crate::watch_events::next(&mut opening).await.cursor;
    let soon = app.create_with_ttl("carol", 3600).await.token.unwrap();
    let (later, _) = app.create_token("carol", &[]).await;
    app.revoke(&later.id, "lost").await.unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .env_clear()
        .env("LATCHKEY_ADDR", format!("http://{}", app.addr))
        .env("LATCHKEY_TOKEN", ADMIN_TOKEN)
        .args(["watch", "--owner", "carol", "--after", &start])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line within 10 s")
            .unwrap()
            .expect("the watch goes on");
        seen.push(line);
    }
    child.kill().await.unwrap();
    for (line, (kind, id)) in seen.iter().zip([
        ("created", &soon.id),
        ("created", &later.id),
        ("revoked", &later.id),
    ]) {
        assert!(line.contains(kind) && line.contains(id.as_str()), "{line}");
        assert!(line.contains("cursor="), "{line}");
    }
    assert!(seen[2].contains("reason=lost"), "{}", seen[2]);

    let in_two_hours = humantime::format_rfc3339_seconds(
        std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(
                u64::try_from(now_plus(&app.clock, std::time::Duration::from_secs(7200)).seconds)
                    .unwrap(),
            ),
    )
    .to_string();
    let listed = run_client(
        &app,
        &[
            "token",
            "list",
            "--status",
            "active",
            "--expires-before",
            &in_two_hours,
            "-o",
            "json",
        ],
        b"",
    )
    .await;
    assert_eq!(listed.jq("[.tokens[].id]"), serde_json::json!([soon.id]));
    let bad = run_client(&app, &["token", "list", "--expires-before", "soon"], b"").await;
    assert!(bad.failed(2).contains("--expires-before"), "{bad:?}");
}

async fn cli_drives_a_token_through_its_life(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = run_client(
        &app,
        &[
            "token",
            "create",
            "--owner",
            "alice",
            "--name",
            "laptop",
            "--scope",
            "repo:read",
            "--scope",
            "repo:write",
            "--meta",
            "team=core",
            "--ttl",
            "30d",
            "-o",
            "json",
        ],
        b"",
    )
    .await;
    let json = created.jq(".");
    let id = json["token"]["id"].as_str().unwrap().to_owned();
    let secret = json["secret"].as_str().unwrap().to_owned();
    assert_eq!(json["token"]["owner"], "alice");
    assert_eq!(
        json["token"]["scopes"],
        serde_json::json!(["repo:read", "repo:write"])
    );
    assert_eq!(json["token"]["metadata"]["team"], "core");
    assert_eq!(json["token"]["status"], "TOKEN_STATUS_ACTIVE");
    // 30 days, as the server computed it from the ttl.
    let token = app.get(&id).await.unwrap();
    let lifetime = token.expire_time.unwrap().seconds - token.create_time.unwrap().seconds;
    assert_eq!(lifetime, 30 * 86_400);

    // The table shows the secret once, with its warning.
    let table = run_client(
        &app,
        &["token", "create", "--owner", "alice", "--name", "ci"],
        b"",
    )
    .await;
    let out = table.ok();
    assert!(out.contains("shown once"), "{out}");
    assert!(out.contains("Expires:") && out.contains("Never"), "{out}");

    // verify reads stdin; exit 0 only for VALID.
    let valid = run_client(
        &app,
        &["verify", "--scope", "repo:read"],
        format!("{secret}\n").as_bytes(),
    )
    .await;
    assert!(
        valid
            .ok()
            .starts_with(&format!("VALID: token {id} of alice")),
        "{valid:?}"
    );
    let missing = run_client(&app, &["verify", "--scope", "admin"], secret.as_bytes()).await;
    missing.failed(1);
    assert!(
        missing.stdout.starts_with("INSUFFICIENT_SCOPE"),
        "{missing:?}"
    );
    assert!(
        missing.stdout.contains("missing scopes: admin"),
        "{missing:?}"
    );
    let json = run_client(&app, &["verify", "-o", "json"], secret.as_bytes()).await;
    assert_eq!(json.jq(".verdict"), "VERDICT_VALID");

    // The list: the token page's columns, an unused token's last use "Never".
    let list = run_client(&app, &["token", "list", "--owner", "alice"], b"").await;
    let out = list.ok();
    let header = out.lines().next().unwrap();
    for column in [
        "ID",
        "NAME",
        "TOKEN",
        "CREATED",
        "LAST USED",
        "EXPIRES",
        "STATUS",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let ci_row = out
        .lines()
        .find(|l| l.contains(" ci "))
        .expect("the ci token's row");
    assert!(
        ci_row.contains("Never") && ci_row.contains("active"),
        "{ci_row}"
    );
    assert!(ci_row.contains("lk_…"), "{ci_row}");

    let updated = run_client(
        &app,
        &[
            "token",
            "update",
            &id,
            "--name",
            "work laptop",
            "--description",
            "the one at work",
        ],
        b"",
    )
    .await;
    assert!(updated.ok().contains("work laptop"));
    assert_eq!(app.get(&id).await.unwrap().description, "the one at work");
    assert_eq!(
        app.get(&id).await.unwrap().metadata["team"],
        "core",
        "metadata untouched"
    );

    let revoked = run_client(&app, &["token", "revoke", &id, "--reason", "lost it"], b"").await;
    let out = revoked.ok();
    assert!(out.contains("revoked") && out.contains("lost it"), "{out}");
    let refused = run_client(&app, &["verify"], secret.as_bytes()).await;
    refused.failed(1);
    assert!(refused.stdout.starts_with("REVOKED"), "{refused:?}");

    let restored = run_client(&app, &["token", "restore", &id, "-o", "json"], b"").await;
    assert_eq!(restored.jq(".status"), "TOKEN_STATUS_ACTIVE");

    let renewed = run_client(
        &app,
        &["token", "renew", &id, "--grace", "1h", "-o", "json"],
        b"",
    )
    .await;
    let renewed = renewed.jq(".");
    let new_id = renewed["token"]["id"].as_str().unwrap();
    let new_secret = renewed["secret"].as_str().unwrap();
    assert_eq!(renewed["token"]["replaces"], id.as_str());
    run_client(&app, &["verify"], new_secret.as_bytes())
        .await
        .ok();
    // Within the grace period the old secret still works.
    run_client(&app, &["verify"], secret.as_bytes()).await.ok();
    let old = run_client(&app, &["token", "get", &id], b"").await;
    assert!(
        old.ok().contains(&format!("Replaced by:  {new_id}")),
        "{old:?}"
    );

    // Without a terminal, delete needs --yes, and nothing is deleted.
    let unconfirmed = run_client(&app, &["token", "delete", new_id], b"y\n").await;
    assert!(unconfirmed.failed(1).contains("--yes"), "{unconfirmed:?}");
    app.get(new_id).await.expect("still there");
    let deleted = run_client(&app, &["token", "delete", new_id, "--yes"], b"").await;
    assert_eq!(deleted.ok(), format!("Deleted token {new_id}\n"));
    let gone = run_client(&app, &["token", "get", new_id], b"").await;
    assert!(gone.failed(1).starts_with("error: NOT_FOUND"), "{gone:?}");
    let json = run_client(&app, &["token", "delete", &id, "--yes", "-o", "json"], b"").await;
    assert_eq!(json.jq("."), serde_json::json!({}));
}

async fn cli_manages_owners_and_shows_events_and_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("bob", &[]).await;
    let disabled = run_client(
        &app,
        &["owner", "disable", "bob", "--reason", "left the team"],
        b"",
    )
    .await;
    let out = disabled.ok();
    assert!(
        out.contains("Disabled:") && out.contains("yes") && out.contains("left the team"),
        "{out}"
    );
    let refused = run_client(&app, &["verify"], secret.as_bytes()).await;
    refused.failed(1);
    assert!(refused.stdout.starts_with("OWNER_DISABLED"), "{refused:?}");
    let got = run_client(&app, &["owner", "get", "bob", "-o", "json"], b"").await;
    assert_eq!(got.jq(".disabled"), true);
    assert_eq!(
        got.jq(".tokenCounts.active"),
        "1",
        "int64 is a string in proto3 JSON"
    );
    let enabled = run_client(&app, &["owner", "enable", "bob"], b"").await;
    assert!(enabled.ok().contains("no"));
    run_client(&app, &["verify"], secret.as_bytes()).await.ok();

    let events = run_client(&app, &["events", "--token-id", &token.id], b"").await;
    let out = events.ok();
    assert!(out.lines().next().unwrap().contains("KIND"), "{out}");
    assert!(out.contains("created"), "{out}");
    let owner_events = run_client(&app, &["events", "--owner", "bob", "-o", "json"], b"").await;
    let kinds = owner_events.jq("[.events[].kind]");
    assert!(
        kinds
            .as_array()
            .unwrap()
            .contains(&"EVENT_KIND_OWNER_DISABLED".into()),
        "{kinds}"
    );
    assert!(
        kinds
            .as_array()
            .unwrap()
            .contains(&"EVENT_KIND_OWNER_ENABLED".into()),
        "{kinds}"
    );
    let neither = run_client(&app, &["events"], b"").await;
    assert!(neither.failed(2).contains("--token-id"), "{neither:?}");

    let keys = run_client(&app, &["keys"], b"").await;
    let out = keys.ok();
    assert!(out.starts_with("ID"), "{out}");
    assert!(
        out.lines().nth(1).unwrap().contains("yes"),
        "the primary key: {out}"
    );

    let unconfirmed = run_client(&app, &["owner", "delete-tokens", "bob"], b"").await;
    assert!(unconfirmed.failed(1).contains("--yes"));
    app.get(&token.id).await.expect("still there");
    let deleted = run_client(&app, &["owner", "delete-tokens", "bob", "--yes"], b"").await;
    assert_eq!(deleted.ok(), "Deleted 1 tokens of bob\n");
    let refused = run_client(&app, &["verify"], secret.as_bytes()).await;
    assert!(refused.stdout.starts_with("UNKNOWN"), "{refused:?}");
}

async fn cli_reports_errors_with_the_field_and_a_failing_status(backend: Backend) {
    let app = spawn_app(backend).await;

    // No server: the address that was tried.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let nobody = run_client_with(&["keys"], b"", &[("LATCHKEY_ADDR", &addr)]).await;
    let err = nobody.failed(1);
    assert!(
        err.starts_with(&format!("error: cannot reach latchkey at {addr}")),
        "{err}"
    );

    // A bad credential, and none.
    let server = format!("http://{}", app.addr);
    for env in [
        vec![
            ("LATCHKEY_ADDR", server.as_str()),
            ("LATCHKEY_TOKEN", "not-the-credential"),
        ],
        vec![("LATCHKEY_ADDR", server.as_str())],
    ] {
        let run = run_client_with(&["token", "list"], b"", &env).await;
        let err = run.failed(1);
        assert!(err.starts_with("error: UNAUTHENTICATED"), "{err}");
        assert!(err.contains("LATCHKEY_TOKEN"), "{err}");
        assert!(run.stdout.is_empty());
    }

    // An unknown id, and one that is not an id.
    let unknown = run_client(
        &app,
        &["token", "get", "01937c4e-8f2a-7c3d-9e1f-0a1b2c3d4e5f"],
        b"",
    )
    .await;
    assert!(
        unknown.failed(1).starts_with("error: NOT_FOUND"),
        "{unknown:?}"
    );
    let bad_id = run_client(&app, &["token", "revoke", "nope"], b"").await;
    let err = bad_id.failed(1);
    assert!(
        err.starts_with("error: INVALID_ARGUMENT") && err.contains("id"),
        "{err}"
    );

    // Bad durations and times never reach the server: the flag is named.
    for args in [
        &[
            "token",
            "create",
            "--owner",
            "o",
            "--name",
            "n",
            "--ttl",
            "3 fortnights",
        ][..],
        &[
            "token",
            "create",
            "--owner",
            "o",
            "--name",
            "n",
            "--expires",
            "tomorrow",
        ],
        &[
            "token",
            "renew",
            "01937c4e-8f2a-7c3d-9e1f-0a1b2c3d4e5f",
            "--grace=-1h",
        ],
        &[
            "token",
            "create",
            "--owner",
            "o",
            "--name",
            "n",
            "--ttl",
            "1d",
            "--expires",
            "2030-01-01T00:00:00Z",
        ],
    ] {
        let run = run_client(&app, args, b"").await;
        let err = run.failed(2);
        let flag = args.iter().rev().find(|a| a.starts_with("--")).unwrap();
        let flag = flag.split('=').next().unwrap();
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    assert!(app.list_all().await.is_empty(), "nothing was created");

    // The server's checks name the field.
    let past = run_client(
        &app,
        &[
            "token",
            "create",
            "--owner",
            "o",
            "--name",
            "n",
            "--expires",
            "2001-01-01T00:00:00Z",
        ],
        b"",
    )
    .await;
    let err = past.failed(1);
    assert!(
        err.starts_with("error: INVALID_ARGUMENT") && err.contains("expire_time"),
        "{err}"
    );
    let scope = run_client(
        &app,
        &[
            "token",
            "create",
            "--owner",
            "o",
            "--name",
            "n",
            "--scope",
            "no spaces",
        ],
        b"",
    )
    .await;
    assert!(scope.failed(1).contains("scopes"), "{scope:?}");
    let nothing = run_client(
        &app,
        &["token", "update", "01937c4e-8f2a-7c3d-9e1f-0a1b2c3d4e5f"],
        b"",
    )
    .await;
    assert!(nothing.failed(1).contains("--name"), "{nothing:?}");
    let meta = run_client(&app, &["token", "update", "x", "--meta", "novalue"], b"").await;
    assert!(meta.failed(2).contains("--meta"), "{meta:?}");

    // verify: nothing on stdin, and a token that is not one.
    let empty = run_client(&app, &["verify"], b"").await;
    assert!(empty.failed(1).contains("stdin"), "{empty:?}");
    let malformed = run_client(&app, &["verify"], b"lk_notatoken").await;
    malformed.failed(1);
    assert_eq!(malformed.stdout, "MALFORMED\n");
}

async fn cli_lists_every_page(backend: Backend) {
    let app = spawn_app(backend).await;
    // Past one page of 1,000; one owner each, under the creation limits.
    let mut calls = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let mut admin = app.admin.clone();
        calls.spawn(async move {
            for n in (worker..1_003).step_by(8) {
                let request = latchkey::grpc::pb::CreateTokenRequest {
                    owner: format!("owner-{n}"),
                    name: format!("token-{n}"),
                    ..Default::default()
                };
                let mut request = tonic::Request::new(request);
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
                );
                admin.create_token(request).await.unwrap();
            }
        });
    }
    calls.join_all().await;
    let json = run_client(&app, &["token", "list", "-o", "json"], b"").await;
    assert_eq!(json.jq(".tokens | length"), 1_003);
    assert_eq!(json.jq(".nextPageToken"), serde_json::Value::Null);
    let names = json.jq("[.tokens[].name] | unique | length");
    assert_eq!(names, 1_003, "each token once");
    let table = run_client(&app, &["token", "list", "--status", "active"], b"").await;
    assert_eq!(table.ok().lines().count(), 1 + 1_003);
    let revoked = run_client(&app, &["token", "list", "--status", "revoked"], b"").await;
    assert_eq!(revoked.ok().lines().count(), 1, "the header only");
}

#[tokio::test]
async fn completion_scripts_come_from_the_commands() {
    for (shell, marker) in [
        ("bash", "_latchkey"),
        ("zsh", "#compdef latchkey"),
        ("fish", "complete -c latchkey"),
    ] {
        let run = run_client_with(&["completion", shell], b"", &[]).await;
        let out = run.ok();
        assert!(
            out.contains(marker),
            "{shell}: {}",
            &out[..out.len().min(200)]
        );
        assert!(out.contains("revoke") && out.contains("owner"), "{shell}");
    }
}

/// On a terminal, `token delete` asks, and only "y" deletes. The terminal
/// is a real pseudo-terminal, from util-linux's `script`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_asks_on_a_terminal() {
    let app = spawn_app(Backend::Sqlite).await;
    let (token, _) = app.create_token("gina", &[]).await;
    let on_terminal = |answer: &'static str| {
        let command = format!(
            "{} token delete {}",
            env!("CARGO_BIN_EXE_latchkey"),
            token.id
        );
        let addr = format!("http://{}", app.addr);
        async move {
            run_client_in(
                "script",
                &["-qec", &command, "/dev/null"],
                answer.as_bytes(),
                &[
                    ("LATCHKEY_ADDR", &addr),
                    ("LATCHKEY_TOKEN", ADMIN_TOKEN),
                    ("TERM", "dumb"),
                ],
            )
            .await
        }
    };
    let declined = on_terminal("n\n").await;
    declined.failed(1);
    assert!(
        declined
            .stdout
            .contains(&format!("Delete token {} (", token.id)),
        "the question names the token: {declined:?}"
    );
    app.get(&token.id).await.expect("not deleted");
    let accepted = on_terminal("y\n").await;
    assert!(accepted.ok().contains("Deleted token"), "{accepted:?}");
    assert_eq!(
        app.get(&token.id).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
}
