//! TLS and mTLS on the gRPC server, with the certificate reloaded from its
//! files without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use latchkey::grpc::pb::{self, token_verify_client::TokenVerifyClient};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::*;

/// A CA, and PEM certificates and keys it signs.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// (certificate, key) for `name`.
    fn issue(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, pem: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

/// A server with TLS, its certificate from a new CA named `ca_name` and
/// its files in `dir`; `change` sets the rest.
async fn tls_app(
    dir: &Path,
    ca_name: &str,
    change: impl FnOnce(&mut latchkey::Settings),
) -> (TestApp, Ca) {
    let ca = Ca::new(ca_name);
    let (cert, key) = ca.issue("localhost");
    let cert_file = write(dir, "server.pem", &cert);
    let key_file = write(dir, "server.key", &key);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.tls.cert_file = Some(cert_file);
        s.tls.key_file = Some(key_file);
        change(s);
    })
    .await;
    (app, ca)
}

/// A server with TLS whose clients present certificates from `client_ca`.
struct Mtls {
    app: TestApp,
    server_ca: Ca,
    client_ca: Ca,
    _files: tempfile::TempDir,
}

impl Mtls {
    async fn spawn(change: impl FnOnce(&mut latchkey::Settings)) -> Mtls {
        let files = tempfile::tempdir().unwrap();
        let client_ca = Ca::new("client CA");
        let ca_file = write(files.path(), "clients.pem", &client_ca.pem);
        let (app, server_ca) = tls_app(files.path(), "server CA", |s| {
            s.tls.client_ca_file = Some(ca_file);
            change(s);
        })
        .await;
        Mtls {
            app,
            server_ca,
            client_ca,
            _files: files,
        }
    }
}

