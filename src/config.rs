//! Settings: defaults < TOML file (`--config` or `LATCHKEY_CONFIG`) <
//! environment `LATCHKEY_*`, nested keys joined with `__`
//! (`LATCHKEY_CACHE__CAPACITY`). Validated once, at start.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::token::Prefix;
use latchkey_api::web::TokenReviewSettings;
use latchkey_service::lifecycle::{Limits, Policy, SelfRenew};

/// The longest duration protobuf can carry (10,000 years).
const MAX_DURATION: Duration = Duration::from_secs(315_576_000_000);

/// Environment variable naming the TOML file; not a setting itself.
pub const CONFIG_ENV: &str = "LATCHKEY_CONFIG";

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// gRPC address; port 0 picks a free port (the bound address is logged).
    #[serde(deserialize_with = "address")]
    pub listen_addr: SocketAddr,
    /// `sqlite://…` (embedded) or `postgres://…`.
    pub database_url: String,
    /// Most connections this process keeps open to PostgreSQL; cache misses,
    /// admin calls and the last-used flusher share them. (SQLite uses one.)
    pub database_max_connections: u32,
    /// The longest wait on the database: to connect, for a pooled
    /// connection, for each statement's answer (PostgreSQL's
    /// `statement_timeout` too). Past it, the call is UNAVAILABLE.
    #[serde(with = "humantime_serde")]
    pub database_timeout: Duration,
    /// 32+ bytes, hex or base64. Required with PostgreSQL.
    pub hmac_key: Option<Sensitive>,
    /// Several keys, comma-separated, the primary first: new tokens are
    /// digested with the primary, and tokens stored under the others keep
    /// working and move to the primary as they are used.
    pub hmac_keys: Option<Sensitive>,
    /// A file holding the keys, one per line, the primary first (`#`
    /// starts a comment).
    pub hmac_keys_file: Option<std::path::PathBuf>,
    /// Static admin credential, 32+ characters.
    pub admin_token: Option<Sensitive>,
    pub token_prefix: String,
    /// Prometheus `/metrics` address (reserved for metrics).
    #[serde(deserialize_with = "address")]
    pub metrics_addr: SocketAddr,
    /// HTTP address for RFC 7662 introspection and Kubernetes TokenReview;
    /// unset: no HTTP listener.
    #[serde(deserialize_with = "optional_address")]
    pub http_addr: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// Apply migrations at start.
    pub auto_migrate: bool,
    pub cache: CacheSettings,
    pub lookups: LookupSettings,
    pub last_used: LastUsedSettings,
    pub changes: ChangesSettings,
    pub ext_authz: ExtAuthzSettings,
    pub token_review: TokenReviewSettings,
    pub tls: TlsSettings,
    pub server: ServerSettings,
    pub policy: Policy,
    pub limits: Limits,
    pub self_renew: SelfRenew,
    pub shutdown: ShutdownSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: "sqlite://latchkey.db?mode=rwc".to_owned(),
            database_max_connections: 10,
            database_timeout: crate::store::DEFAULT_TIMEOUT,
            hmac_key: None,
            hmac_keys: None,
            hmac_keys_file: None,
            admin_token: None,
            token_prefix: "lk".to_owned(),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            http_addr: None,
            log_format: LogFormat::Text,
            auto_migrate: true,
            cache: CacheSettings::default(),
            lookups: LookupSettings::default(),
            last_used: LastUsedSettings::default(),
            changes: ChangesSettings::default(),
            ext_authz: ExtAuthzSettings::default(),
            token_review: TokenReviewSettings::default(),
            tls: TlsSettings::default(),
            server: ServerSettings::default(),
            policy: Policy::default(),
            limits: Limits::default(),
            self_renew: SelfRenew::default(),
            shutdown: ShutdownSettings::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Most tokens (and unknown digests) held in memory; 0 turns the cache
    /// off, so that every Verify reads the database.
    pub capacity: u64,
    /// How long a cached token is kept without asking the database again.
    /// Changes made through the API reach every replica's cache through the
    /// change log much sooner; this bounds changes made any other way.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long "no such token" is remembered.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            capacity: 100_000,
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(2),
        }
    }
}

