//! The `v4l2` frame source: a real camera through Video4Linux2.
//!
//! Negotiates MJPEG (the DeepRacer camera) or YUYV, sets the frame interval
//! explicitly with `VIDIOC_S_PARM` (drivers left at their default rate may
//! deliver 5 fps), streams through a small ring of mmap buffers and always
//! hands out the newest frame, borrowed straight from the driver's buffer.
//!
//! The buffer ring is driven by hand (`QBUF`/`DQBUF`/`poll`) rather than by
//! `v4l::io::mmap::Stream`: that stream blocks without a deadline unless told,
//! cannot drain to the newest buffer, and panics in `Drop` on any error other
//! than `ENODEV`, which is not acceptable next to the actuators.
//!
//! When the camera goes away (unplug, driver error) `next_frame` returns a
//! [`SourceError::Device`] once, then keeps reporting timeouts while it tries
//! to reopen the device every second; frames resume by themselves when the
//! device comes back. The control loop's stall rule keeps the car stopped in
//! between.
//!
//! Split by what can go wrong: [`negotiation`] holds the pure rules,
//! `stream` (private) the ioctls and mapped buffers, this module the
//! source the loop sees and its reconnect logic.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::frame::{Frame, FrameSource, PixelFormat, SourceError};

pub mod negotiation;
mod stream;

pub use negotiation::{capture_timestamp_ns, choose_format, fps_from_interval, SeqTracker};
use stream::Stream;

/// How often a lost camera is looked for again.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// The stock car scans these from the highest number down.
const SCAN_HIGHEST_INDEX: u32 = 4;

/// Which pixel format to ask the camera for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatPreference {
    /// MJPEG if the camera offers it (less USB bandwidth, what the DeepRacer
    /// camera sends), else YUYV.
    #[default]
    Auto,
    /// MJPEG only (a `JPEG` fourcc is accepted too).
    Mjpeg,
    /// YUYV 4:2:2 only; rows must not be padded.
    Yuyv,
}

/// The `[source.v4l2]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct V4l2Config {
    /// `/dev/videoN`; `None` scans /dev/video4 down to /dev/video0 for the
    /// first streaming capture device, as the stock car does.
    pub device: Option<PathBuf>,
    /// Frame width to ask for, pixels (16..=4096); the driver may give another
    /// (logged, see [`Negotiated`]).
    pub width: u32,
    /// Frame height to ask for, pixels (16..=4096).
    pub height: u32,
    /// Frame rate to ask for (1..=240), set explicitly with `VIDIOC_S_PARM`.
    pub fps: u32,
    /// Pixel format to ask for.
    pub format: FormatPreference,
    /// mmap buffers in the ring; 2 is the least that lets the driver fill
    /// one while we read another.
    pub buffers: u32,
}

impl Default for V4l2Config {
    fn default() -> Self {
        Self {
            device: None,
            width: 640,
            height: 480,
            fps: 15,
            format: FormatPreference::Auto,
            buffers: 4,
        }
    }
}

impl V4l2Config {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(16..=4096).contains(&self.width) {
            return Err(format!(
                "source.v4l2.width = {}: must be 16..=4096",
                self.width
            ));
        }
        if !(16..=4096).contains(&self.height) {
            return Err(format!(
                "source.v4l2.height = {}: must be 16..=4096",
                self.height
            ));
        }
        if !(1..=240).contains(&self.fps) {
            return Err(format!("source.v4l2.fps = {}: must be 1..=240", self.fps));
        }
        if !(2..=32).contains(&self.buffers) {
            return Err(format!(
                "source.v4l2.buffers = {}: must be 2..=32",
                self.buffers
            ));
        }
        Ok(())
    }
}

