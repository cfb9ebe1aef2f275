//! What the request path notes for background work to write: each token's
//! latest use ([`LastUsed`], written behind in batches by the binary's
//! flusher, so Verify never writes), and tokens found under an older HMAC
//! key ([`Rekeys`]), to be stored under the primary one.
//!
//! The hot path touches only the token's own [`UseCell`] (an atomic max and a
//! flag); the shared queue's lock is taken at most once per token per flush,
//! when the token is first used since the last one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use uuid::Uuid;

use crate::client::{Client, ClientRef, RECENT_IPS};
use crate::clock::Timestamp;
use crate::token::Digest;
use crate::verdict::Verdict;

/// The clients a token was used from since its last write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Clients {
    /// The latest use with client details, and when.
    pub latest: Option<(Timestamp, Client)>,
    /// Distinct addresses, the latest first, at most [`RECENT_IPS`].
    pub ips: Vec<IpAddr>,
}

impl Clients {
    fn note(&mut self, client: ClientRef<'_>, at: Timestamp) {
        let newest = self.latest.as_ref().is_none_or(|(t, _)| at >= *t);
        if newest {
            match &mut self.latest {
                Some((t, latest)) => {
                    *t = at;
                    latest.ip = client.ip;
                    if latest.user_agent != client.user_agent {
                        latest.user_agent.clear();
                        latest.user_agent.push_str(client.user_agent);
                    }
                }
                None => self.latest = Some((at, client.to_client())),
            }
            if let Some(ip) = client.ip {
                note_first(&mut self.ips, ip);
            }
        } else if let Some(ip) = client.ip
            && !self.ips.contains(&ip)
            && self.ips.len() < RECENT_IPS
        {
            // An older use noted late: its address goes after the newer
            // ones.
            self.ips.push(ip);
        }
    }

    /// Adds `older` (noted before these) behind these.
    fn merge_older(&mut self, older: Clients) {
        let newer = std::mem::replace(&mut self.ips, older.ips);
        put_first(&mut self.ips, &newer);
        match (&self.latest, older.latest) {
            (Some((t, _)), Some((o, client))) if o > *t => self.latest = Some((o, client)),
            (None, older) => self.latest = older,
            _ => {}
        }
    }
}

/// Puts `newer` (the latest first) ahead of `ips`, keeping at most
/// [`RECENT_IPS`] distinct ones.
pub fn put_first(ips: &mut Vec<IpAddr>, newer: &[IpAddr]) {
    for ip in newer.iter().rev() {
        note_first(ips, *ip);
    }
}

/// Puts `ip` first in `ips`, keeping at most [`RECENT_IPS`] distinct ones.
fn note_first(ips: &mut Vec<IpAddr>, ip: IpAddr) {
    if let Some(i) = ips.iter().position(|known| *known == ip) {
        ips.remove(i);
    }
    ips.insert(0, ip);
    ips.truncate(RECENT_IPS);
}

/// One token's latest use not yet written, and whether it is queued.
#[derive(Debug, Default)]
pub struct UseCell {
    latest: AtomicI64,
    queued: AtomicBool,
    /// Set at the first use with client details since the last write.
    clients: Mutex<Option<Box<Clients>>>,
    /// Calls that found the token since the last write, per verdict (in
    /// the order of [`Verdict::ALL`]).
    counts: [AtomicU32; Verdict::ALL.len()],
}

impl UseCell {
    /// The latest use recorded here, written or not; `None` if none.
    pub fn latest(&self) -> Option<Timestamp> {
        match self.latest.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Timestamp::from_micros(t)),
        }
    }
}

/// Whatever holds a token's [`UseCell`]: the cached snapshot carries its own,
/// so recording a use allocates nothing.
pub trait HoldsUses: Send + Sync + 'static {
    fn uses(&self) -> &UseCell;
}

impl HoldsUses for UseCell {
    fn uses(&self) -> &UseCell {
        self
    }
}

/// A token's uses to write: the latest time (`None` if it was never
/// used, only presented), the clients seen, and the calls per verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Use {
    pub id: Uuid,
    pub time: Option<Timestamp>,
    pub clients: Option<Clients>,
    pub counts: Vec<(Verdict, u32)>,
}

