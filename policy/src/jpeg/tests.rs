//! Decoder tests against the `image` crate as the reference decoder.
//!
//! Reference = full decode by `image` (zune-jpeg) to RGB, BT.601 luma (the
//! JPEG Y, and what OpenCV's BGR2GRAY gives the stock car), then the mean
//! of each d x d area. Not `to_luma8`: that uses Rec.709 weights, a
//! different gray. Tolerance: mean |error| < 0.5 levels, max <= 2 (measured:
//! mean <= 0.26, max 1 on every case here). The two sides round at
//! different points: the reference rounds R, G, B from its integer IDCT
//! and upsampled chroma, we average the float IDCT over the area and round
//! once, so a pixel may differ by one level. Excluded from the comparison:
//! areas where the reference clamped a channel (it lost the true Y there:
//! up to 16 levels off at white kerbs) and partial areas at the right and
//! bottom edge of sizes that are not whole blocks (the scaled IDCT also
//! averages the encoder's padding there; camera sizes are whole blocks).
#![allow(clippy::needless_range_loop)] // index maths reads clearer

use super::testenc::{encode, EncOpts};
use super::*;

/// A road-like test scene (`test_support::frames::track_scene`): sky and
/// floor gradients, a dark track narrowing to the horizon with white edges
/// and a dashed yellow centre line, red/white kerbs, and sensor noise.
/// Channels: 3 = RGB, 1 = gray.
pub(super) fn scene(w: usize, h: usize, channels: usize, seed: u32) -> Vec<u8> {
    test_support::frames::track_scene(w, h, channels, seed)
}

pub(super) fn encode_with_image(pixels: &[u8], w: u32, h: u32, channels: usize, q: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let color = if channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
        .encode(pixels, w, h, color)
        .unwrap();
    out
}

/// Full decode by `image`, BT.601 luma, d x d area mean. Also returns
/// which output pixels are comparable: the area lies wholly inside the
/// image (a partial edge block averages the encoder's padding too) and no
/// reference pixel in it had a channel clamped to 0 or 255 (the reference
/// lost the true Y there; we did not).
pub(super) fn reference(jpeg: &[u8], d: usize) -> (Vec<u8>, Vec<bool>, usize, usize) {
    let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg).unwrap();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (gray, clamped): (Vec<f32>, Vec<bool>) = match img {
        image::DynamicImage::ImageLuma8(g) => g
            .into_raw()
            .into_iter()
            .map(|v| (v as f32, v == 0 || v == 255))
            .unzip(),
        other => other
            .to_rgb8()
            .pixels()
            .map(|p| {
                let y = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
                (y, p.0.iter().any(|&c| c == 0 || c == 255))
            })
            .unzip(),
    };
    let (ow, oh) = (w.div_ceil(d), h.div_ceil(d));
    let mut out = vec![0u8; ow * oh];
    let mut valid = vec![false; ow * oh];
    for oy in 0..oh {
        for ox in 0..ow {
            let (mut s, mut n, mut ok) = (0f32, 0f32, (ox + 1) * d <= w && (oy + 1) * d <= h);
            for y in oy * d..(oy * d + d).min(h) {
                for x in ox * d..(ox * d + d).min(w) {
                    s += gray[y * w + x];
                    n += 1.0;
                    ok &= !clamped[y * w + x];
                }
            }
            out[oy * ow + ox] = (s / n).round() as u8;
            valid[oy * ow + ox] = ok;
        }
    }
    (out, valid, ow, oh)
}

fn decode(jpeg: &[u8], scale: Scale) -> (Vec<u8>, FrameInfo) {
    let mut dec = JpegDecoder::new();
    let (w, h, _) = read_header(jpeg).unwrap();
    let (ow, oh) = scale.output_size(w, h);
    let mut out = vec![0u8; (ow * oh) as usize];
    let info = dec.decode_gray_scaled(jpeg, scale, &mut out).unwrap();
    (out, info)
}

