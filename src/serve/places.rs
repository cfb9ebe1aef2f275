//! Places for connections on one port: at most `max_connections` in all and
//! `max_connections_per_ip` from one peer address, taken as a connection is
//! accepted and given back when it closes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The longest pause between accept attempts while accepting fails.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Places for connections: `max` in all, `per_peer` from one address.
pub(super) struct Places {
    max: usize,
    per_peer: usize,
    taken: Arc<Mutex<Taken>>,
}

#[derive(Default)]
struct Taken {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// A connection's place, given back when it is dropped.
pub(super) struct Place {
    peer: IpAddr,
    taken: Arc<Mutex<Taken>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        taken.total -= 1;
        if let Some(n) = taken.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                taken.by_peer.remove(&self.peer);
            }
        }
    }
}

impl Places {
    pub(super) fn new(max: usize, per_peer: usize) -> Self {
        Places {
            max,
            per_peer,
            taken: Arc::new(Mutex::new(Taken::default())),
        }
    }

    /// A place for a connection from `peer`, if one is left.
    fn take(&self, peer: IpAddr) -> Option<Place> {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let from_peer = taken.by_peer.get(&peer).copied().unwrap_or(0);
        if taken.total >= self.max || from_peer >= self.per_peer {
            return None;
        }
        taken.total += 1;
        *taken.by_peer.entry(peer).or_insert(0) += 1;
        Some(Place {
            peer,
            taken: Arc::clone(&self.taken),
        })
    }

    /// The next connection on `listener` that gets a place, with Nagle's
    /// algorithm off. Connections past a limit are closed at once. Accept
    /// errors are logged and retried after a pause that doubles while they
    /// last (5 ms to 1 s). Cancel-safe.
    pub(super) async fn accept(&self, listener: &TcpListener) -> (TcpStream, SocketAddr, Place) {
        let mut backoff = Duration::from_millis(5);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, pause = ?backoff, "accepting a connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            };
            backoff = Duration::from_millis(5);
            let ip = canonical(peer.ip());
            match self.take(ip) {
                Some(place) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, peer, place);
                }
                None => tracing::debug!(
                    %peer,
                    "connection limit reached (max_connections or max_connections_per_ip); closing a new connection"
                ),
            }
        }
    }
}

/// An IPv4 peer seen through an IPv6 socket counts as itself.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_in_all_and_per_peer_and_given_back() {
        let places = Places::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let first = places.take(a).unwrap();
        let _second = places.take(a).unwrap();
        assert!(places.take(a).is_none(), "a third from one peer");
        let _third = places.take(b).unwrap();
        assert!(places.take(b).is_none(), "a fourth in all");
        drop(first);
        assert!(places.take(b).is_some());
    }

    #[test]
    fn an_ipv4_peer_over_ipv6_counts_as_itself() {
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(canonical(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
