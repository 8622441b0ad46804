//! The unsafe half of the camera: `VIDIOC_*` ioctls on the device's file
//! descriptor and the ring of driver buffers mapped into our memory.
//!
//! Everything that touches a raw pointer or an ioctl argument lives here,
//! each with the reason it is sound; the source above it (`super`) only
//! sees [`Stream`]: open, wait for the newest buffer, hold it as a frame.
//! A frame borrows the mapped buffer directly (no copy) until the next
//! call, which queues it back to the driver.

use std::io;
use std::path::Path;
use std::time::Instant;

use tracing::warn;
use v4l::v4l_sys::{v4l2_buffer, v4l2_requestbuffers};
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::negotiation::{
    capture_timestamp_ns, choose_format, fps_from_interval, has_monotonic_timestamp, SeqTracker,
};
use super::{Negotiated, V4l2Config};
use crate::frame::{Frame, PixelFormat};

const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
const MEMORY_MMAP: u32 = 1;
const BUF_FLAG_ERROR: u32 = 0x0000_0040;

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
pub(super) struct Stream {
    device: Device,
    maps: Vec<Mapping>,
    /// The buffer the caller is reading; queued back on the next call.
    held: Option<Held>,
    pub(super) negotiated: Negotiated,
    /// Frames with the error flag or zero bytes, requeued unseen.
    pub(super) bad_frames: u64,
    /// Buffers whose timestamp was not monotonic and got `now` instead.
    pub(super) clock_fallbacks: u64,
}

// SAFETY: the raw pointers are mmap regions owned by this struct alone; the
// stream moves between threads only as a whole.
unsafe impl Send for Stream {}

/// What one call to [`Stream::wait_newest`] found.
pub(super) enum Wait {
    Frame { index: usize, meta: v4l2_buffer },
    Timeout,
}

impl Stream {
    pub(super) fn open(path: &Path, cfg: &V4l2Config) -> Result<Self, String> {
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
    pub(super) fn wait_newest(&mut self, deadline: Instant) -> io::Result<Wait> {
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

    /// Hold the dequeued buffer `index` for the caller (until the next
    /// call) and return it as a frame: its capture time on
    /// CLOCK_MONOTONIC, its place in `seq`'s rising sequence.
    pub(super) fn hold(
        &mut self,
        index: usize,
        meta: &v4l2_buffer,
        seq: &mut SeqTracker,
    ) -> Frame<'_> {
        let now = crate::clock::monotonic_ns();
        // time_t and suseconds_t are i32 on 32-bit ARM boards.
        #[allow(clippy::useless_conversion)]
        let (sec, usec) = (
            i64::from(meta.timestamp.tv_sec),
            i64::from(meta.timestamp.tv_usec),
        );
        let ts = capture_timestamp_ns(meta.flags, sec, usec, now);
        if !has_monotonic_timestamp(meta.flags) {
            self.clock_fallbacks += 1;
        }
        let held = Held {
            index,
            bytes: (meta.bytesused as usize).min(self.maps[index].len),
            timestamp_ns: ts,
            seq: seq.deliver(meta.sequence),
        };
        self.held = Some(held);
        let n = &self.negotiated;
        Frame {
            data: self.data(&held),
            format: n.format,
            width: n.width,
            height: n.height,
            timestamp_ns: held.timestamp_ns,
            seq: held.seq,
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
