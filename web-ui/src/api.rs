//! The contract between the web UI and the daemon (`car-runtime`).
//!
//! The daemon implements [`CarApi`] over its bounded lock-free command
//! queues, its telemetry ring and its latest-frame slot, and hands an
//! `Arc<dyn CarApi>` to [`crate::start`]. Every method is called from the web
//! server's own threads (tokio workers or `spawn_blocking`), never from the
//! control thread, and must never make the control loop wait:
//!
//! - command methods push onto a bounded queue and return at once; a full
//!   queue is an error ([`ApiError::Busy`]), never a wait;
//! - read methods copy out of the ring / slot; a reader that falls behind
//!   loses samples, it is never queued for;
//! - the only slow method is [`CarApi::validate_model`], which the web UI
//!   always calls on a blocking thread; [`CarApi::set_tail_light`], which
//!   writes a file, is also called on one.
//!
//! Units: calibration pulse widths in nanoseconds (the UI shows
//! microseconds); steering and throttle in [-1, 1]; max speed in percent.
//!
//! This file is stable once published: add methods with default bodies
//! rather than change existing signatures.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The arbiter's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Neutral throttle, centred steering. The state after start-up and `Stop`.
    Stopped,
    /// Driven from the phone; every manual command expires after 250 ms.
    Manual,
    /// Driven by the loaded model, throttle scaled by the max-speed setting.
    Autonomous,
    /// The calibration wizard owns the wire (raw pulses, see
    /// [`CarApi::calibration_pulse`]).
    Calibration,
}

/// Commands the web UI sends. The daemon pushes each onto its bounded
/// command queue; the loop applies it at its next frame or tick.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Enter this mode (Start autonomous = `SetMode(Autonomous)`, Stop =
    /// `SetMode(Stopped)`). Refused by the arbiter while the e-stop is
    /// latched (except `Stopped`); the refusal shows in [`CarStatus`].
    SetMode { mode: Mode },
    /// Latch the emergency stop: neutral now; only `ResetEStop` clears it.
    EStop,
    /// Clear the e-stop latch. The car stays in `Stopped`.
    ResetEStop,
    /// Max speed in percent, 0..=100 (clamped by the daemon). Starts at 0.
    SetMaxSpeed { percent: f32 },
    /// Manual drive, both in [-1, 1] (clamped; NaN = neutral). Only acted on
    /// in `Manual` mode; expires 250 ms after it arrives unless refreshed.
    /// The web UI forwards the phone's heartbeat (every ~50 ms) and stops
    /// sending when the phone goes quiet, so the arbiter's dead-man fires.
    Manual { steering: f32, throttle: f32 },
}

/// State of the model the car drives with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    /// No load was ever requested and no model is active.
    #[default]
    None,
    /// The loader thread is loading `requested`; `active` still drives.
    Loading,
    /// `active` was loaded and is the one driving.
    Loaded,
    /// Loading `requested` failed with `error`; `active` (the old model, if
    /// any) is unchanged and still drives.
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ModelStatus {
    pub state: ModelState,
    /// Path of the model folder or archive that drives now, if any.
    pub active: Option<String>,
    /// Path of the last load request (same as `active` once it loaded).
    pub requested: Option<String>,
    /// The exact load error for `requested` when `state == Error`.
    pub error: Option<String>,
}

/// What the Drive page shows. Cheap to produce (atomics / last telemetry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarStatus {
    pub mode: Mode,
    pub estop: bool,
    /// 0..=100.
    pub max_speed_pct: f32,
    pub model: ModelStatus,
    /// Frames per second processed by the control loop (recent average).
    pub fps: f32,
    /// Control-loop latency, capture timestamp -> PWM write, over recent
    /// frames, milliseconds.
    pub latency_p50_ms: f32,
    pub latency_p99_ms: f32,
    pub cpu_temp_c: Option<f32>,
    /// Battery charge, % of full (`None`: no gauge, or no reading yet).
    pub battery_pct: Option<f32>,
    /// The gauge's own level, 0-11 (the stock DeepRacer's scale).
    #[serde(default)]
    pub battery_level: Option<u8>,
    /// At or below the configured low level: the phone warns.
    #[serde(default)]
    pub battery_low: bool,
    /// Short human text for the last mode transition or refusal
    /// ("e-stop latched", "stall: no frame for 200 ms", ...).
    pub last_event: Option<String>,
    /// True when the frames come from the simulator.
    pub simulated: bool,
    /// Actuator backend name ("sim", "sysfs", ...).
    pub actuator: String,
}

