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

/// Which PWM backend drives the wheels (`backend = "..."` in `[actuator]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Linux sysfs PWM (`/sys/class/pwm`), the stock DeepRacer board: [`crate::sysfs`].
    Sysfs,
    /// Raspberry Pi hardware PWM through rppal: [`crate::rppal`].
    Rppal,
    /// A PCA9685 I2C PWM board (DonkeyCar / JetRacer wiring): [`crate::pca9685`].
    Pca9685,
    /// The simulated car; the default so a fresh checkout drives nothing real.
    #[default]
    Sim,
}

impl BackendKind {
    /// The name as written in TOML and shown in logs and errors (`sysfs`, `sim`, ...).
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
    /// Which backend to open. Defaults to `sim`, so a fresh config drives nothing real.
    #[serde(default)]
    pub backend: BackendKind,
    /// The project's own calibration file. Missing file = stock defaults.
    #[serde(default = "default_calibration")]
    pub calibration: PathBuf,
    /// `[actuator.sysfs]`; read only with `backend = "sysfs"`.
    #[serde(default)]
    pub sysfs: SysfsConfig,
    /// `[actuator.pca9685]`; read only with `backend = "pca9685"`.
    #[serde(default)]
    pub pca9685: Pca9685Config,
    /// `[actuator.rppal]`; read only with `backend = "rppal"`.
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
    /// Channel (`pwmN` under the chip) wired to the ESC; 0 on the stock board.
    pub throttle_channel: u32,
    /// Channel wired to the steering servo; 1 on the stock board. Must differ
    /// from `throttle_channel`.
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
    /// The i2c-dev node the board is on (`/dev/i2c-1` on a Pi's header).
    pub bus: PathBuf,
    /// 7-bit I2C address (`0x40` in TOML is an integer).
    pub address: u16,
    /// PWM frequency, Hz: 50 for servos and ESCs. The chip's prescaler rounds
    /// it, so the real period can differ slightly from the calibration's `period_ns`.
    pub frequency_hz: f64,
    /// Board channel (0..=15) wired to the ESC.
    pub throttle_channel: u8,
    /// Board channel (0..=15) wired to the steering servo; must differ from
    /// `throttle_channel`.
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
    /// Hardware PWM channel wired to the ESC (0 = PWM0, GPIO 18 by default).
    pub throttle_channel: u8,
    /// Hardware PWM channel wired to the steering servo (1 = PWM1, GPIO 19 by
    /// default); must differ from `throttle_channel`.
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
    /// The sysfs backend could not find, export or set up its channels.
    #[error("actuator.sysfs: {0}")]
    Sysfs(#[from] crate::sysfs::SysfsError),
    /// The PCA9685 could not be opened or initialised.
    #[error("actuator.pca9685: {0}")]
    Pca9685(#[from] crate::pca9685::Pca9685Error),
    /// The Raspberry Pi PWM could not be set up (not a Pi, overlay missing,
    /// permissions).
    #[error("actuator.rppal: {0}")]
    Rppal(#[from] crate::rppal::RppalError),
    /// The backend opened but [`ServoDriver::new`] could not put neutral on
    /// the wire: the car may not be at neutral.
    #[error("actuator.{backend}: {source}")]
    Actuator {
        /// Which backend (`sysfs`, `pca9685`, ...).
        backend: &'static str,
        /// The failed write.
        #[source]
        source: ActuatorError,
    },
    /// A value serde accepts but the backend cannot use (equal channels, a
    /// PCA9685 channel above 15, an I2C address outside 0x03..=0x77).
    #[error("actuator.{field}: {message}")]
    Config {
        /// Dotted path under `actuator`, e.g. `pca9685.address`.
        field: String,
        /// What is wrong, with the value.
        message: String,
    },
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
