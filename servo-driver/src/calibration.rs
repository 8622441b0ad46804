//! Calibration: per-channel pulse widths and the command -> pulse mapping.
//!
//! The mapping is the stock DeepRacer one (see
//! `shared/reference/deepracer-compat.md`): `adj = v * polarity`, below zero
//! the pulse moves from `mid` towards `min`, above zero towards `max`. A user
//! who imports a stock `calibration.json` gets exactly the pulses the stock
//! car produced (to the nearest nanosecond).
//!
//! Files are read with field-by-field checks so an error names the file and
//! the field, and written atomically (temp file, fsync, rename, fsync dir) so
//! a power cut never leaves a broken calibration behind.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io;
use std::path::{Path, PathBuf};

/// Hard limits for any pulse this crate puts on the wire, in ns. Outside
/// this range common servos hit their end stops and ESCs misbehave.
pub const SAFE_MIN_NS: u32 = 500_000;
/// Upper end of [`SAFE_MIN_NS`]'s range.
pub const SAFE_MAX_NS: u32 = 2_500_000;
/// Stock PWM period (50 Hz).
pub const DEFAULT_PERIOD_NS: u32 = 20_000_000;
/// Shortest accepted period: above the longest safe pulse, so a duty can
/// never exceed the period.
pub const MIN_PERIOD_NS: u32 = 3_000_000;
/// Longest accepted period (20 Hz): slower and servos start to twitch.
pub const MAX_PERIOD_NS: u32 = 50_000_000;
/// Largest calibration file read: the real ones are about 300 bytes; this
/// keeps `calibration import /dev/zero` or a huge file from using memory.
pub const MAX_CALIBRATION_BYTES: u64 = 64 << 10;

/// One channel: pulse widths in ns for full negative, neutral and full
/// positive command, and whether the command is inverted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCalibration {
    /// Pulse at full deflection below `mid`, ns (command -1, or +1 with polarity -1).
    pub min: u32,
    /// Neutral pulse, ns: wheels centred, or motor stopped. Every failsafe writes this.
    pub mid: u32,
    /// Pulse at full deflection above `mid`, ns (command +1, or -1 with polarity -1).
    pub max: u32,
    /// `1` or `-1`. `-1` swaps which side of `mid` a positive command goes.
    pub polarity: i8,
}

/// Both channels plus the PWM period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calibration {
    /// Steering servo (`Servo` in a stock DeepRacer file).
    pub steering: ChannelCalibration,
    /// ESC (`Motor` in a stock DeepRacer file).
    pub throttle: ChannelCalibration,
    /// PWM period, ns: 20 ms (50 Hz) stock, accepted within
    /// [`MIN_PERIOD_NS`]..=[`MAX_PERIOD_NS`]. Not part of the stock file format;
    /// the sysfs and rppal backends put it on the wire, the PCA9685 uses its
    /// own `frequency_hz` instead.
    pub period_ns: u32,
}

/// A calibration value that is not acceptable. `field` is a dotted path
/// such as `throttle.mid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// Dotted path of the bad field, e.g. `throttle.mid` or `Calibration.Servo.max`.
    pub field: String,
    /// What is wrong, with the value, e.g. `1200000 must be below mid (1100000)`.
    pub message: String,
}

/// Reading, validating or saving a calibration file failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    // Each message carries its cause itself (the web UI shows only the top
    // message), so no `#[source]`: a chain printer would repeat it.
    /// The file could not be read or written (missing, permissions, not a
    /// regular file, larger than [`MAX_CALIBRATION_BYTES`]).
    #[error("{}: {error}", path.display())]
    Io {
        /// The calibration file.
        path: PathBuf,
        /// The OS error, or why the file was refused before reading it.
        error: io::Error,
    },
    /// The file is not JSON at all (truncated, or not a calibration file).
    #[error("{}: not valid JSON: {error}", path.display())]
    Json {
        /// The calibration file.
        path: PathBuf,
        /// serde_json's parse error, with line and column.
        error: serde_json::Error,
    },
    /// Display: `calibration.json: throttle.mid: 2600000 is outside the safe range 500000..=2500000`.
    #[error("{}: {error}", path.display())]
    Invalid {
        /// The calibration file.
        path: PathBuf,
        /// The bad field, named as written in that file (`Calibration.Servo.min`
        /// for a stock file), and what is wrong with it.
        error: ValidationError,
    },
}