/// Bounds on Verify's cache misses (each a database lookup), so that a
/// flood of unknown tokens cannot take the database, or this process, from
/// everyone else. Cached tokens are not counted and keep verifying.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LookupSettings {
    /// Misses in progress at once, waiting their turn or in a lookup; one
    /// more is answered `UNAVAILABLE` at once.
    pub max_pending: usize,
    /// Lookups started per second, one second's worth available at once;
    /// a miss past it waits its turn. 0 for no bound.
    pub max_per_second: u32,
}

impl Default for LookupSettings {
    fn default() -> Self {
        LookupSettings {
            max_pending: 1024,
            max_per_second: 5000,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LastUsedSettings {
    /// How often recorded uses are written.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for LastUsedSettings {
    fn default() -> Self {
        LastUsedSettings {
            flush_interval: Duration::from_secs(5),
        }
    }
}

/// TLS for the gRPC server; off unless a certificate and key are given.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, the server's first.
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<std::path::PathBuf>,
    /// PEM CA certificates: with it, every client must present a certificate
    /// one of them signed (mTLS).
    pub client_ca_file: Option<std::path::PathBuf>,
}

impl TlsSettings {
    /// The files, if TLS is on.
    pub fn files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.cert_file.clone()?,
            key: self.key_file.clone()?,
            client_ca: self.client_ca_file.clone(),
        })
    }
}

/// What one client may take of a port (gRPC, HTTP and metrics alike), so
/// that no client can starve the others.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Open connections per port; one more is closed as soon as it is
    /// accepted.
    pub max_connections: usize,
    /// Open connections per port from one peer address, so that one host
    /// cannot take a port. Behind a mesh every connection comes from the
    /// local proxy, which pools a few.
    pub max_connections_per_ip: usize,
    /// A new connection must finish its TLS handshake and send its opening
    /// (the HTTP/2 preface, or a first HTTP/1.1 request) within it, or it is
    /// closed.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A connection with no call open this long is told to go away (HTTP/2
    /// GOAWAY); its client reconnects when it next needs to.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A connection this old (give or take a tenth) is told to go away, so
    /// that long-lived clients spread over replicas started since.
    #[serde(with = "humantime_serde")]
    pub max_connection_age: Duration,
    /// How long calls still open on a connection told to go away (for its
    /// age or idleness) may take before it is closed.
    #[serde(with = "humantime_serde")]
    pub max_connection_age_grace: Duration,
    /// Calls a client may have open at once on one connection (HTTP/2
    /// streams). The limit is announced to the client, whose further calls
    /// wait for a free stream instead of failing; a stream opened past it
    /// is reset.
    pub max_concurrent_streams: u32,
    /// A call not answered within it is cancelled (`CANCELLED`), its work
    /// dropped.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request header block (all headers of a call), in bytes.
    pub max_header_bytes: u32,
    /// HTTP/2 pings on idle connections, so that dead peers are noticed and
    /// their connections closed.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connection_age: Duration::from_secs(3600),
            max_connection_age_grace: Duration::from_secs(30),
            max_concurrent_streams: 256,
            request_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// Envoy's external authorization (`envoy.service.auth.v3.Authorization`).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtAuthzSettings {
    /// Remove the `authorization` header from allowed requests, so the
    /// upstream service never sees the token.
    pub remove_authorization: bool,
}

/// How changes made through other replicas reach this one's cache.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChangesSettings {
    /// How often the change log is read: the longest a change committed
    /// elsewhere goes unseen here when no notification arrives.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// PostgreSQL: also wait for a notification on each commit, so that
    /// changes arrive within milliseconds.
    pub listen: bool,
    /// How long change-log rows are kept: a replica cut off from the
    /// database for longer drops its whole cache when it is back.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How long cached answers are served after the last complete read of
    /// the change log (a database outage, say); past it, Verify asks the
    /// database and, if it cannot be reached, answers UNAVAILABLE.
    #[serde(with = "humantime_serde")]
    pub max_staleness: Duration,
}

