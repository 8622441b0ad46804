//! `car-trainer`: the trainer's command line (`train`, with DAgger or PPO,
//! and `eval`); each subcommand parses its arguments here and calls the
//! library. `main` only parses and dispatches, one function per subcommand
//! (and per training algorithm), so each reads on its own.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use policy::{ActionSpace, Backend, BackendChoice};
use serde_json::json;
use sim::Track;
use trainer::dagger::{self, IterStats, Progress, TrainConfig};
use trainer::net::NetKind;
use trainer::reward::Reward;
use trainer::{actions, eval, export, ppo, report};

#[derive(Parser)]
#[command(
    name = "car-trainer",
    about = "Train DeepRacer-compatible models from the simulator, on a laptop CPU"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once at start-up: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Train a model: imitation of the simulator's expert driver (DAgger,
    /// the default) or PPO with a DeepRacer reward function; writes
    /// model.onnx, model_metadata.json, report.json and curves.svg into --out
    /// (checkpoints in --out/checkpoint).
    Train(TrainArgs),
    /// Drive laps with an exported model through the car's own preprocessing
    /// and action mapping, as the DeepRacer console's evaluation.
    Eval(EvalArgs),
}

// A subcommand's help text is its variant's doc comment above; the argument
// structs carry none, so that text has one place.
#[derive(Args)]
struct TrainArgs {
    /// Track names or .npy paths (repeat or comma-separate); default: every built-in track.
    #[arg(long, value_delimiter = ',')]
    track: Vec<String>,
    #[arg(long)]
    out: PathBuf,
    /// Wall-clock budget in minutes for the whole run, export and evaluation included.
    #[arg(long, default_value_t = 8.0)]
    time_budget: f64,
    /// `small` (fast, 0.5 MB) or `shallow` (DeepRacer's shallow CNN, 23 MB).
    #[arg(long, default_value = "small")]
    net: String,
    /// `continuous[,steering=LOW:HIGH][,speed=LOW:HIGH]`,
    /// `discrete[,steering=MAX][,steering-granularity=3|5|7][,speed=MAX][,speed-granularity=1|2|3]`,
    /// or a .json file (a model_metadata.json, or a list of {steering_angle, speed}).
    #[arg(long, default_value = "continuous")]
    action_space: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this many DAgger iterations even if time is left.
    #[arg(long)]
    iterations: Option<usize>,
    /// Optimiser steps per iteration (default: by network).
    #[arg(long)]
    train_steps: Option<usize>,
    /// Samples collected per iteration after the first.
    #[arg(long)]
    samples: Option<usize>,
    /// Continue the run whose checkpoint is in --out/checkpoint (written
    /// after every iteration or PPO update); --time-budget counts the
    /// earlier runs too.
    #[arg(long)]
    resume: bool,
    /// Turn domain randomisation off (on by default).
    #[arg(long)]
    no_randomization: bool,
    /// Tracks to evaluate the exported model on afterwards (through the
    /// car's own code), e.g. tracks it never saw.
    #[arg(long, value_delimiter = ',')]
    eval_track: Vec<String>,
    #[arg(long, default_value_t = 3)]
    eval_laps: usize,
    /// Max-speed setting (percent) for the check laps and the evaluation
    /// (and, with PPO, for training).
    #[arg(long, default_value_t = 60.0)]
    max_speed: f64,
    /// `dagger` (imitation of the simulator's expert) or `ppo`
    /// (reinforcement learning with a DeepRacer reward function).
    #[arg(long, default_value = "dagger")]
    algo: String,
    /// PPO reward: a .py file defining reward_function(params) (run
    /// unchanged), or a preset: centre-line, borders, zigzag, progress.
    #[arg(long, default_value = "centre-line")]
    reward: String,
    /// PPO: a deepracer-for-cloud hyperparameters.json (default: the console's).
    #[arg(long)]
    hyperparameters: Option<PathBuf>,
    /// PPO: start from an imitation run's output folder (its checkpoint/best.bpk).
    #[arg(long)]
    init: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// Model folder or .tar.gz (required unless --expert).
    #[arg(long, required_unless_present = "expert")]
    model: Option<PathBuf>,
    /// Drive the simulator's expert instead (the labels the trainer
    /// imitates), for a lap-time baseline at the same max speed.
    #[arg(long, conflicts_with = "model")]
    expert: bool,
    #[arg(long)]
    track: String,
    #[arg(long, default_value_t = 3)]
    laps: usize,
    /// Max-speed setting in percent, as on the car.
    #[arg(long, default_value_t = 60.0)]
    max_speed: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// tract (pure Rust), onnxruntime, or auto (ONNX Runtime when it loads).
    #[arg(long, default_value = "tract")]
    backend: String,
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Cli::parse().cmd {
        Cmd::Train(args) => cmd_train(args),
        Cmd::Eval(args) => cmd_eval(args),
    }
}

