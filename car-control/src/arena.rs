//! The frame arena: one region reserved at start-up that serves the heap
//! allocations made inside [`scope`] (the inference call on the control
//! thread), so that a steady-state frame never reaches malloc.
//!
//! Why: the built-in tract engine allocates every layer's output tensor on
//! every run (43 allocations a frame for the DeepRacer shallow network),
//! and malloc may take a lock or make a system call: jitter on the hot
//! path. Inside a scope each of those allocations is a pointer bump into
//! memory reused frame after frame. ONNX Runtime allocates nothing per
//! frame, so with it the arena stays idle.
//!
//! The region is cut into slabs, each with a count of its live blocks; a
//! scope bumps through one slab, chosen among those whose blocks have all
//! been freed. More than one slab because an engine keeps the last run's
//! tensors until the next run replaces them (tract does): frame N's slab
//! empties during frame N+1, which uses another.
//!
//! The safety rule: a slab is reused only when every block it handed out
//! has been freed. A block kept for longer (a cache inside the engine)
//! only takes its slab out of rotation; when no slab is free, or one
//! overflows, allocations go to the heap and the heap count
//! (`car-runtime bench`) shows them. Frees are recognised by address, from
//! any thread; a block that grows outside a scope moves to the heap.
//!
//! Must not: allocate itself, hand out a byte that is still live, or serve
//! any thread but the one inside the scope. [`ArenaAlloc`] is the
//! process's global allocator only in the `car-runtime` binary; elsewhere
//! (tests of other crates, the trainer) `scope` just runs its closure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Allocations (and reallocations) served by the system heap.
pub static HEAP_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Allocations served by the arena.
pub static ARENA_ALLOCS: AtomicU64 = AtomicU64::new(0);

/// Slabs in the region.
pub const SLABS: usize = 4;

// The region, [BASE, END), SLABS slabs of SLAB bytes; set once by
// `reserve`, never freed.
static BASE: AtomicUsize = AtomicUsize::new(0);
static END: AtomicUsize = AtomicUsize::new(0);
static SLAB: AtomicUsize = AtomicUsize::new(1);
// The current scope's slab: next free byte and its end. Only the thread
// inside the scope moves them.
static TOP: AtomicUsize = AtomicUsize::new(0);
static SLAB_END: AtomicUsize = AtomicUsize::new(0);
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LIVE: [AtomicUsize; SLABS] = [const { AtomicUsize::new(0) }; SLABS];
static SCOPES: AtomicU64 = AtomicU64::new(0);
static BUSY: AtomicBool = AtomicBool::new(false);
static RESERVED: AtomicBool = AtomicBool::new(false);

thread_local! {
    // const-initialised, no destructor: reading it never allocates.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// The global allocator: the arena for the thread inside a scope, the
/// system heap for everything else; counts both.
pub struct ArenaAlloc;

fn in_arena(p: *mut u8) -> bool {
    let a = p as usize;
    a >= BASE.load(Ordering::Relaxed) && a < END.load(Ordering::Relaxed)
}

fn bump(l: Layout) -> Option<*mut u8> {
    if !INSIDE.with(Cell::get) {
        return None;
    }
    let top = TOP.load(Ordering::Relaxed);
    let start = top.checked_add(l.align() - 1)? & !(l.align() - 1);
    let end = start.checked_add(l.size())?;
    let slab_end = SLAB_END.load(Ordering::Relaxed);
    if end > slab_end {
        return None;
    }
    TOP.store(end, Ordering::Relaxed);
    LIVE[CURRENT.load(Ordering::Relaxed)].fetch_add(1, Ordering::Relaxed);
    ARENA_ALLOCS.fetch_add(1, Ordering::Relaxed);
    let slab = SLAB.load(Ordering::Relaxed);
    PEAK.fetch_max(end - (slab_end - slab), Ordering::Relaxed);
    Some(start as *mut u8)
}

// SAFETY: arena blocks are aligned as asked, lie inside a region this
// process owns for its whole life, and are never handed out twice while
// live (a slab is reused only when its live count is 0); everything else
// is the system allocator's.
unsafe impl GlobalAlloc for ArenaAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if let Some(p) = bump(l) {
            return p;
        }
        HEAP_ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(l) }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if let Some(p) = bump(l) {
            // SAFETY: [p, p + size) is ours (bump checked it fits);
            // reused memory holds an earlier frame's bytes.
            unsafe { p.write_bytes(0, l.size()) };
            return p;
        }
        HEAP_ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if in_arena(p) {
            let slab = (p as usize - BASE.load(Ordering::Relaxed)) / SLAB.load(Ordering::Relaxed);
            // Release: the freeing thread's last use happens before a
            // later scope's reuse (which loads LIVE with Acquire).
            LIVE[slab].fetch_sub(1, Ordering::Release);
        } else {
            // SAFETY: not an arena block, so the system allocator's.
            unsafe { System.dealloc(p, l) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        if in_arena(p) {
            // SAFETY: the caller guarantees new_size is valid for l.align().
            let nl = unsafe { Layout::from_size_align_unchecked(new_size, l.align()) };
            // SAFETY: nl has a non-zero size, as realloc's contract requires.
            let np = unsafe { self.alloc(nl) };
            if !np.is_null() {
                // SAFETY: both blocks hold at least min(old, new) bytes and
                // do not overlap (np is fresh).
                unsafe {
                    std::ptr::copy_nonoverlapping(p, np, l.size().min(new_size));
                    self.dealloc(p, l);
                }
            }
            return np;
        }
        HEAP_ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(p, l, new_size) }
    }
}

