//! PCA9685 16-channel PWM board over I2C (the DonkeyCar / JetRacer wiring).
//!
//! Only SMBus byte-data transfers are used (read/write one register per
//! transaction), so the backend works on any Linux `i2c-dev` bus, including
//! the kernel's `i2c-stub` and adapters without plain I2C support. With byte
//! transfers the chip's auto-increment buys nothing; it is still enabled so
//! other tools that use block transfers keep working.
//!
//! Three parts, by what each can break: the chip driver here (register
//! logic, on any [`SmbusDevice`]); `bus` (private, re-exported), the Linux
//! `i2c-dev` ioctls behind [`LinuxI2c`]; and `model`, an in-memory model of
//! the chip (registers, MODE1 sleep/restart semantics, PRE_SCALE writable
//! only while asleep) that tests drive, compiled only with the
//! `test-model` feature so its test hooks are not the driver's API.
//!
//! Caveat of byte writes: a channel's 12-bit OFF count is two registers and
//! the chip latches each write at the end of a PWM period, so when both bytes
//! change one period may carry the mixed value. [`Pca9685`] orders the two
//! writes so that mixed value is the one nearer the old/new range (and the
//! shorter one on a tie: a too-short pulse is ignored by servos and ESCs).

use crate::calibration::Calibration;
use crate::config::Pca9685Config;
use crate::{Actuator, ActuatorError, EmergencyNeutral, Pulses};
use std::io;
use std::sync::Arc;
use std::time::Duration;

mod bus;
#[cfg(feature = "test-model")]
mod model;

pub(crate) use bus::smbus_write_byte_raw;
pub use bus::{DeviceFactory, LinuxI2c, SmbusDevice};
#[cfg(feature = "test-model")]
pub use model::{Output, Pca9685Model};

/// MODE1 register: sleep, restart, auto-increment, all-call.
pub const MODE1: u8 = 0x00;
/// MODE2 register: output driver mode ([`MODE2_OUTDRV`]).
pub const MODE2: u8 = 0x01;
/// First register of channel 0; each channel has four (see [`channel_base`]).
pub const LED0_ON_L: u8 = 0x06;
/// First of the four write-only ALL_LED registers, which set every channel
/// at once.
pub const ALL_LED_ON_L: u8 = 0xFA;
/// PWM frequency prescaler ([`prescale_for`]); only takes a write while
/// [`MODE1_SLEEP`] is set.
pub const PRE_SCALE: u8 = 0xFE;

/// MODE1 bit: reads 1 after a sleep with PWM running; writing 1 (after
/// [`OSC_STARTUP`]) resumes the channels.
pub const MODE1_RESTART: u8 = 0x80;
/// MODE1 bit: register auto-increment, kept on for tools that use block
/// transfers.
pub const MODE1_AI: u8 = 0x20;
/// MODE1 bit: oscillator off, no pulses; the power-on state.
pub const MODE1_SLEEP: u8 = 0x10;
/// MODE1 bit: answer the LED all-call I2C address (power-on default, kept).
pub const MODE1_ALLCALL: u8 = 0x01;
/// Totem-pole outputs: what servos and ESCs expect.
pub const MODE2_OUTDRV: u8 = 0x04;

/// Nominal internal oscillator.
pub const DEFAULT_OSCILLATOR_HZ: u32 = 25_000_000;
/// Oscillator start-up time after SLEEP is cleared (datasheet: 500 us).
pub const OSC_STARTUP: Duration = Duration::from_micros(500);

/// First register of channel `ch` (ON_L; then ON_H, OFF_L, OFF_H).
pub fn channel_base(ch: u8) -> u8 {
    LED0_ON_L + 4 * ch
}

/// PRE_SCALE = round(osc / (4096 * freq)) - 1, limited to the chip's 3..=255.
pub fn prescale_for(oscillator_hz: u32, frequency_hz: f64) -> u8 {
    let p = (oscillator_hz as f64 / (4096.0 * frequency_hz)).round() - 1.0;
    p.clamp(3.0, 255.0) as u8
}

/// Length of one of the 4096 counts at this prescale, in ns.
pub fn tick_ns(oscillator_hz: u32, prescale: u8) -> f64 {
    (prescale as f64 + 1.0) * 1e9 / oscillator_hz as f64
}