/// (mean |error|, max |error|, share of pixels compared) over `valid`.
fn errors(a: &[u8], b: &[u8], valid: &[bool]) -> (f64, u8, f64) {
    assert_eq!(a.len(), b.len());
    let diffs: Vec<u8> = (0..a.len())
        .filter(|&i| valid[i])
        .map(|i| a[i].abs_diff(b[i]))
        .collect();
    let sum: u64 = diffs.iter().map(|&d| d as u64).sum();
    let max = diffs.iter().copied().max().unwrap_or(0);
    let n = diffs.len().max(1) as f64;
    (sum as f64 / n, max, diffs.len() as f64 / a.len() as f64)
}

const MAE_LIMIT: f64 = 0.5;
const MAX_LIMIT: u8 = 2;

fn check_against_reference(jpeg: &[u8], what: &str) {
    for scale in Scale::ALL {
        let (got, info) = decode(jpeg, scale);
        let (want, valid, ow, oh) = reference(jpeg, scale.denominator() as usize);
        assert_eq!(
            (info.out_width as usize, info.out_height as usize),
            (ow, oh)
        );
        let (mae, max, share) = errors(&got, &want, &valid);
        eprintln!("{what} {scale:?}: mean {mae:.3} max {max} compared {share:.2}");
        assert!(
            mae < MAE_LIMIT && max <= MAX_LIMIT,
            "{what} {scale:?}: mean error {mae:.3}, max {max}"
        );
        // Exclusions must not hollow the comparison out (tiny images are
        // mostly edge, so only for real sizes).
        if ow >= 16 && oh >= 16 {
            assert!(share > 0.7, "{what} {scale:?}: only {share:.2} compared");
        }
    }
}

#[test]
fn image_encoder_444_all_scales_sizes_qualities() {
    for (w, h) in [(640, 480), (320, 240), (64, 48)] {
        let rgb = scene(w, h, 3, 1);
        for q in [50, 75, 90, 100] {
            let jpeg = encode_with_image(&rgb, w as u32, h as u32, 3, q);
            check_against_reference(&jpeg, &format!("4:4:4 {w}x{h} q{q}"));
            let (_, info) = decode(&jpeg, Scale::Quarter);
            assert_eq!((info.components, info.luma_sampling), (3, (1, 1)));
        }
    }
}

#[test]
fn grayscale_jpeg_all_scales() {
    for (w, h) in [(640, 480), (96, 72)] {
        let g = scene(w, h, 1, 2);
        for q in [60, 95] {
            let jpeg = encode_with_image(&g, w as u32, h as u32, 1, q);
            check_against_reference(&jpeg, &format!("gray {w}x{h} q{q}"));
            assert_eq!(decode(&jpeg, Scale::Full).1.components, 1);
        }
    }
}

/// Sizes that are not whole blocks or MCUs: the last output row/column
/// averages a partial area.
#[test]
fn odd_sizes() {
    for (w, h) in [(203, 157), (17, 9), (1, 1)] {
        let rgb = scene(w, h, 3, 3);
        let jpeg = encode_with_image(&rgb, w as u32, h as u32, 3, 85);
        check_against_reference(&jpeg, &format!("{w}x{h}"));
        let jpeg = encode(&rgb, w, h, 3, EncOpts::default());
        check_against_reference(&jpeg, &format!("4:2:0 {w}x{h}"));
    }
}

#[test]
fn chroma_subsampling_420_422_444() {
    let (w, h) = (320, 240);
    let rgb = scene(w, h, 3, 4);
    for (lh, lv) in [(2, 2), (2, 1), (1, 1), (1, 2)] {
        for q in [70, 90] {
            let o = EncOpts {
                quality: q,
                luma_h: lh,
                luma_v: lv,
                ..Default::default()
            };
            let jpeg = encode(&rgb, w, h, 3, o);
            check_against_reference(&jpeg, &format!("{lh}x{lv} q{q}"));
            assert_eq!(decode(&jpeg, Scale::Quarter).1.luma_sampling, (lh, lv));
        }
    }
}

