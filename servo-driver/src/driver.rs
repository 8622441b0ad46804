//! [`ServoDriver`]: calibration + actuator, the per-frame entry point.

use crate::failsafe::{self, Registration};
use crate::{Actuator, ActuatorError, Calibration, Channel, Pulses};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// Commands that never reached the wire as given. Counted per value, so a
/// frame with NaN steering and NaN throttle counts two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BadCommands {
    /// NaN commands, replaced by neutral (0).
    pub nan: u64,
    /// Commands outside [-1, 1] (including infinities), clamped.
    pub out_of_range: u64,
}

/// State the failsafe registry shares with the driver: the current neutral
/// pulses (the calibration can change live) and the latch that keeps the
/// output at neutral once an emergency or `disable()` happened.
pub(crate) struct Shared {
    steering_mid: AtomicU32,
    throttle_mid: AtomicU32,
    latched: AtomicBool,
}

impl Shared {
    fn neutral(&self) -> Pulses {
        Pulses {
            steering_ns: self.steering_mid.load(Ordering::Relaxed),
            throttle_ns: self.throttle_mid.load(Ordering::Relaxed),
        }
    }
}

/// Steering servo and ESC through a calibration and one [`Actuator`].
///
/// Construction writes neutral; dropping writes neutral. While alive it is
/// registered with [`failsafe`], so a panic anywhere or a signal the control
/// loop does not answer in time also ends in neutral, and latches the
/// driver: every later [`Self::drive`] writes neutral until [`Self::enable`].
pub struct ServoDriver {
    cal: Calibration,
    act: Box<dyn Actuator>,
    shared: Arc<Shared>,
    bad: BadCommands,
    last: Pulses,
    saw_latch: bool,
    _registration: Option<Registration>,
    /// The signal handler's path to the wire ([`failsafe::raw`]).
    raw: Option<failsafe::raw::RawRegistration>,
}

impl std::fmt::Debug for ServoDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServoDriver")
            .field("backend", &self.act.backend())
            .field("calibration", &self.cal)
            .field("last", &self.last)
            .field("bad", &self.bad)
            .finish()
    }
}

impl ServoDriver {
    /// Validates the calibration, registers the backend's emergency writer
    /// and puts neutral on the wire.
    pub fn new(cal: Calibration, act: Box<dyn Actuator>) -> Result<Self, ActuatorError> {
        cal.validate()?;
        let neutral = cal.neutral();
        let shared = Arc::new(Shared {
            steering_mid: AtomicU32::new(neutral.steering_ns),
            throttle_mid: AtomicU32::new(neutral.throttle_ns),
            latched: AtomicBool::new(false),
        });
        let registration = act.emergency_neutral().map(|writer| {
            let shared = Arc::clone(&shared);
            failsafe::register(Arc::new(move |latch| {
                // Latch first: the control thread must not overwrite the
                // neutral we are about to put on the wire.
                if latch {
                    shared.latched.store(true, Ordering::SeqCst);
                }
                writer(shared.neutral())
            }))
        });
        let raw = act
            .raw_target()
            .and_then(|t| failsafe::raw::arm(t, act.raw_values(neutral)));
        let mut driver = ServoDriver {
            cal,
            act,
            shared,
            bad: BadCommands::default(),
            last: neutral,
            saw_latch: false,
            _registration: registration,
            raw,
        };
        driver.act.write(neutral)?;
        Ok(driver)
    }

    /// Map commands in [-1, 1] to pulses and write them. NaN becomes
    /// neutral, out-of-range values are clamped; both are counted
    /// ([`Self::bad_commands`]). Returns the pulses now on the wire. While
    /// disabled (latched) it writes neutral instead. If the backend fails,
    /// one neutral write is attempted before the error is returned.
    ///
    /// No allocation, sleep, lock or log.
    #[inline]
    pub fn drive(&mut self, steering: f32, throttle: f32) -> Result<Pulses, ActuatorError> {
        if self.shared.latched.load(Ordering::Relaxed) {
            return self.hold_neutral();
        }
        let s = self.sanitize(steering);
        let t = self.sanitize(throttle);
        let p = self.cal.pulses(s, t);
        self.put(p)
    }

    /// Neutral throttle, centred steering (each channel's `mid`).
    pub fn neutral(&mut self) -> Result<Pulses, ActuatorError> {
        let n = self.cal.neutral();
        self.put(n)
    }

