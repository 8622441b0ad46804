//! The policy: a DeepRacer model and everything between a camera frame and
//! an action. Shared by the daemon and the trainer's evaluation so that both
//! run exactly the same preprocessing and action mapping.
//!
//! Owns: `model_metadata.json` (read and write), model folders and archives
//! (`.onnx`, `.tar.gz`, DeepRacer TensorFlow `model.pb`), inference backends
//! (ONNX Runtime loaded at run time, tract), preprocessing (frame -> input
//! tensor), action mapping (policy outputs -> steering and throttle commands,
//! the stock formulas), ONNX export for tests and the trainer, and the
//! `check` routine behind `car-runtime check-model`.
//!
//! Must not: touch hardware, spawn threads, or allocate in
//! `Preprocessor::run` or `ActionMapper::map` once warm (`Policy::infer`
//! allocates only what the engine itself allocates; see `Policy`).

pub mod action;
pub mod backend;
pub mod check;
#[cfg(any(test, feature = "export"))]
pub mod export;
pub mod frame;
pub mod jpeg;
pub mod metadata;
pub mod model;
pub mod policy;
pub mod preprocess;
mod rewrite;

pub use action::{ActionMapper, MappedAction};
pub use backend::{Backend, BackendChoice, BackendError, BackendKind};
pub use frame::{Frame, PixelFormat};
pub use metadata::{ActionSpace, DiscreteAction, MetadataError, ModelMetadata, Range, Sensor};
pub use model::{GraphFormat, Model, ModelError, ModelFiles};
pub use policy::{Policy, PolicyError};
pub use preprocess::{InputSpec, Layout, PreprocessError, Preprocessor};