/// What `train` settles before either algorithm runs.
struct TrainSetup {
    kind: NetKind,
    space: ActionSpace,
    /// The training tracks as given (or every built-in one), for the report.
    names: Vec<String>,
    tracks: Vec<Track>,
    eval_tracks: Vec<Track>,
    /// The training budget: --time-budget less the time kept for export and
    /// the final evaluation.
    budget: Duration,
}

fn cmd_train(a: TrainArgs) -> Result<()> {
    let kind = NetKind::parse(&a.net)
        .with_context(|| format!("--net {}: expected `small` or `shallow`", a.net))?;
    let space = actions::parse(&a.action_space)?;
    let time_budget = a.time_budget;
    if time_budget.is_nan() || time_budget <= 0.0 {
        bail!("--time-budget {time_budget}: expected minutes > 0");
    }
    let max_speed = a.max_speed;
    if !(1.0..=100.0).contains(&max_speed) {
        bail!("--max-speed {max_speed}: expected 1-100 (percent)");
    }
    let names: Vec<String> = if a.track.is_empty() {
        Track::builtin_names()
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        a.track.clone()
    };
    let tracks = resolve(&names, "--track")?;
    let eval_tracks = resolve(&a.eval_track, "--eval-track")?;
    // Keep time for export and the final evaluation laps.
    let reserve = 10.0 + 4.0 * (eval_tracks.len() * a.eval_laps) as f64;
    let budget = Duration::from_secs_f64((time_budget * 60.0 - reserve).max(1.0));
    let setup = TrainSetup {
        kind,
        space,
        names,
        tracks,
        eval_tracks,
        budget,
    };
    match a.algo.as_str() {
        "dagger" => train_dagger(a, setup),
        "ppo" => train_ppo(a, setup),
        other => bail!("--algo {other}: expected dagger or ppo"),
    }
}

