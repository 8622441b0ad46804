//! Daemon assembly: from a [`Config`] and the run's options to a control
//! loop with its source, model, wheels, recorder, model loader and web UI,
//! wired as `car-runtime run` wires them. `main.rs` only turns arguments
//! into these two values and prints the outcome; tests call [`assemble`]
//! and [`Daemon::run`] directly, so the wiring itself is under test.
//!
//! Process-wide fail-safe set-up (panic hook, fatal-signal handlers, the
//! SIGTERM guard) is not done here: it is once per process, and the caller
//! passes the guard's stop flag in.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::arbiter::DriveMode;
use crate::commands::Shared;
use crate::config::{Config, SourceKind};
use crate::control::{ControlLoop, LoopClock, LoopOptions, Summary};
use crate::frame::{FrameSource, PixelFormat};
use crate::pipeline::{self, PolicyBrain, ServoWheels};
use crate::source::sim::{SimOptions, SimSource};

/// What a run adds to the configuration (the `run` flags that are not
/// config keys).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// No web server, simulated time (faster than real time); sim only.
    pub headless: bool,
    /// Headless: stop after this many laps.
    pub laps: usize,
    /// Max speed 0-100 % at start (None: 0, the car does not move until set).
    pub max_speed: Option<u8>,
    /// Start in autonomous mode at once (headless runs always do).
    pub autonomous: bool,
    /// Stop through the neutral path after this long.
    pub duration: Option<Duration>,
}

/// An assembled daemon, not yet running.
pub struct Daemon {
    lp: ControlLoop,
    web: Option<web_ui::WebHandle>,
    _loader: Option<Arc<pipeline::ModelLoader>>,
    _battery: Option<crate::battery::BatteryMonitor>,
    /// Dropped after the loop has ended: the status LEDs go dark last.
    _lights: Option<crate::lights::Lights>,
    sim_status: Option<Arc<crate::source::sim::SimStatus>>,
    shared: Arc<Shared>,
}

/// How a run ended.
pub struct Outcome {
    pub summary: Summary,
    /// The simulator's lap results (sim runs only).
    pub laps: Option<sim::LapReport>,
}

impl Daemon {
    /// The web UI's address, when it started.
    pub fn url(&self) -> Option<String> {
        self.web.as_ref().map(|h| h.url())
    }

    /// The state shared with the loop (commands in, telemetry out).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Run the control loop on its own thread until it ends (laps done,
    /// duration, a stop signal), then stop the web UI.
    pub fn run(self) -> Result<Outcome> {
        let Daemon {
            lp,
            web,
            _loader,
            _battery,
            _lights,
            sim_status,
            shared: _,
        } = self;
        let handle = lp.spawn()?;
        let summary = handle.join().map_err(|_| {
            anyhow::anyhow!("control loop panicked (neutral written by the panic hook)")
        })?;
        drop(web);
        let laps = sim_status.map(|s| {
            s.report
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_else(|| sim::LapReport {
                    track: String::new(),
                    laps_completed: 0,
                    lap_times_s: Vec::new(),
                    offtrack_events: 0,
                    steps: 0,
                })
        });
        Ok(Outcome { summary, laps })
    }
}

