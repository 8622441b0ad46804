//! The daemon as an app: configuration, the daemon's assembly
//! ([`daemon::assemble`], which tests call), the adapter that gives the web UI
//! its [`web_ui::CarApi`] over the control crate's shared state, and (in
//! `main.rs`) the CLI. The control thread and everything it shares live
//! in `car-control`; its modules are re-exported here under their old
//! paths so that `car_runtime::control::ControlLoop` and the like keep
//! working for tests and tools.

pub use car_control::{
    arbiter, arena, brain, clock, commands, control, frame, notify, pipeline, recorder, source,
    supervisor, telemetry, wheels,
};

pub mod battery;
pub mod config;
pub mod daemon;
pub mod lights;
pub mod web;
