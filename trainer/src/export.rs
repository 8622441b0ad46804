//! Writes a trained readout as a DeepRacer model folder: `model.onnx`
//! (through `policy::export`, the same graph builder the tests use) and a
//! continuous-action `model_metadata.json`.

use std::path::Path;

use policy::export::{self, ExportError, Head, LinearWeights, NetSpec};
use policy::{ActionSpace, InputSpec, Layout, ModelMetadata, Range};

use crate::dagger::Readout;

/// Continuous action space of exported models: steering +/-30 deg and a
/// speed range whose top is the model's full throttle.
pub fn action_space(max_steering_deg: f64, speed: (f64, f64)) -> ActionSpace {
    ActionSpace::Continuous {
        steering_angle: Range {
            low: -max_steering_deg,
            high: max_steering_deg,
        },
        speed: Range {
            low: speed.0,
            high: speed.1,
        },
    }
}

/// ONNX bytes for `model`. The graph divides the raw 0-255 input by 255
/// before pooling, while the readout was fitted on raw pooled values, so the
/// first layer's weights are scaled by 255 here.
pub fn onnx_bytes(model: &Readout) -> Result<Vec<u8>, ExportError> {
    let spec = NetSpec {
        input: InputSpec {
            layout: Layout::Nchw,
            ..InputSpec::deepracer()
        },
        outputs: 2,
        head: Head::Linear,
    };
    let n = model.spec.len();
    let transpose = |w: &[f32], rows: usize, cols: usize, scale: f32| {
        let mut t = vec![0.0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = w[r * cols + c] * scale;
            }
        }
        t
    };
    let weights = match &model.hidden {
        None => LinearWeights {
            pool: model.spec.pool,
            hidden: 0,
            w1: Vec::new(),
            b1: Vec::new(),
            w2: transpose(&model.out_w, 2, n, 255.0),
            b2: model.out_b.to_vec(),
        },
        Some((w, b)) => {
            let h = b.len();
            LinearWeights {
                pool: model.spec.pool,
                hidden: h,
                w1: transpose(w, h, n, 255.0),
                b1: b.clone(),
                w2: transpose(&model.out_w, 2, h, 1.0),
                b2: model.out_b.to_vec(),
            }
        }
    };
    export::linear_policy(&spec, &weights)
}

/// Write `dir/model.onnx` and `dir/model_metadata.json`.
pub fn write(dir: &Path, model: &Readout, space: ActionSpace) -> Result<(), ExportError> {
    let bytes = onnx_bytes(model)?;
    let mut meta = ModelMetadata::new(space);
    meta.neural_network = policy::metadata::NeuralNetwork::Other("LINEAR_READOUT".into());
    export::write_model_dir(dir, &bytes, &meta)
}