    /// Write neutral and latch: [`Self::drive`] keeps writing neutral until
    /// [`Self::enable`]. The latch is also what the panic hook and the
    /// signal guard set.
    pub fn disable(&mut self) -> Result<Pulses, ActuatorError> {
        self.shared.latched.store(true, Ordering::SeqCst);
        self.hold_neutral()
    }

    /// Clear the latch set by [`Self::disable`] or by the failsafe.
    pub fn enable(&mut self) {
        // An emergency writer may have changed the wire behind the
        // backend's back.
        self.act.forget_cache();
        self.saw_latch = false;
        self.shared.latched.store(false, Ordering::SeqCst);
    }

    /// True while latched at neutral (by [`Self::disable`], a panic or a
    /// signal): [`Self::drive`] writes neutral until [`Self::enable`], so the car
    /// will not move.
    pub fn is_disabled(&self) -> bool {
        self.shared.latched.load(Ordering::Relaxed)
    }

    /// Replace the calibration live (the wizard moves the wheels with values
    /// it has not saved yet). Invalid calibrations are refused and the old
    /// one stays. Takes effect on the next write.
    pub fn set_calibration(&mut self, cal: Calibration) -> Result<(), ActuatorError> {
        cal.validate()?;
        self.act.calibration_changed(&cal)?;
        self.cal = cal;
        if let Some(r) = &self.raw {
            r.set_values(self.act.raw_values(cal.neutral()));
        }
        self.shared
            .steering_mid
            .store(cal.steering.mid, Ordering::Relaxed);
        self.shared
            .throttle_mid
            .store(cal.throttle.mid, Ordering::Relaxed);
        Ok(())
    }

    /// The calibration in force: the last one [`Self::set_calibration`] accepted.
    pub fn calibration(&self) -> &Calibration {
        &self.cal
    }

    /// Write a raw pulse width on one channel (the wizard's fine slider);
    /// the other channel keeps its last value. Clamped into the hard safe
    /// range; returns the width actually written. Refused while disabled.
    pub fn raw_pulse(&mut self, channel: Channel, ns: u32) -> Result<u32, ActuatorError> {
        if self.shared.latched.load(Ordering::Relaxed) {
            self.hold_neutral()?;
            return Err(ActuatorError::Disabled);
        }
        let ns = ns.clamp(
            crate::calibration::SAFE_MIN_NS,
            crate::calibration::SAFE_MAX_NS,
        );
        let mut p = self.last;
        match channel {
            Channel::Steering => p.steering_ns = ns,
            Channel::Throttle => p.throttle_ns = ns,
        }
        self.put(p)?;
        Ok(ns)
    }

    /// Commands that were NaN or out of range since the driver was created; a
    /// rising count means the policy or the arbiter is producing garbage.
    pub fn bad_commands(&self) -> BadCommands {
        self.bad
    }

    /// What this driver last put on the wire successfully.
    pub fn last_pulses(&self) -> Pulses {
        self.last
    }

    /// Backend name for logs and telemetry (`sysfs`, `pca9685`, `rppal`, `sim`).
    pub fn backend(&self) -> &'static str {
        self.act.backend()
    }

    #[inline]
    fn sanitize(&mut self, v: f32) -> f32 {
        if v.is_nan() {
            self.bad.nan += 1;
            0.0
        } else if !(-1.0..=1.0).contains(&v) {
            self.bad.out_of_range += 1;
            v.clamp(-1.0, 1.0)
        } else {
            v
        }
    }

    fn hold_neutral(&mut self) -> Result<Pulses, ActuatorError> {
        if !self.saw_latch {
            self.act.forget_cache();
            self.saw_latch = true;
        }
        let n = self.cal.neutral();
        self.put(n)
    }

    #[inline]
    fn put(&mut self, p: Pulses) -> Result<Pulses, ActuatorError> {
        match self.act.write(p) {
            Ok(()) => {
                self.last = p;
                Ok(p)
            }
            Err(e) => {
                let n = self.cal.neutral();
                if p != n && self.act.write(n).is_ok() {
                    self.last = n;
                }
                Err(e)
            }
        }
    }
}

impl Drop for ServoDriver {
    fn drop(&mut self) {
        let n = self.cal.neutral();
        if let Err(e) = self.act.write(n) {
            tracing::error!(backend = self.act.backend(), error = %e, "neutral on drop failed");
        }
    }
}
