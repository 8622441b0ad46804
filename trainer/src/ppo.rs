//! Clipped PPO with GAE, as the DeepRacer console trains: separate policy
//! and value networks, a reward function called on every step with the
//! DeepRacer `params`, updates after every `episodes_per_update` episodes.
//! Discrete spaces sample a categorical over the logits; continuous ones a
//! Gaussian around the network's two outputs with a learnt, state-free
//! standard deviation. The exported model is the policy network alone: the
//! logits (the car takes the argmax) or the mean (the car clips it to
//! [-1, 1]), exactly what a console export gives the car.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::{Module, Param};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use policy::{ActionMapper, ActionSpace};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sim::{Randomization, Sim, SimConfig, StartPolicy, Track};

use crate::checkpoint::{read_state, save_atomic, write_state, STATE_FILE};
use crate::dagger::{check_laps, normal};
use crate::net::{self, Net, NetKind, INPUT_H, INPUT_LEN, INPUT_W};
use crate::reward::{Reward, RewardError};

/// The console's hyperparameters (its defaults), as deepracer-for-cloud's
/// `hyperparameters.json` names them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hyper {
    pub batch_size: usize,
    pub lr: f64,
    pub beta_entropy: f64,
    pub discount_factor: f64,
    pub num_epochs: usize,
    pub num_episodes_between_training: usize,
    pub clip: f64,
    pub lambda: f64,
    /// Stop after this many episodes (`term_cond_max_episodes`).
    pub max_episodes: Option<usize>,
    /// Stop once the mean episode reward of an update reaches this
    /// (`term_cond_avg_score`).
    pub target_score: Option<f64>,
}

impl Default for Hyper {
    fn default() -> Self {
        Hyper {
            batch_size: 64,
            lr: 3e-4,
            beta_entropy: 0.01,
            discount_factor: 0.999,
            num_epochs: 10,
            num_episodes_between_training: 20,
            clip: 0.2,
            lambda: 0.95,
            max_episodes: None,
            target_score: None,
        }
    }
}

impl Hyper {
    /// Read a deepracer-for-cloud `hyperparameters.json`. Keys we do not use
    /// (SAC's, exploration, stack size) are accepted and ignored; a known
    /// key of the wrong type or range is an error naming the file and key.
    pub fn from_file(path: &Path) -> Result<Hyper, String> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{file}: not JSON: {e}"))?;
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{file}: expected a JSON object"))?;
        let mut h = Hyper::default();
        // Some tools write numbers as strings ("64"); DeepRacer accepts both.
        let num = |k: &str| -> Result<Option<f64>, String> {
            match obj.get(k) {
                None => Ok(None),
                Some(serde_json::Value::Number(n)) => Ok(n.as_f64()),
                Some(serde_json::Value::String(s)) => s
                    .trim()
                    .parse::<f64>()
                    .map(Some)
                    .map_err(|_| format!("{file}: {k}: \"{s}\" is not a number")),
                Some(other) => Err(format!("{file}: {k}: expected a number, got {other}")),
            }
        };
        let count = |k: &str, x: f64| -> Result<usize, String> {
            if x >= 1.0 && x.fract() == 0.0 {
                Ok(x as usize)
            } else {
                Err(format!(
                    "{file}: {k}: expected a whole number >= 1, got {x}"
                ))
            }
        };
        let unit = |k: &str, x: f64, lo: f64, hi: f64| -> Result<f64, String> {
            if (lo..=hi).contains(&x) {
                Ok(x)
            } else {
                Err(format!("{file}: {k}: {x} is outside [{lo}, {hi}]"))
            }
        };
        if let Some(x) = num("batch_size")? {
            h.batch_size = count("batch_size", x)?;
        }
        if let Some(x) = num("lr")? {
            h.lr = unit("lr", x, 1e-8, 1.0)?;
        }
        if let Some(x) = num("beta_entropy")? {
            h.beta_entropy = unit("beta_entropy", x, 0.0, 1.0)?;
        }
        if let Some(x) = num("discount_factor")? {
            h.discount_factor = unit("discount_factor", x, 0.0, 1.0)?;
        }
        if let Some(x) = num("num_epochs")? {
            h.num_epochs = count("num_epochs", x)?;
        }
        if let Some(x) = num("num_episodes_between_training")? {
            h.num_episodes_between_training = count("num_episodes_between_training", x)?;
        }
        if let Some(x) = num("term_cond_max_episodes")? {
            h.max_episodes = Some(count("term_cond_max_episodes", x)?);
        }
        if let Some(x) = num("term_cond_avg_score")? {
            h.target_score = Some(x);
        }
        if let Some(serde_json::Value::String(t)) = obj.get("loss_type") {
            if t != "huber" && t != "mean squared error" {
                return Err(format!(
                    "{file}: loss_type: \"{t}\" (expected huber or mean squared error)"
                ));
            }
        }
        Ok(h)
    }
}