impl Default for ChangesSettings {
    fn default() -> Self {
        ChangesSettings {
            poll_interval: Duration::from_secs(1),
            listen: true,
            retention: Duration::from_secs(3600),
            max_staleness: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// After a stop signal, how long in-flight calls may take to finish.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings {
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// A configured secret: `Debug` does not print it, and its memory is zeroed
/// when it is dropped.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Sensitive(String);

impl Drop for Sensitive {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Sensitive {
    pub fn new(s: impl Into<String>) -> Self {
        Sensitive(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sensitive(..)")
    }
}

impl Settings {
    /// Reads defaults, then the TOML file if given, then `LATCHKEY_*`.
    ///
    /// # Errors
    /// If the file cannot be read, a value cannot be parsed, a key is unknown,
    /// or the result breaks a rule (see [`Settings::validate`]).
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_from(file, std::env::vars())
    }

    /// [`Settings::load`] with the environment given explicitly.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(k, v)| {
                k.starts_with("LATCHKEY_") && k != CONFIG_ENV && !is_service_link(k, v)
            })
            .collect();
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let names: Vec<String> = env.keys().cloned().collect();
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("LATCHKEY")
                    .prefix_separator("_")
                    .separator("__")
                    .source(Some(env)),
            )
            .build()
            .context("reading configuration")?
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!(explain(&e.to_string(), &names)))
            .context("reading configuration")?;
        settings.validate()?;
        Ok(settings)
    }

    /// The configured token prefix.
    ///
    /// # Errors
    /// Naming `LATCHKEY_TOKEN_PREFIX`, if it is not a valid prefix.
    pub fn prefix(&self) -> anyhow::Result<Prefix> {
        Prefix::new(&self.token_prefix)
            .map_err(|why| anyhow::anyhow!("LATCHKEY_TOKEN_PREFIX {why}"))
    }

    /// # Errors
    /// Names the first setting that breaks its rule.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.prefix()?;
        if let Some(t) = &self.admin_token
            && t.expose().chars().count() < 32
        {
            bail!("LATCHKEY_ADMIN_TOKEN must be at least 32 characters");
        }
        if [
            self.hmac_key.is_some(),
            self.hmac_keys.is_some(),
            self.hmac_keys_file.is_some(),
        ]
        .iter()
        .filter(|set| **set)
        .count()
            > 1
        {
            bail!("set one of LATCHKEY_HMAC_KEY, LATCHKEY_HMAC_KEYS and LATCHKEY_HMAC_KEYS_FILE");
        }
        let review_scope = &self.token_review.required_scope;
        if !review_scope.is_empty()
            && let Err(why) = crate::token::scope::validate(review_scope)
        {
            bail!("token_review.required_scope: {why}");
        }
        for (name, prefix) in [
            ("token_review.group_prefix", &self.token_review.group_prefix),
            (
                "token_review.username_prefix",
                &self.token_review.username_prefix,
            ),
        ] {
            if prefix.chars().any(char::is_control) {
                bail!("{name} must not contain control characters");
            }
        }
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| self.database_url.starts_with(scheme))
        {
            bail!(
                "LATCHKEY_DATABASE_URL must name a SQLite file (sqlite://latchkey.db) or a \
                 PostgreSQL database (postgres://user@host:5432/name); latchkey supports no other"
            );
        }
        if self.database_max_connections == 0 {
            bail!("LATCHKEY_DATABASE_MAX_CONNECTIONS must be at least 1");
        }
        if self.database_timeout.is_zero() || self.database_timeout > Duration::from_secs(3600) {
            bail!("LATCHKEY_DATABASE_TIMEOUT must be positive and at most an hour");
        }
        if self.cache.ttl.is_zero() || self.cache.negative_ttl.is_zero() {
            bail!("cache.ttl and cache.negative_ttl must be positive");
        }
        if self.lookups.max_pending == 0 {
            bail!("lookups.max_pending must be at least 1");
        }
        if self.last_used.flush_interval.is_zero() {
            bail!("last_used.flush_interval must be positive");
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            bail!("tls.cert_file and tls.key_file go together: set both or neither");
        }
        if self.tls.client_ca_file.is_some() && self.tls.cert_file.is_none() {
            bail!("tls.client_ca_file needs tls.cert_file and tls.key_file");
        }
        let server = &self.server;
        if server.max_connections == 0 || server.max_connections_per_ip == 0 {
            bail!("server.max_connections and server.max_connections_per_ip must be at least 1");
        }
        for (name, d) in [
            ("server.handshake_timeout", server.handshake_timeout),
            ("server.idle_timeout", server.idle_timeout),
            ("server.max_connection_age", server.max_connection_age),
            ("server.request_timeout", server.request_timeout),
            ("server.keepalive_interval", server.keepalive_interval),
            ("server.keepalive_timeout", server.keepalive_timeout),
        ] {
            if d.is_zero() || d > MAX_DURATION {
                bail!("{name} must be positive and at most 10000 years");
            }
        }
        if server.max_connection_age_grace > MAX_DURATION {
            bail!("server.max_connection_age_grace must be at most 10000 years");
        }
        if self.changes.poll_interval.is_zero() {
            bail!("changes.poll_interval must be positive");
        }
        if self.changes.max_staleness < self.changes.poll_interval {
            bail!("changes.max_staleness must be at least changes.poll_interval");
        }
        if self.changes.retention < 2 * crate::changes::GAP_TIMEOUT
            || self.changes.retention < 10 * self.changes.poll_interval
        {
            bail!(
                "changes.retention must be at least 2 minutes and 10 times changes.poll_interval"
            );
        }
        if self.policy.max_ttl.is_some_and(|d| d.is_zero()) {
            bail!("policy.max_ttl must be positive when set");
        }
        if let Some(d) = self.policy.default_idle_timeout
            && (d.is_zero() || d > MAX_DURATION)
        {
            bail!("policy.default_idle_timeout must be positive and at most 10000 years when set");
        }
        Ok(())
    }
}