impl ChannelCalibration {
    /// Pulse width for a command in [-1, 1]. The caller has already clamped
    /// and removed NaN ([`crate::ServoDriver::drive`] does); out-of-range
    /// input is clamped here as well so nothing outside [min, max] can result.
    #[inline]
    pub fn pulse_ns(&self, command: f32) -> u32 {
        let v = if command.is_nan() {
            0.0
        } else {
            command.clamp(-1.0, 1.0) as f64
        };
        let adj = v * self.polarity as f64;
        let mid = self.mid as f64;
        let ns = if adj < 0.0 {
            mid + adj * (mid - self.min as f64)
        } else if adj > 0.0 {
            mid + adj * (self.max as f64 - mid)
        } else {
            return self.mid;
        };
        // Rounding can only land on min or max at the ends, never beyond.
        (ns.round() as u32).clamp(self.min, self.max)
    }

    /// The inverse of [`Self::pulse_ns`]: the command a pulse width stands for
    /// (the simulated car "sees" the wire through this).
    pub fn command_for(&self, pulse_ns: u32) -> f32 {
        let p = pulse_ns.clamp(self.min, self.max) as f64;
        let mid = self.mid as f64;
        let adj = if p < mid {
            (p - mid) / (mid - self.min as f64)
        } else {
            (p - mid) / (self.max as f64 - mid)
        };
        (adj * self.polarity as f64) as f32
    }

    /// Checks `min < mid < max` inside the safe range and polarity +/-1.
    /// `name` prefixes the field in the error (`steering`, `throttle`).
    pub fn validate(&self, name: &str) -> Result<(), ValidationError> {
        let err = |field: &str, message: String| ValidationError {
            field: format!("{name}.{field}"),
            message,
        };
        for (field, v) in [("min", self.min), ("mid", self.mid), ("max", self.max)] {
            if !(SAFE_MIN_NS..=SAFE_MAX_NS).contains(&v) {
                return Err(err(
                    field,
                    format!("{v} is outside the safe range {SAFE_MIN_NS}..={SAFE_MAX_NS}"),
                ));
            }
        }
        if self.min >= self.mid {
            return Err(err(
                "min",
                format!("{} must be below mid ({})", self.min, self.mid),
            ));
        }
        if self.mid >= self.max {
            return Err(err(
                "max",
                format!("{} must be above mid ({})", self.max, self.mid),
            ));
        }
        if self.polarity != 1 && self.polarity != -1 {
            return Err(err(
                "polarity",
                format!("{} must be 1 or -1", self.polarity),
            ));
        }
        Ok(())
    }
}

impl Default for Calibration {
    /// The stock DeepRacer defaults from `/opt/aws/deepracer/calibration.json`.
    fn default() -> Self {
        Calibration {
            steering: ChannelCalibration {
                min: 1_200_000,
                mid: 1_450_000,
                max: 1_700_000,
                polarity: 1,
            },
            throttle: ChannelCalibration {
                min: 1_311_000,
                mid: 1_446_000,
                max: 1_603_500,
                polarity: -1,
            },
            period_ns: DEFAULT_PERIOD_NS,
        }
    }
}

/// Version written into the project's own file.
pub const FILE_VERSION: u64 = 1;

impl Calibration {
    /// Stock DeepRacer defaults (same as `Default`).
    pub fn stock() -> Self {
        Self::default()
    }

