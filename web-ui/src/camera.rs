//! One JPEG encoder for all viewers. A thread copies the latest frame out of
//! the daemon's slot at most `camera_fps` times a second, but only while
//! someone watches, encodes it once and publishes it in a `watch` channel:
//! every WebSocket sends the newest JPEG when it is ready for one, so a slow
//! phone skips frames and nothing queues.

use crate::{CarApi, FrameAction, FrameCopy, PixelFormat};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone, Default)]
pub struct JpegFrame {
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub jpeg: Arc<Vec<u8>>,
    pub action: Option<FrameAction>,
    /// Time spent encoding, for the page's stats.
    pub encode_us: u32,
}

pub type FrameRx = watch::Receiver<Arc<JpegFrame>>;

pub fn spawn_encoder(
    api: Arc<dyn CarApi>,
    fps: u32,
    stop: Arc<AtomicBool>,
) -> (
    watch::Sender<Arc<JpegFrame>>,
    std::io::Result<std::thread::JoinHandle<()>>,
) {
    let (tx, _rx) = watch::channel(Arc::new(JpegFrame::default()));
    let tx2 = tx.clone();
    let period = Duration::from_secs_f64(1.0 / fps.clamp(1, 60) as f64);
    let h = std::thread::Builder::new()
        .name("web-ui-jpeg".into())
        .spawn(move || {
            crate::yield_to_control_loop();
            let mut copy = FrameCopy::default();
            let mut last_seq = 0u64;
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                // The sender itself counts as no viewer.
                if tx2.receiver_count() > 0 && api.latest_frame(last_seq, &mut copy) {
                    last_seq = copy.seq;
                    out.clear();
                    let t_enc = Instant::now();
                    if encode(&copy, &mut out).is_ok() {
                        let frame = JpegFrame {
                            seq: copy.seq,
                            width: copy.width,
                            height: copy.height,
                            jpeg: Arc::new(std::mem::take(&mut out)),
                            action: copy.action,
                            encode_us: t_enc.elapsed().as_micros() as u32,
                        };
                        tx2.send_replace(Arc::new(frame));
                    }
                }
                let spent = t.elapsed();
                std::thread::sleep(if tx2.receiver_count() > 0 {
                    period.saturating_sub(spent)
                } else {
                    Duration::from_millis(100)
                });
            }
        });
    (tx, h)
}

pub fn encode(f: &FrameCopy, out: &mut Vec<u8>) -> Result<(), image::ImageError> {
    use image::codecs::jpeg::JpegEncoder;
    use image::ExtendedColorType;
    let (color, ch) = match f.format {
        PixelFormat::Jpeg => {
            out.extend_from_slice(&f.data);
            return Ok(());
        }
        PixelFormat::Gray8 => (ExtendedColorType::L8, 1usize),
        PixelFormat::Rgb8 => (ExtendedColorType::Rgb8, 3usize),
    };
    let need = f.width as usize * f.height as usize * ch;
    if f.data.len() < need || need == 0 {
        return Err(image::ImageError::Parameter(
            image::error::ParameterError::from_kind(
                image::error::ParameterErrorKind::DimensionMismatch,
            ),
        ));
    }
    JpegEncoder::new_with_quality(out, 70).encode(&f.data[..need], f.width, f.height, color)
}
