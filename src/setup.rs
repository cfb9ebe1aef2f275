//! What the server and the offline commands (`migrate`, `admin-token
//! issue`, seeding) share at start-up: the database, connected and migrated;
//! the HMAC keys, configured or kept in a 0600 file beside a SQLite
//! database; the token lifecycle with no server around it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use zeroize::Zeroizing;

use latchkey_service::verifier::NoCache;

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::lifecycle::{self, Lifecycle};
use crate::store::Store;
use crate::token::{KeyRing, Prefix, Secret, TokenKey};

/// Connects to the configured database and brings its schema up to date
/// (or, with `auto_migrate` off, checks that it is).
///
/// # Errors
/// If the database cannot be reached or migrated, or is behind with
/// `auto_migrate` off.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = connect_store(settings).await?;
    if settings.auto_migrate {
        store
            .migrate()
            .await
            .context("applying database migrations")?;
    } else {
        let pending = store
            .pending_migrations()
            .await
            .context("reading the migration state")?;
        if pending > 0 {
            bail!(
                "the database schema is {pending} migration(s) behind; run `latchkey migrate` \
                 or unset LATCHKEY_AUTO_MIGRATE=false"
            );
        }
    }
    Ok(store)
}

/// Connects to the configured database, as configured (pool size, bound on
/// every wait).
///
/// # Errors
/// If the URL is malformed or the database cannot be reached.
pub async fn connect_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::connect_bounded(
        &settings.database_url,
        settings.database_max_connections,
        settings.database_timeout,
    )
    .await
    .context("connecting to the database (LATCHKEY_DATABASE_URL)")
}

/// The token lifecycle with no server around it, for tools that write tokens
/// straight into the database (`latchkey admin-token issue`,
/// [`Lifecycle::bulk_create`]): the key, prefix, policy and limits a server
/// with `settings` uses, and no cache (there is no Verify traffic to serve).
///
/// # Errors
/// If the prefix or the HMAC key is invalid, or the key is missing where it
/// is required.
pub async fn offline_lifecycle(store: Store, settings: &Settings) -> anyhow::Result<Lifecycle> {
    let prefix = settings.prefix()?;
    let keys = resolve_hmac_keys(settings, &store).await?;
    let key = keys.primary().clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Ok(Lifecycle::new(
        store,
        Arc::new(NoCache),
        clock,
        lifecycle_settings(settings, key, prefix),
    ))
}

/// The lifecycle's part of the configuration, minting with `key` and `prefix`.
pub(crate) fn lifecycle_settings(
    settings: &Settings,
    key: TokenKey,
    prefix: Prefix,
) -> lifecycle::Settings {
    lifecycle::Settings {
        key,
        prefix,
        policy: settings.policy,
        limits: settings.limits,
        self_renew: settings.self_renew,
    }
}

/// `latchkey admin-token issue`: a new token with scope `latchkey:admin`
/// (owner `latchkey`), written straight into the configured database, no
/// server needed. Its secret is returned to the caller alone.
///
/// # Errors
/// If the database or key cannot be set up (see [`open_store`] and
/// [`offline_lifecycle`]), the name or lifetime is refused, or the owner's
/// creation limits are reached.
pub async fn issue_admin_token(
    settings: &Settings,
    name: &str,
    ttl: Option<Duration>,
) -> anyhow::Result<Secret> {
    settings.validate()?;
    let store = open_store(settings).await?;
    let lifecycle = offline_lifecycle(store.clone(), settings).await?;
    let issued = lifecycle.issue_admin_token(name, ttl).await;
    store.close().await.ok();
    let (record, secret) = issued
        .map_err(|e| anyhow::anyhow!(e))
        .context("issuing an admin token")?;
    tracing::info!(token_id = %record.id, name = ?record.name, "admin token issued");
    Ok(secret)
}

/// The HMAC keys: configured; or, with a SQLite file only, kept in a 0600
/// file beside the database, generated on first use. A database that holds
/// tokens but whose key file is gone is refused: a new key would lock out
/// every token it holds.
pub(crate) async fn resolve_hmac_keys(
    settings: &Settings,
    store: &Store,
) -> anyhow::Result<KeyRing> {
    if let Some(ring) = configured_keys(settings)? {
        return Ok(ring);
    }
    let Some(path) = local_key_file(settings)? else {
        tracing::warn!(
            "LATCHKEY_HMAC_KEY is unset and the database is in memory: using a throwaway key"
        );
        return Ok(KeyRing::from(
            TokenKey::generate().context("generating an HMAC key")?.0,
        ));
    };
    if !path.exists() {
        let stored = store
            .has_tokens()
            .await
            .context("checking the database for tokens")?;
        if stored {
            bail!(
                "the HMAC key file {} is missing, but the database holds tokens: a new key would \
                 make every one of them fail to verify. Restore the file from the backup made with \
                 the database, or set LATCHKEY_HMAC_KEY to the key in use",
                path.display()
            );
        }
    }
    load_or_create_key_file(&path).map(KeyRing::from)
}

