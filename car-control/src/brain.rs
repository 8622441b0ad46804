//! The part of the loop between a frame and an action: preprocess, infer,
//! map. Behind a trait so the loop can swap models between frames and tests
//! can inject failing or slow inference.

use crate::frame::Frame;

/// Per-stage times of one [`Brain::decide`] call, microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// Decode (JPEG) and preprocessing, µs.
    pub preprocess_us: f32,
    /// The model's forward pass, µs.
    pub inference_us: f32,
    /// Policy outputs to action (the stock formulas), µs.
    pub mapping_us: f32,
}

/// The one action type inside the car: what the policy asked for, as the
/// stock car's navigation node computes it, with the normalised commands
/// for the servo driver (throttle already scaled by the max-speed
/// setting). The web UI has its own DTO, converted at the boundary.
pub use policy::MappedAction;

/// A frame the brain could not turn into an action (preprocess, inference,
/// non-finite outputs, an engine panic). The loop counts it and the stall rule
/// stops the car; the text is for the log.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BrainError(pub String);

/// Frame -> action. Implementations must not allocate once warm.
pub trait Brain: Send {
    /// Preprocess `frame`, infer, and map the outputs to an action with the
    /// throttle scaled by `max_speed_scale` (0.0-1.0), filling in `times`.
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
