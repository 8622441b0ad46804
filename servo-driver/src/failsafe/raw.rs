//! Neutral from inside a signal handler: pre-opened file descriptors and
//! neutral values kept in atomics, written with `pwrite`/`ioctl` only.
//!
//! The registry's emergency writers ([`super::register`]) reopen files,
//! format strings and take a mutex: fine on a normal thread, undefined
//! inside a signal handler (the interrupted thread may hold the allocator's
//! lock). This table is what a handler may touch. Each live
//! [`crate::ServoDriver`] whose backend can say which descriptors reach the
//! wire ([`crate::Actuator::raw_target`]) arms one slot:
//!
//! - sysfs PWM (the stock DeepRacer board, Raspberry Pi hardware PWM): the
//!   two `duty_cycle` attributes, opened once more at registration; the
//!   handler formats the neutral width in decimal on its stack and
//!   `pwrite`s it at offset 0 (throttle first);
//! - PCA9685 on i2c-dev: a second descriptor on the bus with the chip's
//!   address already set (`I2C_SLAVE`); the handler issues the four SMBus
//!   byte writes of each channel's LEDn_ON/OFF registers, with the counts
//!   computed when the calibration was set.
//!
//! [`write_all`] is async-signal-safe: atomic loads, `pwrite`, `ftruncate`,
//! `ioctl`; no allocation, no lock, no formatting machinery.
//!
//! What nothing in-process covers: SIGKILL (the OOM killer, `kill -9`) and
//! power loss. The service unit's `ExecStopPost=car-runtime neutral` writes
//! neutral after any death of the process, and the ESC's own failsafe cuts
//! the motor when pulses stop (power loss of the board).

use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU8, Ordering};

/// What a backend hands the table: descriptors of its own, independent of
/// the control thread's.
pub enum RawTarget {
    /// Two sysfs `duty_cycle` attributes. `truncate`: a regular file (a
    /// test tree) keeps old trailing digits after a shorter write.
    DutyFiles {
        /// The ESC's `duty_cycle`; written first.
        throttle: OwnedFd,
        /// The steering servo's `duty_cycle`.
        steering: OwnedFd,
        /// Truncate after each write: true for a regular file, false on real sysfs.
        truncate: bool,
    },
    /// A PCA9685 on an i2c-dev descriptor whose slave address is set.
    Pca9685 {
        /// An i2c-dev descriptor of its own, `I2C_SLAVE` already set.
        bus: OwnedFd,
        /// The ESC's channel (0..=15); written first.
        throttle_channel: u8,
        /// The steering servo's channel (0..=15).
        steering_channel: u8,
    },
}

/// The neutral values a slot writes: nanoseconds for duty files, 12-bit
/// counts for a PCA9685 (see [`crate::pca9685::counts_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawValues {
    /// Neutral throttle: ns of high time, or the OFF count on a PCA9685.
    pub throttle: u32,
    /// Neutral steering, in the same unit.
    pub steering: u32,
}

const SLOTS: usize = 8;
const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const ARMED: u8 = 2;
const KIND_DUTY: u8 = 1;
const KIND_PCA: u8 = 2;

struct Slot {
    state: AtomicU8,
    kind: AtomicU8,
    fd_a: AtomicI32,
    fd_b: AtomicI32,
    truncate: AtomicBool,
    ch_throttle: AtomicU8,
    ch_steering: AtomicU8,
    throttle: AtomicU32,
    steering: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to fill the array
const EMPTY: Slot = Slot {
    state: AtomicU8::new(FREE),
    kind: AtomicU8::new(0),
    fd_a: AtomicI32::new(-1),
    fd_b: AtomicI32::new(-1),
    truncate: AtomicBool::new(false),
    ch_throttle: AtomicU8::new(0),
    ch_steering: AtomicU8::new(0),
    throttle: AtomicU32::new(0),
    steering: AtomicU32::new(0),
};

static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];

/// An armed slot; dropping it disarms the slot and closes its descriptors.
pub struct RawRegistration {
    index: usize,
}

/// Arm a slot. `None` when all slots are taken (more live drivers than any
/// car has; the registry's writers still cover them).
pub fn arm(target: RawTarget, values: RawValues) -> Option<RawRegistration> {
    let index = TABLE.iter().position(|s| {
        s.state
            .compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })?;
    let s = &TABLE[index];
    match target {
        RawTarget::DutyFiles {
            throttle,
            steering,
            truncate,
        } => {
            s.kind.store(KIND_DUTY, Ordering::Relaxed);
            s.fd_a.store(throttle.into_raw_fd(), Ordering::Relaxed);
            s.fd_b.store(steering.into_raw_fd(), Ordering::Relaxed);
            s.truncate.store(truncate, Ordering::Relaxed);
        }
        RawTarget::Pca9685 {
            bus,
            throttle_channel,
            steering_channel,
        } => {
            s.kind.store(KIND_PCA, Ordering::Relaxed);
            s.fd_a.store(bus.into_raw_fd(), Ordering::Relaxed);
            s.fd_b.store(-1, Ordering::Relaxed);
            s.ch_throttle.store(throttle_channel, Ordering::Relaxed);
            s.ch_steering.store(steering_channel, Ordering::Relaxed);
        }
    }
    s.throttle.store(values.throttle, Ordering::Relaxed);
    s.steering.store(values.steering, Ordering::Relaxed);
    s.state.store(ARMED, Ordering::Release);
    Some(RawRegistration { index })
}

