//! The wire between the simulated actuator and the simulated car.
//!
//! The sim backend stores the normalised commands it was asked to put on the
//! wire; the daemon's sim frame source reads them to move the simulated car.
//! Atomics, not a lock: the writer is the control thread's hot path.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Latest commands written to the simulated wire, in [-1, 1] after
/// calibration is undone (what the car's servo and ESC would "see").
#[derive(Debug, Default)]
pub struct SimLink {
    steering_bits: AtomicU32,
    throttle_bits: AtomicU32,
    writes: AtomicU64,
}

impl SimLink {
    /// Publish the commands now on the simulated wire, each in [-1, 1]. Called
    /// from the control thread's write path: lock-free, no allocation.
    pub fn store(&self, steering: f32, throttle: f32) {
        self.steering_bits
            .store(steering.to_bits(), Ordering::Relaxed);
        self.throttle_bits
            .store(throttle.to_bits(), Ordering::Relaxed);
        self.writes.fetch_add(1, Ordering::Release);
    }

    /// (steering, throttle), each in [-1, 1].
    pub fn load(&self) -> (f32, f32) {
        let _ = self.writes.load(Ordering::Acquire);
        (
            f32::from_bits(self.steering_bits.load(Ordering::Relaxed)),
            f32::from_bits(self.throttle_bits.load(Ordering::Relaxed)),
        )
    }

    /// How many times the wire was written; tests use it to see activity.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }
}
