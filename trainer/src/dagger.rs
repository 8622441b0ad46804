//! Imitation of the simulator's expert with DAgger.
//!
//! Iteration 0 drives the expert with steering noise (so the data already
//! holds some recoveries); every later iteration lets the learner drive,
//! mixed with the expert with a probability that halves each time, and the
//! expert labels every state the car visits. The readout is refitted on all
//! data after each iteration. Domain randomisation is on by default, so the
//! policy keys on the road's shape rather than one room's colours.

use std::time::{Duration, Instant};

use sim::{
    CarAction, Channels, Expert, LapRunner, Randomization, Sim, SimConfig, StartPolicy, Track,
};

use crate::features::FeatureSpec;
use crate::ridge::{Ridge, RidgeError};

/// The learner: pooled image -> optional fixed random ReLU layer -> linear
/// readout with two outputs in [-1, 1] (steering, speed), as a DeepRacer
/// continuous-action model.
#[derive(Debug, Clone)]
pub struct Readout {
    pub spec: FeatureSpec,
    /// Hidden layer `(weights [hidden x features], bias [hidden])`, applied to
    /// raw 0-255 pooled values, or `None` for a purely linear readout.
    pub hidden: Option<(Vec<f32>, Vec<f32>)>,
    /// Output layer `[2 x inputs]` and bias `[2]`.
    pub out_w: Vec<f32>,
    pub out_b: [f32; 2],
}

impl Readout {
    /// Number of inputs of the output layer.
    pub fn readout_inputs(&self) -> usize {
        self.hidden
            .as_ref()
            .map_or(self.spec.len(), |(_, b)| b.len())
    }

    /// Hidden activations (or the features themselves) into `out`.
    pub fn hidden_into(spec_hidden: Option<&(Vec<f32>, Vec<f32>)>, feats: &[f32], out: &mut [f32]) {
        match spec_hidden {
            None => out.copy_from_slice(feats),
            Some((w, b)) => {
                let n = feats.len();
                for (h, (o, bias)) in out.iter_mut().zip(b).enumerate() {
                    let row = &w[h * n..(h + 1) * n];
                    let s: f32 = row.iter().zip(feats).map(|(a, x)| a * x).sum::<f32>() + bias;
                    *o = s.max(0.0);
                }
            }
        }
    }

    /// Raw outputs (steering, speed), not clipped: the car clips.
    pub fn predict(&self, feats: &[f32], scratch: &mut Vec<f32>) -> [f32; 2] {
        scratch.resize(self.readout_inputs(), 0.0);
        Self::hidden_into(self.hidden.as_ref(), feats, scratch);
        let n = scratch.len();
        let mut y = self.out_b;
        for (k, yk) in y.iter_mut().enumerate() {
            *yk += self.out_w[k * n..(k + 1) * n]
                .iter()
                .zip(scratch.iter())
                .map(|(a, x)| a * x)
                .sum::<f32>();
        }
        y
    }
}

/// Settings for one training run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub tracks: Vec<Track>,
    pub seed: u64,
    /// Wall-clock budget; training stops after the iteration that crosses it.
    pub time_budget: Duration,
    pub max_iterations: usize,
    /// Control steps collected per iteration, spread over all tracks.
    pub steps_per_iteration: usize,
    /// Steps per episode before a fresh random start.
    pub episode_steps: usize,
    pub spec: FeatureSpec,
    /// Width of the fixed random ReLU layer (0 = linear readout).
    pub hidden: usize,
    /// Ridge penalty per sample.
    pub lambda: f64,
    /// Range of driving speeds during collection (m/s): the image does not
    /// show speed, so the policy must steer well across the whole range.
    pub drive_speed: (f64, f64),
    /// Steering angle (deg) at or above which the label asks for the lowest speed.
    pub slow_at_deg: f64,
    pub randomization: Randomization,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            tracks: Vec::new(),
            seed: 1,
            time_budget: Duration::from_secs(300),
            max_iterations: 8,
            steps_per_iteration: 12_000,
            episode_steps: 450,
            spec: FeatureSpec::DEFAULT,
            hidden: 0,
            lambda: 1e-4,
            drive_speed: (1.0, 2.5),
            slow_at_deg: 20.0,
            randomization: Randomization::standard(),
        }
    }
}