/// What the driver actually accepted, for logs and the status page.
#[derive(Debug, Clone, PartialEq)]
pub struct Negotiated {
    /// The device opened (`/dev/videoN`).
    pub device: PathBuf,
    /// Kernel driver name from `VIDIOC_QUERYCAP` (e.g. `uvcvideo`).
    pub driver: String,
    /// The camera's name as the driver reports it.
    pub card: String,
    /// The pixel format frames arrive in.
    pub format: PixelFormat,
    /// Frame width the driver granted, pixels.
    pub width: u32,
    /// Frame height the driver granted, pixels.
    pub height: u32,
    /// The frame rate asked for.
    pub fps_requested: u32,
    /// The frame rate the driver reports after `VIDIOC_S_PARM`
    /// (`timeperframe` inverted); `None` when it cannot set or report one.
    pub fps_actual: Option<f64>,
    /// Buffers the driver granted.
    pub buffers: u32,
}

impl std::fmt::Display for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} \"{}\") {:?} {}x{} at ",
            self.device.display(),
            self.driver,
            self.card,
            self.format,
            self.width,
            self.height
        )?;
        match self.fps_actual {
            Some(fps) => write!(f, "{fps:.2} fps")?,
            None => write!(f, "driver-chosen rate")?,
        }
        write!(
            f,
            " (asked {} fps), {} buffers",
            self.fps_requested, self.buffers
        )
    }
}

/// Finds the device to open: the configured path, or the first of
/// /dev/video4..0 that opens as a streaming capture device with a usable
/// format.
fn open_any(cfg: &V4l2Config) -> Result<Stream, String> {
    if let Some(path) = &cfg.device {
        return Stream::open(path, cfg);
    }
    let mut reasons = Vec::new();
    for n in (0..=SCAN_HIGHEST_INDEX).rev() {
        let path = PathBuf::from(format!("/dev/video{n}"));
        if !path.exists() {
            continue;
        }
        match Stream::open(&path, cfg) {
            Ok(s) => return Ok(s),
            Err(e) => reasons.push(e),
        }
    }
    if reasons.is_empty() {
        Err("no camera: none of /dev/video4../dev/video0 exists".into())
    } else {
        Err(format!("no usable camera: {}", reasons.join("; ")))
    }
}

/// A V4L2 camera as a [`FrameSource`].
pub struct V4l2Source {
    cfg: V4l2Config,
    stream: Option<Stream>,
    /// The last good negotiation, kept while the device is away.
    negotiated: Negotiated,
    seq: SeqTracker,
    next_reopen: Instant,
    lost_count: u64,
    bad_frames_before: u64,
    clock_fallbacks_before: u64,
    last_error: Option<String>,
}

impl V4l2Source {
    /// Opens and starts the camera. Fails with a clear message when no
    /// usable device is there at start: a car that starts blind should say
    /// so rather than wait.
    pub fn open(cfg: &V4l2Config) -> Result<Self, SourceError> {
        cfg.validate().map_err(SourceError::Device)?;
        let stream = open_any(cfg).map_err(SourceError::Device)?;
        let negotiated = stream.negotiated.clone();
        info!("camera: {negotiated}");
        let mut seq = SeqTracker::default();
        seq.restart();
        Ok(Self {
            cfg: cfg.clone(),
            stream: Some(stream),
            negotiated,
            seq,
            next_reopen: Instant::now(),
            lost_count: 0,
            bad_frames_before: 0,
            clock_fallbacks_before: 0,
            last_error: None,
        })
    }

    /// What the driver accepted (the last successful open).
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Whether the device is open and streaming right now.
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// How many times the device was lost since `open`.
    pub fn times_lost(&self) -> u64 {
        self.lost_count
    }

    /// Frames handed out since `open`.
    pub fn delivered(&self) -> u64 {
        self.seq.delivered()
    }