async fn connect(app: &TestApp, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("https://localhost:{}", app.addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn verify_over(channel: Channel) -> Result<pb::VerifyResponse, tonic::Status> {
    TokenVerifyClient::new(channel)
        .verify(pb::VerifyRequest {
            token: "lk_notatoken".into(),
            required_scopes: vec![],
            cost: None,
            client: None,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_and_a_new_certificate_is_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (app, ca) = tls_app(dir.path(), "first CA", |_| {}).await;
    let trust_first = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    let channel = connect(&app, trust_first.clone()).await.unwrap();
    assert!(verify_over(channel).await.is_ok());
    // Plaintext is refused.
    let plain = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        assert!(verify_over(plain).await.is_err());
    }

    // A certificate from another CA replaces the files: new connections get it.
    let second = Ca::new("second CA");
    let (cert, key) = second.issue("localhost");
    write(dir.path(), "server.key", &key);
    write(dir.path(), "server.pem", &cert);
    let trust_second = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&second.pem))
        .domain_name("localhost");
    let started = Instant::now();
    loop {
        if let Ok(channel) = connect(&app, trust_second.clone()).await
            && verify_over(channel).await.is_ok()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And clients trusting only the first CA no longer get in.
    let old = connect(&app, trust_first).await;
    assert!(old.is_err() || verify_over(old.unwrap()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_a_client_without_a_certificate_from_the_client_ca() {
    let Mtls {
        app,
        server_ca,
        client_ca,
        _files,
    } = Mtls::spawn(|_| {}).await;
    let server_trust = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&server_ca.pem))
        .domain_name("localhost");

    // No client certificate: refused.
    let anonymous = connect(&app, server_trust.clone()).await;
    assert!(
        anonymous.is_err() || verify_over(anonymous.unwrap()).await.is_err(),
        "a client without a certificate got in"
    );
    // A certificate from another CA: refused.
    let (stranger_cert, stranger_key) = Ca::new("stranger").issue("client");
    let stranger = connect(
        &app,
        server_trust
            .clone()
            .identity(Identity::from_pem(&stranger_cert, &stranger_key)),
    )
    .await;
    assert!(stranger.is_err() || verify_over(stranger.unwrap()).await.is_err());
    // A certificate from the client CA: in.
    let (client_cert, client_key) = client_ca.issue("client");
    let channel = connect(
        &app,
        server_trust.identity(Identity::from_pem(&client_cert, &client_key)),
    )
    .await
    .unwrap();
    assert!(verify_over(channel).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_mtls_with_the_certificates_it_is_given() {
    let Mtls {
        app,
        server_ca,
        client_ca,
        _files,
    } = Mtls::spawn(|_| {}).await;
    let dir = _files.path();
    let ca = write(dir, "server-ca.pem", &server_ca.pem);
    let (cert, key) = client_ca.issue("client");
    let cert = write(dir, "client.pem", &cert);
    let key = write(dir, "client.key", &key);
    let addr = format!("https://localhost:{}", app.addr.port());
    let env = [
        ("LATCHKEY_ADDR", addr.as_str()),
        ("LATCHKEY_TOKEN", ADMIN_TOKEN),
    ];
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );

    let keys = run_client_with(
        &[
            "keys",
            "--ca-cert",
            ca,
            "--client-cert",
            cert,
            "--client-key",
            key,
        ],
        b"",
        &env,
    )
    .await;
    assert!(keys.ok().starts_with("ID"), "{keys:?}");
    // Without its certificate the server refuses the client.
    let anonymous = run_client_with(&["keys", "--ca-cert", ca], b"", &env).await;
    assert!(anonymous.failed(1).starts_with("error: "), "{anonymous:?}");
    // A certificate without its key is a usage error.
    let half = run_client_with(&["keys", "--ca-cert", ca, "--client-cert", cert], b"", &env).await;
    assert!(half.failed(2).contains("--client-key"), "{half:?}");
    // A file that is not there is named.
    let missing = run_client_with(&["keys", "--ca-cert", "/nonexistent/ca.pem"], b"", &env).await;
    assert!(
        missing.failed(1).contains("--ca-cert /nonexistent/ca.pem"),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_that_stalls_its_handshake_is_closed_at_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let dir = tempfile::tempdir().unwrap();
    let (app, ca) = tls_app(dir.path(), "CA", |s| {
        s.server.handshake_timeout = Duration::from_millis(500);
    })
    .await;
    // One sends nothing; one starts a TLS record and never finishes it.
    let mut silent = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut stalled = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let started = Instant::now();
    for stream in [&mut silent, &mut stalled] {
        let mut buffer = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(n) = stream.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a stalled handshake held its connection");
    }
    assert!(started.elapsed() >= Duration::from_millis(450));
    let trust = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    assert!(
        verify_over(connect(&app, trust).await.unwrap())
            .await
            .is_ok()
    );
}

/// An HTTPS request to `addr` trusting `ca`, with a client certificate if
/// given; `None` if the TLS handshake is refused.
async fn https_request(
    addr: std::net::SocketAddr,
    ca: &str,
    client: Option<(&str, &str)>,
    request: Vec<u8>,
) -> Option<HttpAnswer> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    tls.write_all(&request).await.ok()?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await.ok()?;
    (!raw.is_empty()).then(|| parse_http_answer(raw))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_listener_speaks_tls_and_takes_a_client_certificate_for_token_review() {
    let Mtls {
        app,
        server_ca,
        client_ca,
        _files,
    } = Mtls::spawn(|s| s.http_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let http = app.http_addr.unwrap();
    // Tokens made over the gRPC port, with a client certificate.
    let (client_cert, client_key) = client_ca.issue("kube-apiserver");
    let grpc = connect(
        &app,
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&server_ca.pem))
            .domain_name("localhost")
            .identity(Identity::from_pem(&client_cert, &client_key)),
    )
    .await
    .unwrap();
    let admin = pb::token_admin_client::TokenAdminClient::new(grpc);
    let create = |owner: &str, scope: &str| {
        let request = with_bearer(
            pb::CreateTokenRequest {
                owner: owner.into(),
                name: "t".into(),
                scopes: vec![scope.into()],
                ..Default::default()
            },
            ADMIN_TOKEN,
        );
        let mut admin = admin.clone();
        async move {
            admin
                .create_token(request)
                .await
                .unwrap()
                .into_inner()
                .secret
        }
    };
    let secret = create("alice", "kubernetes:authenticate").await;
    let introspector = create("gateway", "latchkey:introspect").await;
    let review = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": { "token": secret },
    })
    .to_string();
    let post_review = |authorization: Option<&str>| {
        let mut headers = vec![("Content-Type", "application/json")];
        headers.extend(authorization.map(|a| ("Authorization", a)));
        http_request_bytes(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            &headers,
            review.as_bytes(),
        )
    };

    // kube-apiserver with a client certificate from the CA: reviewed.
    let answer = https_request(
        http,
        &server_ca.pem,
        Some((&client_cert, &client_key)),
        post_review(None),
    )
    .await
    .expect("handshake");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.json()["status"]["user"]["username"],
        "latchkey:alice"
    );
    // No certificate and no bearer token: 401. A certificate from another
    // CA: no handshake.
    let answer = https_request(http, &server_ca.pem, None, post_review(None))
        .await
        .expect("handshake without a certificate");
    assert_eq!(answer.status, 401);
    let (stranger_cert, stranger_key) = Ca::new("stranger").issue("client");
    assert!(
        https_request(
            http,
            &server_ca.pem,
            Some((&stranger_cert, &stranger_key)),
            post_review(None)
        )
        .await
        .is_none()
    );
    // Introspection needs no certificate, its bearer token as before.
    let form = format!("token={secret}");
    let bearer = format!("Bearer {introspector}");
    let introspect = http_request_bytes(
        "POST",
        "/oauth2/introspect",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &bearer),
        ],
        form.as_bytes(),
    );
    let answer = https_request(http, &server_ca.pem, None, introspect)
        .await
        .expect("handshake");
    assert_eq!(answer.json()["active"], true);
    // Plaintext is not spoken.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        http_request_raw(http, post_review(None)),
    )
    .await
    .expect("answered or closed");
    assert!(plain.is_none_or(|a| a.status != 200));
}

/// Writes `request` over plain TCP; `None` if nothing HTTP comes back.
async fn http_request_raw(addr: std::net::SocketAddr, request: Vec<u8>) -> Option<HttpAnswer> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    tcp.write_all(&request).await.ok()?;
    let mut raw = Vec::new();
    let _ = tcp.read_to_end(&mut raw).await;
    raw.starts_with(b"HTTP/").then(|| parse_http_answer(raw))
}
