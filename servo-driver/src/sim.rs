//! The simulated backend: records the pulses it is given and stores what
//! they mean (the calibration undone, commands in [-1, 1]) in a
//! [`SimLink`], from which the daemon's sim frame source moves the car.
//!
//! Going through real pulse widths keeps the sim honest: a wrong
//! calibration or a reversed polarity shows up in the simulator exactly as
//! it would on the car.

use crate::calibration::Calibration;
use crate::sim_link::SimLink;
use crate::{Actuator, ActuatorError, EmergencyNeutral, Pulses};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// What the sim backend put on its "wire": last pulses and a write count.
#[derive(Debug, Default)]
pub struct SimRecord {
    steering_ns: AtomicU32,
    throttle_ns: AtomicU32,
    writes: AtomicU64,
}

impl SimRecord {
    fn store(&self, p: Pulses) {
        self.steering_ns.store(p.steering_ns, Ordering::Relaxed);
        self.throttle_ns.store(p.throttle_ns, Ordering::Relaxed);
        self.writes.fetch_add(1, Ordering::Release);
    }

    /// The pulses of the last write, ns.
    pub fn last(&self) -> Pulses {
        let _ = self.writes.load(Ordering::Acquire);
        Pulses {
            steering_ns: self.steering_ns.load(Ordering::Relaxed),
            throttle_ns: self.throttle_ns.load(Ordering::Relaxed),
        }
    }

    /// Writes so far, emergency ones included.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }
}

/// The sim backend: undoes the calibration and hands the commands to a
/// [`SimLink`].
pub struct SimActuator {
    link: Arc<SimLink>,
    record: Arc<SimRecord>,
    cal: Calibration,
}

impl SimActuator {
    /// A backend feeding `link`; `cal` is undone on each write to recover the
    /// command (keep it in step through [`Actuator::calibration_changed`]).
    pub fn new(link: Arc<SimLink>, cal: Calibration) -> Self {
        SimActuator {
            link,
            record: Arc::default(),
            cal,
        }
    }

    /// A handle on the recorded pulses that stays valid after the actuator
    /// is boxed into a `ServoDriver`.
    pub fn record(&self) -> Arc<SimRecord> {
        Arc::clone(&self.record)
    }

    /// The link this backend writes to (the sim frame source reads it).
    pub fn link(&self) -> Arc<SimLink> {
        Arc::clone(&self.link)
    }
}

impl Actuator for SimActuator {
    #[inline]
    fn write(&mut self, pulses: Pulses) -> Result<(), ActuatorError> {
        self.record.store(pulses);
        self.link.store(
            self.cal.steering.command_for(pulses.steering_ns),
            self.cal.throttle.command_for(pulses.throttle_ns),
        );
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "sim"
    }

    fn emergency_neutral(&self) -> Option<EmergencyNeutral> {
        let link = Arc::clone(&self.link);
        let record = Arc::clone(&self.record);
        Some(Arc::new(move |p: Pulses| {
            // Emergency writers only ever get the neutral (mid) pulses,
            // which stand for command 0 under any calibration.
            record.store(p);
            link.store(0.0, 0.0);
            Ok(())
        }))
    }

    fn calibration_changed(&mut self, cal: &Calibration) -> Result<(), ActuatorError> {
        self.cal = *cal;
        Ok(())
    }
}
