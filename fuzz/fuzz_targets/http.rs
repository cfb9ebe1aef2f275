//! The HTTP listener's parsers (introspection forms, TokenReview JSON, the
//! console's forms) on a real server (SQLite), fed arbitrary bodies under
//! each endpoint and content type by a caller allowed to introspect and
//! review, or signed in to the console (as an admin, or on an owner's
//! hosted page) with the session's CSRF token: no panic, no hang, and every
//! answer a client's or a verdict, never a server fault (5xx).
#![no_main]

use std::net::SocketAddr;
use std::sync::LazyLock;

use latchkey::config::Sensitive;
use latchkey::grpc::pb::{self, token_admin_client::TokenAdminClient};
use latchkey::{Application, Settings};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Request;

const ADMIN_TOKEN: &str = "fuzz-admin-credential-0123456789abcdef";

struct Server {
    runtime: tokio::runtime::Runtime,
    http: SocketAddr,
    /// A token with scopes latchkey:introspect and latchkey:tokenreview.
    caller: String,
    /// An admin's console session, and one on the hosted page of the
    /// owner `gateway`: (cookie, CSRF token).
    admin: (String, String),
    hosted: (String, String),
    /// The id of a token of `gateway`'s (not the caller's), for the
    /// console's token forms.
    token_id: String,
    _dir: tempfile::TempDir,
}

/// Sends `request` (head and body) and returns the answer: status, head,
/// body.
async fn exchange(http: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    // The server may answer (413) before it has read a long body.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"));
    (status, head.to_owned(), body.to_owned())
}

/// The value `name=…` a `Set-Cookie` of `head` sets.
fn set_cookie(head: &str, name: &str) -> String {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| v.trim().strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(|v| format!("{name}={v}"))
        .unwrap_or_else(|| panic!("no cookie {name} in {head}"))
}

/// The page's CSRF field.
fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    body[at..at + 64].to_owned()
}

