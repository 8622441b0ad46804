//! Advantages by generalised advantage estimation (GAE) from the critic's
//! values, and the flat per-step arrays the optimisation draws minibatches
//! from. Cut here because it is pure arithmetic on the finished episodes:
//! no random draws, no training, one place to read how a reward becomes
//! the advantage the policy loss weighs.

use burn::module::Module;

use super::rollout::Traj;
use super::Run;
use crate::net::{self, Net, INPUT_LEN};

/// Every step of an update's episodes, in episode order.
pub(super) struct Samples<'d> {
    pub(super) frames: Vec<&'d [u8]>,
    pub(super) actions: Vec<[f32; 2]>,
    /// Log-probability of each action under the policy that drove it.
    pub(super) logp: Vec<f32>,
    /// Normalised to mean 0, deviation 1 over the update.
    pub(super) adv: Vec<f32>,
    /// The critic's target: advantage plus value.
    pub(super) ret: Vec<f32>,
}

impl Samples<'_> {
    pub(super) fn len(&self) -> usize {
        self.adv.len()
    }
}

impl Run<'_> {
    /// Advantages and returns of `done`; every episode ended (off track,
    /// lap done or step limit), so nothing is bootstrapped.
    pub(super) fn advantages<'d>(&self, critic: &Net, done: &'d [Traj]) -> Samples<'d> {
        let h = &self.cfg.hyper;
        let critic_valid = critic.valid();
        let mut adv_all = Vec::new();
        let mut ret_all = Vec::new();
        for t in done {
            let n = t.rewards.len();
            let mut values = Vec::with_capacity(n);
            for chunk in t.frames.chunks(INPUT_LEN * 256) {
                values.extend(net::infer(
                    &critic_valid,
                    chunk,
                    chunk.len() / INPUT_LEN,
                    &self.device,
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
        normalise(&mut adv_all);
        Samples {
            frames: done
                .iter()
                .flat_map(|t| t.frames.chunks_exact(INPUT_LEN))
                .collect(),
            actions: done
                .iter()
                .flat_map(|t| t.actions.iter().copied())
                .collect(),
            logp: done.iter().flat_map(|t| t.logp.iter().copied()).collect(),
            adv: adv_all,
            ret: ret_all,
        }
    }
}

/// Scale to mean 0 and deviation 1, so the policy's step size does not
/// depend on the reward function's scale.
fn normalise(adv: &mut [f32]) {
    let n = adv.len();
    let mean = adv.iter().sum::<f32>() / n as f32;
    let var = adv.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / n as f32;
    let sd = var.sqrt().max(1e-6);
    adv.iter_mut().for_each(|a| *a = (*a - mean) / sd);
}
