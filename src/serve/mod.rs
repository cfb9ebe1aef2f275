//! Serving a listener: the one accept path of every port (gRPC, HTTP,
//! metrics), with one set of connection limits and timeouts
//! ([`ServerSettings`]), so that no client can take a port from the others.
//!
//! - A place per connection, at most `max_connections` in all and
//!   `max_connections_per_ip` from one peer address; past either, a new
//!   connection is closed as soon as it is accepted.
//! - `handshake_timeout`: a connection must finish its TLS handshake and
//!   send its protocol's opening (the HTTP/2 client preface, or a first
//!   HTTP/1.1 request) within it, or it is closed. Silent sockets hold no
//!   place for longer.
//! - `idle_timeout`: a connection with no call open for that long is told
//!   to go away (HTTP/2 GOAWAY; clients reconnect when they next need to).
//! - `max_connection_age` (give or take a tenth, so that connections made
//!   together do not all leave together): a connection is told to go away,
//!   then closed `max_connection_age_grace` later if calls are still open.
//!   Long-lived clients thus spread over replicas that start later.
//! - HTTP/2 pings find dead peers; streams per connection, header size and
//!   time per call are bounded.
//! - Accept errors (out of file descriptors, say) are retried after a pause
//!   that grows while they last, instead of spinning.
//!
//! On stop: the listening socket closes, every connection is told to go
//! away, and [`serve`] returns once they have all closed (the caller bounds
//! that with its drain deadline).
//!
//! Each request carries the peer's [`PeerAddr`] and, over mutual TLS, its
//! verified [`PeerCertificates`] as extensions.

mod places;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerSettings;
use crate::peer::{PeerAddr, PeerCertificates};
use crate::tls::ReloadingTls;
use places::{Place, Places};

/// The HTTP/2 client connection preface (RFC 9113, 3.4) is this long.
const HTTP2_PREFACE_BYTES: u64 = 24;

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/2 only (gRPC).
    Http2,
    /// HTTP/1.1 only (introspection, TokenReview, metrics).
    Http1,
}

/// A bound port, what it speaks, and its TLS if any.
pub struct Listener {
    pub tcp: TcpListener,
    pub protocol: Protocol,
    pub tls: Option<ReloadingTls>,
}

/// When a listener stops: on `signal` it stops accepting and tells every
/// connection to go away; calls still open `drain` later are cut off.
#[derive(Clone, Debug)]
pub struct Stop {
    pub signal: CancellationToken,
    pub drain: Duration,
}

/// A boxed error, as hyper takes from services and bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What [`serve`] serves: one HTTP service, shared by every connection.
pub trait HttpService<B>:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<B>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<B>,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// The body of an answer [`serve`] writes.
pub trait ResponseBody: Body<Data: Send, Error: Into<BoxError>> + Unpin + Send + 'static {}

impl<B> ResponseBody for B where B: Body<Data: Send, Error: Into<BoxError>> + Unpin + Send + 'static {}

/// Serves `service` on `listener` with `limits` until `stop`; then closes
/// the listening socket, tells every connection to go away and returns
/// when they have all closed (at most `stop.drain` later).
pub async fn serve<S, B>(listener: Listener, service: S, limits: ServerSettings, stop: Stop)
where
    S: HttpService<B>,
    B: ResponseBody,
{
    let Listener { tcp, protocol, tls } = listener;
    let places = Places::new(limits.max_connections, limits.max_connections_per_ip);
    let builder = Arc::new(builder(protocol, &limits));
    let connections = TaskTracker::new();
    loop {
        let (stream, peer, place) = tokio::select! {
            () = stop.signal.cancelled() => break,
            accepted = places.accept(&tcp) => accepted,
        };
        let connection = Connection {
            peer,
            protocol,
            limits,
            activity: Arc::new(Activity::default()),
            _place: place,
        };
        connections.spawn(connection.serve(
            stream,
            tls.clone(),
            Arc::clone(&builder),
            service.clone(),
            stop.clone(),
        ));
    }
    drop(tcp);
    connections.close();
    connections.wait().await;
}

fn builder(protocol: Protocol, limits: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder = match protocol {
        Protocol::Http2 => builder.http2_only(),
        Protocol::Http1 => builder.http1_only(),
    };
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .max_buf_size(
            usize::try_from(limits.max_header_bytes)
                .unwrap_or(usize::MAX)
                .max(8192),
        );
    builder
}

/// One accepted connection, holding its place until it closes.
struct Connection {
    peer: SocketAddr,
    protocol: Protocol,
    limits: ServerSettings,
    activity: Arc<Activity>,
    _place: Place,
}

