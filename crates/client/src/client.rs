//! [`Client`]: a connection to latchkey, Verify with retries, and the admin
//! API with its credential.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::cache::Cache;
use crate::error::Error;
use crate::pb;

/// The longest [`Builder::cache`] accepts: a cached VALID answer outlives a
/// revocation by up to this long.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(5);

/// How a [`Client`] connects and retries; from [`Client::builder`].
#[derive(Clone)]
pub struct Builder {
    addr: String,
    credential: Option<String>,
    ca_cert: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    connect_timeout: Duration,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    cache: Option<(Duration, u64)>,
}

impl Builder {
    /// The credential sent as `authorization: Bearer` on admin calls (the
    /// static admin credential, or a token with scope `latchkey:admin`).
    #[must_use]
    pub fn credential(mut self, credential: impl Into<String>) -> Self {
        self.credential = Some(credential.into());
        self
    }

    /// PEM of the CA that signed latchkey's certificate (an `https://`
    /// address trusts the public web roots without it).
    #[must_use]
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_cert = Some(pem.into());
        self
    }

    /// A client certificate and its key (PEM), for a server that asks for
    /// one (mTLS).
    #[must_use]
    pub fn identity(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// How long to wait for a connection (default 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one call may take (default 10 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often Verify is tried again when latchkey is `UNAVAILABLE`
    /// (default 2), waiting `backoff` before the first retry and twice as
    /// long before each next one (default 50 ms). Other calls are never
    /// retried: they may have written.
    #[must_use]
    pub fn retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// Keeps Verify answers for `ttl` (at most [`MAX_CACHE_TTL`]), up to
    /// `capacity` of them. Off by default: latchkey answers a cached token
    /// in microseconds and sees revocations at once, and this cache would
    /// let a revoked token through for up to `ttl`.
    #[must_use]
    pub fn cache(mut self, ttl: Duration, capacity: u64) -> Self {
        self.cache = Some((ttl, capacity));
        self
    }

    /// Connects now: an unreachable server is an error here.
    ///
    /// # Errors
    /// A bad address or certificate, or latchkey not reachable.
    pub async fn connect(self) -> Result<Client, Error> {
        let endpoint = self.endpoint()?;
        let channel = endpoint.connect().await.map_err(|e| Error::Unavailable {
            addr: self.addr.clone(),
            detail: chain(&e),
        })?;
        self.client(channel)
    }

    /// Connects on first use, and again after the connection is lost: a
    /// service can start before latchkey does.
    ///
    /// # Errors
    /// A bad address or certificate.
    pub fn connect_lazy(self) -> Result<Client, Error> {
        let channel = self.endpoint()?.connect_lazy();
        self.client(channel)
    }

    fn endpoint(&self) -> Result<Endpoint, Error> {
        let mut endpoint = Endpoint::from_shared(self.addr.clone())
            .map_err(|e| Error::Config(format!("address {:?}: {e}", self.addr)))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout);
        let tls = self.addr.starts_with("https://");
        if !tls && (self.ca_cert.is_some() || self.identity.is_some()) {
            return Err(Error::Config(format!(
                "address {:?}: certificates need an https:// address",
                self.addr
            )));
        }
        if tls {
            let mut config = ClientTlsConfig::new();
            config = match &self.ca_cert {
                Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
                None => config.with_webpki_roots(),
            };
            if let Some((cert, key)) = &self.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| Error::Config(format!("TLS settings: {}", chain(&e))))?;
        }
        Ok(endpoint)
    }

    fn client(self, channel: Channel) -> Result<Client, Error> {
        let credential = match self.credential {
            Some(credential) => {
                let mut value: MetadataValue<Ascii> = format!("Bearer {credential}")
                    .parse()
                    .map_err(|_| Error::Config("the credential is not printable ASCII".into()))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let cache = match self.cache {
            Some((ttl, _)) if ttl > MAX_CACHE_TTL => {
                return Err(Error::Config(format!(
                    "cache ttl {ttl:?} is over {MAX_CACHE_TTL:?}: a cached answer keeps a revoked token working that long"
                )));
            }
            Some((ttl, capacity)) => Some(Cache::new(ttl, capacity)),
            None => None,
        };
        Ok(Client {
            addr: self.addr,
            channel,
            credential: Bearer(credential),
            retries: self.retries,
            backoff: self.backoff,
            cache,
        })
    }
}

/// A connection to latchkey; cheap to clone (clones share it).
#[derive(Clone)]
pub struct Client {
    addr: String,
    channel: Channel,
    credential: Bearer,
    retries: u32,
    backoff: Duration,
    cache: Option<Cache>,
}

/// The TokenAdmin client with the credential on every call.
pub type Admin = pb::token_admin_client::TokenAdminClient<InterceptedService<Channel, Bearer>>;

impl Client {
    /// Settings for a client of latchkey at `addr` (`http://host:port`, or
    /// `https://` for TLS).
    pub fn builder(addr: impl Into<String>) -> Builder {
        Builder {
            addr: addr.into(),
            credential: None,
            ca_cert: None,
            identity: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            retries: 2,
            backoff: Duration::from_millis(50),
            cache: None,
        }
    }

    /// The address this client calls.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Asks latchkey whether `token` is valid and holds `required_scopes`.
    /// Every verdict is an answer (`Ok`); the caller decides. Retried with
    /// backoff while latchkey is `UNAVAILABLE`.
    ///
    /// # Errors
    /// latchkey unreachable after the retries, or an error status.
    pub async fn verify(
        &self,
        token: &str,
        required_scopes: &[String],
    ) -> Result<pb::VerifyResponse, Error> {
        if let Some(cache) = &self.cache
            && let Some(answer) = cache.get(token, required_scopes)
        {
            return Ok(answer);
        }
        let mut client = pb::token_verify_client::TokenVerifyClient::new(self.channel.clone());
        let mut wait = self.backoff;
        let mut attempt = 0;
        let answer = loop {
            let request = pb::VerifyRequest {
                token: token.to_owned(),
                required_scopes: required_scopes.to_vec(),
                cost: None,
                client: None,
            };
            match client.verify(request).await {
                Ok(answer) => break answer.into_inner(),
                Err(status)
                    if status.code() == tonic::Code::Unavailable && attempt < self.retries =>
                {
                    attempt += 1;
                    tracing::debug!(attempt, addr = %self.addr, "latchkey unavailable; retrying Verify");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(status) => return Err(Error::from_status(&self.addr, status)),
            }
        };
        // An answer that spent credits or counted against a rate limit must
        // not stand in for the next call, which has to count for itself.
        if let Some(cache) = &self.cache
            && answer.credits_remaining.is_none()
            && answer.rate_limit.is_none()
        {
            cache.insert(token, required_scopes, answer.clone());
        }
        Ok(answer)
    }

    /// TokenAdmin, with the credential from [`Builder::credential`] on
    /// every call. Turn its error statuses into [`Error`] with
    /// [`Client::error`], which names the address on `UNAVAILABLE`.
    pub fn admin(&self) -> Admin {
        pb::token_admin_client::TokenAdminClient::with_interceptor(
            self.channel.clone(),
            self.credential.clone(),
        )
    }

    /// A status from a call through this client as an [`Error`].
    pub fn error(&self, status: tonic::Status) -> Error {
        Error::from_status(&self.addr, status)
    }
}

/// Adds `authorization: Bearer <credential>` to each call, if there is one.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// An error and its causes, on one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    crate::error::chain(error.to_string(), error.source())
}