/// The keys given in the configuration (`LATCHKEY_HMAC_KEY`, `_KEYS` or
/// `_KEYS_FILE`), if any.
fn configured_keys(settings: &Settings) -> anyhow::Result<Option<KeyRing>> {
    if let Some(encoded) = &settings.hmac_key {
        return TokenKey::from_encoded(encoded.expose())
            .context("LATCHKEY_HMAC_KEY is invalid")
            .map(|k| Some(KeyRing::from(k)));
    }
    let listed = if let Some(keys) = &settings.hmac_keys {
        Some((
            "LATCHKEY_HMAC_KEYS",
            Zeroizing::new(keys.expose().split(',').map(str::to_owned).collect()),
        ))
    } else if let Some(path) = &settings.hmac_keys_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading LATCHKEY_HMAC_KEYS_FILE {}", path.display()))?,
        );
        let lines = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>();
        Some(("LATCHKEY_HMAC_KEYS_FILE", Zeroizing::new(lines)))
    } else {
        None
    };
    let Some((source, encoded)) = listed else {
        return Ok(None);
    };
    let keys = encoded
        .iter()
        .enumerate()
        .map(|(i, k)| {
            TokenKey::from_encoded(k).with_context(|| format!("{source}: key {} is invalid", i + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    KeyRing::new(keys)
        .with_context(|| format!("{source} is invalid"))
        .map(Some)
}

/// Where a key of this process's own is kept when none is configured: beside
/// a SQLite file; `None` for an in-memory database.
///
/// # Errors
/// With any other database: every replica must digest with the same key.
fn local_key_file(settings: &Settings) -> anyhow::Result<Option<PathBuf>> {
    let url = settings.database_url.as_str();
    if !url.starts_with("sqlite:") {
        bail!(
            "LATCHKEY_HMAC_KEY (or LATCHKEY_HMAC_KEYS) is required with this database: every \
             replica must digest tokens with the same key, so none can be generated locally \
             (make one with `openssl rand -hex 32`)"
        );
    }
    Ok(crate::store::sqlite_file(url).map(|db| key_file_for(&db)))
}

fn key_file_for(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".key");
    db.with_file_name(name)
}

fn load_or_create_key_file(path: &Path) -> anyhow::Result<TokenKey> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            let (key, encoded) = TokenKey::generate().context("generating an HMAC key")?;
            let encoded = Zeroizing::new(encoded);
            file.write_all(encoded.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing the HMAC key to {}", path.display()))?;
            tracing::warn!(
                path = %path.display(),
                "LATCHKEY_HMAC_KEY is unset: generated a key into this file; tokens verify only with it, \
                 so back it up with the database"
            );
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let encoded = Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the HMAC key from {}", path.display()))?,
            );
            TokenKey::from_encoded(&encoded)
                .with_context(|| format!("the HMAC key in {} is invalid", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("creating the HMAC key file {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Sensitive;

    #[test]
    fn sqlite_urls_name_their_file_or_memory() {
        assert_eq!(
            crate::store::sqlite_file("sqlite://latchkey.db?mode=rwc"),
            Some(PathBuf::from("latchkey.db"))
        );
        assert_eq!(
            crate::store::sqlite_file("sqlite:///var/lib/lk/db.sqlite"),
            Some(PathBuf::from("/var/lib/lk/db.sqlite"))
        );
        assert_eq!(crate::store::sqlite_file("sqlite::memory:"), None);
        assert_eq!(crate::store::sqlite_file("sqlite://x.db?mode=memory"), None);
        assert_eq!(
            key_file_for(Path::new("/d/latchkey.db")),
            PathBuf::from("/d/latchkey.db.key")
        );
    }

    #[test]
    fn several_keys_come_from_a_list_or_a_file_the_primary_first() {
        let (k1, k2) = ("11".repeat(32), "22".repeat(32));
        let listed = Settings {
            hmac_keys: Some(Sensitive::new(format!("{k2},{k1}"))),
            ..Settings::default()
        };
        let ring = configured_keys(&listed).unwrap().unwrap();
        let single = |k: &str| {
            configured_keys(&Settings {
                hmac_key: Some(Sensitive::new(k)),
                ..Settings::default()
            })
            .unwrap()
            .unwrap()
            .ids()
        };
        assert_eq!(ring.ids(), [single(&k2), single(&k1)].concat());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, format!("# rotated 2026-11\n{k2}\n\n{k1}  # old\n")).unwrap();
        let from_file = Settings {
            hmac_keys_file: Some(file),
            ..Settings::default()
        };
        assert_eq!(
            configured_keys(&from_file).unwrap().unwrap().ids(),
            ring.ids()
        );

        let twice = Settings {
            hmac_keys: Some(Sensitive::new(format!("{k1},{k1}"))),
            ..Settings::default()
        };
        let err = format!("{:#}", configured_keys(&twice).unwrap_err());
        assert!(err.contains("twice") && !err.contains(&k1), "{err}");
        let short = Settings {
            hmac_keys: Some(Sensitive::new(format!("{k1},abcd"))),
            ..Settings::default()
        };
        let err = format!("{:#}", configured_keys(&short).unwrap_err());
        assert!(err.contains("key 2") && !err.contains(&k1), "{err}");
        let both = Settings {
            hmac_key: Some(Sensitive::new(k1.clone())),
            hmac_keys: Some(Sensitive::new(k2.clone())),
            ..Settings::default()
        };
        assert!(both.validate().unwrap_err().to_string().contains("one of"));
    }

    #[test]
    fn the_key_file_is_created_once_with_mode_0600_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lk.db.key");
        let first = load_or_create_key_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = load_or_create_key_file(&path).unwrap();
        assert_eq!(first.digest("t"), second.digest("t"));
    }

    #[test]
    fn postgres_without_a_key_is_refused_with_the_reason() {
        let settings = Settings {
            database_url: "postgres://localhost/latchkey".into(),
            ..Settings::default()
        };
        let err = local_key_file(&settings).unwrap_err().to_string();
        assert!(
            err.contains("LATCHKEY_HMAC_KEY") && err.contains("is required"),
            "{err}"
        );
    }
}
