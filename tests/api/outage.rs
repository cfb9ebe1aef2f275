//! A database outage under load: PostgreSQL is stopped (a fast shutdown, as
//! `pg_ctlcluster stop` does) while Verify and admin calls keep coming, then
//! started again. Runs on a private PostgreSQL cluster started for the test
//! from the machine's server binaries, so the shared test server stays up.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey::grpc::pb::{self, Verdict};
use sea_orm::{ConnectionTrait, Database};
use tonic::Code;

use crate::helpers::*;
use crate::replicas::{Replica, try_create};

mod a_database_outage_is_ridden_out_and_recovered_from {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if crate::helpers::postgres_available() {
            super::a_database_outage_is_ridden_out_and_recovered_from().await;
        }
    }
}

/// A PostgreSQL cluster in a temporary directory, owned by `postgres` when
/// the test runs as root (the server refuses to).
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_owner: Vec<&'static str>,
}

impl Cluster {
    fn new() -> Cluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(|v| Some(v.ok()?.path().join("bin")))
                    .filter(|b| b.join("initdb").exists())
                    .max()
            })
            .expect(
                "the outage test starts a PostgreSQL cluster of its own and needs the server \
                 binaries under /usr/lib/postgresql/*/bin (Debian: postgresql)",
            );
        let dir = tempfile::tempdir().expect("temp dir");
        let root = nix_is_root();
        let as_owner = if root {
            vec!["runuser", "-u", "postgres", "--"]
        } else {
            vec![]
        };
        if root {
            run(&["chown", "postgres:postgres", dir.path().to_str().unwrap()]);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster {
            bin,
            dir,
            port,
            as_owner,
        };
        let data = cluster.data();
        cluster.pg(&[
            "initdb",
            "-D",
            &data,
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ]);
        cluster.start();
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn pg(&self, args: &[&str]) {
        let tool = self.bin.join(args[0]).display().to_string();
        let mut cmd: Vec<&str> = self.as_owner.clone();
        cmd.push(&tool);
        cmd.extend(&args[1..]);
        run(&cmd);
    }

    fn start(&self) {
        let (data, log) = (self.data(), self.dir.path().join("log"));
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.pg(&[
            "pg_ctl",
            "-D",
            &data,
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "start",
        ]);
    }

    /// A fast shutdown: sessions are cut, the server stops accepting.
    fn stop(&self) {
        self.pg(&["pg_ctl", "-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(self.as_owner.first().copied().unwrap_or("sh"))
            .args(if self.as_owner.is_empty() {
                vec![]
            } else {
                self.as_owner[1..].to_vec()
            })
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the load saw, call by call: when, and what came back.
#[derive(Default)]
struct Seen {
    verify: Vec<(Instant, &'static str, Result<Verdict, Code>)>,
    created: Vec<(Instant, Result<String, Code>)>,
    revoked: Vec<(Instant, String, Result<(), Code>)>,
}

/// Readiness: TokenVerify's health. (The server's own, "", stays SERVING so
/// that a liveness probe does not restart a replica waiting for its
/// database.)
async fn health(replica: &Replica) -> ServingStatus {
    assert_eq!(
        health_of(&replica.channel, "").await,
        ServingStatus::Serving,
        "liveness"
    );
    health_of(&replica.channel, "latchkey.v1.TokenVerify").await
}

async fn try_verify(replica: &Replica, secret: &str) -> Result<Verdict, Code> {
    replica
        .verifier
        .clone()
        .verify(pb::VerifyRequest {
            token: secret.to_owned(),
            required_scopes: vec![],
            cost: None,
            client: None,
        })
        .await
        .map(|r| r.into_inner().verdict())
        .map_err(|s| s.code())
}

async fn a_database_outage_is_ridden_out_and_recovered_from() {
    let cluster = Cluster::new();
    let admin = Database::connect(cluster.url("postgres")).await.unwrap();
    admin
        .execute_unprepared("CREATE DATABASE latchkey")
        .await
        .unwrap();
    admin.close().await.unwrap();
    let staleness = Duration::from_secs(3);
    let replica = Arc::new(
        Replica::start_on(
            &cluster.url("latchkey"),
            &[
                ("LATCHKEY_CHANGES__MAX_STALENESS", "3s"),
                ("LATCHKEY_CHANGES__POLL_INTERVAL", "200ms"),
            ],
        )
        .await,
    );

    let (_, live) = replica.create("live").await;
    assert_eq!(replica.verify(&live).await.verdict(), Verdict::Valid);
    let (revoked_token, revoked) = replica.create("revoked").await;
    assert_eq!(replica.verify(&revoked).await.verdict(), Verdict::Valid);
    replica.revoke(&revoked_token.id).await;
    assert_eq!(replica.verify(&revoked).await.verdict(), Verdict::Revoked);
    // Tokens never verified before the outage: each is a cache miss.
    let mut cold = Vec::new();
    for i in 0..40 {
        cold.push(replica.create(&format!("cold-{i}")).await.1);
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut load = tokio::task::JoinSet::new();
    for (name, secret) in [("live", live.clone()), ("revoked", revoked.clone())] {
        let (replica, seen, stop) = (replica.clone(), seen.clone(), stop.clone());
        load.spawn(async move {
            while !stop.is_cancelled() {
                let got = try_verify(&replica, &secret).await;
                seen.lock()
                    .unwrap()
                    .verify
                    .push((Instant::now(), name, got));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    {
        let (replica, seen, stop) = (replica.clone(), seen.clone(), stop.clone());
        load.spawn(async move {
            let mut created: Vec<String> = Vec::new();
            let mut call = 0;
            while !stop.is_cancelled() {
                call += 1;
                let got = try_create(replica.admin.clone(), &format!("load-{call}"))
                    .await
                    .map(|c| c.token.expect("token").id)
                    .map_err(|s| s.code());
                if let Ok(id) = &got {
                    created.push(id.clone());
                }
                seen.lock().unwrap().created.push((Instant::now(), got));
                // Revoke every other token created so far.
                if call % 2 == 0
                    && let Some(id) = created.pop()
                {
                    let got = replica
                        .admin
                        .clone()
                        .revoke_token(with_bearer(
                            pb::RevokeTokenRequest {
                                id: id.clone(),
                                reason: "load".into(),
                            },
                            ADMIN_TOKEN,
                        ))
                        .await
                        .map(|_| ())
                        .map_err(|s| s.code());
                    seen.lock().unwrap().revoked.push((Instant::now(), id, got));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = Instant::now();
    tokio::task::block_in_place(|| cluster.stop());

    // Within the staleness bound: cached tokens still answer and health is
    // SERVING; a miss is UNAVAILABLE (never a verdict), once the pool has
    // given up connecting.
    assert_eq!(try_verify(&replica, &live).await, Ok(Verdict::Valid));
    assert_eq!(health(&replica).await, ServingStatus::Serving);
    assert_eq!(try_verify(&replica, &cold[0]).await, Err(Code::Unavailable));
    // Past it: nothing is trusted, health is NOT_SERVING.
    tokio::time::sleep(
        (stopped + staleness + Duration::from_secs(1)).saturating_duration_since(Instant::now()),
    )
    .await;
    assert_eq!(try_verify(&replica, &live).await, Err(Code::Unavailable));
    assert_eq!(health(&replica).await, ServingStatus::NotServing);

    // Until the start begins, nothing can have come from the database.
    let restarting = Instant::now();
    tokio::task::block_in_place(|| cluster.start());
    let restarted = Instant::now();
    // Recovery, by itself: a cold token verifies and an admin call succeeds.
    let mut verify_back = None;
    let mut admin_back = None;
    let mut next_cold = 2;
    while verify_back.is_none() || admin_back.is_none() {
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "not recovered 30 s after the restart"
        );
        if verify_back.is_none() {
            if try_verify(&replica, &cold[next_cold]).await == Ok(Verdict::Valid) {
                verify_back = Some(restarted.elapsed());
            }
            next_cold += 1;
        }
        if admin_back.is_none() && try_create(replica.admin.clone(), "probe").await.is_ok() {
            admin_back = Some(restarted.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(health(&replica).await, ServingStatus::Serving);
    assert_eq!(try_verify(&replica, &live).await, Ok(Verdict::Valid));
    stop.cancel();
    while load.join_next().await.is_some() {}

    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    // Never VALID for the token revoked before the outage; every failure
    // during it is UNAVAILABLE.
    for (_, name, got) in &seen.verify {
        if *name == "revoked" {
            assert_ne!(*got, Ok(Verdict::Valid), "a revoked token verified");
        }
        if let Err(code) = got {
            assert_eq!(*code, Code::Unavailable);
        }
    }
    // The live token is served from the cache for at most the staleness
    // bound past the last read before the stop.
    for (at, name, got) in &seen.verify {
        if *name == "live" && *got == Ok(Verdict::Valid) && *at > stopped && *at < restarting {
            assert!(
                at.duration_since(stopped) <= staleness + Duration::from_millis(500),
                "served from the cache {:?} into the outage",
                at.duration_since(stopped)
            );
        }
    }
    let failed_admin = seen.created.iter().filter(|(_, r)| r.is_err()).count()
        + seen.revoked.iter().filter(|(_, _, r)| r.is_err()).count();
    for (_, got) in &seen.created {
        if let Err(code) = got {
            assert_eq!(*code, Code::Unavailable);
        }
    }
    for (_, _, got) in &seen.revoked {
        if let Err(code) = got {
            assert_eq!(*code, Code::Unavailable);
        }
    }

    // Every call that returned OK is reflected; nothing was half-written.
    for (_, got) in &seen.created {
        if let Ok(id) = got {
            assert!(replica.get(id).await.is_ok(), "created {id} is gone");
        }
    }
    for (_, id, got) in &seen.revoked {
        if got.is_ok() {
            let token = replica.get(id).await.unwrap();
            assert_eq!(
                token.status(),
                pb::TokenStatus::Revoked,
                "revoke of {id} lost"
            );
        }
    }
    let db = Database::connect(cluster.url("latchkey")).await.unwrap();
    for (what, sql) in [
        (
            "tokens without their CREATED event",
            "SELECT count(*) FROM tokens t WHERE NOT EXISTS (SELECT 1 FROM token_events e \
             WHERE e.token_id = t.id AND e.kind = 'CREATED')",
        ),
        (
            "revoked tokens without their REVOKED event or change-log row",
            "SELECT count(*) FROM tokens t WHERE t.revoke_time IS NOT NULL AND (NOT EXISTS \
             (SELECT 1 FROM token_events e WHERE e.token_id = t.id AND e.kind = 'REVOKED') \
             OR NOT EXISTS (SELECT 1 FROM token_changes c WHERE c.digest = t.digest))",
        ),
        (
            "REVOKED events of tokens that are not revoked",
            "SELECT count(*) FROM token_events e JOIN tokens t ON t.id = e.token_id \
             WHERE e.kind = 'REVOKED' AND t.revoke_time IS NULL",
        ),
    ] {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                sql,
            ))
            .await
            .unwrap()
            .unwrap();
        let count: i64 = row.try_get_by_index(0).unwrap();
        assert_eq!(count, 0, "{what}");
    }
    db.close().await.unwrap();

    let ok_verify = seen.verify.iter().filter(|(_, _, r)| r.is_ok()).count();
    println!(
        "outage: {} Verify calls ({} answered, {} UNAVAILABLE), {} admin calls ({} UNAVAILABLE); \
         recovered {:.2} s (Verify miss) and {:.2} s (admin) after the restart",
        seen.verify.len(),
        ok_verify,
        seen.verify.len() - ok_verify,
        seen.created.len() + seen.revoked.len(),
        failed_admin,
        verify_back.unwrap().as_secs_f64(),
        admin_back.unwrap().as_secs_f64(),
    );
}
