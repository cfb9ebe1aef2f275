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
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_and_a_new_certificate_is_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("first CA");
    let (cert, key) = ca.issue("localhost");
    let cert_file = write(dir.path(), "server.pem", &cert);
    let key_file = write(dir.path(), "server.key", &key);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.tls.cert_file = Some(cert_file.clone());
        s.tls.key_file = Some(key_file.clone());
    })
    .await;
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
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let (cert, key) = server_ca.issue("localhost");
    let cert_file = write(dir.path(), "server.pem", &cert);
    let key_file = write(dir.path(), "server.key", &key);
    let ca_file = write(dir.path(), "clients.pem", &client_ca.pem);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.tls.cert_file = Some(cert_file.clone());
        s.tls.key_file = Some(key_file.clone());
        s.tls.client_ca_file = Some(ca_file.clone());
    })
    .await;
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
async fn a_tls_connection_that_stalls_its_handshake_is_closed_at_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (cert, key) = ca.issue("localhost");
    let cert_file = write(dir.path(), "server.pem", &cert);
    let key_file = write(dir.path(), "server.key", &key);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.tls.cert_file = Some(cert_file.clone());
        s.tls.key_file = Some(key_file.clone());
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
