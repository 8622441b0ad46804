//! Replay: a folder of JPEG/PNG frames in file-name order at a given rate
//! (a `--record` folder works as is). JPEG files are handed on undecoded, as
//! an MJPEG camera would; PNG files are decoded to RGB or gray.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::{monotonic_ns, sleep_until};
use crate::frame::{Frame, FrameSource, PixelFormat, SourceError};

/// A folder of frames as a [`FrameSource`], in file-name order, paced or
/// unpaced, optionally looped.
pub struct ReplaySource {
    files: Vec<PathBuf>,
    next: usize,
    /// ns between frames; 0 = unpaced.
    period_ns: u64,
    looped: bool,
    start_ns: u64,
    emitted: u64,
    buf: Vec<u8>,
    format: PixelFormat,
    width: u32,
    height: u32,
    /// The first JPEG's size, which the stream then keeps, as a camera keeps
    /// the format it negotiated: a later frame whose header claims another
    /// size is handed on as the negotiated size, and the decoder refuses it.
    negotiated: Option<(u32, u32)>,
}

/// Largest JPEG frame file read (a 640x480 camera frame is ~50 kB).
const MAX_FRAME_BYTES: u64 = 16 << 20;

/// Why [`ReplaySource::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The folder has no frame files; the string is the folder.
    #[error("{0}: no .jpg, .jpeg or .png frames in this folder")]
    Empty(String),
}

fn is_frame(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

impl ReplaySource {
    /// `rate_hz` 0 = as fast as the loop asks.
    pub fn open(dir: &Path, rate_hz: f64, looped: bool) -> Result<Self, ReplayError> {
        let rd = std::fs::read_dir(dir).map_err(|source| ReplayError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_frame(p))
            .collect();
        if files.is_empty() {
            return Err(ReplayError::Empty(dir.display().to_string()));
        }
        files.sort();
        let period_ns = if rate_hz > 0.0 {
            (1e9 / rate_hz) as u64
        } else {
            0
        };
        Ok(ReplaySource {
            files,
            next: 0,
            period_ns,
            looped,
            start_ns: 0,
            emitted: 0,
            buf: Vec::with_capacity(1 << 20),
            format: PixelFormat::Jpeg,
            width: 0,
            height: 0,
            negotiated: None,
        })
    }

    /// Number of frame files found.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Always false once opened: [`Self::open`] refuses an empty folder.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn load(&mut self, path: &Path) -> Result<(), SourceError> {
        let dev = |e: String| SourceError::Device(format!("{}: {e}", path.display()));
        let is_png = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if is_png {
            let bytes =
                safe_io::read_limited(path, MAX_FRAME_BYTES).map_err(|e| dev(e.reason()))?;
            let img = image::load_from_memory(&bytes).map_err(|e| dev(e.to_string()))?;
            let (w, h) = (img.width(), img.height());
            self.buf.clear();
            if img.color().channel_count() == 1 {
                self.buf.extend_from_slice(img.to_luma8().as_raw());
                self.format = PixelFormat::Gray8;
            } else {
                self.buf.extend_from_slice(img.to_rgb8().as_raw());
                self.format = PixelFormat::Rgb8;
            }
            self.width = w;
            self.height = h;
        } else {
            // Read into the reused buffer: no allocation once it has grown.
            self.buf.clear();
            std::fs::File::open(path)
                .and_then(|f| {
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(f, MAX_FRAME_BYTES + 1),
                        &mut self.buf,
                    )
                })
                .map_err(|e| dev(e.to_string()))?;
            if self.buf.len() as u64 > MAX_FRAME_BYTES {
                return Err(dev(format!(
                    "more than {MAX_FRAME_BYTES} bytes: not a camera frame"
                )));
            }
            let (w, h) = jpeg_size(&self.buf).ok_or_else(|| dev("not a JPEG".into()))?;
            let (w, h) = *self.negotiated.get_or_insert((w, h));
            self.format = PixelFormat::Jpeg;
            self.width = w;
            self.height = h;
        }
        Ok(())
    }
}

/// Width and height from a JPEG's SOF marker.
pub fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
    if b.len() < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return None;
    }
    let mut i = 2;
    while i + 9 < b.len() {
        if b[i] != 0xFF {
            i += 1;
            continue;
        }
        let m = b[i + 1];
        if m == 0xFF {
            i += 1;
            continue;
        }
        if matches!(m, 0xD0..=0xD9 | 0x01) {
            i += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        if matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC) {
            let h = u16::from_be_bytes([b[i + 5], b[i + 6]]);
            let w = u16::from_be_bytes([b[i + 7], b[i + 8]]);
            return Some((u32::from(w), u32::from(h)));
        }
        i += 2 + len;
    }
    None
}

