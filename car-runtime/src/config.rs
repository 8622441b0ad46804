//! The daemon's TOML configuration. Every table has defaults that work for
//! the simulated car, so an empty file (or none) runs `--sim` as shipped.
//!
//! Errors name the file and the key (`config.toml: control.stall_timeout_ms:
//! invalid type ...`); unknown keys are errors too, because a typo in a
//! timeout must not silently leave the default in force.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use servo_driver::ActuatorConfig;
pub use web_ui::WebConfig;

/// Where the packaged service reads its config.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/car-runtime/config.toml";
/// Largest config file read: ours are about 2 kB; `--config /dev/zero` or
/// a huge file must not fill the car's memory.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    pub sim: SimConfig,
    pub model: ModelConfig,
    pub control: ControlConfig,
    pub actuator: ActuatorConfig,
    pub web: WebConfig,
    pub record: RecordConfig,
    /// `[battery]`: the stock board's gauge, or none.
    pub battery: crate::battery::BatteryConfig,
    /// `[lights]`: the stock board's status LEDs and tail light, or none.
    pub lights: crate::lights::LightsConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Sim,
    Replay,
    V4l2,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// V4L2 device path; empty = the first capture device (video4 down to video0, as the stock car).
    pub device: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Replay: a folder of JPEG/PNG frames (a `--record` folder works).
    pub replay_dir: String,
    /// Replay: frames per second; 0 = as fast as the loop takes them.
    pub replay_rate: f64,
    /// Replay: start again at the first frame after the last.
    pub replay_loop: bool,
    /// V4L2: pixel format to ask for: "auto" (MJPEG if offered, else YUYV), "mjpeg", "yuyv".
    pub format: crate::source::v4l2::FormatPreference,
    /// V4L2: mmap buffers in the capture ring.
    pub buffers: u32,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::Sim,
            device: String::new(),
            width: 640,
            height: 480,
            fps: 15,
            replay_dir: String::new(),
            replay_rate: 15.0,
            replay_loop: false,
            format: crate::source::v4l2::FormatPreference::Auto,
            buffers: 4,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// A built-in track name or a path to a DeepRacer `.npy` track file.
    pub track: String,
    pub seed: u64,
    /// Pace the simulator at 15 Hz of wall time (false: as fast as possible).
    pub real_time: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            track: String::new(),
            seed: 0,
            real_time: true,
        }
    }
}

/// Which inference engine (`[model] backend`); parsed where the engine is.
pub use policy::BackendChoice;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A model folder or `.tar.gz`; empty = the model bundled in the binary.
    pub path: String,
    pub backend: BackendChoice,
    /// Path to `libonnxruntime.so`; empty = `ORT_DYLIB_PATH` or the usual install paths.
    pub onnxruntime_library: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            path: String::new(),
            backend: BackendChoice::Auto,
            onnxruntime_library: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Autonomous: no fresh action for this long -> neutral, centred.
    pub stall_timeout_ms: u64,
    /// Manual: a command older than this expires (dead-man).
    pub manual_timeout_ms: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            stall_timeout_ms: 200,
            manual_timeout_ms: 250,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordConfig {
    /// Record every frame and a JSON-lines log here; empty = off (`--record DIR` overrides).
    pub dir: String,
    /// Frames buffered for the writer thread; when all are in use frames are dropped and counted.
    pub pool_frames: usize,
    /// JPEG quality for frames that are not already JPEG.
    pub jpeg_quality: u8,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            dir: String::new(),
            pool_frames: 32,
            jpeg_quality: 90,
        }
    }
}

impl SourceConfig {
    /// The camera settings for the V4L2 source.
    pub fn v4l2(&self) -> crate::source::v4l2::V4l2Config {
        crate::source::v4l2::V4l2Config {
            device: (!self.device.is_empty()).then(|| PathBuf::from(&self.device)),
            width: self.width,
            height: self.height,
            fps: self.fps,
            format: self.format,
            buffers: self.buffers,
        }
    }
}

impl Config {
    /// Parse TOML text; `file` names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Invalid {
            file: file.to_string(),
            key: "(syntax)".to_string(),
            message: one_line(&e.to_string()),
        })?;
        let cfg: Config =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Invalid {
                file: file.to_string(),
                key: e.path().to_string(),
                message: one_line(&e.inner().to_string()),
            })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = read_config_text(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::parse(&text, &file)
    }

    /// `--config FILE` if given; otherwise the packaged path when it exists;
    /// otherwise the defaults (the simulated car).
    pub fn load_or_default(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        match path {
            Some(p) => Ok((Config::load(p)?, Some(p.to_path_buf()))),
            None => {
                let p = Path::new(DEFAULT_CONFIG_PATH);
                if p.exists() {
                    Ok((Config::load(p)?, Some(p.to_path_buf())))
                } else {
                    Ok((Config::default(), None))
                }
            }
        }
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        };
        if self.control.stall_timeout_ms == 0 || self.control.stall_timeout_ms > 5_000 {
            return Err(bad(
                "control.stall_timeout_ms",
                "must be between 1 and 5000 ms",
            ));
        }
        if self.control.manual_timeout_ms == 0 || self.control.manual_timeout_ms > 5_000 {
            return Err(bad(
                "control.manual_timeout_ms",
                "must be between 1 and 5000 ms",
            ));
        }
        if self.source.width == 0 || self.source.width > 4096 {
            return Err(bad("source.width", "must be between 1 and 4096"));
        }
        if self.source.height == 0 || self.source.height > 4096 {
            return Err(bad("source.height", "must be between 1 and 4096"));
        }
        if self.source.fps == 0 || self.source.fps > 240 {
            return Err(bad("source.fps", "must be between 1 and 240"));
        }
        if !(self.source.replay_rate >= 0.0 && self.source.replay_rate.is_finite()) {
            return Err(bad("source.replay_rate", "must be 0 (unpaced) or positive"));
        }
        if self.source.kind == SourceKind::Replay && self.source.replay_dir.is_empty() {
            return Err(bad(
                "source.replay_dir",
                "required when source.kind = \"replay\"",
            ));
        }
        if self.source.kind == SourceKind::V4l2 {
            if let Err(m) = self.source.v4l2().validate() {
                // The camera module names its fields source.v4l2.*; ours live in [source].
                let m = m.replace("source.v4l2.", "source.");
                let key = m.split(' ').next().unwrap_or("source").to_string();
                return Err(bad(&key, &m));
            }
        }
        if self.record.pool_frames == 0 || self.record.pool_frames > 1024 {
            return Err(bad("record.pool_frames", "must be between 1 and 1024"));
        }
        if self.record.jpeg_quality == 0 || self.record.jpeg_quality > 100 {
            return Err(bad("record.jpeg_quality", "must be between 1 and 100"));
        }
        if let Err((key, m)) = self.battery.validate() {
            return Err(bad(key, &m));
        }
        if let Err((key, m)) = self.lights.validate() {
            return Err(bad(key, &m));
        }
        Ok(())
    }
}

