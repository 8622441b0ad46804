//! Servo and ESC output: calibration (command -> pulse width), PWM backends
//! behind one [`Actuator`] trait, and the failsafe that ends every fault in
//! neutral throttle and centred steering.
//!
//! Owns: pulse widths, the wire, calibration files.
//!
//! Must not: decide *what* to drive (that is the arbiter's job in
//! `car-runtime`), allocate or sleep in the write path, or depend on the
//! simulator crate (the sim backend talks to it through [`sim_link::SimLink`]).
//!
//! Entry points: [`config::open`] builds a [`ServoDriver`] from the
//! `[actuator]` TOML table; [`ServoDriver::drive`] is the per-frame call;
//! [`failsafe`] holds the panic hook, the signal guard and the process-wide
//! emergency-neutral registry.

#![warn(missing_docs)]

use std::sync::Arc;

pub mod calibration;
pub mod config;
mod driver;
pub mod failsafe;
pub mod leds;
pub mod pca9685;
pub mod rppal;
pub mod sim;
pub mod sim_link;
pub mod sysfs;

pub use calibration::{Calibration, CalibrationError, ChannelCalibration, ValidationError};
pub use config::{open, ActuatorConfig, BackendKind, OpenError};
pub use driver::{BadCommands, ServoDriver};

/// Pulse widths for both channels, in nanoseconds of high time per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pulses {
    /// Steering servo high time, ns; the calibration's `steering.mid` centres the wheels.
    pub steering_ns: u32,
    /// ESC high time, ns; `throttle.mid` is neutral (motor stopped), where every fault path ends.
    pub throttle_ns: u32,
}

/// One of the two outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The steering servo.
    Steering,
    /// The ESC, i.e. the drive motor.
    Throttle,
}

/// Writes pulses on the wire through a path independent of the control
/// thread's [`Actuator`] (its own file descriptors or bus handle), so the
/// panic hook and the signal guard can force neutral while the control
/// thread is stuck or unwinding. Only ever called with the calibration's
/// neutral (`mid`) pulses. May allocate and block briefly: it is never on
/// the hot path.
pub type EmergencyNeutral = Arc<dyn Fn(Pulses) -> Result<(), ActuatorError> + Send + Sync>;

/// A PWM output with a steering and a throttle channel.
///
/// Implementations must not allocate, sleep or log on [`Actuator::write`]:
/// it is called once per frame from the control thread.
pub trait Actuator: Send {
    /// Put these pulse widths on the wire.
    fn write(&mut self, pulses: Pulses) -> Result<(), ActuatorError>;
    /// Short backend name for logs and telemetry ("sysfs", "pca9685", ...).
    fn backend(&self) -> &'static str;
    /// An independent writer for the failsafe registry (see
    /// [`EmergencyNeutral`]). `None` means the backend has no second path
    /// to the wire; every backend in this crate provides one.
    fn emergency_neutral(&self) -> Option<EmergencyNeutral> {
        None
    }
    /// The calibration changed (live, from the wizard). Backends that put
    /// the period on the wire or undo the calibration (sim) update here.
    fn calibration_changed(&mut self, _cal: &Calibration) -> Result<(), ActuatorError> {
        Ok(())
    }
    /// Something else (an emergency writer) may have changed the wire:
    /// forget any "skip unchanged writes" cache so the next write goes out.
    fn forget_cache(&mut self) {}
    /// Descriptors of its own that reach the wire, for the signal handler's
    /// neutral ([`failsafe::raw`]). `None`: no signal-safe path (the sim,
    /// whose wire dies with the process anyway).
    fn raw_target(&self) -> Option<failsafe::raw::RawTarget> {
        None
    }
    /// What the raw path writes for these neutral pulses (nanoseconds by
    /// default; a PCA9685 writes register counts).
    fn raw_values(&self, neutral: Pulses) -> failsafe::raw::RawValues {
        failsafe::raw::RawValues {
            throttle: neutral.throttle_ns,
            steering: neutral.steering_ns,
        }
    }
}

/// A write to the wire, or a change of calibration, failed. From
/// [`ServoDriver::drive`] one neutral write has already been attempted.
#[derive(Debug, thiserror::Error)]
pub enum ActuatorError {
    /// A PWM file or the I2C bus refused a write (loose cable, permissions,
    /// driver unloaded). The car may not be at neutral: stop driving.
    #[error("{path}: {source}")]
    Io {
        /// What failed: a `duty_cycle` path, or `pca9685 channel N`.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// [`Calibration::validate`] refused a calibration; the old one stays in force.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The driver is latched at neutral ([`ServoDriver::disable`], a panic or a
    /// signal); call [`ServoDriver::enable`] before moving the wheels again.
    #[error("output is disabled (failsafe latched); call enable() first")]
    Disabled,
    /// Any other backend failure (emergency writers, a period change), already
    /// formatted for the log.
    #[error("{0}")]
    Other(String),
}

impl ActuatorError {
    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        ActuatorError::Io {
            path: path.to_string(),
            source,
        }
    }
}