/// Build the daemon `cfg` describes. `stop` is the SIGTERM guard's flag
/// (None in tests that end runs by laps or duration).
pub fn assemble(
    mut cfg: Config,
    run: &RunOptions,
    stop: Option<servo_driver::failsafe::StopFlag>,
) -> Result<Daemon> {
    if run.headless && cfg.source.kind != SourceKind::Sim {
        bail!("--headless drives the simulated car: add --sim");
    }
    if run.headless {
        // Safety: the simulated car never drives real hardware.
        cfg.actuator.backend = servo_driver::BackendKind::Sim;
    }
    if let Some(p) = run.max_speed {
        if p > 100 {
            bail!("--max-speed: {p} is not 0-100");
        }
    }

    // Model first: a headless run with a broken model is an error; the
    // daemon starts without one (stays stopped) so a new one can be uploaded.
    let backend = pipeline::init_backend(cfg.model.backend, &cfg.model.onnxruntime_library);
    let mut brain = load_brain(&cfg, &backend, run.headless)?;

    let link = Arc::new(servo_driver::sim_link::SimLink::default());
    let driver = servo_driver::open(&cfg.actuator, Some(link.clone()))
        .with_context(|| format!("opening the {} actuator", cfg.actuator.backend.as_str()))?;
    let wheels = ServoWheels {
        driver,
        actuator: cfg.actuator.clone(),
    };

    let (source, sim_status) = open_source(&cfg, run, link)?;
    let frame_hint = match cfg.source.kind {
        SourceKind::Sim if run.headless => Some((160, 120, PixelFormat::Gray8)),
        SourceKind::Sim => Some((cfg.source.width, cfg.source.height, PixelFormat::Rgb8)),
        _ => None,
    };
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
    let opts = LoopOptions {
        clock: if run.headless {
            LoopClock::Source
        } else {
            LoopClock::Monotonic
        },
        duration: run.duration,
        publish_frames: !run.headless,
        timeouts: crate::arbiter::Timeouts {
            stall_ns: cfg.control.stall_timeout_ms * 1_000_000,
            manual_ns: cfg.control.manual_timeout_ms * 1_000_000,
        },
        ..LoopOptions::default()
    };
    let brain_box: Option<Box<dyn crate::brain::Brain>> =
        brain.map(|b| Box::new(b) as Box<dyn crate::brain::Brain>);
    if let Some(b) = &brain_box {
        crate::web::set_active_model(&shared, b.origin(), b.backend());
    }
    let mut lp = ControlLoop::new(source, brain_box, Box::new(wheels), shared.clone(), opts);
    lp.signal = stop;
    lp.notifier = crate::notify::Notifier::from_env();
    if !cfg.record.dir.is_empty() {
        let rec = crate::recorder::Recorder::start(
            Path::new(&cfg.record.dir),
            cfg.record.pool_frames,
            frame_capacity,
            cfg.record.jpeg_quality,
        )?;
        tracing::info!(dir = %cfg.record.dir, "recording");
        lp.recorder = Some(rec);
    }
    if let Some(p) = run.max_speed {
        lp.arbiter.set_max_speed(p);
    }
    if run.autonomous || run.headless {
        // On the loop's clock: the stall bound runs from now.
        let t0 = if run.headless {
            0
        } else {
            crate::clock::monotonic_ns()
        };
        lp.arbiter.select(t0, DriveMode::Autonomous);
        lp.arbiter.start(t0).ok();
    }
    if let Some(n) = &lp.notifier {
        n.ready();
    }

    // The web server runs on its own threads; never for headless runs.
    let mut web = None;
    let mut loader = None;
    let mut battery = None;
    let mut lights = None;
    if !run.headless {
        // A gauge that cannot be found is logged, never fatal: the car
        // drives without a battery figure.
        let state = match crate::battery::BatteryMonitor::start(&cfg.battery) {
            Ok((m, state)) => {
                battery = m;
                state
            }
            Err(e) => {
                tracing::error!("{e}; the phone shows no battery level");
                crate::battery::BatteryState::absent()
            }
        };
        // Status LEDs and tail light: their own thread and the web's, best
        // effort; a board without them drives the same.
        let phone = Arc::new(crate::lights::PhoneSeen::default());
        let period_ns = cfg
            .actuator
            .load_calibration()
            .map(|c| c.period_ns)
            .unwrap_or_else(|_| servo_driver::Calibration::stock().period_ns);
        lights = crate::lights::Lights::start(
            &cfg.lights,
            &cfg.actuator.sysfs,
            &cfg.actuator.calibration,
            period_ns,
            shared.clone(),
            state.clone(),
            phone.clone(),
        );
        if let Ok(b) = &backend {
            loader = Some(Arc::new(pipeline::ModelLoader::start(
                shared.clone(),
                b.clone(),
                frame_hint,
            )?));
        }
        let api = crate::web::RuntimeApi::new(
            shared.clone(),
            cfg.actuator.clone(),
            backend.as_ref().ok().cloned(),
            loader.clone(),
            cfg.source.kind == SourceKind::Sim,
            sim_status.clone(),
            state,
        )
        .with_lights(lights.as_ref().and_then(|l| l.tail()), phone);
        match web_ui::start(cfg.web.clone(), Arc::new(api)) {
            Ok(h) => web = Some(h),
            Err(e) => tracing::error!(error = %e, "web UI did not start; the car runs without it"),
        }
    }
    Ok(Daemon {
        lp,
        web,
        _loader: loader,
        _battery: battery,
        _lights: lights,
        sim_status,
        shared,
    })
}

