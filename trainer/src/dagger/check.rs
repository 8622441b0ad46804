//! After training: the network drives one check lap of every training
//! track (no randomisation), the iteration's figures are gathered, and the
//! best network so far is kept. Cut here because this decides which
//! network the run exports; PPO picks its best network with the same laps.

use burn::module::Module;
use burn::prelude::*;
use policy::ActionMapper;
use sim::{LapRunner, Sim, SimConfig, Track};

use super::collect::Collected;
use super::{IterStats, Plan, Run};
use crate::net::{self, Net, INPUT_LEN};

impl Run<'_> {
    /// Check laps with `net`, and the iteration's figures; keeps the
    /// network if it scores better than the best so far.
    pub(super) fn check(
        &mut self,
        iteration: usize,
        net: &Net,
        plan: &Plan,
        collected: &Collected,
        loss: f64,
    ) -> IterStats {
        let cfg = self.cfg;
        let valid = net.valid();
        let check = check_laps(
            &valid,
            &cfg.tracks,
            &self.mapper,
            cfg.eval_speed_scale,
            &self.device,
        );
        let stats = IterStats {
            iteration,
            samples: self.data.len(),
            expert_mix: plan.expert_mix,
            offtrack_per_1000: collected.offtrack as f64 * 1000.0 / collected.steps.max(1) as f64,
            loss,
            train_steps_total: self.history.last().map_or(0, |s| s.train_steps_total)
                + plan.train_steps,
            eval_progress: check.progress,
            eval_laps: check.laps,
            eval_offtrack: check.offtrack,
            eval_lap_time_s: check.lap_time,
            elapsed_s: self.clock.elapsed(),
        };
        if self
            .best
            .as_ref()
            .is_none_or(|(s, _, _)| stats.score() > *s)
        {
            self.best = Some((stats.score(), iteration, valid));
        }
        stats
    }
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
