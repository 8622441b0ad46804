//! The part of the loop between a frame and an action: preprocess, infer,
//! map. Behind a trait so the loop can swap models between frames and tests
//! can inject failing or slow inference.

use crate::frame::Frame;

/// Per-stage times of one [`Brain::decide`] call, microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    pub preprocess_us: f32,
    pub inference_us: f32,
    pub mapping_us: f32,
}

/// The one action type inside the car: what the policy asked for, as the
/// stock car's navigation node computes it, with the normalised commands
/// for the servo driver (throttle already scaled by the max-speed
/// setting). The web UI has its own DTO, converted at the boundary.
pub use policy::MappedAction;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BrainError(pub String);

/// Frame -> action. Implementations must not allocate once warm.
pub trait Brain: Send {
    fn decide(
        &mut self,
        frame: &Frame<'_>,
        max_speed_scale: f32,
        times: &mut StageTimes,
    ) -> Result<MappedAction, BrainError>;
    /// Which inference backend runs it ("tract", "onnxruntime", ...).
    fn backend(&self) -> &str;
    /// Where it was loaded from (for status and logs).
    fn origin(&self) -> &str;
}
