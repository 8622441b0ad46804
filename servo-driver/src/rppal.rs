//! Raspberry Pi hardware PWM through `rppal::pwm` (PWM0 = GPIO 18, PWM1 =
//! GPIO 19 with `dtoverlay=pwm-2chan` in `/boot/firmware/config.txt`).
//!
//! rppal identifies the model (the pwmchip is 0, or 2 on a Pi 5), exports
//! the channels and waits for udev to fix their permissions; it sets the
//! period, neutral duty and enable. rppal's own pulse-width setter opens the
//! file and formats a path on every call, so the per-frame write goes
//! through the same kept-open `duty_cycle` descriptor as the sysfs backend
//! (no allocation, no open, unchanged values skipped).
//!
//! On anything that is not a Raspberry Pi, `open` fails with a clear error.

use crate::calibration::Calibration;
use crate::config::RppalConfig;
use crate::sysfs::DutyFile;
use crate::{Actuator, ActuatorError, EmergencyNeutral, Pulses};
use ::rppal::pwm::{Channel as PiChannel, Pwm};
use ::rppal::system::{DeviceInfo, Model};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Why the Raspberry Pi PWM backend could not open.
#[derive(Debug, thiserror::Error)]
pub enum RppalError {
    /// rppal could not identify the board (the text is rppal's). Set `pwmchip`
    /// to skip detection, or use another backend.
    #[error("not a Raspberry Pi, or an unknown model ({0}); on other boards use backend = \"sysfs\" (with chip_match) or \"pca9685\"")]
    NotAPi(String),
    /// rppal could not export, configure or enable a channel, or the channel
    /// is not a hardware one (0..=3).
    #[error("channel {channel}: {what}: {source}; is the PWM overlay enabled (dtoverlay=pwm-2chan in /boot/firmware/config.txt) and may this user write /sys/class/pwm (group gpio)?")]
    Pwm {
        /// The configured channel.
        channel: u8,
        /// The step that failed (`export`, `set period`, ...).
        what: &'static str,
        /// rppal's error.
        #[source]
        source: ::rppal::pwm::Error,
    },
    /// The kept-open `duty_cycle` file could not be opened or written.
    #[error("channel {channel}: {0}", source)]
    Duty {
        /// The configured channel.
        channel: u8,
        /// The sysfs error, naming the file.
        #[source]
        source: crate::sysfs::SysfsError,
    },
}

/// The pwmchip rppal uses on this model for the two hardware channels.
pub fn pwmchip_for_model(model: Model) -> u8 {
    match model {
        Model::RaspberryPi5
        | Model::RaspberryPi500
        | Model::RaspberryPiComputeModule5
        | Model::RaspberryPiComputeModule5Lite => 2,
        _ => 0,
    }
}

/// A pulse width as rppal wants it.
pub fn pulse_duration(ns: u32) -> Duration {
    Duration::from_nanos(ns as u64)
}

/// The Raspberry Pi hardware PWM backend: set up through rppal, written per
/// frame through kept-open `duty_cycle` files.
pub struct RppalPwm {
    // Kept so the channels stay exported; reset_on_drop is off so the last
    // (neutral) duty stays on the wire after exit, like the sysfs backend.
    pwms: [Pwm; 2],
    throttle: DutyFile,
    steering: DutyFile,
}

fn pi_channel(ch: u8) -> Result<PiChannel, RppalError> {
    PiChannel::try_from(ch).map_err(|source| RppalError::Pwm {
        channel: ch,
        what: "not a hardware PWM channel (0..=3)",
        source,
    })
}