fn train_ppo(a: TrainArgs, s: TrainSetup) -> Result<()> {
    if a.resume && a.init.is_some() {
        bail!("--init with --resume: a resumed run continues its own networks");
    }
    let hyper = match &a.hyperparameters {
        Some(p) => ppo::Hyper::from_file(p).map_err(anyhow::Error::msg)?,
        None => ppo::Hyper::default(),
    };
    let reward_fn = Reward::parse(&a.reward)?;
    let out = &a.out;
    let cfg = ppo::PpoConfig {
        tracks: s.tracks,
        net: s.kind,
        space: s.space.clone(),
        reward: reward_fn,
        hyper,
        seed: a.seed,
        time_budget: s.budget,
        envs: 16,
        max_episode_steps: 2000,
        speed_scale: a.max_speed / 100.0,
        randomization: if a.no_randomization {
            sim::Randomization::none()
        } else {
            sim::Randomization::standard()
        },
        init: a.init.map(|d| d.join("checkpoint").join("best.bpk")),
        checkpoint_dir: Some(out.join("checkpoint")),
    };
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let t0 = std::time::Instant::now();
    let budget_s = s.budget.as_secs_f64();
    let r = ppo::train(&cfg, a.resume, |u| print_update(u, budget_s))?;
    export::write(out, &r.net, s.kind, &s.space)
        .with_context(|| format!("writing the model to {}", out.display()))?;
    let results = evaluate(out, &s.eval_tracks, a.eval_laps, a.max_speed)?;
    let curves = ppo_curves(&r.history);
    let settings = json!({
        "algo": "ppo",
        "tracks": s.names,
        "net": s.kind.as_str(),
        "action_space": a.action_space,
        "reward": a.reward,
        "hyperparameters": cfg.hyper,
        "seed": a.seed,
        "time_budget_min": a.time_budget,
        "max_speed_pct": a.max_speed,
        "randomization": cfg.randomization,
    });
    let extra = json!({
        "best_update": r.best_update,
        "first_clean_check_laps_s": r.first_lap_s,
        "wall_clock_to_export_s": t0.elapsed().as_secs_f64(),
        "evaluation": results,
    });
    report::write(
        out,
        "ppo-cnn",
        settings,
        serde_json::to_value(&r.history)?,
        r.history.last().map(|s| s.elapsed_s),
        extra,
        &curves,
    )
    .with_context(|| format!("writing the report to {}", out.display()))?;
    eprintln!(
        "wrote {} (best update {}; first clean laps of every training track after {})",
        out.display(),
        r.best_update,
        r.first_lap_s.map_or("none".into(), mmss)
    );
    Ok(())
}

/// PPO's progress line on stderr, one per finished update.
fn print_update(u: &ppo::UpdateStats, budget_s: f64) {
    let frac = (u.elapsed_s / budget_s).min(1.0);
    let bar: String = (0..24)
        .map(|i| if (i as f64) < frac * 24.0 { '#' } else { '.' })
        .collect();
    eprintln!(
        "[{bar}] {} elapsed, ETA {} | update {} episodes {} reward {:.1} progress {:.0}% entropy {:.3} | check laps {:.0}% off-track {}{}",
        mmss(u.elapsed_s),
        mmss(budget_s - u.elapsed_s),
        u.update,
        u.episodes,
        u.reward_mean,
        u.progress_mean,
        u.entropy,
        u.eval_progress,
        u.eval_offtrack,
        u.eval_lap_time_s.map_or(String::new(), |t| format!(" lap {t:.2}s"))
    );
}

/// curves.svg of a PPO run: reward, progress and entropy over wall-clock time.
fn ppo_curves(history: &[ppo::UpdateStats]) -> String {
    let pts = |f: &dyn Fn(&ppo::UpdateStats) -> f64| {
        history
            .iter()
            .map(|s| (s.elapsed_s, f(s)))
            .collect::<Vec<_>>()
    };
    report::panels(&[
        report::Panel {
            title: "mean reward per episode",
            colour: "#1f5fbf",
            points: pts(&|s| s.reward_mean),
            log: false,
        },
        report::Panel {
            title: "mean progress per episode %",
            colour: "#1e8449",
            points: pts(&|s| s.progress_mean),
            log: false,
        },
        report::Panel {
            title: "policy entropy",
            colour: "#8e44ad",
            points: pts(&|s| s.entropy),
            log: false,
        },
    ])
}

