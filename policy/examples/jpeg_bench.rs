//! Benchmarks `policy::jpeg` against the `image` crate on a 640x480 camera
//! frame, side by side in one run, and counts heap allocations per frame.
//!
//! `cargo run --release -p policy --example jpeg_bench [-- FRAME.jpg ...]`
//! prints one JSON object. Without arguments the frame is a synthetic road
//! scene with sensor noise, JPEG-encoded by `image` at quality 85 (4:4:4,
//! which has twice the chroma blocks of a webcam's 4:2:2: a harder case).
//! Exits non-zero if our decoder allocated after warm-up.

use std::time::Instant;

use policy::jpeg::{JpegDecoder, Scale};

#[global_allocator]
static GLOBAL: test_support::alloc::CountingAlloc = test_support::alloc::CountingAlloc;

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

/// A track seen from the car (see `test_support::frames`).
fn scene(seed: u32) -> Vec<u8> {
    test_support::frames::track_scene(W, H, 3, seed)
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
    let a0 = test_support::alloc::allocations();
    for i in 0..n {
        let frame = &frames[i % frames.len()];
        let start = Instant::now();
        f(frame);
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    // The timing Vec was preallocated: every allocation counted is f's.
    let allocs = test_support::alloc::allocations() - a0;
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