/// Restart markers change the bitstream, not the coefficients: output must
/// be identical to the same image without them, for intervals that do and
/// do not divide the MCU row.
#[test]
fn restart_markers() {
    let (w, h) = (200, 120);
    let rgb = scene(w, h, 3, 5);
    for (lh, lv) in [(2, 1), (2, 2)] {
        let base = EncOpts {
            luma_h: lh,
            luma_v: lv,
            ..Default::default()
        };
        let plain = encode(&rgb, w, h, 3, base);
        for restart in [1, 3, 13, 1000] {
            let jpeg = encode(&rgb, w, h, 3, EncOpts { restart, ..base });
            assert!(jpeg.windows(2).any(|p| p == [0xFF, 0xDD]));
            if restart < 100 {
                assert!(jpeg.windows(2).any(|p| p == [0xFF, 0xD0]));
            }
            for scale in Scale::ALL {
                assert_eq!(
                    decode(&jpeg, scale).0,
                    decode(&plain, scale).0,
                    "restart {restart} {scale:?}"
                );
            }
            check_against_reference(&jpeg, &format!("restart {restart}"));
        }
    }
}

/// UVC MJPEG frames carry no DHT: Annex K tables are implied.
#[test]
fn missing_dht_uses_annex_k_tables() {
    let (w, h) = (160, 120);
    let rgb = scene(w, h, 3, 6);
    let o = EncOpts {
        luma_h: 2,
        luma_v: 1,
        restart: 4,
        ..Default::default()
    };
    let with = encode(&rgb, w, h, 3, o);
    let without = encode(&rgb, w, h, 3, EncOpts { dht: false, ..o });
    assert!(!without.windows(2).any(|p| p == [0xFF, 0xC4]));
    // One decoder for both orders: tables from a DHT frame must not leak into
    // the next frame, and defaults must not stick after a DHT frame.
    let mut dec = JpegDecoder::new();
    let mut a = vec![0u8; 40 * 30];
    let mut b = vec![0u8; 40 * 30];
    for _ in 0..2 {
        dec.decode_gray_scaled(&with, Scale::Quarter, &mut a)
            .unwrap();
        dec.decode_gray_scaled(&without, Scale::Quarter, &mut b)
            .unwrap();
        assert_eq!(a, b);
    }
    check_against_reference(&with, "with DHT");
}

/// Our Annex K tables are the ones the `image` encoder writes (it writes
/// the standard tables in DHT segments).
#[test]
fn annex_k_tables_match_image_encoder() {
    let rgb = scene(16, 16, 3, 7);
    let jpeg = encode_with_image(&rgb, 16, 16, 3, 80);
    let mut pos = 2;
    let mut seen = 0;
    loop {
        let (code, seg, next) = next_segment(&jpeg, pos).unwrap();
        if code == 0xDA {
            break;
        }
        if code == 0xC4 {
            let (tc, th) = (seg[0] >> 4, (seg[0] & 15) as usize);
            let (counts, vals) = if tc == 0 { STD_DC[th] } else { STD_AC[th] };
            assert_eq!(&seg[1..17], &counts, "class {tc} id {th}");
            assert_eq!(&seg[17..], vals, "class {tc} id {th}");
            seen += 1;
        }
        pos = next;
    }
    assert_eq!(seen, 4);
}

/// A scan holding only chroma comes first and must be skipped.
#[test]
fn separate_scans_per_component() {
    let (w, h) = (96, 64);
    let rgb = scene(w, h, 3, 8);
    let o = EncOpts::default();
    let inter = encode(&rgb, w, h, 3, o);
    let sep = encode(
        &rgb,
        w,
        h,
        3,
        EncOpts {
            separate_scans: true,
            restart: 5,
            ..o
        },
    );
    for scale in Scale::ALL {
        assert_eq!(decode(&sep, scale).0, decode(&inter, scale).0, "{scale:?}");
    }
}