    /// Checks both channels ([`ChannelCalibration::validate`]) and that the
    /// period is within [`MIN_PERIOD_NS`]..=[`MAX_PERIOD_NS`]. Everything that
    /// puts a calibration on the wire calls this first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.steering.validate("steering")?;
        self.throttle.validate("throttle")?;
        if !(MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&self.period_ns) {
            return Err(ValidationError {
                field: "period_ns".into(),
                message: format!(
                    "{} is outside {MIN_PERIOD_NS}..={MAX_PERIOD_NS}",
                    self.period_ns
                ),
            });
        }
        Ok(())
    }

    /// Neutral on both channels: each channel's `mid`.
    pub fn neutral(&self) -> crate::Pulses {
        crate::Pulses {
            steering_ns: self.steering.mid,
            throttle_ns: self.throttle.mid,
        }
    }

    /// Both channels mapped through the stock formula.
    #[inline]
    pub fn pulses(&self, steering: f32, throttle: f32) -> crate::Pulses {
        crate::Pulses {
            steering_ns: self.steering.pulse_ns(steering),
            throttle_ns: self.throttle.pulse_ns(throttle),
        }
    }

    /// The shape `car-runtime calibration show --json` prints:
    /// `{"steering": {"min","mid","max","polarity"}, "throttle": {...}, "period_ns": ..}`.
    pub fn to_show_json(&self) -> Value {
        serde_json::to_value(self).expect("plain integers always serialise")
    }

    /// Parse the project's own file format (what [`Self::save`] writes).
    /// `path` is only used in error messages.
    pub fn from_project_json(text: &str, path: &Path) -> Result<Self, CalibrationError> {
        let root = parse_object(text, path)?;
        let invalid = |field: &str, message: String| CalibrationError::Invalid {
            path: path.to_path_buf(),
            error: ValidationError {
                field: field.into(),
                message,
            },
        };
        if let Some(v) = root.get("version") {
            if v.as_u64() != Some(FILE_VERSION) {
                return Err(invalid(
                    "version",
                    format!("{v} is not a supported version (expected {FILE_VERSION})"),
                ));
            }
        }
        for key in root.keys() {
            if !["version", "steering", "throttle", "period_ns"].contains(&key.as_str()) {
                return Err(invalid(key, "unknown field".into()));
            }
        }
        let steering = channel_from(&root, "steering", "steering", path)?;
        let throttle = channel_from(&root, "throttle", "throttle", path)?;
        let period_ns = match root.get("period_ns") {
            None => DEFAULT_PERIOD_NS,
            Some(v) => ns_from(v, "period_ns", path)?,
        };
        let cal = Calibration {
            steering,
            throttle,
            period_ns,
        };
        cal.validate().map_err(|error| CalibrationError::Invalid {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(cal)
    }

    /// The project's own file format, pretty JSON with a trailing newline.
    pub fn to_project_json(&self) -> String {
        let mut v = self.to_show_json();
        v.as_object_mut()
            .expect("struct serialises to an object")
            .insert("version".into(), FILE_VERSION.into());
        let mut s = serde_json::to_string_pretty(&v).expect("plain values serialise");
        s.push('\n');
        s
    }

    /// Parse a stock DeepRacer `calibration.json`
    /// (`{"Calibration": {"Servo": .., "Motor": .., "version": 1}}`;
    /// Servo = steering, Motor = throttle). The period is the stock 20 ms.
    pub fn from_deepracer_json(text: &str, path: &Path) -> Result<Self, CalibrationError> {
        let root = parse_object(text, path)?;
        let inner = match root.get("Calibration") {
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(CalibrationError::Invalid {
                    path: path.to_path_buf(),
                    error: ValidationError {
                        field: "Calibration".into(),
                        message: "must be an object".into(),
                    },
                })
            }
            None => {
                return Err(CalibrationError::Invalid {
                    path: path.to_path_buf(),
                    error: ValidationError {
                        field: "Calibration".into(),
                        message: "missing (not a DeepRacer calibration.json?)".into(),
                    },
                })
            }
        };
        let steering = channel_from(inner, "Servo", "Calibration.Servo", path)?;
        let throttle = channel_from(inner, "Motor", "Calibration.Motor", path)?;
        let cal = Calibration {
            steering,
            throttle,
            period_ns: DEFAULT_PERIOD_NS,
        };
        // Name the DeepRacer field, not ours, so the user finds it in their file.
        cal.validate().map_err(|mut error| {
            error.field = error
                .field
                .replacen("steering", "Calibration.Servo", 1)
                .replacen("throttle", "Calibration.Motor", 1);
            CalibrationError::Invalid {
                path: path.to_path_buf(),
                error,
            }
        })?;
        Ok(cal)
    }

    /// The stock DeepRacer `calibration.json` text for this calibration.
    pub fn to_deepracer_json(&self) -> String {
        let ch = |c: &ChannelCalibration| serde_json::json!({"max": c.max, "mid": c.mid, "min": c.min, "polarity": c.polarity});
        let v = serde_json::json!({"Calibration": {
            "Servo": ch(&self.steering),
            "Motor": ch(&self.throttle),
            "version": 1
        }});
        let mut s = serde_json::to_string_pretty(&v).expect("plain values serialise");
        s.push('\n');
        s
    }

    /// Load the project's own file. Also removes temp files a killed save
    /// left beside it (best effort: a read-only folder is fine).
    pub fn load(path: &Path) -> Result<Self, CalibrationError> {
        safe_io::atomic::remove_stale_temps(path);
        let text = read(path)?;
        Self::from_project_json(&text, path)
    }

    /// Validate, then save atomically in the project's own format. An
    /// invalid calibration is refused and the file on disk is untouched.
    pub fn save(&self, path: &Path) -> Result<(), CalibrationError> {
        self.validate().map_err(|error| CalibrationError::Invalid {
            path: path.to_path_buf(),
            error,
        })?;
        safe_io::atomic::write(path, self.to_project_json().as_bytes()).map_err(|error| {
            CalibrationError::Io {
                path: path.to_path_buf(),
                error,
            }
        })
    }

    /// Read a stock DeepRacer `calibration.json`.
    pub fn import_deepracer(path: &Path) -> Result<Self, CalibrationError> {
        let text = read(path)?;
        Self::from_deepracer_json(&text, path)
    }

    /// Write this calibration as a stock DeepRacer `calibration.json`,
    /// atomically. The period is not part of that format and is dropped.
    pub fn export_deepracer(&self, path: &Path) -> Result<(), CalibrationError> {
        self.validate().map_err(|error| CalibrationError::Invalid {
            path: path.to_path_buf(),
            error,
        })?;
        safe_io::atomic::write(path, self.to_deepracer_json().as_bytes()).map_err(|error| {
            CalibrationError::Io {
                path: path.to_path_buf(),
                error,
            }
        })
    }
}