/// OFF count (with ON = 0) for a pulse width.
#[inline]
pub fn counts_for(pulse_ns: u32, tick_ns: f64) -> u16 {
    ((pulse_ns as f64 / tick_ns).round() as i64).clamp(0, 4095) as u16
}

/// Why the PCA9685 backend could not open or initialise the chip.
#[derive(Debug, thiserror::Error)]
pub enum Pca9685Error {
    /// The bus could not be opened or the address selected; `hint` says what
    /// usually fixes it.
    #[error("{bus}: {source}{hint}")]
    Open {
        /// `/dev/i2c-N @ 0xNN`.
        bus: String,
        /// The OS error.
        #[source]
        source: io::Error,
        /// A fix for the common errnos (I2C disabled, permissions, address taken
        /// by a kernel driver), or empty.
        hint: &'static str,
    },
    /// A register read or write failed after the bus opened: nothing answers
    /// at the address, or the cable is loose.
    #[error("{device}: {what}: {source}")]
    Bus {
        /// The device, as [`SmbusDevice::describe`] names it.
        device: String,
        /// The step that failed, e.g. `read MODE1`.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// PRE_SCALE reads back another value than written: the device is not a
    /// PCA9685, or it was not asleep.
    #[error("{device}: PRE_SCALE reads {got} after writing {want}: the chip did not accept it (not a PCA9685, or not asleep?)")]
    PrescaleMismatch {
        /// The device, as [`SmbusDevice::describe`] names it.
        device: String,
        /// The prescale written, from `frequency_hz` and `oscillator_hz`.
        want: u8,
        /// What the register reads back.
        got: u8,
    },
}

fn open_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOENT) => " (no such bus: enable I2C, e.g. `dtparam=i2c_arm=on` on a Pi, and `modprobe i2c-dev`; check `ls /dev/i2c-*`)",
        Some(libc::EACCES) | Some(libc::EPERM) => " (permission denied: add the service user to group `i2c`, or run as root)",
        Some(libc::EBUSY) => " (address claimed by a kernel driver: unbind it, or pick another address)",
        _ => "",
    }
}

const UNKNOWN: u16 = 0xFFFF;

/// The PCA9685 backend.
pub struct Pca9685 {
    dev: Box<dyn SmbusDevice>,
    factory: DeviceFactory,
    throttle_ch: u8,
    steering_ch: u8,
    tick_ns: f64,
    prescale: u8,
    /// Last OFF count written per channel (throttle, steering); the ON
    /// registers are 0 from init on.
    last_off: [u16; 2],
}

impl Pca9685 {
    /// Open `/dev/i2c-N` per the `[actuator.pca9685]` table.
    pub fn open_linux(cfg: &Pca9685Config, cal: &Calibration) -> Result<Self, Pca9685Error> {
        let bus = cfg.bus.clone();
        let address = cfg.address;
        let factory: DeviceFactory = Arc::new(move || {
            LinuxI2c::open(&bus, address).map(|d| Box::new(d) as Box<dyn SmbusDevice>)
        });
        Self::open_with(factory, cfg, cal).map_err(|e| match e {
            Pca9685Error::Open { source, .. } => Pca9685Error::Open {
                bus: format!("{} @ {:#04x}", cfg.bus.display(), cfg.address),
                hint: open_hint(&source),
                source,
            },
            other => other,
        })
    }

