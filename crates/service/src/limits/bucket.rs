//! One limit's share on this replica: what it has taken from the database
//! and not yet spent, spent under a short lock.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use uuid::Uuid;

use latchkey_core::limit::Window;

/// The next block is taken ahead only when blocks are at least this big:
/// near the end of a count, blocks are taken one call at a time.
const PREFETCH_MIN_BLOCK: u64 = 64;
/// The block a replica asks for at first, and at least.
const FIRST_BLOCK: u64 = 1000;
/// Blocks taken closer together than this double; farther apart than
/// [`SLOW_TAKES`], they halve: a busy token's block lasts a while.
const FAST_TAKES: Duration = Duration::from_millis(250);
const SLOW_TAKES: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Credits(Uuid),
    /// `t/<token id>/<name>` or `o/<owner>/<name>` (names hold no `/`).
    Rate(Arc<str>),
}

/// Where a bucket takes more from.
#[derive(Clone, Copy, Debug)]
pub(super) enum Source {
    /// Credits, for a call in `epoch` (the generation and refill period
    /// its answer knows of).
    Credits {
        epoch: i64,
    },
    Rate {
        limit: u64,
        window: Window,
    },
}

impl Source {
    /// What a bucket's share belongs to: the window of a rate limit, the
    /// epoch of credits. Only grows.
    pub(super) fn window(self) -> i64 {
        match self {
            Source::Credits { epoch } => epoch,
            Source::Rate { window, .. } => window.index,
        }
    }
}

/// One limit's share on this replica.
#[derive(Debug)]
pub struct Bucket {
    pub(super) key: Key,
    state: Mutex<State>,
    /// One database take at a time per bucket on this replica.
    pub(super) taking: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// The window (rate limits) or epoch (credits) what is held belongs
    /// to.
    window: i64,
    /// Taken from the database, not yet spent.
    held: u64,
    /// The database's count after this replica's last take.
    in_database: u64,
    /// The last block taken.
    block: u64,
    /// The database had too few at the last take: refuse from memory
    /// until then (for rate limits, until the window ends).
    short_until: Option<Instant>,
    /// A take ahead is under way.
    prefetching: bool,
    /// The block size to ask for, and when the last take began.
    want: u64,
    last_take: Option<Instant>,
}

/// What one bucket's spend found.
pub(super) enum Take {
    Spent {
        remaining: u64,
    },
    Short {
        remaining: u64,
    },
    /// The token has no credits now (its answer was older).
    Unlimited,
}

impl Bucket {
    pub(super) fn new(key: Key) -> Self {
        Bucket {
            key,
            state: Mutex::default(),
            taking: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spends from what is held, if it can be judged without the database.
    /// The second value says whether to take the next block ahead.
    pub(super) fn spend_held(&self, window: i64, need: u64) -> Option<(Take, bool)> {
        let mut s = self.lock();
        if window > s.window {
            *s = State {
                window,
                want: s.want,
                last_take: s.last_take,
                ..State::default()
            };
        } else if window < s.window {
            // A call from a window that has just ended: to the database.
            return None;
        }
        if s.held >= need {
            s.held -= need;
            let ahead =
                !s.prefetching && s.held < s.block / 2 && s.in_database / 16 >= PREFETCH_MIN_BLOCK;
            if ahead {
                s.prefetching = true;
            }
            return Some((
                Take::Spent {
                    remaining: s.held + s.in_database,
                },
                ahead,
            ));
        }
        match s.short_until {
            Some(until) if need > s.held + s.in_database && Instant::now() < until => Some((
                Take::Short {
                    remaining: s.held + s.in_database,
                },
                false,
            )),
            _ => None,
        }
    }

    /// The block size to ask for now: it doubles while takes come fast
    /// and halves when they come slowly.
    pub(super) fn want(&self) -> u64 {
        let mut s = self.lock();
        let now = Instant::now();
        let want = s.want.max(FIRST_BLOCK);
        s.want = match s.last_take.map(|t| now.duration_since(t)) {
            Some(d) if d < FAST_TAKES => want.saturating_mul(2),
            Some(d) if d > SLOW_TAKES => (want / 2).max(FIRST_BLOCK),
            _ => want,
        };
        s.last_take = Some(now);
        s.want
    }

    /// What is held for `window`.
    pub(super) fn held(&self, window: i64) -> u64 {
        let s = self.lock();
        if s.window == window { s.held } else { 0 }
    }

    /// Adds what a take found (if the window is still the same).
    pub(super) fn add(&self, window: i64, taken: u64, in_database: u64, short: Option<Instant>) {
        let mut s = self.lock();
        if s.window != window {
            return;
        }
        s.held += taken;
        s.in_database = in_database;
        if taken > 0 {
            s.block = taken;
        }
        s.short_until = short;
    }

    /// A take ahead has ended.
    pub(super) fn ahead_done(&self) {
        self.lock().prefetching = false;
    }

    /// Everything held, and the window (or epoch) it belongs to.
    pub(super) fn take_all(&self) -> (u64, i64) {
        let mut s = self.lock();
        (std::mem::take(&mut s.held), s.window)
    }

    /// Puts back what a call spent and then did not use.
    pub(super) fn refund(&self, window: i64, amount: u64) {
        let mut s = self.lock();
        if s.window == window {
            s.held += amount;
        }
    }
}
