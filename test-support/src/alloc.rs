//! A global allocator that counts, for tests and benches that must show
//! the hot path allocates nothing.
//!
//! Install it in the test binary or bench, then measure:
//!
//! ```text
//! #[global_allocator]
//! static A: test_support::alloc::CountingAlloc = test_support::alloc::CountingAlloc;
//! let (_, allocs) = test_support::alloc::on_this_thread(|| hot_path());
//! ```
//!
//! Two kinds of count, because tests run in parallel threads of one
//! process: [`on_this_thread`] counts only the calling thread (what a
//! per-call check wants; other tests' threads do not disturb it), the
//! process-wide counters ([`allocations`], [`measure`]) count everything
//! (what a bench wants, engine worker threads included).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Forwards to the system allocator and counts allocations and
/// reallocations (frees are not counted: a steady state that frees what it
/// allocated still allocated).
pub struct CountingAlloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note(size: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    LARGEST.fetch_max(size, Ordering::Relaxed);
    // `try_with`: during thread teardown the thread-locals may be gone.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = THREAD_ALLOCS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// GlobalAlloc contract; the counting touches only atomics and const-
// initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        // SAFETY: the caller's layout, forwarded as given.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System` through this allocator with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note(n);
        // SAFETY: `p` came from `System` through this allocator with `l`.
        unsafe { System.realloc(p, l, n) }
    }
}

/// Allocations (and reallocations) in the whole process so far.
pub fn allocations() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// `f`'s result, the allocations the whole process made while it ran and
/// the largest single one (bytes). Tests that use this must not run in
/// parallel with other allocating tests of the same binary.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, u64, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    let before = allocations();
    let r = f();
    (r, allocations() - before, LARGEST.load(Ordering::Relaxed))
}

/// `f`'s result and the allocations made on this thread while it ran.
pub fn on_this_thread<T>(f: impl FnOnce() -> T) -> (T, u64) {
    THREAD_ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, THREAD_ALLOCS.with(|a| a.get()))
}

/// Mean allocations per call of `f` over `n` calls on this thread, after
/// one warm-up call (first-use set-up is not steady state). What a
/// must-be-zero check wants: the test harness's own threads (which print
/// and time tests) cannot add to it.
pub fn per_call(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let ((), a) = on_this_thread(|| {
        for _ in 0..n {
            f();
        }
    });
    a as f64 / n.max(1) as f64
}

/// [`per_call`] counted in the whole process, so an engine's worker
/// threads count too (for reports, not for zero checks: other threads of
/// the process count as well).
pub fn per_call_in_process(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let before = allocations();
    for _ in 0..n {
        f();
    }
    (allocations() - before) as f64 / n.max(1) as f64
}
