//! The simulator: DeepRacer track files, a kinematic car, a camera renderer,
//! reward `params` and episode rules, continuous lap running and an expert
//! driver.
//!
//! Owns: everything about the simulated world. Deterministic: the same seed
//! and actions give bit-identical observations and params (no clocks, no
//! threads, no global state; randomness comes only from the reset seed).
//!
//! Must not: touch hardware, threads, clocks or the file system beyond
//! loading track files; depend on inference or the daemon; allocate per
//! step or per frame once running.
//!
//! Typical use:
//! ```
//! use sim::{Sim, SimConfig, Track, CarAction, Channels};
//! let mut sim = Sim::new(Track::builtin("oval").unwrap(), SimConfig::default());
//! sim.reset(7);
//! let r = sim.step(CarAction { steering_deg: 0.0, speed_mps: 1.0 });
//! assert!(r.termination.is_none());
//! let mut frame = vec![0u8; 160 * 120];
//! sim.render_into(&mut frame, 160, 120, Channels::Gray).unwrap();
//! ```

pub mod expert;
pub mod lap;
pub mod npy;
pub mod params;
pub mod render;
mod rng;
pub mod sim;
pub mod track;
#[cfg(feature = "trackgen")]
pub mod trackgen;

pub use expert::Expert;
pub use lap::{run_expert_laps, LapReport, LapRunner, LapStep};
pub use params::Params;
pub use render::{CameraConfig, Channels, Randomization, RenderError};
pub use sim::{
    CarAction, CarConfig, CarState, Sim, SimConfig, StartPolicy, StepResult, Termination, STEP_DT,
    STEP_HZ,
};
pub use track::{Track, TrackError, TrackPos};
