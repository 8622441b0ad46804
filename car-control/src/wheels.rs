//! What the loop needs from the servo driver, as a trait so the loop can be
//! tested with a wire that records what it was told (and one that fails).

use servo_driver::Pulses;

/// A wheel write failed; the text comes from the backend. The loop counts
/// it and tries neutral.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WheelsError(pub String);

/// What the control loop writes to: [`crate::pipeline::ServoWheels`] on a
/// car, a recording double in tests. `drive`, `pulses` and `neutral` run
/// every tick on the control thread: no allocation, no blocking.
pub trait Wheels: Send {
    /// Normalised steering and throttle in [-1, 1] through the calibration.
    fn drive(&mut self, steering: f32, throttle: f32) -> Result<Pulses, WheelsError>;
    /// Raw pulse widths (calibration wizard); `None` = that channel's `mid`.
    fn pulses(
        &mut self,
        steering_ns: Option<u32>,
        throttle_ns: Option<u32>,
    ) -> Result<Pulses, WheelsError>;
    /// Neutral throttle, centred steering.
    fn neutral(&mut self) -> Result<Pulses, WheelsError>;
    /// Replace the calibration (after the web UI saved one).
    fn reload_calibration(&mut self) -> Result<(), WheelsError> {
        Ok(())
    }
    /// Make a calibration live without saving it.
    fn set_calibration(&mut self, _cal: servo_driver::Calibration) -> Result<(), WheelsError> {
        Err(WheelsError("this output has no calibration".into()))
    }
    /// Backend name for logs and telemetry (`sysfs`, `sim`, ...).
    fn backend(&self) -> &'static str;
    /// Commands the driver did not take as given (NaN, out of range): a
    /// sign of a broken model or arbiter, shown in telemetry.
    fn bad_commands(&self) -> u64 {
        0
    }
}
