//! `spawn_app()`: the real `Application` on port 0 with a fresh database (a
//! SQLite file in a temp dir, or with `TEST_DATABASE_URL` a fresh PostgreSQL
//! database, dropped afterwards), the real migrations, and typed helpers that
//! call it through a real tonic client.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;

use latchkey::clock::ManualClock;
use latchkey::config::Sensitive;
use latchkey::grpc::pb::{
    self, token_admin_client::TokenAdminClient, token_verify_client::TokenVerifyClient,
};
use latchkey::{Application, Options, Settings};
use sea_orm::{ConnectionTrait, Database};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
pub use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

mod browser;
mod calls;
mod checks;
mod cli;
mod http;
mod logs;

pub use browser::*;
pub use checks::*;
pub use cli::*;
pub use http::*;
pub use logs::*;

pub const ADMIN_TOKEN: &str = "test-admin-credential-0123456789abcdef";
pub const HMAC_KEY: &str = "6c61746368b3792d746573742d6b65792d303132333435363738396162636465";

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs `$name(Backend)` as two tests, `$name::sqlite` and `$name::postgres`.
/// The PostgreSQL one needs `TEST_DATABASE_URL`; without it, it prints a
/// notice and passes.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::helpers::postgres_available() {
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            }
        }
    )+};
}

/// Whether `TEST_DATABASE_URL` is set; prints (once, past the test harness's
/// capture) why PostgreSQL tests are skipped when it is not.
pub fn postgres_available() -> bool {
    static NOTICE: Once = Once::new();
    let set = std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty());
    if !set {
        NOTICE.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "notice: TEST_DATABASE_URL is unset; PostgreSQL tests are skipped (they pass without running)"
            );
        });
    }
    set
}

/// A database that lives as long as the test: a temp dir holding a SQLite
/// file, or a PostgreSQL database dropped when this is dropped.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("latchkey.db").display()
                );
                TestDb {
                    url,
                    backend,
                    _dir: Some(dir),
                    pg: None,
                }
            }
            Backend::Postgres => {
                let admin_url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
                let name = format!("latchkey_test_{}", uuid::Uuid::now_v7().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                TestDb {
                    url: with_database(&admin_url, &name),
                    backend,
                    _dir: None,
                    pg: Some((admin_url, name)),
                }
            }
        }
    }

    /// The SQLite database file (and its WAL), if this is SQLite.
    pub fn sqlite_files(&self) -> Vec<std::path::PathBuf> {
        self._dir
            .as_ref()
            .map(|d| {
                std::fs::read_dir(d.path())
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| !p.to_string_lossy().ends_with(".key"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The PostgreSQL admin URL and this database's name, if Postgres.
    pub fn postgres(&self) -> Option<(&str, &str)> {
        self.pg.as_ref().map(|(u, n)| (u.as_str(), n.as_str()))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.pg.take() {
            // Drop runs outside any runtime we may block; use a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let admin = Database::connect(&admin_url).await?;
                    admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await?;
                    admin.close().await
                })
                .map_err(std::io::Error::other)
            })
            .join();
        }
    }
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Pauses one cache-miss lookup after it read the database, or every one
/// while held, and counts lookups.
pub struct MissGate {
    armed: AtomicBool,
    reached: Notify,
    release: Notify,
    lookups: AtomicUsize,
    /// Open unless [`MissGate::hold`] closed it.
    open: tokio::sync::watch::Sender<bool>,
    inside: AtomicUsize,
    most_inside: AtomicUsize,
}

impl Default for MissGate {
    fn default() -> Self {
        MissGate {
            armed: AtomicBool::new(false),
            reached: Notify::new(),
            release: Notify::new(),
            lookups: AtomicUsize::new(0),
            open: tokio::sync::watch::Sender::new(true),
            inside: AtomicUsize::new(0),
            most_inside: AtomicUsize::new(0),
        }
    }
}

impl MissGate {
    /// Every lookup from now on waits in the gate until [`MissGate::open`].
    pub fn hold(&self) {
        self.open.send_replace(false);
    }

