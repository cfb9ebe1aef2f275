//! A cap on open connections: past it, a new connection is closed as soon
//! as it is accepted, so a flood of connections cannot exhaust the process
//! and the clients already connected keep being served.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

/// Hands out a place to each connection while places are left.
#[derive(Clone)]
pub struct ConnectionLimit {
    places: Arc<Semaphore>,
}

impl ConnectionLimit {
    pub fn new(max_connections: usize) -> Self {
        ConnectionLimit {
            places: Arc::new(Semaphore::new(max_connections)),
        }
    }

    /// The connection holding a place until it is dropped, or `None` (and
    /// the connection closed) when every place is taken.
    pub fn admit<T>(&self, conn: T) -> Option<Admitted<T>> {
        match Arc::clone(&self.places).try_acquire_owned() {
            Ok(place) => Some(Admitted { conn, place }),
            Err(_) => {
                tracing::debug!("connection limit reached; closing a new connection");
                None
            }
        }
    }

    /// The next connection on `listener` that gets a place, with Nagle's
    /// algorithm off. Accept errors (out of file descriptors, say) are
    /// logged and retried after a pause; connections past the limit are
    /// closed. Cancel-safe: no connection is lost if the future is dropped.
    pub async fn accept(&self, listener: &TcpListener) -> Admitted<TcpStream> {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Some(admitted) = self.admit(stream) {
                let _ = admitted.inner().set_nodelay(true);
                return admitted;
            }
        }
    }
}

/// A connection that holds one of the [`ConnectionLimit`]'s places.
pub struct Admitted<T> {
    conn: T,
    place: OwnedSemaphorePermit,
}

/// A place taken, to be handed on to what the connection becomes (a TLS
/// stream after its handshake).
pub struct Place(OwnedSemaphorePermit);

impl<T> Admitted<T> {
    pub fn inner(&self) -> &T {
        &self.conn
    }

    pub fn into_parts(self) -> (T, Place) {
        (self.conn, Place(self.place))
    }

    pub fn new(conn: T, place: Place) -> Self {
        Admitted {
            conn,
            place: place.0,
        }
    }
}

impl<T: Connected> Connected for Admitted<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.conn.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Admitted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Admitted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_shutdown(cx)
    }
}
