//! Imitation of the simulator's expert with DAgger, training a CNN with burn.
//!
//! Iteration 0 drives the expert with slowly varying steering noise, so the
//! first data already shows recoveries. Every later iteration lets the
//! network drive (mixed with the expert with a probability that halves each
//! time) and the expert labels every state the car visits; the network then
//! trains on everything collected so far. After each iteration the network
//! drives one lap of every training track (no randomisation); the latest
//! network that
//! finishes them all without leaving the track (else the best try) is
//! the one exported. Domain randomisation is on by default, so the network
//! keys on the road's shape rather than one room's colours.
//!
//! One iteration runs in phases, each in its own file so that each reads on
//! its own: `setup` builds or resumes the run, `collect` drives the cars with
//! the mixed policy while the expert labels every state they visit and the
//! dataset grows by them, `fit` is the optimiser steps on everything
//! collected so far, `check` drives the check laps and keeps the best
//! network, and `save` writes the checkpoint. `train` here only sequences
//! them, in the order a seeded run depends on. PPO shares the pieces below
//! that are not DAgger's own: the seeded devices, the run clock, `normal`
//! and the check laps.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use policy::{ActionMapper, ActionSpace};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sim::{Expert, Randomization, Sim, Track};

use crate::actions::{Label, Targets};
use crate::dataset::{Batch, Dataset};
use crate::net::{Net, NetKind};

mod check;
mod collect;
mod fit;
mod save;
mod setup;

pub(crate) use check::{check_laps, Check};
use collect::Car;

/// Settings for one training run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub tracks: Vec<Track>,
    pub net: NetKind,
    pub space: ActionSpace,
    pub seed: u64,
    /// Wall-clock budget for the whole run, including earlier runs of a
    /// resumed one. No iteration starts that would not fit.
    pub time_budget: Duration,
    pub max_iterations: usize,
    /// Expert samples collected in iteration 0.
    pub first_samples: usize,
    /// Samples collected in each later iteration.
    pub samples_per_iteration: usize,
    /// Optimiser steps after iteration 0's collection, then after each later one.
    pub first_train_steps: usize,
    pub train_steps: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// Simulated cars driven side by side (one network call for all).
    pub parallel: usize,
    /// Steps before a car starts a fresh episode elsewhere on the track.
    pub episode_steps: usize,
    /// Max-speed settings (0-1) drawn per episode while collecting: the
    /// image does not show speed, so the network must steer at all of them.
    pub speed_scale: (f64, f64),
    /// Max-speed setting of the laps that pick the best network.
    pub eval_speed_scale: f64,
    pub randomization: Randomization,
    /// Flip images left-right (and steering) at random when the action
    /// space is symmetric.
    pub mirror: bool,
    /// Where checkpoints go (resume reads them); `None` keeps none.
    pub checkpoint_dir: Option<PathBuf>,
}

impl TrainConfig {
    /// Defaults tuned on a 2-core laptop-class CPU: the small network laps
    /// re:Invent 2018 after about five minutes.
    pub fn new(tracks: Vec<Track>, net: NetKind, space: ActionSpace) -> TrainConfig {
        let cost = match net {
            NetKind::Small => 1,
            NetKind::Shallow => 4,
        };
        TrainConfig {
            tracks,
            net,
            space,
            seed: 1,
            time_budget: Duration::from_secs(8 * 60),
            max_iterations: 1000,
            first_samples: 6000,
            samples_per_iteration: 3000,
            first_train_steps: 1200 / cost,
            train_steps: 300 / cost,
            batch: 64,
            learning_rate: 1e-3,
            parallel: 16,
            episode_steps: 300,
            speed_scale: (0.4, 0.8),
            eval_speed_scale: 0.6,
            randomization: Randomization::standard(),
            mirror: true,
            checkpoint_dir: None,
        }
    }
}

/// One iteration's figures, for the progress line, the report and the plot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterStats {
    pub iteration: usize,
    pub samples: usize,
    /// Probability that the expert drove a step while collecting.
    pub expert_mix: f64,
    /// Off-track events per 1000 collected steps (the network's own
    /// mistakes, once it drives).
    pub offtrack_per_1000: f64,
    /// Mean training loss over this iteration's optimiser steps.
    pub loss: f64,
    pub train_steps_total: usize,
    /// Mean lap progress (%) of the check laps, one per training track.
    pub eval_progress: f64,
    pub eval_laps: usize,
    pub eval_offtrack: u32,
    /// Mean time of the completed check laps, seconds.
    pub eval_lap_time_s: Option<f64>,
    pub elapsed_s: f64,
}

