//! The hosted token page over real HTTP: CreateConsoleLink, a link that
//! opens once, a session limited to its owner, the scopes and lifetimes the
//! operator offers, framing, and hostile input.

use std::time::Duration;

use latchkey::clock::Clock;
use latchkey::config::ConsoleScope;
use latchkey::grpc::pb;
use tonic::Code;

use crate::console::{Page, encode, request, sign_in, tokens_of};
use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    a_console_link_opens_once_a_page_of_its_owners_tokens,
    the_cli_makes_a_console_link_and_refuses_a_bad_one,
);

/// A server with the console, offering the scopes `repo:read` and
/// `repo:write`, and framable by `https://app.example.com`.
async fn hosted_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
        s.console.scopes = vec![
            ConsoleScope {
                name: "repo:read".into(),
                description: "Read your repositories".into(),
            },
            ConsoleScope {
                name: "repo:write".into(),
                description: "Push to your repositories".into(),
            },
        ];
        s.console.frame_ancestors = vec!["https://app.example.com".into()];
    })
    .await
}

/// CreateConsoleLink as the admin.
pub(crate) async fn console_link(
    app: &TestApp,
    owner: &str,
    ttl: Option<Duration>,
    return_url: &str,
) -> Result<pb::CreateConsoleLinkResponse, tonic::Status> {
    app.admin
        .clone()
        .create_console_link(app.admin_request(pb::CreateConsoleLinkRequest {
            owner: owner.into(),
            ttl: ttl.map(|d| prost_types::Duration {
                seconds: d.as_secs() as i64,
                nanos: 0,
            }),
            return_url: return_url.into(),
        }))
        .await
        .map(tonic::Response::into_inner)
}

async fn the_cli_makes_a_console_link_and_refuses_a_bad_one(backend: Backend) {
    let app = hosted_app(backend).await;
    let addr = app.http_addr.unwrap();
    app.create_token("user-9", &["repo:read"]).await;
    let made = run_client(
        &app,
        &[
            "owner",
            "console-link",
            "user-9",
            "--ttl",
            "30m",
            "--return-url",
            "https://app.example.com/settings",
        ],
        b"",
    )
    .await;
    let out = made.ok();
    assert!(out.starts_with("Opens once, until "), "{out}");
    let url = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("http://"));
    let opened = request(addr, "GET", &path_of(url.unwrap()), None, "").await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    assert!(opened.cookie("latchkey_hosted").is_some());

    let json = run_client(
        &app,
        &["owner", "console-link", "user-9", "-o", "json"],
        b"",
    )
    .await;
    let url = json.jq(".url");
    let opened = request(addr, "GET", &path_of(url.as_str().unwrap()), None, "").await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let expires = json.jq(".expireTime");
    assert!(expires.as_str().unwrap().ends_with('Z'), "{expires}");

    // Refused by the server with the field named, or by the CLI (2).
    for (args, code, field) in [
        (&["user-9", "--ttl", "2h"][..], 1, "ttl"),
        (&["user-9", "--ttl", "soon"], 2, "--ttl"),
        (&[""], 1, "owner"),
        (
            &["user-9", "--return-url", "javascript:alert(1)"],
            1,
            "return_url",
        ),
        (
            &["user-9", "--return-url", "https://a.example/\u{7}"],
            1,
            "return_url",
        ),
    ] {
        let refused = run_client(&app, &[&["owner", "console-link"][..], args].concat(), b"").await;
        let err = refused.failed(code);
        assert!(err.contains(field), "{args:?}: {err}");
        assert!(refused.stdout.is_empty(), "{args:?}: {}", refused.stdout);
    }
    let unauthenticated = run_client_with(
        &["owner", "console-link", "user-9"],
        b"",
        &[("LATCHKEY_ADDR", &format!("http://{}", app.addr))],
    )
    .await;
    let err = unauthenticated.failed(1);
    assert!(err.to_lowercase().contains("credential"), "{err}");
}

/// The path of a link's URL.
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    rest[rest.find('/').unwrap()..].to_owned()
}

