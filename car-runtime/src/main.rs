//! `car-runtime`: the on-car daemon and its tools. Only argument parsing and
//! wiring live here; the loop, sources and safety rules are in the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use car_runtime::config::{BackendChoice, Config, SourceKind};
use car_runtime::control::Summary;
use car_runtime::daemon::{self, RunOptions};

mod bench;
mod check;

#[global_allocator]
static GLOBAL: car_runtime::arena::ArenaAlloc = car_runtime::arena::ArenaAlloc;

/// One slab of the frame arena (it has four). tract's DeepRacer shallow
/// network takes 372 kB a frame at peak; untouched pages never become resident.
const ARENA_SLAB_BYTES: usize = 8 << 20;

#[derive(Parser)]
#[command(
    name = "car-runtime",
    version,
    about = "Camera -> policy -> PWM for DeepRacer-class cars"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (or, with --sim, the simulated car).
    Run(RunArgs),
    /// Load a model with each available backend and run one frame through it.
    CheckModel(check::CheckArgs),
    /// Measure the whole pipeline on recorded or simulated frames.
    Bench(bench::BenchArgs),
    /// Drive the configured actuators to neutral and exit.
    Neutral {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Import or show the actuator calibration.
    Calibration {
        #[command(subcommand)]
        cmd: CalCmd,
    },
}

