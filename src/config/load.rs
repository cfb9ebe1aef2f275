//! Loading the settings (defaults, file, environment) and the rules they
//! must keep, checked once at start with an error that names the setting.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use super::{CLIENT_ENV, CONFIG_ENV, MAX_DURATION, Settings};
use crate::token::Prefix;

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
                k.starts_with("LATCHKEY_")
                    && k != CONFIG_ENV
                    && !CLIENT_ENV.contains(&k.as_str())
                    && !is_service_link(k, v)
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
        if let Err(why) = self.leaks.validate() {
            bail!("{why}");
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
        if self.cache.warm_timeout.is_zero() || self.cache.warm_timeout > Duration::from_secs(3600)
        {
            bail!("cache.warm_timeout must be positive and at most an hour");
        }
        if self.lookups.max_pending == 0 {
            bail!("lookups.max_pending must be at least 1");
        }
        if self.last_used.flush_interval.is_zero() {
            bail!("last_used.flush_interval must be positive");
        }
        if self.console.session_ttl.is_zero()
            || self.console.session_ttl > Duration::from_secs(30 * 86_400)
        {
            bail!("console.session_ttl must be positive and at most 30 days");
        }
        let presets = &self.console.expiry_presets;
        if presets.is_empty()
            || presets.len() > 10
            || presets
                .iter()
                .any(|p| p.as_secs() < 60 || p.as_secs() > 100 * 365 * 86_400)
        {
            bail!("console.expiry_presets must hold 1 to 10 durations, each from 1m to 100 years");
        }
        let warnings = &self.notifications.expiry_warnings;
        let mut distinct = warnings.clone();
        distinct.sort();
        distinct.dedup();
        if warnings.len() > 10
            || distinct.len() != warnings.len()
            || warnings
                .iter()
                .any(|w| w.as_secs() < 60 || w.as_secs() > 100 * 365 * 86_400)
        {
            bail!(
                "notifications.expiry_warnings must hold at most 10 distinct durations, each from                  1m to 100 years"
            );
        }
        if self.notifications.check_interval.is_zero() {
            bail!("notifications.check_interval must be positive");
        }
        for scope in &self.console.scopes {
            if let Err(e) = latchkey_core::token::scope::validate(&scope.name) {
                bail!("console.scopes: {:?}: {e}", scope.name);
            }
            if scope
                .name
                .starts_with(latchkey_core::token::scope::RESERVED_PREFIX)
            {
                bail!(
                    "console.scopes: {:?}: latchkey's own scopes cannot be offered to a product's users",
                    scope.name
                );
            }
            if scope.description.chars().any(char::is_control) || scope.description.len() > 256 {
                bail!(
                    "console.scopes: {:?}: a description is at most 256 characters, without control characters",
                    scope.name
                );
            }
        }
        if let Some(url) = &self.console.public_url {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/'))
                || !url.bytes().all(|b| b.is_ascii_graphic())
                || url.contains(['?', '#'])
            {
                bail!(
                    "console.public_url must be an http(s) URL without a query or fragment, such as https://tokens.example.com"
                );
            }
        }
        for source in &self.console.frame_ancestors {
            let ok = source == "'self'"
                || ((source.starts_with("https://") || source.starts_with("http://"))
                    && source
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._:/*".contains(&b)));
            if !ok {
                bail!(
                    "console.frame_ancestors: {source:?} is not 'self' or an http(s) origin such as https://app.example.com"
                );
            }
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
pub(super) fn is_service_link(name: &str, value: &str) -> bool {
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
