//! The server's allocator: mimalloc, with what [`latchkey::memory`] marks
//! long-lived (the Verify cache's snapshots, buckets and entries) served
//! from a heap of its own on each thread, so that the request path's
//! short-lived blocks keep their pages to themselves.
//!
//! Part of the binaries, not of the library, which has no unsafe code.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;

use libmimalloc_sys as mi;

pub struct Segregated;

thread_local! {
    /// This thread's heap for long-lived blocks, made on first use. A
    /// mimalloc heap allocates only on the thread that made it; any thread
    /// may free its blocks.
    static LONG_LIVED_HEAP: Cell<*mut mi::mi_heap_t> = const { Cell::new(ptr::null_mut()) };
}

/// The heap to allocate from now: `None` for mimalloc's default.
fn heap() -> Option<*mut mi::mi_heap_t> {
    if !latchkey::memory::is_long_lived() {
        return None;
    }
    let mut heap = LONG_LIVED_HEAP.get();
    if heap.is_null() {
        // SAFETY: creates a heap owned by this thread; it allocates through
        // mimalloc's own internals, not through this allocator.
        heap = unsafe { mi::mi_heap_new() };
        if heap.is_null() {
            return None;
        }
        LONG_LIVED_HEAP.set(heap);
    }
    Some(heap)
}

// SAFETY: every block comes from mimalloc, honouring the layout's size and
// alignment; `mi_free` and `mi_realloc_aligned` take blocks of any of its
// heaps, from any thread.
unsafe impl GlobalAlloc for Segregated {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        match heap() {
            // SAFETY: `heap` belongs to this thread.
            Some(heap) => unsafe { mi::mi_heap_malloc_aligned(heap, size, align).cast() },
            None => unsafe { mi::mi_malloc_aligned(size, align).cast() },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        match heap() {
            // SAFETY: `heap` belongs to this thread.
            Some(heap) => unsafe { mi::mi_heap_zalloc_aligned(heap, size, align).cast() },
            None => unsafe { mi::mi_zalloc_aligned(size, align).cast() },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        match heap() {
            // SAFETY: `ptr` came from mimalloc; `heap` belongs to this thread.
            Some(heap) => unsafe {
                mi::mi_heap_realloc_aligned(heap, ptr.cast(), new_size, align).cast()
            },
            None => unsafe { mi::mi_realloc_aligned(ptr.cast(), new_size, align).cast() },
        }
    }
}