/// One iteration's figures, for the progress line, the report and the plot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IterStats {
    pub iteration: usize,
    pub samples: u64,
    pub expert_mix: f64,
    /// Mean absolute steering error (normalised units) on this iteration's
    /// fresh data, measured before refitting: how far the learner was off on
    /// the states it visited.
    pub steer_mae: f64,
    /// Fraction of steps the car was off the track while collecting.
    pub offtrack_rate: f64,
    pub elapsed_s: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no tracks to train on")]
    NoTracks,
    #[error(transparent)]
    Fit(#[from] RidgeError),
}

/// The expert's label for the current state: (steering, speed), each in
/// [-1, 1] of a continuous action space with steering +/-`max_deg`.
pub fn expert_label(expert: &Expert, sim: &Sim, max_deg: f64, slow_at_deg: f64) -> [f32; 2] {
    let a = expert.act(sim);
    let steer = (a.steering_deg / max_deg).clamp(-1.0, 1.0);
    let speed = 1.0 - 2.0 * (a.steering_deg.abs() / slow_at_deg).min(1.0);
    [steer as f32, speed as f32]
}

/// SplitMix64: a tiny seeded generator, so runs are reproducible by `--seed`.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);
impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn random_hidden(
    spec: &FeatureSpec,
    hidden: usize,
    rng: &mut SplitMix,
) -> Option<(Vec<f32>, Vec<f32>)> {
    if hidden == 0 {
        return None;
    }
    let n = spec.len();
    // Inputs are raw 0-255 block means; centre them at mid-grey and scale so
    // pre-activations are O(1) for typical images.
    let scale = 1.0 / (255.0 * (n as f64).sqrt()) * 2.0;
    let mut w = vec![0.0f32; hidden * n];
    let mut b = vec![0.0f32; hidden];
    for h in 0..hidden {
        let row = &mut w[h * n..(h + 1) * n];
        let mut centre = 0.0;
        for v in row.iter_mut() {
            let x = rng.normal() * scale;
            *v = x as f32;
            centre += x * 127.5;
        }
        b[h] = (rng.normal() * 0.5 - centre) as f32;
    }
    Some((w, b))
}

