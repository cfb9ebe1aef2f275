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

pub async fn try_spawn_app_on(db: Arc<TestDb>, settings: Settings) -> anyhow::Result<TestApp> {
    capture_logs();
    let clock = Arc::new(ManualClock::new());
    let gate = Arc::new(MissGate::default());
    let hook_gate = Arc::clone(&gate);
    let options = Options {
        clock: clock.clone(),
        miss_hook: Some(Arc::new(move || {
            let gate = Arc::clone(&hook_gate);
            Box::pin(async move { gate.pass().await }) as Pin<Box<dyn Future<Output = ()> + Send>>
        })),
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

    /// Stops and starts again on the same database and settings.
    pub async fn restart(self) -> TestApp {
        let (db, settings) = self.stop().await;
        spawn_app_on(db, settings).await
    }

    /// `msg` with the static admin credential attached.
    pub fn admin_request<T>(&self, msg: T) -> Request<T> {
        with_bearer(msg, ADMIN_TOKEN)
    }

    pub async fn create(
        &self,
        req: pb::CreateTokenRequest,
    ) -> Result<pb::CreateTokenResponse, Status> {
        self.admin
            .clone()
            .create_token(self.admin_request(req))
            .await
            .map(|r| r.into_inner())
    }

    /// Creates a token for `owner` with `scopes`; returns it and its secret.
    pub async fn create_token(&self, owner: &str, scopes: &[&str]) -> (pb::Token, String) {
        let created = self
            .create(pb::CreateTokenRequest {
                owner: owner.to_owned(),
                name: format!("{owner} token"),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            })
            .await
            .expect("CreateToken");
        (created.token.expect("token"), created.secret)
    }

    pub async fn verify(&self, secret: &str, required: &[&str]) -> pb::VerifyResponse {
        self.try_verify(secret, required).await.expect("Verify")
    }

    pub async fn try_verify(
        &self,
        secret: &str,
        required: &[&str],
    ) -> Result<pb::VerifyResponse, Status> {
        self.verifier
            .clone()
            .verify(pb::VerifyRequest {
                token: secret.to_owned(),
                required_scopes: required.iter().map(|s| (*s).to_owned()).collect(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Starts a Verify that misses the cache and returns once it is paused
    /// in the miss gate, having read the database but not yet cached what it
    /// read. [`MissGate::release`] lets it finish.
    pub async fn start_paused_verify(
        &self,
        secret: &str,
    ) -> JoinHandle<Result<pb::VerifyResponse, Status>> {
        self.gate.arm();
        let mut client = self.verifier.clone();
        let request = pb::VerifyRequest {
            token: secret.to_owned(),
            required_scopes: vec![],
        };
        let call =
            tokio::spawn(async move { client.verify(request).await.map(|r| r.into_inner()) });
        self.gate.reached().await;
        call
    }

    /// Creates a token for `owner` that expires `secs` from now.
    pub async fn create_with_ttl(&self, owner: &str, secs: i64) -> pb::CreateTokenResponse {
        self.create(pb::CreateTokenRequest {
            owner: owner.to_owned(),
            expiration: Some(pb::create_token_request::Expiration::Ttl(duration(secs))),
            ..Default::default()
        })
        .await
        .expect("CreateToken")
    }

    pub async fn get(&self, id: &str) -> Result<pb::Token, Status> {
        self.admin
            .clone()
            .get_token(self.admin_request(pb::GetTokenRequest { id: id.to_owned() }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn list(&self, req: pb::ListTokensRequest) -> Result<pb::ListTokensResponse, Status> {
        self.admin
            .clone()
            .list_tokens(self.admin_request(req))
            .await
            .map(|r| r.into_inner())
    }

    /// Every token, every page, newest first.
    pub async fn list_all(&self) -> Vec<pb::Token> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .list(pb::ListTokensRequest {
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .expect("ListTokens");
            all.extend(page.tokens);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }

    pub async fn revoke(&self, id: &str, reason: &str) -> Result<pb::Token, Status> {
        self.admin
            .clone()
            .revoke_token(self.admin_request(pb::RevokeTokenRequest {
                id: id.to_owned(),
                reason: reason.to_owned(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn restore(&self, id: &str) -> Result<pb::Token, Status> {
        self.admin
            .clone()
            .restore_token(self.admin_request(pb::RestoreTokenRequest { id: id.to_owned() }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn delete(&self, id: &str) -> Result<(), Status> {
        self.admin
            .clone()
            .delete_token(self.admin_request(pb::DeleteTokenRequest { id: id.to_owned() }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn update(&self, token: pb::Token, paths: &[&str]) -> Result<pb::Token, Status> {
        let update_mask = (!paths.is_empty()).then(|| prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        });
        self.admin
            .clone()
            .update_token(self.admin_request(pb::UpdateTokenRequest {
                token: Some(token),
                update_mask,
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn renew(
        &self,
        req: pb::RenewTokenRequest,
    ) -> Result<pb::CreateTokenResponse, Status> {
        self.admin
            .clone()
            .renew_token(self.admin_request(req))
            .await
            .map(|r| r.into_inner())
    }

    /// Renews `id` with no grace period and the old lifetime.
    pub async fn try_renew(&self, id: &str) -> Result<pb::CreateTokenResponse, Status> {
        self.renew(pb::RenewTokenRequest {
            id: id.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// Renews `id` with a grace period of `grace_secs` (0: none).
    pub async fn renew_with_grace(&self, id: &str, grace_secs: i64) -> (pb::Token, String) {
        let renewed = self
            .renew(pb::RenewTokenRequest {
                id: id.to_owned(),
                grace_period: (grace_secs > 0).then(|| duration(grace_secs)),
                expiration: None,
            })
            .await
            .expect("RenewToken");
        (renewed.token.expect("token"), renewed.secret)
    }

    pub async fn disable_owner(&self, owner: &str, reason: &str) -> Result<pb::Owner, Status> {
        self.admin
            .clone()
            .disable_owner(self.admin_request(pb::DisableOwnerRequest {
                owner: owner.to_owned(),
                reason: reason.to_owned(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn enable_owner(&self, owner: &str) -> Result<pb::Owner, Status> {
        self.admin
            .clone()
            .enable_owner(self.admin_request(pb::EnableOwnerRequest {
                owner: owner.to_owned(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn get_owner(&self, owner: &str) -> Result<pb::Owner, Status> {
        self.admin
            .clone()
            .get_owner(self.admin_request(pb::GetOwnerRequest {
                owner: owner.to_owned(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn delete_owner_tokens(&self, owner: &str) -> Result<i64, Status> {
        self.admin
            .clone()
            .delete_owner_tokens(self.admin_request(pb::DeleteOwnerTokensRequest {
                owner: owner.to_owned(),
            }))
            .await
            .map(|r| r.into_inner().deleted_count)
    }

    pub async fn list_events(
        &self,
        req: pb::ListTokenEventsRequest,
    ) -> Result<pb::ListTokenEventsResponse, Status> {
        self.admin
            .clone()
            .list_token_events(self.admin_request(req))
            .await
            .map(|r| r.into_inner())
    }

    /// Every event for `token_id` and `owner` (either may be empty), newest
    /// first.
    pub async fn events(&self, token_id: &str, owner: &str) -> Vec<pb::TokenEvent> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .list_events(pb::ListTokenEventsRequest {
                    token_id: token_id.to_owned(),
                    owner: owner.to_owned(),
                    page_size: 1000,
                    page_token,
                })
                .await
                .expect("ListTokenEvents");
            all.extend(page.events);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }

    /// The kinds of every event of `token_id`, oldest first.
    pub async fn event_kinds(&self, token_id: &str) -> Vec<pb::EventKind> {
        let mut kinds: Vec<_> = self
            .events(token_id, "")
            .await
            .iter()
            .map(|e| e.kind())
            .collect();
        kinds.reverse();
        kinds
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

/// An HTTP answer: status, headers (names lowercase) and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends one HTTP/1.1 request, as written, over a new connection, adding
/// `Host`, `Content-Length` and `Connection: close`.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&http_request_bytes(method, path, headers, body))
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse_http_answer(raw)
}

/// An HTTP/1.1 request as `http_request` writes it.
pub fn http_request_bytes(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: latchkey.example.com\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// An HTTP/1.1 answer read to its end.
pub fn parse_http_answer(raw: Vec<u8>) -> HttpAnswer {
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub fn with_bearer<T>(msg: T, credential: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {credential}")
            .parse()
            .expect("ascii header"),
    );
    req
}

/// `tokens` without their last-use times, which the flusher writes behind
/// whenever it likes: for comparing what an admin call changed.
pub fn without_last_use(tokens: Vec<pb::Token>) -> Vec<pb::Token> {
    tokens
        .into_iter()
        .map(|t| pb::Token {
            last_used_time: None,
            ..t
        })
        .collect()
}

/// Asserts `result` is INVALID_ARGUMENT and its message names `field`.
#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
    let status = result.expect_err("expected INVALID_ARGUMENT");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}:"))
            || status.message().starts_with(&format!("{field}[")),
        "message {:?} does not name {field}",
        status.message()
    );
}

#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), code, "{status:?}");
    status
}

pub fn now_plus(clock: &ManualClock, d: Duration) -> prost_types::Timestamp {
    use latchkey::clock::Clock as _;
    let (seconds, nanos) = clock.now().checked_add(d).unwrap().to_unix();
    prost_types::Timestamp { seconds, nanos }
}

/// The manual clock's time, as protobuf carries it.
pub trait ClockExt {
    fn now_timestamp(&self) -> prost_types::Timestamp;
    /// Sets the clock to `t` (microsecond precision, as stored).
    fn set_timestamp(&self, t: prost_types::Timestamp);
}

impl ClockExt for ManualClock {
    fn now_timestamp(&self) -> prost_types::Timestamp {
        now_plus(self, Duration::ZERO)
    }

    fn set_timestamp(&self, t: prost_types::Timestamp) {
        self.set(latchkey::clock::Timestamp::from_micros(
            t.seconds * 1_000_000 + i64::from(t.nanos / 1000),
        ));
    }
}

pub fn duration(secs: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: secs,
        nanos: 0,
    }
}

pub const DAY: u64 = 86_400;

/// Everything every test has logged so far, at debug level and finer for
/// latchkey itself (unless [`capture_logs_with`] said otherwise).
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(Arc::default)
}

fn capture_logs() {
    capture_logs_with("debug,latchkey=trace");
}

/// Captures every log line from now on, filtered by `filter`; the first
/// call in a test binary sets the filter for all of it.
pub fn capture_logs_with(filter: &str) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let buffer = Arc::clone(log_buffer());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(move || LogWriter(Arc::clone(&buffer)))
            .try_init();
    });
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the `latchkey` binary with `args` against `db` (its URL and the
/// test key, nothing else from this process's environment).
pub async fn run_cli(db: &TestDb, args: &[&str]) -> std::process::Output {
    run_cli_with(db, args, &[]).await
}

/// [`run_cli`] with more environment variables.
pub async fn run_cli_with(
    db: &TestDb,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LATCHKEY_DATABASE_URL", &db.url)
        .env("LATCHKEY_HMAC_KEY", HMAC_KEY)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .await
        .expect("run the latchkey binary")
}

/// The latchkey binary, run after `wrapper` (such as `prlimit --nofile=64
/// --`), set up to serve `db` on free ports with the test key and JSON logs
/// on stderr (piped), and nothing else from this process's environment.
pub fn server_command(db: &TestDb, wrapper: &[&str]) -> std::process::Command {
    let binary = env!("CARGO_BIN_EXE_latchkey");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = std::process::Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => std::process::Command::new(binary),
    };
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LATCHKEY_LISTEN_ADDR", "127.0.0.1:0")
        .env("LATCHKEY_METRICS_ADDR", "127.0.0.1:0")
        .env("LATCHKEY_DATABASE_URL", &db.url)
        .env("LATCHKEY_HMAC_KEY", HMAC_KEY)
        .env("LATCHKEY_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    command
}
