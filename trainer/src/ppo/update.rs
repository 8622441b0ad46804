//! The optimisation: `num_epochs` passes over the rollout in shuffled
//! minibatches, each an Adam step of the clipped PPO objective for the
//! actor (less an entropy bonus) and of the squared error for the critic.
//! Cut here because it is the only phase that changes the networks; it
//! takes the `Learner` by value because burn's optimiser step does.

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::gae::Samples;
use super::{Hyper, Learner, LN_2PI};
use crate::net::{INPUT_H, INPUT_LEN, INPUT_W};

/// Sums over an update's minibatches, for the update's mean figures.
#[derive(Default)]
pub(super) struct Losses {
    pub(super) policy: f64,
    pub(super) value: f64,
    pub(super) entropy: f64,
    pub(super) batches: usize,
}

impl Learner {
    /// Train both networks on `s`; the shuffles draw from `rng`.
    pub(super) fn optimise(
        mut self,
        s: &Samples,
        rng: &mut ChaCha8Rng,
        h: &Hyper,
    ) -> (Learner, Losses) {
        let mut sums = Losses::default();
        let n = s.len();
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..h.num_epochs {
            // Fisher-Yates on the run's own stream, so a seeded run (and its
            // resumption) shuffles alike.
            for i in (1..n).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            for idx in order.chunks(h.batch_size) {
                self = self.minibatch(s, idx, h, &mut sums);
            }
        }
        (self, sums)
    }

    /// One Adam step of each network on the steps `idx` of `s`.
    fn minibatch(mut self, s: &Samples, idx: &[usize], h: &Hyper, sums: &mut Losses) -> Learner {
        let b = idx.len();
        let mut img = Vec::with_capacity(b * INPUT_LEN);
        for &i in idx {
            img.extend(s.frames[i].iter().map(|&v| v as f32));
        }
        let x =
            Tensor::<4>::from_data(TensorData::new(img, [b, 1, INPUT_H, INPUT_W]), &self.device);
        let adv = self.gather(&s.adv, idx);
        let old = self.gather(&s.logp, idx);
        let ret = self.gather(&s.ret, idx);
        let out = self.actor.net.forward(x.clone());
        let (logp, entropy) = self.log_prob_and_entropy(out, &s.actions, idx);
        let ratio = (logp - old).exp();
        let clipped = ratio.clone().clamp(1.0 - h.clip, 1.0 + h.clip);
        let surr = ratio.mul(adv.clone()).min_pair(clipped.mul(adv));
        let policy_loss = surr.mean().neg();
        let loss = policy_loss.clone() - entropy.clone().mul_scalar(h.beta_entropy);
        sums.policy += policy_loss.into_scalar::<f32>() as f64;
        sums.entropy += entropy.into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(loss.backward(), &self.actor);
        self.actor = self.actor_opt.step(h.lr, self.actor, grads);

        let v = self.critic.forward(x).reshape([b]);
        let value_loss = (v - ret).powi_scalar(2).mean();
        sums.value += value_loss.clone().into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(value_loss.backward(), &self.critic);
        self.critic = self.critic_opt.step(h.lr, self.critic, grads);
        sums.batches += 1;
        self
    }

    /// The entries `idx` of one per-step column, as a tensor.
    fn gather(&self, column: &[f32], idx: &[usize]) -> Tensor<1> {
        Tensor::<1>::from_data(
            TensorData::new(
                idx.iter().map(|&i| column[i]).collect::<Vec<_>>(),
                [idx.len()],
            ),
            &self.device,
        )
    }

    /// Log-probability under the current policy of each action taken, and
    /// the policy's entropy: a categorical over the logits `out`, or the
    /// Gaussian around them with the learnt deviation.
    fn log_prob_and_entropy(
        &self,
        out: Tensor<2>,
        actions: &[[f32; 2]],
        idx: &[usize],
    ) -> (Tensor<1>, Tensor<1>) {
        let b = idx.len();
        if self.discrete {
            let outputs = self.outputs;
            let lsm = log_softmax(out, 1);
            let mut onehot = vec![0.0f32; b * outputs];
            for (r, &i) in idx.iter().enumerate() {
                onehot[r * outputs + actions[i][0] as usize] = 1.0;
            }
            let onehot =
                Tensor::<2>::from_data(TensorData::new(onehot, [b, outputs]), &self.device);
            let logp = lsm.clone().mul(onehot).sum_dim(1).reshape([b]);
            let entropy = lsm.clone().exp().mul(lsm).sum_dim(1).mean().neg();
            (logp, entropy)
        } else {
            let a: Vec<f32> = idx.iter().flat_map(|&i| actions[i]).collect();
            let a = Tensor::<2>::from_data(TensorData::new(a, [b, 2]), &self.device);
            let log_std = self.actor.log_std.val();
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
        }
    }
}
