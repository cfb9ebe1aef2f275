//! Several replicas on one database, as separate server processes: a change
//! made through one reaches the others' caches through the change log (at
//! once with PostgreSQL's notifications, else within the poll interval),
//! long before the caches' TTL.

use std::process::Stdio;
use std::time::{Duration, Instant};

use latchkey::grpc::pb::{
    self, Verdict, token_admin_client::TokenAdminClient, token_verify_client::TokenVerifyClient,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    every_change_that_affects_verify_reaches_the_other_replica,
    a_replica_killed_mid_burst_loses_no_token_it_confirmed,
);

mod a_revoke_reaches_the_other_replica_within_100_ms {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if crate::helpers::postgres_available() {
            super::a_revoke_reaches_the_other_replica_within_100_ms().await;
        }
    }
}

mod without_notifications_a_revoke_arrives_within_the_poll_interval {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if crate::helpers::postgres_available() {
            super::without_notifications_a_revoke_arrives_within_the_poll_interval().await;
        }
    }
}

/// A `latchkey serve` process of its own.
pub struct Replica {
    child: Child,
    pub channel: Channel,
    pub admin: TokenAdminClient<Channel>,
    pub verifier: TokenVerifyClient<Channel>,
}

impl Replica {
    /// Starts a replica on `db`; its cache trusts an entry for an hour, so
    /// only the change log can make it let go sooner.
    pub async fn start(db: &TestDb, env: &[(&str, &str)]) -> Replica {
        Replica::start_on(&db.url, env).await
    }