/// The policy: the exported network plus, for continuous spaces, the log
/// standard deviation of its Gaussian (not exported: the car drives the mean).
#[derive(Module, Debug)]
pub struct Actor {
    pub net: Net,
    log_std: Param<Tensor<1>>,
}

impl Actor {
    pub fn new(kind: NetKind, outputs: usize, device: &Device) -> Actor {
        Actor {
            net: Net::new(kind, outputs, device),
            // std 0.5 of the [-1, 1] range: exploring without driving blind.
            log_std: Param::from_tensor(Tensor::<1>::full([2], 0.5f32.ln(), device)),
        }
    }
}

/// Settings for one PPO run.
pub struct PpoConfig {
    pub tracks: Vec<Track>,
    pub net: NetKind,
    pub space: ActionSpace,
    pub reward: Reward,
    pub hyper: Hyper,
    pub seed: u64,
    pub time_budget: Duration,
    /// Simulated cars driven side by side.
    pub envs: usize,
    /// Episode step limit (a lap ends an episode sooner).
    pub max_episode_steps: usize,
    /// Max-speed setting (0-1) the car drives at, in training and check laps.
    pub speed_scale: f64,
    pub randomization: Randomization,
    /// Start from this imitation network (a `best.bpk` of `car-trainer train`).
    pub init: Option<PathBuf>,
    /// Where a checkpoint goes after every update (resume reads it); `None`
    /// keeps none.
    pub checkpoint_dir: Option<PathBuf>,
}

/// One update's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    pub update: usize,
    pub episodes: usize,
    pub steps: usize,
    /// Mean total reward of this update's episodes.
    pub reward_mean: f64,
    /// Mean progress (%) of this update's episodes.
    pub progress_mean: f64,
    pub entropy: f64,
    pub policy_loss: f64,
    pub value_loss: f64,
    pub eval_progress: f64,
    pub eval_offtrack: u32,
    pub eval_lap_time_s: Option<f64>,
    pub elapsed_s: f64,
}

