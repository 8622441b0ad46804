//! Fuzz targets: one plain function per parser or decoder that takes
//! outside data, each calling the project's real entry point the way the
//! car, the CLI or the web server does.
//!
//! The same functions serve two drivers: the libFuzzer binary
//! (`src/bin/car-fuzz.rs`, built with `--features libfuzzer` and coverage
//! instrumentation by `scripts/suites/fuzz.sh`), and the replay test
//! (`tests/replay.rs`), which runs every seed in `corpus/<target>/` and
//! every crash ever found in `regressions/<target>/` through them in the
//! normal `cargo test`. A target returns normally for any input the code
//! refuses with an error; it panics (and so fails both drivers) only on a
//! panic in the code under test or a broken property stated below.
//!
//! No target writes outside its own temporary folder, spawns the
//! model-check child, or touches hardware.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub mod web;

/// A target: its name (the folder under `corpus/` and `regressions/`) and
/// the function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order the fuzz suite runs them.
pub const TARGETS: &[Target] = &[
    ("jpeg", jpeg),
    ("metadata", metadata),
    ("model", model),
    ("track", track),
    ("calibration", calibration),
    ("archive", archive),
    ("web", web::web),
];

/// Look a target up by name.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// A scratch folder for the targets that need files (the archive reader
/// takes a path), made once per process and removed when it exits normally.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("car-fuzz-")
            .tempdir()
            .expect("a temporary folder for the fuzz targets")
    })
    .path()
}

/// Largest camera frame side the JPEG target negotiates from a frame's own
/// header: keeps the general decoder's buffer (w * h * 3) to 3 MB so the
/// fuzzer's memory limit measures leaks, not this buffer.
const MAX_NEGOTIATED_SIDE: u32 = 1024;

/// A camera frame through `Preprocessor::run` as the control loop runs it
/// (car-runtime's pipeline): the preprocessor is built for the negotiated
/// camera format, the frame is checked against it, then decoded by our
/// luma decoder (grey models) or the `image` crate (3-channel models and
/// frames our decoder does not handle). The first byte picks the set-up:
/// bit 0 grey / RGB model, bit 1 NHWC / NCHW, bit 2 camera negotiated at
/// 640x480 (a hostile frame then has to fake that size) or at the size the
/// frame's own header declares (as the replay source does).
///
/// Properties: no panic; every input value is finite and in 0..=255; a
/// second run of the same frame on the same preprocessor gives the same
/// result (no state from one frame leaks into the next).
pub fn jpeg(data: &[u8]) {
    use policy::{Frame, InputSpec, Layout, PixelFormat, Preprocessor};
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let spec = InputSpec {
        layout: if sel & 2 == 0 {
            Layout::Nhwc
        } else {
            Layout::Nchw
        },
        channels: if sel & 1 == 0 { 1 } else { 3 },
        ..InputSpec::deepracer()
    };
    let (w, h) = if sel & 4 == 0 {
        (640, 480)
    } else {
        match policy::jpeg::read_header(frame) {
            Ok((w, h, _))
                if (1..=MAX_NEGOTIATED_SIDE).contains(&w)
                    && (1..=MAX_NEGOTIATED_SIDE).contains(&h) =>
            {
                (w, h)
            }
            _ => (640, 480),
        }
    };
    let mut pre =
        Preprocessor::new(w, h, PixelFormat::Jpeg, spec).expect("a camera format the car takes");
    let f = Frame {
        data: frame,
        format: PixelFormat::Jpeg,
        width: w,
        height: h,
        timestamp_ns: 0,
        seq: 0,
    };
    let mut first = vec![0f32; spec.len()];
    if pre.run(&f, &mut first).is_err() {
        return;
    }
    for v in &first {
        assert!(
            v.is_finite() && (0.0..=255.0).contains(v),
            "input value {v} outside 0..=255"
        );
    }
    let mut second = vec![0f32; spec.len()];
    pre.run(&f, &mut second)
        .expect("the same frame decoded once must decode again");
    assert!(
        first == second,
        "the same frame gave different input the second time"
    );
}

/// `model_metadata.json` through `ModelMetadata::parse`, as model loading
/// (folder, archive, upload) reads it. Properties: what parses writes back
/// (`to_json_pretty`) to text that parses to the same metadata; the action
/// mapper built from it maps any finite or broken output vector to
/// finite commands in -1..=1 with no reverse throttle.
pub fn metadata(data: &[u8]) {
    use policy::{ActionMapper, ModelMetadata};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = ModelMetadata::parse(text, "model_metadata.json") else {
        return;
    };
    let written = m.to_json_pretty();
    let again = ModelMetadata::parse(&written, "rewritten model_metadata.json")
        .unwrap_or_else(|e| panic!("metadata we write does not read back: {e}\n{written}"));
    assert_eq!(again, m, "metadata changed on a write and read");
    let _ = m.camera_sensor("model_metadata.json");
    let mapper = ActionMapper::new(&m.action_space);
    let n = m.action_space.output_len();
    let ramp: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let down: Vec<f32> = (0..n).map(|i| -(i as f32) * 1e30).collect();
    let wild: Vec<f32> = (0..n)
        .map(|i| [f32::NAN, f32::INFINITY, -1e38, 0.5, -3.0][i % 5])
        .collect();
    for out in [vec![0f32; n], ramp, down, wild, vec![]] {
        for scale in [0.0, 0.37, 1.0, 2.0, f32::NAN] {
            let a = mapper.map(&out, scale);
            for (what, v) in [("steering", a.steering), ("throttle", a.throttle)] {
                assert!(
                    v.is_finite() && (-1.0..=1.0).contains(&v),
                    "{what} {v} from outputs {out:?} at scale {scale}"
                );
            }
            assert!(a.throttle >= 0.0, "reverse throttle {}", a.throttle);
        }
    }
}