    /// [`Replica::start`] on the database at `url`.
    pub async fn start_on(url: &str, env: &[(&str, &str)]) -> Replica {
        let mut child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .arg("serve")
            .env("LATCHKEY_DATABASE_URL", url)
            .env("LATCHKEY_HMAC_KEY", HMAC_KEY)
            .env("LATCHKEY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("LATCHKEY_LISTEN_ADDR", "127.0.0.1:0")
            .env("LATCHKEY_METRICS_ADDR", "127.0.0.1:0")
            .env("LATCHKEY_LOG_FORMAT", "json")
            .env("LATCHKEY_CACHE__TTL", "1h")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start latchkey");
        let addr = listening_addr(&mut child).await;
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connect to the replica");
        Replica {
            child,
            admin: TokenAdminClient::new(channel.clone()),
            verifier: TokenVerifyClient::new(channel.clone()),
            channel,
        }
    }

    pub async fn create(&self, owner: &str) -> (pb::Token, String) {
        let created = try_create(self.admin.clone(), owner)
            .await
            .expect("CreateToken");
        (created.token.expect("token"), created.secret)
    }

    /// SIGTERM, and waits until it has drained and stopped.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-s", "TERM", &pid.to_string()])
                .status();
        }
        let stopped = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        assert!(
            stopped.is_ok_and(|s| s.is_ok_and(|s| s.success())),
            "the replica did not stop cleanly"
        );
    }

    /// SIGKILL: no drain, no flush, no goodbye to the database.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill the replica");
    }

    pub async fn verify(&self, secret: &str) -> pb::VerifyResponse {
        self.verifier
            .clone()
            .verify(pb::VerifyRequest {
                token: secret.to_owned(),
                required_scopes: vec![],
                cost: None,
                client: None,
            })
            .await
            .expect("Verify")
            .into_inner()
    }

    pub async fn revoke(&self, id: &str) {
        self.admin
            .clone()
            .revoke_token(with_bearer(
                pb::RevokeTokenRequest {
                    id: id.to_owned(),
                    reason: "leaked".to_owned(),
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("RevokeToken");
    }

    pub async fn get(&self, id: &str) -> Result<pb::Token, tonic::Status> {
        self.admin
            .clone()
            .get_token(with_bearer(
                pb::GetTokenRequest { id: id.to_owned() },
                ADMIN_TOKEN,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// How long after `since` this replica first answers `verdict` for
    /// `secret`; panics past `limit`.
    async fn time_until(
        &self,
        secret: &str,
        verdict: Verdict,
        since: Instant,
        limit: Duration,
    ) -> Duration {
        loop {
            let v = self.verify(secret).await;
            let elapsed = since.elapsed();
            if v.verdict() == verdict {
                return elapsed;
            }
            assert!(
                elapsed < limit,
                "still {:?} after {elapsed:?}, waiting for {verdict:?}",
                v.verdict()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

pub async fn try_create(
    admin: TokenAdminClient<Channel>,
    owner: &str,
) -> Result<pb::CreateTokenResponse, tonic::Status> {
    try_create_with(
        admin,
        pb::CreateTokenRequest {
            owner: owner.to_owned(),
            name: "replicated".to_owned(),
            scopes: vec!["read".to_owned()],
            ..Default::default()
        },
    )
    .await
}

/// CreateToken `request` through `admin`, as the admin.
pub async fn try_create_with(
    mut admin: TokenAdminClient<Channel>,
    request: pb::CreateTokenRequest,
) -> Result<pb::CreateTokenResponse, tonic::Status> {
    admin
        .create_token(with_bearer(request, ADMIN_TOKEN))
        .await
        .map(tonic::Response::into_inner)
}

/// Reads the replica's log (JSON lines on stderr) until it names the
/// address it bound.
async fn listening_addr(child: &mut Child) -> String {
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    // What it said meanwhile, for the failure message.
    let mut said = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read the log") {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                said.push(line);
                continue;
            };
            if entry["message"] == "latchkey listening" {
                return entry["addr"].as_str().map(str::to_owned);
            }
            said.push(line);
        }
        None
    })
    .await;
    // Keep draining the output so the replica never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        });
    }
    found.ok().flatten().unwrap_or_else(|| {
        let tail = said[said.len().saturating_sub(20)..].join("\n");
        panic!("the replica did not log its address; it said:\n{tail}")
    })
}

/// Two replicas, the first migrating the database before the second starts.
pub(crate) async fn pair(db: &TestDb, env: &[(&str, &str)]) -> (Replica, Replica) {
    let a = Replica::start(db, env).await;
    let b = Replica::start(db, env).await;
    (a, b)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

fn report(name: &str, mut times: Vec<Duration>) -> Vec<Duration> {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // Printed for the record (cargo test -- --nocapture shows it).
    println!(
        "{name}: {} trials, min {:.1} ms, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        times.len(),
        ms(times[0]),
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.90)),
        ms(percentile(&times, 0.99)),
        ms(times[times.len() - 1]),
    );
    times
}

/// `trials` times: a token created through `a` and cached as VALID by `b`
/// is revoked through `a`; how long from the revoke's reply until `b`
/// answers REVOKED.
async fn revoke_trials(a: &Replica, b: &Replica, trials: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(trials);
    for i in 0..trials {
        let (token, secret) = a.create(&format!("owner-{i}")).await;
        assert_eq!(b.verify(&secret).await.verdict(), Verdict::Valid);
        a.revoke(&token.id).await;
        let revoked = Instant::now();
        times.push(
            b.time_until(&secret, Verdict::Revoked, revoked, Duration::from_secs(5))
                .await,
        );
    }
    times
}

/// Revoked through replica A, a token verifies as REVOKED on replica B
/// (which had it cached as VALID) within 100 ms at p99 over 200 trials.
async fn a_revoke_reaches_the_other_replica_within_100_ms() {
    let db = TestDb::new(Backend::Postgres).await;
    let (a, b) = pair(&db, &[]).await;
    let times = report(
        "revoke A → REVOKED on B, with NOTIFY",
        revoke_trials(&a, &b, 200).await,
    );
    assert!(
        percentile(&times, 0.99) <= Duration::from_millis(100),
        "p99 {:?}",
        percentile(&times, 0.99)
    );
}

/// With notifications off, the poll alone carries a revoke across within
/// the poll interval (plus the read itself).
async fn without_notifications_a_revoke_arrives_within_the_poll_interval() {
    let db = TestDb::new(Backend::Postgres).await;
    let poll = Duration::from_millis(250);
    let (a, b) = pair(
        &db,
        &[
            ("LATCHKEY_CHANGES__LISTEN", "false"),
            ("LATCHKEY_CHANGES__POLL_INTERVAL", "250ms"),
        ],
    )
    .await;
    let times = report(
        "revoke A → REVOKED on B, poll only (250 ms)",
        revoke_trials(&a, &b, 20).await,
    );
    let slack = Duration::from_millis(50);
    assert!(times[times.len() - 1] <= poll + slack, "{times:?}");
}

/// Every kind of change reaches the other replica: revoke, restore, update,
/// renewal, owner disabled and enabled, delete, and deleting an owner's
/// tokens. SQLite has no notifications; both databases are driven by the
/// poll here, so one test covers both.
async fn every_change_that_affects_verify_reaches_the_other_replica(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, b) = pair(
        &db,
        &[
            ("LATCHKEY_CHANGES__LISTEN", "false"),
            ("LATCHKEY_CHANGES__POLL_INTERVAL", "100ms"),
        ],
    )
    .await;
    let limit = Duration::from_secs(3);
    let admin = |r: &Replica| r.admin.clone();
    let (token, secret) = a.create("alice").await;
    assert_eq!(b.verify(&secret).await.verdict(), Verdict::Valid);

    a.revoke(&token.id).await;
    b.time_until(&secret, Verdict::Revoked, Instant::now(), limit)
        .await;

    admin(&a)
        .restore_token(with_bearer(
            pb::RestoreTokenRequest {
                id: token.id.clone(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("RestoreToken");
    b.time_until(&secret, Verdict::Valid, Instant::now(), limit)
        .await;

    let mut renamed = token.clone();
    renamed.name = "renamed".to_owned();
    admin(&a)
        .update_token(with_bearer(
            pb::UpdateTokenRequest {
                token: Some(renamed),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".to_owned()],
                }),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("UpdateToken");
    let started = Instant::now();
    loop {
        let v = b.verify(&secret).await;
        if v.token.as_ref().is_some_and(|t| t.name == "renamed") {
            break;
        }
        assert!(started.elapsed() < limit, "B still shows the old name");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    admin(&a)
        .disable_owner(with_bearer(
            pb::DisableOwnerRequest {
                owner: "alice".to_owned(),
                reason: "left".to_owned(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("DisableOwner");
    b.time_until(&secret, Verdict::OwnerDisabled, Instant::now(), limit)
        .await;
    admin(&a)
        .enable_owner(with_bearer(
            pb::EnableOwnerRequest {
                owner: "alice".to_owned(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("EnableOwner");
    b.time_until(&secret, Verdict::Valid, Instant::now(), limit)
        .await;

    // Renewal without grace: the old secret dies everywhere.
    let renewed = admin(&a)
        .renew_token(with_bearer(
            pb::RenewTokenRequest {
                id: token.id.clone(),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("RenewToken")
        .into_inner();
    b.time_until(&secret, Verdict::Revoked, Instant::now(), limit)
        .await;
    assert_eq!(b.verify(&renewed.secret).await.verdict(), Verdict::Valid);

    let (other, other_secret) = a.create("bob").await;
    assert_eq!(b.verify(&other_secret).await.verdict(), Verdict::Valid);
    admin(&a)
        .delete_token(with_bearer(
            pb::DeleteTokenRequest { id: other.id },
            ADMIN_TOKEN,
        ))
        .await
        .expect("DeleteToken");
    b.time_until(&other_secret, Verdict::Unknown, Instant::now(), limit)
        .await;

    admin(&a)
        .delete_owner_tokens(with_bearer(
            pb::DeleteOwnerTokensRequest {
                owner: "alice".to_owned(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("DeleteOwnerTokens");
    b.time_until(&renewed.secret, Verdict::Unknown, Instant::now(), limit)
        .await;
}

/// `kill -9` of a replica during a burst of CreateToken calls from 16
/// clients: every token whose CreateToken returned OK is stored, and works
/// on the replica started in its place.
async fn a_replica_killed_mid_burst_loses_no_token_it_confirmed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let doomed = Replica::start(&db, &[]).await;
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..16 {
        let admin = doomed.admin.clone();
        clients.spawn(async move {
            let mut confirmed = Vec::new();
            let mut failed = 0;
            for call in 0.. {
                // A new owner per call: the per-owner limits stay out of it.
                match try_create(admin.clone(), &format!("c{client}-{call}")).await {
                    Ok(created) => {
                        confirmed.push((created.token.expect("token").id, created.secret))
                    }
                    Err(_) => {
                        failed += 1;
                        if failed > 3 {
                            return confirmed;
                        }
                    }
                }
            }
            confirmed
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    doomed.kill().await;
    let mut confirmed = Vec::new();
    while let Some(done) = clients.join_next().await {
        confirmed.extend(done.unwrap());
    }
    assert!(
        confirmed.len() >= 16,
        "only {} created before the kill",
        confirmed.len()
    );

    let successor = Replica::start(&db, &[]).await;
    for (id, secret) in &confirmed {
        let got = successor.get(id).await;
        assert!(got.is_ok(), "token {id} was confirmed but is gone: {got:?}");
        assert_eq!(successor.verify(secret).await.verdict(), Verdict::Valid);
    }
    println!(
        "kill -9 during a CreateToken burst ({backend:?}): {} confirmed, all stored",
        confirmed.len()
    );
}
