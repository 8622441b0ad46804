//! `car-sim`: run the expert, render a camera view, or benchmark the
//! simulator. Output formats are relied on by other checks; keep them.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sim::{run_expert_laps, CarAction, Channels, Expert, Sim, SimConfig, Track};

#[derive(Parser)]
#[command(
    name = "car-sim",
    version,
    about = "DeepRacer-compatible simulator tools"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Drive laps with the pure-pursuit expert and report lap times.
    Expert {
        /// Built-in track name or path to a DeepRacer .npy file.
        #[arg(long)]
        track: String,
        #[arg(long, default_value_t = 1)]
        laps: usize,
        /// Speed, m/s.
        #[arg(long, default_value_t = 1.5)]
        speed: f64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write the camera view with the car on the centre line at a progress.
    Render {
        #[arg(long)]
        track: String,
        /// Position on the lap, 0-100 %.
        #[arg(long, default_value_t = 0.0)]
        progress: f64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 160)]
        width: usize,
        #[arg(long, default_value_t = 120)]
        height: usize,
        /// Colour instead of grayscale.
        #[arg(long)]
        rgb: bool,
        /// Apply the standard domain randomisation with this seed.
        #[arg(long)]
        randomize: Option<u64>,
    },
    /// Measure 160x120 grayscale rendering plus physics on one thread.
    Bench {
        /// Built-in track name or .npy path.
        #[arg(long, default_value = "technical")]
        track: String,
        /// Seconds to measure each figure.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        #[arg(long)]
        json: bool,
    },
    /// List the built-in tracks.
    Tracks,
    /// Write a top view of a track (road, borders, start line).
    Map {
        #[arg(long)]
        track: String,
        #[arg(long)]
        out: PathBuf,
        /// Pixels per metre.
        #[arg(long, default_value_t = 40.0)]
        scale: f64,
    },
}

fn load(track: &str) -> Result<Track> {
    Ok(Track::resolve(track)?)
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Expert {
            track,
            laps,
            speed,
            json,
        } => {
            if !(speed > 0.0 && speed <= 4.0) {
                bail!("--speed must be in (0, 4] m/s, got {speed}");
            }
            let t = load(&track)?;
            let report = run_expert_laps(t, laps, speed, SimConfig::default());
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{}: {} laps, off-track {} times, {} steps",
                    report.track, report.laps_completed, report.offtrack_events, report.steps
                );
                for (i, t) in report.lap_times_s.iter().enumerate() {
                    println!("lap {}: {:.3} s", i + 1, t);
                }
            }
            if report.laps_completed < laps {
                bail!("completed only {} of {} laps", report.laps_completed, laps);
            }
        }
        Cmd::Render {
            track,
            progress,
            out,
            width,
            height,
            rgb,
            randomize,
        } => {
            let t = load(&track)?;
            let mut cfg = SimConfig::default();
            if randomize.is_some() {
                cfg.randomization = sim::Randomization::standard();
            }
            let mut s = Sim::new(t, cfg);
            s.reset(randomize.unwrap_or(0));
            s.place(progress, 0.0, 0.0);
            let ch = if rgb { Channels::Rgb } else { Channels::Gray };
            let mut buf = vec![0u8; width * height * ch.bytes_per_pixel()];
            s.render_into(&mut buf, width, height, ch)?;
            let w = u32::try_from(width)?;
            let h = u32::try_from(height)?;
            let res = if rgb {
                image::RgbImage::from_raw(w, h, buf).map(|i| i.save(&out))
            } else {
                image::GrayImage::from_raw(w, h, buf).map(|i| i.save(&out))
            };
            res.context("image buffer size")?
                .with_context(|| format!("writing {}", out.display()))?;
        }
        Cmd::Bench {
            track,
            seconds,
            json,
        } => {
            let (fps, sps) = bench(&load(&track)?, seconds);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"frames_per_s": fps.round(), "steps_per_s": sps.round()})
                );
            } else {
                println!(
                    "{fps:.0} frames/s (160x120 gray render + physics), {sps:.0} physics steps/s"
                );
            }
        }
        Cmd::Map { track, out, scale } => {
            let t = load(&track)?;
            top_view(&t, scale)
                .save(&out)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        Cmd::Tracks => {
            for n in Track::builtin_names() {
                let t = Track::builtin(n).expect("listed");
                println!("{n}\t{:.2} m\twidth {:.2} m", t.length(), t.width());
            }
        }
    }
    Ok(())
}

/// Frames per second (step + render) and steps per second (step only) per
/// core (thread CPU time), driving the expert continuously so the car stays on the road.
fn bench(track: &Track, seconds: f64) -> (f64, f64) {
    let mut runner = sim::LapRunner::new(Sim::new(track.clone(), SimConfig::default()));
    let expert = Expert::new(1.5);
    let mut frame = vec![0u8; 160 * 120];
    let mut run = |render: bool| {
        let mut n = 0u64;
        let mut checksum = 0u64;
        let start = Instant::now();
        let cpu0 = thread_cpu_s();
        loop {
            for _ in 0..500 {
                let a: CarAction = expert.act(runner.sim());
                runner.step(a);
                if render {
                    runner
                        .sim_mut()
                        .render_into(&mut frame, 160, 120, Channels::Gray)
                        .expect("fixed size");
                    checksum = checksum.wrapping_add(frame[160 * 100] as u64);
                }
            }
            n += 500;
            let el = start.elapsed().as_secs_f64();
            if el >= seconds {
                std::hint::black_box(checksum);
                // On a loaded machine wall time undercounts a core's
                // speed; the thread's own CPU time does not.
                let rate = match (cpu0, thread_cpu_s()) {
                    (Some(a), Some(b)) if b > a => n as f64 / (b - a),
                    _ => n as f64 / el,
                };
                return rate;
            }
        }
    };
    run(true); // warm-up: tables, caches
    let fps = run(true);
    let sps = run(false);
    (fps, sps)
}

/// Top view for checking a track design by eye: road grey, floor green,
/// start line red, the tightest 10 % of the centre line in yellow.
fn top_view(t: &Track, scale: f64) -> image::RgbImage {
    let b = t.bounds();
    let m = 0.5;
    let w = ((b[2] - b[0] + 2.0 * m) * scale) as u32;
    let h = ((b[3] - b[1] + 2.0 * m) * scale) as u32;
    let mut img = image::RgbImage::new(w.max(1), h.max(1));
    for py in 0..h {
        for px in 0..w {
            let x = b[0] - m + (px as f64 + 0.5) / scale;
            let y = b[3] + m - (py as f64 + 0.5) / scale;
            let pos = t.nearest([x, y]);
            let c = if !t.is_on_track(&pos) {
                [60, 110, 60]
            } else if pos.s < 0.05 || pos.s > t.length() - 0.05 {
                [220, 30, 30]
            } else if pos.distance_from_center() < 0.02 {
                [230, 150, 0]
            } else {
                [70, 70, 70]
            };
            img.put_pixel(px, py, image::Rgb(c));
        }
    }
    img
}

/// CPU time this thread has run, seconds (Linux `schedstat`).
fn thread_cpu_s() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}
