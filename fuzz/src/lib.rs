//! Shared pieces of the fuzz targets: an allocator that measures what one
//! input makes the code allocate, so a target can assert that a hostile
//! input never buys more memory than the format's documented limits allow.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting live bytes and their high-water mark.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_sub(l.size(), Relaxed);
        note(new);
        unsafe { System.realloc(p, l, new) }
    }
}

fn note(size: usize) {
    let live = LIVE.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(live, Relaxed);
    LARGEST.fetch_max(size, Relaxed);
}

/// What one input cost, from [`measure`].
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Most bytes live at once beyond what was live at the start.
    pub peak: usize,
    /// The largest single allocation.
    pub largest: usize,
}

/// Runs `f` and reports the memory it used (the targets are single-threaded,
/// so nothing else allocates meanwhile).
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Cost) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    LARGEST.store(0, Relaxed);
    let out = f();
    let cost = Cost {
        peak: PEAK.load(Relaxed).saturating_sub(base),
        largest: LARGEST.load(Relaxed),
    };
    (out, cost)
}

/// Panics (a fuzzer finding) when `cost` exceeds `limit` bytes, live or in one
/// allocation.
pub fn assert_within(cost: Cost, limit: usize, what: &str) {
    assert!(
        cost.peak <= limit && cost.largest <= limit,
        "{what}: used {cost:?}, over the {limit}-byte bound"
    );
}
