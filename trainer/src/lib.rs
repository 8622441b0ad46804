//! The trainer: turns the simulator's expert driver into a model the car runs
//! unchanged (`model.onnx` + DeepRacer `model_metadata.json`).
//!
//! Owns: data collection in the simulator (DAgger: states the learner visits,
//! labelled by the expert, with domain randomisation), fitting, export and
//! evaluation. The first network is a pooled-image readout fitted in closed
//! form (ridge regression, optionally over a fixed random ReLU layer): it
//! trains in seconds on a laptop CPU and needs no deep-learning framework.
//!
//! Must not: be a dependency of the daemon; copy the car's preprocessing or
//! action mapping (evaluation goes through `policy`, exactly as on the car).

pub mod dagger;
pub mod eval;
pub mod export;
pub mod features;
pub mod report;
pub mod ridge;