    /// Lets every held lookup go on.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Lookups waiting in the gate now.
    pub fn inside(&self) -> usize {
        self.inside.load(Ordering::SeqCst)
    }

    /// The most lookups that were ever in the gate at once.
    pub fn most_inside(&self) -> usize {
        self.most_inside.load(Ordering::SeqCst)
    }

    async fn pass(&self) {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if self.armed.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            self.release.notified().await;
        }
        let mut open = self.open.subscribe();
        if !*open.borrow_and_update() {
            let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_inside.fetch_max(now, Ordering::SeqCst);
            let _ = open.wait_for(|open| *open).await;
            self.inside.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A hook that passes through this gate.
    pub fn hook(self: &Arc<Self>) -> latchkey::verifier::MissHook {
        let gate = Arc::clone(self);
        Arc::new(move || {
            let gate = Arc::clone(&gate);
            Box::pin(async move { gate.pass().await }) as Pin<Box<dyn Future<Output = ()> + Send>>
        })
    }

    /// The next lookup will wait in the gate until [`MissGate::release`].
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Waits until an armed lookup is inside the gate.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    pub fn release(&self) {
        self.release.notify_one();
    }

    /// Database lookups made by Verify so far.
    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    /// The HTTP listener, if `http_addr` was set.
    pub http_addr: Option<SocketAddr>,
    /// A connection to the server, for clients of other services.
    pub channel: Channel,
    pub admin: TokenAdminClient<Channel>,
    pub verifier: TokenVerifyClient<Channel>,
    pub clock: Arc<ManualClock>,
    pub gate: Arc<MissGate>,
    pub settings: Settings,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    pub db: Arc<TestDb>,
}

/// What the health service says of `service` (UNKNOWN if it cannot answer).
pub async fn health_of(channel: &Channel, service: &str) -> ServingStatus {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_or(ServingStatus::Unknown, |r| r.into_inner().status())
}

/// Settings for a test: port 0, the test's database, known keys, fast flushes.
pub fn test_settings(db: &TestDb) -> Settings {
    let mut s = Settings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        hmac_key: Some(Sensitive::new(HMAC_KEY)),
        admin_token: Some(Sensitive::new(ADMIN_TOKEN)),
        ..Settings::default()
    };
    s.last_used.flush_interval = Duration::from_millis(100);
    s.shutdown.drain_timeout = Duration::from_secs(10);
    s
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    let db = Arc::new(TestDb::new(backend).await);
    let settings = test_settings(&db);
    spawn_app_on(db, settings).await
}

/// [`spawn_app`] with settings changed by `change`.
pub async fn spawn_app_with(backend: Backend, change: impl FnOnce(&mut Settings)) -> TestApp {
    let db = Arc::new(TestDb::new(backend).await);
    let mut settings = test_settings(&db);
    change(&mut settings);
    spawn_app_on(db, settings).await
}

/// Starts (or restarts) the application on `db` with `settings`.
pub async fn spawn_app_on(db: Arc<TestDb>, settings: Settings) -> TestApp {
    try_spawn_app_on(db, settings)
        .await
        .expect("application builds")
}

/// Starts the application and waits until it is ready (its cache warm);
/// a TLS server, which this plaintext channel cannot ask, is not waited for.
pub async fn try_spawn_app_on(db: Arc<TestDb>, settings: Settings) -> anyhow::Result<TestApp> {
    let tls = settings.tls.cert_file.is_some();
    let app = try_spawn_app_warming(db, settings, None).await?;
    if !tls {
        app.until_ready().await;
    }
    Ok(app)
}

