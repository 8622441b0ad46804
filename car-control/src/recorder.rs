//! `--record DIR`: every frame as captured (JPEG) plus a JSON-lines log of
//! timestamps, mode, action, pulses and per-stage latency.
//!
//! The loop copies a frame into a buffer from a preallocated pool and hands
//! it to a writer thread through a bounded queue that never waits. When the pool is empty
//! (the disk is slower than the camera) the frame is dropped and counted:
//! the loop never waits for the disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use heapless::mpmc::Queue;

use crate::frame::{Frame, PixelFormat};
use crate::telemetry::Sample;

/// Largest pool the queues can hold.
pub const MAX_POOL: usize = 128;

struct RecBuf {
    data: Vec<u8>,
    len: usize,
    format: PixelFormat,
    width: u32,
    height: u32,
    sample: Sample,
}

type BufQueue = Queue<Box<RecBuf>, MAX_POOL>;

struct Inner {
    free: BufQueue,
    full: BufQueue,
    done: AtomicBool,
    recorded: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    /// Test hook: the writer sleeps this long per frame (a slow disk).
    write_delay_us: AtomicU64,
    /// Test hook: the writer pauses this long each time it finds the queue
    /// empty (a writer descheduled at the worst moment).
    idle_delay_us: AtomicU64,
}

/// The loop's end: `offer` never blocks and never allocates.
pub struct Recorder {
    inner: Arc<Inner>,
    writer: Option<JoinHandle<()>>,
    frame_capacity: usize,
    dir: PathBuf,
}

/// Counts at the end of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RecordStats {
    /// Frames written as `frame_<seq>.jpg`.
    pub recorded: u64,
    /// Frames not recorded: the buffer pool was empty (the disk is slower than
    /// the camera) or the frame was larger than a buffer.
    pub dropped: u64,
    /// Failed frame or log-line writes (disk full, folder gone); the first is logged.
    pub write_errors: u64,
}

