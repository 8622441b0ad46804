//! The frame arena as the process's global allocator, as in the daemon:
//! what a scope allocates comes from the arena and is reused frame after
//! frame, memory still in use is never handed out again, and the built-in
//! tract engine runs a whole frame without touching the heap.
//!
//! One test function: the allocator and its counters are process-wide.

use car_control::arena::{self, ArenaAlloc};
use std::sync::{Arc, Barrier};

#[global_allocator]
static GLOBAL: ArenaAlloc = ArenaAlloc;

const SLAB: usize = 1 << 20;

fn heap() -> u64 {
    arena::stats().heap_allocs
}

#[test]
fn frame_arena() {
    // No region yet: a scope is plain heap.
    let v = arena::scope(|| vec![1u8; 100]);
    assert!(!arena::contains(v.as_ptr()));
    drop(v);

    assert!(arena::reserve(SLAB));
    assert!(!arena::reserve(SLAB), "one region per process");
    assert_eq!(arena::stats().slab, SLAB);

    // Allocations inside a scope come from the arena, not the heap.
    let h0 = heap();
    let first = arena::scope(|| {
        let v: Vec<u64> = Vec::with_capacity(1000);
        assert_eq!(v.as_ptr() as usize % std::mem::align_of::<u64>(), 0);
        v.as_ptr() as usize
    });
    assert!(arena::contains(first as *const u8));
    assert_eq!(heap(), h0, "a scoped allocation reached the heap");
    assert_eq!(arena::stats().live, 0);

    // Outside a scope: heap.
    let outside = vec![0u8; 64];
    assert!(!arena::contains(outside.as_ptr()));
    drop(outside);

    // Memory is reused: after one pass over the slabs, the same address.
    let mut seen = vec![first];
    for _ in 0..4 {
        seen.push(arena::scope(|| {
            let v = Vec::<u64>::with_capacity(1000);
            v.as_ptr() as usize
        }));
    }
    assert_eq!(seen[4], first, "slabs rotate and are reused: {seen:x?}");

    // Reused memory handed out zeroed when asked.
    for _ in 0..4 {
        arena::scope(|| {
            let mut v = vec![0u8; 4096];
            v.fill(0xFF);
            std::hint::black_box(&v);
        });
    }
    arena::scope(|| {
        let v = vec![0u8; 4096];
        assert!(arena::contains(v.as_ptr()));
        assert!(v.iter().all(|&b| b == 0), "alloc_zeroed returned old bytes");
    });

    // A block kept past its scope is never handed out again while alive.
    let kept: Vec<u8> = arena::scope(|| (0..=255u8).cycle().take(5000).collect());
    assert!(arena::contains(kept.as_ptr()));
    let (lo, hi) = (kept.as_ptr() as usize, kept.as_ptr() as usize + kept.len());
    for _ in 0..20 {
        arena::scope(|| {
            let mut v = vec![0xAAu8; 100_000];
            let (a, b) = (v.as_ptr() as usize, v.as_ptr() as usize + v.len());
            assert!(b <= lo || a >= hi, "live block overwritten");
            v[0] = 1;
            std::hint::black_box(&v);
        });
    }
    assert!(kept.iter().copied().eq((0..=255u8).cycle().take(5000)));
    assert_eq!(arena::stats().live, 1);

    // Freed on another thread: recognised by address, the slab frees up.
    let sent = arena::scope(|| vec![7u32; 100]);
    assert!(arena::contains(sent.as_ptr() as *const u8));
    std::thread::spawn(move || drop(sent)).join().unwrap();
    assert_eq!(arena::stats().live, 1);

    // Grown outside its scope: moves to the heap, contents intact.
    let mut grow = arena::scope(|| {
        let mut v = Vec::with_capacity(4);
        v.extend_from_slice(&[1u32, 2, 3, 4]);
        v
    });
    assert!(arena::contains(grow.as_ptr() as *const u8));
    grow.extend(5..=100u32);
    assert!(!arena::contains(grow.as_ptr() as *const u8));
    assert!(grow.iter().copied().eq(1..=100u32));
    assert_eq!(arena::stats().live, 1, "the old block was not released");
    drop(grow);

    // Too big for a slab: the heap serves it.
    let h0 = heap();
    let big = arena::scope(|| vec![3u8; 2 * SLAB]);
    assert!(!arena::contains(big.as_ptr()));
    assert!(heap() > h0);
    assert!(big.iter().all(|&b| b == 3));
    drop(big);

    // Another thread allocating while one is inside a scope: the heap.
    let inside = Arc::new(Barrier::new(2));
    let done = Arc::new(Barrier::new(2));
    let (i2, d2) = (inside.clone(), done.clone());
    let other = std::thread::spawn(move || {
        i2.wait();
        let v = vec![1u8; 256];
        let in_arena = arena::contains(v.as_ptr());
        d2.wait();
        in_arena
    });
    arena::scope(|| {
        inside.wait();
        done.wait();
    });
    assert!(
        !other.join().unwrap(),
        "another thread was served by the arena"
    );

    // A panic inside a scope leaves the thread allocating from the heap.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| arena::scope(|| panic!("engine failed")));
    std::panic::set_hook(hook);
    assert!(r.is_err());
    drop(r);
    let after = vec![0u8; 32];
    assert!(!arena::contains(after.as_ptr()));
    drop(after);

    // Every slab holding a live block: scopes fall back to the heap.
    let mut holders = vec![kept];
    let v = loop {
        let h = arena::scope(|| vec![9u8; 10]);
        if !arena::contains(h.as_ptr()) {
            break h;
        }
        holders.push(h);
        assert!(holders.len() <= arena::SLABS, "a held slab was reused");
    };
    assert_eq!(holders.len(), arena::SLABS, "fell back with a slab free");
    drop(v);
    drop(holders);
    assert_eq!(arena::stats().live, 0);

    // The real thing: the bundled model on the built-in tract engine. A
    // whole frame's inference without one heap allocation, and the same
    // outputs as without the arena.
    let b = policy::Backend::init(policy::BackendChoice::Tract, None).unwrap();
    let mut m = car_control::pipeline::load_model(None, &b).unwrap();
    assert_eq!(m.policy.backend_name(), "tract");
    let n = m.policy.input_spec().len();
    let inputs: Vec<Vec<f32>> = (0..3)
        .map(|k| (0..n).map(|i| ((i * 7 + k * 31) % 256) as f32).collect())
        .collect();
    let mut want = vec![vec![0f32; m.policy.output_len()]; inputs.len()];
    for (x, w) in inputs.iter().zip(&mut want) {
        m.policy.infer(x, w).unwrap();
    }
    let mut got = vec![0f32; m.policy.output_len()];
    let before = arena::stats();
    for i in 0..30 {
        let x = &inputs[i % inputs.len()];
        arena::scope(|| m.policy.infer(x, &mut got)).unwrap();
        assert_eq!(got, want[i % inputs.len()], "frame {i}");
    }
    let after = arena::stats();
    assert_eq!(
        after.heap_allocs, before.heap_allocs,
        "tract reached the heap"
    );
    assert!(after.arena_allocs > before.arena_allocs);
    assert_eq!(after.live, 0);
    println!(
        "tract, bundled model: {} arena allocations per frame, peak {} kB",
        (after.arena_allocs - before.arena_allocs) / 30,
        after.peak / 1024
    );
}