impl IterStats {
    /// Whether every check lap finished without leaving the track.
    pub fn clean(&self) -> bool {
        self.eval_progress >= 100.0 && self.eval_offtrack == 0
    }

    /// Higher is better. Any clean iteration beats every unclean one, and
    /// the latest clean one wins: it learnt from more of its own states,
    /// and the check-lap times of clean iterations differ by noise (a few
    /// percent). Unclean ones rank by progress less 10 % per off-track.
    pub fn score(&self) -> f64 {
        if self.clean() {
            1e6 + self.iteration as f64
        } else {
            self.eval_progress - 10.0 * self.eval_offtrack as f64
        }
    }
}

/// What the progress callback sees.
#[derive(Debug)]
pub enum Progress<'a> {
    Collecting {
        iteration: usize,
        samples: usize,
    },
    Training {
        iteration: usize,
        step: usize,
        steps: usize,
        loss: f64,
    },
    Iteration(&'a IterStats),
}

/// A finished run.
pub struct Trained {
    /// The best network by the check laps (inference form, no autodiff).
    pub net: Net,
    pub best_iteration: usize,
    pub history: Vec<IterStats>,
    pub samples: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no tracks to train on")]
    NoTracks,
    #[error("{0}")]
    Checkpoint(String),
    #[error("training budget too small: not even the first iteration fits in {0:?}")]
    NoTime(Duration),
}

/// The expert's label for the car's current state, and the speed it wants
/// (m/s) at max-speed setting `scale`.
pub fn expert_label(sim: &Sim, scale: f64) -> (Label, f64) {
    let car = sim.config().car;
    let throttle = curve_throttle(sim);
    let speed = (throttle * scale * car.max_speed_mps).max(0.3);
    let a = Expert::new(speed.max(sim.car().speed)).act(sim);
    let label = Label {
        steer: (a.steering_deg / car.max_steering_deg).clamp(-1.0, 1.0) as f32,
        throttle: throttle as f32,
    };
    (label, speed)
}

/// Throttle (fraction of the max-speed setting) for the road ahead: full on
/// straights, down to 60 % before the tightest bends.
fn curve_throttle(sim: &Sim) -> f64 {
    let track = sim.track();
    let s = sim.track_pos().s;
    let (_, h0) = track.point_at(s);
    let mut turn: f64 = 0.0;
    for k in 1..=6 {
        let (_, h) = track.point_at(s + 0.25 * k as f64);
        turn = turn.max(sim::sim::wrap_angle(h - h0).abs());
    }
    1.0 - 0.4 * (turn / 60f64.to_radians()).min(1.0)
}

/// Checkpoint state written after every iteration.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointState {
    net: NetKind,
    outputs: usize,
    seed: u64,
    iteration: usize,
    samples: usize,
    chunks: Vec<String>,
    best_iteration: Option<usize>,
    history: Vec<IterStats>,
}

/// The `algo` recorded in `state.json`.
const ALGO: &str = "dagger";

/// What one iteration does, by its number: iteration 0 lets the expert drive
/// alone with strong steering noise, so the first data already shows
/// recoveries; later ones hand the car to the network more each time.
struct Plan {
    /// Probability that the expert drives a step.
    expert_mix: f64,
    /// Amplitude of the expert's steering noise.
    noise_amp: f64,
    samples: usize,
    train_steps: usize,
}

impl Plan {
    fn for_iteration(cfg: &TrainConfig, iteration: usize) -> Plan {
        let first = iteration == 0;
        Plan {
            expert_mix: if first {
                1.0
            } else {
                0.5f64.powi(iteration as i32).max(0.02)
            },
            noise_amp: if first { 0.5 } else { 0.15 },
            samples: if first {
                cfg.first_samples
            } else {
                cfg.samples_per_iteration
            },
            train_steps: if first {
                cfg.first_train_steps
            } else {
                cfg.train_steps
            },
        }
    }
}

