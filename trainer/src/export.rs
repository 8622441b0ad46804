//! Writes a trained network as a DeepRacer model folder the car loads
//! unchanged: `model.onnx` (burn-onnx's exporter, with the graph's input and
//! output renamed to the stock DeepRacer names) and `model_metadata.json`.

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use burn_onnx::export::OnnxExporter;
use policy::{ActionSpace, ModelMetadata};

use crate::net::{Net, NetKind, INPUT_H, INPUT_W};

/// The stock names (PPO, front camera), so tools written for console models
/// find the tensors they look for.
pub const INPUT_NAME: &str =
    "main_level/agent/main/online/network_0/FRONT_FACING_CAMERA/FRONT_FACING_CAMERA";
pub const OUTPUT_NAME: &str = "main_level/agent/main/online/network_1/ppo_head_0/policy";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("ONNX export: {0}")]
    Onnx(#[from] burn_onnx::export::ExportError),
    #[error(transparent)]
    Policy(#[from] policy::export::ExportError),
}

/// ONNX bytes for `net`: input `[1, 1, 120, 160]` raw 0-255 (NCHW), output
/// `[1, outputs]`: continuous means clipped to [-1, 1], or discrete logits
/// (the car takes the argmax, which softmax would not change; burn-onnx has
/// no Softmax).
pub fn onnx_bytes(net: &Net, space: &ActionSpace) -> Result<Vec<u8>, ExportError> {
    let device = Device::flex();
    let net = net.valid().to_device(&device);
    let sample = Tensor::<4>::zeros([1, 1, INPUT_H, INPUT_W], &device);
    let forward = match space {
        ActionSpace::Continuous { .. } => Net::forward_clipped,
        ActionSpace::Discrete(_) => Net::forward,
    };
    let model = OnnxExporter::new().export(&net, sample, forward)?;
    Ok(policy::export::rename_io(
        model.as_bytes(),
        INPUT_NAME,
        OUTPUT_NAME,
    )?)
}

/// Write `dir/model.onnx` and `dir/model_metadata.json`, each atomically.
pub fn write(dir: &Path, net: &Net, kind: NetKind, space: &ActionSpace) -> Result<(), ExportError> {
    let bytes = onnx_bytes(net, space)?;
    let mut meta = ModelMetadata::new(space.clone());
    meta.neural_network = kind.metadata_name();
    policy::export::write_model_dir(dir, &bytes, &meta)?;
    Ok(())
}
