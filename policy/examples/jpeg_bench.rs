//! Benchmarks `policy::jpeg` against the `image` crate on a 640x480 camera
//! frame, side by side in one run, and counts heap allocations per frame.
//!
//! `cargo run --release -p policy --example jpeg_bench [-- FRAME.jpg ...]`
//! prints one JSON object. Without arguments the frame is a synthetic road
//! scene with sensor noise, JPEG-encoded by `image` at quality 85 (4:4:4,
//! which has twice the chroma blocks of a webcam's 4:2:2: a harder case).
//! Exits non-zero if our decoder allocated after warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use policy::jpeg::{JpegDecoder, Scale};

/// Counts every allocation and reallocation in the process.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const W: usize = 640;
const H: usize = 480;
const OUT_W: u32 = 160;
const OUT_H: u32 = 120;
const WARMUP: usize = 50;
/// Timed frames per measurement; `JPEG_BENCH_FRAMES` overrides (e.g. a
/// short run under callgrind, which counts instructions on a busy machine).
fn frames_timed() -> usize {
    std::env::var("JPEG_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// A track seen from the car: floor, dark road with white edges and a
/// dashed centre line, red/white kerbs, the wall above, noise on top.
fn scene(seed: u32) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2654435761) | 1;
    let mut out = Vec::with_capacity(W * H * 3);
    let horizon = H as f32 * 0.35;
    for y in 0..H {
        for x in 0..W {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let n = (s % 17) as f32 - 8.0;
            let (fx, fy) = (x as f32, y as f32);
            let mut rgb = if fy < horizon {
                [150.0 + 60.0 * fy / horizon, 170.0, 200.0]
            } else {
                [70.0, 110.0 + 30.0 * (fy - horizon) / H as f32, 60.0]
            };
            if fy >= horizon {
                let t = (fy - horizon) / (H as f32 - horizon);
                let centre = W as f32 * (0.5 + 0.1 * (t * 3.0 + seed as f32).sin());
                let half = W as f32 * (0.05 + 0.4 * t);
                let d = (fx - centre).abs();
                if d < half {
                    rgb = [60.0, 60.0, 65.0];
                    if d < 2.0 + 4.0 * t && ((fy * 0.15 / (0.2 + t)) as i32) % 2 == 0 {
                        rgb = [220.0, 200.0, 40.0];
                    }
                    if d > half * 0.92 {
                        rgb = [235.0, 235.0, 235.0];
                    }
                } else if d < half * 1.1 {
                    rgb = if ((fy / 6.0) as i32) % 2 == 0 {
                        [200.0, 40.0, 40.0]
                    } else {
                        [230.0, 230.0, 230.0]
                    };
                }
            }
            out.extend(rgb.map(|c| (c + n).clamp(0.0, 255.0) as u8));
        }
    }
    out
}

struct Stats {
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    allocs_per_frame: f64,
}

/// Runs `f` over the frames round-robin: warm-up, then timed frames.
fn measure(frames: &[Vec<u8>], mut f: impl FnMut(&[u8])) -> Stats {
    for i in 0..WARMUP {
        f(&frames[i % frames.len()]);
    }
    let n = frames_timed();
    let mut t = Vec::with_capacity(n);
    let a0 = ALLOCS.load(Ordering::Relaxed);
    for i in 0..n {
        let frame = &frames[i % frames.len()];
        let start = Instant::now();
        f(frame);
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    // The timing Vec was preallocated: every allocation counted is f's.
    let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
    let mean_ms = t.iter().sum::<f64>() / t.len() as f64;
    t.sort_by(f64::total_cmp);
    let pct = |p: f64| t[((t.len() - 1) as f64 * p).round() as usize];
    Stats {
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        mean_ms,
        allocs_per_frame: allocs as f64 / n as f64,
    }
}

fn json(s: &Stats) -> serde_json::Value {
    serde_json::json!({
        "p50_ms": (s.p50_ms * 1e4).round() / 1e4,
        "p99_ms": (s.p99_ms * 1e4).round() / 1e4,
        "mean_ms": (s.mean_ms * 1e4).round() / 1e4,
        "allocs_per_frame": s.allocs_per_frame,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let frames: Vec<Vec<u8>> = if args.is_empty() {
        (0..4)
            .map(|seed| {
                let mut jpeg = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
                    .encode(
                        &scene(seed),
                        W as u32,
                        H as u32,
                        image::ExtendedColorType::Rgb8,
                    )
                    .expect("encode test frame");
                jpeg
            })
            .collect()
    } else {
        args.iter()
            .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}")))
            .collect()
    };
    let (w, h, comps) = policy::jpeg::read_header(&frames[0]).expect("frame header");
    let scale = Scale::for_target(w, h, OUT_W, OUT_H);

    let mut dec = JpegDecoder::new();
    let mut out = vec![0u8; (w * h) as usize];
    let mut run = |s: Scale| {
        measure(&frames, |j| {
            dec.decode_gray_scaled(j, s, &mut out)
                .expect("policy::jpeg decode");
        })
    };
    let quarter = run(scale);
    let eighth = run(Scale::Eighth);
    let full = run(Scale::Full);

    let reference = measure(&frames, |j| {
        let img =
            image::load_from_memory_with_format(j, image::ImageFormat::Jpeg).expect("image decode");
        let gray = img.to_luma8();
        let small =
            image::imageops::resize(&gray, OUT_W, OUT_H, image::imageops::FilterType::Triangle);
        std::hint::black_box(small);
    });

    let report = serde_json::json!({
        "frame": {"width": w, "height": h, "components": comps,
                  "bytes": frames[0].len(), "source": if args.is_empty() { "synthetic road scene, image q85 4:4:4" } else { "files" }},
        "frames_timed": frames_timed(),
        "policy_jpeg_luma": {"scale": format!("{scale:?}"), "output": [OUT_W, OUT_H], "stats": json(&quarter)},
        "policy_jpeg_luma_eighth": json(&eighth),
        "policy_jpeg_luma_full": json(&full),
        "image_decode_gray_resize": json(&reference),
        "speedup_p50": (reference.p50_ms / quarter.p50_ms * 10.0).round() / 10.0,
    });
    println!("{report}");
    if quarter.allocs_per_frame > 0.0
        || eighth.allocs_per_frame > 0.0
        || full.allocs_per_frame > 0.0
    {
        eprintln!("policy::jpeg allocated on the hot path");
        std::process::exit(1);
    }
}
