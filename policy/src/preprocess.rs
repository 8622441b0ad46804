//! Camera frame -> model input tensor, as the stock DeepRacer pipeline does it:
//! resize to the model's input size with bilinear interpolation (OpenCV's
//! `INTER_LINEAR` sampling positions), grayscale with ITU-R 601 luma for
//! one-channel models, raw 0-255 floats (times `InputSpec::scale`), written in
//! the model's layout.
//!
//! Resizing and the colour conversion are both linear, so we sample the four
//! source pixels of each output pixel and convert only those: a 640x480 RGB or
//! YUYV frame is never converted as a whole. OpenCV rounds to 8 bits after each
//! step; we keep floats, so results differ from OpenCV's by under one grey level.

use std::time::Instant;

use crate::frame::{Frame, PixelFormat};
use crate::jpeg::{JpegDecoder, JpegError, Scale};

/// Largest frame side the preprocessor is built for. Sources may take a
/// frame's size from the frame itself (a replayed JPEG's header), and the
/// general JPEG path sizes a buffer from it: 4096 covers any USB camera a
/// car carries and keeps that buffer under 50 MB.
pub const MAX_FRAME_SIDE: u32 = 4096;

/// Memory order of the model's input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// [1, C, H, W]
    Nchw,
    /// [1, H, W, C] (DeepRacer's TensorFlow models)
    Nhwc,
}

impl Layout {
    pub fn as_str(&self) -> &'static str {
        match self {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        }
    }
}

/// What the model wants as input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputSpec {
    pub layout: Layout,
    pub width: usize,
    pub height: usize,
    /// 1 (grayscale) or 3 (R, G, B).
    pub channels: usize,
    /// Multiplies the 0-255 values; 1.0 for DeepRacer models, which divide by
    /// 255 inside the network.
    pub scale: f32,
}

impl InputSpec {
    pub fn len(&self) -> usize {
        self.width * self.height * self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tensor shape, batch 1.
    pub fn shape(&self) -> [usize; 4] {
        match self.layout {
            Layout::Nchw => [1, self.channels, self.height, self.width],
            Layout::Nhwc => [1, self.height, self.width, self.channels],
        }
    }

    /// The stock DeepRacer input: 160x120 grey, NHWC, raw 0-255.
    pub fn deepracer() -> InputSpec {
        InputSpec {
            layout: Layout::Nhwc,
            width: 160,
            height: 120,
            channels: 1,
            scale: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreprocessError {
    #[error("frame is {got_w}x{got_h} {got_format:?}, the preprocessor was built for {want_w}x{want_h} {want_format:?}")]
    FrameMismatch {
        got_w: u32,
        got_h: u32,
        got_format: PixelFormat,
        want_w: u32,
        want_h: u32,
        want_format: PixelFormat,
    },
    #[error("frame data is {got} bytes, {want} expected for its size and format")]
    ShortFrame { got: usize, want: usize },
    #[error("output buffer holds {got} floats, the model input needs {want}")]
    OutputSize { got: usize, want: usize },
    #[error("unsupported input: {0}")]
    Unsupported(&'static str),
    /// The general decoder (`image`) failed.
    #[error("JPEG decode failed: {0}")]
    Jpeg(String),
    /// The frame was refused by the camera-frame checks or by our own
    /// decoder (no allocation on this path).
    #[error(transparent)]
    JpegFrame(#[from] JpegError),
}

/// Which decoder a JPEG frame went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegPath {
    /// Our luma decoder at reduced scale: no allocation.
    Fast,
    /// The `image` crate, for frames the fast one does not handle
    /// (progressive...) and for 3-channel models. Allocates.
    General,
}

/// How the last JPEG frame was decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JpegDecode {
    pub path: JpegPath,
    /// Time spent decoding (not resampling), microseconds.
    pub decode_us: f32,
}

/// One output coordinate's two source samples (OpenCV INTER_LINEAR).
#[derive(Debug, Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

fn taps(src: usize, dst: usize) -> Vec<Tap> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let mut s = f.floor();
            let mut frac = f - s;
            if s < 0.0 {
                s = 0.0;
                frac = 0.0;
            }
            let mut i0 = s as usize;
            if i0 >= src - 1 {
                i0 = src - 1;
                frac = 0.0;
            }
            let i1 = (i0 + 1).min(src - 1);
            Tap {
                i0,
                i1,
                w0: (1.0 - frac) as f32,
                w1: frac as f32,
            }
        })
        .collect()
}

/// ITU-R 601 luma, as OpenCV's RGB2GRAY.
#[inline(always)]
fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// BT.601 limited-range YUV -> RGB, as OpenCV's YUV2RGB_YUYV.
#[inline(always)]
fn yuv_to_rgb(y: f32, u: f32, v: f32) -> [f32; 3] {
    let c = 1.164 * (y - 16.0);
    let d = u - 128.0;
    let e = v - 128.0;
    [
        (c + 1.596 * e).clamp(0.0, 255.0),
        (c - 0.391 * d - 0.813 * e).clamp(0.0, 255.0),
        (c + 2.018 * d).clamp(0.0, 255.0),
    ]
}

/// How a decoded JPEG lands in our scratch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoded {
    Gray,
    Rgb,
}