/// One control-loop step, as stored in the daemon's telemetry ring.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct TelemetrySample {
    /// Monotonic sequence number of the sample (no gaps in the ring; a gap
    /// seen by a reader means it lost samples).
    pub seq: u64,
    /// Capture timestamp of the frame (or tick time when no frame came), ns.
    pub timestamp_ns: u64,
    pub mode: Option<Mode>,
    /// What was written to the wire, in [-1, 1].
    pub steering: f32,
    pub throttle: f32,
    /// Chosen action index for discrete models.
    pub action_index: Option<u32>,
    /// Capture -> PWM write, microseconds.
    pub total_us: u32,
    /// Inference alone, microseconds.
    pub inference_us: u32,
    /// True when this step missed its deadline (took longer than a frame
    /// period or tripped the stall rule).
    pub deadline_missed: bool,
    /// Frames dropped by the source or recorder so far (cumulative).
    pub dropped_frames: u64,
}

/// Pixel layout of a copied camera frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PixelFormat {
    #[default]
    Gray8,
    Rgb8,
    /// Already JPEG-encoded (e.g. an MJPEG camera): sent to browsers as is.
    Jpeg,
}

/// The action drawn over the camera view.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct FrameAction {
    pub index: Option<u32>,
    pub steering_angle_deg: f32,
    pub speed_mps: f32,
    /// Normalised, as written to the wire.
    pub steering: f32,
    pub throttle: f32,
}

/// A reusable buffer for [`CarApi::latest_frame`]; the web UI keeps one per
/// encoder, so in steady state copying a frame allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct FrameCopy {
    pub seq: u64,
    pub timestamp_ns: u64,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// Row-major pixels, no padding (`width * height * channels` bytes), or
    /// the JPEG bytes.
    pub data: Vec<u8>,
    pub action: Option<FrameAction>,
}

/// One PWM channel's calibration, nanoseconds of high time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCalibration {
    pub min: u32,
    pub mid: u32,
    pub max: u32,
    /// +1 or -1: -1 flips the direction.
    pub polarity: i8,
}

/// Both channels, as in `car-runtime calibration show --json` (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calibration {
    pub steering: ChannelCalibration,
    pub throttle: ChannelCalibration,
    pub period_ns: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Steering,
    Throttle,
}

/// What the Calibrate page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalibrationView {
    /// The calibration in the calibration file (survives a restart).
    pub saved: Calibration,
    /// What the actuator uses now (live, maybe unsaved).
    pub live: Calibration,
}

/// Summary of a model that passed validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ModelSummary {
    /// e.g. "discrete, 5 actions" or "continuous".
    pub action_space: String,
    /// e.g. "[1,120,160,1] NHWC".
    pub input: String,
    /// The sensor list from the metadata (e.g. ["FRONT_FACING_CAMERA"]).
    pub sensors: Vec<String>,
}

/// The tail light's colour, 0-255 per channel (0 = off, 255 = full).
///
/// At events each racer's car is told apart by it. The daemon maps each
/// level linearly onto its PWM channel's high time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailLightColour {
    /// Red level, 0-255.
    pub r: u8,
    /// Green level, 0-255.
    pub g: u8,
    /// Blue level, 0-255.
    pub b: u8,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The command queue is full; the caller may retry (HTTP 503).
    #[error("car is busy (command queue full), try again")]
    Busy,
    /// Refused by the car in its current state, e.g. a mode change while the
    /// e-stop is latched, or a calibration pulse outside calibration mode
    /// (HTTP 409). The text is shown to the user as is.
    #[error("{0}")]
    Refused(String),
    /// Bad input: names the field (HTTP 400), e.g. "steering.min: 400000 ns
    /// is below the safe range 500000..=2500000".
    #[error("{0}")]
    Invalid(String),
    /// Anything else (I/O writing the calibration file...) (HTTP 500).
    #[error("{0}")]
    Internal(String),
}

