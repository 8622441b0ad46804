//! Models on the tract backend (one backend per test binary: `ort::set_api`
//! is process-global).

mod common;

use common::*;
use policy::check::check_model;
use policy::preprocess::Layout;
use policy::{ActionMapper, Backend, BackendChoice, BackendError, Model, ModelError};

fn backend() -> Backend {
    Backend::init(BackendChoice::Tract, None).unwrap()
}

fn run(model: &mut Model, input: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; model.policy.output_len()];
    model.policy.infer(input, &mut out).unwrap();
    out
}

fn to_nchw(nhwc: &[f32]) -> Vec<f32> {
    // One channel: NHWC and NCHW hold the same order.
    nhwc.to_vec()
}

#[test]
fn nhwc_and_nchw_models_load_and_agree() {
    let b = backend();
    let t = tempfile::tempdir().unwrap();
    let a = shallow_dir(&t.path().join("nhwc"), Layout::Nhwc, discrete(9), 7);
    let c = shallow_dir(&t.path().join("nchw"), Layout::Nchw, discrete(9), 7);
    let mut ma = Model::load(&a, &b).unwrap();
    let mut mc = Model::load(&c, &b).unwrap();
    let sa = *ma.policy.input_spec();
    let sc = *mc.policy.input_spec();
    assert_eq!(
        (sa.layout, sa.width, sa.height, sa.channels),
        (Layout::Nhwc, 160, 120, 1)
    );
    assert_eq!(
        (sc.layout, sc.width, sc.height, sc.channels),
        (Layout::Nchw, 160, 120, 1)
    );
    assert_eq!(ma.policy.output_len(), 9);
    assert_eq!(ma.policy.backend_name(), "tract");
    let img = image_160x120();
    let oa = run(&mut ma, &img);
    let oc = run(&mut mc, &to_nchw(&img));
    let sum: f32 = oa.iter().sum();
    assert!((sum - 1.0).abs() < 1e-4, "softmax sums to {sum}");
    for (x, y) in oa.iter().zip(&oc) {
        assert!((x - y).abs() < 1e-5, "{oa:?} vs {oc:?}");
    }
    // The output depends on the picture.
    let dark = vec![0f32; img.len()];
    let od = run(&mut ma, &dark);
    assert!(oa.iter().zip(&od).any(|(x, y)| (x - y).abs() > 1e-6));
    // Mapping the outputs picks the argmax.
    let m = ActionMapper::new(&ma.metadata.action_space).map(&oa, 1.0);
    let best = oa
        .iter()
        .enumerate()
        .max_by(|x, y| x.1.partial_cmp(y.1).unwrap())
        .unwrap()
        .0;
    assert_eq!(m.index, Some(best));
}

#[test]
fn three_channel_and_continuous_models() {
    let b = backend();
    let t = tempfile::tempdir().unwrap();
    let d = linear_dir(&t.path().join("lin"), Layout::Nchw, continuous(), 3);
    let mut m = Model::load(&d, &b).unwrap();
    assert_eq!(m.policy.output_len(), 2);
    let o = run(&mut m, &image_160x120());
    assert!(
        o.iter().all(|v| (-1.0..=1.0).contains(v)),
        "tanh head: {o:?}"
    );

    // A 3-channel NHWC model built by hand with the exporter.
    use policy::export::{linear_policy, write_model_dir, Head, LinearWeights, NetSpec};
    use policy::preprocess::InputSpec;
    let s = NetSpec {
        input: InputSpec {
            layout: Layout::Nhwc,
            channels: 3,
            ..InputSpec::deepracer()
        },
        outputs: 4,
        head: Head::Softmax,
    };
    let bytes = linear_policy(&s, &LinearWeights::random(&s, 8, 0, 5)).unwrap();
    let d3 = t.path().join("rgb");
    write_model_dir(&d3, &bytes, &policy::ModelMetadata::new(discrete(4))).unwrap();
    let m3 = Model::load(&d3, &b).unwrap();
    let s3 = m3.policy.input_spec();
    assert_eq!(
        (s3.layout, s3.channels, s3.width, s3.height),
        (Layout::Nhwc, 3, 160, 120)
    );
}

