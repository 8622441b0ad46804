//! Servo and ESC output: calibration (command -> pulse width), PWM backends
//! behind one [`Actuator`] trait, and the failsafe that ends every fault in
//! neutral throttle and centred steering.
//!
//! Owns: pulse widths, the wire, calibration files.
//!
//! Must not: decide *what* to drive (that is the arbiter's job in
//! `car-runtime`), allocate or sleep in the write path, or depend on the
//! simulator crate (the sim backend talks to it through [`sim_link::SimLink`]).

pub mod sim_link;

/// Pulse widths for both channels, in nanoseconds of high time per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pulses {
    pub steering_ns: u32,
    pub throttle_ns: u32,
}

/// A PWM output with a steering and a throttle channel.
///
/// Implementations must not allocate, sleep or log on [`Actuator::write`]:
/// it is called once per frame from the control thread.
pub trait Actuator: Send {
    /// Put these pulse widths on the wire.
    fn write(&mut self, pulses: Pulses) -> Result<(), ActuatorError>;
    /// Short backend name for logs and telemetry ("sysfs", "pca9685", ...).
    fn backend(&self) -> &'static str;
}

#[derive(Debug, thiserror::Error)]
pub enum ActuatorError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}
