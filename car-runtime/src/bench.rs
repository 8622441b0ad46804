//! `car-runtime bench`: the whole pipeline (640x480 JPEG decode ->
//! preprocess -> inference -> action mapping -> actuator write to a null
//! backend) on recorded frames, with per-stage p50/p99, heap and
//! frame-arena allocations per frame after warm-up (the counters of the
//! daemon's global allocator, `car_runtime::arena`) and peak RSS.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use car_runtime::arena;
use car_runtime::config::BackendChoice;
use car_runtime::frame::{Frame, PixelFormat};
use car_runtime::pipeline::{self, PolicyBrain};
use car_runtime::telemetry::LatencyStats;

#[derive(Args)]
pub struct BenchArgs {
    /// Model folder or .tar.gz (default: the bundled model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Frames to time (after warm-up).
    #[arg(long, default_value_t = 500)]
    frames: usize,
    /// A folder of 640x480 JPEGs (default: simulator frames, JPEG-encoded first).
    #[arg(long)]
    frames_dir: Option<PathBuf>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
    /// Also run scripts/bench_python.py (OpenCV + onnxruntime) on the same frames and print the ratio.
    #[arg(long)]
    python: bool,
    #[arg(long)]
    backend: Option<BackendChoice>,
    /// Untimed frames before counting starts.
    #[arg(long, default_value_t = 30)]
    warmup: usize,
}

/// A null actuator: the write is what the car's would cost minus the wire.
struct NullActuator(u64);

impl servo_driver::Actuator for NullActuator {
    fn write(&mut self, p: servo_driver::Pulses) -> Result<(), servo_driver::ActuatorError> {
        self.0 = self
            .0
            .wrapping_add(u64::from(p.steering_ns) ^ u64::from(p.throttle_ns));
        std::hint::black_box(self.0);
        Ok(())
    }
    fn backend(&self) -> &'static str {
        "null"
    }
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn sim_jpegs(n: usize) -> Result<Vec<Vec<u8>>> {
    let track = sim::Track::builtin(sim::Track::builtin_names()[0]).expect("built-in track");
    let mut runner = sim::LapRunner::new(sim::Sim::new(track, sim::SimConfig::default()));
    runner.reset(3);
    let mut rgb = vec![0u8; 640 * 480 * 3];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // Weave gently so frames differ (borders move across the image).
        let steer = 12.0 * ((i as f64) * 0.15).sin();
        runner.step(sim::CarAction {
            steering_deg: steer,
            speed_mps: 1.5,
        });
        runner
            .sim_mut()
            .render_into(&mut rgb, 640, 480, sim::Channels::Rgb)?;
        let mut j = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut j, 90).encode(
            &rgb,
            640,
            480,
            image::ExtendedColorType::Rgb8,
        )?;
        out.push(j);
    }
    Ok(out)
}

fn dir_jpegs(dir: &Path, n: usize) -> Result<Vec<Vec<u8>>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no .jpg frames", dir.display());
    }
    let mut out = Vec::new();
    for f in files.iter().cycle().take(n.max(files.len().min(n))) {
        // The same cap as a replayed camera frame.
        out.push(safe_io::read_limited(f, 16 << 20)?);
    }
    Ok(out)
}

fn stat(s: &LatencyStats) -> serde_json::Value {
    json!({"p50": s.percentile_ms(50.0), "p99": s.percentile_ms(99.0)})
}