/// Uses waiting to be written.
#[derive(Default)]
pub struct LastUsed {
    queue: Mutex<Vec<(Uuid, Arc<dyn HoldsUses>)>>,
    /// Uses whose write failed, retried with the next batch.
    retry: Mutex<HashMap<Uuid, Use>>,
}

impl LastUsed {
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes a use of token `id` at `at`, from `client` if known.
    pub fn record<H: HoldsUses>(
        &self,
        id: Uuid,
        holder: &Arc<H>,
        at: Timestamp,
        client: Option<ClientRef<'_>>,
    ) {
        let cell = holder.uses();
        if let Some(client) = client {
            cell.clients
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_default()
                .note(client, at);
        }
        cell.latest.fetch_max(at.as_micros(), Ordering::SeqCst);
        self.queue(id, holder);
    }

    /// Counts a call that found token `id`, answered `verdict`.
    pub fn count<H: HoldsUses>(&self, id: Uuid, holder: &Arc<H>, verdict: Verdict) {
        holder.uses().counts[verdict as usize].fetch_add(1, Ordering::SeqCst);
        self.queue(id, holder);
    }

    /// Queues the token for the next write, once.
    fn queue<H: HoldsUses>(&self, id: Uuid, holder: &Arc<H>) {
        let cell = holder.uses();
        // SeqCst on both sides: a flush that clears `queued` and then reads
        // `latest` and the counts either sees this call's, or this call sees
        // `queued` false and queues the token again.
        if !cell.queued.load(Ordering::Relaxed) && !cell.queued.swap(true, Ordering::SeqCst) {
            self.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((id, Arc::clone(holder) as Arc<dyn HoldsUses>));
        }
    }

    /// Takes every pending use, one per token.
    pub fn drain(&self) -> Vec<Use> {
        let queued =
            std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        let mut uses =
            std::mem::take(&mut *self.retry.lock().unwrap_or_else(PoisonError::into_inner));
        for (id, holder) in queued {
            let cell = holder.uses();
            cell.queued.store(false, Ordering::SeqCst);
            let clients = cell
                .clients
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .map(|c| *c);
            let time = match cell.latest.load(Ordering::SeqCst) {
                0 => None,
                t => Some(Timestamp::from_micros(t)),
            };
            let counts = Verdict::ALL
                .iter()
                .filter_map(|&v| {
                    let n = cell.counts[v as usize].swap(0, Ordering::SeqCst);
                    (n > 0).then_some((v, n))
                })
                .collect();
            merge(
                &mut uses,
                Use {
                    id,
                    time,
                    clients,
                    counts,
                },
            );
        }
        uses.into_values().collect()
    }

    /// Puts back uses whose write failed.
    pub fn retry_later(&self, failed: Vec<Use>) {
        let mut retry = self.retry.lock().unwrap_or_else(PoisonError::into_inner);
        for u in failed {
            merge(&mut retry, u);
        }
    }
}

/// Adds `newer` to the uses held for its token.
fn merge(uses: &mut HashMap<Uuid, Use>, mut newer: Use) {
    match uses.remove(&newer.id) {
        None => {}
        Some(older) => {
            newer.time = newer.time.max(older.time);
            for (verdict, n) in older.counts {
                match newer.counts.iter_mut().find(|(v, _)| *v == verdict) {
                    Some((_, m)) => *m += n,
                    None => newer.counts.push((verdict, n)),
                }
            }
            newer.clients = match (newer.clients, older.clients) {
                (Some(mut n), Some(o)) => {
                    n.merge_older(o);
                    Some(n)
                }
                (n, o) => n.or(o),
            };
        }
    }
    uses.insert(newer.id, newer);
}

/// Most moves held at once; past it new ones wait for the token's next use.
const MAX_QUEUED: usize = 100_000;

/// A token's move: its id, the digest it is stored under, the primary's.
pub type Rekey = (Uuid, Digest, Digest);

/// Tokens found under an older HMAC key, waiting to move to the primary.
#[derive(Debug, Default)]
pub struct Rekeys {
    queue: Mutex<HashMap<Uuid, (Digest, Digest)>>,
}

