//! Settings: defaults < TOML file (`--config` or `LATCHKEY_CONFIG`) <
//! environment `LATCHKEY_*`, nested keys joined with `__`
//! (`LATCHKEY_CACHE__CAPACITY`). Validated once, at start.

mod load;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use latchkey_api::web::{LeakSettings, TokenReviewSettings};
use latchkey_service::lifecycle::{Limits, Policy, SelfRenew};

/// The longest duration protobuf can carry (10,000 years).
const MAX_DURATION: Duration = Duration::from_secs(315_576_000_000);

/// Environment variable naming the TOML file; not a setting itself.
pub const CONFIG_ENV: &str = "LATCHKEY_CONFIG";

/// Environment variables of the client subcommands (the server to call and
/// the credential to call it with); a server started in the same shell
/// ignores them.
pub const CLIENT_ENV: [&str; 2] = ["LATCHKEY_ADDR", "LATCHKEY_TOKEN"];

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
    pub console: ConsoleSettings,
    pub leaks: LeakSettings,
    pub notifications: NotificationSettings,
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
            console: ConsoleSettings::default(),
            changes: ChangesSettings::default(),
            ext_authz: ExtAuthzSettings::default(),
            token_review: TokenReviewSettings::default(),
            tls: TlsSettings::default(),
            server: ServerSettings::default(),
            policy: Policy::default(),
            limits: Limits::default(),
            self_renew: SelfRenew::default(),
            shutdown: ShutdownSettings::default(),
            leaks: LeakSettings::default(),
            notifications: NotificationSettings::default(),
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
    /// At start, before reporting SERVING, the cache is filled with the
    /// tokens used within this window (by last use, most recent first, up
    /// to `capacity`), read in bulk. 0 turns warming off.
    #[serde(with = "humantime_serde")]
    pub warm_window: Duration,
    /// The longest warming may take; past it the replica serves with the
    /// cache as it is, and says so.
    #[serde(with = "humantime_serde")]
    pub warm_timeout: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            capacity: 100_000,
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(2),
            warm_window: Duration::from_secs(24 * 3600),
            warm_timeout: Duration::from_secs(30),
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

/// The web console on the HTTP listener (`/console/`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// How long a sign-in lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// The lifetimes a new token's form offers, first one chosen.
    #[serde(deserialize_with = "durations")]
    pub expiry_presets: Vec<Duration>,
    /// The scopes a product's user may pick on the hosted token page, each
    /// with what it allows; none: that page's tokens have no scopes.
    pub scopes: Vec<ConsoleScope>,
    /// The base of console links (`https://tokens.example.com`); unset: the
    /// HTTP listener's own address.
    pub public_url: Option<String>,
    /// The pages that may embed the hosted token page in a frame (CSP
    /// `frame-ancestors` sources, such as `https://app.example.com`); none:
    /// no page may.
    #[serde(deserialize_with = "strings")]
    pub frame_ancestors: Vec<String>,
}

/// A scope the hosted token page offers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleScope {
    pub name: String,
    /// What the scope allows, as the page says it.
    #[serde(default)]
    pub description: String,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        ConsoleSettings {
            session_ttl: Duration::from_secs(12 * 3600),
            expiry_presets: [30, 60, 90, 365]
                .map(|days| Duration::from_secs(days * DAY))
                .to_vec(),
            scopes: Vec::new(),
            public_url: None,
            frame_ancestors: Vec::new(),
        }
    }
}

/// A list of strings, from a list (a file) or a comma-separated string (an
/// environment variable): `["a", "b"]` or `a,b`.
fn strings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Items(Vec<String>),
        Joined(String),
    }
    Ok(match List::deserialize(d)? {
        List::Items(items) => items,
        List::Joined(joined) => joined
            .split(',')
            .map(|item| item.trim().to_owned())
            .filter(|item| !item.is_empty())
            .collect(),
    })
}

/// A list of durations, as [`strings`] takes it: `["30d", "90d"]` or
/// `30d,90d`.
fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    strings(d)?
        .iter()
        .map(|item| humantime::parse_duration(item.trim()).map_err(serde::de::Error::custom))
        .collect()
}

/// EXPIRING events, for a product to warn its users before their tokens
/// stop working.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationSettings {
    /// How long before a token's expiry an EXPIRING event is given, once
    /// per token and lead time; none: no warnings.
    #[serde(deserialize_with = "durations")]
    pub expiry_warnings: Vec<Duration>,
    /// How often each replica looks for tokens a warning is due for.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        NotificationSettings {
            expiry_warnings: [7, 1]
                .map(|days| Duration::from_secs(days * 86_400))
                .to_vec(),
            check_interval: Duration::from_secs(60),
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
    /// Take the client's address, noted as a token's last use, from the
    /// first entry of `x-forwarded-for` rather than the connection Envoy
    /// saw: only when every proxy in front of Envoy sets it.
    pub trust_forwarded_for: bool,
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