    /// Open on any device the factory produces, initialise the chip and
    /// put `cal`'s neutral on both channels.
    pub fn open_with(
        factory: DeviceFactory,
        cfg: &Pca9685Config,
        cal: &Calibration,
    ) -> Result<Self, Pca9685Error> {
        let mut dev = factory().map_err(|source| Pca9685Error::Open {
            bus: cfg.bus.display().to_string(),
            source,
            hint: "",
        })?;
        let prescale = prescale_for(cfg.oscillator_hz, cfg.frequency_hz);
        let tick = tick_ns(cfg.oscillator_hz, prescale);
        let device = dev.describe();
        let bus = |what: &str, source: io::Error| Pca9685Error::Bus {
            device: device.clone(),
            what: what.to_string(),
            source,
        };
        let mode1 = dev
            .read_byte_data(MODE1)
            .map_err(|e| bus("read MODE1 (is a PCA9685 at this address?)", e))?;
        let current_prescale = dev
            .read_byte_data(PRE_SCALE)
            .map_err(|e| bus("read PRE_SCALE", e))?;
        let neutral = cal.neutral();
        let counts = [
            counts_for(neutral.throttle_ns, tick),
            counts_for(neutral.steering_ns, tick),
        ];
        let channels = [cfg.throttle_channel, cfg.steering_channel];
        let write = |dev: &mut Box<dyn SmbusDevice>, reg: u8, v: u8| {
            dev.write_byte_data(reg, v)
                .map_err(|e| bus(&format!("write register {reg:#04x}"), e))
        };
        // A chip that already runs at our frequency (e.g. `car-runtime
        // neutral` after the daemon) is not put to sleep: that would drop
        // pulses for no reason.
        let warm = mode1 & MODE1_SLEEP == 0 && current_prescale == prescale;
        if !warm {
            // Sleep (oscillator off): the only state in which PRE_SCALE
            // takes a write. RESTART written as 0 has no effect.
            write(&mut dev, MODE1, MODE1_SLEEP | MODE1_AI | MODE1_ALLCALL)?;
            write(&mut dev, PRE_SCALE, prescale)?;
        }
        write(&mut dev, MODE2, MODE2_OUTDRV)?;
        // Neutral goes into the channel registers before the outputs run,
        // so the first pulse after wake-up is already neutral.
        for (ch, c) in channels.iter().zip(counts) {
            let base = channel_base(*ch);
            write(&mut dev, base, 0)?;
            write(&mut dev, base + 1, 0)?;
            write(&mut dev, base + 2, (c & 0xFF) as u8)?;
            write(&mut dev, base + 3, (c >> 8) as u8)?;
        }
        if warm {
            write(&mut dev, MODE1, MODE1_AI | MODE1_ALLCALL)?;
        } else {
            write(&mut dev, MODE1, MODE1_AI | MODE1_ALLCALL)?;
            std::thread::sleep(OSC_STARTUP);
            // RESTART: resume the PWM channels as they were before sleep.
            write(&mut dev, MODE1, MODE1_RESTART | MODE1_AI | MODE1_ALLCALL)?;
        }
        let got = dev
            .read_byte_data(PRE_SCALE)
            .map_err(|e| bus("read PRE_SCALE", e))?;
        if got != prescale {
            return Err(Pca9685Error::PrescaleMismatch {
                device: device.clone(),
                want: prescale,
                got,
            });
        }
        Ok(Pca9685 {
            dev,
            factory,
            throttle_ch: cfg.throttle_channel,
            steering_ch: cfg.steering_channel,
            tick_ns: tick,
            prescale,
            last_off: counts,
        })
    }

    /// The PRE_SCALE value in use, from `frequency_hz` and `oscillator_hz`.
    pub fn prescale(&self) -> u8 {
        self.prescale
    }

    /// Length of one count in ns at the configured oscillator and prescale.
    pub fn tick_ns(&self) -> f64 {
        self.tick_ns
    }

    #[inline]
    fn write_off(&mut self, idx: usize, ch: u8, counts: u16) -> Result<(), ActuatorError> {
        let old = self.last_off[idx];
        if old == counts {
            return Ok(());
        }
        let base = channel_base(ch);
        let (new_l, new_h) = ((counts & 0xFF) as u8, (counts >> 8) as u8);
        let r = if old == UNKNOWN {
            self.dev
                .write_byte_data(base + 2, new_l)
                .and_then(|_| self.dev.write_byte_data(base + 3, new_h))
        } else {
            let (old_l, old_h) = ((old & 0xFF) as u8, (old >> 8) as u8);
            match (old_l != new_l, old_h != new_h) {
                (true, false) => self.dev.write_byte_data(base + 2, new_l),
                (false, true) => self.dev.write_byte_data(base + 3, new_h),
                _ => {
                    let low_first = low_byte_first(old, counts);
                    let (a, av, b, bv) = if low_first {
                        (base + 2, new_l, base + 3, new_h)
                    } else {
                        (base + 3, new_h, base + 2, new_l)
                    };
                    self.dev
                        .write_byte_data(a, av)
                        .and_then(|_| self.dev.write_byte_data(b, bv))
                }
            }
        };
        match r {
            Ok(()) => {
                self.last_off[idx] = counts;
                Ok(())
            }
            Err(e) => {
                self.last_off[idx] = UNKNOWN;
                // Formatting only happens on the error path.
                Err(ActuatorError::io(format_args!("pca9685 channel {ch}"), e))
            }
        }
    }
}

