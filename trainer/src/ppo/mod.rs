//! Clipped PPO with GAE, as the DeepRacer console trains: separate policy
//! and value networks, a reward function called on every step with the
//! DeepRacer `params`, updates after every `episodes_per_update` episodes.
//! Discrete spaces sample a categorical over the logits; continuous ones a
//! Gaussian around the network's two outputs with a learnt, state-free
//! standard deviation. The exported model is the policy network alone: the
//! logits (the car takes the argmax) or the mean (the car clips it to
//! [-1, 1]), exactly what a console export gives the car.
//!
//! One update runs in phases, each in its own file so that each reads on its
//! own: `setup` builds or resumes the run, `rollout` drives the simulated
//! cars, `gae` turns their rewards into advantages, `update` is the clipped
//! PPO optimisation, `check` drives the check laps and keeps the best
//! network, and `save` writes the checkpoint. `train` here only sequences
//! them, in the order a seeded run depends on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::{Module, Param};
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use policy::{ActionMapper, ActionSpace};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sim::{Randomization, Track};

use crate::dagger::RunClock;
use crate::net::{Net, NetKind};
use crate::reward::{Reward, RewardError};

mod check;
mod gae;
mod rollout;
mod save;
mod setup;
mod update;

use rollout::Env;

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

const LN_2PI: f32 = 1.837_877;

/// The networks PPO trains and their optimisers, with the shape both
/// networks were built for. Kept apart from [`Run`] because burn's optimiser
/// step takes a network by value and hands back the new one: the learner
/// passes through `Learner::optimise` whole while the run lends its random
/// stream.
struct Learner {
    actor: Actor,
    critic: Net,
    actor_opt: ModuleOptimizer,
    critic_opt: ModuleOptimizer,
    outputs: usize,
    discrete: bool,
    /// The autodiff device the networks train on.
    device: Device,
}

/// Everything else that lives from one update to the next: the cars, the
/// random stream, the counters a checkpoint keeps, the best network so far.
struct Run<'c> {
    cfg: &'c PpoConfig,
    clock: RunClock,
    /// The inference device (rollouts, values, check laps).
    device: Device,
    mapper: ActionMapper,
    rng: ChaCha8Rng,
    history: Vec<UpdateStats>,
    best: Option<(UpdateStats, Net)>,
    first_lap_s: Option<f64>,
    episodes_total: usize,
    episode_seed: u64,
    first_update: usize,
    envs: Vec<Env>,
    /// One camera frame per car, rendered side by side for one network call.
    frames: Vec<u8>,
    /// How long the last update took decides whether another fits the budget.
    last_update_s: f64,
}

impl Run<'_> {
    /// Whether the run is done before its next update: another update of
    /// the last one's length (with 10 % to spare) would overrun the time
    /// budget, or the episode limit is reached.
    fn should_stop(&self) -> bool {
        let cfg = self.cfg;
        (!self.history.is_empty()
            && self.clock.elapsed() + self.last_update_s * 1.1 > cfg.time_budget.as_secs_f64())
            || cfg
                .hyper
                .max_episodes
                .is_some_and(|m| self.episodes_total >= m)
    }

    fn finish(self) -> PpoResult {
        let (b, net) = self.best.expect("at least one update ran");
        PpoResult {
            net,
            best_update: b.update,
            history: self.history,
            first_lap_s: self.first_lap_s,
        }
    }
}

/// Train with PPO. `progress` sees every finished update. With `resume`,
/// continue the run whose checkpoint is in `cfg.checkpoint_dir`; the time
/// budget and `max_episodes` count the earlier runs too. Runs in one
/// process take turns, as DAgger's do.
pub fn train(
    cfg: &PpoConfig,
    resume: bool,
    mut progress: impl FnMut(&UpdateStats),
) -> Result<PpoResult, PpoError> {
    let _turn = crate::dagger::one_run_at_a_time();
    let (mut run, mut learner) = Run::start(cfg, resume)?;
    for update in run.first_update.. {
        if run.should_stop() {
            break;
        }
        let t0 = Instant::now();
        let done = run.collect(&learner)?;
        let samples = run.advantages(&learner.critic, &done);
        let losses;
        (learner, losses) = learner.optimise(&samples, &mut run.rng, &cfg.hyper);
        let (stats, better) = run.check(update, &learner.actor, &done, samples.len(), &losses);
        progress(&stats);
        let reached = cfg
            .hyper
            .target_score
            .is_some_and(|s| stats.reward_mean >= s);
        run.history.push(stats);
        run.save(update, &learner, better)?;
        run.last_update_s = t0.elapsed().as_secs_f64();
        if reached {
            break;
        }
    }
    Ok(run.finish())
}

#[cfg(test)]
mod tests {
    use super::rollout::{log_softmax_at, sample_categorical};
    use super::*;
    use rand::SeedableRng;

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