/// An address setting: an IP address and port, or a host name and port that
/// resolves (the first address it resolves to).
fn address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    resolve(&text).map_err(serde::de::Error::custom)
}

fn optional_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(text) => resolve(&text).map(Some).map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

fn resolve(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    std::net::ToSocketAddrs::to_socket_addrs(text)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            format!(
                "{text:?} is not an address and port: write an IP address and a port, such as \
                 127.0.0.1:50051 (this machine only) or 0.0.0.0:50051 (every interface), or a \
                 host name that resolves and a port"
            )
        })
}

/// The configuration crate's error, with the `LATCHKEY_*` variable it is
/// about named, and for a misplaced single underscore the name it meant
/// (`LATCHKEY_CACHE_CAPACITY` for `LATCHKEY_CACHE__CAPACITY`).
fn explain(error: &str, names: &[String]) -> String {
    let quoted = |after: &str| -> Option<String> {
        let rest = error.split_once(after)?.1;
        let rest = rest.strip_prefix('`')?;
        Some(rest.split_once('`')?.0.to_owned())
    };
    if let Some(field) = quoted("unknown field ") {
        let upper = field.to_ascii_uppercase();
        let Some(name) = names
            .iter()
            .find(|n| **n == format!("LATCHKEY_{upper}") || n.ends_with(&format!("__{upper}")))
        else {
            return error.to_owned();
        };
        let expected: Vec<&str> = error
            .split_once("expected one of ")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        let meant = field
            .char_indices()
            .filter(|(_, c)| *c == '_')
            .find_map(|(i, _)| {
                expected.contains(&&field[..i]).then(|| {
                    format!(
                        "{}__{}",
                        &name[..name.len() - field.len() + i],
                        &upper[i + 1..]
                    )
                })
            });
        return match meant {
            Some(meant) => format!(
                "{name} is not a setting; nested settings join their parts with a double \
                 underscore: did you mean {meant}? ({error})"
            ),
            None => format!("{name} is not a setting ({error})"),
        };
    }
    if let Some(key) = quoted("for key ") {
        let name = format!("LATCHKEY_{}", key.to_ascii_uppercase().replace('.', "__"));
        return format!("{name}: {error}");
    }
    error.to_owned()
}

