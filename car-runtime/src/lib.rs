//! The daemon's library: frame sources, the control loop, the arbiter,
//! telemetry, recording and configuration. `main.rs` is only the CLI.
//!
//! Owns: the frame -> PWM hot path and its thread, modes and safety rules
//! (e-stop latch, dead-man, stall timeout), the config file.
//!
//! Must not: run the control loop behind the web server or any async
//! runtime, allocate or take a contended lock per frame, or let any error
//! path leave throttle anywhere but neutral.

pub mod arbiter;
pub mod arena;
pub mod brain;
pub mod clock;
pub mod commands;
pub mod config;
pub mod control;
pub mod frame;
pub mod notify;
pub mod pipeline;
pub mod recorder;
pub mod source;
pub mod supervisor;
pub mod telemetry;
pub mod web;
pub mod wheels;
