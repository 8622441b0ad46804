//! Models a hostile or broken upload could hold, loaded by the library
//! directly (tract backend): each is refused quickly with a message naming
//! the file and the field, never an abort or minutes of CPU.

use policy::check::check_model;
use policy::export::{write_model_dir, Attr, GraphBuilder};
use policy::metadata::{ActionSpace, DiscreteAction, ModelMetadata};
use policy::{Backend, BackendChoice, Model, PolicyError};
use std::path::Path;
use std::time::{Duration, Instant};

fn backend() -> Backend {
    Backend::init(BackendChoice::Tract, None).unwrap()
}

fn three_actions() -> ModelMetadata {
    ModelMetadata::new(ActionSpace::Discrete(
        [-30.0, 0.0, 30.0]
            .iter()
            .map(|&a| DiscreteAction {
                steering_angle: a,
                speed: 1.0,
            })
            .collect(),
    ))
}

/// `x` (the camera, `dims`) -> `body` -> mean over the image -> 3 scores.
fn model(dims: &[i64], body: impl FnOnce(&mut GraphBuilder, String) -> String) -> Vec<u8> {
    let mut g = GraphBuilder::new("hostile");
    let x = g.input("x", dims);
    let y = body(&mut g, x);
    let m = g.node(
        "ReduceMean",
        &[&y],
        None,
        &[
            ("axes", Attr::Ints(vec![1, 2, 3])),
            ("keepdims", Attr::Int(0)),
        ],
    );
    let ones = g.init("ones", &[1, 3], &[1.0, 1.0, 1.0]).unwrap();
    g.node("Mul", &[&m, &ones], Some("policy"), &[]);
    g.output("policy", &[1, 3]);
    g.to_bytes()
}

fn write(dir: &Path, onnx: &[u8]) {
    write_model_dir(dir, onnx, &three_actions()).unwrap();
}

#[test]
fn a_65535_square_input_is_refused_before_anything_is_allocated() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), &model(&[1, 1, 65535, 65535], |_, x| x));
    let start = Instant::now();
    let e = Model::load(t.path(), &backend()).unwrap_err().to_string();
    assert!(e.contains("model.onnx"), "{e}");
    assert!(
        e.contains("dimension 2 is 65535") && e.contains("1280"),
        "{e}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn inputs_over_the_channel_and_element_caps_are_refused() {
    let t = tempfile::tempdir().unwrap();
    // Every side within 1280, but 1280*1280*3 is over the element cap.
    write(t.path(), &model(&[1, 3, 1280, 1280], |_, x| x));
    let e = Model::load(t.path(), &backend()).unwrap_err().to_string();
    assert!(e.contains("model.onnx") && e.contains("more than"), "{e}");
    let d = policy::policy::spec_from_shape(&[1, 120, 160, 17]).unwrap_err();
    assert!(d.contains("17"), "{d}");
    // What DeepRacer models are still fine.
    for dims in [[1, 120, 160, 1], [1, 3, 120, 160], [-1, 120, 160, 3]] {
        policy::policy::spec_from_shape(&dims).unwrap();
    }
}

#[test]
fn a_100000_node_chain_is_refused_fast_by_the_node_cap() {
    let t = tempfile::tempdir().unwrap();
    let onnx = model(&[1, 1, 120, 160], |g, x| {
        let mut y = x;
        for _ in 0..100_000 {
            y = g.node("Relu", &[&y], None, &[]);
        }
        y
    });
    assert!(onnx.len() > 3_000_000, "{} bytes", onnx.len());
    write(t.path(), &onnx);
    let start = Instant::now();
    let e = Model::load(t.path(), &backend()).unwrap_err().to_string();
    let took = start.elapsed();
    eprintln!("100,000-node model refused in {took:?}");
    assert!(e.contains("model.onnx") && e.contains("graph.node"), "{e}");
    assert!(e.contains("100002 nodes") && e.contains("20000"), "{e}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn negative_speed_metadata_is_refused_naming_the_field() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), &model(&[1, 1, 120, 160], |_, x| x));
    std::fs::write(
        t.path().join("model_metadata.json"),
        r#"{"action_space": [{"steering_angle": -30, "speed": 1}, {"steering_angle": 0, "speed": 1},
            {"steering_angle": 30, "speed": 1}, {"steering_angle": 0, "speed": -1}]}"#,
    )
    .unwrap();
    let e = Model::load(t.path(), &backend()).unwrap_err().to_string();
    assert!(e.contains("model_metadata.json"), "{e}");
    assert!(
        e.contains("action_space[3].speed: -1 is outside 0.01-4 m/s"),
        "{e}"
    );
}

/// sqrt(-x): -0 on the blank warm-up frame (so it loads), NaN on any
/// lit pixel.
fn nan_model(dir: &Path) {
    write(
        dir,
        &model(&[1, 1, 120, 160], |g, x| {
            let n = g.node("Neg", &[&x], None, &[]);
            g.node("Sqrt", &[&n], None, &[])
        }),
    );
}

#[test]
fn nan_outputs_are_an_inference_error_and_check_refuses_them() {
    let t = tempfile::tempdir().unwrap();
    nan_model(t.path());
    let mut m = Model::load(t.path(), &backend()).unwrap();
    let n = m.policy.input_spec().len();
    let mut out = [0f32; 3];
    m.policy.infer(&vec![0.0; n], &mut out).unwrap();
    let e = m.policy.infer(&vec![100.0; n], &mut out).unwrap_err();
    assert!(matches!(e, PolicyError::NonFinite { index: 0, .. }), "{e}");
    assert!(e.to_string().contains("non-finite"), "{e}");
    let e = check_model(t.path(), &backend(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("non-finite"), "{e}");
}
