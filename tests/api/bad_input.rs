//! Every bad-input rule: INVALID_ARGUMENT naming the field, and nothing written.

use std::collections::BTreeMap;
use std::time::Duration;

use latchkey::grpc::pb::{self, create_token_request::Expiration};
use tonic::Code;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    bad_create_requests_name_the_field_and_write_nothing,
    lifetimes_beyond_policy_max_ttl_are_refused,
    bad_ids_name_the_field_and_change_nothing,
    bad_updates_name_the_field_and_change_nothing,
    bad_list_requests_name_the_field,
    bad_verify_requests_name_the_field,
    messages_over_64_kib_are_refused_and_write_nothing,
    control_characters_are_refused_in_every_text_field,
    expiries_past_year_9999_are_refused_not_a_crash,
);

fn valid() -> pb::CreateTokenRequest {
    pb::CreateTokenRequest {
        owner: "user-1".into(),
        name: "n".into(),
        ..Default::default()
    }
}

fn metadata(pairs: usize, key_len: usize, value_len: usize) -> BTreeMap<String, String> {
    (0..pairs)
        .map(|i| {
            (
                format!("{i:0>width$}", width = key_len.max(1)),
                "v".repeat(value_len),
            )
        })
        .collect()
}

async fn bad_create_requests_name_the_field_and_write_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let past = now_plus(&app.clock, Duration::ZERO);
    let cases: Vec<(&str, pb::CreateTokenRequest)> = vec![
        (
            "owner",
            pb::CreateTokenRequest {
                owner: String::new(),
                ..valid()
            },
        ),
        (
            "owner",
            pb::CreateTokenRequest {
                owner: "o".repeat(257),
                ..valid()
            },
        ),
        (
            "name",
            pb::CreateTokenRequest {
                name: "n".repeat(129),
                ..valid()
            },
        ),
        (
            "description",
            pb::CreateTokenRequest {
                description: "d".repeat(1025),
                ..valid()
            },
        ),
        (
            "scopes",
            pb::CreateTokenRequest {
                scopes: (0..65).map(|i| format!("s{i}")).collect(),
                ..valid()
            },
        ),
        (
            "scopes",
            pb::CreateTokenRequest {
                scopes: vec!["ok".into(), "has space".into()],
                ..valid()
            },
        ),
        (
            "scopes",
            pb::CreateTokenRequest {
                scopes: vec![String::new()],
                ..valid()
            },
        ),
        (
            "scopes",
            pb::CreateTokenRequest {
                scopes: vec!["s".repeat(129)],
                ..valid()
            },
        ),
        (
            "metadata",
            pb::CreateTokenRequest {
                metadata: metadata(33, 2, 1),
                ..valid()
            },
        ),
        (
            "metadata",
            pb::CreateTokenRequest {
                metadata: metadata(1, 65, 1),
                ..valid()
            },
        ),
        (
            "metadata",
            pb::CreateTokenRequest {
                metadata: metadata(1, 3, 1025),
                ..valid()
            },
        ),
        (
            "ttl",
            pb::CreateTokenRequest {
                expiration: Some(Expiration::Ttl(duration(0))),
                ..valid()
            },
        ),
        (
            "ttl",
            pb::CreateTokenRequest {
                expiration: Some(Expiration::Ttl(duration(-60))),
                ..valid()
            },
        ),
        (
            "expire_time",
            pb::CreateTokenRequest {
                expiration: Some(Expiration::ExpireTime(past)),
                ..valid()
            },
        ),
        (
            "idle_timeout",
            pb::CreateTokenRequest {
                idle_timeout: Some(duration(0)),
                ..valid()
            },
        ),
    ];
    for (field, req) in cases {
        let result = app.create(req).await;
        assert_invalid(result, field);
    }
    // The boundaries themselves are accepted.
    let at_limits = pb::CreateTokenRequest {
        owner: "o".repeat(256),
        name: "n".repeat(128),
        description: "d".repeat(1024),
        scopes: (0..64).map(|i| format!("s{i}")).collect(),
        metadata: metadata(32, 64, 1024),
        ..valid()
    };
    assert!(
        app.list_all().await.is_empty(),
        "a refused CreateToken wrote a token"
    );
    app.create(at_limits).await.unwrap();
    app.create(pb::CreateTokenRequest {
        metadata: metadata(32, 8, 8),
        ..valid()
    })
    .await
    .unwrap();
}