pub fn main(a: BenchArgs) -> Result<()> {
    let backend = pipeline::init_backend(a.backend.unwrap_or(BackendChoice::Auto), "")?;
    let model = pipeline::load_model(a.model.as_deref(), &backend)?;
    let engine = model.policy.backend_name();
    let total_frames = a.warmup + a.frames;
    let jpegs = match &a.frames_dir {
        Some(d) => dir_jpegs(d, total_frames)?,
        None => sim_jpegs(total_frames.min(300))?,
    };
    let mut brain = PolicyBrain::new(model);
    let mut driver = servo_driver::ServoDriver::new(
        servo_driver::Calibration::stock(),
        Box::new(NullActuator(0)),
    )?;
    let (w, h) =
        car_runtime::source::replay::jpeg_size(&jpegs[0]).context("first frame is not a JPEG")?;
    brain.prepare(w, h, PixelFormat::Jpeg)?;

    let mut st = [(); 6].map(|_| LatencyStats::new());
    let mut allocs_start = arena::stats();
    let mut t_run = Instant::now();
    for i in 0..total_frames {
        if i == a.warmup {
            allocs_start = arena::stats();
            t_run = Instant::now();
        }
        let data = &jpegs[i % jpegs.len()];
        let frame = Frame {
            data,
            format: PixelFormat::Jpeg,
            width: w,
            height: h,
            timestamp_ns: i as u64,
            seq: i as u64,
        };
        let t0 = Instant::now();
        let decode_us = brain.preprocess(&frame)?;
        let t1 = Instant::now();
        brain.infer()?;
        let t2 = Instant::now();
        let m = brain.map(1.0);
        let t3 = Instant::now();
        driver.drive(m.steering, m.throttle)?;
        let t4 = Instant::now();
        if i >= a.warmup {
            let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
            let pre_us = us(t1 - t0);
            st[0].record_us(f64::from(decode_us));
            st[1].record_us((pre_us - f64::from(decode_us)).max(0.0));
            st[2].record_us(us(t2 - t1));
            st[3].record_us(us(t3 - t2));
            st[4].record_us(us(t4 - t3));
            st[5].record_us(us(t4 - t0));
        }
    }
    let elapsed = t_run.elapsed().as_secs_f64();
    let end = arena::stats();
    let n = a.frames.max(1) as f64;
    let heap = (end.heap_allocs - allocs_start.heap_allocs) as f64 / n;
    let in_arena = (end.arena_allocs - allocs_start.arena_allocs) as f64 / n;
    let out = json!({
        "backend": engine,
        "frames": a.frames,
        "fps": a.frames as f64 / elapsed,
        "stages_ms": {
            "decode": stat(&st[0]),
            "preprocess": stat(&st[1]),
            "inference": stat(&st[2]),
            "mapping": stat(&st[3]),
            "actuate": stat(&st[4]),
            "total": stat(&st[5]),
        },
        // Heap (malloc) allocations: the zero-allocation figure.
        "allocs_per_frame": heap,
        // Served from the preallocated frame arena (tract's per-layer tensors).
        "arena_allocs_per_frame": in_arena,
        "arena_peak_kb": end.peak as f64 / 1024.0,
        "peak_rss_mb": peak_rss_mb(),
    });
    let mut py = None;
    if a.python {
        py = Some(run_python(&a, &jpegs, &out)?);
    }
    if a.json {
        println!("{out}");
        if let Some(p) = &py {
            println!("{p}");
        }
    } else {
        println!(
            "backend {engine}, {} frames, {:.0} fps",
            a.frames,
            out["fps"].as_f64().unwrap_or(0.0)
        );
        for k in [
            "decode",
            "preprocess",
            "inference",
            "mapping",
            "actuate",
            "total",
        ] {
            let s = &out["stages_ms"][k];
            println!(
                "  {k:10} p50 {:8.4} ms  p99 {:8.4} ms",
                s["p50"].as_f64().unwrap_or(0.0),
                s["p99"].as_f64().unwrap_or(0.0)
            );
        }
        println!(
            "  heap allocations/frame {}, from the frame arena {} (peak {:.0} kB), peak RSS {:.1} MB",
            out["allocs_per_frame"],
            out["arena_allocs_per_frame"],
            out["arena_peak_kb"].as_f64().unwrap_or(0.0),
            out["peak_rss_mb"]
        );
        if let Some(p) = &py {
            println!("python: {p}");
        }
    }
    Ok(())
}

fn find_script() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CAR_BENCH_PYTHON") {
        return Some(PathBuf::from(p));
    }
    [
        PathBuf::from("scripts/bench_python.py"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_python.py"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// Same frames, same model, OpenCV + onnxruntime in Python; adds the ratio.
fn run_python(
    a: &BenchArgs,
    jpegs: &[Vec<u8>],
    ours: &serde_json::Value,
) -> Result<serde_json::Value> {
    let script =
        find_script().context("scripts/bench_python.py not found (set CAR_BENCH_PYTHON)")?;
    let tmp = tempfile::tempdir()?;
    let fdir = tmp.path().join("frames");
    std::fs::create_dir_all(&fdir)?;
    for (i, j) in jpegs.iter().enumerate() {
        std::fs::write(fdir.join(format!("frame_{i:06}.jpg")), j)?;
    }
    let model_dir = match &a.model {
        Some(m) => m.clone(),
        None => {
            let d = tmp.path().join("model");
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join("model.onnx"), pipeline::BUNDLED_ONNX)?;
            std::fs::write(d.join("model_metadata.json"), pipeline::BUNDLED_METADATA)?;
            d
        }
    };
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg("--model")
        .arg(&model_dir)
        .arg("--frames-dir")
        .arg(&fdir)
        .arg("--frames")
        .arg(a.frames.to_string())
        .arg("--warmup")
        .arg(a.warmup.to_string())
        .output()
        .context("running python3")?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{}: output is not JSON", script.display()))?;
    let ours_p50 = ours["stages_ms"]["total"]["p50"].as_f64().unwrap_or(0.0);
    let py_p50 = v["stages_ms"]["total"]["p50"].as_f64().unwrap_or(0.0);
    v["ratio_total_p50_python_over_rust"] = json!(if ours_p50 > 0.0 {
        py_p50 / ours_p50
    } else {
        0.0
    });
    let ours_fps = ours["fps"].as_f64().unwrap_or(0.0);
    v["ratio_fps_rust_over_python"] = json!(if v["fps"].as_f64().unwrap_or(0.0) > 0.0 {
        ours_fps / v["fps"].as_f64().unwrap_or(1.0)
    } else {
        0.0
    });
    Ok(v)
}