impl FrameSource for ReplaySource {
    fn next_frame(&mut self, timeout: Duration) -> Result<Frame<'_>, SourceError> {
        if self.next >= self.files.len() {
            if self.looped {
                self.next = 0;
            } else {
                return Err(SourceError::EndOfStream);
            }
        }
        let now = monotonic_ns();
        if self.emitted == 0 {
            self.start_ns = now;
        }
        let due = self.start_ns + self.emitted * self.period_ns;
        if due > now + timeout.as_nanos() as u64 {
            std::thread::sleep(timeout);
            return Err(SourceError::Timeout(timeout));
        }
        sleep_until(due);
        let path = std::mem::take(&mut self.files[self.next]);
        let loaded = self.load(&path);
        self.files[self.next] = path;
        self.next += 1;
        let seq = self.emitted;
        self.emitted += 1;
        loaded?;
        Ok(Frame {
            data: &self.buf,
            format: self.format,
            width: self.width,
            height: self.height,
            timestamp_ns: if self.period_ns > 0 {
                due
            } else {
                monotonic_ns()
            },
            seq,
        })
    }

    fn name(&self) -> &'static str {
        "replay"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_jpeg(path: &Path, w: u32, h: u32, v: u8) {
        let img = image::GrayImage::from_pixel(w, h, image::Luma([v]));
        img.save(path).unwrap();
    }

    #[test]
    fn frames_come_in_name_order_and_end() {
        let dir = tempfile::tempdir().unwrap();
        // Written out of order; names decide.
        write_jpeg(&dir.path().join("frame_00000002.jpg"), 32, 24, 200);
        write_jpeg(&dir.path().join("frame_00000000.jpg"), 32, 24, 0);
        image::GrayImage::from_pixel(8, 6, image::Luma([100u8]))
            .save(dir.path().join("frame_00000001.png"))
            .unwrap();
        std::fs::write(dir.path().join("log.jsonl"), "{}\n").unwrap();
        let mut src = ReplaySource::open(dir.path(), 0.0, false).unwrap();
        assert_eq!(src.len(), 3);
        let t = Duration::from_millis(100);
        let f = src.next_frame(t).unwrap();
        assert_eq!(
            (f.format, f.width, f.height, f.seq),
            (PixelFormat::Jpeg, 32, 24, 0)
        );
        let img = image::load_from_memory(f.data).unwrap().to_luma8();
        assert!(img.as_raw()[0] < 10);
        let f = src.next_frame(t).unwrap();
        assert_eq!((f.format, f.width, f.height), (PixelFormat::Gray8, 8, 6));
        assert_eq!(f.data, &[100u8; 48][..]);
        let f = src.next_frame(t).unwrap();
        assert_eq!((f.width, f.seq), (32, 2));
        let img = image::load_from_memory(f.data).unwrap().to_luma8();
        assert!(img.as_raw()[0] > 190);
        assert!(matches!(src.next_frame(t), Err(SourceError::EndOfStream)));
    }

    #[test]
    fn paced_at_the_given_rate() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..4 {
            write_jpeg(&dir.path().join(format!("{i:03}.jpg")), 8, 8, 0);
        }
        // 20 Hz: frames stamped 50 ms apart; a short timeout returns Timeout
        // between frames instead of blocking past it.
        let mut src = ReplaySource::open(dir.path(), 20.0, false).unwrap();
        let mut stamps = Vec::new();
        let mut timeouts = 0;
        while stamps.len() < 4 {
            match src.next_frame(Duration::from_millis(10)) {
                Ok(f) => stamps.push(f.timestamp_ns),
                Err(SourceError::Timeout(_)) => timeouts += 1,
                Err(e) => panic!("{e}"),
            }
        }
        for w in stamps.windows(2) {
            assert_eq!(w[1] - w[0], 50_000_000);
        }
        assert!(timeouts > 0);
        // Wall clock did not run ahead of the stamps.
        assert!(monotonic_ns() >= stamps[3]);
    }

    #[test]
    fn loops_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        write_jpeg(&dir.path().join("a.jpg"), 8, 8, 0);
        let mut src = ReplaySource::open(dir.path(), 0.0, true).unwrap();
        for seq in 0..3 {
            assert_eq!(src.next_frame(Duration::from_millis(10)).unwrap().seq, seq);
        }
    }

    #[test]
    fn empty_or_missing_folder_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = ReplaySource::open(dir.path(), 15.0, false).err().unwrap();
        assert!(e.to_string().contains("no .jpg"), "{e}");
        let e = ReplaySource::open(Path::new("/nonexistent/rec"), 15.0, false)
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("/nonexistent/rec"), "{e}");
    }

    #[test]
    fn jpeg_size_reads_sof() {
        let mut v = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut v)
            .encode(&[0u8; 640 * 480], 640, 480, image::ExtendedColorType::L8)
            .unwrap();
        assert_eq!(jpeg_size(&v), Some((640, 480)));
        assert_eq!(jpeg_size(b"nope"), None);
    }
}
