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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use policy::{ActionMapper, ActionSpace};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sim::{Expert, LapRunner, Randomization, Sim, SimConfig, StartPolicy, Track};

use crate::actions::{Label, Targets};
use crate::checkpoint::{read_state, save_atomic, write_state, STATE_FILE};
use crate::dataset::{Batch, Dataset};
use crate::net::{self, Net, NetKind, INPUT_H, INPUT_LEN, INPUT_W};

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

struct Car {
    sim: Sim,
    scale: f64,
    steps_left: usize,
    noise: f64,
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

/// Train by DAgger. `progress` sees collection, every optimiser step and
/// every finished iteration.
pub fn train(
    cfg: &TrainConfig,
    resume: bool,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Trained, TrainError> {
    if cfg.tracks.is_empty() {
        return Err(TrainError::NoTracks);
    }
    let start = Instant::now();
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    device.seed(cfg.seed);
    train_device.seed(cfg.seed);
    let targets = Targets::new(&cfg.space);
    let mapper = ActionMapper::new(&cfg.space);
    let mirror = cfg.mirror && targets.symmetric();

    let mut net = Net::new(cfg.net, targets.outputs(), &train_device);
    let mut optim = AdamConfig::new().init();
    let mut data = Dataset::default();
    let mut history: Vec<IterStats> = Vec::new();
    let mut chunks: Vec<String> = Vec::new();
    let mut first_iteration = 0;
    let mut elapsed_before = 0.0;
    let mut best: Option<(f64, usize, Net)> = None;

    if resume {
        let dir = cfg
            .checkpoint_dir
            .as_deref()
            .ok_or_else(|| TrainError::Checkpoint("--resume needs a checkpoint folder".into()))?;
        let st = load_state(dir)?;
        if st.net != cfg.net || st.outputs != targets.outputs() {
            return Err(TrainError::Checkpoint(format!(
                "{}: the checkpoint is a {} network with {} outputs; this run asks for {} with {}",
                dir.join(STATE_FILE).display(),
                st.net.as_str(),
                st.outputs,
                cfg.net.as_str(),
                targets.outputs()
            )));
        }
        net = net.try_load_file(dir.join("model.bpk")).map_err(|e| {
            TrainError::Checkpoint(format!("{}: {e}", dir.join("model.bpk").display()))
        })?;
        optim = match AdamConfig::new().init().load(dir.join("optim.bpk")) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("optimiser state not restored ({e}); Adam restarts its moments");
                AdamConfig::new().init()
            }
        };
        for c in &st.chunks {
            data.load_chunk(&dir.join(c))
                .map_err(TrainError::Checkpoint)?;
        }
        if let Some(b) = st.best_iteration {
            let p = dir.join("best.bpk");
            let best_net = Net::new(cfg.net, targets.outputs(), &device)
                .try_load_file(&p)
                .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", p.display())))?;
            let score = st
                .history
                .iter()
                .find(|s| s.iteration == b)
                .map_or(f64::MIN, |s| s.score());
            best = Some((score, b, best_net));
        }
        first_iteration = st.iteration + 1;
        elapsed_before = st.history.last().map_or(0.0, |s| s.elapsed_s);
        chunks = st.chunks;
        history = st.history;
    }
    let elapsed = || elapsed_before + start.elapsed().as_secs_f64();
    let budget = cfg.time_budget.as_secs_f64();

    let mut rng =
        ChaCha8Rng::seed_from_u64(cfg.seed ^ (first_iteration as u64).wrapping_mul(0x9E37_79B9));
    let mut cars: Vec<Car> = (0..cfg.parallel.max(1))
        .map(|i| {
            let sc = SimConfig {
                randomization: cfg.randomization,
                start: StartPolicy::Random,
                start_lateral_jitter_m: 0.15,
                start_heading_jitter_deg: 15.0,
                ..SimConfig::default()
            };
            Car {
                sim: Sim::new(cfg.tracks[i % cfg.tracks.len()].clone(), sc),
                scale: 0.0,
                steps_left: 0,
                noise: 0.0,
            }
        })
        .collect();
    let mut frames = vec![0u8; cars.len() * INPUT_LEN];
    let mut batch = Batch::default();
    let mut last_iter_s: Option<f64> = None;
    let mut episode = (first_iteration as u64) << 32;

