//! Hostile camera JPEGs through the public `Preprocessor`: headers that
//! claim a huge size, in every process the general decoder takes, are
//! refused without a large allocation (the old general path sized a
//! width x height x 3 buffer from them and aborted when it failed), and
//! the fast path stays allocation-free for valid frames.

use policy::preprocess::{InputSpec, JpegPath, PreprocessError, Preprocessor};
use policy::{Frame, PixelFormat};
use std::sync::Mutex;

#[global_allocator]
static GLOBAL: test_support::alloc::CountingAlloc = test_support::alloc::CountingAlloc;

/// The counters are process-wide: tests that read them take turns.
static SERIAL: Mutex<()> = Mutex::new(());

/// (allocations, largest allocation in bytes) made by `f`.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let (r, n, largest) = test_support::alloc::measure(f);
    (r, n as usize, largest)
}

fn camera_jpeg() -> Vec<u8> {
    let mut px = Vec::with_capacity(640 * 480 * 3);
    for y in 0..480u32 {
        for x in 0..640u32 {
            px.extend_from_slice(&[(x / 3) as u8, (y / 2) as u8, ((x + y) / 5) as u8]);
        }
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode(&px, 640, 480, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// `jpeg` with its SOF0 turned into `code`, declaring `w` x `h`, with
/// `precision` bits and `comps` components.
fn patched(jpeg: &[u8], code: u8, w: u16, h: u16, precision: u8, comps: u8) -> Vec<u8> {
    let mut j = jpeg.to_vec();
    let i = j.windows(2).position(|p| p == [0xFF, 0xC0]).unwrap();
    j[i + 1] = code;
    j[i + 4] = precision;
    j[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
    j[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
    j[i + 9] = comps;
    j
}

fn frame(data: &[u8], w: u32, h: u32) -> Frame<'_> {
    Frame {
        data,
        format: PixelFormat::Jpeg,
        width: w,
        height: h,
        timestamp_ns: 0,
        seq: 0,
    }
}

fn specs() -> [InputSpec; 2] {
    let gray = InputSpec::deepracer();
    [
        gray,
        InputSpec {
            channels: 3,
            ..gray
        },
    ]
}

/// Progressive, 12-bit, arithmetic-coded and CMYK frames claiming
/// 65535x65535 from a 640x480 camera: an error naming both sizes, and no
/// allocation anywhere near the claimed size, for gray models (fast path
/// first) and RGB models (general decoder only).
#[test]
fn huge_headers_in_other_processes_are_refused_without_allocating() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let jpeg = camera_jpeg();
    let cases = [
        ("baseline", patched(&jpeg, 0xC0, 65535, 65535, 8, 3)),
        ("progressive", patched(&jpeg, 0xC2, 65535, 65535, 8, 3)),
        ("12-bit", patched(&jpeg, 0xC1, 65535, 65535, 12, 3)),
        ("arithmetic", patched(&jpeg, 0xC9, 65535, 65535, 8, 3)),
        ("CMYK", patched(&jpeg, 0xC2, 65535, 65535, 8, 4)),
    ];
    for spec in specs() {
        let mut p = Preprocessor::new(640, 480, PixelFormat::Jpeg, spec).unwrap();
        let mut out = vec![0f32; spec.len()];
        for (what, j) in &cases {
            let (r, _, largest) = measure(|| p.run(&frame(j, 640, 480), &mut out));
            let e = r.unwrap_err();
            assert_eq!(
                e.to_string(),
                "JPEG frame declares 65535x65535 but the camera negotiated 640x480",
                "{what}, {} channels",
                spec.channels
            );
            assert!(matches!(e, PreprocessError::JpegFrame(_)));
            assert!(
                largest < 1 << 20,
                "{what}: allocated {largest} bytes at once"
            );
        }
        // 12-bit and CMYK at the right size are refused too (camera frames
        // are 8-bit gray or YCbCr), before the general decoder.
        for (what, j, want) in [
            (
                "12-bit",
                patched(&jpeg, 0xC1, 640, 480, 12, 3),
                "JPEG frame declares 12-bit samples but camera frames have 8",
            ),
            (
                "CMYK",
                patched(&jpeg, 0xC2, 640, 480, 8, 4),
                "JPEG frame declares 4 colour components but camera frames have 1 (gray) or 3 (YCbCr)",
            ),
        ] {
            let (r, _, largest) = measure(|| p.run(&frame(&j, 640, 480), &mut out));
            assert_eq!(r.unwrap_err().to_string(), want, "{what}");
            assert!(largest < 1 << 20, "{what}: allocated {largest} bytes at once");
        }
    }
}

/// A source that takes the frame size from the frame (a replayed JPEG)
/// would hand over the header's 65535x65535: the preprocessor refuses to
/// be built for it instead of reserving 12 GB.
#[test]
fn preprocessor_refuses_absurd_frame_sizes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for spec in specs() {
        let (r, _, largest) =
            measure(|| Preprocessor::new(65535, 65535, PixelFormat::Jpeg, spec).map(|_| ()));
        assert!(matches!(r, Err(PreprocessError::Unsupported(_))), "{r:?}");
        assert!(largest < 1 << 20, "allocated {largest} bytes at once");
    }
    assert!(Preprocessor::new(4096, 4096, PixelFormat::Jpeg, specs()[0]).is_ok());
}

/// Valid baseline frames: fast path, no allocation per frame.
#[test]
fn fast_path_allocates_nothing_per_frame() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let jpeg = camera_jpeg();
    let spec = InputSpec::deepracer();
    let mut p = Preprocessor::new(640, 480, PixelFormat::Jpeg, spec).unwrap();
    let mut out = vec![0f32; spec.len()];
    let f = frame(&jpeg, 640, 480);
    p.run(&f, &mut out).unwrap();
    let (_, allocs, _) = measure(|| {
        for _ in 0..10 {
            p.run(&f, &mut out).unwrap();
        }
    });
    assert_eq!(allocs, 0);
    assert_eq!(p.last_jpeg().map(|d| d.path), Some(JpegPath::Fast));
}
