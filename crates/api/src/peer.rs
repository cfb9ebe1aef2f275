//! Who is on the other end of a connection, as the listener that accepted it
//! tells each request (request extensions).

use std::net::SocketAddr;
use std::sync::Arc;

/// The address of the peer a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The certificate chain a TLS client presented and the server verified
/// (mutual TLS), the client's own first, DER-encoded.
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<[Vec<u8>]>);
