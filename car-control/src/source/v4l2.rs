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

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};
use v4l::v4l_sys::{v4l2_buffer, v4l2_requestbuffers};
use v4l::video::Capture;
use v4l::{Device, FourCC};

use crate::frame::{Frame, FrameSource, PixelFormat, SourceError};

/// How often a lost camera is looked for again.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// The stock car scans these from the highest number down.
const SCAN_HIGHEST_INDEX: u32 = 4;

const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
const MEMORY_MMAP: u32 = 1;
const BUF_FLAG_ERROR: u32 = 0x0000_0040;
const BUF_FLAG_TIMESTAMP_MASK: u32 = 0x0000_e000;
const BUF_FLAG_TIMESTAMP_MONOTONIC: u32 = 0x0000_2000;

/// Which pixel format to ask the camera for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatPreference {
    /// MJPEG if the camera offers it (less USB bandwidth, what the DeepRacer
    /// camera sends), else YUYV.
    #[default]
    Auto,
    Mjpeg,
    Yuyv,
}

/// The `[source.v4l2]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct V4l2Config {
    /// `/dev/videoN`; `None` scans /dev/video4 down to /dev/video0 for the
    /// first streaming capture device, as the stock car does.
    pub device: Option<PathBuf>,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
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
    pub device: PathBuf,
    pub driver: String,
    pub card: String,
    pub format: PixelFormat,
    pub width: u32,
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

/// Picks the fourcc to request from those the device lists.
pub fn choose_format(pref: FormatPreference, offered: &[[u8; 4]]) -> Option<PixelFormat> {
    let has = |code: &[u8; 4]| offered.iter().any(|o| o == code);
    match pref {
        FormatPreference::Auto if has(b"MJPG") => Some(PixelFormat::Jpeg),
        FormatPreference::Auto if has(b"JPEG") => Some(PixelFormat::Jpeg),
        FormatPreference::Auto if has(b"YUYV") => Some(PixelFormat::Yuyv),
        FormatPreference::Mjpeg if has(b"MJPG") || has(b"JPEG") => Some(PixelFormat::Jpeg),
        FormatPreference::Yuyv if has(b"YUYV") => Some(PixelFormat::Yuyv),
        _ => None,
    }
}

/// Frames per second from a `timeperframe` fraction.
pub fn fps_from_interval(numerator: u32, denominator: u32) -> Option<f64> {
    (numerator > 0 && denominator > 0).then(|| f64::from(denominator) / f64::from(numerator))
}

/// Capture time in ns on CLOCK_MONOTONIC: the driver's when it says its
/// timestamps are monotonic, else `now_ns` (taken right after dequeue).
pub fn capture_timestamp_ns(flags: u32, tv_sec: i64, tv_usec: i64, now_ns: u64) -> u64 {
    if flags & BUF_FLAG_TIMESTAMP_MASK == BUF_FLAG_TIMESTAMP_MONOTONIC && tv_sec >= 0 {
        (tv_sec as u64) * 1_000_000_000 + (tv_usec.max(0) as u64) * 1_000
    } else {
        now_ns
    }
}

/// Turns the driver's per-stream buffer sequence numbers into one
/// sequence that keeps rising across reconnects, and counts every frame
/// that never reached the caller (skipped for a newer one, dropped by the
/// driver for lack of a free buffer, or delivered with the error flag).
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// Driver sequence of the last frame handed out in this stream.
    last: Option<u32>,
    /// Our sequence of the last frame handed out.
    last_global: Option<u64>,
    dropped: u64,
    delivered: u64,
}

impl SeqTracker {
    /// A new stream starts (open or reopen); its sequence restarts at 0.
    pub fn restart(&mut self) {
        self.last = None;
    }

