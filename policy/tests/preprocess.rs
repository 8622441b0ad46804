//! Preprocessing of every pixel format against a straightforward reference:
//! convert the whole frame to float channels first, then resize each output
//! pixel with OpenCV's INTER_LINEAR formula written out directly.

use policy::preprocess::{InputSpec, Layout, PreprocessError, Preprocessor};
use policy::{Frame, PixelFormat};

fn pseudo(n: usize, seed: u32) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as u8
        })
        .collect()
}

/// Full-frame float channels (1 = luma, 3 = RGB), row-major.
fn to_channels(data: &[u8], fmt: PixelFormat, w: usize, h: usize, c: usize) -> Vec<Vec<f32>> {
    let mut planes = vec![vec![0f32; w * h]; c];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let (r, g, b, luma) = match fmt {
                PixelFormat::Gray8 => {
                    let v = data[i] as f32;
                    (v, v, v, v)
                }
                PixelFormat::Rgb8 => {
                    let (r, g, b) = (
                        data[i * 3] as f32,
                        data[i * 3 + 1] as f32,
                        data[i * 3 + 2] as f32,
                    );
                    (r, g, b, 0.299 * r + 0.587 * g + 0.114 * b)
                }
                PixelFormat::Yuyv => {
                    let yy = data[i * 2] as f32;
                    let pair = (y * w + (x / 2) * 2) * 2;
                    let (u, v) = (data[pair + 1] as f32 - 128.0, data[pair + 3] as f32 - 128.0);
                    let cc = 1.164 * (yy - 16.0);
                    let r = (cc + 1.596 * v).clamp(0.0, 255.0);
                    let g = (cc - 0.391 * u - 0.813 * v).clamp(0.0, 255.0);
                    let b = (cc + 2.018 * u).clamp(0.0, 255.0);
                    (r, g, b, yy)
                }
                PixelFormat::Jpeg => unreachable!(),
            };
            if c == 1 {
                planes[0][i] = luma;
            } else {
                planes[0][i] = r;
                planes[1][i] = g;
                planes[2][i] = b;
            }
        }
    }
    planes
}

fn coord(d: usize, src: usize, dst: usize) -> (usize, usize, f32) {
    let f = (d as f64 + 0.5) * (src as f64 / dst as f64) - 0.5;
    let mut s = f.floor();
    let mut a = f - s;
    if s < 0.0 {
        s = 0.0;
        a = 0.0;
    }
    let mut i = s as usize;
    if i >= src - 1 {
        i = src - 1;
        a = 0.0;
    }
    (i, (i + 1).min(src - 1), a as f32)
}

fn reference(planes: &[Vec<f32>], w: usize, h: usize, spec: &InputSpec) -> Vec<f32> {
    let mut out = vec![0f32; spec.len()];
    for oy in 0..spec.height {
        let (y0, y1, fy) = coord(oy, h, spec.height);
        for ox in 0..spec.width {
            let (x0, x1, fx) = coord(ox, w, spec.width);
            for (c, p) in planes.iter().enumerate() {
                let top = p[y0 * w + x0] * (1.0 - fx) + p[y0 * w + x1] * fx;
                let bot = p[y1 * w + x0] * (1.0 - fx) + p[y1 * w + x1] * fx;
                let v = (top * (1.0 - fy) + bot * fy) * spec.scale;
                let idx = match spec.layout {
                    Layout::Nhwc => (oy * spec.width + ox) * spec.channels + c,
                    Layout::Nchw => c * spec.width * spec.height + oy * spec.width + ox,
                };
                out[idx] = v;
            }
        }
    }
    out
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: max difference {worst} > {tol}");
}

fn frame(data: &[u8], format: PixelFormat, w: usize, h: usize) -> Frame<'_> {
    Frame {
        data,
        format,
        width: w as u32,
        height: h as u32,
        timestamp_ns: 0,
        seq: 0,
    }
}