/// Reserve the region once per process: `slab_bytes` (rounded up to a
/// page) for each of its slabs; a frame's engine allocations must fit in
/// one. Only the pages the engine touches become resident. Returns false
/// when a region already exists or the system refuses the memory.
pub fn reserve(slab_bytes: usize) -> bool {
    if slab_bytes == 0 || RESERVED.swap(true, Ordering::AcqRel) {
        return false;
    }
    let slab = slab_bytes.next_multiple_of(4096);
    let Some(Ok(l)) = slab
        .checked_mul(SLABS)
        .map(|b| Layout::from_size_align(b, 4096))
    else {
        return false;
    };
    // SAFETY: non-zero size; the region is never freed (frees of its
    // blocks are recognised by address for the life of the process).
    let p = unsafe { System.alloc(l) };
    if p.is_null() {
        return false;
    }
    SLAB.store(slab, Ordering::Relaxed);
    END.store(p as usize + l.size(), Ordering::Relaxed);
    BASE.store(p as usize, Ordering::Release);
    true
}

/// Run `f` with this thread's allocations served by the arena (when one
/// is reserved and no other thread is inside a scope; otherwise `f` just
/// runs). Nested scopes are the outer one.
pub fn scope<R>(f: impl FnOnce() -> R) -> R {
    if BASE.load(Ordering::Acquire) == 0 || INSIDE.with(Cell::get) {
        return f();
    }
    if BUSY.swap(true, Ordering::Acquire) {
        return f();
    }
    // The next slab after the last one used whose blocks are all freed.
    let last = CURRENT.load(Ordering::Relaxed);
    let Some(free) = (1..=SLABS)
        .map(|i| (last + i) % SLABS)
        .find(|&i| LIVE[i].load(Ordering::Acquire) == 0)
    else {
        BUSY.store(false, Ordering::Release);
        return f();
    };
    let (base, slab) = (BASE.load(Ordering::Relaxed), SLAB.load(Ordering::Relaxed));
    CURRENT.store(free, Ordering::Relaxed);
    TOP.store(base + free * slab, Ordering::Relaxed);
    SLAB_END.store(base + (free + 1) * slab, Ordering::Relaxed);
    SCOPES.fetch_add(1, Ordering::Relaxed);
    struct Leave;
    impl Drop for Leave {
        // Also on unwind: a panicking engine must not leave this thread
        // allocating from the arena.
        fn drop(&mut self) {
            INSIDE.with(|c| c.set(false));
            BUSY.store(false, Ordering::Release);
        }
    }
    INSIDE.with(|c| c.set(true));
    let _leave = Leave;
    f()
}

/// What the arena has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Allocations and reallocations served by the system heap, all threads
    /// ([`HEAP_ALLOCS`]).
    pub heap_allocs: u64,
    /// Allocations served by the arena inside [`scope`] ([`ARENA_ALLOCS`]).
    pub arena_allocs: u64,
    /// Size of one slab (0 = no region reserved).
    pub slab: usize,
    /// Most bytes one scope took from its slab.
    pub peak: usize,
    /// Blocks handed out and not yet freed, over all slabs.
    pub live: usize,
    /// Scopes that ran on a slab (the others ran on the heap).
    pub scopes: u64,
}

/// The arena's counters now (`car-runtime bench` shows them). Each field is
/// a separate relaxed load, so they may be a few allocations apart.
pub fn stats() -> Stats {
    Stats {
        heap_allocs: HEAP_ALLOCS.load(Ordering::Relaxed),
        arena_allocs: ARENA_ALLOCS.load(Ordering::Relaxed),
        slab: if BASE.load(Ordering::Relaxed) == 0 {
            0
        } else {
            SLAB.load(Ordering::Relaxed)
        },
        peak: PEAK.load(Ordering::Relaxed),
        live: LIVE.iter().map(|l| l.load(Ordering::Relaxed)).sum(),
        scopes: SCOPES.load(Ordering::Relaxed),
    }
}

/// Where a pointer came from, for tests and diagnostics.
pub fn contains(p: *const u8) -> bool {
    in_arena(p as *mut u8)
}