#[test]
fn output_size_must_match_action_space() {
    let b = backend();
    let t = tempfile::tempdir().unwrap();
    let d = shallow_dir(&t.path().join("m"), Layout::Nhwc, discrete(5), 1);
    // Replace the metadata with a 3-action space.
    policy::ModelMetadata::new(discrete(3))
        .save(&d.join("model_metadata.json"))
        .unwrap();
    let e = Model::load(&d, &b).unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::OutputMismatch {
                got: 5,
                want: 3,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("model.onnx") && msg.contains("outputs 5") && msg.contains("needs 3"),
        "{msg}"
    );
    // Continuous needs 2.
    policy::ModelMetadata::new(continuous())
        .save(&d.join("model_metadata.json"))
        .unwrap();
    let msg = Model::load(&d, &b).unwrap_err().to_string();
    assert!(msg.contains("continuous action space needs 2"), "{msg}");
}

#[test]
fn missing_and_broken_files_are_named() {
    let b = backend();
    let t = tempfile::tempdir().unwrap();
    let d = shallow_dir(&t.path().join("m"), Layout::Nhwc, discrete(3), 1);
    std::fs::write(
        d.join("model_metadata.json"),
        r#"{"action_space": [{"steering_angle": 0, "speed": "fast"}]}"#,
    )
    .unwrap();
    let msg = Model::load(&d, &b).unwrap_err().to_string();
    assert!(
        msg.contains("model_metadata.json: action_space[0].speed: expected a number, got \"fast\""),
        "{msg}"
    );
    std::fs::remove_file(d.join("model_metadata.json")).unwrap();
    let msg = Model::load(&d, &b).unwrap_err().to_string();
    assert!(msg.contains("no model_metadata.json"), "{msg}");
    let e = t.path().join("empty");
    std::fs::create_dir(&e).unwrap();
    policy::ModelMetadata::new(discrete(3))
        .save(&e.join("model_metadata.json"))
        .unwrap();
    let msg = Model::load(&e, &b).unwrap_err().to_string();
    assert!(msg.contains("no model.onnx or model.pb"), "{msg}");
    std::fs::write(e.join("model.onnx"), b"this is not onnx").unwrap();
    let msg = Model::load(&e, &b).unwrap_err().to_string();
    assert!(
        msg.contains("model.onnx") && msg.contains("cannot load the graph"),
        "{msg}"
    );
}

#[test]
fn tar_gz_loads_and_hostile_archives_are_refused() {
    let b = backend();
    let t = tempfile::tempdir().unwrap();
    let d = shallow_dir(&t.path().join("m"), Layout::Nhwc, discrete(9), 11);
    let onnx = std::fs::read(d.join("model.onnx")).unwrap();
    let meta = std::fs::read(d.join("model_metadata.json")).unwrap();
    let img = image_160x120();
    let want = run(&mut Model::load(&d, &b).unwrap(), &img);

    let good = t.path().join("good.tar.gz");
    tar_gz(
        &good,
        &[
            ("./model_metadata.json", &meta),
            ("agent/model.onnx", &onnx),
            ("checkpoint", b"x"),
        ],
    );
    let mut m = Model::load(&good, &b).unwrap();
    assert_eq!(run(&mut m, &img), want);
    assert!(
        m.graph_name.ends_with("good.tar.gz:agent/model.onnx"),
        "{}",
        m.graph_name
    );

    let evil = t.path().join("evil.tar.gz");
    tar_gz(
        &evil,
        &[
            ("model_metadata.json", &meta),
            ("model.onnx", &onnx),
            ("../../etc/evil", b"x"),
        ],
    );
    let msg = Model::load(&evil, &b).unwrap_err().to_string();
    assert!(
        msg.contains("evil.tar.gz") && msg.contains("..") && msg.contains("refusing"),
        "{msg}"
    );

    let abs = t.path().join("abs.tar.gz");
    tar_gz(
        &abs,
        &[("/tmp/model_metadata.json", &meta), ("model.onnx", &onnx)],
    );
    let msg = Model::load(&abs, &b).unwrap_err().to_string();
    assert!(msg.contains("absolute"), "{msg}");

    let nometa = t.path().join("nometa.tar.gz");
    tar_gz(&nometa, &[("model.onnx", &onnx)]);
    let msg = Model::load(&nometa, &b).unwrap_err().to_string();
    assert!(
        msg.contains("nometa.tar.gz") && msg.contains("no model_metadata.json"),
        "{msg}"
    );

    let junk = t.path().join("junk.tar.gz");
    std::fs::write(&junk, b"not gzip at all").unwrap();
    assert!(Model::load(&junk, &b).is_err());
}