#[test]
fn raw_formats_match_reference() {
    let sizes = [(640, 480), (320, 240), (100, 60), (160, 120)];
    for (w, h) in sizes {
        for fmt in [PixelFormat::Gray8, PixelFormat::Rgb8, PixelFormat::Yuyv] {
            let bpp = match fmt {
                PixelFormat::Gray8 => 1,
                PixelFormat::Rgb8 => 3,
                _ => 2,
            };
            let data = pseudo(w * h * bpp, (w * 31 + h) as u32);
            for channels in [1, 3] {
                for layout in [Layout::Nhwc, Layout::Nchw] {
                    for scale in [1.0, 1.0 / 255.0] {
                        let spec = InputSpec {
                            layout,
                            width: 160,
                            height: 120,
                            channels,
                            scale,
                        };
                        let mut p = Preprocessor::new(w as u32, h as u32, fmt, spec).unwrap();
                        let mut out = vec![f32::NAN; spec.len()];
                        p.run(&frame(&data, fmt, w, h), &mut out).unwrap();
                        let want = reference(&to_channels(&data, fmt, w, h, channels), w, h, &spec);
                        assert_close(
                            &out,
                            &want,
                            1e-3 * scale.max(1e-2),
                            &format!("{w}x{h} {fmt:?} c{channels} {layout:?} x{scale}"),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn exact_quarter_downscale_values() {
    // 640 -> 160: each output averages source pixels 4k+1 and 4k+2 in each axis.
    let (w, h) = (640, 480);
    let data: Vec<u8> = (0..w * h).map(|i| ((i % w) % 256) as u8).collect();
    let spec = InputSpec::deepracer();
    let mut p = Preprocessor::new(w as u32, h as u32, PixelFormat::Gray8, spec).unwrap();
    let mut out = vec![0f32; spec.len()];
    p.run(&frame(&data, PixelFormat::Gray8, w, h), &mut out)
        .unwrap();
    assert_eq!(out[0], 1.5);
    assert_eq!(out[1], 5.5);
    assert_eq!(out[10], 41.5);
    // A flat frame stays flat.
    let flat = vec![77u8; w * h * 3];
    let mut p = Preprocessor::new(w as u32, h as u32, PixelFormat::Rgb8, spec).unwrap();
    p.run(&frame(&flat, PixelFormat::Rgb8, w, h), &mut out)
        .unwrap();
    assert!(out.iter().all(|v| (v - 77.0).abs() < 1e-3));
}

#[test]
fn jpeg_frames_match_decoded_reference() {
    let (w, h) = (640, 480);
    let mut rgb = image::RgbImage::new(w as u32, h as u32);
    for (x, y, px) in rgb.enumerate_pixels_mut() {
        *px = image::Rgb([(x / 3) as u8, (y / 2) as u8, ((x + y) / 5) as u8]);
    }
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 90)
        .encode_image(&rgb)
        .unwrap();
    let decoded = image::load_from_memory(&jpg).unwrap().to_rgb8();
    for channels in [1, 3] {
        let spec = InputSpec {
            channels,
            ..InputSpec::deepracer()
        };
        let mut p = Preprocessor::new(w as u32, h as u32, PixelFormat::Jpeg, spec).unwrap();
        let mut out = vec![0f32; spec.len()];
        p.run(&frame(&jpg, PixelFormat::Jpeg, w, h), &mut out)
            .unwrap();
        let want = reference(
            &to_channels(decoded.as_raw(), PixelFormat::Rgb8, w, h, channels),
            w,
            h,
            &spec,
        );
        // Decoders differ slightly in IDCT and upsampling; a few grey levels.
        assert_close(&out, &want, 4.0, &format!("jpeg c{channels}"));
    }
}

#[test]
fn wrong_frames_are_rejected() {
    let spec = InputSpec::deepracer();
    let mut p = Preprocessor::new(640, 480, PixelFormat::Gray8, spec).unwrap();
    let mut out = vec![0f32; spec.len()];
    let small = vec![0u8; 100];
    assert!(matches!(
        p.run(&frame(&small, PixelFormat::Gray8, 640, 480), &mut out),
        Err(PreprocessError::ShortFrame { .. })
    ));
    let data = vec![0u8; 320 * 240];
    assert!(matches!(
        p.run(&frame(&data, PixelFormat::Gray8, 320, 240), &mut out),
        Err(PreprocessError::FrameMismatch { .. })
    ));
    let ok = vec![0u8; 640 * 480];
    let mut short_out = vec![0f32; 10];
    assert!(matches!(
        p.run(&frame(&ok, PixelFormat::Gray8, 640, 480), &mut short_out),
        Err(PreprocessError::OutputSize { .. })
    ));
    assert!(Preprocessor::new(641, 480, PixelFormat::Yuyv, spec).is_err());
    let mut pj = Preprocessor::new(640, 480, PixelFormat::Jpeg, spec).unwrap();
    assert!(matches!(
        pj.run(&frame(b"not a jpeg", PixelFormat::Jpeg, 640, 480), &mut out),
        Err(PreprocessError::JpegFrame(policy::jpeg::JpegError::NotJpeg))
    ));
}
