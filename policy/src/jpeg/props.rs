//! Property tests: arbitrary damage to a valid camera frame (bit flips,
//! truncation, patched header sizes and processes) never panics, never
//! takes long, and gives either a picture of the camera's size or an error,
//! through the decoder and through the `Preprocessor` that wraps it.
//!
//! The cases come from a seeded generator (the `policy` crate does not
//! depend on proptest); a failure prints the case's seed, and
//! `JPEG_PROPS_SEED=<seed>` replays that one case. Case counts are small
//! for a debug build on a shared 2-core machine: a few seconds a property.

use std::time::{Duration, Instant};

use super::testenc::{encode, EncOpts};
use super::tests::{scene, with_size};
use super::*;
use crate::frame::{Frame, PixelFormat};
use crate::preprocess::{InputSpec, Layout, Preprocessor};

const W: u32 = 320;
const H: u32 = 240;
/// Per case, in a debug build. A whole valid frame decodes in a few ms;
/// the 47 s hang this guards against is four orders of magnitude above.
const BOUND: Duration = Duration::from_millis(250);

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Runs `cases` seeded cases (or only `JPEG_PROPS_SEED`), naming the seed
/// of a failing one.
fn for_cases(name: &str, cases: u64, mut f: impl FnMut(&mut Rng) -> Result<(), String>) {
    let seeds: Vec<u64> = match std::env::var("JPEG_PROPS_SEED") {
        Ok(s) => vec![s.parse().expect("JPEG_PROPS_SEED is a number")],
        Err(_) => (1..=cases)
            .map(|c| c.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect(),
    };
    for seed in seeds {
        let mut rng = Rng(seed | 1);
        if let Err(e) = f(&mut rng) {
            panic!("{name}: case with JPEG_PROPS_SEED={seed} failed: {e}");
        }
    }
}

/// The frames the mutations start from: a webcam's 4:2:2 with restart
/// markers and no DHT, and 4:2:0 with DHT and no restart markers.
fn frames() -> [Vec<u8>; 2] {
    let rgb = scene(W as usize, H as usize, 3, 40);
    [
        encode(
            &rgb,
            W as usize,
            H as usize,
            3,
            EncOpts {
                luma_h: 2,
                luma_v: 1,
                restart: 4,
                dht: false,
                ..Default::default()
            },
        ),
        encode(&rgb, W as usize, H as usize, 3, EncOpts::default()),
    ]
}

/// Gray model (fast path, general path for the odd frame) and RGB model
/// (general path only) for `W` x `H` camera frames.
fn preprocessors() -> [Preprocessor; 2] {
    let gray = InputSpec {
        layout: Layout::Nhwc,
        width: 80,
        height: 60,
        channels: 1,
        scale: 1.0,
    };
    let rgb = InputSpec {
        channels: 3,
        ..gray
    };
    [gray, rgb].map(|s| Preprocessor::new(W, H, PixelFormat::Jpeg, s).unwrap())
}

/// Feeds one damaged frame to the decoder and both preprocessors; checks
/// the time bound and that a success is a picture of the camera's size
/// with values in 0..=255. Returns whether the decoder accepted it.
fn feed(
    jpeg: &[u8],
    dec: &mut JpegDecoder,
    pres: &mut [Preprocessor; 2],
    out: &mut [f32],
) -> Result<bool, String> {
    let mut gray = [0u8; (W / 4 * H / 4) as usize];
    let t = Instant::now();
    let r = dec.decode_frame(jpeg, W, H, Scale::Quarter, &mut gray);
    if t.elapsed() > BOUND {
        return Err(format!("decode took {:?}", t.elapsed()));
    }
    if let Ok(info) = r {
        if (info.width, info.height, info.out_width, info.out_height) != (W, H, W / 4, H / 4) {
            return Err(format!("decoded to the wrong size: {info:?}"));
        }
    }
    let frame = Frame {
        data: jpeg,
        format: PixelFormat::Jpeg,
        width: W,
        height: H,
        timestamp_ns: 0,
        seq: 0,
    };
    for p in pres.iter_mut() {
        let n = p.spec().len();
        let t = Instant::now();
        let pr = p.run(&frame, &mut out[..n]);
        if t.elapsed() > BOUND {
            return Err(format!("preprocess took {:?}", t.elapsed()));
        }
        if pr.is_ok() && out[..n].iter().any(|v| !(0.0..=255.0).contains(v)) {
            return Err("preprocessed values outside 0..=255".into());
        }
    }
    Ok(r.is_ok())
}

#[test]
fn byte_flips_never_panic_hang_or_mis_size() {
    let frames = frames();
    let (mut dec, mut pres, mut out) =
        (JpegDecoder::new(), preprocessors(), vec![0f32; 80 * 60 * 3]);
    for_cases("byte flips", 120, |rng| {
        let mut j = frames[rng.below(2)].clone();
        for _ in 0..1 + rng.below(6) {
            let i = rng.below(j.len());
            if rng.below(2) == 0 {
                j[i] ^= 1 << rng.below(8);
            } else {
                j[i] = rng.next() as u8;
            }
        }
        feed(&j, &mut dec, &mut pres, &mut out).map(|_| ())
    });
}

#[test]
fn truncation_is_always_an_error() {
    let frames = frames();
    let (mut dec, mut pres, mut out) =
        (JpegDecoder::new(), preprocessors(), vec![0f32; 80 * 60 * 3]);
    for_cases("truncation", 120, |rng| {
        let src = &frames[rng.below(2)];
        // Anywhere before the EOI: some of the scan is missing.
        let mut j = src[..rng.below(src.len() - 2)].to_vec();
        match rng.below(3) {
            0 => {}
            1 => j.extend_from_slice(&[0xFF, 0xD9]),
            _ => j.extend_from_slice(&[0xFF, 0xD0 + rng.below(8) as u8, 0xFF, 0xD9]),
        }
        match feed(&j, &mut dec, &mut pres, &mut out)? {
            true => Err(format!(
                "{} of {} bytes decoded as a picture",
                j.len(),
                src.len()
            )),
            false => Ok(()),
        }
    });
}

#[test]
fn patched_headers_are_refused_unless_they_match() {
    let frames = frames();
    let (mut dec, mut pres, mut out) =
        (JpegDecoder::new(), preprocessors(), vec![0f32; 80 * 60 * 3]);
    let sizes = [
        0u16, 1, 8, 239, 240, 241, 319, 320, 321, 640, 4096, 32768, 65535,
    ];
    for_cases("patched headers", 150, |rng| {
        let src = &frames[rng.below(2)];
        let pick = |rng: &mut Rng| match rng.below(3) {
            0 => rng.next() as u16,
            _ => sizes[rng.below(sizes.len())],
        };
        let (w, h) = (pick(rng), pick(rng));
        let mut j = with_size(src, w, h);
        let sof = j.windows(2).position(|p| p == [0xFF, 0xC0]).unwrap();
        // Sometimes another process, precision or component count too.
        if rng.below(2) == 0 {
            j[sof + 1] = [0xC1, 0xC2, 0xC3, 0xC9, 0xCA][rng.below(5)];
        }
        if rng.below(4) == 0 {
            j[sof + 4] = [8, 12, 16, 0][rng.below(4)];
        }
        if rng.below(4) == 0 {
            j[sof + 9] = [1, 3, 4, 0, 255][rng.below(5)];
        }
        let accepted = feed(&j, &mut dec, &mut pres, &mut out)?;
        let fits = (w as u32, h as u32) == (W, H);
        if !fits {
            match check_frame(&j, W, H) {
                Err(JpegError::Mismatch(_)) => {}
                other => return Err(format!("{w}x{h} passed the check: {other:?}")),
            }
            for p in pres.iter_mut() {
                let n = p.spec().len();
                let frame = Frame {
                    data: &j,
                    format: PixelFormat::Jpeg,
                    width: W,
                    height: H,
                    timestamp_ns: 0,
                    seq: 0,
                };
                if p.run(&frame, &mut out[..n]).is_ok() {
                    return Err(format!("{w}x{h} frame preprocessed"));
                }
            }
        }
        if accepted && !fits {
            return Err(format!("a {w}x{h} frame decoded"));
        }
        Ok(())
    });
}
