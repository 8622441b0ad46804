//! The `[actuator]` TOML table and [`open`], which turns it into a
//! [`ServoDriver`] with neutral on the wire.
//!
//! ```toml
//! [actuator]
//! backend = "sysfs"            # sysfs | rppal | pca9685 | sim
//! calibration = "/var/lib/car-runtime/calibration.json"
//!
//! [actuator.sysfs]
//! root = "/sys"
//! chip_match = "0000:00:17.0"
//! throttle_channel = 0
//! steering_channel = 1
//! power_gate_gpio = 436        # optional
//!
//! [actuator.pca9685]
//! bus = "/dev/i2c-1"
//! address = 0x40
//! frequency_hz = 50
//! throttle_channel = 0
//! steering_channel = 1
//! oscillator_hz = 25000000     # trim: measure your board's clock
//!
//! [actuator.rppal]
//! throttle_channel = 0         # PWM0 (GPIO 18 by default)
//! steering_channel = 1         # PWM1 (GPIO 19 by default)
//! # pwmchip = 0                # override the chip rppal picks for the model
//! ```

use crate::calibration::{Calibration, CalibrationError};
use crate::sim_link::SimLink;
use crate::{ActuatorError, ServoDriver};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Sysfs,
    Rppal,
    Pca9685,
    /// The simulated car; the default so a fresh checkout drives nothing real.
    #[default]
    Sim,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Sysfs => "sysfs",
            BackendKind::Rppal => "rppal",
            BackendKind::Pca9685 => "pca9685",
            BackendKind::Sim => "sim",
        }
    }
}

/// Where the project's calibration file lives on a car.
pub const DEFAULT_CALIBRATION_PATH: &str = "/var/lib/car-runtime/calibration.json";

/// The `[actuator]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActuatorConfig {
    #[serde(default)]
    pub backend: BackendKind,
    /// The project's own calibration file. Missing file = stock defaults.
    #[serde(default = "default_calibration")]
    pub calibration: PathBuf,
    #[serde(default)]
    pub sysfs: SysfsConfig,
    #[serde(default)]
    pub pca9685: Pca9685Config,
    #[serde(default)]
    pub rppal: RppalConfig,
}

impl Default for ActuatorConfig {
    fn default() -> Self {
        ActuatorConfig {
            backend: BackendKind::default(),
            calibration: default_calibration(),
            sysfs: SysfsConfig::default(),
            pca9685: Pca9685Config::default(),
            rppal: RppalConfig::default(),
        }
    }
}

fn default_calibration() -> PathBuf {
    PathBuf::from(DEFAULT_CALIBRATION_PATH)
}

/// `[actuator.sysfs]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SysfsConfig {
    /// The backend reads `<root>/class/pwm/pwmchip*` and `<root>/class/gpio`.
    pub root: PathBuf,
    /// Substring of the pwmchip's resolved device path.
    pub chip_match: String,
    pub throttle_channel: u32,
    pub steering_channel: u32,
    /// Servo/ESC power gate (`gpioN/value`, 0 = on). 436 on the stock
    /// Ubuntu 20.04 image, 514 on newer kernels.
    pub power_gate_gpio: Option<u32>,
}

impl Default for SysfsConfig {
    fn default() -> Self {
        SysfsConfig {
            root: PathBuf::from("/sys"),
            chip_match: "0000:00:17.0".into(),
            throttle_channel: 0,
            steering_channel: 1,
            power_gate_gpio: None,
        }
    }
}

/// `[actuator.pca9685]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pca9685Config {
    pub bus: PathBuf,
    /// 7-bit I2C address (`0x40` in TOML is an integer).
    pub address: u16,
    pub frequency_hz: f64,
    pub throttle_channel: u8,
    pub steering_channel: u8,
    /// The board's real oscillator frequency. The nominal 25 MHz is often
    /// off by a few percent, which shifts every pulse by as much.
    pub oscillator_hz: u32,
}

impl Default for Pca9685Config {
    fn default() -> Self {
        Pca9685Config {
            bus: PathBuf::from("/dev/i2c-1"),
            address: 0x40,
            frequency_hz: 50.0,
            throttle_channel: 0,
            steering_channel: 1,
            oscillator_hz: 25_000_000,
        }
    }
}

/// `[actuator.rppal]`: Raspberry Pi hardware PWM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RppalConfig {
    pub throttle_channel: u8,
    pub steering_channel: u8,
    /// Override the pwmchip rppal would pick for the model (0, or 2 on a Pi 5).
    pub pwmchip: Option<u8>,
}

impl Default for RppalConfig {
    fn default() -> Self {
        RppalConfig {
            throttle_channel: 0,
            steering_channel: 1,
            pwmchip: None,
        }
    }
}