#[derive(Subcommand)]
enum CalCmd {
    /// Convert a stock DeepRacer calibration.json into the configured calibration file.
    Import {
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the active calibration.
    Show {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct RunArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    /// Simulated camera and car (forces the sim actuator: nothing real moves).
    #[arg(long)]
    sim: bool,
    /// Built-in track name or a DeepRacer .npy file.
    #[arg(long)]
    track: Option<String>,
    /// Model folder or .tar.gz (default: the config's, else the bundled model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// No web server, simulated time (faster than real time); needs --sim.
    #[arg(long)]
    headless: bool,
    /// Headless: stop after this many laps.
    #[arg(long, default_value_t = 1)]
    laps: usize,
    /// Max speed 0-100 % (default 0: the car does not move until set).
    #[arg(long)]
    max_speed: Option<u8>,
    /// Print a JSON summary on stdout at exit.
    #[arg(long)]
    json: bool,
    /// Record every frame (JPEG) and a JSON-lines log into DIR.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Start in autonomous mode at once.
    #[arg(long)]
    autonomous: bool,
    /// Run this many seconds, then stop through the neutral path.
    #[arg(long)]
    duration: Option<f64>,
    /// Inference backend: auto, tract or onnxruntime.
    #[arg(long)]
    backend: Option<BackendChoice>,
    /// Seed for the simulator.
    #[arg(long)]
    seed: Option<u64>,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() {
    let cli = Cli::parse();
    init_tracing();
    // Before any thread starts: the region lives for the whole process.
    car_runtime::arena::reserve(ARENA_SLAB_BYTES);
    let r = match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::CheckModel(a) => check::main(a),
        Cmd::Bench(a) => bench::main(a),
        Cmd::Neutral { config } => neutral(config.as_deref()),
        Cmd::Calibration { cmd } => match cmd {
            CalCmd::Import { file, config } => cal_import(&file, config.as_deref()),
            CalCmd::Show { config, json } => cal_show(config.as_deref(), json),
        },
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    let (cfg, from) = Config::load_or_default(path)?;
    match from {
        Some(p) => tracing::debug!(config = %p.display(), "config loaded"),
        None => tracing::debug!("no config file; defaults (simulated car)"),
    }
    Ok(cfg)
}

fn neutral(config: Option<&Path>) -> Result<()> {
    let cfg = load_config(config)?;
    // A broken calibration file must not leave the car driving on its last
    // pulse (this runs when the service stops or the package is removed):
    // write the stock neutral instead, then still fail so it gets noticed.
    let (cal, cal_err) = match cfg.actuator.load_calibration() {
        Ok(c) => (c, None),
        Err(e) => (servo_driver::Calibration::stock(), Some(e)),
    };
    if let Some(e) = &cal_err {
        eprintln!("warning: {e}; writing the stock DeepRacer neutral instead");
    }
    // Opening the driver puts neutral on the wire; write it once more
    // explicitly so the exit code reflects the write itself.
    let mut d = servo_driver::config::open_with_calibration(&cfg.actuator, cal, None)
        .with_context(|| format!("opening the {} actuator", cfg.actuator.backend.as_str()))?;
    let p = d.neutral().context("writing neutral")?;
    println!(
        "neutral: steering {} ns, throttle {} ns ({})",
        p.steering_ns,
        p.throttle_ns,
        d.backend()
    );
    match cal_err {
        Some(e) => {
            Err(anyhow::anyhow!(e)
                .context("the calibration is unusable (stock neutral was written)"))
        }
        None => Ok(()),
    }
}

fn cal_import(file: &Path, config: Option<&Path>) -> Result<()> {
    let cfg = load_config(config)?;
    let cal = servo_driver::calibration::import_deepracer(file)?;
    let dest = &cfg.actuator.calibration;
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    cal.save(dest)?;
    println!("imported {} -> {}", file.display(), dest.display());
    Ok(())
}

fn cal_show(config: Option<&Path>, json: bool) -> Result<()> {
    let cfg = load_config(config)?;
    let cal = cfg.actuator.load_calibration()?;
    if json {
        println!("{}", cal.to_show_json());
    } else {
        println!("calibration file: {}", cfg.actuator.calibration.display());
        for (name, c) in [("steering", cal.steering), ("throttle", cal.throttle)] {
            println!(
                "{name:9} min {:>8} ns  mid {:>8} ns  max {:>8} ns  polarity {:+}",
                c.min, c.mid, c.max, c.polarity
            );
        }
        println!("period    {} ns", cal.period_ns);
    }
    Ok(())
}

fn run(a: RunArgs) -> Result<()> {
    let mut cfg = load_config(a.config.as_deref())?;
    if a.headless && !a.sim && cfg.source.kind != SourceKind::Sim {
        bail!("--headless drives the simulated car: add --sim");
    }
    if a.sim || a.headless {
        cfg.source.kind = SourceKind::Sim;
        // Safety: the simulated car never drives real hardware.
        cfg.actuator.backend = servo_driver::BackendKind::Sim;
    }
    if let Some(t) = &a.track {
        cfg.sim.track = t.clone();
    }
    if let Some(m) = &a.model {
        cfg.model.path = m.display().to_string();
    }
    if let Some(b) = a.backend {
        cfg.model.backend = b;
    }
    if let Some(s) = a.seed {
        cfg.sim.seed = s;
    }
    if let Some(r) = &a.record {
        cfg.record.dir = r.display().to_string();
    }
    let opts = RunOptions {
        headless: a.headless,
        laps: a.laps,
        max_speed: a.max_speed,
        autonomous: a.autonomous,
        duration: a.duration.map(Duration::from_secs_f64),
    };

    servo_driver::failsafe::install_panic_hook();
    servo_driver::failsafe::install_fatal_handlers();
    let guard =
        servo_driver::failsafe::SignalGuard::install().context("installing the signal guard")?;
    let daemon = daemon::assemble(cfg, &opts, Some(guard.stop_flag()))?;
    if let Some(url) = daemon.url() {
        eprintln!("web UI: {url}");
    }
    let outcome = daemon.run()?;
    drop(guard);

    let laps = match (&outcome.laps, a.headless) {
        (Some(r), true) => Some(r),
        (None, true) => bail!("a headless run without lap results"),
        _ => None,
    };
    if a.json {
        let out = match laps {
            Some(r) => headless_json(r, &outcome.summary),
            None => summary_json(&outcome.summary),
        };
        let mut so = std::io::stdout().lock();
        writeln!(so, "{out}")?;
    }
    if let Some(r) = laps {
        if r.laps_completed < a.laps {
            eprintln!(
                "warning: {} of {} laps completed within the step budget ({} steps)",
                r.laps_completed, a.laps, r.steps
            );
        }
    }
    Ok(())
}

fn headless_json(r: &sim::LapReport, s: &Summary) -> serde_json::Value {
    serde_json::json!({
        "laps_completed": r.laps_completed,
        "lap_times_s": r.lap_times_s,
        "offtrack_events": r.offtrack_events,
        "frames": s.frames,
        "latency_ms": {
            "p50": s.stages.total.percentile_ms(50.0),
            "p99": s.stages.total.percentile_ms(99.0),
        },
    })
}

fn summary_json(s: &Summary) -> serde_json::Value {
    serde_json::json!({
        "frames": s.frames,
        "dropped": s.dropped,
        "fps": s.fps,
        "mode": s.mode.as_str(),
        "estop": s.estop,
        "end": s.end,
        "elapsed_s": s.elapsed_s,
        "inference_errors": s.inference_errors,
        "actuator_errors": s.actuator_errors,
        "bad_commands": s.bad_commands,
        "source_errors": s.source_errors,
        "latency_ms": {
            "p50": s.stages.total.percentile_ms(50.0),
            "p99": s.stages.total.percentile_ms(99.0),
        },
        "capture_to_pwm_ms": {
            "p50": s.stages.capture_to_pwm.percentile_ms(50.0),
            "p99": s.stages.capture_to_pwm.percentile_ms(99.0),
        },
        "recorded": s.record.map(|r| r.recorded),
        "record_dropped": s.record.map(|r| r.dropped),
        "last_pulses": s.last_pulses.map(|p| serde_json::json!({"steering_ns": p.steering_ns, "throttle_ns": p.throttle_ns})),
    })
}