impl UpdateStats {
    pub fn clean(&self) -> bool {
        self.eval_progress >= 100.0 && self.eval_offtrack == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PpoError {
    #[error(transparent)]
    Reward(#[from] RewardError),
    #[error("{0}")]
    Init(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

/// The `algo` recorded in `state.json`.
const ALGO: &str = "ppo";

/// What `state.json` holds beside the networks and optimisers: enough to
/// continue numbering, budgets, the random stream and the best network.
/// Episodes in progress at the checkpoint are not kept: their cars restart
/// them from the start.
#[derive(Debug, Serialize, Deserialize)]
struct PpoState {
    net: NetKind,
    outputs: usize,
    discrete: bool,
    seed: u64,
    update: usize,
    episodes: usize,
    episode_seed: u64,
    /// Seed of each car's episode in progress.
    env_seeds: Vec<u64>,
    /// ChaCha8 word position, as a decimal string (a u128).
    rng_word_pos: String,
    best_update: Option<usize>,
    first_lap_s: Option<f64>,
    history: Vec<UpdateStats>,
}

pub struct PpoResult {
    pub net: Net,
    pub best_update: usize,
    pub history: Vec<UpdateStats>,
    /// Wall-clock seconds until the first network that drove clean laps of
    /// every training track.
    pub first_lap_s: Option<f64>,
}

/// One car's episode in progress.
#[derive(Default)]
struct Traj {
    frames: Vec<u8>,
    actions: Vec<[f32; 2]>,
    logp: Vec<f32>,
    rewards: Vec<f32>,
    progress: f64,
}

struct Env {
    sim: Sim,
    traj: Traj,
    /// Seed of the episode in progress (a resumed run restarts it).
    seed: u64,
}

const LN_2PI: f32 = 1.837_877;

/// Train with PPO. `progress` sees every finished update. With `resume`,
/// continue the run whose checkpoint is in `cfg.checkpoint_dir`; the time
/// budget and `max_episodes` count the earlier runs too.
pub fn train(
    cfg: &PpoConfig,
    resume: bool,
    mut progress: impl FnMut(&UpdateStats),
) -> Result<PpoResult, PpoError> {
    let start = Instant::now();
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    device.seed(cfg.seed);
    train_device.seed(cfg.seed);
    let outputs = cfg.space.output_len();
    let discrete = matches!(cfg.space, ActionSpace::Discrete(_));
    let mapper = ActionMapper::new(&cfg.space);
    let mut actor = Actor::new(cfg.net, outputs, &train_device);
    // A resumed run continues its own networks (loaded below).
    if let (Some(p), false) = (&cfg.init, resume) {
        let net = Net::new(cfg.net, outputs, &train_device)
            .try_load_file(p)
            .map_err(|e| {
                PpoError::Init(format!(
                    "{}: {e} (it must be a {} network with {outputs} outputs)",
                    p.display(),
                    cfg.net.as_str()
                ))
            })?;
        actor.net = net;
    }
    let mut critic = Net::new(cfg.net, 1, &train_device);
    let mut actor_opt = AdamConfig::new().init();
    let mut critic_opt = AdamConfig::new().init();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let h = &cfg.hyper;
    let mut history: Vec<UpdateStats> = Vec::new();
    let mut best: Option<(UpdateStats, Net)> = None;
    let mut first_lap_s = None;
    let mut episodes_total = 0usize;
    let mut episode_seed = cfg.seed << 20;
    let mut first_update = 0;
    let mut resume_env_seeds: Option<Vec<u64>> = None;

    if resume {
        let dir = cfg
            .checkpoint_dir
            .as_deref()
            .ok_or_else(|| PpoError::Checkpoint("resuming needs a checkpoint folder".into()))?;
        let st: PpoState = read_state(dir, ALGO).map_err(PpoError::Checkpoint)?;
        if (st.net, st.outputs, st.discrete) != (cfg.net, outputs, discrete) {
            let shape = |n: NetKind, o: usize, d: bool| {
                let kind = if d { "discrete" } else { "continuous" };
                format!("a {} network with {o} outputs ({kind})", n.as_str())
            };
            return Err(PpoError::Checkpoint(format!(
                "{}: the checkpoint holds {}; this run asks for {}",
                dir.join(STATE_FILE).display(),
                shape(st.net, st.outputs, st.discrete),
                shape(cfg.net, outputs, discrete)
            )));
        }
        let file = |name: &str, e: &dyn std::fmt::Display| {
            PpoError::Checkpoint(format!("{}: {e}", dir.join(name).display()))
        };
        actor = Actor::new(cfg.net, outputs, &train_device)
            .try_load_file(dir.join("actor.bpk"))
            .map_err(|e| file("actor.bpk", &e))?;
        critic = Net::new(cfg.net, 1, &train_device)
            .try_load_file(dir.join("critic.bpk"))
            .map_err(|e| file("critic.bpk", &e))?;
        // Adam's moments are part of the run: without them the first
        // updates after a resume would take full-size steps.
        actor_opt = AdamConfig::new()
            .init()
            .load(dir.join("actor-optim.bpk"))
            .map_err(|e| file("actor-optim.bpk", &e))?;
        critic_opt = AdamConfig::new()
            .init()
            .load(dir.join("critic-optim.bpk"))
            .map_err(|e| file("critic-optim.bpk", &e))?;
        let pos: u128 = st.rng_word_pos.parse().map_err(|_| {
            file(
                STATE_FILE,
                &format!("rng_word_pos: \"{}\" is not a number", st.rng_word_pos),
            )
        })?;
        // The run's own seed, whatever --seed says now: the stream goes on.
        rng = ChaCha8Rng::seed_from_u64(st.seed);
        rng.set_word_pos(pos);
        if let Some(b) = st.best_update {
            let net = Net::new(cfg.net, outputs, &device)
                .try_load_file(dir.join("best.bpk"))
                .map_err(|e| file("best.bpk", &e))?;
            let stats = st
                .history
                .iter()
                .find(|s| s.update == b)
                .cloned()
                .ok_or_else(|| {
                    file(
                        STATE_FILE,
                        &format!("best_update: {b} is not in the history"),
                    )
                })?;
            best = Some((stats, net));
        }
        first_update = st.update + 1;
        episodes_total = st.episodes;
        episode_seed = st.episode_seed;
        resume_env_seeds = Some(st.env_seeds);
        first_lap_s = st.first_lap_s;
        history = st.history;
    }
    let elapsed_before = history.last().map_or(0.0, |s| s.elapsed_s);
    let elapsed = || elapsed_before + start.elapsed().as_secs_f64();

    let sim_cfg = SimConfig {
        randomization: cfg.randomization,
        start: StartPolicy::Random,
        max_steps: cfg.max_episode_steps as u64,
        ..SimConfig::default()
    };
    let mut envs: Vec<Env> = (0..cfg.envs.max(1))
        .map(|i| Env {
            sim: Sim::new(cfg.tracks[i % cfg.tracks.len()].clone(), sim_cfg),
            traj: Traj::default(),
            seed: 0,
        })
        .collect();
    // A resumed run restarts each car's episode from its start: a car that
    // had just begun one carries on exactly as the uninterrupted run would.
    let restart = resume_env_seeds.filter(|s| s.len() == envs.len());
    for (i, e) in envs.iter_mut().enumerate() {
        e.seed = match &restart {
            Some(seeds) => seeds[i],
            None => {
                episode_seed += 1;
                episode_seed
            }
        };
        e.sim.reset(e.seed);
    }
    let mut frames = vec![0u8; envs.len() * INPUT_LEN];
    // How long the last update took decides whether another fits the budget.
    let mut last_update_s = match history.as_slice() {
        [.., a, b] => b.elapsed_s - a.elapsed_s,
        [b] => b.elapsed_s,
        [] => 0.0,
    };

    for update in first_update.. {
        if !history.is_empty() && elapsed() + last_update_s * 1.1 > cfg.time_budget.as_secs_f64() {
            break;
        }
        if h.max_episodes.is_some_and(|m| episodes_total >= m) {
            break;
        }
        let t0 = Instant::now();
        // Roll out until enough episodes have ended.
        let policy = actor.valid();
        let std: Vec<f32> = policy
            .log_std
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32 parameter")
            .iter()
            .map(|x| x.exp())
            .collect();
        let mut done: Vec<Traj> = Vec::new();
        while done.len() < h.num_episodes_between_training {
            for (i, e) in envs.iter_mut().enumerate() {
                net::render(&mut e.sim, &mut frames[i * INPUT_LEN..(i + 1) * INPUT_LEN]);
            }
            let out = net::infer(&policy.net, &frames, envs.len(), &device);
            for (i, e) in envs.iter_mut().enumerate() {
                let o = &out[i * outputs..(i + 1) * outputs];
                let (action, logp, m) = if discrete {
                    let k = sample_categorical(o, &mut rng);
                    let mut onehot = vec![0.0f32; outputs];
                    onehot[k] = 1.0;
                    (
                        [k as f32, 0.0],
                        log_softmax_at(o, k),
                        mapper.map(&onehot, cfg.speed_scale as f32),
                    )
                } else {
                    let a = [
                        o[0] + std[0] * normal(&mut rng) as f32,
                        o[1] + std[1] * normal(&mut rng) as f32,
                    ];
                    let lp = (0..2)
                        .map(|j| {
                            let z = (a[j] - o[j]) / std[j];
                            -0.5 * z * z - std[j].ln() - 0.5 * LN_2PI
                        })
                        .sum();
                    (a, lp, mapper.map(&a, cfg.speed_scale as f32))
                };
                e.traj
                    .frames
                    .extend_from_slice(&frames[i * INPUT_LEN..(i + 1) * INPUT_LEN]);
                e.traj.actions.push(action);
                e.traj.logp.push(logp);
                let car = e.sim.config().car;
                let r = e.sim.step(sim::CarAction::from_commands(
                    m.steering as f64,
                    m.throttle as f64,
                    &car,
                ));
                let reward = cfg.reward.call(r.params)?;
                e.traj.rewards.push(reward as f32);
                e.traj.progress = r.params.progress;
                if r.termination.is_some() {
                    done.push(std::mem::take(&mut e.traj));
                    episode_seed += 1;
                    e.seed = episode_seed;
                    e.sim.reset(e.seed);
                }
            }
        }
        episodes_total += done.len();

        // Advantages (GAE) from the critic's values; every episode ended
        // (off track, lap done or step limit), so nothing is bootstrapped.
        let critic_valid = critic.valid();
        let mut adv_all = Vec::new();
        let mut ret_all = Vec::new();
        for t in &done {
            let n = t.rewards.len();
            let mut values = Vec::with_capacity(n);
            for chunk in t.frames.chunks(INPUT_LEN * 256) {
                values.extend(net::infer(
                    &critic_valid,
                    chunk,
                    chunk.len() / INPUT_LEN,
                    &device,
                ));
            }
            let mut gae = 0.0f64;
            let mut adv = vec![0.0f32; n];
            for k in (0..n).rev() {
                let next_v = if k + 1 < n { values[k + 1] as f64 } else { 0.0 };
                let delta = t.rewards[k] as f64 + h.discount_factor * next_v - values[k] as f64;
                gae = delta + h.discount_factor * h.lambda * gae;
                adv[k] = gae as f32;
            }
            for k in 0..n {
                ret_all.push(adv[k] + values[k]);
            }
            adv_all.extend(adv);
        }
        let n = adv_all.len();
        let mean = adv_all.iter().sum::<f32>() / n as f32;
        let var = adv_all.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / n as f32;
        let sd = var.sqrt().max(1e-6);
        adv_all.iter_mut().for_each(|a| *a = (*a - mean) / sd);
        let frames_all: Vec<&[u8]> = done
            .iter()
            .flat_map(|t| t.frames.chunks_exact(INPUT_LEN))
            .collect();
        let actions_all: Vec<[f32; 2]> = done
            .iter()
            .flat_map(|t| t.actions.iter().copied())
            .collect();
        let logp_all: Vec<f32> = done.iter().flat_map(|t| t.logp.iter().copied()).collect();

        let (mut pl_sum, mut vl_sum, mut ent_sum, mut batches) = (0.0, 0.0, 0.0, 0usize);
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..h.num_epochs {
            for i in (1..n).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            for idx in order.chunks(h.batch_size) {
                let b = idx.len();
                let mut img = Vec::with_capacity(b * INPUT_LEN);
                for &i in idx {
                    img.extend(frames_all[i].iter().map(|&v| v as f32));
                }
                let x = Tensor::<4>::from_data(
                    TensorData::new(img, [b, 1, INPUT_H, INPUT_W]),
                    &train_device,
                );
                let adv = Tensor::<1>::from_data(
                    TensorData::new(idx.iter().map(|&i| adv_all[i]).collect::<Vec<_>>(), [b]),
                    &train_device,
                );
                let old = Tensor::<1>::from_data(
                    TensorData::new(idx.iter().map(|&i| logp_all[i]).collect::<Vec<_>>(), [b]),
                    &train_device,
                );
                let ret = Tensor::<1>::from_data(
                    TensorData::new(idx.iter().map(|&i| ret_all[i]).collect::<Vec<_>>(), [b]),
                    &train_device,
                );
                let out = actor.net.forward(x.clone());
                let (logp, entropy) = if discrete {
                    let lsm = log_softmax(out, 1);
                    let mut onehot = vec![0.0f32; b * outputs];
                    for (r, &i) in idx.iter().enumerate() {
                        onehot[r * outputs + actions_all[i][0] as usize] = 1.0;
                    }
                    let onehot = Tensor::<2>::from_data(
                        TensorData::new(onehot, [b, outputs]),
                        &train_device,
                    );
                    let logp = lsm.clone().mul(onehot).sum_dim(1).reshape([b]);
                    let entropy = lsm.clone().exp().mul(lsm).sum_dim(1).mean().neg();
                    (logp, entropy)
                } else {
                    let a: Vec<f32> = idx.iter().flat_map(|&i| actions_all[i]).collect();
                    let a = Tensor::<2>::from_data(TensorData::new(a, [b, 2]), &train_device);
                    let log_std = actor.log_std.val();
                    let std = log_std.clone().exp().reshape([1, 2]).expand([b, 2]);
                    let z = (a - out).div(std);
                    let logp = z
                        .powi_scalar(2)
                        .mul_scalar(-0.5)
                        .sub(log_std.clone().reshape([1, 2]).expand([b, 2]))
                        .sub_scalar(0.5 * LN_2PI)
                        .sum_dim(1)
                        .reshape([b]);
                    let entropy = log_std.add_scalar(0.5 * (LN_2PI + 1.0)).sum();
                    (logp, entropy)
                };
                let ratio = (logp - old).exp();
                let clipped = ratio.clone().clamp(1.0 - h.clip, 1.0 + h.clip);
                let surr = ratio.mul(adv.clone()).min_pair(clipped.mul(adv));
                let policy_loss = surr.mean().neg();
                let loss = policy_loss.clone() - entropy.clone().mul_scalar(h.beta_entropy);
                pl_sum += policy_loss.into_scalar::<f32>() as f64;
                ent_sum += entropy.into_scalar::<f32>() as f64;
                let grads = GradientsParams::from_grads(loss.backward(), &actor);
                actor = actor_opt.step(h.lr, actor, grads);

                let v = critic.forward(x).reshape([b]);
                let value_loss = (v - ret).powi_scalar(2).mean();
                vl_sum += value_loss.clone().into_scalar::<f32>() as f64;
                let grads = GradientsParams::from_grads(value_loss.backward(), &critic);
                critic = critic_opt.step(h.lr, critic, grads);
                batches += 1;
            }
        }

        let valid = actor.net.valid();
        let check = check_laps(&valid, &cfg.tracks, &mapper, cfg.speed_scale, &device);
        let b = batches.max(1) as f64;
        let stats = UpdateStats {
            update,
            episodes: episodes_total,
            steps: n,
            reward_mean: done
                .iter()
                .map(|t| t.rewards.iter().map(|&r| r as f64).sum::<f64>())
                .sum::<f64>()
                / done.len() as f64,
            progress_mean: done.iter().map(|t| t.progress).sum::<f64>() / done.len() as f64,
            entropy: ent_sum / b,
            policy_loss: pl_sum / b,
            value_loss: vl_sum / b,
            eval_progress: check.progress,
            eval_offtrack: check.offtrack,
            eval_lap_time_s: check.lap_time,
            elapsed_s: elapsed(),
        };
        if stats.clean() && first_lap_s.is_none() {
            first_lap_s = Some(stats.elapsed_s);
        }
        let better = match &best {
            None => true,
            Some((b, _)) if stats.clean() || b.clean() => stats.clean(),
            Some((b, _)) => {
                stats.eval_progress - 10.0 * stats.eval_offtrack as f64
                    > b.eval_progress - 10.0 * b.eval_offtrack as f64
            }
        };
        if better {
            best = Some((stats.clone(), valid));
        }
        progress(&stats);
        let reached = h.target_score.is_some_and(|s| stats.reward_mean >= s);
        history.push(stats);
        if let Some(dir) = &cfg.checkpoint_dir {
            let save = |name: &str, f: &dyn Fn(&Path) -> Result<(), String>| {
                save_atomic(dir, name, f).map_err(PpoError::Checkpoint)
            };
            save("actor.bpk", &|p| {
                actor.clone().save_file(p).map_err(|e| e.to_string())
            })?;
            save("critic.bpk", &|p| {
                critic.clone().save_file(p).map_err(|e| e.to_string())
            })?;
            save("actor-optim.bpk", &|p| {
                actor_opt.save(p).map_err(|e| e.to_string())
            })?;
            save("critic-optim.bpk", &|p| {
                critic_opt.save(p).map_err(|e| e.to_string())
            })?;
            if better {
                let (_, net) = best.as_ref().expect("just set");
                save("best.bpk", &|p| {
                    net.clone().save_file(p).map_err(|e| e.to_string())
                })?;
            }
            let st = PpoState {
                net: cfg.net,
                outputs,
                discrete,
                seed: cfg.seed,
                update,
                episodes: episodes_total,
                episode_seed,
                env_seeds: envs.iter().map(|e| e.seed).collect(),
                rng_word_pos: rng.get_word_pos().to_string(),
                best_update: best.as_ref().map(|(b, _)| b.update),
                first_lap_s,
                history: history.clone(),
            };
            write_state(dir, ALGO, &st).map_err(PpoError::Checkpoint)?;
        }
        last_update_s = t0.elapsed().as_secs_f64();
        if reached {
            break;
        }
    }
    let (b, net) = best.expect("at least one update ran");
    Ok(PpoResult {
        net,
        best_update: b.update,
        history,
        first_lap_s,
    })
}

fn log_softmax_at(logits: &[f32], k: usize) -> f32 {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let lse = m + logits.iter().map(|&x| (x - m).exp()).sum::<f32>().ln();
    logits[k] - lse
}

fn sample_categorical(logits: &[f32], rng: &mut ChaCha8Rng) -> usize {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let w: Vec<f32> = logits.iter().map(|&x| (x - m).exp()).collect();
    let mut u = rng.random::<f32>() * w.iter().sum::<f32>();
    for (i, &x) in w.iter().enumerate() {
        if u < x {
            return i;
        }
        u -= x;
    }
    w.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperparameters_file_like_deepracer_for_cloud() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("hyperparameters.json");
        std::fs::write(
            &p,
            r#"{"batch_size": 32, "beta_entropy": 0.02, "discount_factor": 0.99, "e_greedy_value": 0.05,
                "epsilon_steps": 10000, "exploration_type": "categorical", "loss_type": "huber",
                "lr": "0.0005", "num_episodes_between_training": 10, "num_epochs": 3, "stack_size": 1,
                "term_cond_avg_score": 350.0, "term_cond_max_episodes": 1000, "sac_alpha": 0.2}"#,
        )
        .unwrap();
        let h = Hyper::from_file(&p).unwrap();
        assert_eq!(
            (h.batch_size, h.num_epochs, h.num_episodes_between_training),
            (32, 3, 10)
        );
        assert_eq!(
            (h.lr, h.beta_entropy, h.discount_factor),
            (0.0005, 0.02, 0.99)
        );
        assert_eq!((h.max_episodes, h.target_score), (Some(1000), Some(350.0)));
        std::fs::write(&p, r#"{"batch_size": 6.5}"#).unwrap();
        let e = Hyper::from_file(&p).unwrap_err();
        assert!(
            e.contains("hyperparameters.json") && e.contains("batch_size"),
            "{e}"
        );
        std::fs::write(&p, r#"{"lr": [1]}"#).unwrap();
        assert!(Hyper::from_file(&p)
            .unwrap_err()
            .contains("lr: expected a number"));
    }

    #[test]
    fn categorical_helpers() {
        let l = [0.0f32, (3.0f32).ln()];
        assert!((log_softmax_at(&l, 1) - 0.75f32.ln()).abs() < 1e-6);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let ones = (0..4000)
            .filter(|_| sample_categorical(&l, &mut rng) == 1)
            .count();
        assert!((2850..3150).contains(&ones), "{ones}");
    }
}
