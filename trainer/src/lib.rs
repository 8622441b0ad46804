//! The trainer: turns the simulator's expert driver into a model the car runs
//! unchanged (`model.onnx` + DeepRacer `model_metadata.json`).
//!
//! Owns: data collection in the simulator (DAgger: states the network visits,
//! labelled by the expert, with domain randomisation), training the DeepRacer
//! shallow CNN or a smaller one with burn on the CPU, checkpoints and resume,
//! ONNX export (burn-onnx), reports and evaluation.
//!
//! Must not: be a dependency of the daemon (burn is a 20-minute build the car
//! never needs); copy the car's preprocessing or action mapping: labels are
//! built through `policy::ActionMapper`, and evaluation loads the exported
//! ONNX through `policy`, exactly as the car does.

pub mod actions;
pub mod dagger;
pub mod dataset;
pub mod eval;
pub mod export;
pub mod net;
pub mod ppo;
pub mod report;
pub mod reward;
