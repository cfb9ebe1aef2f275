//! TLS for the gRPC and HTTP listeners (rustls): a certificate and key,
//! optionally a client CA that every gRPC client must present a certificate
//! from (mTLS), and that an HTTP client may. The
//! files are watched: when one changes, the configuration is built again
//! and new connections use it, with no restart (connections already open
//! keep theirs). A change that does not load (a half-written file, a key
//! that does not match) is logged and the previous configuration stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How often the files are checked for changes.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// What a listener's TLS asks of clients and speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// gRPC: HTTP/2 by ALPN; with a client CA, every client must present a
    /// certificate from it.
    Grpc,
    /// The HTTP listener: HTTP/1.1 by ALPN; with a client CA, a client may
    /// present a certificate from it (it then authenticates TokenReview
    /// calls, as kube-apiserver's webhook client can), but need not.
    Http,
}

/// Where the server's TLS material lives.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, clients must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.client_ca.as_deref());
        paths
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        self.paths()
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Builds the server configuration from the files as they are now.
    ///
    /// # Errors
    /// If a file cannot be read or parsed, or the key does not fit.
    pub fn load(&self, flavor: Flavor) -> anyhow::Result<Arc<ServerConfig>> {
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .with_context(|| format!("reading the certificate {}", self.cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("reading the private key {}", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .context("choosing TLS versions")?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("reading the client CA {}", ca.display()))?
                {
                    roots
                        .add(
                            cert.with_context(|| {
                                format!("reading the client CA {}", ca.display())
                            })?,
                        )
                        .with_context(|| format!("the client CA {} is not usable", ca.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match flavor {
                    Flavor::Grpc => verifier,
                    Flavor::Http => verifier.allow_unauthenticated(),
                }
                .build()
                .context("building the client certificate verifier")?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .context("the certificate and the private key do not fit together")?;
        config.alpn_protocols = vec![match flavor {
            Flavor::Grpc => b"h2".to_vec(),
            Flavor::Http => b"http/1.1".to_vec(),
        }];
        Ok(Arc::new(config))
    }
}

/// The current configuration, replaced when the files change.
#[derive(Clone)]
pub struct ReloadingTls {
    files: TlsFiles,
    flavor: Flavor,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ReloadingTls {
    /// # Errors
    /// If the files do not load now.
    pub fn new(files: TlsFiles, flavor: Flavor) -> anyhow::Result<Self> {
        let config = files.load(flavor)?;
        Ok(ReloadingTls {
            files,
            flavor,
            current: Arc::new(RwLock::new(config)),
        })
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        TlsAcceptor::from(Arc::clone(&config))
    }

    /// Checks the files every [`WATCH_EVERY`] until `shutdown`, loading them
    /// again when one has changed.
    pub async fn watch(self, shutdown: CancellationToken) {
        let mut seen = self.files.modified();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(WATCH_EVERY) => {}
            }
            let now = self.files.modified();
            if now == seen {
                continue;
            }
            match self.files.load(self.flavor) {
                Ok(config) => {
                    *self
                        .current
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
                    seen = now;
                    tracing::info!("TLS certificate reloaded");
                }
                // Tried again at the next change (or the next check, if the
                // files are still being written).
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "the changed TLS files do not load; keeping the previous ones"
                ),
            }
        }
    }

    /// Completes the handshake on `stream`; `None` if it fails. The caller
    /// bounds how long it may take (`server.handshake_timeout`).
    pub async fn accept(&self, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
        let peer = stream.peer_addr().ok();
        match self.acceptor().accept(stream).await {
            Ok(tls) => Some(tls),
            Err(e) => {
                tracing::debug!(?peer, error = %e, "TLS handshake failed");
                None
            }
        }
    }
}
