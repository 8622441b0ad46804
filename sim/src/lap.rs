//! Continuous lap running, as in DeepRacer evaluation: the car never stops
//! for an episode end. After an off-track it is put back on the centre line
//! at the nearest point (the event is counted); completed laps are timed in
//! simulated time. The daemon's headless mode, the trainer's evaluation and
//! `car-sim expert` all run laps through this one type.

use serde::{Deserialize, Serialize};

use crate::expert::Expert;
use crate::params::Params;
use crate::sim::{CarAction, Sim, SimConfig, Termination, STEP_DT};
use crate::track::Track;

/// What one continuous step produced.
#[derive(Debug, Clone, Copy)]
pub struct LapStep<'a> {
    pub params: &'a Params,
    /// Lap time in seconds when a lap was completed on this step.
    pub lap_completed: Option<f64>,
    /// The car left the track on this step and was put back.
    pub offtrack: bool,
    /// The car drove the wrong way for too long and was turned around.
    pub reversed: bool,
}

/// Lap results so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LapReport {
    pub track: String,
    pub laps_completed: usize,
    pub lap_times_s: Vec<f64>,
    pub offtrack_events: u32,
    pub steps: u64,
}

/// Drives a [`Sim`] continuously and keeps lap statistics.
#[derive(Debug, Clone)]
pub struct LapRunner {
    sim: Sim,
    lap_times: Vec<f64>,
    lap_start_s: f64,
    penalty_s: f64,
    offtrack_penalty_s: f64,
    offtrack_events: u32,
    reversed_events: u32,
    total_steps: u64,
}

impl LapRunner {
    pub fn new(sim: Sim) -> LapRunner {
        LapRunner {
            sim,
            lap_times: Vec::with_capacity(256),
            lap_start_s: 0.0,
            penalty_s: 0.0,
            offtrack_penalty_s: 0.0,
            offtrack_events: 0,
            reversed_events: 0,
            total_steps: 0,
        }
    }

    /// Seconds added to the current lap per off-track (0 by default;
    /// DeepRacer races use a few seconds).
    pub fn with_offtrack_penalty(mut self, seconds: f64) -> LapRunner {
        self.offtrack_penalty_s = seconds.max(0.0);
        self
    }

    pub fn sim(&self) -> &Sim {
        &self.sim
    }
    /// Mutable access, e.g. for `render_into`.
    pub fn sim_mut(&mut self) -> &mut Sim {
        &mut self.sim
    }

    /// New run: the sim is reset with `seed`, statistics cleared.
    pub fn reset(&mut self, seed: u64) {
        self.sim.reset(seed);
        self.lap_times.clear();
        self.lap_start_s = 0.0;
        self.penalty_s = 0.0;
        self.offtrack_events = 0;
        self.reversed_events = 0;
        self.total_steps = 0;
    }

    pub fn lap_times_s(&self) -> &[f64] {
        &self.lap_times
    }
    pub fn laps_completed(&self) -> usize {
        self.lap_times.len()
    }
    pub fn offtrack_events(&self) -> u32 {
        self.offtrack_events
    }
    pub fn reversed_events(&self) -> u32 {
        self.reversed_events
    }
    pub fn steps(&self) -> u64 {
        self.total_steps
    }
    /// Simulated seconds since the run started.
    pub fn time_s(&self) -> f64 {
        self.total_steps as f64 * STEP_DT
    }
    /// Progress of the current lap, 0-100.
    pub fn lap_progress(&self) -> f64 {
        self.sim.params().progress
    }

    pub fn report(&self) -> LapReport {
        LapReport {
            track: self.sim.track().name().to_string(),
            laps_completed: self.lap_times.len(),
            lap_times_s: self.lap_times.clone(),
            offtrack_events: self.offtrack_events,
            steps: self.total_steps,
        }
    }

    /// One control step (1/15 s of simulated time).
    pub fn step(&mut self, action: CarAction) -> LapStep<'_> {
        let term = self.sim.step(action).termination;
        self.total_steps += 1;
        let mut lap_completed = None;
        let len = self.sim.track().length();
        if self.sim.travelled_m() >= len {
            // Interpolate the crossing inside the step for sub-step timing.
            let prev = self.sim.prev_travelled_m();
            let now = self.sim.travelled_m();
            let frac = if now > prev {
                ((len - prev) / (now - prev)).clamp(0.0, 1.0)
            } else {
                1.0
            };
            let crossing = (self.total_steps as f64 - 1.0 + frac) * STEP_DT;
            let t = crossing - self.lap_start_s + self.penalty_s;
            self.lap_times.push(t);
            self.lap_start_s = crossing;
            self.penalty_s = 0.0;
            self.sim.rebase_lap();
            lap_completed = Some(t);
        }
        let mut offtrack = false;
        let mut reversed = false;
        match term {
            Some(Termination::OffTrack) => {
                offtrack = true;
                self.offtrack_events += 1;
                self.penalty_s += self.offtrack_penalty_s;
                self.sim.recover();
            }
            Some(Termination::Reversed) => {
                reversed = true;
                self.reversed_events += 1;
                self.sim.recover();
            }
            Some(_) => self.sim.clear_termination(),
            None => {}
        }
        LapStep {
            params: self.sim.params(),
            lap_completed,
            offtrack,
            reversed,
        }
    }
}

/// Runs the expert for `laps` laps (or until a step budget of three times
/// the expected time runs out) and reports, as `car-sim expert` prints.
pub fn run_expert_laps(track: Track, laps: usize, speed_mps: f64, cfg: SimConfig) -> LapReport {
    let expected_steps = track.length() / speed_mps.max(0.1) / STEP_DT;
    let budget = (laps.max(1) as f64 * expected_steps * 3.0) as u64 + 300;
    let mut runner = LapRunner::new(Sim::new(track, cfg));
    let expert = Expert::new(speed_mps);
    while runner.laps_completed() < laps && runner.steps() < budget {
        let a = expert.act(runner.sim());
        runner.step(a);
    }
    runner.report()
}
