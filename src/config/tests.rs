use std::io::Write as _;

use super::load::is_service_link;
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
    let s = Settings::load_from(None, env(&[("LATCHKEY_LISTEN_ADDR", "localhost:50071")])).unwrap();
    assert!(s.listen_addr.ip().is_loopback() && s.listen_addr.port() == 50071);
    let s = Settings::load_from(None, env(&[("LATCHKEY_HTTP_ADDR", "0.0.0.0:8080")])).unwrap();
    assert_eq!(s.http_addr.unwrap().to_string(), "0.0.0.0:8080");
    for bad in ["50071", "no-such-host.invalid:1", "127.0.0.1"] {
        let err = Settings::load_from(None, env(&[("LATCHKEY_METRICS_ADDR", bad)])).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("LATCHKEY_METRICS_ADDR") && err.contains("0.0.0.0:50051"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn a_database_latchkey_does_not_support_is_named_as_such() {
    let err =
        Settings::load_from(None, env(&[("LATCHKEY_DATABASE_URL", "mysql://db/x")])).unwrap_err();
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
    let err =
        Settings::load_from(None, env(&[("LATCHKEY_DATABASE_MAX_CONNECTIONS", "0")])).unwrap_err();
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
fn warming_defaults_to_a_day_of_use_within_30_seconds_and_is_checked() {
    let s = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(s.cache.warm_window, Duration::from_secs(86_400));
    assert_eq!(s.cache.warm_timeout, Duration::from_secs(30));
    let s = Settings::load_from(
        None,
        env(&[
            ("LATCHKEY_CACHE__WARM_WINDOW", "0s"),
            ("LATCHKEY_CACHE__WARM_TIMEOUT", "2m"),
        ]),
    )
    .unwrap();
    assert!(s.cache.warm_window.is_zero(), "0 turns warming off");
    assert_eq!(s.cache.warm_timeout, Duration::from_secs(120));
    for bad in [
        ("LATCHKEY_CACHE__WARM_TIMEOUT", "0s"),
        ("LATCHKEY_CACHE__WARM_TIMEOUT", "2h"),
    ] {
        let err = Settings::load_from(None, env(&[bad])).unwrap_err();
        assert!(
            err.to_string().contains("cache.warm_timeout"),
            "{bad:?}: {err:#}"
        );
    }
    for bad in [
        ("LATCHKEY_CACHE__WARM_WINDOW", "yesterday"),
        ("LATCHKEY_CACHE__WARM_WINDOW", "-1h"),
        ("LATCHKEY_CACHE__WARM_WINDOW", "1\u{7}h"),
    ] {
        let err = Settings::load_from(None, env(&[bad])).unwrap_err();
        assert!(
            format!("{err:#}").contains("LATCHKEY_CACHE__WARM_WINDOW"),
            "{bad:?}: {err:#}"
        );
    }
}

#[test]
fn expiry_warnings_default_to_a_week_and_a_day_and_are_checked() {
    let s = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(
        s.notifications.expiry_warnings,
        [Duration::from_secs(7 * 86_400), Duration::from_secs(86_400)]
    );
    assert_eq!(s.notifications.check_interval, Duration::from_secs(60));
    let s = Settings::load_from(
        None,
        env(&[("LATCHKEY_NOTIFICATIONS__EXPIRY_WARNINGS", "30d, 3d,12h")]),
    )
    .unwrap();
    assert_eq!(
        s.notifications.expiry_warnings,
        [30 * 86_400, 3 * 86_400, 12 * 3600].map(Duration::from_secs)
    );
    let none = Settings::load_from(
        None,
        env(&[("LATCHKEY_NOTIFICATIONS__EXPIRY_WARNINGS", "")]),
    )
    .unwrap();
    assert!(none.notifications.expiry_warnings.is_empty());
    for bad in [
        ("LATCHKEY_NOTIFICATIONS__EXPIRY_WARNINGS", "1d,1d"),
        ("LATCHKEY_NOTIFICATIONS__EXPIRY_WARNINGS", "30s"),
        ("LATCHKEY_NOTIFICATIONS__EXPIRY_WARNINGS", "soon"),
        ("LATCHKEY_NOTIFICATIONS__CHECK_INTERVAL", "0s"),
    ] {
        let err = Settings::load_from(None, env(&[bad])).unwrap_err();
        assert!(
            format!("{err:#}").to_lowercase().contains("notifications"),
            "{bad:?}: {err:#}"
        );
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