/// Turns frames of one size and format into model input. Build once per
/// (camera, model) pair; `run` does not allocate, except for JPEG frames that
/// need the general decoder (3-channel models, progressive files).
///
/// JPEG frames are checked against the size the preprocessor was built for
/// (the camera's negotiated format) before either decoder runs. The decoder
/// is chosen per frame: a progressive frame goes to the general decoder and
/// the next baseline frame is back on the fast path.
pub struct Preprocessor {
    src_w: usize,
    src_h: usize,
    format: PixelFormat,
    spec: InputSpec,
    xs: Vec<Tap>,
    ys: Vec<Tap>,
    /// The general decoder's output, full size RGB. Empty until a frame
    /// needs it when the fast path exists (most frames never do).
    jpeg_buf: Vec<u8>,
    /// Grey models read JPEG frames through our own decoder at reduced
    /// scale (1/4 for 640x480 -> 160x120), then resample from that size.
    fast_jpeg: Option<FastJpeg>,
    last_jpeg: Option<JpegDecode>,
}

struct FastJpeg {
    decoder: JpegDecoder,
    scale: Scale,
    width: usize,
    height: usize,
    xs: Vec<Tap>,
    ys: Vec<Tap>,
    buf: Vec<u8>,
}

impl Preprocessor {
    pub fn new(
        src_w: u32,
        src_h: u32,
        format: PixelFormat,
        spec: InputSpec,
    ) -> Result<Preprocessor, PreprocessError> {
        if src_w == 0 || src_h == 0 || spec.width == 0 || spec.height == 0 {
            return Err(PreprocessError::Unsupported(
                "zero-sized frame or model input",
            ));
        }
        if spec.channels != 1 && spec.channels != 3 {
            return Err(PreprocessError::Unsupported(
                "model input must have 1 or 3 channels",
            ));
        }
        if format == PixelFormat::Yuyv && !src_w.is_multiple_of(2) {
            return Err(PreprocessError::Unsupported(
                "YUYV frames need an even width",
            ));
        }
        if src_w > MAX_FRAME_SIDE || src_h > MAX_FRAME_SIDE {
            return Err(PreprocessError::Unsupported(
                "frame larger than 4096 pixels on a side",
            ));
        }
        let (w, h) = (src_w as usize, src_h as usize);
        let fast = format == PixelFormat::Jpeg && spec.channels == 1;
        let jpeg_buf = if format == PixelFormat::Jpeg && !fast {
            vec![0u8; w * h * 3]
        } else {
            Vec::new()
        };
        let fast_jpeg = if fast {
            let scale = Scale::for_target(src_w, src_h, spec.width as u32, spec.height as u32);
            let (sw, sh) = scale.output_size(src_w, src_h);
            let (sw, sh) = (sw.max(1) as usize, sh.max(1) as usize);
            Some(FastJpeg {
                decoder: JpegDecoder::new(),
                scale,
                width: sw,
                height: sh,
                xs: taps(sw, spec.width),
                ys: taps(sh, spec.height),
                buf: vec![0u8; sw * sh],
            })
        } else {
            None
        };
        Ok(Preprocessor {
            fast_jpeg,
            src_w: w,
            src_h: h,
            format,
            spec,
            xs: taps(w, spec.width),
            ys: taps(h, spec.height),
            jpeg_buf,
            last_jpeg: None,
        })
    }

    /// How the last frame given to `run` was decoded: None when it was not
    /// a JPEG or was refused.
    pub fn last_jpeg(&self) -> Option<JpegDecode> {
        self.last_jpeg
    }

    pub fn spec(&self) -> &InputSpec {
        &self.spec
    }

    /// Frame size and format this preprocessor accepts.
    pub fn source(&self) -> (u32, u32, PixelFormat) {
        (self.src_w as u32, self.src_h as u32, self.format)
    }