async fn lifetimes_beyond_policy_max_ttl_are_refused(backend: Backend) {
    let db = std::sync::Arc::new(TestDb::new(backend).await);
    let mut settings = test_settings(&db);
    settings.policy.max_ttl = Some(Duration::from_secs(90 * DAY));
    let app = spawn_app_on(db, settings).await;

    let ninety_one_days = duration(91 * DAY as i64);
    assert_invalid(
        app.create(pb::CreateTokenRequest {
            expiration: Some(Expiration::Ttl(ninety_one_days)),
            ..valid()
        })
        .await,
        "ttl",
    );
    let far = now_plus(&app.clock, Duration::from_secs(91 * DAY));
    assert_invalid(
        app.create(pb::CreateTokenRequest {
            expiration: Some(Expiration::ExpireTime(far)),
            ..valid()
        })
        .await,
        "expire_time",
    );
    // No expiry at all is longer than any maximum.
    assert_invalid(app.create(valid()).await, "ttl");
    assert!(app.list_all().await.is_empty());

    let ninety_days = duration(90 * DAY as i64);
    app.create(pb::CreateTokenRequest {
        expiration: Some(Expiration::Ttl(ninety_days)),
        ..valid()
    })
    .await
    .unwrap();
}

async fn bad_ids_name_the_field_and_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, _) = app.create_token("u", &[]).await;
    let before = app.list_all().await;
    for bad in ["", "42", "not-a-uuid", &token.id[..token.id.len() - 1]] {
        assert_invalid(app.get(bad).await, "id");
        assert_invalid(app.revoke(bad, "").await, "id");
        assert_invalid(app.restore(bad).await, "id");
        assert_invalid(app.delete(bad).await, "id");
        let change = pb::Token {
            id: bad.to_owned(),
            name: "x".into(),
            ..Default::default()
        };
        assert_invalid(app.update(change, &["name"]).await, "token.id");
    }
    assert_eq!(app.list_all().await, before);
}

async fn bad_updates_name_the_field_and_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, _) = app.create_token("u", &["a"]).await;
    let before = app.list_all().await;
    let change = |f: fn(&mut pb::Token)| {
        let mut t = pb::Token {
            id: token.id.clone(),
            ..Default::default()
        };
        f(&mut t);
        t
    };
    let cases: Vec<(&str, pb::Token, Vec<&str>)> = vec![
        (
            "update_mask",
            change(|t| t.scopes = vec!["admin".into()]),
            vec!["scopes"],
        ),
        (
            "update_mask",
            change(|t| t.owner = "mallory".into()),
            vec!["owner"],
        ),
        (
            "update_mask",
            change(|t| t.name = "ok".into()),
            vec!["name", "expire_time"],
        ),
        ("update_mask", change(|_| {}), vec![]),
        (
            "token.name",
            change(|t| t.name = "n".repeat(129)),
            vec!["name"],
        ),
        (
            "token.description",
            change(|t| t.description = "d".repeat(1025)),
            vec!["description"],
        ),
        (
            "token.metadata",
            change(|t| t.metadata = metadata(33, 2, 1)),
            vec!["metadata"],
        ),
    ];
    for (field, t, paths) in cases {
        assert_invalid(app.update(t, &paths).await, field);
    }
    let missing_token = app
        .admin
        .clone()
        .update_token(app.admin_request(pb::UpdateTokenRequest::default()))
        .await;
    assert_invalid(missing_token, "token");
    assert_invalid(app.revoke(&token.id, &"r".repeat(1025)).await, "reason");
    assert_eq!(
        app.list_all().await,
        before,
        "a refused update changed a token"
    );
}

async fn bad_list_requests_name_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    for _ in 0..3 {
        app.create_token("u", &[]).await;
    }
    for page_size in [-1, 1001, i32::MIN, i32::MAX] {
        let req = pb::ListTokensRequest {
            page_size,
            ..Default::default()
        };
        assert_invalid(app.list(req).await, "page_size");
    }
    for page_token in ["garbage", "AAAA", "bGs="] {
        let req = pb::ListTokensRequest {
            page_token: page_token.into(),
            ..Default::default()
        };
        assert_invalid(app.list(req).await, "page_token");
    }
    // A real page token is bound to its query.
    let first = app
        .list(pb::ListTokensRequest {
            owner: "u".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let replayed = pb::ListTokensRequest {
        owner: "someone-else".into(),
        page_size: 1,
        page_token: first.next_page_token.clone(),
        ..Default::default()
    };
    assert_invalid(app.list(replayed).await, "page_token");
    for status in [0, 99] {
        let req = pb::ListTokensRequest {
            statuses: vec![status],
            ..Default::default()
        };
        assert_invalid(app.list(req).await, "statuses");
    }
    let edge = pb::ListTokensRequest {
        page_size: 1000,
        ..Default::default()
    };
    assert_eq!(app.list(edge).await.unwrap().tokens.len(), 3);
}

async fn bad_verify_requests_name_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, secret) = app.create_token("u", &[]).await;
    assert_invalid(
        app.try_verify(&secret, &["bad scope"]).await,
        "required_scopes",
    );
    let too_many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
    assert_invalid(app.try_verify(&secret, &refs).await, "required_scopes");
}

