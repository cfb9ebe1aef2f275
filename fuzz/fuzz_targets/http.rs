//! The HTTP listener's parsers (introspection forms, TokenReview JSON) on a
//! real server (SQLite), fed arbitrary bodies under each endpoint and
//! content type by a caller allowed to introspect and review: no panic, no
//! hang, and every answer a client's or a verdict, never a server fault
//! (5xx).
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
    _dir: tempfile::TempDir,
}

static SERVER: LazyLock<Server> = LazyLock::new(|| {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let (http, caller) = runtime.block_on(async {
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
        (http, created.into_inner().secret)
    });
    Server {
        runtime,
        http,
        caller,
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

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let (path, content_type) = match which % 4 {
        0 => ("/oauth2/introspect", "application/x-www-form-urlencoded"),
        1 => ("/oauth2/introspect", "application/x-www-form-urlencoded; charset=UTF-8"),
        2 => ("/apis/authentication.k8s.io/v1/tokenreviews", "application/json"),
        _ => ("/apis/authentication.k8s.io/v1beta1/tokenreviews", "application/json"),
    };
    let server = &*SERVER;
    let status = server.runtime.block_on(post(server, path, content_type, body));
    assert!(
        matches!(status, 200 | 400 | 413),
        "{path} answered {status} to {:?}",
        String::from_utf8_lossy(body)
    );
});