#[test]
fn truncated_input_is_an_error() {
    let rgb = scene(320, 240, 3, 9);
    let jpeg = encode(&rgb, 320, 240, 3, EncOpts::default());
    let sos = jpeg.windows(2).position(|p| p == [0xFF, 0xDA]).unwrap();
    let mut dec = JpegDecoder::new();
    let mut out = vec![0u8; 80 * 60];
    for cut in [1, 3, 20, sos + 4, sos + 40, jpeg.len() / 2, jpeg.len() - 40] {
        let r = dec.decode_gray_scaled(&jpeg[..cut], Scale::Quarter, &mut out);
        assert!(
            matches!(r, Err(JpegError::Truncated(_)) | Err(JpegError::NotJpeg)),
            "cut at {cut} of {}: {r:?}",
            jpeg.len()
        );
    }
    // A frame whose scan is complete but whose EOI was lost (some webcams)
    // still decodes.
    let r = dec.decode_gray_scaled(&jpeg[..jpeg.len() - 2], Scale::Quarter, &mut out);
    assert!(r.is_ok(), "{r:?}");
    // Same frame, restart markers, cut mid-way: still an error, not a hang.
    let jpeg = encode(
        &rgb,
        320,
        240,
        3,
        EncOpts {
            restart: 2,
            ..Default::default()
        },
    );
    let r = dec.decode_gray_scaled(&jpeg[..jpeg.len() / 2], Scale::Quarter, &mut out);
    assert!(matches!(r, Err(JpegError::Truncated(_))), "{r:?}");
}

/// Returns `jpeg` with the SOF0 marker code replaced.
fn with_sof(jpeg: &[u8], code: u8) -> Vec<u8> {
    let mut j = jpeg.to_vec();
    let i = j.windows(2).position(|p| p == [0xFF, 0xC0]).unwrap();
    j[i + 1] = code;
    j
}

#[test]
fn unsupported_formats_are_refused_clearly() {
    let rgb = scene(32, 32, 3, 10);
    let jpeg = encode_with_image(&rgb, 32, 32, 3, 80);
    let mut dec = JpegDecoder::new();
    let mut out = vec![0u8; 32 * 32];
    let mut run = |j: &[u8]| dec.decode_gray_scaled(j, Scale::Full, &mut out);
    use Unsupported::*;
    let cases = [
        (with_sof(&jpeg, 0xC2), Progressive),
        (with_sof(&jpeg, 0xC9), Arithmetic(9)),
        (with_sof(&jpeg, 0xCA), Arithmetic(10)),
        (with_sof(&jpeg, 0xC3), Process(3)),
    ];
    for (j, want) in cases {
        let e = run(&j).unwrap_err();
        assert_eq!(e, JpegError::Unsupported(want));
        assert!(e.is_unsupported());
        assert!(e.to_string().starts_with("unsupported JPEG: "), "{e}");
    }
    // 12-bit precision: the SOF's first payload byte.
    let mut j = jpeg.clone();
    let i = j.windows(2).position(|p| p == [0xFF, 0xC0]).unwrap();
    j[i + 4] = 12;
    assert_eq!(run(&j), Err(JpegError::Unsupported(Precision(12))));
    // CMYK-like 4 components.
    let mut j = jpeg.clone();
    j[i + 9] = 4;
    assert_eq!(run(&j), Err(JpegError::Unsupported(Components(4))));
    // RGB JPEG (component ids R, G, B).
    let mut j = jpeg.clone();
    for (c, id) in [b'R', b'G', b'B'].iter().enumerate() {
        j[i + 10 + 3 * c] = *id;
    }
    let sos = j.windows(2).position(|p| p == [0xFF, 0xDA]).unwrap();
    for (c, id) in [b'R', b'G', b'B'].iter().enumerate() {
        j[sos + 5 + 2 * c] = *id;
    }
    assert_eq!(run(&j), Err(JpegError::Unsupported(RgbColour)));
    let e = run(b"\x89PNG\r\n").unwrap_err();
    assert_eq!(e, JpegError::NotJpeg);
    assert!(!e.is_unsupported());
}

