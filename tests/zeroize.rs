//! Token material is zeroed before its memory is freed. This binary's
//! allocator looks at every block as it is freed while a check is armed,
//! and counts those that still hold a marker planted in the secret.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use latchkey::config::Sensitive;
use latchkey::grpc::pb;
use latchkey::token::format::Secret;
use prost::Message as _;

/// Planted in every secret below; nothing else in the process holds it.
const MARKER: &[u8] = b"Zq7MarkerXv93Lp";

static ARMED: AtomicBool = AtomicBool::new(false);
static FREED_WITH_MARKER: AtomicUsize = AtomicUsize::new(0);

struct Inspecting;

fn holds_marker(block: &[u8]) -> bool {
    block.windows(MARKER.len()).any(|w| w == MARKER)
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// only addition is reading a block, while it is still allocated, before it
// is freed.
unsafe impl GlobalAlloc for Inspecting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::SeqCst) {
            // SAFETY: `ptr` is a live allocation of `layout.size()` bytes
            // until the call below frees it.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if holds_marker(block) {
                FREED_WITH_MARKER.fetch_add(1, Ordering::SeqCst);
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Inspecting = Inspecting;

/// The tests run one at a time: another test freeing its own marked blocks
/// while one is armed would count against it.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Drops `value` with the check armed; returns how many freed blocks still
/// held the marker.
fn freed_with_marker<T>(value: T) -> usize {
    FREED_WITH_MARKER.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    drop(value);
    ARMED.store(false, Ordering::SeqCst);
    FREED_WITH_MARKER.load(Ordering::SeqCst)
}

fn marked(prefix: &str) -> String {
    format!(
        "{prefix}{}0123456789abcdefghij",
        std::str::from_utf8(MARKER).unwrap()
    )
}

#[test]
fn the_check_sees_a_secret_left_in_freed_memory() {
    let _serial = one_at_a_time();
    // Without this, the tests below would pass whatever was dropped.
    assert_eq!(freed_with_marker(marked("lk_")), 1);
}

#[test]
fn a_token_secret_is_zeroed_when_dropped() {
    let _serial = one_at_a_time();
    let secret = Secret::new(marked("lk_"));
    let copy = secret.clone();
    assert_eq!(freed_with_marker(secret), 0);
    assert_eq!(freed_with_marker(copy), 0);
}

#[test]
fn a_configured_credential_is_zeroed_when_dropped() {
    let _serial = one_at_a_time();
    assert_eq!(freed_with_marker(Sensitive::new(marked("admin-"))), 0);
}

#[test]
fn a_verify_request_is_zeroed_when_dropped() {
    let _serial = one_at_a_time();
    let encoded = pb::VerifyRequest {
        token: marked("lk_"),
        required_scopes: vec!["read".into()],
        cost: None,
        client: None,
    }
    .encode_to_vec();
    // As the server receives it: decoded from the wire.
    let request = pb::VerifyRequest::decode(encoded.as_slice()).unwrap();
    assert_eq!(freed_with_marker(request), 0);
}