    /// Records a delivered frame, returns its global sequence number.
    pub fn deliver(&mut self, driver_seq: u32) -> u64 {
        let global = match (self.last, self.last_global) {
            (Some(last), Some(g)) if driver_seq > last => {
                self.dropped += u64::from(driver_seq - last - 1);
                g + u64::from(driver_seq - last)
            }
            // Backwards mid-stream: the driver restarted its numbering;
            // carry on from here without inventing drops.
            (Some(_), Some(g)) => g + 1,
            // First frame of a (re)started stream: the frames it numbered
            // before this one never reached us.
            (_, Some(g)) => {
                self.dropped += u64::from(driver_seq);
                g + 1 + u64::from(driver_seq)
            }
            (_, None) => {
                self.dropped += u64::from(driver_seq);
                u64::from(driver_seq)
            }
        };
        self.last = Some(driver_seq);
        self.last_global = Some(global);
        self.delivered += 1;
        global
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn delivered(&self) -> u64 {
        self.delivered
    }
}

fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

fn ioctl<T>(fd: i32, request: v4l::v4l2::vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is the struct the request expects and lives for the call.
    unsafe { v4l::v4l2::ioctl(fd, request, arg as *mut T as *mut std::os::raw::c_void) }
}

fn zeroed_buffer() -> v4l2_buffer {
    // SAFETY: v4l2_buffer is a plain C struct; all-zero is a valid value.
    let mut b: v4l2_buffer = unsafe { std::mem::zeroed() };
    b.type_ = BUF_TYPE_VIDEO_CAPTURE;
    b.memory = MEMORY_MMAP;
    b
}

struct Mapping {
    ptr: *mut u8,
    len: usize,
}

/// Metadata of the buffer currently held by the caller.
#[derive(Debug, Clone, Copy)]
struct Held {
    index: usize,
    bytes: usize,
    timestamp_ns: u64,
    seq: u64,
}

/// One open, streaming device. Dropping it stops the stream, unmaps the
/// buffers and closes the device, ignoring errors (the device may be gone).
struct Stream {
    device: Device,
    maps: Vec<Mapping>,
    /// The buffer the caller is reading; queued back on the next call.
    held: Option<Held>,
    negotiated: Negotiated,
    /// Frames with the error flag or zero bytes, requeued unseen.
    bad_frames: u64,
    /// Buffers whose timestamp was not monotonic and got `now` instead.
    clock_fallbacks: u64,
}

// SAFETY: the raw pointers are mmap regions owned by this struct alone; the
// stream moves between threads only as a whole.
unsafe impl Send for Stream {}

/// What one call to [`Stream::wait_newest`] found.
enum Wait {
    Frame { index: usize, meta: v4l2_buffer },
    Timeout,
}

impl Stream {
    fn open(path: &Path, cfg: &V4l2Config) -> Result<Self, String> {
        let device = Device::with_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let caps = device
            .query_caps()
            .map_err(|e| format!("{}: VIDIOC_QUERYCAP: {e}", path.display()))?;
        let flags = caps.capabilities;
        if !flags.contains(v4l::capability::Flags::VIDEO_CAPTURE) {
            return Err(format!(
                "{}: {} is not a video capture device",
                path.display(),
                caps.card
            ));
        }
        if !flags.contains(v4l::capability::Flags::STREAMING) {
            return Err(format!(
                "{}: {} cannot stream (no mmap I/O)",
                path.display(),
                caps.card
            ));
        }
        let offered: Vec<[u8; 4]> = device
            .enum_formats()
            .map_err(|e| format!("{}: VIDIOC_ENUM_FMT: {e}", path.display()))?
            .iter()
            .map(|d| d.fourcc.repr)
            .collect();
        let want = choose_format(cfg.format, &offered).ok_or_else(|| {
            let names: Vec<String> = offered
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            format!(
                "{}: no usable pixel format for source.v4l2.format = {:?} (device offers {})",
                path.display(),
                cfg.format,
                names.join(", ")
            )
        })?;
        let fourcc = match want {
            PixelFormat::Jpeg if offered.iter().any(|c| c == b"MJPG") => FourCC::new(b"MJPG"),
            PixelFormat::Jpeg => FourCC::new(b"JPEG"),
            _ => FourCC::new(b"YUYV"),
        };

        let mut fmt = device
            .format()
            .map_err(|e| format!("{}: VIDIOC_G_FMT: {e}", path.display()))?;
        fmt.width = cfg.width;
        fmt.height = cfg.height;
        fmt.fourcc = fourcc;
        let fmt = device
            .set_format(&fmt)
            .map_err(|e| format!("{}: VIDIOC_S_FMT: {e}", path.display()))?;
        if fmt.fourcc != fourcc {
            return Err(format!(
                "{}: asked for {} but the driver chose {}",
                path.display(),
                fourcc,
                fmt.fourcc
            ));
        }
        if want == PixelFormat::Yuyv && fmt.stride != fmt.width * 2 {
            return Err(format!(
                "{}: YUYV rows padded to {} bytes for width {} are not supported",
                path.display(),
                fmt.stride,
                fmt.width
            ));
        }
        if (fmt.width, fmt.height) != (cfg.width, cfg.height) {
            warn!(
                device = %path.display(),
                "asked for {}x{}, the driver gave {}x{}",
                cfg.width, cfg.height, fmt.width, fmt.height
            );
        }

        // Set the rate explicitly: left alone, some drivers stay at 5 fps.
        let fps_actual =
            match device.set_params(&v4l::video::capture::Parameters::with_fps(cfg.fps)) {
                Ok(p) => fps_from_interval(p.interval.numerator, p.interval.denominator),
                Err(e) => {
                    warn!(device = %path.display(), "VIDIOC_S_PARM {} fps refused: {e}", cfg.fps);
                    device.params().ok().and_then(|p| {
                        fps_from_interval(p.interval.numerator, p.interval.denominator)
                    })
                }
            };
        if let Some(fps) = fps_actual {
            if (fps - f64::from(cfg.fps)).abs() > 0.5 {
                warn!(
                    device = %path.display(),
                    "asked for {} fps, the driver runs at {fps:.2} fps",
                    cfg.fps
                );
            }
        }

        let fd = device.handle().fd();
        // SAFETY: plain C struct, zero is valid.
        let mut req: v4l2_requestbuffers = unsafe { std::mem::zeroed() };
        req.count = cfg.buffers;
        req.type_ = BUF_TYPE_VIDEO_CAPTURE;
        req.memory = MEMORY_MMAP;
        ioctl(fd, v4l::v4l2::vidioc::VIDIOC_REQBUFS, &mut req)
            .map_err(|e| format!("{}: VIDIOC_REQBUFS: {e}", path.display()))?;
        if req.count < 2 {
            return Err(format!(
                "{}: the driver granted {} buffer(s), at least 2 are needed",
                path.display(),
                req.count
            ));
        }

        let mut stream = Stream {
            device,
            maps: Vec::with_capacity(req.count as usize),
            held: None,
            negotiated: Negotiated {
                device: path.to_path_buf(),
                driver: caps.driver.clone(),
                card: caps.card.clone(),
                format: want,
                width: fmt.width,
                height: fmt.height,
                fps_requested: cfg.fps,
                fps_actual,
                buffers: req.count,
            },
            bad_frames: 0,
            clock_fallbacks: 0,
        };
        for index in 0..req.count {
            let mut buf = zeroed_buffer();
            buf.index = index;
            ioctl(fd, v4l::v4l2::vidioc::VIDIOC_QUERYBUF, &mut buf)
                .map_err(|e| format!("{}: VIDIOC_QUERYBUF {index}: {e}", path.display()))?;
            let len = buf.length as usize;
            // SAFETY: for MEMORY_MMAP the driver fills `m.offset`.
            let offset = unsafe { buf.m.offset } as libc::off_t;
            // SAFETY: maps the driver's buffer `index` at the offset it gave;
            // unmapped in Drop.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    offset,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(format!(
                    "{}: mmap of buffer {index}: {}",
                    path.display(),
                    io::Error::last_os_error()
                ));
            }
            stream.maps.push(Mapping {
                ptr: ptr as *mut u8,
                len,
            });
        }
        for index in 0..stream.maps.len() {
            stream
                .queue(index)
                .map_err(|e| format!("{}: VIDIOC_QBUF {index}: {e}", path.display()))?;
        }
        let mut typ = BUF_TYPE_VIDEO_CAPTURE as i32;
        ioctl(fd, v4l::v4l2::vidioc::VIDIOC_STREAMON, &mut typ)
            .map_err(|e| format!("{}: VIDIOC_STREAMON: {e}", path.display()))?;
        Ok(stream)
    }

    fn fd(&self) -> i32 {
        self.device.handle().fd()
    }

    fn queue(&self, index: usize) -> io::Result<()> {
        let mut buf = zeroed_buffer();
        buf.index = index as u32;
        ioctl(self.fd(), v4l::v4l2::vidioc::VIDIOC_QBUF, &mut buf)
    }

    /// Dequeues one filled buffer without blocking; `None` when none is ready.
    fn dequeue(&self) -> io::Result<Option<v4l2_buffer>> {
        let mut buf = zeroed_buffer();
        match ioctl(self.fd(), v4l::v4l2::vidioc::VIDIOC_DQBUF, &mut buf) {
            Ok(()) => Ok(Some(buf)),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `timeout` for a frame, then drains every other finished
    /// buffer and keeps only the newest one; older ones go straight back to
    /// the driver.
    fn wait_newest(&mut self, deadline: Instant) -> io::Result<Wait> {
        if let Some(h) = self.held.take() {
            self.queue(h.index)?;
        }
        loop {
            let mut newest: Option<v4l2_buffer> = None;
            while let Some(buf) = self.dequeue()? {
                if buf.index as usize >= self.maps.len() {
                    return Err(io::Error::other(format!(
                        "driver returned buffer index {} of {}",
                        buf.index,
                        self.maps.len()
                    )));
                }
                if buf.flags & BUF_FLAG_ERROR != 0 || buf.bytesused == 0 {
                    self.bad_frames += 1;
                    self.queue(buf.index as usize)?;
                    continue;
                }
                if let Some(old) = newest.replace(buf) {
                    self.queue(old.index as usize)?;
                }
            }
            if let Some(meta) = newest {
                return Ok(Wait::Frame {
                    index: meta.index as usize,
                    meta,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Wait::Timeout);
            }
            let ms = (deadline - now)
                .as_micros()
                .div_ceil(1000)
                .min(i32::MAX as u128) as i32;
            let mut pfd = libc::pollfd {
                fd: self.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    // Hand control back so the loop sees its signal flag.
                    return Ok(Wait::Timeout);
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(Wait::Timeout);
            }
            if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                // A final DQBUF tells ENODEV from a readable frame.
                match self.dequeue()? {
                    Some(buf) => {
                        self.queue(buf.index as usize)?;
                        continue;
                    }
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            format!("poll reported error/hangup (revents {:#x})", pfd.revents),
                        ))
                    }
                }
            }
        }
    }

    fn data(&self, held: &Held) -> &[u8] {
        let m = &self.maps[held.index];
        // SAFETY: the buffer is dequeued (the driver does not write it until
        // we queue it again on the next call, which needs `&mut self`), and
        // `bytes` was clamped to the mapping's length.
        unsafe { std::slice::from_raw_parts(m.ptr, held.bytes) }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let fd = self.fd();
        let mut typ = BUF_TYPE_VIDEO_CAPTURE as i32;
        let _ = ioctl(fd, v4l::v4l2::vidioc::VIDIOC_STREAMOFF, &mut typ);
        for m in self.maps.drain(..) {
            // SAFETY: each mapping came from our mmap with this length.
            unsafe { libc::munmap(m.ptr as *mut libc::c_void, m.len) };
        }
        // SAFETY: plain C struct, zero is valid.
        let mut req: v4l2_requestbuffers = unsafe { std::mem::zeroed() };
        req.type_ = BUF_TYPE_VIDEO_CAPTURE;
        req.memory = MEMORY_MMAP;
        let _ = ioctl(fd, v4l::v4l2::vidioc::VIDIOC_REQBUFS, &mut req);
        // `device` closes the fd when it drops after this.
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
            Ok(Wait::Frame { index, meta }) => (index, meta),
            Ok(Wait::Timeout) => return Err(SourceError::Timeout(timeout)),
            Err(e) => return Err(self.lose(&e)),
        };
        let Some(stream) = self.stream.as_mut() else {
            return Err(SourceError::Timeout(timeout));
        };
        let now = monotonic_now_ns();
        // time_t and suseconds_t are i32 on 32-bit ARM boards.
        #[allow(clippy::useless_conversion)]
        let (sec, usec) = (
            i64::from(meta.timestamp.tv_sec),
            i64::from(meta.timestamp.tv_usec),
        );
        let ts = capture_timestamp_ns(meta.flags, sec, usec, now);
        if meta.flags & BUF_FLAG_TIMESTAMP_MASK != BUF_FLAG_TIMESTAMP_MONOTONIC {
            stream.clock_fallbacks += 1;
        }
        let seq = self.seq.deliver(meta.sequence);
        let held = Held {
            index,
            bytes: (meta.bytesused as usize).min(stream.maps[index].len),
            timestamp_ns: ts,
            seq,
        };
        stream.held = Some(held);
        let n = &stream.negotiated;
        Ok(Frame {
            data: stream.data(&held),
            format: n.format,
            width: n.width,
            height: n.height,
            timestamp_ns: held.timestamp_ns,
            seq: held.seq,
        })
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

    #[test]
    fn auto_prefers_mjpeg_then_yuyv() {
        assert_eq!(
            choose_format(FormatPreference::Auto, &[*b"YUYV", *b"MJPG"]),
            Some(PixelFormat::Jpeg)
        );
        assert_eq!(
            choose_format(FormatPreference::Auto, &[*b"NV12", *b"YUYV"]),
            Some(PixelFormat::Yuyv)
        );
        assert_eq!(choose_format(FormatPreference::Auto, &[*b"NV12"]), None);
    }

    #[test]
    fn explicit_preference_is_honoured_or_refused() {
        assert_eq!(
            choose_format(FormatPreference::Yuyv, &[*b"MJPG", *b"YUYV"]),
            Some(PixelFormat::Yuyv)
        );
        assert_eq!(choose_format(FormatPreference::Mjpeg, &[*b"YUYV"]), None);
        assert_eq!(choose_format(FormatPreference::Yuyv, &[*b"MJPG"]), None);
    }

    #[test]
    fn fps_from_timeperframe() {
        assert_eq!(fps_from_interval(1, 15), Some(15.0));
        assert_eq!(
            fps_from_interval(1001, 30000).map(|f| (f * 100.0).round()),
            Some(2997.0)
        );
        assert_eq!(fps_from_interval(0, 15), None);
        assert_eq!(fps_from_interval(1, 0), None);
    }

    #[test]
    fn monotonic_driver_timestamps_are_used_others_replaced() {
        assert_eq!(
            capture_timestamp_ns(BUF_FLAG_TIMESTAMP_MONOTONIC, 12, 345_678, 99),
            12_345_678_000
        );
        // Unknown clock (flags 0) and copy timestamps (0x4000): use now.
        assert_eq!(capture_timestamp_ns(0, 12, 345_678, 99), 99);
        assert_eq!(capture_timestamp_ns(0x4000, 12, 345_678, 99), 99);
    }

    #[test]
    fn sequence_gaps_count_as_drops() {
        let mut t = SeqTracker::default();
        t.restart();
        assert_eq!(t.deliver(0), 0);
        assert_eq!(t.deliver(1), 1);
        assert_eq!(t.deliver(4), 4); // 2 and 3 skipped for the newest
        assert_eq!(t.dropped(), 2);
        assert_eq!(t.delivered(), 3);
    }

    #[test]
    fn reconnect_keeps_sequence_rising_and_counts_lost_start() {
        let mut t = SeqTracker::default();
        t.restart();
        t.deliver(0);
        t.deliver(1);
        t.restart(); // device came back; driver numbering restarts at 0
        let a = t.deliver(0);
        assert!(a > 1, "sequence must keep rising after reconnect, got {a}");
        let b = t.deliver(3);
        assert_eq!(b, a + 3);
        assert_eq!(t.dropped(), 2);
        t.restart();
        let c = t.deliver(5); // five frames lost before the first one we saw
        assert!(c > b);
        assert_eq!(t.dropped(), 7);
    }

    #[test]
    fn sequence_reset_mid_stream_is_not_a_drop() {
        let mut t = SeqTracker::default();
        t.restart();
        t.deliver(10);
        let before = t.dropped();
        let x = t.deliver(2);
        assert!(x > 10);
        assert_eq!(t.dropped(), before);
        assert_eq!(t.deliver(3), x + 1);
    }

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