async fn a_console_link_opens_once_a_page_of_its_owners_tokens(backend: Backend) {
    let app = hosted_app(backend).await;
    let addr = app.http_addr.unwrap();
    let (mine, mine_secret) = app.create_token("user-9", &["repo:read"]).await;
    let (theirs, theirs_secret) = app.create_token("user-10", &[]).await;

    let link = console_link(&app, "user-9", None, "https://app.example.com/settings")
        .await
        .unwrap();
    assert!(
        link.url
            .starts_with(&format!("http://{addr}/console/link/")),
        "{}",
        link.url
    );
    let now = app.clock.now().to_unix().0;
    assert_eq!(link.expire_time.unwrap().seconds - now, 15 * 60);
    assert!(
        !format!("{link:?}").contains(&link.url),
        "Debug shows the link"
    );

    // Opening it: a page that goes on to the hosted page, with a cookie of
    // its own for that page only.
    let opened = request(addr, "GET", &path_of(&link.url), None, "").await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    assert!(
        opened
            .body
            .contains(r#"<meta http-equiv="refresh" content="0; url=/console/mine/">"#)
    );
    let set = opened
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("latchkey_hosted="))
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console/mine;"] {
        assert!(set.contains(attribute), "{attribute}: {set}");
    }
    let hosted = format!(
        "latchkey_hosted={}",
        opened.cookie("latchkey_hosted").unwrap()
    );
    // Once only, on any replica: the link is gone.
    let again = request(addr, "GET", &path_of(&link.url), None, "").await;
    assert_eq!(again.status, 410);
    assert!(again.body.contains("expired or was already used"));
    assert!(again.cookie("latchkey_hosted").is_none());

    // The page: the owner's tokens only, a way back to the product.
    let page = request(addr, "GET", "/console/mine/", Some(&hosted), "").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&mine.display_hint));
    assert!(!page.body.contains(&theirs.display_hint));
    assert!(
        page.body
            .contains(r#"<a href="https://app.example.com/settings">Back to app.example.com</a>"#)
    );
    assert!(page.body.contains("Tokens of user-9"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("frame-ancestors https://app.example.com"),
        "{csp}"
    );
    assert!(page.header("x-frame-options").is_none());
    let csrf = page.csrf();
    // An owner query changes nothing.
    let other = request(
        addr,
        "GET",
        "/console/mine/?owner=user-10",
        Some(&hosted),
        "",
    )
    .await;
    assert!(!other.body.contains(&theirs.display_hint));
    // The admin's pages stay unframable, and refuse this session.
    let (_, admin) = sign_in(addr, ADMIN_TOKEN).await;
    let admin = admin.unwrap();
    let admin_page = request(addr, "GET", "/console/", Some(&admin), "").await;
    assert!(
        admin_page
            .header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(admin_page.header("x-frame-options"), Some("DENY"));
    let as_admin = hosted.replace("latchkey_hosted=", "latchkey_console=");
    for path in [
        "/console/",
        "/console/tokens/new",
        &format!("/console/tokens/{}", mine.id),
    ] {
        let refused = request(addr, "GET", path, Some(&as_admin), "").await;
        assert_eq!(
            (refused.status, refused.header("location")),
            (303, Some("/console/login")),
            "{path}"
        );
    }
    let as_hosted = admin.replace("latchkey_console=", "latchkey_hosted=");
    assert_eq!(
        request(addr, "GET", "/console/mine/", Some(&as_hosted), "")
            .await
            .status,
        401
    );
    assert_eq!(
        request(addr, "GET", "/console/mine/", None, "")
            .await
            .status,
        401
    );

    // Someone else's token: not found, unchanged, whatever the action.
    for action in ["revoke", "restore", "delete"] {
        let path = format!("/console/mine/tokens/{}/{action}", theirs.id);
        let answer = request(
            addr,
            "POST",
            &path,
            Some(&hosted),
            &encode(&[("csrf", &csrf)]),
        )
        .await;
        assert_eq!(answer.status, 404, "{action}: {}", answer.body);
    }
    let path = format!("/console/mine/tokens/{}/delete", theirs.id);
    assert_eq!(
        request(addr, "GET", &path, Some(&hosted), "").await.status,
        404
    );
    assert_eq!(
        app.verify(&theirs_secret, &[]).await.verdict(),
        pb::Verdict::Valid
    );
    // The admin-only pages are not on the hosted page.
    for path in [
        format!("/console/mine/tokens/{}", mine.id),
        format!("/console/mine/tokens/{}/renew", mine.id),
    ] {
        let answer = request(addr, "GET", &path, Some(&hosted), "").await;
        assert_eq!(answer.status, 404, "{path}");
    }

    // A new token: the owner's, with a lifetime and scopes offered, and
    // nothing else.
    let form = request(addr, "GET", "/console/mine/tokens/new", Some(&hosted), "").await;
    assert!(form.body.contains("Read your repositories"));
    assert!(!form.body.contains(r#"name="owner""#));
    assert!(!form.body.contains(r#"value="never""#));
    for (fields, says) in [
        (vec![("name", "x"), ("expiry", "never")], "expiry"),
        (
            vec![("name", "x"), ("expiry", "0"), ("scope", "latchkey:admin")],
            "scope",
        ),
        (
            vec![("name", "x"), ("expiry", "0"), ("scope", "repo:admin")],
            "scope",
        ),
        (vec![("name", "x\u{1b}[31m"), ("expiry", "0")], "name"),
    ] {
        let mut pairs = fields.clone();
        pairs.push(("csrf", &csrf));
        let answer = request(
            addr,
            "POST",
            "/console/mine/tokens",
            Some(&hosted),
            &encode(&pairs),
        )
        .await;
        assert_eq!(answer.status, 400, "{fields:?}: {}", answer.body);
        assert!(answer.body.contains(says), "{fields:?}: {}", answer.body);
    }
    // No session's CSRF token, or another's: refused.
    let create = encode(&[
        ("name", "laptop"),
        ("expiry", "1"),
        ("scope", "repo:write"),
        ("owner", "user-10"),
    ]);
    let refused = request(addr, "POST", "/console/mine/tokens", Some(&hosted), &create).await;
    assert_eq!(refused.status, 403);
    let admin_csrf = admin_page.csrf();
    let refused = request(
        addr,
        "POST",
        "/console/mine/tokens",
        Some(&hosted),
        &format!("{create}&csrf={admin_csrf}"),
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_eq!(tokens_of(&app, "user-10").await.len(), 1);
    let made = request(
        addr,
        "POST",
        "/console/mine/tokens",
        Some(&hosted),
        &format!("{create}&csrf={csrf}"),
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.body);
    let at = made.body.find(r#"id="secret" value=""#).unwrap() + 19;
    let secret: String = made.body[at..].chars().take_while(|c| *c != '"').collect();
    let verified = app.verify(&secret, &["repo:write"]).await;
    assert_eq!(verified.verdict(), pb::Verdict::Valid);
    let token = verified.token.unwrap();
    // The owner field was ignored: the token is the session's owner's.
    assert_eq!(
        (token.owner.as_str(), token.scopes.as_slice()),
        ("user-9", &["repo:write".to_owned()][..])
    );
    assert_eq!(
        token.expire_time.unwrap().seconds - token.create_time.unwrap().seconds,
        60 * 86_400
    );
    assert_eq!(tokens_of(&app, "user-10").await.len(), 1);
    // Shown in the dialog only.
    let list = request(addr, "GET", "/console/mine/", Some(&hosted), "").await;
    assert!(list.body.contains(&token.display_hint));
    assert!(
        !list.body.contains(&secret[3..20]),
        "the list shows the secret"
    );

    // Revoke, restore, delete their own: back to the hosted list only.
    for (action, back, goes) in [
        (
            "revoke",
            "/console/mine/?status=active",
            "/console/mine/?status=active",
        ),
        ("restore", "/console/", "/console/mine/"),
        ("delete", "https://evil.example/", "/console/mine/"),
    ] {
        let path = format!("/console/mine/tokens/{}/{action}", mine.id);
        let answer = request(
            addr,
            "POST",
            &path,
            Some(&hosted),
            &encode(&[("csrf", &csrf), ("back", back)]),
        )
        .await;
        assert_eq!(
            (answer.status, answer.header("location")),
            (303, Some(goes)),
            "{action}"
        );
    }
    assert_eq!(
        app.verify(&mine_secret, &[]).await.verdict(),
        pb::Verdict::Unknown
    );

    // Signing out ends the session and goes back to the product.
    let out = request(
        addr,
        "POST",
        "/console/mine/logout",
        Some(&hosted),
        &encode(&[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(
        (out.status, out.header("location")),
        (303, Some("https://app.example.com/settings"))
    );
    assert_eq!(
        request(addr, "GET", "/console/mine/", Some(&hosted), "")
            .await
            .status,
        401
    );

    // A link that waited too long opens nothing; nor does a forged one.
    let late = console_link(&app, "user-9", Some(Duration::from_secs(60)), "")
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(
        request(addr, "GET", &path_of(&late.url), None, "")
            .await
            .status,
        410
    );
    for forged in [
        format!("/console/link/{}", "0".repeat(64)),
        "/console/link/zz".to_owned(),
        format!("/console/link/{}", "a".repeat(5000)),
    ] {
        let answer = request(addr, "GET", &forged, None, "").await;
        assert_eq!(answer.status, 410, "{forged:.40}");
        assert!(answer.cookie("latchkey_hosted").is_none());
    }

    // Disabling the owner ends their sessions and refuses new links.
    let link = console_link(&app, "user-9", None, "").await.unwrap();
    let opened = request(addr, "GET", &path_of(&link.url), None, "").await;
    let hosted = format!(
        "latchkey_hosted={}",
        opened.cookie("latchkey_hosted").unwrap()
    );
    assert_eq!(
        request(addr, "GET", "/console/mine/", Some(&hosted), "")
            .await
            .status,
        200
    );
    app.admin
        .clone()
        .disable_owner(app.admin_request(pb::DisableOwnerRequest {
            owner: "user-9".into(),
            reason: "left".into(),
        }))
        .await
        .unwrap();
    assert_eq!(
        request(addr, "GET", "/console/mine/", Some(&hosted), "")
            .await
            .status,
        401
    );
    let refused = console_link(&app, "user-9", None, "").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_console_link_refuses_bad_requests_and_callers() {
    let app = hosted_app(Backend::Sqlite).await;
    let ttl = |secs: i64| {
        Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        })
    };
    let cases: Vec<(pb::CreateConsoleLinkRequest, &str)> = vec![
        (
            pb::CreateConsoleLinkRequest {
                owner: String::new(),
                ..Default::default()
            },
            "owner",
        ),
        (
            pb::CreateConsoleLinkRequest {
                owner: "bell\u{7}".into(),
                ..Default::default()
            },
            "owner",
        ),
        (
            pb::CreateConsoleLinkRequest {
                owner: "o".repeat(300),
                ..Default::default()
            },
            "owner",
        ),
        (
            pb::CreateConsoleLinkRequest {
                owner: "u".into(),
                ttl: ttl(0),
                ..Default::default()
            },
            "ttl",
        ),
        (
            pb::CreateConsoleLinkRequest {
                owner: "u".into(),
                ttl: ttl(-5),
                ..Default::default()
            },
            "ttl",
        ),
        (
            pb::CreateConsoleLinkRequest {
                owner: "u".into(),
                ttl: ttl(3601),
                ..Default::default()
            },
            "ttl",
        ),
        (
            pb::CreateConsoleLinkRequest {
                owner: "u".into(),
                return_url: "javascript:alert(1)".into(),
                ..Default::default()
            },
            "return_url",
        ),
        (
            pb::CreateConsoleLinkRequest {
                owner: "u".into(),
                return_url: "https://".into(),
                ..Default::default()
            },
            "return_url",
        ),
        (
            pb::CreateConsoleLinkRequest {
                owner: "u".into(),
                return_url: "https://a.example/\r\nx".into(),
                ..Default::default()
            },
            "return_url",
        ),
        (
            pb::CreateConsoleLinkRequest {
                owner: "u".into(),
                return_url: "https://a.example/\"><script>".into(),
                ..Default::default()
            },
            "return_url",
        ),
        (
            pb::CreateConsoleLinkRequest {
                owner: "u".into(),
                return_url: format!("https://a.example/{}", "p".repeat(3000)),
                ..Default::default()
            },
            "return_url",
        ),
    ];
    for (req, field) in cases {
        let status = app
            .admin
            .clone()
            .create_console_link(app.admin_request(req.clone()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{req:?}");
        assert!(
            status.message().starts_with(field),
            "{req:?}: {}",
            status.message()
        );
    }
    let req = pb::CreateConsoleLinkRequest {
        owner: "u".into(),
        ..Default::default()
    };
    let bare = app
        .admin
        .clone()
        .create_console_link(req.clone())
        .await
        .unwrap_err();
    assert_eq!(bare.code(), Code::Unauthenticated);
    let (_, plain) = app.create_token("someone", &["repo:read"]).await;
    let not_admin = app
        .admin
        .clone()
        .create_console_link(with_bearer(req.clone(), &plain))
        .await
        .unwrap_err();
    assert_eq!(not_admin.code(), Code::PermissionDenied);
    // The longest ttl is an hour.
    let hour = pb::CreateConsoleLinkRequest {
        ttl: ttl(3600),
        ..req.clone()
    };
    app.admin
        .clone()
        .create_console_link(app.admin_request(hour))
        .await
        .unwrap();

    // Without the HTTP listener there is no page to link to.
    let off = spawn_app(Backend::Sqlite).await;
    let status = off
        .admin
        .clone()
        .create_console_link(off.admin_request(req))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("http_addr"),
        "{}",
        status.message()
    );
}
