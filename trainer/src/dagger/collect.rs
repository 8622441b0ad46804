//! Collection, the heart of DAgger: the cars drive with the mixed policy
//! (each step the expert's with probability `expert_mix`, else the
//! network's), the expert labels every state they visit, and each labelled
//! state joins the dataset at once. Labelling and aggregating cannot be
//! phases of their own: the expert labels the state the simulator is in
//! now, before the car steps on. Cut here because this is the only phase
//! that drives the simulator.

use burn::module::Module;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sim::{CarAction, Sim, SimConfig, StartPolicy};

use super::{expert_label, normal, Plan, Progress, Run, TrainConfig};
use crate::actions::Label;
use crate::net::{self, Net, INPUT_LEN};

pub(super) struct Car {
    sim: Sim,
    /// Max-speed setting of the episode in progress.
    scale: f64,
    steps_left: usize,
    /// The expert's steering noise, slowly varying.
    noise: f64,
}

/// The simulated cars, spread over the training tracks; each starts its
/// first episode in the first collection.
pub(super) fn cars(cfg: &TrainConfig) -> Vec<Car> {
    (0..cfg.parallel.max(1))
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
        .collect()
}

/// What an iteration's collection gathered.
pub(super) struct Collected {
    /// Index in the dataset of its first sample.
    pub(super) from: usize,
    pub(super) steps: usize,
    /// Episodes that ended off the track.
    pub(super) offtrack: usize,
}

impl Run<'_> {
    /// Drive until `plan.samples` states are labelled; `net` drives the
    /// steps the expert does not.
    pub(super) fn collect(
        &mut self,
        net: &Net,
        iteration: usize,
        plan: &Plan,
        progress: &mut impl FnMut(Progress<'_>),
    ) -> Collected {
        let infer_net = (plan.expert_mix < 1.0).then(|| net.valid());
        let from = self.data.len();
        let mut offtrack = 0usize;
        let mut steps = 0usize;
        while steps < plan.samples {
            self.start_episodes_and_render();
            let outputs = infer_net
                .as_ref()
                .map(|n| net::infer(n, &self.frames, self.cars.len(), &self.device));
            for (i, car) in self.cars.iter_mut().enumerate() {
                let (label, expert_speed) = expert_label(&car.sim, car.scale);
                self.data
                    .push(&self.frames[i * INPUT_LEN..(i + 1) * INPUT_LEN], label);
                steps += 1;
                let by_expert = outputs.is_none() || self.rng.random_bool(plan.expert_mix);
                let action = if by_expert {
                    expert_action(car, label, expert_speed, plan.noise_amp, &mut self.rng)
                } else {
                    let k = self.targets.outputs();
                    let o = &outputs.as_ref().unwrap()[i * k..(i + 1) * k];
                    let m = self.mapper.map(o, car.scale as f32);
                    CarAction::from_commands(
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
                samples: self.data.len() - from,
            });
        }
        Collected {
            from,
            steps,
            offtrack,
        }
    }

    /// Start a fresh episode, at a fresh max-speed setting, on every car
    /// whose last one ended; then render what every car's camera sees.
    fn start_episodes_and_render(&mut self) {
        let cfg = self.cfg;
        for (i, car) in self.cars.iter_mut().enumerate() {
            if car.steps_left == 0 {
                self.episode += 1;
                car.sim
                    .reset(cfg.seed.wrapping_mul(1_000_003) ^ self.episode);
                car.scale = self.rng.random_range(cfg.speed_scale.0..=cfg.speed_scale.1);
                car.steps_left = cfg.episode_steps;
                car.noise = 0.0;
            }
            net::render(
                &mut car.sim,
                &mut self.frames[i * INPUT_LEN..(i + 1) * INPUT_LEN],
            );
        }
    }
}

/// The expert's command with the car's steering noise, which drifts so the
/// car wanders off the line and the data shows the way back.
fn expert_action(
    car: &mut Car,
    label: Label,
    expert_speed: f64,
    noise_amp: f64,
    rng: &mut ChaCha8Rng,
) -> CarAction {
    car.noise = 0.9 * car.noise + 0.1 * normal(rng) * noise_amp * 4.0;
    let car_cfg = car.sim.config().car;
    CarAction::from_commands(
        label.steer as f64 + car.noise,
        expert_speed / car_cfg.max_speed_mps,
        &car_cfg,
    )
}
