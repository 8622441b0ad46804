//! ONNX Runtime loaded at run time. Skips (with a message) when no
//! libonnxruntime is installed: `pip install onnxruntime` provides one.
//! Reference outputs come from tract-onnx directly, not through `ort`, so the
//! two engines are compared within one process.

mod common;

use common::*;
use policy::preprocess::Layout;
use policy::{Backend, BackendChoice, Model};
use std::path::Path;
use tract_onnx::prelude::*;

fn ort_backend() -> Option<Backend> {
    match Backend::init(BackendChoice::OnnxRuntime, None) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("SKIP: ONNX Runtime not available ({e}); `pip install onnxruntime` to run these tests");
            None
        }
    }
}

fn tract_reference(onnx: &Path, shape: [usize; 4], input: &[f32]) -> Vec<f32> {
    let plan = tract_onnx::onnx()
        .model_for_path(onnx)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let t = Tensor::from_shape(&shape, input).unwrap();
    let out = plan.run(tvec![t.into()]).unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

#[test]
fn onnxruntime_matches_tract() {
    let Some(b) = ort_backend() else { return };
    assert_eq!(b.name(), "onnxruntime");
    assert!(b.library().is_some());
    let t = tempfile::tempdir().unwrap();
    let img = image_160x120();
    for (name, dir) in [
        (
            "shallow-nhwc",
            shallow_dir(&t.path().join("a"), Layout::Nhwc, discrete(9), 3),
        ),
        (
            "shallow-nchw-cont",
            shallow_dir(&t.path().join("b"), Layout::Nchw, continuous(), 4),
        ),
        (
            "linear-nhwc",
            linear_dir(&t.path().join("c"), Layout::Nhwc, discrete(5), 5),
        ),
    ] {
        let mut m = Model::load(&dir, &b).unwrap();
        assert_eq!(m.policy.backend_name(), "onnxruntime");
        let mut out = vec![0f32; m.policy.output_len()];
        m.policy.infer(&img, &mut out).unwrap();
        let want = tract_reference(&dir.join("model.onnx"), m.policy.input_spec().shape(), &img);
        assert_eq!(out.len(), want.len(), "{name}");
        for (a, r) in out.iter().zip(&want) {
            assert!(
                (a - r).abs() <= 1e-4,
                "{name}: onnxruntime {out:?} vs tract {want:?}"
            );
        }
        // Run again: preallocated output is refreshed, not stale.
        let dark = vec![0f32; img.len()];
        m.policy.infer(&dark, &mut out).unwrap();
        let want_dark = tract_reference(
            &dir.join("model.onnx"),
            m.policy.input_spec().shape(),
            &dark,
        );
        for (a, r) in out.iter().zip(&want_dark) {
            assert!(
                (a - r).abs() <= 1e-4,
                "{name} (dark): {out:?} vs {want_dark:?}"
            );
        }
    }
    // Mismatched output size is caught on this backend too.
    let d = shallow_dir(&t.path().join("bad"), Layout::Nhwc, discrete(4), 1);
    policy::ModelMetadata::new(discrete(6))
        .save(&d.join("model_metadata.json"))
        .unwrap();
    assert!(Model::load(&d, &b)
        .unwrap_err()
        .to_string()
        .contains("outputs 4"));
}
