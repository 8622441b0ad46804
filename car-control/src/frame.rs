//! The [`FrameSource`] trait every camera-like input implements. The frame
//! type itself lives in `policy` so that preprocessing and the trainer share it.

use std::time::Duration;

pub use policy::{Frame, PixelFormat};

/// Why [`FrameSource::next_frame`] gave no frame.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Nothing arrived within the timeout; the caller applies its stall rule.
    #[error("no frame within {0:?}")]
    Timeout(Duration),
    /// The source has no more frames (end of a replay, end of a sim run).
    #[error("end of stream")]
    EndOfStream,
    /// The device failed (camera unplugged, driver or decode error). The loop
    /// counts it, holds neutral through the stall rule and waits one poll.
    #[error("{0}")]
    Device(String),
}

/// A camera, a recording being replayed, or the simulator.
///
/// The returned frame borrows the source's preallocated buffer until the next
/// call; sources must not allocate per frame.
pub trait FrameSource: Send {
    /// Block until the next frame or the timeout.
    fn next_frame(&mut self, timeout: Duration) -> Result<Frame<'_>, SourceError>;
    /// Short name for logs and telemetry.
    fn name(&self) -> &'static str;
    /// Frames the source had to drop (newer frame arrived first, slow reader).
    fn dropped(&self) -> u64 {
        0
    }
    /// Whether `timestamp_ns` is CLOCK_MONOTONIC (a camera, a paced replay),
    /// so capture-to-PWM latency can be measured against the loop's clock.
    /// The simulator stamps frames with its own clock.
    fn monotonic_timestamps(&self) -> bool {
        true
    }
}