/// What the web UI needs from the car. See the module docs for the rules.
pub trait CarApi: Send + Sync + 'static {
    /// Current status. Called ~5 times a second per open page; must be cheap
    /// (atomics, last telemetry), no I/O except maybe a cached sysfs read.
    fn status(&self) -> CarStatus;

    /// Queue a command for the control loop; returns once queued (not once
    /// applied). `Err(Busy)` when the queue is full. [`Command::Manual`]
    /// (the stick) must never be refused for a full queue: the car keeps
    /// only the latest one, in a slot of its own.
    ///
    /// The web UI never passes [`Command::EStop`] here: it calls
    /// [`CarApi::estop`] instead.
    fn command(&self, cmd: Command) -> Result<(), ApiError>;

    /// Latch the emergency stop. The web UI routes every e-stop (the
    /// `/api/command` `e_stop` command) here, and nothing else, so the daemon
    /// can raise it through a path of its own that no other traffic can fill
    /// (a flag the loop reads every frame or tick) instead of the command
    /// queue, which a flooding drive socket can fill. It must never refuse
    /// for lack of room and never wait.
    ///
    /// The default queues [`Command::EStop`] like any other command, so an
    /// implementation that has not yet got a dedicated path still compiles
    /// and behaves as before (it may answer `Err(Busy)`); the daemon should
    /// override it.
    fn estop(&self) -> Result<(), ApiError> {
        self.command(Command::EStop)
    }

    /// Copy telemetry samples with `seq > after_seq` into `out` (appending,
    /// oldest first, at most `out.capacity() - out.len()` of the newest when
    /// the caller reserved capacity, else all still in the ring). Returns the
    /// newest seq in the ring (0 when empty). Samples already overwritten are
    /// simply missing.
    fn telemetry_since(&self, after_seq: u64, out: &mut Vec<TelemetrySample>) -> u64;

    /// If the latest frame's seq is greater than `after_seq`, copy it into
    /// `out` (reusing `out.data`'s allocation) and return true; else false.
    /// Must not hold the slot longer than one memcpy.
    fn latest_frame(&self, after_seq: u64, out: &mut FrameCopy) -> bool;

    /// Saved and live calibration.
    fn calibration(&self) -> CalibrationView;

    /// Make `cal` live (the actuator uses it from the next write) without
    /// saving. Validates first: `Err(Invalid)` names the field. Allowed in
    /// any mode while the car is not in `Autonomous`/`Manual`
    /// (`Err(Refused)` then).
    fn calibration_set(&self, cal: Calibration) -> Result<(), ApiError>;

    /// Calibration mode only (`Err(Refused)` otherwise): put this raw pulse
    /// on one channel, clamped to the hard safe range 500_000..=2_500_000 ns,
    /// bypassing the live calibration, so the wizard can look for the
    /// centre/limits. A steering pulse holds until changed or the mode ends.
    /// A throttle pulse other than the live `mid` expires after 250 ms like
    /// a manual command (the page repeats it every ~100 ms while the user
    /// holds the test button). Leaving calibration mode returns both channels
    /// to the live calibration's neutral.
    fn calibration_pulse(&self, channel: Channel, pulse_ns: u32) -> Result<(), ApiError>;

    /// Write the live calibration to the calibration file atomically (temp
    /// file, fsync, rename) and return it.
    fn calibration_save(&self) -> Result<Calibration, ApiError>;

    /// Throw away unsaved changes: the saved calibration becomes live again.
    fn calibration_cancel(&self) -> Result<Calibration, ApiError>;

    /// Parse a stock DeepRacer `calibration.json` (its bytes, as uploaded),
    /// convert it, and make it live (unsaved: the user still presses Save).
    /// `Err(Invalid)` names the field for a bad file.
    fn calibration_import_stock(&self, json: &[u8]) -> Result<Calibration, ApiError>;

    /// Fully load `dir` (a folder holding `model.onnx` or `model.pb` and
    /// `model_metadata.json`) as the car would, and check it (output size vs
    /// action space...). Slow (up to seconds): the web UI calls it on a
    /// blocking thread, never with anything locked. `Err` is the exact
    /// error text shown to the user, naming the file and the field.
    fn validate_model(&self, dir: &Path) -> Result<ModelSummary, String>;

    /// Ask the loader thread to load `dir` and swap it in when ready.
    /// Returns at once; progress and the exact error show in
    /// `status().model`. A failed load leaves the old model driving.
    fn load_model(&self, dir: &Path) -> Result<(), ApiError>;

    /// The colour the tail light shows now, or `None` when this car has no
    /// tail light (the Settings page then hides the control). Called on
    /// every Settings page load: must be cheap (a cached value, no I/O).
    ///
    /// The default is `None`, so an implementation without a tail light
    /// need not override it.
    fn tail_light(&self) -> Option<TailLightColour> {
        None
    }

    /// Show `colour` on the tail light and keep it across restarts (the car
    /// side persists it); returns the colour now shown. The web UI has
    /// already checked every level is 0-255 and calls this on a blocking
    /// thread, so the implementation may write its file (and fsync) here.
    /// `Err(Refused)` when this car has no tail light (HTTP 409).
    ///
    /// The default refuses: a car without a tail light need not override it.
    fn set_tail_light(&self, colour: TailLightColour) -> Result<TailLightColour, ApiError> {
        let _ = colour;
        Err(ApiError::Refused("this car has no tail light".into()))
    }
}