#[test]
fn output_buffer_too_small() {
    let jpeg = encode_with_image(&scene(64, 48, 3, 11), 64, 48, 3, 80);
    let mut out = vec![0u8; 16 * 12 - 1];
    let e = JpegDecoder::new()
        .decode_gray_scaled(&jpeg, Scale::Quarter, &mut out)
        .unwrap_err();
    assert_eq!(
        e,
        JpegError::OutputTooSmall {
            width: 16,
            height: 12,
            needed: 192,
            got: 191
        }
    );
}

/// Damaged entropy data (bit flips, as on a flaky USB link) must give an
/// error or a picture, never a panic or a hang.
#[test]
fn corrupted_data_never_panics() {
    let rgb = scene(160, 120, 3, 12);
    let jpeg = encode(
        &rgb,
        160,
        120,
        3,
        EncOpts {
            restart: 3,
            ..Default::default()
        },
    );
    let mut dec = JpegDecoder::new();
    let mut out = vec![0u8; 160 * 120];
    let mut s = 99u32;
    for _ in 0..500 {
        let mut j = jpeg.clone();
        for _ in 0..4 {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            let i = (s >> 8) as usize % j.len();
            j[i] ^= 1 << (s % 8);
        }
        for scale in Scale::ALL {
            let _ = dec.decode_gray_scaled(&j, scale, &mut out);
        }
    }
    // The decoder still works after all that.
    let (want, _) = decode(&jpeg, Scale::Quarter);
    let info = dec
        .decode_gray_scaled(&jpeg, Scale::Quarter, &mut out)
        .unwrap();
    assert_eq!(
        &out[..(info.out_width * info.out_height) as usize],
        &want[..]
    );
}

#[test]
fn scale_for_target_and_header() {
    assert_eq!(Scale::for_target(640, 480, 160, 120), Scale::Quarter);
    assert_eq!(Scale::for_target(640, 480, 161, 120), Scale::Half);
    assert_eq!(Scale::for_target(640, 480, 80, 60), Scale::Eighth);
    assert_eq!(Scale::for_target(640, 480, 84, 84), Scale::Quarter);
    assert_eq!(Scale::for_target(640, 480, 640, 480), Scale::Full);
    assert_eq!(Scale::for_target(640, 480, 1280, 960), Scale::Full);
    assert_eq!(Scale::Quarter.output_size(203, 157), (51, 40));
    let jpeg = encode_with_image(&scene(203, 157, 3, 13), 203, 157, 3, 80);
    assert_eq!(read_header(&jpeg), Ok((203, 157, 3)));
    assert_eq!(read_header(&with_sof(&jpeg, 0xC2)), Ok((203, 157, 3)));
    assert_eq!(
        read_header(&jpeg[..30]),
        Err(JpegError::Truncated("a header segment"))
    );
    assert_eq!(read_header(b"GIF89a"), Err(JpegError::NotJpeg));
}

/// The decoder only reads the coefficients the scaled IDCT uses.
#[test]
fn need_masks() {
    assert_eq!(need_mask(Scale::Full), u64::MAX);
    assert_eq!(need_mask(Scale::Half).count_ones(), 49);
    assert_eq!(need_mask(Scale::Quarter).count_ones(), 25);
    assert_eq!(need_mask(Scale::Eighth), 1);
}