    /// Frames the driver marked bad (error flag, empty) and we skipped.
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames_before + self.stream.as_ref().map_or(0, |s| s.bad_frames)
    }

    /// Frames whose driver timestamp was not CLOCK_MONOTONIC and were
    /// stamped at dequeue instead.
    pub fn clock_fallbacks(&self) -> u64 {
        self.clock_fallbacks_before + self.stream.as_ref().map_or(0, |s| s.clock_fallbacks)
    }

    /// The error that took the device away, while it is away.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    fn lose(&mut self, err: &io::Error) -> SourceError {
        if let Some(s) = self.stream.take() {
            self.bad_frames_before += s.bad_frames;
            self.clock_fallbacks_before += s.clock_fallbacks;
        }
        self.lost_count += 1;
        self.next_reopen = Instant::now() + REOPEN_INTERVAL;
        let msg = format!(
            "camera {} lost: {err}; retrying every {} s",
            self.negotiated.device.display(),
            REOPEN_INTERVAL.as_secs()
        );
        warn!("{msg}");
        self.last_error = Some(msg.clone());
        SourceError::Device(msg)
    }

    fn try_reopen(&mut self) {
        self.next_reopen = Instant::now() + REOPEN_INTERVAL;
        match open_any(&self.cfg) {
            Ok(s) => {
                self.negotiated = s.negotiated.clone();
                self.seq.restart();
                self.stream = Some(s);
                self.last_error = None;
                info!("camera back: {}", self.negotiated);
            }
            Err(e) => debug!("camera still away: {e}"),
        }
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self, timeout: Duration) -> Result<Frame<'_>, SourceError> {
        let deadline = Instant::now() + timeout;
        if self.stream.is_none() {
            loop {
                let now = Instant::now();
                if now >= self.next_reopen {
                    self.try_reopen();
                    if self.stream.is_some() {
                        break;
                    }
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(SourceError::Timeout(timeout));
                }
                std::thread::sleep(self.next_reopen.min(deadline) - now);
            }
        }
        let waited = match self.stream.as_mut() {
            Some(stream) => stream.wait_newest(deadline),
            None => return Err(SourceError::Timeout(timeout)),
        };
        let (index, meta) = match waited {
            Ok(stream::Wait::Frame { index, meta }) => (index, meta),
            Ok(stream::Wait::Timeout) => return Err(SourceError::Timeout(timeout)),
            Err(e) => return Err(self.lose(&e)),
        };
        let Some(stream) = self.stream.as_mut() else {
            return Err(SourceError::Timeout(timeout));
        };
        Ok(stream.hold(index, &meta, &mut self.seq))
    }

    fn name(&self) -> &'static str {
        "v4l2"
    }

    fn dropped(&self) -> u64 {
        self.seq.dropped() + self.bad_frames()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn config_defaults_and_field_errors() {
        let c: V4l2Config = toml::from_str("").unwrap();
        assert_eq!(c, V4l2Config::default());
        assert_eq!((c.width, c.height, c.fps, c.buffers), (640, 480, 15, 4));
        let c: V4l2Config =
            toml::from_str("device = \"/dev/video2\"\nfps = 30\nformat = \"yuyv\"").unwrap();
        assert_eq!(c.device.as_deref(), Some(Path::new("/dev/video2")));
        assert_eq!(c.format, FormatPreference::Yuyv);
        let err = V4l2Config {
            buffers: 1,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("buffers"), "{err}");
        let err = toml::from_str::<V4l2Config>("fmt = \"yuyv\"").unwrap_err();
        assert!(err.to_string().contains("fmt"), "{err}");
        let err = toml::from_str::<V4l2Config>("format = \"h264\"").unwrap_err();
        assert!(err.to_string().contains("h264"), "{err}");
    }

    #[test]
    fn missing_device_is_a_clear_error() {
        let cfg = V4l2Config {
            device: Some(PathBuf::from("/nonexistent/video9")),
            ..Default::default()
        };
        let err = V4l2Source::open(&cfg).err().expect("must fail");
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/video9"), "{msg}");
    }

    #[test]
    fn a_non_video_device_is_refused_by_name() {
        let cfg = V4l2Config {
            device: Some(PathBuf::from("/dev/null")),
            ..Default::default()
        };
        let msg = V4l2Source::open(&cfg).err().expect("must fail").to_string();
        assert!(
            msg.contains("/dev/null") && msg.contains("QUERYCAP"),
            "{msg}"
        );
    }
}