fn train_dagger(a: TrainArgs, s: TrainSetup) -> Result<()> {
    let out = &a.out;
    let mut cfg = TrainConfig::new(s.tracks, s.kind, s.space.clone());
    cfg.seed = a.seed;
    cfg.time_budget = s.budget;
    if let Some(n) = a.iterations {
        cfg.max_iterations = n;
    }
    if let Some(n) = a.train_steps {
        cfg.train_steps = n;
        cfg.first_train_steps = cfg.first_train_steps.min(4 * n);
    }
    if let Some(n) = a.samples {
        cfg.samples_per_iteration = n;
        cfg.first_samples = cfg.first_samples.min(2 * n);
    }
    cfg.eval_speed_scale = a.max_speed / 100.0;
    if a.no_randomization {
        cfg.randomization = sim::Randomization::none();
    }
    cfg.checkpoint_dir = Some(out.join("checkpoint"));
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;

    let mut bar = Bar::new(
        cfg.time_budget.as_secs_f64(),
        cfg.max_iterations,
        cfg.tracks.len(),
    );
    let trained = dagger::train(&cfg, a.resume, |p| bar.update(p))?;
    bar.finish();
    export::write(out, &trained.net, s.kind, &s.space)
        .with_context(|| format!("writing the model to {}", out.display()))?;

    let results = evaluate(out, &s.eval_tracks, a.eval_laps, a.max_speed)?;
    let settings = json!({
        "tracks": s.names,
        "net": s.kind.as_str(),
        "action_space": a.action_space,
        "seed": a.seed,
        "time_budget_min": a.time_budget,
        "batch": cfg.batch,
        "learning_rate": cfg.learning_rate,
        "train_steps": [cfg.first_train_steps, cfg.train_steps],
        "samples": [cfg.first_samples, cfg.samples_per_iteration],
        "speed_scale": [cfg.speed_scale.0, cfg.speed_scale.1],
        "max_speed_pct": a.max_speed,
        "randomization": cfg.randomization,
        "mirror": cfg.mirror,
    });
    let extra = json!({
        "best_iteration": trained.best_iteration,
        "samples": trained.samples,
        "evaluation": results,
    });
    report::write(
        out,
        "dagger-cnn",
        settings,
        serde_json::to_value(&trained.history)?,
        trained.history.last().map(|s| s.elapsed_s),
        extra,
        &report::svg(&trained.history),
    )
    .with_context(|| format!("writing the report to {}", out.display()))?;
    eprintln!(
        "wrote {} (best iteration {}, {} samples)",
        out.display(),
        trained.best_iteration,
        trained.samples
    );
    Ok(())
}

/// The exported model in `out` on every --eval-track, through the car's own
/// code (tract, as on the car).
fn evaluate(
    out: &Path,
    tracks: &[Track],
    laps: usize,
    max_speed: f64,
) -> Result<Vec<eval::EvalReport>> {
    let backend = Backend::init(BackendChoice::Tract, None)?;
    let mut results = Vec::new();
    for t in tracks {
        let r = eval::evaluate(out, &backend, t, laps, (max_speed / 100.0) as f32, 0)
            .with_context(|| format!("evaluating {} on {}", out.display(), t.name()))?;
        eprintln!(
            "eval {}: {}/{} laps, times {:?} s, {} off-track",
            r.track, r.laps_completed, laps, r.lap_times_s, r.offtrack_events
        );
        results.push(r);
    }
    Ok(results)
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    let choice: BackendChoice = a
        .backend
        .parse()
        .map_err(|e| anyhow::anyhow!("--backend: {e}"))?;
    let max_speed = a.max_speed;
    if !(0.0..=100.0).contains(&max_speed) {
        bail!("--max-speed {max_speed}: expected 0-100");
    }
    let track = &a.track;
    let t = Track::resolve(track).with_context(|| format!("--track {track}"))?;
    let r = match a.model {
        Some(model) if !a.expert => {
            let backend = Backend::init(choice, None)?;
            eval::evaluate(&model, &backend, &t, a.laps, max_speed / 100.0, a.seed)
                .with_context(|| format!("--model {}", model.display()))?
        }
        _ => eval::evaluate_expert(&t, a.laps, max_speed / 100.0, a.seed),
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{}: {}/{} laps, times {:?} s, {} off-track, mean progress {:.1} %",
            r.track, r.laps_completed, a.laps, r.lap_times_s, r.offtrack_events, r.progress_mean
        );
    }
    Ok(())
}