impl Connection {
    async fn serve<S, B>(
        self,
        stream: TcpStream,
        tls: Option<ReloadingTls>,
        builder: Arc<auto::Builder<TokioExecutor>>,
        service: S,
        stop: Stop,
    ) where
        S: HttpService<B>,
        B: ResponseBody,
    {
        let handshake_deadline = Instant::now() + self.limits.handshake_timeout;
        let (stream, certificates) = match tls {
            None => (Stream::Plain(stream), None),
            Some(tls) => {
                match tokio::time::timeout_at(handshake_deadline, tls.accept(stream)).await {
                    Ok(Some(tls)) => {
                        let certificates = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| PeerCertificates(c.iter().map(|c| c.to_vec()).collect()));
                        (Stream::Tls(Box::new(tls)), certificates)
                    }
                    Ok(None) => return,
                    Err(_) => {
                        tracing::debug!(peer = %self.peer, "closing a connection: no TLS handshake in time");
                        return;
                    }
                }
            }
        };
        let io = Watched {
            inner: stream,
            activity: Arc::clone(&self.activity),
        };
        let service = PerConnection {
            inner: service,
            activity: Arc::clone(&self.activity),
            peer: PeerAddr(self.peer),
            certificates,
        };
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);

        let age_deadline = Instant::now() + jittered(self.limits.max_connection_age);
        let mut opened = false;
        let mut going_away = false;
        let mut stopping = false;
        let mut close_deadline: Option<Instant> = None;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep_until(handshake_deadline), if !opened => {
                    if !self.activity.opened(self.protocol) {
                        tracing::debug!(peer = %self.peer, "closing a connection: nothing sent in time");
                        return;
                    }
                    opened = true;
                }
                () = self.activity.idle_for(self.limits.idle_timeout), if !going_away => {
                    tracing::debug!(peer = %self.peer, "closing an idle connection");
                    connection.as_mut().graceful_shutdown();
                    going_away = true;
                    close_deadline = Some(Instant::now() + self.limits.max_connection_age_grace);
                }
                () = tokio::time::sleep_until(age_deadline), if !going_away => {
                    tracing::debug!(peer = %self.peer, "closing a connection at its maximum age");
                    connection.as_mut().graceful_shutdown();
                    going_away = true;
                    close_deadline = Some(Instant::now() + self.limits.max_connection_age_grace);
                }
                () = sleep_until_some(close_deadline) => {
                    tracing::info!(peer = %self.peer, "closing a connection whose calls are still open at its deadline");
                    return;
                }
                () = stop.signal.cancelled(), if !stopping => {
                    stopping = true;
                    if !going_away {
                        connection.as_mut().graceful_shutdown();
                        going_away = true;
                    }
                    let drained = Instant::now() + stop.drain;
                    close_deadline = Some(close_deadline.map_or(drained, |d| d.min(drained)));
                }
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `d` give or take up to a tenth, drawn per connection.
fn jittered(d: Duration) -> Duration {
    let mut byte = [0u8; 1];
    // Without randomness the age is merely exact.
    let _ = getrandom::fill(&mut byte);
    let tenth = d / 10;
    // 0..=255 maps onto -tenth..=+tenth.
    (d - tenth).saturating_add(tenth * u32::from(byte[0]) * 2 / 255)
}

/// What a connection is doing: calls open, bytes and requests seen.
#[derive(Default)]
struct Activity {
    open_calls: AtomicUsize,
    /// Requests ever started on the connection.
    requests: AtomicU64,
    bytes_read: AtomicU64,
    /// Bumped whenever the connection goes idle or busy.
    changes: AtomicU64,
    changed: Notify,
}

impl Activity {
    /// Whether the peer has opened its protocol: the HTTP/2 preface, or
    /// a first request.
    fn opened(&self, protocol: Protocol) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
            || (protocol == Protocol::Http2
                && self.bytes_read.load(Ordering::Relaxed) >= HTTP2_PREFACE_BYTES)
    }

    fn begin(self: &Arc<Self>) -> OpenCall {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if self.open_calls.fetch_add(1, Ordering::AcqRel) == 0 {
            self.changes.fetch_add(1, Ordering::AcqRel);
            self.changed.notify_waiters();
        }
        OpenCall(Arc::clone(self))
    }

    /// Completes once no call has been open for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.open_calls.load(Ordering::Acquire) > 0 {
                changed.await;
                continue;
            }
            let since = self.changes.load(Ordering::Acquire);
            tokio::select! {
                () = tokio::time::sleep(timeout) => {
                    if self.open_calls.load(Ordering::Acquire) == 0
                        && self.changes.load(Ordering::Acquire) == since
                    {
                        return;
                    }
                }
                () = changed => {}
            }
        }
    }
}

/// A call in progress; it ends when its response body is done or dropped.
struct OpenCall(Arc<Activity>);

impl Drop for OpenCall {
    fn drop(&mut self) {
        if self.0.open_calls.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changes.fetch_add(1, Ordering::AcqRel);
            self.0.changed.notify_waiters();
        }
    }
}

/// The service as one connection sees it: each request tagged with the
/// peer, and counted open until its response body ends.
#[derive(Clone)]
struct PerConnection<S> {
    inner: S,
    activity: Arc<Activity>,
    peer: PeerAddr,
    certificates: Option<PeerCertificates>,
}

type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for PerConnection<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body,
{
    type Response = Response<Tracked<B>>;
    type Error = S::Error;
    type Future = Pending<Result<Self::Response, S::Error>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let open = self.activity.begin();
        let extensions = request.extensions_mut();
        extensions.insert(self.peer);
        if let Some(certificates) = &self.certificates {
            extensions.insert(certificates.clone());
        }
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Tracked {
                body,
                open: Some(open),
            }))
        })
    }
}

/// A response body that keeps its call counted open until it ends.
pub struct Tracked<B> {
    body: B,
    open: Option<OpenCall>,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.open = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's byte stream, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The byte stream, counting what the peer sent.
struct Watched {
    inner: Stream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = match &mut self.inner {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        let read = buf.filled().len() - before;
        if read > 0 {
            self.activity
                .bytes_read
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_vary_by_at_most_a_tenth() {
        let hour = Duration::from_secs(3600);
        for _ in 0..100 {
            let d = jittered(hour);
            assert!(d >= hour - hour / 10 && d <= hour + hour / 10, "{d:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_after_its_last_call_ends_plus_the_timeout() {
        let activity = Arc::new(Activity::default());
        let call = activity.begin();
        let idle = tokio::spawn({
            let activity = Arc::clone(&activity);
            async move { activity.idle_for(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!idle.is_finished(), "idle while a call was open");
        drop(call);
        let ended = Instant::now();
        idle.await.unwrap();
        assert_eq!(ended.elapsed(), Duration::from_secs(10));
    }
}