impl RawRegistration {
    /// The calibration changed: write these values from now on. Each value
    /// is one atomic store, so a handler never sees a torn number.
    pub fn set_values(&self, v: RawValues) {
        let s = &TABLE[self.index];
        s.throttle.store(v.throttle, Ordering::Relaxed);
        s.steering.store(v.steering, Ordering::Relaxed);
    }
}

impl Drop for RawRegistration {
    fn drop(&mut self) {
        let s = &TABLE[self.index];
        // Disarm before closing: a handler that loads the state after this
        // skips the slot. (One that loaded it just before may still write
        // through a descriptor closed under it; the window is a few
        // instructions wide and only at driver teardown.)
        s.state.store(CLAIMED, Ordering::Release);
        for fd in [&s.fd_a, &s.fd_b] {
            let fd = fd.swap(-1, Ordering::AcqRel);
            if fd >= 0 {
                // SAFETY: the descriptor was handed to the table by `arm`
                // (into_raw_fd) and nothing else closes it.
                unsafe { libc::close(fd) };
            }
        }
        s.state.store(FREE, Ordering::Release);
    }
}

/// How many slots are armed (diagnostics, tests).
pub fn armed() -> usize {
    TABLE
        .iter()
        .filter(|s| s.state.load(Ordering::Acquire) == ARMED)
        .count()
}

/// Outcome of [`write_all`]: slots written whole, slots with a failed write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawReport {
    /// Slots whose every write succeeded.
    pub written: u32,
    /// Slots with a failed write: that output may not be at neutral.
    pub failed: u32,
}

/// Write neutral through every armed slot. Async-signal-safe; also safe on
/// any thread at any time (it never latches or blocks).
pub fn write_all() -> RawReport {
    let mut r = RawReport::default();
    for s in &TABLE {
        if s.state.load(Ordering::Acquire) != ARMED {
            continue;
        }
        let ok = match s.kind.load(Ordering::Relaxed) {
            KIND_DUTY => {
                let trunc = s.truncate.load(Ordering::Relaxed);
                // Throttle first: it is the one that moves the car.
                let a = write_decimal(
                    s.fd_a.load(Ordering::Relaxed),
                    s.throttle.load(Ordering::Relaxed),
                    trunc,
                );
                let b = write_decimal(
                    s.fd_b.load(Ordering::Relaxed),
                    s.steering.load(Ordering::Relaxed),
                    trunc,
                );
                a && b
            }
            KIND_PCA => {
                let fd = s.fd_a.load(Ordering::Relaxed);
                let a = pca_channel(
                    fd,
                    s.ch_throttle.load(Ordering::Relaxed),
                    s.throttle.load(Ordering::Relaxed),
                );
                let b = pca_channel(
                    fd,
                    s.ch_steering.load(Ordering::Relaxed),
                    s.steering.load(Ordering::Relaxed),
                );
                a && b
            }
            _ => false,
        };
        if ok {
            r.written += 1;
        } else {
            r.failed += 1;
        }
    }
    r
}

fn write_decimal(fd: i32, v: u32, truncate: bool) -> bool {
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 10];
    let digits = crate::sysfs::format_u32(v, &mut buf);
    // SAFETY: `digits` is a live stack buffer of that length; pwrite and
    // ftruncate are async-signal-safe and only touch the descriptor.
    unsafe {
        let n = libc::pwrite(fd, digits.as_ptr().cast(), digits.len(), 0);
        if n != digits.len() as isize {
            return false;
        }
        if truncate {
            libc::ftruncate(fd, digits.len() as libc::off_t);
        }
    }
    true
}

fn pca_channel(fd: i32, channel: u8, counts: u32) -> bool {
    if fd < 0 || channel > 15 {
        return false;
    }
    let base = crate::pca9685::channel_base(channel);
    let c = counts.min(4095);
    [
        (base, 0u8),
        (base + 1, 0),
        (base + 2, (c & 0xFF) as u8),
        (base + 3, (c >> 8) as u8),
    ]
    .iter()
    .all(|&(reg, val)| crate::pca9685::smbus_write_byte_raw(fd, reg, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_neutral_into_duty_files_and_disarms_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let (t, s) = (d.path().join("t"), d.path().join("s"));
        std::fs::write(&t, "2000000\n").unwrap();
        std::fs::write(&s, "1000000\n").unwrap();
        let open = |p: &std::path::Path| -> OwnedFd {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .into()
        };
        let reg = arm(
            RawTarget::DutyFiles {
                throttle: open(&t),
                steering: open(&s),
                truncate: true,
            },
            RawValues {
                throttle: 1_446_000,
                steering: 1_450_000,
            },
        )
        .unwrap();
        let r = write_all();
        assert!(r.written >= 1, "{r:?}");
        assert_eq!(std::fs::read_to_string(&t).unwrap(), "1446000");
        assert_eq!(std::fs::read_to_string(&s).unwrap(), "1450000");
        // A new calibration's neutral is what the next write puts out.
        reg.set_values(RawValues {
            throttle: 999_000,
            steering: 1_500_000,
        });
        write_all();
        assert_eq!(std::fs::read_to_string(&t).unwrap(), "999000");
        drop(reg);
        std::fs::write(&t, "2000000").unwrap();
        write_all();
        assert_eq!(std::fs::read_to_string(&t).unwrap(), "2000000");
    }
}