/// Whether `name=value` is one of the variables Kubernetes puts into every
/// pod for each Service of its namespace ("service links"): a Service named
/// `latchkey`, as a Helm release of that name makes, gives
/// `LATCHKEY_SERVICE_HOST`, `LATCHKEY_SERVICE_PORT[_<NAME>]`,
/// `LATCHKEY_PORT=tcp://…` and `LATCHKEY_PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR]`
/// (and `latchkey-http` the same under `LATCHKEY_HTTP_`). They have this
/// fixed shape, no setting has it, and they are not settings.
fn is_service_link(name: &str, value: &str) -> bool {
    const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
    if name.ends_with("_SERVICE_HOST") || name.ends_with("_SERVICE_PORT") {
        return true;
    }
    if let Some((_, port_name)) = name.rsplit_once("_SERVICE_PORT_") {
        return !port_name.is_empty();
    }
    if name.ends_with("_PORT")
        && PROTOCOLS
            .iter()
            .any(|p| value.starts_with(&format!("{}://", p.to_ascii_lowercase())))
    {
        return true;
    }
    // `…_PORT_<n>_<PROTO>` and its `_PROTO`, `_PORT`, `_ADDR`.
    let mut parts = name.rsplit('_');
    let mut last = parts.next().unwrap_or_default();
    if ["PROTO", "PORT", "ADDR"].contains(&last) {
        last = parts.next().unwrap_or_default();
    }
    let number = parts.next().unwrap_or_default();
    PROTOCOLS.contains(&last)
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && parts.next() == Some("PORT")
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn with_nothing_set_the_documented_defaults_apply() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.listen_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(s.database_url, "sqlite://latchkey.db?mode=rwc");
        assert_eq!(s.database_max_connections, 10);
        assert_eq!(s.database_timeout, Duration::from_secs(5));
        assert_eq!(s.token_prefix, "lk");
        assert_eq!(s.metrics_addr.to_string(), "127.0.0.1:9090");
        assert_eq!(s.log_format, LogFormat::Text);
        assert!(s.auto_migrate);
        assert_eq!(s.last_used.flush_interval, Duration::from_secs(5));
        assert!(s.hmac_key.is_none() && s.admin_token.is_none() && s.policy.max_ttl.is_none());
        assert!(s.policy.default_idle_timeout.is_none());
        assert_eq!(s.limits.create_per_owner_per_minute, 10);
        assert_eq!(s.limits.max_active_tokens_per_owner, 100);
        assert!(s.http_addr.is_none(), "no HTTP listener unless asked");
        assert_eq!(s.token_review.required_scope, "kubernetes:authenticate");
        assert_eq!(s.token_review.group_prefix, "latchkey:");
        assert_eq!(s.token_review.username_prefix, "latchkey:");
        assert_eq!(s.policy.max_self_renew_grace, Duration::from_secs(3600));
        assert_eq!(s.self_renew.retry_window, Duration::from_secs(30));
    }

    #[test]
    fn the_http_listener_and_token_review_are_set_from_the_environment() {
        let s = Settings::load_from(
            None,
            env(&[
                ("LATCHKEY_HTTP_ADDR", "0.0.0.0:8080"),
                ("LATCHKEY_TOKEN_REVIEW__REQUIRED_SCOPE", "k8s:*"),
                ("LATCHKEY_TOKEN_REVIEW__GROUP_PREFIX", "latchkey-"),
                ("LATCHKEY_POLICY__MAX_SELF_RENEW_GRACE", "10m"),
            ]),
        )
        .unwrap();
        assert_eq!(s.http_addr.unwrap().to_string(), "0.0.0.0:8080");
        assert_eq!(s.token_review.required_scope, "k8s:*");
        assert_eq!(s.token_review.group_prefix, "latchkey-");
        assert_eq!(s.policy.max_self_renew_grace, Duration::from_secs(600));
        let err = Settings::load_from(
            None,
            env(&[("LATCHKEY_TOKEN_REVIEW__REQUIRED_SCOPE", "has space")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("token_review.required_scope"),
            "{err}"
        );
    }

    #[test]
    fn the_environment_overrides_the_file_which_overrides_defaults() {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        writeln!(
            file,
            "listen_addr = \"0.0.0.0:6000\"\ntoken_prefix = \"acme\"\n[cache]\ncapacity = 5\n[policy]\nmax_ttl = \"90d\""
        )
        .unwrap();
        let s = Settings::load_from(
            Some(file.path()),
            env(&[
                ("LATCHKEY_TOKEN_PREFIX", "corp"),
                ("LATCHKEY_CACHE__CAPACITY", "77"),
                ("LATCHKEY_LAST_USED__FLUSH_INTERVAL", "250ms"),
                ("LATCHKEY_AUTO_MIGRATE", "false"),
                ("LATCHKEY_LOG_FORMAT", "json"),
                ("LATCHKEY_POLICY__DEFAULT_IDLE_TIMEOUT", "30d"),
                ("LATCHKEY_LIMITS__CREATE_PER_OWNER_PER_MINUTE", "3"),
                ("LATCHKEY_DATABASE_MAX_CONNECTIONS", "16"),
                ("LATCHKEY_CONFIG", "/ignored.toml"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.listen_addr.to_string(), "0.0.0.0:6000");
        assert_eq!(s.token_prefix, "corp");
        assert_eq!(s.cache.capacity, 77);
        assert_eq!(s.last_used.flush_interval, Duration::from_millis(250));
        assert_eq!(s.policy.max_ttl, Some(Duration::from_secs(90 * 86_400)));
        assert!(!s.auto_migrate);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(
            s.policy.default_idle_timeout,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(s.limits.create_per_owner_per_minute, 3);
        assert_eq!(s.database_max_connections, 16);
    }

    #[test]
    fn a_numeric_looking_key_stays_a_string() {
        let key = "1".repeat(64);
        let s = Settings::load_from(None, env(&[("LATCHKEY_HMAC_KEY", &key)])).unwrap();
        assert_eq!(s.hmac_key.unwrap().expose(), key);
    }

    #[test]
    fn kubernetes_service_links_are_not_settings() {
        // What a Service named `latchkey` (ports grpc 50051, http 8080)
        // and one named `latchkey-http` put into every pod.
        let links = [
            ("LATCHKEY_SERVICE_HOST", "10.96.0.12"),
            ("LATCHKEY_SERVICE_PORT", "50051"),
            ("LATCHKEY_SERVICE_PORT_GRPC", "50051"),
            ("LATCHKEY_SERVICE_PORT_HTTP", "8080"),
            ("LATCHKEY_PORT", "tcp://10.96.0.12:50051"),
            ("LATCHKEY_PORT_50051_TCP", "tcp://10.96.0.12:50051"),
            ("LATCHKEY_PORT_50051_TCP_PROTO", "tcp"),
            ("LATCHKEY_PORT_50051_TCP_PORT", "50051"),
            ("LATCHKEY_PORT_50051_TCP_ADDR", "10.96.0.12"),
            ("LATCHKEY_PORT_8080_TCP_ADDR", "10.96.0.12"),
            ("LATCHKEY_HTTP_SERVICE_HOST", "10.96.0.13"),
            ("LATCHKEY_HTTP_PORT", "tcp://10.96.0.13:8080"),
            ("LATCHKEY_HTTP_PORT_8080_TCP", "tcp://10.96.0.13:8080"),
        ];
        let s = Settings::load_from(None, env(&links)).unwrap();
        assert_eq!(s.listen_addr.to_string(), "127.0.0.1:50051");
        for (name, value) in links {
            assert!(is_service_link(name, value), "{name}");
        }
        // Settings are not taken for links.
        for (name, value) in [
            ("LATCHKEY_METRICS_ADDR", "0.0.0.0:9090"),
            ("LATCHKEY_SERVER__MAX_CONNECTIONS_PER_IP", "5"),
            ("LATCHKEY_HTTP_ADDR", "0.0.0.0:8080"),
            ("LATCHKEY_CACHE__CAPACITY", "5"),
        ] {
            assert!(!is_service_link(name, value), "{name}");
        }
    }

    #[test]
    fn a_misspelt_key_is_an_error_not_a_silent_default() {
        let err = Settings::load_from(None, env(&[("LATCHKEY_CACHE__CAPACTY", "5")])).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("LATCHKEY_CACHE__CAPACTY is not a setting"),
            "{err}"
        );
        assert!(err.contains("capacty"), "{err}");
    }

    #[test]
    fn a_single_underscore_for_a_nested_setting_is_named_with_the_fix() {
        let err = Settings::load_from(None, env(&[("LATCHKEY_CACHE_CAPACITY", "5")])).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("LATCHKEY_CACHE_CAPACITY is not a setting")
                && err.contains("did you mean LATCHKEY_CACHE__CAPACITY?"),
            "{err}"
        );
        let err =
            Settings::load_from(None, env(&[("LATCHKEY_SERVER_IDLE_TIMEOUT", "5s")])).unwrap_err();
        assert!(
            format!("{err:#}").contains("did you mean LATCHKEY_SERVER__IDLE_TIMEOUT?"),
            "{err:#}"
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = Settings::load_from(None, env(&[("LATCHKEY_CACHE__TTL", "soon")])).unwrap_err();
        assert!(
            format!("{err:#}").contains("LATCHKEY_CACHE__TTL"),
            "{err:#}"
        );
    }

    #[test]
    fn addresses_take_an_ip_or_a_host_name_that_resolves() {
        let s =
            Settings::load_from(None, env(&[("LATCHKEY_LISTEN_ADDR", "localhost:50071")])).unwrap();
        assert!(s.listen_addr.ip().is_loopback() && s.listen_addr.port() == 50071);
        let s = Settings::load_from(None, env(&[("LATCHKEY_HTTP_ADDR", "0.0.0.0:8080")])).unwrap();
        assert_eq!(s.http_addr.unwrap().to_string(), "0.0.0.0:8080");
        for bad in ["50071", "no-such-host.invalid:1", "127.0.0.1"] {
            let err =
                Settings::load_from(None, env(&[("LATCHKEY_METRICS_ADDR", bad)])).unwrap_err();
            let err = format!("{err:#}");
            assert!(
                err.contains("LATCHKEY_METRICS_ADDR") && err.contains("0.0.0.0:50051"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_database_latchkey_does_not_support_is_named_as_such() {
        let err = Settings::load_from(None, env(&[("LATCHKEY_DATABASE_URL", "mysql://db/x")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("LATCHKEY_DATABASE_URL must name a SQLite file"),
            "{err}"
        );
    }

    #[test]
    fn a_short_admin_token_or_a_bad_prefix_is_refused_at_start() {
        let err = Settings::load_from(None, env(&[("LATCHKEY_ADMIN_TOKEN", "short")])).unwrap_err();
        assert!(err.to_string().contains("LATCHKEY_ADMIN_TOKEN"));
        assert!(!err.to_string().contains("short"));
        let err = Settings::load_from(None, env(&[("LATCHKEY_TOKEN_PREFIX", "Bad_")])).unwrap_err();
        assert!(err.to_string().contains("LATCHKEY_TOKEN_PREFIX"));
        let err = Settings::load_from(None, env(&[("LATCHKEY_DATABASE_MAX_CONNECTIONS", "0")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("LATCHKEY_DATABASE_MAX_CONNECTIONS")
        );
    }

    #[test]
    fn the_change_feed_is_configured_and_checked() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.changes.poll_interval, Duration::from_secs(1));
        assert!(s.changes.listen);
        assert_eq!(s.changes.retention, Duration::from_secs(3600));
        assert_eq!(s.changes.max_staleness, Duration::from_secs(60));
        let s = Settings::load_from(
            None,
            env(&[
                ("LATCHKEY_CHANGES__POLL_INTERVAL", "250ms"),
                ("LATCHKEY_CHANGES__LISTEN", "false"),
                ("LATCHKEY_CHANGES__RETENTION", "10m"),
                ("LATCHKEY_CHANGES__MAX_STALENESS", "5s"),
            ]),
        )
        .unwrap();
        assert_eq!(s.changes.poll_interval, Duration::from_millis(250));
        assert!(!s.changes.listen);
        assert_eq!(s.changes.retention, Duration::from_secs(600));
        assert_eq!(s.changes.max_staleness, Duration::from_secs(5));
        for bad in [
            ("LATCHKEY_CHANGES__POLL_INTERVAL", "0s"),
            ("LATCHKEY_CHANGES__RETENTION", "30s"),
            ("LATCHKEY_CHANGES__POLL_INTERVAL", "1h"),
            ("LATCHKEY_CHANGES__MAX_STALENESS", "100ms"),
        ] {
            let err = Settings::load_from(None, env(&[bad])).unwrap_err();
            assert!(err.to_string().contains("changes."), "{bad:?}: {err:#}");
        }
    }

    #[test]
    fn configured_secrets_do_not_appear_in_debug_output() {
        let s = Settings::load_from(
            None,
            env(&[(
                "LATCHKEY_ADMIN_TOKEN",
                "a-very-long-admin-credential-0123456789",
            )]),
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("a-very-long-admin-credential"));
    }
}