    for iteration in first_iteration..cfg.max_iterations {
        // Do not start what cannot finish: the exported network is the best
        // of the iterations that did.
        let estimate = last_iter_s.unwrap_or(0.0) * 1.1;
        if !history.is_empty() && elapsed() + estimate > budget {
            break;
        }
        let iter_start = Instant::now();
        let expert_mix = if iteration == 0 {
            1.0
        } else {
            0.5f64.powi(iteration as i32).max(0.02)
        };
        let noise_amp = if iteration == 0 { 0.5 } else { 0.15 };
        let want = if iteration == 0 {
            cfg.first_samples
        } else {
            cfg.samples_per_iteration
        };
        let infer_net = (expert_mix < 1.0).then(|| net.valid());
        let from = data.len();
        let mut offtrack = 0usize;
        let mut steps = 0usize;
        while steps < want {
            for (i, car) in cars.iter_mut().enumerate() {
                if car.steps_left == 0 {
                    episode += 1;
                    car.sim.reset(cfg.seed.wrapping_mul(1_000_003) ^ episode);
                    car.scale = rng.random_range(cfg.speed_scale.0..=cfg.speed_scale.1);
                    car.steps_left = cfg.episode_steps;
                    car.noise = 0.0;
                }
                net::render(
                    &mut car.sim,
                    &mut frames[i * INPUT_LEN..(i + 1) * INPUT_LEN],
                );
            }
            let outputs = infer_net
                .as_ref()
                .map(|n| net::infer(n, &frames, cars.len(), &device));
            for (i, car) in cars.iter_mut().enumerate() {
                let (label, expert_speed) = expert_label(&car.sim, car.scale);
                data.push(&frames[i * INPUT_LEN..(i + 1) * INPUT_LEN], label);
                steps += 1;
                let by_expert = outputs.is_none() || rng.random_bool(expert_mix);
                let action = if by_expert {
                    car.noise = 0.9 * car.noise + 0.1 * normal(&mut rng) * noise_amp * 4.0;
                    let car_cfg = car.sim.config().car;
                    sim::CarAction::from_commands(
                        label.steer as f64 + car.noise,
                        expert_speed / car_cfg.max_speed_mps,
                        &car_cfg,
                    )
                } else {
                    let o = &outputs.as_ref().unwrap()
                        [i * targets.outputs()..(i + 1) * targets.outputs()];
                    let m = mapper.map(o, car.scale as f32);
                    sim::CarAction::from_commands(
                        m.steering as f64,
                        m.throttle as f64,
                        &car.sim.config().car,
                    )
                };
                let r = car.sim.step(action);
                car.steps_left -= 1;
                if r.termination.is_some() {
                    if r.params.is_offtrack || !r.params.all_wheels_on_track {
                        offtrack += 1;
                    }
                    car.steps_left = 0;
                }
            }
            progress(Progress::Collecting {
                iteration,
                samples: data.len() - from,
            });
        }

        let n_steps = if iteration == 0 {
            cfg.first_train_steps
        } else {
            cfg.train_steps
        };
        let mut loss_sum = 0.0;
        for step in 0..n_steps {
            data.sample(cfg.batch, &targets, mirror, &mut rng, &mut batch);
            let (model, loss) = train_step(
                net,
                &mut optim,
                &batch,
                &targets,
                cfg.learning_rate,
                &train_device,
            );
            net = model;
            loss_sum += loss;
            progress(Progress::Training {
                iteration,
                step,
                steps: n_steps,
                loss,
            });
        }

        let valid = net.valid();
        let check = check_laps(&valid, &cfg.tracks, &mapper, cfg.eval_speed_scale, &device);
        let stats = IterStats {
            iteration,
            samples: data.len(),
            expert_mix,
            offtrack_per_1000: offtrack as f64 * 1000.0 / steps.max(1) as f64,
            loss: loss_sum / n_steps.max(1) as f64,
            train_steps_total: history.last().map_or(0, |s| s.train_steps_total) + n_steps,
            eval_progress: check.progress,
            eval_laps: check.laps,
            eval_offtrack: check.offtrack,
            eval_lap_time_s: check.lap_time,
            elapsed_s: elapsed(),
        };
        if best.as_ref().is_none_or(|(s, _, _)| stats.score() > *s) {
            best = Some((stats.score(), iteration, valid));
        }
        if let Some(dir) = &cfg.checkpoint_dir {
            let chunk = format!("data-{iteration:04}.bin");
            save_checkpoint(
                dir,
                &net,
                &optim,
                &data,
                from,
                &chunk,
                best.as_ref().map(|b| (b.1, &b.2)),
            )
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", dir.display())))?;
            chunks.push(chunk);
            let st = CheckpointState {
                net: cfg.net,
                outputs: targets.outputs(),
                seed: cfg.seed,
                iteration,
                samples: data.len(),
                chunks: chunks.clone(),
                best_iteration: best.as_ref().map(|b| b.1),
                history: history.iter().cloned().chain([stats.clone()]).collect(),
            };
            write_state(dir, ALGO, &st).map_err(TrainError::Checkpoint)?;
        }
        progress(Progress::Iteration(&stats));
        history.push(stats);
        last_iter_s = Some(iter_start.elapsed().as_secs_f64());
    }
    let Some((_, best_iteration, net)) = best else {
        return Err(TrainError::NoTime(cfg.time_budget));
    };
    Ok(Trained {
        net,
        best_iteration,
        history,
        samples: data.len(),
    })
}

