//! The DeepRacer console archive in ../shared/models runs unchanged through
//! tract-tensorflow.

mod common;

use policy::check::check_model;
use policy::preprocess::Layout;
use policy::{ActionMapper, Backend, BackendChoice, GraphFormat, Model};
use std::path::PathBuf;

fn archive() -> Option<PathBuf> {
    let p = common::manifest_dir().join("../../shared/models/deepracer-console-structure.tar.gz");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} is absent (../shared is not beside the checkout)",
            p.display()
        );
        None
    }
}

#[test]
fn console_archive_runs_through_tract_tensorflow() {
    let Some(path) = archive() else { return };
    let b = Backend::init(BackendChoice::Tract, None).unwrap();
    let mut m = Model::load(&path, &b).unwrap();
    assert_eq!(m.format, GraphFormat::TensorFlow);
    assert!(
        m.graph_name.ends_with(":agent/model.pb"),
        "{}",
        m.graph_name
    );
    assert_eq!(m.policy.backend_name(), "tract-tensorflow");
    let s = *m.policy.input_spec();
    assert_eq!(
        (s.layout, s.width, s.height, s.channels),
        (Layout::Nhwc, 160, 120, 1)
    );
    assert_eq!(m.policy.output_len(), 9);
    assert_eq!(m.metadata.version.as_deref(), Some("3"));

    let bright: Vec<f32> = (0..160 * 120).map(|i| ((i * 13) % 256) as f32).collect();
    let mut o1 = vec![0f32; 9];
    m.policy.infer(&bright, &mut o1).unwrap();
    let sum: f32 = o1.iter().sum();
    assert!(
        (sum - 1.0).abs() < 1e-4,
        "softmax outputs sum to {sum}: {o1:?}"
    );
    assert!(o1.iter().all(|p| p.is_finite() && *p >= 0.0));
    let mut o2 = vec![0f32; 9];
    m.policy.infer(&vec![0f32; 160 * 120], &mut o2).unwrap();
    assert!(
        o1.iter().zip(&o2).any(|(a, b)| (a - b).abs() > 1e-7),
        "output ignores the input"
    );
    // Same input, same output (no hidden state between frames).
    let mut o3 = vec![0f32; 9];
    m.policy.infer(&bright, &mut o3).unwrap();
    assert_eq!(o1, o3);

    let a = ActionMapper::new(&m.metadata.action_space).map(&o1, 1.0);
    let i = a.index.unwrap();
    assert_eq!(a.steering_angle_deg, [-30.0, 0.0, 30.0][i / 3]);

    let r = check_model(&path, &b, None).unwrap();
    assert_eq!(r.to_json()["outputs"].as_array().unwrap().len(), 9);
    assert_eq!(r.format, "tensorflow");
}