/// Convenience wrappers with the names the CLI uses.
pub fn import_deepracer(path: &Path) -> Result<Calibration, CalibrationError> {
    Calibration::import_deepracer(path)
}

/// See [`Calibration::export_deepracer`].
pub fn export_deepracer(cal: &Calibration, path: &Path) -> Result<(), CalibrationError> {
    cal.export_deepracer(path)
}

/// Calibration files come from outside (`calibration import` of a stock
/// car's file): regular files only, bounded, so a FIFO or `/dev/zero`
/// gives an error at once instead of blocking or filling memory.
fn read(path: &Path) -> Result<String, CalibrationError> {
    safe_io::read_limited_to_string(path, MAX_CALIBRATION_BYTES).map_err(|e| {
        let error = match e {
            safe_io::ReadError::Io { source, .. } => source,
            e => io::Error::new(io::ErrorKind::InvalidInput, e.reason()),
        };
        CalibrationError::Io {
            path: path.to_path_buf(),
            error,
        }
    })
}

fn parse_object(text: &str, path: &Path) -> Result<Map<String, Value>, CalibrationError> {
    let v: Value = serde_json::from_str(text).map_err(|error| CalibrationError::Json {
        path: path.to_path_buf(),
        error,
    })?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(CalibrationError::Invalid {
            path: path.to_path_buf(),
            error: ValidationError {
                field: "(top level)".into(),
                message: "must be a JSON object".into(),
            },
        }),
    }
}

fn ns_from(v: &Value, field: &str, path: &Path) -> Result<u32, CalibrationError> {
    let invalid = |message: String| CalibrationError::Invalid {
        path: path.to_path_buf(),
        error: ValidationError {
            field: field.into(),
            message,
        },
    };
    // Accept 1450000 and 1450000.0 (some editors and older tools write
    // floats); reject fractions and anything that does not fit.
    let f = v
        .as_f64()
        .ok_or_else(|| invalid(format!("{v} is not a number")))?;
    if f.fract() != 0.0 || !(0.0..=u32::MAX as f64).contains(&f) {
        return Err(invalid(format!("{v} is not a whole number of nanoseconds")));
    }
    Ok(f as u32)
}

fn channel_from(
    parent: &Map<String, Value>,
    key: &str,
    field: &str,
    path: &Path,
) -> Result<ChannelCalibration, CalibrationError> {
    let invalid = |field: String, message: String| CalibrationError::Invalid {
        path: path.to_path_buf(),
        error: ValidationError { field, message },
    };
    let obj = match parent.get(key) {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(invalid(field.into(), "must be an object".into())),
        None => return Err(invalid(field.into(), "missing".into())),
    };
    let get = |name: &str| -> Result<u32, CalibrationError> {
        let f = format!("{field}.{name}");
        match obj.get(name) {
            Some(v) => ns_from(v, &f, path),
            None => Err(invalid(f, "missing".into())),
        }
    };
    let polarity = match obj.get("polarity") {
        None => return Err(invalid(format!("{field}.polarity"), "missing".into())),
        Some(v) => {
            let p = v.as_f64();
            if p == Some(1.0) {
                1
            } else if p == Some(-1.0) {
                -1
            } else {
                return Err(invalid(
                    format!("{field}.polarity"),
                    format!("{v} must be 1 or -1"),
                ));
            }
        }
    };
    Ok(ChannelCalibration {
        min: get("min")?,
        mid: get("mid")?,
        max: get("max")?,
        polarity,
    })
}