/// Standard normal (Box-Muller) from the run's seeded generator.
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = rng.random_range(1e-12..1.0);
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// One Adam step on one batch; returns the updated network and the loss.
fn train_step(
    net: Net,
    optim: &mut ModuleOptimizer,
    batch: &Batch,
    targets: &Targets,
    lr: f64,
    device: &Device,
) -> (Net, f64) {
    let x = Tensor::<4>::from_data(
        TensorData::new(batch.images.clone(), [batch.n, 1, INPUT_H, INPUT_W]),
        device,
    );
    let y = net.forward(x);
    let loss = if targets.is_discrete() {
        let t =
            Tensor::<1, Int>::from_data(TensorData::new(batch.classes.clone(), [batch.n]), device);
        CrossEntropyLossConfig::new().init(device).forward(y, t)
    } else {
        // Steering error costs the car the track; speed error only time.
        let t = Tensor::<2>::from_data(TensorData::new(batch.values.clone(), [batch.n, 2]), device);
        let w: Vec<f32> = (0..batch.n).flat_map(|_| [1.0f32, 0.25]).collect();
        let w = Tensor::<2>::from_data(TensorData::new(w, [batch.n, 2]), device);
        (y - t).powi_scalar(2).mul(w).mean()
    };
    let value = loss.clone().into_scalar::<f32>() as f64;
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    (optim.step(lr, net, grads), value)
}

pub(crate) struct Check {
    pub progress: f64,
    pub laps: usize,
    pub offtrack: u32,
    pub lap_time: Option<f64>,
}

/// One clean lap of every track, driven by `net` through the car's action
/// mapping at max-speed setting `scale`.
pub(crate) fn check_laps(
    net: &Net,
    tracks: &[Track],
    mapper: &ActionMapper,
    scale: f64,
    device: &Device,
) -> Check {
    let mut frame = vec![0u8; INPUT_LEN];
    let (mut progress, mut laps, mut offtrack, mut times) = (0.0, 0, 0, Vec::new());
    for track in tracks {
        let mut runner = LapRunner::new(Sim::new(track.clone(), SimConfig::default()));
        runner.reset(0);
        let car = runner.sim().config().car;
        // Three times the lap at a crawl of 20 % of the setting's top speed.
        let budget = (track.length() / (0.2 * scale * car.max_speed_mps) * sim::STEP_HZ) as u64;
        while runner.laps_completed() < 1 && runner.steps() < budget {
            net::render(runner.sim_mut(), &mut frame);
            let o = net::infer(net, &frame, 1, device);
            let m = mapper.map(&o, scale as f32);
            runner.step(sim::CarAction::from_commands(
                m.steering as f64,
                m.throttle as f64,
                &car,
            ));
        }
        if runner.laps_completed() >= 1 {
            laps += 1;
            progress += 100.0;
            times.push(runner.lap_times_s()[0]);
        } else {
            progress += runner.lap_progress();
        }
        offtrack += runner.offtrack_events();
    }
    Check {
        progress: progress / tracks.len() as f64,
        laps,
        offtrack,
        lap_time: (!times.is_empty()).then(|| times.iter().sum::<f64>() / times.len() as f64),
    }
}

fn save_checkpoint(
    dir: &Path,
    net: &Net,
    optim: &ModuleOptimizer,
    data: &Dataset,
    from: usize,
    chunk: &str,
    best: Option<(usize, &Net)>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    data.save_chunk(from, &dir.join(chunk))
        .map_err(|e| format!("{chunk}: {e}"))?;
    save_atomic(dir, "model.bpk", |p| {
        net.clone().save_file(p).map_err(|e| e.to_string())
    })?;
    save_atomic(dir, "optim.bpk", |p| {
        optim.save(p).map_err(|e| e.to_string())
    })?;
    if let Some((_, b)) = best {
        save_atomic(dir, "best.bpk", |p| {
            b.clone().save_file(p).map_err(|e| e.to_string())
        })?;
    }
    Ok(())
}

fn load_state(dir: &Path) -> Result<CheckpointState, TrainError> {
    read_state(dir, ALGO).map_err(TrainError::Checkpoint)
}