async fn messages_over_64_kib_are_refused_and_write_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let huge = pb::CreateTokenRequest {
        // Each value is within its own limit; together they pass 64 KiB.
        metadata: (0..70)
            .map(|i| (format!("k{i}"), "v".repeat(1000)))
            .collect(),
        ..valid()
    };
    let status = app.create(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let (_, secret) = app.create_token("u", &[]).await;
    let big_verify = app
        .try_verify(&secret, &[&"s".repeat(70 * 1024)])
        .await
        .unwrap_err();
    assert_eq!(big_verify.code(), Code::ResourceExhausted, "{big_verify:?}");
    assert_eq!(app.list_all().await.len(), 1);
}

async fn control_characters_are_refused_in_every_text_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, _) = app.create_token("u", &[]).await;
    let before = app.list_all().await;
    // CR/LF forge log lines and break out of HTTP headers; NUL is refused
    // by PostgreSQL; ESC, DEL and C1 controls (U+0085, U+009B CSI) steer
    // terminals.
    for bad in [
        "x\r\nforged: line",
        "x\0y",
        "x\u{1b}[2Jy",
        "x\u{7f}",
        "x\u{85}",
        "x\u{9b}31m",
    ] {
        let creates: Vec<(&str, pb::CreateTokenRequest)> = vec![
            (
                "owner",
                pb::CreateTokenRequest {
                    owner: bad.into(),
                    ..valid()
                },
            ),
            (
                "name",
                pb::CreateTokenRequest {
                    name: bad.into(),
                    ..valid()
                },
            ),
            (
                "description",
                pb::CreateTokenRequest {
                    description: bad.into(),
                    ..valid()
                },
            ),
            (
                "metadata[\"team\"]",
                pb::CreateTokenRequest {
                    metadata: BTreeMap::from([("team".to_owned(), bad.to_owned())]),
                    ..valid()
                },
            ),
        ];
        for (field, req) in creates {
            assert_invalid(app.create(req).await, field);
        }
        let key = pb::CreateTokenRequest {
            metadata: BTreeMap::from([(bad.to_owned(), "v".to_owned())]),
            ..valid()
        };
        assert_code(app.create(key).await, Code::InvalidArgument);
        let rename = pb::Token {
            id: token.id.clone(),
            name: bad.into(),
            ..Default::default()
        };
        assert_invalid(app.update(rename, &["name"]).await, "token.name");
        let describe = pb::Token {
            id: token.id.clone(),
            description: bad.into(),
            ..Default::default()
        };
        assert_invalid(
            app.update(describe, &["description"]).await,
            "token.description",
        );
        assert_invalid(app.revoke(&token.id, bad).await, "reason");
        assert_invalid(app.disable_owner(bad, "r").await, "owner");
        assert_invalid(app.disable_owner("u", bad).await, "reason");
        assert_invalid(app.get_owner(bad).await, "owner");
    }
    assert_eq!(
        app.list_all().await,
        before,
        "a refused request changed a token"
    );
    assert!(!app.get_owner("u").await.unwrap().disabled);
    // Tab is text in descriptions and reasons, and Unicode is welcome.
    app.create(pb::CreateTokenRequest {
        name: "déploiement ✓".into(),
        description: "col1\tcol2".into(),
        ..valid()
    })
    .await
    .unwrap();
    app.revoke(&token.id, "leaked\tsee ticket").await.unwrap();
}

async fn expiries_past_year_9999_are_refused_not_a_crash(backend: Backend) {
    let app = spawn_app(backend).await;
    // 252,000,000,000 s is some 7,985 years from now.
    assert_invalid(
        app.create(pb::CreateTokenRequest {
            expiration: Some(Expiration::Ttl(duration(252_000_000_000))),
            ..valid()
        })
        .await,
        "ttl",
    );
    let year_10000 = prost_types::Timestamp {
        seconds: 253_402_300_800,
        nanos: 0,
    };
    assert_invalid(
        app.create(pb::CreateTokenRequest {
            expiration: Some(Expiration::ExpireTime(year_10000)),
            ..valid()
        })
        .await,
        "expire_time",
    );
    assert_invalid(
        app.create(pb::CreateTokenRequest {
            expiration: Some(Expiration::Ttl(duration(i64::MAX))),
            ..valid()
        })
        .await,
        "ttl",
    );
    assert!(app.list_all().await.is_empty());
    // The last second of 9999 is fine, and so is renewing such a token (its
    // lifetime's length from now would pass 9999: it stops at its end).
    let last = prost_types::Timestamp {
        seconds: 253_402_300_799,
        nanos: 0,
    };
    let created = app
        .create(pb::CreateTokenRequest {
            expiration: Some(Expiration::ExpireTime(last)),
            ..valid()
        })
        .await
        .unwrap();
    let id = created.token.unwrap().id;
    let (renewed, _) = app.renew_with_grace(&id, 0).await;
    assert_eq!(renewed.expire_time.unwrap().seconds, 253_402_300_799);
    app.get(&renewed.id).await.unwrap();
}