impl RppalPwm {
    /// Export and enable both channels at `cal`'s period with its neutral
    /// duty. Detects the board model unless `cfg.pwmchip` is set; off a Pi that
    /// fails with [`RppalError::NotAPi`].
    pub fn open(cfg: &RppalConfig, cal: &Calibration) -> Result<Self, RppalError> {
        let chip = match cfg.pwmchip {
            Some(c) => c,
            None => {
                let info = DeviceInfo::new().map_err(|e| RppalError::NotAPi(e.to_string()))?;
                pwmchip_for_model(info.model())
            }
        };
        let setup = |ch: u8, mid_ns: u32| -> Result<(Pwm, DutyFile), RppalError> {
            pi_channel(ch)?;
            let err = |what: &'static str| {
                move |source| RppalError::Pwm {
                    channel: ch,
                    what,
                    source,
                }
            };
            let mut pwm = Pwm::with_pwmchip(chip, ch).map_err(err("export"))?;
            pwm.set_reset_on_drop(false);
            // Duty 0 first: the kernel rejects a period below the current duty.
            let _ = pwm.set_pulse_width(Duration::ZERO);
            pwm.set_period(Duration::from_nanos(cal.period_ns as u64))
                .map_err(err("set period"))?;
            pwm.set_pulse_width(pulse_duration(mid_ns))
                .map_err(err("set pulse width"))?;
            pwm.enable().map_err(err("enable"))?;
            let path = PathBuf::from(format!("/sys/class/pwm/pwmchip{chip}/pwm{ch}/duty_cycle"));
            let mut duty = DutyFile::open(path).map_err(|source| RppalError::Duty {
                channel: ch,
                source,
            })?;
            duty.write(mid_ns).map_err(|e| RppalError::Duty {
                channel: ch,
                source: crate::sysfs::SysfsError::Io {
                    path: duty.path().to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                },
            })?;
            Ok((pwm, duty))
        };
        let (tp, throttle) = setup(cfg.throttle_channel, cal.throttle.mid)?;
        let (sp, steering) = setup(cfg.steering_channel, cal.steering.mid)?;
        Ok(RppalPwm {
            pwms: [tp, sp],
            throttle,
            steering,
        })
    }
}

impl Actuator for RppalPwm {
    #[inline]
    fn write(&mut self, pulses: Pulses) -> Result<(), ActuatorError> {
        self.throttle.write(pulses.throttle_ns)?;
        self.steering.write(pulses.steering_ns)
    }

    fn backend(&self) -> &'static str {
        "rppal"
    }

    fn emergency_neutral(&self) -> Option<EmergencyNeutral> {
        let t = self.throttle.path().to_path_buf();
        let s = self.steering.path().to_path_buf();
        Some(Arc::new(move |p: Pulses| {
            let rt = crate::sysfs::write_attr(&t, &p.throttle_ns.to_string());
            let rs = crate::sysfs::write_attr(&s, &p.steering_ns.to_string());
            rt.and(rs).map_err(|e| ActuatorError::Other(e.to_string()))
        }))
    }

    fn calibration_changed(&mut self, cal: &Calibration) -> Result<(), ActuatorError> {
        for pwm in &self.pwms {
            pwm.set_period(Duration::from_nanos(cal.period_ns as u64))
                .map_err(|e| ActuatorError::Other(format!("rppal: set period: {e}")))?;
        }
        Ok(())
    }

    fn forget_cache(&mut self) {
        self.throttle.forget();
        self.steering.forget();
    }

    fn raw_target(&self) -> Option<crate::failsafe::raw::RawTarget> {
        self.throttle.raw_pair(&self.steering)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pi5_uses_pwmchip2_others_0() {
        assert_eq!(pwmchip_for_model(Model::RaspberryPi5), 2);
        assert_eq!(pwmchip_for_model(Model::RaspberryPiComputeModule5), 2);
        assert_eq!(pwmchip_for_model(Model::RaspberryPi4B), 0);
        assert_eq!(pwmchip_for_model(Model::RaspberryPiZero2W), 0);
    }

    #[test]
    fn pulse_duration_is_exact() {
        assert_eq!(pulse_duration(1_450_000), Duration::from_micros(1450));
    }

    #[test]
    fn invalid_channel_is_refused() {
        let e = pi_channel(7).unwrap_err();
        assert!(e.to_string().contains("channel 7"), "{e}");
    }
}