/// Why [`open`] could not give a driver. Display says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The message already names the calibration file.
    #[error(transparent)]
    Calibration(#[from] CalibrationError),
    #[error("actuator.sysfs: {0}")]
    Sysfs(#[from] crate::sysfs::SysfsError),
    #[error("actuator.pca9685: {0}")]
    Pca9685(#[from] crate::pca9685::Pca9685Error),
    #[error("actuator.rppal: {0}")]
    Rppal(#[from] crate::rppal::RppalError),
    #[error("actuator.{backend}: {source}")]
    Actuator {
        backend: &'static str,
        #[source]
        source: ActuatorError,
    },
    #[error("actuator.{field}: {message}")]
    Config { field: String, message: String },
}

impl ActuatorConfig {
    /// Checks that serde cannot express (channel ranges, distinct channels).
    pub fn validate(&self) -> Result<(), OpenError> {
        let bad = |field: &str, message: String| {
            Err(OpenError::Config {
                field: field.into(),
                message,
            })
        };
        match self.backend {
            BackendKind::Sysfs if self.sysfs.throttle_channel == self.sysfs.steering_channel => {
                return bad(
                    "sysfs.steering_channel",
                    "must differ from throttle_channel".into(),
                )
            }
            BackendKind::Pca9685 => {
                let c = &self.pca9685;
                if c.throttle_channel > 15 {
                    return bad(
                        "pca9685.throttle_channel",
                        format!("{} is not 0..=15", c.throttle_channel),
                    );
                }
                if c.steering_channel > 15 {
                    return bad(
                        "pca9685.steering_channel",
                        format!("{} is not 0..=15", c.steering_channel),
                    );
                }
                if c.throttle_channel == c.steering_channel {
                    return bad(
                        "pca9685.steering_channel",
                        "must differ from throttle_channel".into(),
                    );
                }
                if !(0x03..=0x77).contains(&c.address) {
                    return bad(
                        "pca9685.address",
                        format!(
                            "{:#x} is not a 7-bit device address (0x03..=0x77)",
                            c.address
                        ),
                    );
                }
            }
            BackendKind::Rppal if self.rppal.throttle_channel == self.rppal.steering_channel => {
                return bad(
                    "rppal.steering_channel",
                    "must differ from throttle_channel".into(),
                )
            }
            _ => {}
        }
        Ok(())
    }

    /// The calibration file if it exists, else the stock defaults (with a
    /// warning). A file that exists but is broken is an error, never
    /// silently replaced by defaults.
    pub fn load_calibration(&self) -> Result<Calibration, CalibrationError> {
        if self.calibration.exists() {
            Calibration::load(&self.calibration)
        } else {
            tracing::warn!(
                path = %self.calibration.display(),
                "no calibration file; using the stock DeepRacer defaults until one is saved"
            );
            Ok(Calibration::stock())
        }
    }
}

/// Open the configured backend with the configured calibration and put
/// neutral on the wire. `sim_link` feeds the simulated car (backend `sim`);
/// without one a private link is created (e.g. for `car-runtime neutral`).
pub fn open(
    cfg: &ActuatorConfig,
    sim_link: Option<Arc<SimLink>>,
) -> Result<ServoDriver, OpenError> {
    cfg.validate()?;
    let cal = cfg.load_calibration()?;
    open_with_calibration(cfg, cal, sim_link)
}

/// [`open`] with a calibration the caller already has (the wizard, tests).
pub fn open_with_calibration(
    cfg: &ActuatorConfig,
    cal: Calibration,
    sim_link: Option<Arc<SimLink>>,
) -> Result<ServoDriver, OpenError> {
    cfg.validate()?;
    cal.validate().map_err(|error| {
        OpenError::Calibration(CalibrationError::Invalid {
            path: cfg.calibration.clone(),
            error,
        })
    })?;
    let act: Box<dyn crate::Actuator> = match cfg.backend {
        BackendKind::Sysfs => Box::new(crate::sysfs::SysfsPwm::open(&cfg.sysfs, &cal)?),
        BackendKind::Pca9685 => Box::new(crate::pca9685::Pca9685::open_linux(&cfg.pca9685, &cal)?),
        BackendKind::Rppal => Box::new(crate::rppal::RppalPwm::open(&cfg.rppal, &cal)?),
        BackendKind::Sim => Box::new(crate::sim::SimActuator::new(
            sim_link.unwrap_or_default(),
            cal,
        )),
    };
    ServoDriver::new(cal, act).map_err(|source| OpenError::Actuator {
        backend: cfg.backend.as_str(),
        source,
    })
}
