//! The rollout: the simulated cars drive with the current policy, sampling
//! each action, until enough episodes have ended for one update. Cut here
//! because it is the only phase that calls the reward function and the only
//! one that draws actions from the random stream; the draws happen car by
//! car, step by step, in the order a seeded run replays.

use burn::module::Module;
use policy::{ActionMapper, MappedAction};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sim::Sim;

use super::{Learner, PpoError, Run, LN_2PI};
use crate::dagger::normal;
use crate::net::{self, INPUT_LEN};

/// One car's episode in progress.
#[derive(Default)]
pub(super) struct Traj {
    pub(super) frames: Vec<u8>,
    pub(super) actions: Vec<[f32; 2]>,
    pub(super) logp: Vec<f32>,
    pub(super) rewards: Vec<f32>,
    pub(super) progress: f64,
}

pub(super) struct Env {
    pub(super) sim: Sim,
    pub(super) traj: Traj,
    /// Seed of the episode in progress (a resumed run restarts it).
    pub(super) seed: u64,
}

impl Run<'_> {
    /// Roll out until enough episodes have ended; returns them. Episodes
    /// still running carry on into the next update's rollout.
    pub(super) fn collect(&mut self, learner: &Learner) -> Result<Vec<Traj>, PpoError> {
        let cfg = self.cfg;
        let outputs = learner.outputs;
        let policy = learner.actor.valid();
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
        while done.len() < cfg.hyper.num_episodes_between_training {
            for (i, e) in self.envs.iter_mut().enumerate() {
                net::render(
                    &mut e.sim,
                    &mut self.frames[i * INPUT_LEN..(i + 1) * INPUT_LEN],
                );
            }
            let out = net::infer(&policy.net, &self.frames, self.envs.len(), &self.device);
            for (i, e) in self.envs.iter_mut().enumerate() {
                let o = &out[i * outputs..(i + 1) * outputs];
                let (action, logp, m) = sample_action(
                    o,
                    &std,
                    learner.discrete,
                    &self.mapper,
                    cfg.speed_scale,
                    &mut self.rng,
                );
                e.traj
                    .frames
                    .extend_from_slice(&self.frames[i * INPUT_LEN..(i + 1) * INPUT_LEN]);
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
                    self.episode_seed += 1;
                    e.seed = self.episode_seed;
                    e.sim.reset(e.seed);
                }
            }
        }
        self.episodes_total += done.len();
        Ok(done)
    }
}

/// Draw one action from the policy's outputs `o`: the action as stored for
/// the update (discrete: the index in the first slot), its log-probability,
/// and what the car drives. `std` is the continuous Gaussian's deviation.
fn sample_action(
    o: &[f32],
    std: &[f32],
    discrete: bool,
    mapper: &ActionMapper,
    speed_scale: f64,
    rng: &mut ChaCha8Rng,
) -> ([f32; 2], f32, MappedAction) {
    if discrete {
        let k = sample_categorical(o, rng);
        let mut onehot = vec![0.0f32; o.len()];
        onehot[k] = 1.0;
        (
            [k as f32, 0.0],
            log_softmax_at(o, k),
            mapper.map(&onehot, speed_scale as f32),
        )
    } else {
        let a = [
            o[0] + std[0] * normal(rng) as f32,
            o[1] + std[1] * normal(rng) as f32,
        ];
        let lp = (0..2)
            .map(|j| {
                let z = (a[j] - o[j]) / std[j];
                -0.5 * z * z - std[j].ln() - 0.5 * LN_2PI
            })
            .sum();
        (a, lp, mapper.map(&a, speed_scale as f32))
    }
}

pub(super) fn log_softmax_at(logits: &[f32], k: usize) -> f32 {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let lse = m + logits.iter().map(|&x| (x - m).exp()).sum::<f32>().ln();
    logits[k] - lse
}

pub(super) fn sample_categorical(logits: &[f32], rng: &mut ChaCha8Rng) -> usize {
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