/// Why [`Recorder::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    /// Creating the folder, opening `log.jsonl` or starting the writer failed.
    #[error("{path}: {source}")]
    Io {
        /// The folder or file concerned.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

#[allow(deprecated)] // heapless marks mpmc::Queue::new deprecated (not strictly lock-free); a failed op here only drops a frame.
fn new_queue() -> BufQueue {
    Queue::new()
}

impl Recorder {
    /// Create `dir`, preallocate `pool` buffers of `frame_capacity` bytes and start the writer.
    pub fn start(
        dir: &Path,
        pool: usize,
        frame_capacity: usize,
        jpeg_quality: u8,
    ) -> Result<Recorder, RecorderError> {
        std::fs::create_dir_all(dir).map_err(|source| RecorderError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let log_path = dir.join("log.jsonl");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| RecorderError::Io {
                path: log_path.display().to_string(),
                source,
            })?;
        let inner = Arc::new(Inner {
            free: new_queue(),
            full: new_queue(),
            done: AtomicBool::new(false),
            recorded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            write_delay_us: AtomicU64::new(0),
            idle_delay_us: AtomicU64::new(0),
        });
        for _ in 0..pool.clamp(1, MAX_POOL) {
            let b = Box::new(RecBuf {
                data: vec![0; frame_capacity],
                len: 0,
                format: PixelFormat::Gray8,
                width: 0,
                height: 0,
                sample: Sample::default(),
            });
            let _ = inner.free.enqueue(b);
        }
        let inner2 = inner.clone();
        let dir2 = dir.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || writer_thread(inner2, dir2, log, jpeg_quality))
            .map_err(|source| RecorderError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        Ok(Recorder {
            inner,
            writer: Some(writer),
            frame_capacity,
            dir: dir.to_path_buf(),
        })
    }

    /// The folder being recorded into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Test hook: make the writer behave like a slow disk.
    pub fn set_write_delay(&self, d: Duration) {
        self.inner
            .write_delay_us
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn set_idle_delay(&self, d: Duration) {
        self.inner
            .idle_delay_us
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// From the loop: copy the frame into a pooled buffer, or drop and count
    /// it. Returns whether it was queued.
    pub fn offer(&self, frame: &Frame<'_>, sample: &Sample) -> bool {
        if frame.data.len() > self.frame_capacity {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let Some(mut b) = self.inner.free.dequeue() else {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        b.data[..frame.data.len()].copy_from_slice(frame.data);
        b.len = frame.data.len();
        b.format = frame.format;
        b.width = frame.width;
        b.height = frame.height;
        b.sample = *sample;
        match self.inner.full.enqueue(b) {
            Ok(()) => {
                if let Some(w) = &self.writer {
                    w.thread().unpark();
                }
                true
            }
            Err(b) => {
                // Should not happen (full has room for every buffer); keep the
                // buffer in the pool rather than free it on the loop thread.
                let _ = self.inner.free.enqueue(b);
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Counts so far; the writer may still be catching up.
    pub fn stats(&self) -> RecordStats {
        RecordStats {
            recorded: self.inner.recorded.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
            write_errors: self.inner.write_errors.load(Ordering::Relaxed),
        }
    }

    /// Write what is queued, a summary line, and stop the writer.
    pub fn finish(mut self) -> RecordStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.inner.done.store(true, Ordering::SeqCst);
        if let Some(w) = self.writer.take() {
            w.thread().unpark();
            let _ = w.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn writer_thread(inner: Arc<Inner>, dir: PathBuf, log: std::fs::File, quality: u8) {
    let mut log = std::io::BufWriter::new(log);
    let mut line = String::with_capacity(1024);
    let mut rgb: Vec<u8> = Vec::new();
    let mut jpeg: Vec<u8> = Vec::new();
    loop {
        // Read the flag before looking at the queue: every frame queued
        // before `done` was set is then seen by this dequeue, and a frame
        // found here is always written (never taken and discarded).
        let done = inner.done.load(Ordering::SeqCst);
        let Some(b) = inner.full.dequeue() else {
            let pause = inner.idle_delay_us.load(Ordering::Relaxed);
            if pause > 0 {
                std::thread::sleep(Duration::from_micros(pause));
            }
            if done {
                break;
            }
            let _ = log.flush();
            std::thread::park_timeout(Duration::from_millis(50));
            continue;
        };
        let delay = inner.write_delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        let name = format!("frame_{:08}.jpg", b.sample.seq);
        let ok = write_frame(&dir.join(&name), &b, quality, &mut rgb, &mut jpeg);
        match ok {
            Ok(()) => {
                inner.recorded.fetch_add(1, Ordering::Relaxed);
                line.clear();
                log_line(&mut line, &name, &b.sample);
                if log.write_all(line.as_bytes()).is_err() {
                    inner.write_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                if inner.write_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::error!(error = %e, dir = %dir.display(), "recording: cannot write frame");
                }
            }
        }
        let mut b = b;
        // Hand the buffer back; retry if the queue is momentarily busy.
        for _ in 0..1000 {
            match inner.free.enqueue(b) {
                Ok(()) => break,
                Err(back) => {
                    b = back;
                    std::thread::yield_now();
                }
            }
        }
    }
    let summary = serde_json::json!({
        "summary": {
            "recorded": inner.recorded.load(Ordering::Relaxed),
            "dropped": inner.dropped.load(Ordering::Relaxed),
            "write_errors": inner.write_errors.load(Ordering::Relaxed),
        }
    });
    let _ = writeln!(log, "{summary}");
    let _ = log.flush();
    let _ = log.get_ref().sync_all();
}

fn write_frame(
    path: &Path,
    b: &RecBuf,
    quality: u8,
    rgb: &mut Vec<u8>,
    jpeg: &mut Vec<u8>,
) -> std::io::Result<()> {
    let data = &b.data[..b.len];
    let bytes: &[u8] = match b.format {
        PixelFormat::Jpeg => data,
        PixelFormat::Gray8 | PixelFormat::Rgb8 | PixelFormat::Yuyv => {
            let (pix, color): (&[u8], image::ExtendedColorType) = match b.format {
                PixelFormat::Gray8 => (data, image::ExtendedColorType::L8),
                PixelFormat::Rgb8 => (data, image::ExtendedColorType::Rgb8),
                _ => {
                    yuyv_to_rgb(data, rgb);
                    (rgb.as_slice(), image::ExtendedColorType::Rgb8)
                }
            };
            jpeg.clear();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut *jpeg, quality)
                .encode(pix, b.width, b.height, color)
                .map_err(std::io::Error::other)?;
            jpeg.as_slice()
        }
    };
    std::fs::write(path, bytes)
}

/// BT.601 limited-range YUYV to RGB (for recording only; the hot path uses the Y plane).
pub fn yuyv_to_rgb(src: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(src.len() / 2 * 3);
    let c = |v: f32| v.clamp(0.0, 255.0) as u8;
    for px in src.chunks_exact(4) {
        let (y0, u, y1, v) = (
            f32::from(px[0]) - 16.0,
            f32::from(px[1]) - 128.0,
            f32::from(px[2]) - 16.0,
            f32::from(px[3]) - 128.0,
        );
        for y in [y0, y1] {
            let y = 1.164 * y;
            out.extend_from_slice(&[
                c(y + 1.596 * v),
                c(y - 0.392 * u - 0.813 * v),
                c(y + 2.017 * u),
            ]);
        }
    }
}

fn log_line(out: &mut String, file: &str, s: &Sample) {
    let v = serde_json::json!({
        "seq": s.seq,
        "file": file,
        "timestamp_ns": s.timestamp_ns,
        "tick_ns": s.tick_ns,
        "mode": s.mode().as_str(),
        "estop": s.estop,
        "stalled": s.stalled,
        "max_speed_pct": s.max_speed_pct,
        "action": {
            "index": s.action_index,
            "steering_angle": s.steering_angle_deg,
            "speed": s.speed_mps,
            "steering": s.steering,
            "throttle": s.throttle,
        },
        "pulses": {"steering_ns": s.steering_ns, "throttle_ns": s.throttle_ns},
        "latency_us": {
            "capture_to_start": s.capture_to_start_us,
            "preprocess": s.preprocess_us,
            "inference": s.inference_us,
            "mapping": s.mapping_us,
            "actuate": s.actuate_us,
            "total": s.total_us,
            "capture_to_pwm": s.capture_to_pwm_us,
        },
    });
    out.push_str(&v.to_string());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray_frame(buf: &[u8], seq: u64) -> Frame<'_> {
        Frame {
            data: buf,
            format: PixelFormat::Gray8,
            width: 16,
            height: 8,
            timestamp_ns: seq * 66_666_667,
            seq,
        }
    }

    #[test]
    fn records_frames_as_jpeg_and_log_lines() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::start(dir.path(), 8, 16 * 8, 90).unwrap();
        let buf = vec![128u8; 16 * 8];
        for seq in 0..5 {
            let s = Sample {
                seq,
                mode: 2,
                throttle: 0.5,
                throttle_ns: 1_500_000,
                ..Default::default()
            };
            assert!(rec.offer(&gray_frame(&buf, seq), &s));
            // Give the writer a moment so an 8-buffer pool never runs dry here.
            std::thread::sleep(Duration::from_millis(5));
        }
        let stats = rec.finish();
        assert_eq!(stats.recorded, 5);
        assert_eq!(stats.dropped, 0);
        for seq in 0..5 {
            let p = dir.path().join(format!("frame_{seq:08}.jpg"));
            let img = image::open(&p).unwrap();
            assert_eq!((img.width(), img.height()), (16, 8));
        }
        let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[0]["mode"], "autonomous");
        assert_eq!(lines[0]["pulses"]["throttle_ns"], 1_500_000);
        assert_eq!(lines[0]["file"], "frame_00000000.jpg");
        assert!(lines[0]["latency_us"]["total"].is_number());
        assert_eq!(lines[5]["summary"]["recorded"], 5);
    }

    #[test]
    fn slow_disk_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        // A one-buffer pool and a disk that takes 200 ms per frame (long
        // enough that a busy CI machine or qemu finishes the offers first).
        let rec = Recorder::start(dir.path(), 1, 16 * 8, 90).unwrap();
        rec.set_write_delay(Duration::from_millis(200));
        let buf = vec![0u8; 16 * 8];
        let mut queued = 0;
        for seq in 0..100 {
            if rec.offer(&gray_frame(&buf, seq), &Sample::default()) {
                queued += 1;
            }
        }
        // 100 offers while the writer was busy with the first: all but the
        // first were dropped (and counted), none waited for the disk.
        assert!((1..=2).contains(&queued), "queued {queued}");
        let stats = rec.finish();
        assert_eq!(stats.recorded + stats.dropped, 100);
        assert_eq!(stats.recorded, queued);
    }

    #[test]
    fn stopping_right_after_a_frame_still_writes_it() {
        // The last frames before a stop (SIGTERM, end of laps) are the ones a
        // racer looks at: a frame `offer` accepted must be on disk even when
        // it arrives, and the stop follows, while the writer is between
        // finding the queue empty and checking for the stop.
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::start(dir.path(), 2, 16 * 8, 90).unwrap();
        rec.set_idle_delay(Duration::from_millis(100));
        // Let the writer find the queue empty and start its pause.
        std::thread::sleep(Duration::from_millis(20));
        let buf = vec![0u8; 16 * 8];
        let sample = Sample {
            seq: 7,
            ..Default::default()
        };
        assert!(rec.offer(&gray_frame(&buf, 7), &sample));
        let stats = rec.finish();
        assert_eq!((stats.recorded, stats.dropped), (1, 0), "{stats:?}");
        assert!(dir.path().join("frame_00000007.jpg").is_file());
        let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
        assert_eq!(log.lines().count(), 2, "{log}");
    }

    #[test]
    fn yuyv_converts_gray_to_gray() {
        let mut out = Vec::new();
        yuyv_to_rgb(&[126, 128, 126, 128], &mut out);
        assert_eq!(out.len(), 6);
        assert!(out.iter().all(|&v| (v as i32 - 128).abs() <= 1), "{out:?}");
    }
}
