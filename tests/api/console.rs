//! The web console over real HTTP: sign-in, the token list, sessions that
//! survive a restart and end with their credential, CSRF, and hostile input.

use std::net::SocketAddr;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    console_signs_in_lists_tokens_and_signs_out,
    console_sessions_end_with_their_credential,
    console_changes_tokens_only_with_a_session_and_its_csrf_token,
);

/// What the console tests read off an answer.
pub(crate) trait Page {
    fn header(&self, name: &str) -> Option<&str>;
    fn cookies(&self) -> Vec<&str>;
    /// The value `name=…` sets, if a `Set-Cookie` sets it.
    fn cookie(&self, name: &str) -> Option<String>;
    /// The value of the page's hidden CSRF field.
    fn csrf(&self) -> String;
}

impl Page for HttpAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn cookies(&self) -> Vec<&str> {
        self.header_lines
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies().iter().find_map(|c| {
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            pair.strip_prefix(&format!("{name}=")).map(str::to_owned)
        })
    }

    fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .expect("a CSRF field")
            + 19;
        self.body[at..at + 64].to_owned()
    }
}

/// A form `POST` (or any request) with the session's cookie, if any.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &str,
) -> HttpAnswer {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(cookie) = cookie {
        headers.push(("Cookie", cookie));
    }
    http_request(addr, method, path, &headers, form.as_bytes()).await
}

pub(crate) fn encode(pairs: &[(&str, &str)]) -> String {
    let mut form = String::new();
    for (k, v) in pairs {
        if !form.is_empty() {
            form.push('&');
        }
        form.push_str(k);
        form.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                form.push(char::from(b));
            } else {
                form.push_str(&format!("%{b:02X}"));
            }
        }
    }
    form
}

/// Signs in with `credential`; the answer to the form's POST, and the
/// session cookie (`name=value`) if one was set.
pub(crate) async fn sign_in(addr: SocketAddr, credential: &str) -> (HttpAnswer, Option<String>) {
    let form = request(addr, "GET", "/console/login", None, "").await;
    assert_eq!(form.status, 200, "{}", form.body);
    let login_cookie = format!(
        "latchkey_console_login={}",
        form.cookie("latchkey_console_login").unwrap()
    );
    let answer = request(
        addr,
        "POST",
        "/console/login",
        Some(&login_cookie),
        &encode(&[("csrf", &form.csrf()), ("credential", credential)]),
    )
    .await;
    let session = answer
        .cookie("latchkey_console")
        .filter(|v| !v.is_empty())
        .map(|v| format!("latchkey_console={v}"));
    (answer, session)
}

/// Token `id`'s console page, signed in with the admin credential.
pub(crate) async fn token_page(app: &TestApp, id: &str) -> HttpAnswer {
    let addr = app.http_addr.unwrap();
    let (_, session) = sign_in(addr, ADMIN_TOKEN).await;
    let page = request(
        addr,
        "GET",
        &format!("/console/tokens/{id}"),
        session.as_deref(),
        "",
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    page
}

async fn console_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap())
    })
    .await
}

