//! Opens a V4L2 camera through the daemon's `v4l2` source, captures for a
//! while and prints what the driver accepted and what actually arrived:
//! `{"device":..,"format":..,"fps_set":..,"frames":..,"dropped":..,
//! "fps_measured":..,"lost":..,"resumed":..,...}`.
//!
//! `cargo run -p car-runtime --example v4l2_probe -- [--device /dev/video0]
//! [--seconds 5] [--fps 15] [--format auto|mjpeg|yuyv]`
//!
//! Useful on a car to check a camera before driving, and in the VM test to
//! watch the source survive an unplug (frames before, during and after).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use car_runtime::frame::{FrameSource, SourceError};
use car_runtime::source::v4l2::{FormatPreference, V4l2Config, V4l2Source};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Device path; default: scan /dev/video4 down to /dev/video0.
    #[arg(long)]
    device: Option<PathBuf>,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 480)]
    height: u32,
    #[arg(long, default_value_t = 15)]
    fps: u32,
    /// auto, mjpeg or yuyv.
    #[arg(long, default_value = "auto")]
    format: String,
    #[arg(long, default_value_t = 4)]
    buffers: u32,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let format = match a.format.as_str() {
        "auto" => FormatPreference::Auto,
        "mjpeg" => FormatPreference::Mjpeg,
        "yuyv" => FormatPreference::Yuyv,
        o => bail!("--format {o:?}: expected auto, mjpeg or yuyv"),
    };
    let cfg = V4l2Config {
        device: a.device,
        width: a.width,
        height: a.height,
        fps: a.fps,
        format,
        buffers: a.buffers,
    };
    let mut src = V4l2Source::open(&cfg).context("opening the camera")?;
    let n = src.negotiated().clone();
    eprintln!("camera: {n}");

    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.seconds);
    let (mut frames, mut errors, mut timeouts) = (0u64, 0u64, 0u64);
    let (mut first_ts, mut last_ts) = (None::<u64>, 0u64);
    let mut last_seq = None::<u64>;
    let mut non_monotonic = 0u64;
    let mut max_age_ns = 0u64;
    let mut frames_after_loss = 0u64;
    let mut bytes_min = usize::MAX;
    while Instant::now() < end {
        let lost_before = src.times_lost();
        match src.next_frame(Duration::from_millis(100)) {
            Ok(f) => {
                frames += 1;
                if lost_before > 0 {
                    frames_after_loss += 1;
                }
                bytes_min = bytes_min.min(f.data.len());
                if f.timestamp_ns <= last_ts || last_seq.is_some_and(|s| f.seq <= s) {
                    non_monotonic += 1;
                }
                // How old the frame is when we get it: capture -> user space.
                let now = monotonic_ns();
                max_age_ns = max_age_ns.max(now.saturating_sub(f.timestamp_ns));
                first_ts.get_or_insert(f.timestamp_ns);
                last_ts = f.timestamp_ns;
                last_seq = Some(f.seq);
            }
            Err(SourceError::Timeout(_)) => timeouts += 1,
            Err(e) => {
                errors += 1;
                eprintln!("source error: {e}");
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let span_s = first_ts.map_or(0.0, |f| (last_ts - f) as f64 / 1e9);
    let out = serde_json::json!({
        "device": n.device,
        "driver": n.driver,
        "format": format!("{:?}", n.format),
        "width": n.width,
        "height": n.height,
        "fps_requested": n.fps_requested,
        "fps_set": n.fps_actual,
        "buffers": n.buffers,
        "seconds": elapsed,
        "frames": frames,
        "dropped": src.dropped(),
        "fps_measured": if span_s > 0.0 { (frames.saturating_sub(1)) as f64 / span_s } else { 0.0 },
        "min_frame_bytes": if frames > 0 { bytes_min } else { 0 },
        "max_frame_age_ms": max_age_ns as f64 / 1e6,
        "non_monotonic": non_monotonic,
        "timeouts": timeouts,
        "errors": errors,
        "lost": src.times_lost(),
        "frames_after_loss": frames_after_loss,
        "connected": src.is_connected(),
    });
    println!("{out}");
    Ok(())
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