/// Train a readout by DAgger. `progress` is called after every iteration.
pub fn train(
    cfg: &TrainConfig,
    mut progress: impl FnMut(&IterStats),
) -> Result<(Readout, Vec<IterStats>), TrainError> {
    if cfg.tracks.is_empty() {
        return Err(TrainError::NoTracks);
    }
    let start = Instant::now();
    let mut rng = SplitMix::new(cfg.seed);
    let hidden = random_hidden(&cfg.spec, cfg.hidden, &mut rng);
    let inputs = if cfg.hidden == 0 {
        cfg.spec.len()
    } else {
        cfg.hidden
    };
    let mut ridge = Ridge::new(inputs, 2);
    let mut model: Option<Readout> = None;
    let mut history = Vec::new();

    let (w, h) = (cfg.spec.width, cfg.spec.height);
    let mut frame = vec![0u8; w * h];
    let mut feats = vec![0.0f32; cfg.spec.len()];
    let mut act = vec![0.0f32; inputs];
    let mut scratch = Vec::new();

    let mut sims: Vec<Sim> = cfg
        .tracks
        .iter()
        .map(|t| {
            let sc = SimConfig {
                randomization: cfg.randomization,
                start: StartPolicy::Random,
                start_lateral_jitter_m: 0.12,
                start_heading_jitter_deg: 12.0,
                ..SimConfig::default()
            };
            Sim::new(t.clone(), sc)
        })
        .collect();

    for iteration in 0..cfg.max_iterations {
        let expert_mix = if iteration == 0 {
            1.0
        } else {
            0.5f64.powi(iteration as i32)
        };
        let mut steps = 0usize;
        let mut offtrack = 0usize;
        let mut err_sum = 0.0;
        let mut episode = 0u64;
        while steps < cfg.steps_per_iteration {
            let sim = &mut sims[(episode as usize) % cfg.tracks.len()];
            sim.reset(
                cfg.seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add((iteration as u64) << 32 | episode),
            );
            episode += 1;
            let speed = cfg.drive_speed.0 + rng.unit() * (cfg.drive_speed.1 - cfg.drive_speed.0);
            let expert = Expert::new(speed);
            let max_deg = sim.config().car.max_steering_deg;
            // Slowly varying steering noise for the expert's own episodes:
            // it pushes the car off the line so the data shows recoveries.
            let mut noise = 0.0f64;
            for _ in 0..cfg.episode_steps {
                sim.render_into(&mut frame, w as u32, h as u32, Channels::Gray)
                    .expect("render size is fixed");
                cfg.spec.extract(&frame, &mut feats);
                Readout::hidden_into(hidden.as_ref(), &feats, &mut act);
                let label = expert_label(&expert, sim, max_deg, cfg.slow_at_deg);
                ridge.add(&act, &label, 1.0);
                steps += 1;

                let learner = model.as_ref().map(|m| m.predict(&feats, &mut scratch));
                if let Some(p) = learner {
                    err_sum += (p[0].clamp(-1.0, 1.0) - label[0]).abs() as f64;
                }
                let use_expert = learner.is_none() || rng.unit() < expert_mix;
                let steer_norm = if use_expert {
                    noise = 0.9 * noise + 0.1 * rng.normal() * 0.6;
                    let n = if iteration == 0 { noise } else { 0.0 };
                    (label[0] as f64 + n).clamp(-1.0, 1.0)
                } else {
                    (learner.unwrap()[0] as f64).clamp(-1.0, 1.0)
                };
                let r = sim.step(CarAction {
                    steering_deg: steer_norm * max_deg,
                    speed_mps: speed,
                });
                if r.termination.is_some() {
                    if r.params.is_offtrack || !r.params.all_wheels_on_track {
                        offtrack += 1;
                    }
                    break;
                }
                if steps >= cfg.steps_per_iteration {
                    break;
                }
            }
        }
        let (out_w, out_b) = fit(&ridge, cfg.lambda)?;
        model = Some(Readout {
            spec: cfg.spec,
            hidden: hidden.clone(),
            out_w,
            out_b,
        });
        let stats = IterStats {
            iteration,
            samples: ridge.samples(),
            expert_mix,
            steer_mae: if iteration == 0 {
                f64::NAN
            } else {
                err_sum / steps as f64
            },
            offtrack_rate: offtrack as f64 / steps as f64,
            elapsed_s: start.elapsed().as_secs_f64(),
        };
        progress(&stats);
        history.push(stats);
        if start.elapsed() >= cfg.time_budget {
            break;
        }
    }
    Ok((model.expect("at least one iteration ran"), history))
}

fn fit(ridge: &Ridge, lambda: f64) -> Result<(Vec<f32>, [f32; 2]), RidgeError> {
    let w = ridge.solve(lambda)?;
    let n = w[0].len() - 1;
    let mut out_w = Vec::with_capacity(2 * n);
    for row in &w {
        out_w.extend(row[..n].iter().map(|&v| v as f32));
    }
    Ok((out_w, [w[0][n] as f32, w[1][n] as f32]))
}

/// Laps the in-memory readout completes on a clean track (no randomisation)
/// within a step budget, steering with its output and driving at `speed`.
/// A quick check during training; the real evaluation runs the exported
/// ONNX through the car's own code (`eval`).
pub fn quick_laps(model: &Readout, track: &Track, laps: usize, speed: f64) -> (usize, u32) {
    let mut runner = LapRunner::new(Sim::new(track.clone(), SimConfig::default()));
    runner.reset(0);
    let (w, h) = (model.spec.width, model.spec.height);
    let mut frame = vec![0u8; w * h];
    let mut feats = vec![0.0f32; model.spec.len()];
    let mut scratch = Vec::new();
    let budget = (laps as f64 * track.length() / speed * sim::STEP_HZ * 2.0) as u64 + 200;
    let max_deg = runner.sim().config().car.max_steering_deg;
    while runner.laps_completed() < laps && runner.steps() < budget {
        runner
            .sim_mut()
            .render_into(&mut frame, w as u32, h as u32, Channels::Gray)
            .expect("render size is fixed");
        model.spec.extract(&frame, &mut feats);
        let p = model.predict(&feats, &mut scratch);
        runner.step(CarAction {
            steering_deg: (p[0] as f64).clamp(-1.0, 1.0) * max_deg,
            speed_mps: speed,
        });
    }
    (runner.laps_completed(), runner.offtrack_events())
}
