//! WatchEvents: the audit events of every replica as they commit, from a
//! cursor a watcher can resume at.
//!
//! Every event is numbered in the event log in its own transaction
//! ([`crate::audit::EventEntry`]). A watcher reads the log after each read of
//! the change log (at once on PostgreSQL's notification, else every poll
//! interval) and follows it as replicas follow the change log
//! ([`Follower`]): numbers are taken before commit, so a later number can
//! become visible first; the missing ones are asked for again until they
//! turn up or [`GAP_TIMEOUT`] passes. Its cursor is that position: the
//! highest number read and the numbers still missing, each with when it was
//! first missed. Resuming with the cursor of the last message received
//! delivers every later event once.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use uuid::Uuid;

use crate::audit::{Event, EventEntry};
use crate::changes::{Follower, GAP_TIMEOUT};
use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::store::Store;
use crate::token;

/// Entries read per query.
const PAGE: u64 = 1_000;

/// A watcher that was sent nothing for this long while the log moved is
/// sent its position, so that its cursor stays close to the end of the log
/// (a watcher of one owner may see no event for days).
pub const MARK_EVERY: Duration = Duration::from_secs(15);

/// The most missing numbers a cursor carries (the newest).
const MAX_CURSOR_GAPS: usize = 100;

/// What a watcher is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watched {
    /// An event, and the cursor to resume after it.
    Event(Box<Event>, String),
    /// No event: where the watcher stands (first thing sent, and after
    /// quiet stretches).
    Mark(String),
}

/// The event log, as this replica's watchers read it.
pub struct Watching {
    store: Store,
    clock: Arc<dyn Clock>,
    /// Changes after every read of the change log (to when that read
    /// began): events may have been appended.
    appended: watch::Receiver<LogRead>,
}

/// When the change feed's last complete read of the change log began;
/// `None` before the first.
pub type LogRead = Option<std::time::Instant>;

impl Watching {
    pub fn new(store: Store, clock: Arc<dyn Clock>, appended: watch::Receiver<LogRead>) -> Self {
        Watching {
            store,
            clock,
            appended,
        }
    }

    /// A watcher of `owner`'s events (`None`: everyone's) after the cursor
    /// `after` (empty: from now).
    ///
    /// # Errors
    /// `InvalidArgument` naming `after` for a cursor that is not one, or is
    /// ahead of the log (another database's), or naming `owner`; store
    /// faults.
    pub async fn watch(&self, after: &str, owner: Option<String>) -> Result<Watcher, Error> {
        if let Some(owner) = &owner {
            token::check_owner("owner", owner)?;
        }
        let end = self.store.event_log_end().await?;
        let follower = if after.is_empty() {
            Follower::new(end)
        } else {
            let cursor = Cursor::parse(after)?;
            if cursor.seen > end {
                return Err(Error::invalid(
                    "after",
                    "is ahead of the event log: a cursor from another database",
                ));
            }
            cursor.follower(self.clock.now(), Instant::now())
        };
        let mut appended = self.appended.clone();
        // Reads are prompted by changes from now on.
        appended.mark_unchanged();
        Ok(Watcher {
            store: self.store.clone(),
            clock: Arc::clone(&self.clock),
            appended,
            follower,
            owner,
            ready: std::collections::VecDeque::new(),
            marked: None,
            last_sent: Instant::now(),
        })
    }
}

/// One watcher's place in the event log.
pub struct Watcher {
    store: Store,
    clock: Arc<dyn Clock>,
    appended: watch::Receiver<LogRead>,
    follower: Follower,
    owner: Option<String>,
    ready: std::collections::VecDeque<Watched>,
    /// The position last sent; `None` before the first message.
    marked: Option<String>,
    last_sent: Instant,
}

impl Watcher {
    /// The next message, waiting for events; `None` after [`MARK_EVERY`]
    /// with nothing to send (call again). Store faults are logged and the
    /// read tried again at the next prompt. Cancelled while it reads, it
    /// may lose its place: drop the watcher then.
    pub async fn next(&mut self) -> Option<Watched> {
        if self.marked.is_none() {
            return Some(self.send(Watched::Mark(self.cursor())));
        }
        let quiet_until = tokio::time::Instant::now() + MARK_EVERY;
        loop {
            if let Some(message) = self.ready.pop_front() {
                return Some(self.send(message));
            }
            let more = self.read().await.unwrap_or_else(|e| {
                tracing::warn!(
                    error = format!("{:#}", anyhow::Error::from(e)),
                    "reading the event log for a watcher; trying again"
                );
                false
            });
            if more || !self.ready.is_empty() {
                continue;
            }
            let cursor = self.cursor();
            if self.last_sent.elapsed() >= MARK_EVERY && self.marked.as_ref() != Some(&cursor) {
                return Some(self.send(Watched::Mark(cursor)));
            }
            // A prompt, or a quiet stretch (after which gaps are asked for
            // again and a mark may be due).
            match tokio::time::timeout_at(quiet_until, self.appended.changed()).await {
                Ok(Ok(())) => {}
                Err(_) => return None,
                Ok(Err(_)) => {
                    // The change feed has stopped (the server is stopping):
                    // nothing prompts reads any more.
                    tokio::time::sleep(MARK_EVERY).await;
                    return None;
                }
            }
        }
    }

    fn send(&mut self, message: Watched) -> Watched {
        let cursor = match &message {
            Watched::Event(_, c) | Watched::Mark(c) => c.clone(),
        };
        self.marked = Some(cursor);
        self.last_sent = Instant::now();
        message
    }