fn get(path: &str, cookie: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: fuzz\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// Signs in to the console with the admin credential: (cookie, CSRF).
async fn admin_session(http: SocketAddr) -> (String, String) {
    let (_, head, body) = exchange(http, &get("/console/login", "")).await;
    let form_cookie = set_cookie(&head, "latchkey_console_login");
    let form = format!("csrf={}&credential={ADMIN_TOKEN}", csrf(&body));
    let request = format!(
        "POST /console/login HTTP/1.1\r\nHost: fuzz\r\nCookie: {form_cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{form}",
        form.len()
    );
    let (_, head, _) = exchange(http, request.as_bytes()).await;
    let cookie = set_cookie(&head, "latchkey_console");
    let (_, _, page) = exchange(http, &get("/console/", &cookie)).await;
    (cookie, csrf(&page))
}

/// Opens a console link to `gateway`'s hosted page: (cookie, CSRF).
async fn hosted_session(http: SocketAddr, url: &str) -> (String, String) {
    let path = &url[url.find("/console/").expect("a console link")..];
    let (_, head, _) = exchange(http, &get(path, "")).await;
    let cookie = set_cookie(&head, "latchkey_hosted");
    let (_, _, page) = exchange(http, &get("/console/mine/", &cookie)).await;
    (cookie, csrf(&page))
}

static SERVER: LazyLock<Server> = LazyLock::new(|| {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let (http, caller, admin, hosted, token_id) = runtime.block_on(async {
        let settings = Settings {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: Some("127.0.0.1:0".parse().unwrap()),
            database_url: format!("sqlite://{}/fuzz.db?mode=rwc", dir.path().display()),
            hmac_key: Some(Sensitive::new("00".repeat(32))),
            admin_token: Some(Sensitive::new(ADMIN_TOKEN)),
            ..Settings::default()
        };
        let app = Application::build(settings).await.expect("server starts");
        let (grpc, http) = (app.local_addr(), app.http_addr().expect("HTTP is on"));
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        let mut admin = TokenAdminClient::connect(format!("http://{grpc}"))
            .await
            .expect("connects");
        let mut request = Request::new(pb::CreateTokenRequest {
            owner: "gateway".into(),
            name: "fuzz".into(),
            scopes: vec![
                "latchkey:introspect".into(),
                "latchkey:tokenreview".into(),
                "kubernetes:authenticate".into(),
            ],
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
        );
        let created = admin.create_token(request).await.expect("CreateToken");
        let created = created.into_inner();
        let mut request = Request::new(pb::CreateConsoleLinkRequest {
            owner: "gateway".into(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
        );
        let link = admin
            .create_console_link(request)
            .await
            .expect("CreateConsoleLink")
            .into_inner();
        // The console's forms act on a token of their own, so that the
        // caller's stays valid.
        let mut request = Request::new(pb::CreateTokenRequest {
            owner: "gateway".into(),
            name: "console".into(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
        );
        let target = admin.create_token(request).await.expect("CreateToken");
        let token_id = target.into_inner().token.expect("a token").id;
        (
            http,
            created.secret.clone(),
            admin_session(http).await,
            hosted_session(http, &link.url).await,
            token_id,
        )
    });
    Server {
        runtime,
        http,
        caller,
        admin,
        hosted,
        token_id,
        _dir: dir,
    }
});

/// POSTs `body` and returns the answer's status code.
async fn post(server: &Server, path: &str, content_type: &str, body: &[u8]) -> u16 {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: fuzz\r\nContent-Type: {content_type}\r\n\
         Authorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.caller,
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) before it has read a long body.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"))
}

/// POSTs a console form: `body` after the session's CSRF token.
async fn post_form(
    server: &Server,
    path: &str,
    (cookie, csrf): &(String, String),
    body: &[u8],
) -> u16 {
    let mut form = format!("csrf={csrf}&").into_bytes();
    form.extend_from_slice(body);
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: fuzz\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        form.len()
    )
    .into_bytes();
    request.extend_from_slice(&form);
    exchange(server.http, &request).await.0
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let server = &*SERVER;
    let id = &server.token_id;
    let (path, status) = match which % 12 {
        4..=11 => {
            let (path, session) = match which % 12 {
                4 => ("/console/tokens".to_owned(), &server.admin),
                5 => (format!("/console/tokens/{id}/update"), &server.admin),
                6 => (format!("/console/tokens/{id}/renew"), &server.admin),
                7 => ("/console/owners/enable".to_owned(), &server.admin),
                8 => ("/console/mine/tokens".to_owned(), &server.hosted),
                9 => (format!("/console/mine/tokens/{id}/revoke"), &server.hosted),
                10 => (format!("/console/mine/tokens/{id}/restore"), &server.hosted),
                _ => (format!("/console/tokens/{id}/revoke"), &server.admin),
            };
            let status = server
                .runtime
                .block_on(post_form(server, &path, session, body));
            (path, status)
        }
        which => {
            let (path, content_type) = match which {
                0 => ("/oauth2/introspect", "application/x-www-form-urlencoded"),
                1 => (
                    "/oauth2/introspect",
                    "application/x-www-form-urlencoded; charset=UTF-8",
                ),
                2 => (
                    "/apis/authentication.k8s.io/v1/tokenreviews",
                    "application/json",
                ),
                _ => (
                    "/apis/authentication.k8s.io/v1beta1/tokenreviews",
                    "application/json",
                ),
            };
            let status = server
                .runtime
                .block_on(post(server, path, content_type, body));
            assert!(
                matches!(status, 200 | 400 | 413),
                "{path} answered {status} to {:?}",
                String::from_utf8_lossy(body)
            );
            return;
        }
    };
    // A page, a redirect, or a refusal that names why; never a fault.
    assert!(
        matches!(status, 200 | 303 | 400 | 403 | 404 | 409 | 413 | 429),
        "{path} answered {status} to {:?}",
        String::from_utf8_lossy(body)
    );
});