/// Which byte to write first when both change: the mixed value the chip may
/// latch for one period should be the one nearest the [old, new] range.
#[inline]
pub fn low_byte_first(old: u16, new: u16) -> bool {
    let lo = old.min(new) as i32;
    let hi = old.max(new) as i32;
    let dist = |v: u16| {
        let v = v as i32;
        if v < lo {
            lo - v
        } else if v > hi {
            v - hi
        } else {
            0
        }
    };
    let low_first_mix = (old & 0xFF00) | (new & 0x00FF);
    let high_first_mix = (new & 0xFF00) | (old & 0x00FF);
    let (dl, dh) = (dist(low_first_mix), dist(high_first_mix));
    dl < dh || (dl == dh && low_first_mix <= high_first_mix)
}

impl Actuator for Pca9685 {
    #[inline]
    fn write(&mut self, pulses: Pulses) -> Result<(), ActuatorError> {
        let t = counts_for(pulses.throttle_ns, self.tick_ns);
        let s = counts_for(pulses.steering_ns, self.tick_ns);
        self.write_off(0, self.throttle_ch, t)?;
        self.write_off(1, self.steering_ch, s)
    }

    fn backend(&self) -> &'static str {
        "pca9685"
    }

    fn emergency_neutral(&self) -> Option<EmergencyNeutral> {
        let factory = Arc::clone(&self.factory);
        let tick = self.tick_ns;
        let chans = [self.throttle_ch, self.steering_ch];
        Some(Arc::new(move |p: Pulses| {
            let mut dev = factory().map_err(|e| ActuatorError::io("pca9685 (reopen)", e))?;
            let desc = dev.describe();
            for (ch, ns) in chans.iter().zip([p.throttle_ns, p.steering_ns]) {
                let c = counts_for(ns, tick);
                let base = channel_base(*ch);
                for (reg, v) in [
                    (base, 0u8),
                    (base + 1, 0),
                    (base + 2, (c & 0xFF) as u8),
                    (base + 3, (c >> 8) as u8),
                ] {
                    dev.write_byte_data(reg, v)
                        .map_err(|e| ActuatorError::io(&desc, e))?;
                }
            }
            Ok(())
        }))
    }

    fn forget_cache(&mut self) {
        self.last_off = [UNKNOWN; 2];
    }

    fn raw_target(&self) -> Option<crate::failsafe::raw::RawTarget> {
        // A second handle of our own, as for the emergency writer.
        let bus = (self.factory)().ok()?.into_raw_bus()?;
        Some(crate::failsafe::raw::RawTarget::Pca9685 {
            bus,
            throttle_channel: self.throttle_ch,
            steering_channel: self.steering_ch,
        })
    }

    fn raw_values(&self, neutral: Pulses) -> crate::failsafe::raw::RawValues {
        crate::failsafe::raw::RawValues {
            throttle: counts_for(neutral.throttle_ns, self.tick_ns) as u32,
            steering: counts_for(neutral.steering_ns, self.tick_ns) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prescale_matches_datasheet_examples() {
        // Datasheet: 200 Hz at 25 MHz -> 0x1E; 50 Hz -> 121 (0x79).
        assert_eq!(prescale_for(25_000_000, 200.0), 0x1E);
        assert_eq!(prescale_for(25_000_000, 50.0), 121);
        assert_eq!(prescale_for(25_000_000, 60.0), 101);
        // Limits of the register.
        assert_eq!(prescale_for(25_000_000, 1526.0), 3);
        assert_eq!(prescale_for(25_000_000, 24.0), 253);
    }

    #[test]
    fn byte_order_keeps_mixed_value_near_range() {
        // 0x0FF -> 0x100 crossing: both mixes (0x000, 0x1FF) are 255 away;
        // the shorter one (no pulse) wins.
        assert!(low_byte_first(0x0FF, 0x100));
        // 0x180 -> 0x2F0: low first gives 0x1F0 (inside), high first 0x280 (inside too, but bigger)...
        let (old, new) = (0x180u16, 0x2F0u16);
        let mix = if low_byte_first(old, new) {
            (old & 0xFF00) | (new & 0xFF)
        } else {
            (new & 0xFF00) | (old & 0xFF)
        };
        assert!((old..=new).contains(&mix), "mixed {mix:#x}");
    }
}
