//! After the optimisation: the policy drives one check lap of every
//! training track, the update's figures are gathered, and the best network
//! so far is kept. Cut here because this is what decides which network the
//! run exports; the training itself never looks at it.

use burn::module::Module;

use super::rollout::Traj;
use super::update::Losses;
use super::{Actor, Run, UpdateStats};
use crate::dagger::{check_laps, Check};

impl Run<'_> {
    /// Check laps with `actor`, and the update's figures; keeps the network
    /// if it beats the best so far and says whether it did.
    pub(super) fn check(
        &mut self,
        update: usize,
        actor: &Actor,
        done: &[Traj],
        steps: usize,
        losses: &Losses,
    ) -> (UpdateStats, bool) {
        let cfg = self.cfg;
        let valid = actor.net.valid();
        let check = check_laps(
            &valid,
            &cfg.tracks,
            &self.mapper,
            cfg.speed_scale,
            &self.device,
        );
        let stats = self.stats(update, done, steps, losses, &check);
        if stats.clean() && self.first_lap_s.is_none() {
            self.first_lap_s = Some(stats.elapsed_s);
        }
        let better = match &self.best {
            None => true,
            // A clean update beats every unclean one and the latest clean
            // one wins; among unclean ones an off-track costs 10 % of a lap.
            Some((b, _)) if stats.clean() || b.clean() => stats.clean(),
            Some((b, _)) => {
                stats.eval_progress - 10.0 * stats.eval_offtrack as f64
                    > b.eval_progress - 10.0 * b.eval_offtrack as f64
            }
        };
        if better {
            self.best = Some((stats.clone(), valid));
        }
        (stats, better)
    }

    /// The update's figures: its episodes' means, the mean losses of its
    /// minibatches and the check laps.
    fn stats(
        &self,
        update: usize,
        done: &[Traj],
        steps: usize,
        losses: &Losses,
        check: &Check,
    ) -> UpdateStats {
        let b = losses.batches.max(1) as f64;
        UpdateStats {
            update,
            episodes: self.episodes_total,
            steps,
            reward_mean: done
                .iter()
                .map(|t| t.rewards.iter().map(|&r| r as f64).sum::<f64>())
                .sum::<f64>()
                / done.len() as f64,
            progress_mean: done.iter().map(|t| t.progress).sum::<f64>() / done.len() as f64,
            entropy: losses.entropy / b,
            policy_loss: losses.policy / b,
            value_loss: losses.value / b,
            eval_progress: check.progress,
            eval_offtrack: check.offtrack,
            eval_lap_time_s: check.lap_time,
            elapsed_s: self.clock.elapsed(),
        }
    }
}
