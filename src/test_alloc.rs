//! A counting allocator for the library's unit tests.
//!
//! Memory bounds are asserted by what one test's own thread holds, not by the
//! process's RSS: unit tests run in parallel in one process, and another
//! test's allocation (an Argon2id unlock takes 64 MiB) made an RSS reading
//! meaningless.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Passes every call to the system allocator and keeps, per thread, the
/// bytes that thread allocated minus those it freed.
pub struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(delta: isize) {
    // A thread being torn down has no counter left; its bytes do not matter.
    let _ = HELD.try_with(|h| {
        let now = h.get() + delta;
        h.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the counter is a thread-local `Cell` that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Bytes the calling thread holds now (allocated minus freed on it).
pub fn held_by_this_thread() -> isize {
    HELD.with(|h| h.get())
}

/// Most bytes the calling thread held at once while `f` ran, beyond what it
/// held before: catches memory reserved and freed again inside `f`, which
/// [`held_by_this_thread`] before and after does not see.
pub fn peak_of<T>(f: impl FnOnce() -> T) -> (T, isize) {
    let before = held_by_this_thread();
    PEAK.with(|p| p.set(before));
    let out = f();
    (out, PEAK.with(|p| p.get()) - before)
}