impl Rekeys {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&self, id: Uuid, stored: Digest, primary: Digest) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() < MAX_QUEUED || queue.contains_key(&id) {
            queue.insert(id, (stored, primary));
        }
    }

    pub fn drain(&self) -> Vec<Rekey> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue
            .drain()
            .map(|(id, (old, new))| (id, old, new))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: i64) -> Timestamp {
        Timestamp::from_micros(t)
    }

    fn client(ip: &str, ua: &str) -> Client {
        Client {
            ip: Some(ip.parse().unwrap()),
            user_agent: ua.to_owned(),
        }
    }

    fn plain(id: Uuid, t: i64) -> Use {
        Use {
            id,
            time: Some(at(t)),
            clients: None,
            counts: Vec::new(),
        }
    }

    #[test]
    fn repeated_uses_of_one_token_queue_it_once_with_the_latest_time() {
        let lu = LastUsed::new();
        let cell = Arc::new(UseCell::default());
        let id = Uuid::now_v7();
        for t in [5, 9, 7] {
            lu.record(id, &cell, at(t), None);
        }
        assert_eq!(lu.queue.lock().unwrap().len(), 1);
        assert_eq!(lu.drain(), vec![plain(id, 9)]);
        assert!(lu.drain().is_empty());
    }

    #[test]
    fn calls_are_counted_per_verdict_and_kept_across_a_failed_write() {
        let lu = LastUsed::new();
        let cell = Arc::new(UseCell::default());
        let id = Uuid::now_v7();
        for v in [Verdict::Revoked, Verdict::Revoked, Verdict::Expired] {
            lu.count(id, &cell, v);
        }
        let first = lu.drain();
        assert_eq!(
            first,
            vec![Use {
                time: None,
                counts: vec![(Verdict::Revoked, 2), (Verdict::Expired, 1)],
                ..plain(id, 0)
            }]
        );
        lu.retry_later(first);
        lu.count(id, &cell, Verdict::Revoked);
        let mut again = lu.drain().remove(0).counts;
        again.sort_by_key(|(v, _)| *v as usize);
        assert_eq!(again, [(Verdict::Revoked, 3), (Verdict::Expired, 1)]);
    }

    #[test]
    fn a_use_after_a_drain_is_queued_again() {
        let lu = LastUsed::new();
        let cell = Arc::new(UseCell::default());
        let id = Uuid::now_v7();
        lu.record(id, &cell, at(1), None);
        lu.drain();
        lu.record(id, &cell, at(2), None);
        assert_eq!(lu.drain(), vec![plain(id, 2)]);
    }

    #[test]
    fn failed_writes_come_back_merged_with_newer_uses() {
        let lu = LastUsed::new();
        let cell = Arc::new(UseCell::default());
        let id = Uuid::now_v7();
        lu.retry_later(vec![Use {
            clients: Some(Clients {
                latest: Some((at(3), client("192.0.2.1", "old"))),
                ips: vec!["192.0.2.1".parse().unwrap(), "192.0.2.9".parse().unwrap()],
            }),
            ..plain(id, 3)
        }]);
        lu.record(id, &cell, at(8), Some(client("192.0.2.9", "new").view()));
        assert_eq!(
            lu.drain(),
            vec![Use {
                clients: Some(Clients {
                    latest: Some((at(8), client("192.0.2.9", "new"))),
                    ips: vec!["192.0.2.9".parse().unwrap(), "192.0.2.1".parse().unwrap()],
                }),
                ..plain(id, 8)
            }]
        );
    }

    #[test]
    fn a_token_keeps_the_latest_client_and_five_distinct_addresses() {
        let lu = LastUsed::new();
        let cell = Arc::new(UseCell::default());
        let id = Uuid::now_v7();
        for (t, last) in [(1, 1), (2, 2), (3, 1), (4, 3), (5, 4), (6, 5), (7, 6)] {
            lu.record(
                id,
                &cell,
                at(t),
                Some(client(&format!("192.0.2.{last}"), "ua").view()),
            );
        }
        // Noted late: an older use leaves the latest client alone.
        lu.record(id, &cell, at(2), Some(client("192.0.2.7", "late").view()));
        let clients = lu.drain().remove(0).clients.unwrap();
        assert_eq!(clients.latest, Some((at(7), client("192.0.2.6", "ua"))));
        let ips: Vec<String> = clients.ips.iter().map(ToString::to_string).collect();
        assert_eq!(
            ips,
            [
                "192.0.2.6",
                "192.0.2.5",
                "192.0.2.4",
                "192.0.2.3",
                "192.0.2.1"
            ]
        );
    }
}