async fn console_signs_in_lists_tokens_and_signs_out(backend: Backend) {
    let app = console_app(backend).await;
    let addr = app.http_addr.unwrap();

    let away = request(addr, "GET", "/console/", None, "").await;
    assert_eq!(
        (away.status, away.header("location")),
        (303, Some("/console/login"))
    );
    let form = request(addr, "GET", "/console/login", None, "").await;
    let csp = form.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    assert!(
        form.body
            .contains(r#"<label for="credential">Admin credential</label>"#)
    );
    let login_cookie = &form.cookies()[0];
    assert!(
        login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"),
        "{login_cookie}"
    );
    assert!(login_cookie.contains("Path=/console/login") && !login_cookie.contains("Secure"));

    let hostile = app
        .create(pb_create("mallory", "<script>alert(1)</script>"))
        .await
        .unwrap();
    let (plain, plain_secret) = app.create_token("alice", &[]).await;

    let (answer, session) = sign_in(addr, ADMIN_TOKEN).await;
    assert_eq!(
        (answer.status, answer.header("location")),
        (303, Some("/console/"))
    );
    let session = session.expect("a session cookie");
    let set = answer
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("latchkey_console="))
        .unwrap();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console;",
        "Max-Age=43200",
    ] {
        assert!(set.contains(attribute), "{attribute}: {set}");
    }
    // The session's secret is nowhere in the database.
    let secret = session.trim_start_matches("latchkey_console=");
    let dump = app.database_dump().await;
    assert!(!dump.windows(secret.len()).any(|w| w == secret.as_bytes()));

    let page = request(addr, "GET", "/console/", Some(&session), "").await;
    assert_eq!(page.status, 200, "{}", page.body);
    for column in ["Name", "Token", "Created", "Last used", "Expires", "Status"] {
        assert!(
            page.body
                .contains(&format!(r#"<th scope="col">{column}</th>"#)),
            "{column}"
        );
    }
    assert!(
        page.body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || page.body.contains("&lt;script&gt;"),
        "escaped"
    );
    assert!(!page.body.contains("<script>"), "no script on the page");
    assert!(page.body.contains(&plain.display_hint) && page.body.contains("Never"));
    assert!(page.body.contains("Signed in as the admin credential"));

    // "Never" turns into a time after a Verify.
    app.verify(&plain_secret, &[]).await;
    app.wait_for_last_used(&plain.id, None).await;
    let filtered = request(addr, "GET", "/console/?owner=alice", Some(&session), "").await;
    assert!(!filtered.body.contains("mallory"), "only alice's");
    assert_eq!(
        filtered.body.matches(">Never<").count(),
        1,
        "alice's token was used (it still never expires): {}",
        filtered.body
    );
    let revoked = request(addr, "GET", "/console/?status=revoked", Some(&session), "").await;
    assert!(revoked.body.contains("No tokens"), "{}", revoked.body);
    app.revoke(&hostile.token.unwrap().id, "test")
        .await
        .unwrap();
    let revoked = request(
        addr,
        "GET",
        "/console/?owner=mallory&status=revoked",
        Some(&session),
        "",
    )
    .await;
    assert!(
        revoked.body.contains(r#"<span class="status revoked">"#),
        "{}",
        revoked.body
    );

    // The session outlives a restart (the HTTP port changes with it).
    let app = app.restart().await;
    let addr = app.http_addr.unwrap();
    let page = request(addr, "GET", "/console/", Some(&session), "").await;
    assert_eq!(page.status, 200);

    // Signing out needs the page's CSRF token; then the cookie is dead.
    let forged = request(addr, "POST", "/console/logout", Some(&session), "csrf=00").await;
    assert_eq!(forged.status, 403);
    assert_eq!(
        request(addr, "GET", "/console/", Some(&session), "")
            .await
            .status,
        200
    );
    let out = request(
        addr,
        "POST",
        "/console/logout",
        Some(&session),
        &encode(&[("csrf", &page.csrf())]),
    )
    .await;
    assert_eq!(
        (out.status, out.header("location")),
        (303, Some("/console/login"))
    );
    assert!(
        out.cookies()
            .iter()
            .any(|c| c.starts_with("latchkey_console=;") && c.contains("Max-Age=0"))
    );
    let replayed = request(addr, "GET", "/console/", Some(&session), "").await;
    assert_eq!(replayed.status, 303, "a signed-out cookie replayed");
}

fn pb_create(owner: &str, name: &str) -> latchkey::grpc::pb::CreateTokenRequest {
    latchkey::grpc::pb::CreateTokenRequest {
        owner: owner.into(),
        name: name.into(),
        metadata: [("note".to_owned(), "<b>bold</b>".to_owned())].into(),
        ..Default::default()
    }
}

async fn console_sessions_end_with_their_credential(backend: Backend) {
    let app = console_app(backend).await;
    let addr = app.http_addr.unwrap();
    let (token, secret) = app.create_token("ops-team", &["latchkey:admin"]).await;
    let (_, session) = sign_in(addr, &secret).await;
    let session = session.expect("a token with latchkey:admin signs in");
    let page = request(addr, "GET", "/console/", Some(&session), "").await;
    assert!(
        page.body
            .contains(&format!("Signed in as token {}", token.id))
    );

    // Disabling the owner ends it; enabling brings it back (it is the same
    // credential, still valid).
    app.disable_owner("ops-team", "audit").await.unwrap();
    assert_eq!(
        request(addr, "GET", "/console/", Some(&session), "")
            .await
            .status,
        303
    );
    app.enable_owner("ops-team").await.unwrap();
    assert_eq!(
        request(addr, "GET", "/console/", Some(&session), "")
            .await
            .status,
        200
    );
    // Revoking the token ends it for good.
    app.revoke(&token.id, "rotated").await.unwrap();
    assert_eq!(
        request(addr, "GET", "/console/", Some(&session), "")
            .await
            .status,
        303
    );

    // A session of the static credential ends when the credential changes.
    let (_, admin_session) = sign_in(addr, ADMIN_TOKEN).await;
    let admin_session = admin_session.unwrap();
    let (db, mut settings) = app.stop().await;
    settings.admin_token = Some(latchkey::config::Sensitive::new(
        "another-admin-credential-0123456789abcdef",
    ));
    let app = spawn_app_on(db, settings).await;
    let addr = app.http_addr.unwrap();
    assert_eq!(
        request(addr, "GET", "/console/", Some(&admin_session), "")
            .await
            .status,
        303
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_refuses_hostile_sign_ins_and_queries() {
    let app = console_app(Backend::Sqlite).await;
    let addr = app.http_addr.unwrap();
    let (_, plain_secret) = app.create_token("bob", &["other"]).await;

    // Not an admin credential, a token without the scope, control characters.
    for (credential, status, says) in [
        ("wrong-credential", 401, "not a valid admin credential"),
        (
            plain_secret.as_str(),
            403,
            "does not hold the scope latchkey:admin",
        ),
        ("admin\u{7}\r\n", 401, "not a valid admin credential"),
        ("", 401, "not a valid admin credential"),
    ] {
        let (answer, session) = sign_in(addr, credential).await;
        assert_eq!(answer.status, status, "{credential:?}");
        assert!(
            answer.body.contains(says),
            "{credential:?}: {}",
            answer.body
        );
        assert!(session.is_none());
    }
    // No form cookie, or a CSRF token from another form: refused, no session.
    let form = request(addr, "GET", "/console/login", None, "").await;
    let body = encode(&[("csrf", &form.csrf()), ("credential", ADMIN_TOKEN)]);
    let bare = request(addr, "POST", "/console/login", None, &body).await;
    assert_eq!(bare.status, 403);
    assert!(bare.cookie("latchkey_console").is_none());
    let other = request(addr, "GET", "/console/login", None, "").await;
    let mixed = format!(
        "latchkey_console_login={}",
        other.cookie("latchkey_console_login").unwrap()
    );
    assert_eq!(
        request(addr, "POST", "/console/login", Some(&mixed), &body)
            .await
            .status,
        403
    );
    // Oversized.
    let huge = format!("credential={}", "a".repeat(70_000));
    assert_eq!(
        request(addr, "POST", "/console/login", None, &huge)
            .await
            .status,
        413
    );

    // Cookies that are not ours are no session.
    for cookie in [
        "latchkey_console=../../etc",
        "latchkey_console=",
        &format!("latchkey_console={}", "0".repeat(64)),
    ] {
        assert_eq!(
            request(addr, "GET", "/console/", Some(cookie), "")
                .await
                .status,
            303,
            "{cookie}"
        );
    }

    // Queries that name their field.
    let (_, session) = sign_in(addr, ADMIN_TOKEN).await;
    let session = session.unwrap();
    for (query, field) in [
        ("status=bogus", "status"),
        (&format!("owner={}", "o".repeat(300)) as &str, "owner"),
        ("owner=%07bell", "owner"),
        ("page_token=garbage", "page_token"),
    ] {
        let page = request(
            addr,
            "GET",
            &format!("/console/?{query}"),
            Some(&session),
            "",
        )
        .await;
        assert_eq!(page.status, 400, "{query}: {}", page.body);
        assert!(page.body.contains(field), "{query}: {}", page.body);
    }
    for query in ["owner=%07bell", &format!("owner={}", "o".repeat(300))] {
        for path in ["/console/owners", "/console/owners/delete"] {
            let page = request(addr, "GET", &format!("{path}?{query}"), Some(&session), "").await;
            assert_eq!(page.status, 400, "{path}?{query}: {}", page.body);
            assert!(page.body.contains("owner"), "{path}?{query}");
        }
    }
    // The console answers only its methods.
    assert_eq!(
        request(addr, "DELETE", "/console/", Some(&session), "")
            .await
            .status,
        405
    );
}

/// The tokens of `owner`.
pub(crate) async fn tokens_of(app: &TestApp, owner: &str) -> Vec<latchkey::grpc::pb::Token> {
    app.admin
        .clone()
        .list_tokens(app.admin_request(latchkey::grpc::pb::ListTokensRequest {
            owner: owner.to_owned(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .tokens
}

/// The event kinds of `token`'s audit trail, in the order they were written.
async fn event_kinds(app: &TestApp, token: &str) -> Vec<String> {
    let mut events = app
        .admin
        .clone()
        .list_token_events(
            app.admin_request(latchkey::grpc::pb::ListTokenEventsRequest {
                token_id: token.to_owned(),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_inner()
        .events;
    events.sort_by(|a, b| a.id.cmp(&b.id));
    events
        .into_iter()
        .map(|e| e.kind().as_str_name().to_owned())
        .collect()
}

async fn console_changes_tokens_only_with_a_session_and_its_csrf_token(backend: Backend) {
    let app = console_app(backend).await;
    let addr = app.http_addr.unwrap();
    let (_, session) = sign_in(addr, ADMIN_TOKEN).await;
    let session = session.unwrap();
    let form = request(
        addr,
        "GET",
        "/console/tokens/new?owner=user-7",
        Some(&session),
        "",
    )
    .await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains(r#"value="user-7""#), "{}", form.body);
    for preset in ["30 days", "60 days", "90 days", "1 year", "Never"] {
        assert!(form.body.contains(preset), "{preset}");
    }
    let csrf = form.csrf();
    let (victim, victim_secret) = app.create_token("user-7", &["repo:read"]).await;
    let id = victim.id.clone();
    let before = event_kinds(&app, &id).await;

    // Every route that changes state, with what it would change.
    let create = encode(&[("owner", "user-7"), ("name", "made"), ("expiry", "0")]);
    let posts = [
        ("/console/tokens".to_owned(), create.clone()),
        (
            format!("/console/tokens/{id}/update"),
            encode(&[("name", "renamed")]),
        ),
        (
            format!("/console/tokens/{id}/revoke"),
            encode(&[("reason", "x")]),
        ),
        (format!("/console/tokens/{id}/restore"), String::new()),
        (
            format!("/console/tokens/{id}/renew"),
            encode(&[("grace", "0")]),
        ),
        (format!("/console/tokens/{id}/delete"), String::new()),
        (
            "/console/owners/disable".to_owned(),
            encode(&[("owner", "user-7"), ("reason", "x")]),
        ),
        (
            "/console/owners/enable".to_owned(),
            encode(&[("owner", "user-7")]),
        ),
        (
            "/console/owners/limits".to_owned(),
            encode(&[("owner", "user-7"), ("rate_limits", "a=1/1s")]),
        ),
        (
            format!("/console/tokens/{id}/update"),
            encode(&[("rate_limits", "a=1/1s"), ("credits", "5")]),
        ),
        (
            "/console/owners/delete".to_owned(),
            encode(&[("owner", "user-7")]),
        ),
        ("/console/logout".to_owned(), String::new()),
    ];
    let someone_elses = {
        let (_, other) = sign_in(addr, ADMIN_TOKEN).await;
        let other = other.unwrap();
        request(addr, "GET", "/console/", Some(&other), "")
            .await
            .csrf()
    };
    for (path, fields) in &posts {
        // No session: to the sign-in page.
        let with_csrf = format!("{fields}&csrf={csrf}");
        let away = request(addr, "POST", path, None, &with_csrf).await;
        assert_eq!(
            (away.status, away.header("location")),
            (303, Some("/console/login")),
            "{path}"
        );
        // A session without its CSRF token, with another session's, or
        // with one that is not hex: refused.
        for bad in [
            fields.clone(),
            format!("{fields}&csrf={someone_elses}"),
            format!("{fields}&csrf={}", csrf.to_uppercase()),
            format!("{fields}&csrf=%00{}", &csrf[1..]),
        ] {
            let refused = request(addr, "POST", path, Some(&session), &bad).await;
            assert_eq!(refused.status, 403, "{path} {bad}: {}", refused.body);
            assert!(refused.body.contains("nothing was changed"), "{path}");
        }
    }
    // Nothing changed: no new token, no event, the token as it was.
    let listed = tokens_of(&app, "user-7").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, victim.name);
    assert_eq!(event_kinds(&app, &id).await, before);
    assert_eq!(
        app.verify(&victim_secret, &[]).await.verdict(),
        latchkey::grpc::pb::Verdict::Valid
    );
    assert_eq!(
        request(addr, "GET", "/console/", Some(&session), "")
            .await
            .status,
        200
    );

    // Hostile fields, each named, nothing written.
    for (fields, status, says) in [
        (
            vec![("owner", "user-7"), ("name", "x"), ("expiry", "7")],
            400,
            "expiry",
        ),
        (
            vec![("owner", "user-7"), ("name", "x"), ("expiry", "-1")],
            400,
            "expiry",
        ),
        (vec![("owner", "user-7"), ("name", "x")], 400, "expiry"),
        (
            vec![("owner", "user-7"), ("name", "bell\u{7}"), ("expiry", "0")],
            400,
            "name",
        ),
        (
            vec![("owner", ""), ("name", "x"), ("expiry", "0")],
            400,
            "owner",
        ),
        (
            vec![
                ("owner", "user-7"),
                ("name", "x"),
                ("scopes", "a b\u{1b}c"),
                ("expiry", "0"),
            ],
            400,
            "scopes",
        ),
        (
            vec![
                ("owner", "user-7"),
                ("name", &"n".repeat(200)),
                ("expiry", "0"),
            ],
            400,
            "name",
        ),
    ] {
        let mut pairs = fields.clone();
        pairs.push(("csrf", &csrf));
        let answer = request(
            addr,
            "POST",
            "/console/tokens",
            Some(&session),
            &encode(&pairs),
        )
        .await;
        assert_eq!(answer.status, status, "{fields:?}: {}", answer.body);
        assert!(answer.body.contains(says), "{fields:?}: {}", answer.body);
        assert!(answer.body.contains(r#"role="alert""#));
    }
    let huge = format!("csrf={csrf}&name={}", "a".repeat(70_000));
    assert_eq!(
        request(addr, "POST", "/console/tokens", Some(&session), &huge)
            .await
            .status,
        413
    );
    assert_eq!(tokens_of(&app, "user-7").await.len(), 1);
    for path in [
        "/console/tokens/not-a-uuid".to_owned(),
        format!("/console/tokens/{}", uuid::Uuid::nil()),
        format!("/console/tokens/{}/delete", uuid::Uuid::nil()),
    ] {
        assert_eq!(
            request(addr, "GET", &path, Some(&session), "").await.status,
            404,
            "{path}"
        );
    }
    let nil_revoke = encode(&[("csrf", &csrf), ("reason", "x")]);
    let path = format!("/console/tokens/{}/revoke", uuid::Uuid::nil());
    assert_eq!(
        request(addr, "POST", &path, Some(&session), &nil_revoke)
            .await
            .status,
        404
    );
    let bad_grace = encode(&[("csrf", &csrf), ("grace", "31536000")]);
    let path = format!("/console/tokens/{id}/renew");
    let answer = request(addr, "POST", &path, Some(&session), &bad_grace).await;
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("grace"));

    // With both: the change is made, as the admin, and the browser goes
    // back only to a console page.
    for (back, goes) in [
        ("/console/?owner=user-7", "/console/?owner=user-7"),
        ("//evil.example/console/", "/console/"),
        ("https://evil.example/", "/console/"),
        ("/console/\\\\evil.example", "/console/"),
        (
            "/console/%0d%0aSet-Cookie:x=1",
            "/console/%0d%0aSet-Cookie:x=1",
        ),
    ] {
        let revoke = encode(&[("csrf", &csrf), ("reason", "leaked"), ("back", back)]);
        let answer = request(
            addr,
            "POST",
            &format!("/console/tokens/{id}/revoke"),
            Some(&session),
            &revoke,
        )
        .await;
        assert_eq!(
            (answer.status, answer.header("location")),
            (303, Some(goes)),
            "{back}"
        );
        let restore = encode(&[("csrf", &csrf), ("back", back)]);
        let answer = request(
            addr,
            "POST",
            &format!("/console/tokens/{id}/restore"),
            Some(&session),
            &restore,
        )
        .await;
        assert_eq!(answer.status, 303);
    }
    let kinds = event_kinds(&app, &id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "EVENT_KIND_REVOKED").count(),
        5,
        "{kinds:?}"
    );

    // The secret is shown once, in the creation dialog, and nowhere else.
    let create = encode(&[
        ("csrf", &csrf),
        ("owner", "user-7"),
        ("name", "shown once"),
        ("expiry", "never"),
    ]);
    let dialog = request(addr, "POST", "/console/tokens", Some(&session), &create).await;
    assert_eq!(dialog.status, 200, "{}", dialog.body);
    assert!(dialog.body.contains("<dialog open"));
    assert_eq!(dialog.header("cache-control"), Some("no-store"));
    let at = dialog.body.find(r#"id="secret" value=""#).unwrap() + 19;
    let secret: String = dialog.body[at..]
        .chars()
        .take_while(|c| *c != '"')
        .collect();
    let verified = app.verify(&secret, &[]).await;
    assert_eq!(verified.verdict(), latchkey::grpc::pb::Verdict::Valid);
    let made = verified.token.unwrap();
    assert!(made.expire_time.is_none(), "chosen: Never");
    for path in [
        "/console/".to_owned(),
        "/console/?owner=user-7".to_owned(),
        format!("/console/tokens/{}", made.id),
        format!("/console/tokens/{}/delete", made.id),
    ] {
        let page = request(addr, "GET", &path, Some(&session), "").await;
        assert_eq!(page.status, 200, "{path}");
        assert!(!page.body.contains(&secret), "{path} shows the secret");
        assert!(
            !page.body.contains(&secret[3..20]),
            "{path} shows part of the secret"
        );
    }
    // Renewing shows the new secret once; the old one stops at once.
    let renew = encode(&[("csrf", &csrf), ("grace", "0")]);
    let renewed = request(
        addr,
        "POST",
        &format!("/console/tokens/{}/renew", made.id),
        Some(&session),
        &renew,
    )
    .await;
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    assert!(renewed.body.contains("Token renewed"));
    assert_eq!(
        app.verify(&secret, &[]).await.verdict(),
        latchkey::grpc::pb::Verdict::Revoked
    );
    // Renaming, then deleting, as the admin.
    let rename = encode(&[
        ("csrf", &csrf),
        ("name", "renamed"),
        ("description", "by the console"),
    ]);
    let answer = request(
        addr,
        "POST",
        &format!("/console/tokens/{id}/update"),
        Some(&session),
        &rename,
    )
    .await;
    assert_eq!(
        (answer.status, answer.header("location")),
        (303, Some(&*format!("/console/tokens/{id}")))
    );
    let page = request(
        addr,
        "GET",
        &format!("/console/tokens/{id}"),
        Some(&session),
        "",
    )
    .await;
    assert!(page.body.contains("renamed") && page.body.contains("by the console"));
    assert!(
        page.body.contains("EVENT_KIND_UPDATED") || page.body.contains("UPDATED"),
        "the audit trail"
    );
    let delete = encode(&[("csrf", &csrf), ("back", &format!("/console/tokens/{id}"))]);
    let answer = request(
        addr,
        "POST",
        &format!("/console/tokens/{id}/delete"),
        Some(&session),
        &delete,
    )
    .await;
    assert_eq!(
        (answer.status, answer.header("location")),
        (303, Some("/console/"))
    );
    assert_eq!(
        app.verify(&victim_secret, &[]).await.verdict(),
        latchkey::grpc::pb::Verdict::Unknown
    );
    let kinds = event_kinds(&app, &id).await;
    assert_eq!(kinds.last().map(String::as_str), Some("EVENT_KIND_DELETED"));
}