fn resolve(names: &[String], flag: &str) -> Result<Vec<Track>> {
    names
        .iter()
        .map(|n| Track::resolve(n).with_context(|| format!("{flag} {n}")))
        .collect()
}

/// A progress bar on stderr: redrawn in place on a terminal, one line per
/// iteration otherwise (logs, CI). The ETA is whichever ends first, the
/// time budget or the iteration limit at the pace so far.
struct Bar {
    budget_s: f64,
    max_iterations: usize,
    start: std::time::Instant,
    tty: bool,
    tracks: usize,
    offset: f64,
    last: Option<IterStats>,
    drawn: std::time::Instant,
}

impl Bar {
    fn new(budget_s: f64, max_iterations: usize, tracks: usize) -> Bar {
        Bar {
            budget_s,
            max_iterations,
            tracks,
            offset: 0.0,
            start: std::time::Instant::now(),
            tty: std::io::stderr().is_terminal(),
            last: None,
            drawn: std::time::Instant::now(),
        }
    }

    /// Includes the time of earlier runs when resuming.
    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64() + self.offset
    }

    fn eta(&self, elapsed: f64) -> f64 {
        let by_budget = (self.budget_s - elapsed).max(0.0);
        match &self.last {
            Some(s) if s.iteration > 0 => {
                let per = s.elapsed_s / (s.iteration + 1) as f64;
                let left = self.max_iterations.saturating_sub(s.iteration + 1) as f64;
                by_budget.min(per * left)
            }
            _ => by_budget,
        }
    }

    fn line(&self, what: &str) -> String {
        let elapsed = self.elapsed();
        let eta = self.eta(elapsed);
        let frac = (elapsed / (elapsed + eta).max(1e-9)).clamp(0.0, 1.0);
        let bar: String = (0..24)
            .map(|i| if (i as f64) < frac * 24.0 { '#' } else { '.' })
            .collect();
        format!(
            "[{bar}] {:3.0}% {} elapsed, ETA {} | {what}",
            frac * 100.0,
            mmss(elapsed),
            mmss(eta)
        )
    }

    fn update(&mut self, p: Progress<'_>) {
        match p {
            Progress::Iteration(s) => {
                self.last = Some(s.clone());
                self.offset = s.elapsed_s - self.start.elapsed().as_secs_f64();
                let check = format!(
                    "check laps {}/{} {:.0}% off-track {}{}",
                    s.eval_laps,
                    self.tracks,
                    s.eval_progress,
                    s.eval_offtrack,
                    s.eval_lap_time_s
                        .map_or(String::new(), |t| format!(" lap {t:.2}s"))
                );
                let text = self.line(&format!(
                    "iter {} samples {} expert {:.2} loss {:.4} off-track/1k {:.1} {check}",
                    s.iteration, s.samples, s.expert_mix, s.loss, s.offtrack_per_1000
                ));
                if self.tty {
                    eprint!("\r\x1b[2K");
                }
                eprintln!("{text}");
            }
            Progress::Training {
                iteration,
                step,
                steps,
                loss,
            } if self.tty && self.drawn.elapsed() > Duration::from_millis(200) => {
                self.drawn = std::time::Instant::now();
                let text = self.line(&format!(
                    "iter {iteration} training {}/{steps} loss {loss:.4}",
                    step + 1
                ));
                eprint!("\r\x1b[2K{text}");
                let _ = std::io::stderr().flush();
            }
            Progress::Collecting { iteration, samples }
                if self.tty && self.drawn.elapsed() > Duration::from_millis(200) =>
            {
                self.drawn = std::time::Instant::now();
                let text = self.line(&format!("iter {iteration} collecting {samples}"));
                eprint!("\r\x1b[2K{text}");
                let _ = std::io::stderr().flush();
            }
            _ => {}
        }
    }

    fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}

fn mmss(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}