#[test]
fn check_reports_json_for_synthetic_and_image_frames() {
    let b = backend();
    let t = tempfile::tempdir().unwrap();
    let d = shallow_dir(&t.path().join("m"), Layout::Nhwc, discrete(10), 2);
    let r = check_model(&d, &b, None).unwrap();
    let j = r.to_json();
    assert_eq!(j["backend"], "tract");
    assert_eq!(j["outputs"].as_array().unwrap().len(), 10);
    assert!(j["action"]["index"].as_u64().unwrap() < 10);
    assert!(j["action"]["steering_angle"].is_number() && j["action"]["speed"].is_number());
    assert!(j["load_ms"].as_f64().unwrap() > 0.0 && j["inference_ms"].as_f64().unwrap() > 0.0);

    // A JPEG picture goes through the camera's JPEG path.
    let mut rgb = image::RgbImage::new(640, 480);
    for (x, y, p) in rgb.enumerate_pixels_mut() {
        *p = image::Rgb([(x / 3) as u8, (y / 2) as u8, 90]);
    }
    let jpg = t.path().join("frame.jpg");
    rgb.save(&jpg).unwrap();
    let r2 = check_model(&d, &b, Some(&jpg)).unwrap();
    assert_eq!(r2.outputs.len(), 10);
    assert_ne!(r2.outputs, r.outputs);
    let png = t.path().join("frame.png");
    rgb.save(&png).unwrap();
    let r3 = check_model(&d, &b, Some(&png)).unwrap();
    // JPEG is lossy, but the two pictures are nearly the same.
    for (a, c) in r2.outputs.iter().zip(&r3.outputs) {
        assert!((a - c).abs() < 0.05, "{:?} vs {:?}", r2.outputs, r3.outputs);
    }
    let missing = check_model(&d, &b, Some(&t.path().join("nope.jpg")))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.jpg"), "{missing}");
}

#[test]
fn backend_is_chosen_once_per_process() {
    let b = backend();
    assert_eq!(b.name(), "tract");
    assert_eq!(
        Backend::init(BackendChoice::Tract, None).unwrap().name(),
        "tract"
    );
    assert_eq!(
        Backend::init(BackendChoice::Auto, None).unwrap().name(),
        "tract"
    );
    let e = Backend::init(BackendChoice::OnnxRuntime, None).unwrap_err();
    assert!(
        matches!(
            e,
            BackendError::AlreadyInitialised {
                current: "tract",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn renamed_inputs_and_outputs_compute_the_same() {
    use policy::export;
    let b = backend();
    let t = tempfile::tempdir().unwrap();
    let a = shallow_dir(&t.path().join("a"), Layout::Nchw, continuous(), 3);
    let bytes = std::fs::read(a.join("model.onnx")).unwrap();
    let renamed = export::rename_io(&bytes, "camera", "policy_out").unwrap();
    let text = String::from_utf8_lossy(&renamed);
    assert!(text.contains("camera") && text.contains("policy_out"));
    let c = t.path().join("c");
    let meta = policy::ModelMetadata::new(continuous());
    export::write_model_dir(&c, &renamed, &meta).unwrap();
    let img = image_160x120();
    let oa = run(&mut Model::load(&a, &b).unwrap(), &img);
    let oc = run(&mut Model::load(&c, &b).unwrap(), &img);
    assert_eq!(oa, oc);
    // Not ONNX at all: a clear error, not a panic.
    let err = export::rename_io(b"not a model", "x", "y").unwrap_err();
    assert!(err.to_string().contains("not an ONNX model"), "{err}");
}
