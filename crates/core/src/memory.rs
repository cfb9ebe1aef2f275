//! Which allocations live long: the Verify cache's.
//!
//! A million cached tokens are filled by a million calls, and each call
//! also allocates, and frees, its own short-lived buffers. From one heap,
//! the two interleave: every page ends up holding a few cold cached
//! objects and a few free blocks, and every later call's allocations walk
//! such pages, a cache miss for each block (docs/performance.md has the
//! hit with a thousand and with a million tokens cached). So whatever is allocated inside [`long_lived`] may be
//! placed apart: the server's allocator (`src/allocator.rs`, part of the
//! binary, as the library has no unsafe code) serves it from heaps of its
//! own, and the pages the request path allocates from stay dense with its
//! own blocks. Under any other allocator this only sets a flag.

use std::cell::Cell;

thread_local! {
    static LONG_LIVED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with its allocations marked long-lived. `f` must not await:
/// the mark belongs to the thread.
pub fn long_lived<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LONG_LIVED.set(self.0);
        }
    }
    let _restore = Restore(LONG_LIVED.replace(true));
    f()
}

/// Whether this thread is inside [`long_lived`] now. Safe to call from an
/// allocator: it neither allocates nor fails, even while the thread exits.
pub fn is_long_lived() -> bool {
    LONG_LIVED.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_covers_the_closure_only_and_survives_nesting_and_panics() {
        assert!(!is_long_lived());
        long_lived(|| {
            assert!(is_long_lived());
            long_lived(|| assert!(is_long_lived()));
            assert!(is_long_lived(), "an inner scope does not end the outer one");
        });
        assert!(!is_long_lived());
        let panicked = std::panic::catch_unwind(|| long_lived(|| panic!("inside")));
        assert!(panicked.is_err());
        assert!(!is_long_lived(), "a panic inside ends the scope");
    }
}
