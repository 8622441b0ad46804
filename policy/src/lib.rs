//! The policy: a DeepRacer model and everything between a camera frame and
//! an action. Shared by the daemon and the trainer's evaluation so that both
//! run exactly the same preprocessing and action mapping.
//!
//! Owns: `model_metadata.json`, model folders and archives, inference
//! backends, preprocessing (frame -> input tensor) and action mapping
//! (policy outputs -> steering and throttle commands).
//!
//! Must not: touch hardware, spawn threads, or allocate in
//! `Preprocessor::run`, `Policy::infer` or `ActionMapper::map` once warm.

pub mod frame;
pub mod jpeg;

pub use frame::{Frame, PixelFormat};