    /// Reads a page of the log into `ready`; `true` if the page was full
    /// (more may follow at once).
    async fn read(&mut self) -> Result<bool, Error> {
        let entries = self
            .store
            .event_log_since(self.follower.seen(), &self.follower.gaps(), PAGE)
            .await?;
        let full = entries.len() as u64 == PAGE;
        let now = Instant::now();
        let mut sorted = entries;
        sorted.sort_by_key(|e| e.seq);
        // Moved on only once the events are read: a read that fails leaves
        // the watcher where it was, to read them again.
        let mut follower = self.follower.clone();
        // One at a time, so that each event's cursor is the position just
        // after it.
        let mut wanted: Vec<(Uuid, String)> = Vec::new();
        for entry in sorted {
            for taken in follower.accept(vec![entry], now) {
                if self.owner.as_ref().is_none_or(|o| *o == taken.owner) {
                    wanted.push((taken.event_id, self.cursor_at(&follower)));
                }
            }
        }
        // Gaps that timed out are dropped even when nothing arrived.
        follower.accept(Vec::<EventEntry>::new(), now);
        let ids: Vec<Uuid> = wanted.iter().map(|(id, _)| *id).collect();
        let mut events: std::collections::HashMap<Uuid, Event> = if ids.is_empty() {
            std::collections::HashMap::new()
        } else {
            self.store
                .events_by_id(&ids)
                .await?
                .into_iter()
                .map(|e| (e.id, e))
                .collect()
        };
        self.follower = follower;
        for (id, cursor) in wanted {
            match events.remove(&id) {
                Some(event) => self
                    .ready
                    .push_back(Watched::Event(Box::new(event), cursor)),
                None => tracing::warn!(event_id = %id, "the event log names an event that is gone"),
            }
        }
        Ok(full)
    }

    fn cursor(&self) -> String {
        self.cursor_at(&self.follower)
    }

    fn cursor_at(&self, follower: &Follower) -> String {
        Cursor::of(follower, self.clock.now(), Instant::now()).to_string()
    }
}

/// A position in the event log, as a watcher carries it: the highest number
/// read, and the numbers still missing below it with the (wall) time each
/// was first missed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cursor {
    seen: i64,
    gaps: Vec<(i64, Timestamp)>,
}

impl Cursor {
    fn of(follower: &Follower, now: Timestamp, instant: Instant) -> Cursor {
        let mut gaps: Vec<(i64, Timestamp)> = follower
            .gaps_since()
            .map(|(g, at)| (g, now.saturating_sub(instant.saturating_duration_since(at))))
            .collect();
        if gaps.len() > MAX_CURSOR_GAPS {
            gaps.drain(..gaps.len() - MAX_CURSOR_GAPS);
        }
        Cursor {
            seen: follower.seen(),
            gaps,
        }
    }

    /// A follower at this position; gaps missed longer ago than
    /// [`GAP_TIMEOUT`] are given up.
    fn follower(&self, now: Timestamp, instant: Instant) -> Follower {
        Follower::resume(
            self.seen,
            self.gaps.iter().filter_map(|(g, at)| {
                let ago = now.saturating_since(*at);
                (ago < GAP_TIMEOUT).then(|| (*g, instant.checked_sub(ago).unwrap_or(instant)))
            }),
        )
    }

    /// `<seen>` then `.<gap>-<unix ms>` for each missing number.
    fn parse(text: &str) -> Result<Cursor, Error> {
        let bad = || Error::invalid("after", "is not a cursor from WatchEvents");
        let mut parts = text.split('.');
        let seen: i64 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|s| *s >= 0)
            .ok_or_else(bad)?;
        let mut gaps = Vec::new();
        for part in parts {
            let (gap, ms) = part.split_once('-').ok_or_else(bad)?;
            let gap: i64 = gap
                .parse()
                .ok()
                .filter(|g| (1..seen).contains(g))
                .ok_or_else(bad)?;
            let ms: i64 = ms.parse().ok().filter(|m| *m >= 0).ok_or_else(bad)?;
            gaps.push((gap, Timestamp::from_micros(ms.saturating_mul(1_000))));
            if gaps.len() > MAX_CURSOR_GAPS {
                return Err(bad());
            }
        }
        Ok(Cursor { seen, gaps })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = self.seen.to_string();
        for (gap, at) in &self.gaps {
            let _ = write!(out, ".{gap}-{}", at.as_micros() / 1_000);
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written() {
        let c = Cursor {
            seen: 42,
            gaps: vec![
                (40, Timestamp::from_micros(1_733_450_000_123_000)),
                (41, Timestamp::from_micros(1_733_450_000_124_000)),
            ],
        };
        assert_eq!(c.to_string(), "42.40-1733450000123.41-1733450000124");
        assert_eq!(Cursor::parse(&c.to_string()).unwrap(), c);
        assert_eq!(Cursor::parse("0").unwrap().seen, 0);
    }

    #[test]
    fn anything_else_is_refused_naming_after() {
        let too_many: String = std::iter::once("1000".to_owned())
            .chain((1..=101).map(|g| format!(".{g}-1")))
            .collect();
        for bad in [
            "", "x", "-1", "1.", "5.5-1", "5.0-1", "5.3", "5.3-x", "5.3--1", "1e3", " 1", "1\n",
            &too_many,
        ] {
            match Cursor::parse(bad) {
                Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "after", "{bad:?}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn a_gap_missed_long_ago_is_given_up_on_resume() {
        let now = Timestamp::from_micros(10_000_000_000_000);
        let c = Cursor {
            seen: 9,
            gaps: vec![
                (3, now.saturating_sub(GAP_TIMEOUT * 2)),
                (7, now.saturating_sub(Duration::from_secs(1))),
            ],
        };
        assert_eq!(c.follower(now, Instant::now()).gaps(), vec![7]);
    }
}
