//! Stopping: in-flight calls finish, last-used times are flushed, on a stop
//! future in-process and on a real SIGTERM to the binary.

use std::io::{BufRead as _, BufReader};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use latchkey::grpc::pb::{
    self, Verdict, token_admin_client::TokenAdminClient, token_verify_client::TokenVerifyClient,
};
use tonic::transport::Channel;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    stopping_drains_in_flight_calls_and_flushes_last_use,
    sigterm_drains_and_flushes_last_use,
);

async fn stopping_drains_in_flight_calls_and_flushes_last_use(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let mut settings = test_settings(&db);
    // Only the shutdown flush can write last use within this test.
    settings.last_used.flush_interval = Duration::from_secs(3600);
    let mut app = spawn_app_on(Arc::clone(&db), settings.clone()).await;
    let (used, used_secret) = app.create_token("u", &[]).await;
    let (slow, slow_secret) = app.create_token("u", &[]).await;
    assert_eq!(
        app.verify(&used_secret, &[]).await.verdict(),
        Verdict::Valid
    );

    // A Verify is in flight (paused inside its database lookup) when the stop
    // signal comes.
    let in_flight = app.start_paused_verify(&slow_secret).await;
    app.signal_stop();
    // The server stops accepting connections while the call is still running.
    let addr = app.addr;
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "still accepting connections after the stop signal");
    app.gate.release();

    let answer = in_flight
        .await
        .unwrap()
        .expect("the in-flight call was cut off");
    assert_eq!(answer.verdict(), Verdict::Valid);
    app.shutdown().await.unwrap();
    drop(app);

    let app = spawn_app_on(db, settings).await;
    assert!(app.get(&used.id).await.unwrap().last_used_time.is_some());
    assert!(app.get(&slow.id).await.unwrap().last_used_time.is_some());
}

async fn sigterm_drains_and_flushes_last_use(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let issued = run_cli(&db, &["admin-token", "issue"]).await;
    assert!(issued.status.success(), "{issued:?}");
    let admin_secret = String::from_utf8(issued.stdout).unwrap().trim().to_owned();
    let mut child = server_command(&db, &[])
        .env("LATCHKEY_LAST_USED__FLUSH_INTERVAL", "1h")
        .env("RUST_LOG", "debug")
        .spawn()
        .expect("start the latchkey binary");

    // Read stderr (JSON lines) on a thread, until the bound address is
    // logged.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut output = Vec::new();
    let addr = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs its address");
        let listening = line.contains("latchkey listening").then(|| {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            v["addr"].as_str().unwrap().to_owned()
        });
        output.push(line);
        if let Some(addr) = listening {
            break addr;
        }
    };
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = TokenAdminClient::new(channel.clone());
    let mut verify = TokenVerifyClient::new(channel);
    let created = admin
        .create_token(with_bearer(
            pb::CreateTokenRequest {
                owner: "u".into(),
                ..Default::default()
            },
            &admin_secret,
        ))
        .await
        .unwrap()
        .into_inner();
    let id = created.token.unwrap().id;
    let v = verify
        .verify(pb::VerifyRequest {
            token: created.secret.clone(),
            required_scopes: vec![],
            cost: None,
            client: None,
        })
        .await
        .unwrap();
    assert_eq!(v.into_inner().verdict(), Verdict::Valid);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "latchkey exited with {status}");
    output.extend(lines_rx.iter());
    reader.join().unwrap();
    let log = output.join("\n");
    assert!(log.contains("stop signal received"), "{log}");
    assert!(log.contains("last-used times written"), "{log}");
    let json_lines: Vec<&String> = output.iter().filter(|l| l.starts_with('{')).collect();
    assert!(
        json_lines
            .iter()
            .all(|l| !l.contains(&admin_secret) && !l.contains(&created.secret))
    );

    let mut settings = test_settings(&db);
    settings.admin_token = None;
    let app = spawn_app_on(db, settings).await;
    let token = app
        .admin
        .clone()
        .get_token(with_bearer(pb::GetTokenRequest { id }, &admin_secret))
        .await
        .unwrap()
        .into_inner();
    assert!(
        token.last_used_time.is_some(),
        "last use was not flushed on SIGTERM"
    );
}