/// Starts the application without waiting for it to be ready; warming its
/// cache runs `warm_hook`, if given, between the read and the caching.
pub async fn try_spawn_app_warming(
    db: Arc<TestDb>,
    settings: Settings,
    warm_hook: Option<latchkey::verifier::MissHook>,
) -> anyhow::Result<TestApp> {
    capture_logs();
    let clock = Arc::new(ManualClock::new());
    let gate = Arc::new(MissGate::default());
    let options = Options {
        clock: clock.clone(),
        miss_hook: Some(gate.hook()),
        warm_hook,
    };
    let app = Application::build_with(settings.clone(), options).await?;
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let http_addr = app.http_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let endpoint = Channel::from_shared(format!("http://{addr}"))?;
    // A TLS server is reached by the test's own channels; this plaintext
    // one would fail its handshake.
    let channel = if settings.tls.cert_file.is_some() {
        endpoint.connect_lazy()
    } else {
        endpoint.connect().await?
    };
    Ok(TestApp {
        addr,
        metrics_addr,
        http_addr,
        admin: TokenAdminClient::new(channel.clone()),
        verifier: TokenVerifyClient::new(channel.clone()),
        channel,
        clock,
        gate,
        settings,
        stop: Some(stop),
        server: Some(server),
        db,
    })
}

impl TestApp {
    /// Stops the server as a stop signal would, and waits until it has
    /// drained, flushed and closed.
    pub async fn stop(mut self) -> (Arc<TestDb>, Settings) {
        self.shutdown().await.expect("clean shutdown");
        (Arc::clone(&self.db), self.settings.clone())
    }

    /// Sends the stop signal without waiting.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server task to end.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        self.signal_stop();
        match self.server.take() {
            Some(server) => server.await?,
            None => Ok(()),
        }
    }

    /// Readiness: TokenVerify's health (the API services share it).
    pub async fn readiness(&self) -> ServingStatus {
        health_of(&self.channel, "latchkey.v1.TokenVerify").await
    }

    /// Liveness: the server's own health.
    pub async fn liveness(&self) -> ServingStatus {
        health_of(&self.channel, "").await
    }

    /// Waits until the API services are SERVING (the cache warm).
    pub async fn until_ready(&self) {
        for _ in 0..1_000 {
            if self.readiness().await == ServingStatus::Serving {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the server never became ready");
    }

    /// Stops and starts again on the same database and settings.
    pub async fn restart(self) -> TestApp {
        let (db, settings) = self.stop().await;
        spawn_app_on(db, settings).await
    }

    /// Runs `sql` on the test database, outside the service.
    pub async fn execute_sql(&self, sql: &str) {
        let conn = Database::connect(&self.db.url).await.unwrap();
        conn.execute_unprepared(sql).await.unwrap();
        conn.close().await.ok();
    }

    /// Polls GetToken until `last_used_time` is set and differs from
    /// `previous` (the flusher writes it behind, every 100 ms in tests).
    pub async fn wait_for_last_used(
        &self,
        id: &str,
        previous: Option<prost_types::Timestamp>,
    ) -> prost_types::Timestamp {
        for _ in 0..100 {
            let current = self.get(id).await.expect("GetToken").last_used_time;
            if let Some(t) = current.filter(|t| Some(*t) != previous) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("last_used_time was never written (or never moved) for {id}");
    }

    /// Everything stored in the database, as text (PostgreSQL) or raw bytes
    /// of the database files (SQLite).
    pub async fn database_dump(&self) -> Vec<u8> {
        match self.db.backend {
            Backend::Sqlite => self
                .db
                .sqlite_files()
                .iter()
                .flat_map(|p| std::fs::read(p).unwrap())
                .collect(),
            Backend::Postgres => {
                let conn = Database::connect(&self.db.url).await.unwrap();
                let mut out = Vec::new();
                for table in [
                    "tokens",
                    "owners",
                    "token_events",
                    "latchkey_meta",
                    "seaql_migrations",
                ] {
                    let rows = conn
                        .query_all_raw(sea_orm::Statement::from_string(
                            conn.get_database_backend(),
                            format!("SELECT t::text AS row FROM {table} t"),
                        ))
                        .await
                        .unwrap();
                    for r in rows {
                        let text: String = r.try_get("", "row").unwrap();
                        out.extend_from_slice(text.as_bytes());
                        out.push(b'\n');
                    }
                }
                conn.close().await.ok();
                out
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.signal_stop();
    }
}