/// Everything that lives from one iteration to the next except the network
/// being trained, which passes through the phases by value (burn's optimiser
/// step takes it and hands back the new one).
struct Run<'c> {
    cfg: &'c TrainConfig,
    clock: RunClock,
    /// The inference device (collection, check laps).
    device: Device,
    /// The autodiff device the network trains on.
    train_device: Device,
    targets: Targets,
    mapper: ActionMapper,
    mirror: bool,
    optim: ModuleOptimizer,
    /// Every labelled state collected so far, earlier runs' included.
    data: Dataset,
    history: Vec<IterStats>,
    /// The checkpoint's data files, one per iteration.
    chunks: Vec<String>,
    first_iteration: usize,
    /// Score, iteration and network of the best iteration so far.
    best: Option<(f64, usize, Net)>,
    rng: ChaCha8Rng,
    cars: Vec<Car>,
    /// One camera frame per car, rendered side by side for one network call.
    frames: Vec<u8>,
    batch: Batch,
    last_iter_s: Option<f64>,
    /// Episodes started so far; with the run's seed, each one's simulator
    /// seed.
    episode: u64,
}

impl Run<'_> {
    /// Whether another iteration of the last one's length (with 10 % to
    /// spare) would overrun the time budget. Do not start what cannot
    /// finish: the exported network is the best of the iterations that did.
    fn out_of_time(&self) -> bool {
        let estimate = self.last_iter_s.unwrap_or(0.0) * 1.1;
        !self.history.is_empty()
            && self.clock.elapsed() + estimate > self.cfg.time_budget.as_secs_f64()
    }

    fn finish(self) -> Result<Trained, TrainError> {
        let Some((_, best_iteration, net)) = self.best else {
            return Err(TrainError::NoTime(self.cfg.time_budget));
        };
        Ok(Trained {
            net,
            best_iteration,
            history: self.history,
            samples: self.data.len(),
        })
    }
}

/// Train by DAgger. `progress` sees collection, every optimiser step and
/// every finished iteration. Runs in one process take turns (see
/// [`one_run_at_a_time`]).
pub fn train(
    cfg: &TrainConfig,
    resume: bool,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Trained, TrainError> {
    let _turn = one_run_at_a_time();
    if cfg.tracks.is_empty() {
        return Err(TrainError::NoTracks);
    }
    let (mut run, mut net) = Run::start(cfg, resume)?;
    for iteration in run.first_iteration..cfg.max_iterations {
        if run.out_of_time() {
            break;
        }
        let iter_start = Instant::now();
        let plan = Plan::for_iteration(cfg, iteration);
        let collected = run.collect(&net, iteration, &plan, &mut progress);
        let loss;
        (net, loss) = run.fit(net, iteration, plan.train_steps, &mut progress);
        let stats = run.check(iteration, &net, &plan, &collected, loss);
        run.save(iteration, &net, collected.from, &stats)?;
        progress(Progress::Iteration(&stats));
        run.history.push(stats);
        run.last_iter_s = Some(iter_start.elapsed().as_secs_f64());
    }
    run.finish()
}

/// Held by every training run for its whole length. burn's device seed is
/// one random stream for the whole process: two runs at once (a program
/// that trains twice on threads, or parallel tests) would draw from each
/// other's stream, and neither would be the run its seed names, nor resume
/// to the same figures. A run that panicked leaves no state behind that the
/// next one reads, so a poisoned lock is taken as it is.
pub(crate) fn one_run_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The inference device and the autodiff one, seeded before any network
/// is built: every network a run builds draws its weights from the run's
/// seed.
pub(crate) fn seeded_devices(seed: u64) -> (Device, Device) {
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    device.seed(seed);
    train_device.seed(seed);
    (device, train_device)
}

/// A run's wall clock. Earlier runs of a resumed one count too: against
/// the time budget and in the reported times.
pub(crate) struct RunClock {
    start: Instant,
    /// Seconds that the earlier runs of a resumed one spent.
    pub(crate) before: f64,
}

impl RunClock {
    pub(crate) fn start() -> RunClock {
        RunClock {
            start: Instant::now(),
            before: 0.0,
        }
    }

    pub(crate) fn elapsed(&self) -> f64 {
        self.before + self.start.elapsed().as_secs_f64()
    }
}

/// Standard normal (Box-Muller) from the run's seeded generator.
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = rng.random_range(1e-12..1.0);
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}