/// Graph bytes through `policy::policy::precheck_graph`: the protobuf
/// decode, the node and input-shape caps and (ONNX) the load-time rewrite,
/// all of which run before any engine builds the graph. The engines
/// themselves (tract, ONNX Runtime) only ever see an uploaded graph in the
/// limited check child, which reports their crashes and hangs as verdicts;
/// in-process here they would take seconds per input and report the
/// engines' bugs rather than ours. First byte: bit 0 ONNX / TensorFlow.
///
/// Property: an input spec that passes is inside the caps.
pub fn model(data: &[u8]) {
    use policy::policy::{precheck_graph, MAX_INPUT_CHANNELS, MAX_INPUT_ELEMENTS, MAX_INPUT_SIDE};
    use policy::GraphFormat;
    let Some((&sel, graph)) = data.split_first() else {
        return;
    };
    let format = if sel & 1 == 0 {
        GraphFormat::Onnx
    } else {
        GraphFormat::TensorFlow
    };
    if let Ok(Some(spec)) = precheck_graph(format, graph, "model.onnx") {
        assert!(spec.width as i64 <= MAX_INPUT_SIDE && spec.height as i64 <= MAX_INPUT_SIDE);
        assert!(spec.channels as i64 <= MAX_INPUT_CHANNELS);
        assert!(spec.len() as i64 <= MAX_INPUT_ELEMENTS && !spec.is_empty());
    }
}

/// A `.npy` track through `Track::from_npy_bytes` (what `Track::load`
/// does after its bounded read). Property: a track that loads can be
/// driven on: length, positions, nearest points and widths are finite.
pub fn track(data: &[u8]) {
    let Ok(t) = sim::track::Track::from_npy_bytes("fuzz", "track.npy", data) else {
        return;
    };
    let len = t.length();
    assert!(len.is_finite() && len > 0.0, "track length {len}");
    for k in 0..8 {
        let s = len * k as f64 / 7.0;
        let (p, heading) = t.point_at(s);
        assert!(p[0].is_finite() && p[1].is_finite() && heading.is_finite());
        let pos = t.nearest(p);
        assert!(pos.distance_from_center().is_finite());
        let _ = t.is_on_track(&pos);
        let seg = t.segment_at(s);
        assert!(seg < t.segment_count());
        let (l, r) = t.half_widths(seg, 0.5);
        assert!(l.is_finite() && r.is_finite());
        let near = t.nearest_near([p[0] + 0.3, p[1] - 0.2], seg, 2.0);
        assert!(near.distance_from_center().is_finite());
    }
    let b = t.bounds();
    assert!(b.iter().all(|v| v.is_finite()));
}

/// A calibration file through both parsers: the project's own
/// (`Calibration::load`) and the stock DeepRacer one (`calibration import`
/// and the web's import). Properties: what parses is valid, its pulses for
/// any command stay in the channel's range, and it writes back to a file
/// that parses to the same calibration.
pub fn calibration(data: &[u8]) {
    use servo_driver::Calibration;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("calibration.json");
    for cal in [
        Calibration::from_project_json(text, path),
        Calibration::from_deepracer_json(text, path),
    ]
    .into_iter()
    .flatten()
    {
        cal.validate().expect("a parsed calibration is valid");
        for c in [-2.0, -1.0, -0.5, 0.0, 0.25, 1.0, 3.0, f32::NAN] {
            for (ch, name) in [(&cal.steering, "steering"), (&cal.throttle, "throttle")] {
                let ns = ch.pulse_ns(c);
                assert!(
                    (ch.min..=ch.max).contains(&ns),
                    "{name} pulse {ns} for {c} outside {}..={}",
                    ch.min,
                    ch.max
                );
            }
        }
        let again = Calibration::from_project_json(&cal.to_project_json(), path)
            .expect("a calibration we write reads back");
        assert_eq!(again, cal);
        let stock = Calibration::from_deepracer_json(&cal.to_deepracer_json(), path)
            .expect("a stock file we write reads back");
        assert_eq!(
            (stock.steering, stock.throttle),
            (cal.steering, cal.throttle)
        );
    }
}

/// A model `.tar.gz` through `safe_io::archive::read_model_archive` (the
/// web upload's reader) and `policy::ModelFiles::read` (the CLI's, which
/// also parses the metadata), with the real model limits. First byte: 0
/// the rest is the file as is; otherwise the rest is a tar stream that the
/// target gzips first, so mutations reach the tar and entry checks instead
/// of dying at the gzip CRC. Properties: the two readers agree, and what
/// is accepted is inside the limits.
pub fn archive(data: &[u8]) {
    use safe_io::archive::{read_model_archive, Limits};
    use std::io::Write;
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let file = if sel == 0 {
        rest.to_vec()
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(rest).expect("gzip into memory");
        gz.finish().expect("gzip into memory")
    };
    let path: PathBuf = scratch().join("model.tar.gz");
    std::fs::write(&path, &file).expect("write the archive into the scratch folder");
    let limits = Limits::MODEL;
    let web = read_model_archive(&path, &limits);
    if let Ok(m) = &web {
        assert!(m.metadata.bytes.len() as u64 <= limits.max_metadata_bytes);
        assert!(m.graph.bytes.len() as u64 <= limits.max_graph_bytes);
    }
    let cli = policy::ModelFiles::read(&path);
    // The CLI also parses the metadata, so it may refuse what the archive
    // reader passed, never the other way round.
    if cli.is_ok() {
        assert!(web.is_ok(), "the CLI read an archive the web refuses");
    }
}