/// The configured model on the chosen backend, or None (the car stays
/// stopped until one is uploaded). Headless runs fail instead.
fn load_brain(
    cfg: &Config,
    backend: &std::result::Result<policy::Backend, policy::BackendError>,
    headless: bool,
) -> Result<Option<PolicyBrain>> {
    let model_path = (!cfg.model.path.is_empty()).then(|| PathBuf::from(&cfg.model.path));
    let b = match backend {
        Ok(b) => b,
        Err(e) if headless => bail!("inference backend: {e}"),
        Err(e) => {
            tracing::error!(error = %e, "no inference backend; the car stays stopped");
            return Ok(None);
        }
    };
    // A model from outside (config or --model) is checked in a limited
    // child first, as uploads are: a hostile file must not take the daemon
    // down at start-up. The bundled model is ours; a headless run drives
    // only the simulator (and under qemu-user, as the arm64 package test
    // runs it, no child binary can be started).
    let loaded = model_path
        .as_deref()
        .filter(|_| !headless)
        .map_or(Ok(()), |p| {
            pipeline::ModelLoader::check_first(p, b)
                .map(drop)
                .map_err(|why| anyhow::anyhow!("{}: {why}", p.display()))
        })
        .and_then(|()| Ok(pipeline::load_model(model_path.as_deref(), b)?));
    match loaded {
        Ok(m) => {
            tracing::info!(model = %m.source.display(), backend = m.policy.backend_name(), load_ms = format!("{:.1}", m.load_ms), "model loaded");
            Ok(Some(PolicyBrain::new(m)))
        }
        Err(e) if headless => Err(e).context("loading the model"),
        Err(e) => {
            tracing::error!(error = %e, "model did not load; the car stays stopped until a model loads");
            Ok(None)
        }
    }
}

type SimStatusHandle = Option<Arc<crate::source::sim::SimStatus>>;

fn open_source(
    cfg: &Config,
    run: &RunOptions,
    link: Arc<servo_driver::sim_link::SimLink>,
) -> Result<(Box<dyn FrameSource>, SimStatusHandle)> {
    Ok(match cfg.source.kind {
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
            let (w, h, ch) = if run.headless {
                (160, 120, sim::Channels::Gray)
            } else {
                (cfg.source.width, cfg.source.height, sim::Channels::Rgb)
            };
            let per_lap = ((track.length() / 0.3) * sim::STEP_HZ).max(1000.0) as u64;
            let s = SimSource::new(
                track,
                link,
                SimOptions {
                    width: w,
                    height: h,
                    channels: ch,
                    real_time: !run.headless && cfg.sim.real_time,
                    laps: run.headless.then_some(run.laps),
                    max_steps: run.headless.then_some(per_lap * run.laps.max(1) as u64),
                    seed: cfg.sim.seed,
                },
            );
            let status = s.status();
            (Box::new(s), Some(status))
        }
        SourceKind::Replay => (
            Box::new(crate::source::replay::ReplaySource::open(
                Path::new(&cfg.source.replay_dir),
                cfg.source.replay_rate,
                cfg.source.replay_loop,
            )?),
            None,
        ),
        SourceKind::V4l2 => {
            let src = crate::source::v4l2::V4l2Source::open(&cfg.source.v4l2())
                .map_err(|e| anyhow::anyhow!("camera: {e}"))?;
            (Box::new(src), None)
        }
    })
}