/// A 640x480 camera frame as a UVC webcam sends it: 4:2:2, restart
/// markers, no DHT.
pub(super) fn camera_frame() -> Vec<u8> {
    let opts = EncOpts {
        luma_h: 2,
        luma_v: 1,
        restart: 8,
        dht: false,
        ..Default::default()
    };
    encode(&scene(640, 480, 3, 30), 640, 480, 3, opts)
}

/// `jpeg` with the first SOF's declared size replaced.
pub(super) fn with_size(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut j = jpeg.to_vec();
    let i = j
        .windows(2)
        .position(|p| p[0] == 0xFF && is_sof(p[1]))
        .unwrap();
    j[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
    j[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
    j
}

/// Offset of the first entropy-coded byte (after the SOS segment) and of
/// the EOI marker that ends the scan.
fn scan_bounds(jpeg: &[u8]) -> (usize, usize) {
    let sos = jpeg.windows(2).position(|p| p == [0xFF, 0xDA]).unwrap();
    let len = u16::from_be_bytes([jpeg[sos + 2], jpeg[sos + 3]]) as usize;
    (sos + 2 + len, jpeg.len() - 2)
}

#[test]
fn huge_declared_size_is_refused_before_decoding() {
    let jpeg = with_size(&camera_frame(), 65535, 65535);
    let mut dec = JpegDecoder::new();
    let mut out = vec![0u8; 160 * 120];
    let t = std::time::Instant::now();
    let e = dec
        .decode_frame(&jpeg, 640, 480, Scale::Quarter, &mut out)
        .unwrap_err();
    let took = t.elapsed();
    assert_eq!(
        e.to_string(),
        "JPEG frame declares 65535x65535 but the camera negotiated 640x480"
    );
    assert!(
        !e.is_unsupported(),
        "a mismatch must not send the frame to another decoder"
    );
    assert!(took.as_millis() < 100, "took {took:?}");
    assert_eq!(
        check_frame(&jpeg, 640, 480),
        Err(JpegError::Mismatch(Mismatch::Size {
            declared_w: 65535,
            declared_h: 65535,
            want_w: 640,
            want_h: 480
        }))
    );
}

/// Without the camera's size to compare with, the work is still bounded by
/// the data: a header claiming 8000x8000 over 640x480 worth of scan stops
/// one MCU past the data instead of decoding 250 000 MCUs of zeros.
#[test]
fn decode_work_is_bounded_by_the_data() {
    let jpeg = with_size(&camera_frame(), 8000, 8000);
    let mut out = vec![0u8; 1000 * 1000];
    let t = std::time::Instant::now();
    let r = JpegDecoder::new().decode_gray_scaled(&jpeg, Scale::Eighth, &mut out);
    let took = t.elapsed();
    // Truncated, or Corrupt where a restart interval no longer lines up
    // with its RST marker: either way no picture.
    assert!(
        matches!(r, Err(JpegError::Truncated(_) | JpegError::Corrupt(_))),
        "{r:?}"
    );
    assert!(took.as_millis() < 100, "took {took:?}");
}

#[test]
fn other_processes_are_checked_before_they_are_refused() {
    let jpeg = camera_frame();
    let mut dec = JpegDecoder::new();
    let mut out = vec![0u8; 160 * 120];
    let huge = with_size(&jpeg, 65535, 65535);
    let sof = huge.windows(2).position(|p| p == [0xFF, 0xC0]).unwrap();
    for code in [0xC2, 0xC1, 0xC9, 0xCA, 0xC3] {
        let mut j = huge.clone();
        j[sof + 1] = code;
        let e = dec.decode_frame(&j, 640, 480, Scale::Quarter, &mut out);
        assert!(
            matches!(e, Err(JpegError::Mismatch(Mismatch::Size { .. }))),
            "SOF{:X}: {e:?}",
            code - 0xC0
        );
        assert!(matches!(
            check_frame(&j, 640, 480),
            Err(JpegError::Mismatch(Mismatch::Size { .. }))
        ));
    }
    // Right size: progressive is only "unsupported" (the general decoder's job).
    let prog = with_sof(&jpeg, 0xC2);
    assert_eq!(
        dec.decode_frame(&prog, 640, 480, Scale::Quarter, &mut out),
        Err(JpegError::Unsupported(Unsupported::Progressive))
    );
    assert_eq!(check_frame(&prog, 640, 480), Ok(()));
    // 12-bit and CMYK are refused outright, whatever the process.
    for code in [0xC0, 0xC2] {
        let mut j = with_sof(&jpeg, code);
        j[sof + 4] = 12;
        let e = dec.decode_frame(&j, 640, 480, Scale::Quarter, &mut out);
        assert_eq!(e, Err(JpegError::Mismatch(Mismatch::Precision(12))));
        assert_eq!(check_frame(&j, 640, 480), e.map(|_| ()));
        let mut j = with_sof(&jpeg, code);
        j[sof + 9] = 4;
        let e = dec.decode_frame(&j, 640, 480, Scale::Quarter, &mut out);
        assert_eq!(e, Err(JpegError::Mismatch(Mismatch::Components(4))));
        assert_eq!(check_frame(&j, 640, 480), e.map(|_| ()));
    }
    // A second frame header hidden after the scan.
    let (_, eoi) = scan_bounds(&jpeg);
    let sof_seg_len = u16::from_be_bytes([jpeg[sof + 2], jpeg[sof + 3]]) as usize;
    let mut j = jpeg[..eoi].to_vec();
    j.extend_from_slice(&huge[sof..sof + 2 + sof_seg_len]);
    j.extend_from_slice(&[0xFF, 0xD9]);
    assert!(matches!(
        check_frame(&j, 640, 480),
        Err(JpegError::Mismatch(Mismatch::Size { .. }))
    ));
    // The real frame passes.
    assert_eq!(check_frame(&jpeg, 640, 480), Ok(()));
}

/// Scan data cut short and followed by a marker (EOI, or an RST where none
/// is due) used to decode as a picture: the missing part came out as zeros.
#[test]
fn truncated_scan_followed_by_a_marker_is_an_error() {
    let mut dec = JpegDecoder::new();
    let mut out = vec![0u8; 160 * 120];
    for restart in [0, 8] {
        let jpeg = encode(
            &scene(640, 480, 3, 31),
            640,
            480,
            3,
            EncOpts {
                restart,
                ..Default::default()
            },
        );
        assert!(dec
            .decode_frame(&jpeg, 640, 480, Scale::Quarter, &mut out)
            .is_ok());
        let (start, end) = scan_bounds(&jpeg);
        for keep in [0.1, 0.5, 0.9, 0.999] {
            let cut = start + ((end - start) as f64 * keep) as usize;
            for marker in [0xD9, 0xD3, 0xC4] {
                let mut j = jpeg[..cut].to_vec();
                // Do not leave a lone 0xFF before the marker.
                if j.last() == Some(&0xFF) {
                    j.pop();
                }
                j.extend_from_slice(&[0xFF, marker, 0xFF, 0xD9]);
                let r = dec.decode_frame(&j, 640, 480, Scale::Quarter, &mut out);
                assert!(
                    r.is_err(),
                    "restart {restart}, {keep} of the scan, then FF{marker:02X}: {r:?}"
                );
            }
        }
        // A marker in the middle, the rest of the data behind it.
        let mid = start + (end - start) / 2;
        let mut j = jpeg[..mid].to_vec();
        if j.last() == Some(&0xFF) {
            j.pop();
        }
        j.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x02]);
        j.extend_from_slice(&jpeg[mid..]);
        let r = dec.decode_frame(&j, 640, 480, Scale::Quarter, &mut out);
        assert!(r.is_err(), "restart {restart}, COM in mid-scan: {r:?}");
    }
}