    /// Fill `out` (exactly `spec.len()` floats) from `frame`.
    pub fn run(&mut self, frame: &Frame, out: &mut [f32]) -> Result<(), PreprocessError> {
        self.last_jpeg = None;
        if frame.width as usize != self.src_w
            || frame.height as usize != self.src_h
            || frame.format != self.format
        {
            return Err(PreprocessError::FrameMismatch {
                got_w: frame.width,
                got_h: frame.height,
                got_format: frame.format,
                want_w: self.src_w as u32,
                want_h: self.src_h as u32,
                want_format: self.format,
            });
        }
        if out.len() != self.spec.len() {
            return Err(PreprocessError::OutputSize {
                got: out.len(),
                want: self.spec.len(),
            });
        }
        let (w, h) = (self.src_w, self.src_h);
        let need = match self.format {
            PixelFormat::Gray8 => w * h,
            PixelFormat::Rgb8 => w * h * 3,
            PixelFormat::Yuyv => w * h * 2,
            PixelFormat::Jpeg => 0,
        };
        if frame.data.len() < need {
            return Err(PreprocessError::ShortFrame {
                got: frame.data.len(),
                want: need,
            });
        }
        let spec = self.spec;
        let (xs, ys) = (&self.xs, &self.ys);
        let d = frame.data;
        match (self.format, spec.channels) {
            // Same size (the JPEG decoder already scaled to the model's
            // size): the bilinear taps are the identity, so this gives the
            // same values, as one vectorisable pass; with one channel NHWC
            // and NCHW are the same order.
            (PixelFormat::Gray8, 1) if w == spec.width && h == spec.height => {
                let k = spec.scale;
                for (o, &v) in out.iter_mut().zip(&d[..w * h]) {
                    *o = v as f32 * k;
                }
            }
            (PixelFormat::Gray8, 1) => {
                resample(xs, ys, &spec, out, |x, y| [d[y * w + x] as f32; 1])
            }
            (PixelFormat::Gray8, _) => {
                resample(xs, ys, &spec, out, |x, y| [d[y * w + x] as f32; 3])
            }
            (PixelFormat::Rgb8, 1) => resample(xs, ys, &spec, out, |x, y| {
                let p = (y * w + x) * 3;
                [luma(d[p] as f32, d[p + 1] as f32, d[p + 2] as f32)]
            }),
            (PixelFormat::Rgb8, _) => resample(xs, ys, &spec, out, |x, y| {
                let p = (y * w + x) * 3;
                [d[p] as f32, d[p + 1] as f32, d[p + 2] as f32]
            }),
            // Grey models read the Y plane straight out of the packed frame.
            (PixelFormat::Yuyv, 1) => {
                resample(xs, ys, &spec, out, |x, y| [d[(y * w + x) * 2] as f32])
            }
            (PixelFormat::Yuyv, _) => resample(xs, ys, &spec, out, |x, y| {
                let row = y * w * 2;
                let pair = row + (x & !1) * 2;
                yuv_to_rgb(
                    d[row + x * 2] as f32,
                    d[pair + 1] as f32,
                    d[pair + 3] as f32,
                )
            }),
            (PixelFormat::Jpeg, _) => {
                let t = Instant::now();
                if let Some(fj) = self.fast_jpeg.as_mut() {
                    // Checks the header against w x h before decoding.
                    match fj
                        .decoder
                        .decode_frame(d, w as u32, h as u32, fj.scale, &mut fj.buf)
                    {
                        Ok(info) => {
                            self.last_jpeg = Some(JpegDecode {
                                path: JpegPath::Fast,
                                decode_us: t.elapsed().as_secs_f32() * 1e6,
                            });
                            let (b, bw) = (&fj.buf, fj.width);
                            debug_assert_eq!(info.out_width as usize, bw);
                            debug_assert!(info.out_height as usize <= fj.height);
                            if (fj.width, fj.height) == (spec.width, spec.height) {
                                // The decoder already scaled to the model's
                                // size: the taps are the identity, so this is
                                // the same values in one vectorisable pass
                                // (one channel: NHWC and NCHW are the same).
                                let k = spec.scale;
                                for (o, &v) in out.iter_mut().zip(&b[..bw * fj.height]) {
                                    *o = v as f32 * k;
                                }
                            } else {
                                resample(&fj.xs, &fj.ys, &spec, out, |x, y| {
                                    [b[y * bw + x] as f32; 1]
                                });
                            }
                            return Ok(());
                        }
                        // Valid and of the camera's size, but progressive or
                        // otherwise unusual: this frame, and only this one,
                        // goes to the general decoder below (which allocates).
                        Err(e) if e.is_unsupported() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                // The general decoder sizes its work and buffers from the
                // header: nothing reaches it that disagrees with w x h.
                crate::jpeg::check_frame(d, w as u32, h as u32)?;
                if self.jpeg_buf.len() < w * h * 3 {
                    self.jpeg_buf.resize(w * h * 3, 0);
                }
                let kind = decode_jpeg_fallback(d, w, h, &mut self.jpeg_buf)?;
                self.last_jpeg = Some(JpegDecode {
                    path: JpegPath::General,
                    decode_us: t.elapsed().as_secs_f32() * 1e6,
                });
                let b = &self.jpeg_buf;
                match (kind, spec.channels) {
                    (Decoded::Gray, 1) => {
                        resample(xs, ys, &spec, out, |x, y| [b[y * w + x] as f32; 1])
                    }
                    (Decoded::Gray, _) => {
                        resample(xs, ys, &spec, out, |x, y| [b[y * w + x] as f32; 3])
                    }
                    (Decoded::Rgb, 1) => resample(xs, ys, &spec, out, |x, y| {
                        let p = (y * w + x) * 3;
                        [luma(b[p] as f32, b[p + 1] as f32, b[p + 2] as f32)]
                    }),
                    (Decoded::Rgb, _) => resample(xs, ys, &spec, out, |x, y| {
                        let p = (y * w + x) * 3;
                        [b[p] as f32, b[p + 1] as f32, b[p + 2] as f32]
                    }),
                }
            }
        }
        Ok(())
    }
}

/// Decode a whole JPEG into `buf` with the `image` crate: for 3-channel
/// models and for files our own decoder refuses. Allocates inside the
/// decoder. Only for frames that passed `jpeg::check_frame`.
fn decode_jpeg_fallback(
    data: &[u8],
    w: usize,
    h: usize,
    buf: &mut [u8],
) -> Result<Decoded, PreprocessError> {
    use image::ImageDecoder;
    let mut dec = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(data))
        .map_err(|e| PreprocessError::Jpeg(e.to_string()))?;
    // Second line of defence behind `check_frame`: the decoder itself
    // refuses to size anything beyond the camera's frame.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w as u32);
    limits.max_image_height = Some(h as u32);
    dec.set_limits(limits)
        .map_err(|e| PreprocessError::Jpeg(e.to_string()))?;
    let (jw, jh) = dec.dimensions();
    if jw as usize != w || jh as usize != h {
        return Err(PreprocessError::Jpeg(format!(
            "image is {jw}x{jh}, the camera was set up for {w}x{h}"
        )));
    }
    let kind = match dec.color_type() {
        image::ColorType::L8 => Decoded::Gray,
        image::ColorType::Rgb8 => Decoded::Rgb,
        _ => return Err(PreprocessError::Jpeg("unsupported JPEG colour type".into())),
    };
    let n = dec.total_bytes() as usize;
    if n > buf.len() {
        return Err(PreprocessError::Jpeg(
            "decoded image larger than expected".into(),
        ));
    }
    dec.read_image(&mut buf[..n])
        .map_err(|e| PreprocessError::Jpeg(e.to_string()))?;
    Ok(kind)
}

/// Bilinear resample with a per-pixel fetch that returns C channel values.
#[inline(always)]
fn resample<const C: usize, F: Fn(usize, usize) -> [f32; C]>(
    xs: &[Tap],
    ys: &[Tap],
    spec: &InputSpec,
    out: &mut [f32],
    fetch: F,
) {
    let (ow, oh) = (spec.width, spec.height);
    let plane = ow * oh;
    let k = spec.scale;
    for (oy, ty) in ys.iter().enumerate() {
        for (ox, tx) in xs.iter().enumerate() {
            let a = fetch(tx.i0, ty.i0);
            let b = fetch(tx.i1, ty.i0);
            let c = fetch(tx.i0, ty.i1);
            let e = fetch(tx.i1, ty.i1);
            let mut v = [0f32; C];
            for ch in 0..C {
                let top = tx.w0 * a[ch] + tx.w1 * b[ch];
                let bot = tx.w0 * c[ch] + tx.w1 * e[ch];
                v[ch] = (ty.w0 * top + ty.w1 * bot) * k;
            }
            let p = oy * ow + ox;
            match spec.layout {
                Layout::Nhwc => out[p * C..p * C + C].copy_from_slice(&v),
                Layout::Nchw => {
                    for (ch, val) in v.iter().enumerate() {
                        out[ch * plane + p] = *val;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_match_opencv_positions() {
        // 4x downscale: samples at 4d + 1.5 -> pixels 4d+1 and 4d+2, half each.
        let t = taps(640, 160);
        assert_eq!((t[0].i0, t[0].i1), (1, 2));
        assert!((t[0].w0 - 0.5).abs() < 1e-6 && (t[0].w1 - 0.5).abs() < 1e-6);
        assert_eq!((t[159].i0, t[159].i1), (637, 638));
        // Upscale 2x: first output clamps to pixel 0, last to the edge.
        let t = taps(4, 8);
        assert_eq!((t[0].i0, t[0].w1), (0, 0.0));
        assert_eq!(t[7].i0, 3);
        assert_eq!(t[7].w1, 0.0);
        // Identity size: every tap is the pixel itself.
        for (i, t) in taps(10, 10).iter().enumerate() {
            assert_eq!(t.i0, i);
            assert_eq!(t.w1, 0.0);
        }
    }
}
