//! Everything on the car's control thread and what it shares with the
//! rest of the process: frame sources, the control loop and its
//! supervisor, the arbiter, the shared state (command queues, e-stop,
//! model status), the telemetry ring and frame slot, the recorder, the
//! frame arena and the model loader.
//!
//! The hot path, frame -> PWM, is [`control::ControlLoop`]'s tick:
//! [`frame::FrameSource::next_frame`] -> [`brain::Brain::decide`]
//! ([`pipeline::PolicyBrain`]: preprocess, inference, action mapping) ->
//! [`arbiter::Arbiter::decide`] -> [`wheels::Wheels`]
//! ([`pipeline::ServoWheels`]).
//!
//! Must not: depend on the web server, the CLI or any async runtime (the
//! `car-runtime` app adapts this crate to them); allocate or take a
//! contended lock per frame; let any error path leave the throttle
//! anywhere but neutral.

#![warn(missing_docs)]

pub mod arbiter;
pub mod arena;
pub mod brain;
pub mod clock;
pub mod commands;
pub mod control;
pub mod frame;
pub mod notify;
pub mod pipeline;
pub mod recorder;
pub mod source;
pub mod supervisor;
pub mod telemetry;
pub mod wheels;