/// The checked entry point gives the same picture as the plain one on
/// valid camera frames of every layout the tests encode.
#[test]
fn checked_decode_of_valid_frames_is_unchanged() {
    let rgb = scene(640, 480, 3, 32);
    let gray = scene(640, 480, 1, 33);
    let frames = [
        camera_frame(),
        encode(&rgb, 640, 480, 3, EncOpts::default()),
        encode(
            &rgb,
            640,
            480,
            3,
            EncOpts {
                luma_h: 1,
                luma_v: 1,
                separate_scans: true,
                ..Default::default()
            },
        ),
        encode(&gray, 640, 480, 1, EncOpts::default()),
        encode_with_image(&rgb, 640, 480, 3, 90),
    ];
    let mut dec = JpegDecoder::new();
    for (i, jpeg) in frames.iter().enumerate() {
        for scale in Scale::ALL {
            let (want, info) = decode(jpeg, scale);
            let mut out = vec![0u8; want.len()];
            let got = dec.decode_frame(jpeg, 640, 480, scale, &mut out).unwrap();
            assert_eq!(got, info);
            assert!(out == want, "frame {i} {scale:?}");
        }
    }
}

/// The test encoder's progressive frames are real ones: the general
/// decoder reads the same picture as from the baseline encoding.
#[test]
fn test_encoder_progressive_frames_decode() {
    let rgb = scene(64, 48, 3, 34);
    let base = encode(&rgb, 64, 48, 3, EncOpts::default());
    let prog = encode(
        &rgb,
        64,
        48,
        3,
        EncOpts {
            progressive: true,
            ..Default::default()
        },
    );
    assert_eq!(read_header(&prog), Ok((64, 48, 3)));
    assert_eq!(
        JpegDecoder::new().decode_gray_scaled(&prog, Scale::Full, &mut [0u8; 64 * 48]),
        Err(JpegError::Unsupported(Unsupported::Progressive))
    );
    let (a, _, _, _) = reference(&base, 1);
    let (b, _, _, _) = reference(&prog, 1);
    assert_eq!(a, b);
}

