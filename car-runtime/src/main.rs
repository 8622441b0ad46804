//! `car-runtime`: the on-car daemon and its tools. Only argument parsing and
//! wiring live here; the loop, sources and safety rules are in the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use car_runtime::arbiter::DriveMode;
use car_runtime::commands::Shared;
use car_runtime::config::{BackendChoice, Config, SourceKind};
use car_runtime::control::{ControlLoop, LoopClock, LoopOptions, Summary};
use car_runtime::frame::{FrameSource, PixelFormat};
use car_runtime::pipeline::{self, PolicyBrain, ServoWheels};
use car_runtime::source::sim::{SimOptions, SimSource};

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
    if let Some(p) = a.max_speed {
        if p > 100 {
            bail!("--max-speed: {p} is not 0-100");
        }
    }

    servo_driver::failsafe::install_panic_hook();
    servo_driver::failsafe::install_fatal_handlers();
    let guard =
        servo_driver::failsafe::SignalGuard::install().context("installing the signal guard")?;

    // Model first: a headless run with a broken model is an error; the
    // daemon starts without one (stays stopped) so a new one can be uploaded.
    let backend = pipeline::init_backend(cfg.model.backend, &cfg.model.onnxruntime_library);
    let model_path = (!cfg.model.path.is_empty()).then(|| PathBuf::from(&cfg.model.path));
    let brain: Option<PolicyBrain> = match &backend {
        // A model from outside (config or --model) is checked in a limited
        // child first, as uploads are: a hostile file must not take the
        // daemon down at start-up. The bundled model is ours; a headless run
        // drives only the simulator (and under qemu-user, as the arm64
        // package test runs it, no child binary can be started).
        Ok(b) => match model_path
            .as_deref()
            .filter(|_| !a.headless)
            .map_or(Ok(()), |p| {
                pipeline::ModelLoader::check_first(p, b)
                    .map(drop)
                    .map_err(|why| anyhow::anyhow!("{}: {why}", p.display()))
            })
            .and_then(|()| Ok(pipeline::load_model(model_path.as_deref(), b)?))
        {
            Ok(m) => {
                tracing::info!(model = %m.source.display(), backend = m.policy.backend_name(), load_ms = format!("{:.1}", m.load_ms), "model loaded");
                Some(PolicyBrain::new(m))
            }
            Err(e) if a.headless => return Err(e).context("loading the model"),
            Err(e) => {
                tracing::error!(error = %e, "model did not load; the car stays stopped until a model loads");
                None
            }
        },
        Err(e) if a.headless => bail!("inference backend: {e}"),
        Err(e) => {
            tracing::error!(error = %e, "no inference backend; the car stays stopped");
            None
        }
    };

    let link = Arc::new(servo_driver::sim_link::SimLink::default());
    let driver = servo_driver::open(&cfg.actuator, Some(link.clone()))
        .with_context(|| format!("opening the {} actuator", cfg.actuator.backend.as_str()))?;
    let wheels = ServoWheels {
        driver,
        actuator: cfg.actuator.clone(),
    };

    let mut sim_status = None;
    let mut sim_report: Option<Box<dyn Fn() -> sim::LapReport + Send>> = None;
    let source: Box<dyn FrameSource> = match cfg.source.kind {
        SourceKind::Sim => {
            let track_name = if cfg.sim.track.is_empty() {
                sim::Track::builtin_names()[0].to_string()
            } else {
                cfg.sim.track.clone()
            };
            let track = sim::Track::resolve(&track_name)?;
            // Headless: model-sized gray frames (what the preprocessor would
            // make of a 640x480 frame anyway) and a step budget so a car that
            // never finishes a lap still ends: 0.3 m/s average, at least
            // 1000 steps a lap.
            let (w, h, ch) = if a.headless {
                (160, 120, sim::Channels::Gray)
            } else {
                (cfg.source.width, cfg.source.height, sim::Channels::Rgb)
            };
            let per_lap = ((track.length() / 0.3) * sim::STEP_HZ).max(1000.0) as u64;
            let s = SimSource::new(
                track,
                link.clone(),
                SimOptions {
                    width: w,
                    height: h,
                    channels: ch,
                    real_time: !a.headless && cfg.sim.real_time,
                    laps: a.headless.then_some(a.laps),
                    max_steps: a.headless.then_some(per_lap * a.laps.max(1) as u64),
                    seed: cfg.sim.seed,
                },
            );
            sim_status = Some(s.status());
            let st = s.status();
            sim_report = Some(Box::new(move || {
                st.report
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .expect("set at creation")
            }));
            Box::new(s)
        }
        SourceKind::Replay => Box::new(car_runtime::source::replay::ReplaySource::open(
            Path::new(&cfg.source.replay_dir),
            cfg.source.replay_rate,
            cfg.source.replay_loop,
        )?),
        SourceKind::V4l2 => open_v4l2(&cfg)?,
    };
    let frame_hint = match cfg.source.kind {
        SourceKind::Sim if a.headless => Some((160, 120, PixelFormat::Gray8)),
        SourceKind::Sim => Some((cfg.source.width, cfg.source.height, PixelFormat::Rgb8)),
        _ => None,
    };
    let mut brain = brain;
    if let (Some(b), Some((w, h, f))) = (brain.as_mut(), frame_hint) {
        b.prepare(w, h, f)?;
    }

    let frame_capacity =
        (cfg.source.width as usize * cfg.source.height as usize * 3).max(640 * 480 * 3);
    let shared = Arc::new(Shared::new(
        1024,
        frame_capacity,
        Arc::new(AtomicBool::new(false)),
    ));
    let simulated = cfg.source.kind == SourceKind::Sim;
    let opts = LoopOptions {
        clock: if a.headless {
            LoopClock::Source
        } else {
            LoopClock::Monotonic
        },
        duration: a.duration.map(Duration::from_secs_f64),
        publish_frames: !a.headless,
        timeouts: car_runtime::arbiter::Timeouts {
            stall_ns: cfg.control.stall_timeout_ms * 1_000_000,
            manual_ns: cfg.control.manual_timeout_ms * 1_000_000,
        },
        ..LoopOptions::default()
    };
    let brain_box: Option<Box<dyn car_runtime::brain::Brain>> =
        brain.map(|b| Box::new(b) as Box<dyn car_runtime::brain::Brain>);
    if let Some(b) = &brain_box {
        car_runtime::web::set_active_model(&shared, b.origin(), b.backend());
    }
    let mut lp = ControlLoop::new(source, brain_box, Box::new(wheels), shared.clone(), opts);
    lp.signal = Some(guard.stop_flag());
    lp.notifier = car_runtime::notify::Notifier::from_env();
    if !cfg.record.dir.is_empty() {
        let rec = car_runtime::recorder::Recorder::start(
            Path::new(&cfg.record.dir),
            cfg.record.pool_frames,
            frame_capacity,
            cfg.record.jpeg_quality,
        )?;
        tracing::info!(dir = %cfg.record.dir, "recording");
        lp.recorder = Some(rec);
    }
    if let Some(p) = a.max_speed {
        lp.arbiter.set_max_speed(p);
    }
    if a.autonomous || a.headless {
        // On the loop's clock: the stall bound runs from now.
        let t0 = if a.headless {
            0
        } else {
            car_runtime::clock::monotonic_ns()
        };
        lp.arbiter.select(t0, DriveMode::Autonomous);
        lp.arbiter.start(t0).ok();
    }
    if let Some(n) = &lp.notifier {
        n.ready();
    }

    // The web server runs on its own threads; never for headless runs.
    let mut web = None;
    let mut _loader = None;
    if !a.headless {
        if let Ok(b) = &backend {
            _loader = Some(Arc::new(pipeline::ModelLoader::start(
                shared.clone(),
                b.clone(),
                frame_hint,
            )?));
        }
        let api = car_runtime::web::RuntimeApi::new(
            shared.clone(),
            cfg.actuator.clone(),
            backend.as_ref().ok().cloned(),
            _loader.clone(),
            simulated,
            sim_status.clone(),
        );
        match web_ui::start(cfg.web.clone(), Arc::new(api)) {
            Ok(h) => {
                eprintln!("web UI: {}", h.url());
                web = Some(h);
            }
            Err(e) => tracing::error!(error = %e, "web UI did not start; the car runs without it"),
        }
    }

    let handle = lp.spawn()?;
    let summary = handle.join().map_err(|_| {
        anyhow::anyhow!("control loop panicked (neutral written by the panic hook)")
    })?;
    drop(web);
    drop(guard);

    if a.json {
        let out = if a.headless {
            let r = sim_report.as_ref().map(|f| f()).expect("headless is sim");
            headless_json(&r, &summary)
        } else {
            summary_json(&summary)
        };
        let mut so = std::io::stdout().lock();
        writeln!(so, "{out}")?;
    }
    if a.headless {
        let r = sim_report.as_ref().map(|f| f()).expect("headless is sim");
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

fn open_v4l2(cfg: &Config) -> Result<Box<dyn FrameSource>> {
    let src = car_runtime::source::v4l2::V4l2Source::open(&cfg.source.v4l2())
        .map_err(|e| anyhow::anyhow!("camera: {e}"))?;
    Ok(Box::new(src))
}
