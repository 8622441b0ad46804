use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use policy::{Backend, BackendChoice};
use sim::Track;
use trainer::dagger::{self, IterStats, TrainConfig};
use trainer::features::FeatureSpec;
use trainer::{eval, export, report};

#[derive(Parser)]
#[command(
    name = "car-trainer",
    about = "Train DeepRacer-compatible models from the simulator, on a laptop CPU"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Imitation of the simulator's expert driver with DAgger; writes
    /// model.onnx, model_metadata.json, report.json and curves.svg into --out.
    Train {
        /// Track names or .npy paths (repeat or comma-separate); default: every built-in track.
        #[arg(long, value_delimiter = ',')]
        track: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        /// Wall-clock budget in minutes; training stops after the iteration that crosses it.
        #[arg(long, default_value_t = 5.0)]
        time_budget: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Network: `linear` (pooled image readout) or `mlp` (one fixed random ReLU layer).
        #[arg(long, default_value = "mlp")]
        net: String,
        /// Hidden units for `--net mlp`.
        #[arg(long, default_value_t = 256)]
        hidden: usize,
        /// Image pooling factor (160x120 / pool).
        #[arg(long, default_value_t = 8)]
        pool: usize,
        #[arg(long, default_value_t = 8)]
        iterations: usize,
        #[arg(long, default_value_t = 12000)]
        steps_per_iteration: usize,
        #[arg(long, default_value_t = 1e-4)]
        lambda: f64,
        /// Speed range of the continuous action space, m/s (`low,high`).
        #[arg(long, value_delimiter = ',', default_values_t = vec![1.0, 2.0])]
        speed: Vec<f64>,
        /// Turn domain randomisation off (on by default).
        #[arg(long)]
        no_randomization: bool,
    },
    /// Drive laps with an exported model through the car's own preprocessing
    /// and action mapping, as the DeepRacer console's evaluation.
    Eval {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        track: String,
        #[arg(long, default_value_t = 3)]
        laps: usize,
        /// Max-speed setting in percent, as on the car.
        #[arg(long, default_value_t = 50.0)]
        max_speed: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value = "tract")]
        backend: String,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Cli::parse().cmd {
        Cmd::Train {
            track,
            out,
            time_budget,
            seed,
            net,
            hidden,
            pool,
            iterations,
            steps_per_iteration,
            lambda,
            speed,
            no_randomization,
        } => {
            let hidden = match net.as_str() {
                "linear" => 0,
                "mlp" => hidden,
                other => bail!("--net {other}: expected `linear` or `mlp`"),
            };
            if speed.len() != 2 || speed[1] <= speed[0] || speed[0] <= 0.0 {
                bail!("--speed: expected `low,high` with 0 < low < high, got {speed:?}");
            }
            if pool == 0 || 120 % pool != 0 || 160 % pool != 0 {
                bail!("--pool {pool}: must divide 160 and 120");
            }
            let names: Vec<String> = if track.is_empty() {
                Track::builtin_names()
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                track
            };
            let tracks = names
                .iter()
                .map(|n| Track::resolve(n).with_context(|| format!("--track {n}")))
                .collect::<Result<Vec<_>>>()?;
            let mut cfg = TrainConfig {
                tracks,
                seed,
                time_budget: Duration::from_secs_f64(time_budget * 60.0),
                max_iterations: iterations,
                steps_per_iteration,
                spec: FeatureSpec {
                    pool,
                    ..FeatureSpec::DEFAULT
                },
                hidden,
                lambda,
                ..TrainConfig::default()
            };
            if no_randomization {
                cfg.randomization = sim::Randomization::none();
            }
            let budget_s = cfg.time_budget.as_secs_f64();
            let (model, history) = dagger::train(&cfg, |s| progress_line(s, iterations, budget_s))?;
            let space = export::action_space(30.0, (speed[0], speed[1]));
            export::write(&out, &model, space)
                .with_context(|| format!("writing {}", out.display()))?;
            report::write(&out, &cfg, &names, &history)?;
            eprintln!("wrote {}", out.display());
        }
        Cmd::Eval {
            model,
            track,
            laps,
            max_speed,
            seed,
            backend,
            json,
        } => {
            let choice = match backend.as_str() {
                "tract" => BackendChoice::Tract,
                "onnxruntime" => BackendChoice::OnnxRuntime,
                "auto" => BackendChoice::Auto,
                other => bail!("--backend {other}: expected tract, onnxruntime or auto"),
            };
            if !(0.0..=100.0).contains(&max_speed) {
                bail!("--max-speed {max_speed}: expected 0-100");
            }
            let backend = Backend::init(choice, None)?;
            let t = Track::resolve(&track).with_context(|| format!("--track {track}"))?;
            let r = eval::evaluate(&model, &backend, &t, laps, max_speed / 100.0, seed)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{}: {}/{} laps, times {:?} s, {} off-track, mean progress {:.1} %",
                    r.track,
                    r.laps_completed,
                    laps,
                    r.lap_times_s,
                    r.offtrack_events,
                    r.progress_mean
                );
            }
        }
    }
    Ok(())
}

/// One line per iteration: a progress bar, the figures, and an ETA from
/// whichever runs out first, iterations or the time budget.
fn progress_line(s: &IterStats, iterations: usize, budget_s: f64) {
    let done = (s.iteration + 1) as f64;
    let by_iter = s.elapsed_s / done * (iterations as f64 - done);
    let eta = by_iter.min((budget_s - s.elapsed_s).max(0.0));
    let frac = (done / iterations as f64)
        .max(s.elapsed_s / budget_s)
        .min(1.0);
    let bar: String = (0..20)
        .map(|i| if (i as f64) < frac * 20.0 { '#' } else { '.' })
        .collect();
    eprintln!(
        "[{bar}] iter {}/{} samples {} expert {:.2} steer-error {:.3} off-track {:.4} {:.0}s ETA {:.0}s",
        s.iteration + 1,
        iterations,
        s.samples,
        s.expert_mix,
        s.steer_mae,
        s.offtrack_rate,
        s.elapsed_s,
        eta
    );
}