/// The decoder is chosen per frame: a progressive frame goes to the
/// general decoder, and the baseline frame after it is back on the fast,
/// allocation-free path (the car used to stay on the general one for good).
#[test]
fn progressive_frame_does_not_change_the_path_of_the_next() {
    use crate::preprocess::{InputSpec, JpegPath, Preprocessor};
    let rgb = scene(640, 480, 3, 35);
    let base = camera_frame();
    let prog = encode(
        &rgb,
        640,
        480,
        3,
        EncOpts {
            progressive: true,
            ..Default::default()
        },
    );
    let mut p =
        Preprocessor::new(640, 480, crate::PixelFormat::Jpeg, InputSpec::deepracer()).unwrap();
    let mut out = vec![0f32; InputSpec::deepracer().len()];
    let frame = |data| crate::Frame {
        data,
        format: crate::PixelFormat::Jpeg,
        width: 640,
        height: 480,
        timestamp_ns: 0,
        seq: 0,
    };
    let mut paths = Vec::new();
    for j in [&base, &prog, &base, &prog, &base] {
        p.run(&frame(j), &mut out).unwrap();
        paths.push(p.last_jpeg().map(|d| d.path));
    }
    use JpegPath::*;
    assert_eq!(
        paths,
        [
            Some(Fast),
            Some(General),
            Some(Fast),
            Some(General),
            Some(Fast)
        ]
    );
    // A refused frame reports no path, and does not change the next either.
    let huge = with_size(&prog, 65535, 65535);
    let e = p.run(&frame(&huge), &mut out).unwrap_err();
    assert_eq!(
        e.to_string(),
        "JPEG frame declares 65535x65535 but the camera negotiated 640x480"
    );
    assert_eq!(p.last_jpeg(), None);
    p.run(&frame(&base), &mut out).unwrap();
    assert_eq!(p.last_jpeg().map(|d| d.path), Some(Fast));
}
