//! The trainer: turns the simulator's expert driver into a model the car runs
//! unchanged (`model.onnx` + DeepRacer `model_metadata.json`).
//!
//! Owns: imitation (DAgger: states the network visits, labelled by the
//! simulator's expert, with domain randomisation) and reinforcement learning
//! (PPO with DeepRacer reward functions: presets, or racers' Python files in
//! embedded CPython), training the DeepRacer shallow CNN or a smaller one
//! with burn on the CPU, checkpoints and resume, ONNX export
//! (burn-onnx), reports and evaluation.
//!
//! Must not: be a dependency of the daemon (burn is a 20-minute build the car
//! never needs); copy the car's preprocessing or action mapping: labels are
//! built through `policy::ActionMapper`, and evaluation loads the exported
//! ONNX through `policy`, exactly as the car does.

pub mod actions;
pub mod checkpoint;
pub mod dagger;
pub mod dataset;
pub mod eval;
pub mod export;
pub mod net;
pub mod ppo;
pub mod report;
pub mod reward;