fn one_line(s: &str) -> String {
    // toml's messages quote the source with carets over several lines; the
    // last line is the reason, the path already says where.
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('|'))
        .unwrap_or(s)
        .trim()
        .to_string()
}

/// The config through the one bounded reader (`safe_io`): a FIFO or a
/// device (`--config /dev/zero`) is refused before it is opened, so it
/// neither blocks nor reads forever. The error leaves out the path, which
/// [`ConfigError::Read`] already names.
fn read_config_text(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind};
    safe_io::read_limited_to_string(path, MAX_CONFIG_BYTES).map_err(|e| match e {
        safe_io::ReadError::Io { source, .. } => source,
        safe_io::ReadError::NotRegular { kind, .. } => Error::new(
            ErrorKind::InvalidInput,
            format!("not a regular file ({kind})"),
        ),
        safe_io::ReadError::TooLarge { size, limit, .. } => Error::new(
            ErrorKind::InvalidData,
            format!("{size} bytes is more than the {limit}-byte limit for a config file"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_zero_a_fifo_and_a_huge_file_are_refused_at_once() {
        let e = Config::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/dev/zero") && e.contains("not a regular file"),
            "{e}"
        );
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("config.toml");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = Config::load(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let big = d.path().join("big.toml");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_CONFIG_BYTES + 1)
            .unwrap();
        let e = Config::load(&big).unwrap_err().to_string();
        assert!(e.contains("big.toml") && e.contains("limit"), "{e}");
        let ok = d.path().join("ok.toml");
        std::fs::write(&ok, "").unwrap();
        Config::load(&ok).unwrap();
    }

    #[test]
    fn empty_file_gives_sim_defaults() {
        let c = Config::parse("", "c.toml").unwrap();
        assert_eq!(c.source.kind, SourceKind::Sim);
        assert_eq!(c.control.stall_timeout_ms, 200);
        assert_eq!(c.control.manual_timeout_ms, 250);
        assert_eq!(c.model.backend, BackendChoice::Auto);
        assert!(c.model.path.is_empty());
    }

    #[test]
    fn full_file_parses() {
        let c = Config::parse(
            r#"
[source]
kind = "replay"
replay_dir = "/tmp/frames"
replay_rate = 30.0
[sim]
track = "oval"
seed = 7
real_time = false
[model]
path = "/var/lib/car-runtime/models/a"
backend = "tract"
[control]
stall_timeout_ms = 150
manual_timeout_ms = 300
[record]
dir = "/tmp/rec"
"#,
            "c.toml",
        )
        .unwrap();
        assert_eq!(c.source.kind, SourceKind::Replay);
        assert_eq!(c.source.replay_rate, 30.0);
        assert_eq!(c.sim.seed, 7);
        assert_eq!(c.model.backend, BackendChoice::Tract);
        assert_eq!(c.control.stall_timeout_ms, 150);
        assert_eq!(c.record.dir, "/tmp/rec");
    }

    #[test]
    fn wrong_type_names_file_and_key() {
        let e = Config::parse("[control]\nstall_timeout_ms = \"fast\"\n", "/etc/x.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/x.toml: control.stall_timeout_ms:"),
            "{e}"
        );
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = Config::parse("[control]\nstal_timeout_ms = 100\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml"), "{e}");
        assert!(e.contains("stal_timeout_ms"), "{e}");
    }

    #[test]
    fn bad_enum_value_names_key() {
        let e = Config::parse("[model]\nbackend = \"cuda\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml: model.backend:"), "{e}");
    }

    #[test]
    fn out_of_range_value_names_key() {
        let e = Config::parse("[control]\nstall_timeout_ms = 0\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "c.toml: control.stall_timeout_ms: must be between 1 and 5000 ms"
        );
        let e = Config::parse("[source]\nkind = \"replay\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.replay_dir"), "{e}");
    }

    #[test]
    fn syntax_error_names_file() {
        let e = Config::parse("[control\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml:"), "{e}");
    }

    #[test]
    fn missing_file_names_it() {
        let e = Config::load(Path::new("/nonexistent/car.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/car.toml"), "{e}");
    }
}
