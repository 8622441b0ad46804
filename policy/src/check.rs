//! Load a model, run one frame through the car's own pipeline and report
//! what came out. `car-runtime check-model` prints this.

use crate::action::{ActionMapper, MappedAction};
use crate::backend::Backend;
use crate::frame::{Frame, PixelFormat};
use crate::metadata::ActionSpace;
use crate::model::{Model, ModelError};
use crate::policy::PolicyError;
use crate::preprocess::{InputSpec, PreprocessError, Preprocessor};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{file}: cannot read the image: {message}")]
    Image { file: String, message: String },
    #[error("preprocessing failed: {0}")]
    Preprocess(#[from] PreprocessError),
    #[error(transparent)]
    Inference(#[from] PolicyError),
}

/// Everything `check-model` shows for one backend.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub backend: String,
    pub graph: String,
    pub format: &'static str,
    pub input: InputSpec,
    pub output_len: usize,
    pub action_space: ActionSpace,
    /// Raw policy outputs for the frame.
    pub outputs: Vec<f32>,
    /// Mapped at 100 % max speed, so the throttle shows the model's intent.
    pub action: MappedAction,
    pub load_ms: f64,
    pub inference_ms: f64,
    /// What was fed: the image file, or "synthetic".
    pub frame: String,
}

impl CheckReport {
    /// The JSON `check-model --json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "backend": self.backend,
            "outputs": self.outputs,
            "action": {
                "index": self.action.index,
                "steering_angle": self.action.steering_angle_deg,
                "speed": self.action.speed_mps,
                "steering": self.action.steering,
                "throttle": self.action.throttle,
            },
            "load_ms": self.load_ms,
            "inference_ms": self.inference_ms,
            "input": {
                "layout": self.input.layout.as_str(),
                "width": self.input.width,
                "height": self.input.height,
                "channels": self.input.channels,
            },
            "output_len": self.output_len,
            "action_space_type": self.action_space.type_name(),
            "format": self.format,
            "graph": self.graph,
            "frame": self.frame,
        })
    }
}

/// A 640x480 grey test frame with structure (a bright road-like band and a
/// gradient), so a model's output depends on it.
pub fn synthetic_frame() -> Vec<u8> {
    let (w, h) = (640usize, 480usize);
    let mut v = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let road = (x as i64 - 320).abs() < (y as i64 / 2 + 40);
            v[y * w + x] = if road && y > 200 {
                180
            } else {
                ((x + y) / 8 % 96) as u8
            };
        }
    }
    v
}

/// Load `path` on `backend`, run one frame (the image file, preprocessed as
/// a camera frame; or a synthetic 640x480 frame) and time both.
pub fn check_model(
    path: &Path,
    backend: &Backend,
    image: Option<&Path>,
) -> Result<CheckReport, CheckError> {
    let start = Instant::now();
    let mut model = Model::load(path, backend)?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let spec = *model.policy.input_spec();
    let mut input = vec![0f32; spec.len()];
    let frame_name;
    match image {
        Some(p) => {
            frame_name = p.display().to_string();
            let bytes = std::fs::read(p).map_err(|e| CheckError::Image {
                file: frame_name.clone(),
                message: e.to_string(),
            })?;
            let is_jpeg = bytes.starts_with(&[0xFF, 0xD8]);
            if is_jpeg {
                // Exactly the MJPEG camera path.
                let (w, h) = image::ImageReader::new(std::io::Cursor::new(&bytes))
                    .with_guessed_format()
                    .ok()
                    .and_then(|r| r.into_dimensions().ok())
                    .ok_or_else(|| CheckError::Image {
                        file: frame_name.clone(),
                        message: "not a readable JPEG".into(),
                    })?;
                let mut pre = Preprocessor::new(w, h, PixelFormat::Jpeg, spec)?;
                let frame = Frame {
                    data: &bytes,
                    format: PixelFormat::Jpeg,
                    width: w,
                    height: h,
                    timestamp_ns: 0,
                    seq: 0,
                };
                pre.run(&frame, &mut input)?;
            } else {
                let img = image::load_from_memory(&bytes).map_err(|e| CheckError::Image {
                    file: frame_name.clone(),
                    message: e.to_string(),
                })?;
                let rgb = img.to_rgb8();
                let (w, h) = rgb.dimensions();
                let mut pre = Preprocessor::new(w, h, PixelFormat::Rgb8, spec)?;
                let frame = Frame {
                    data: rgb.as_raw(),
                    format: PixelFormat::Rgb8,
                    width: w,
                    height: h,
                    timestamp_ns: 0,
                    seq: 0,
                };
                pre.run(&frame, &mut input)?;
            }
        }
        None => {
            frame_name = "synthetic".into();
            let data = synthetic_frame();
            let mut pre = Preprocessor::new(640, 480, PixelFormat::Gray8, spec)?;
            let frame = Frame {
                data: &data,
                format: PixelFormat::Gray8,
                width: 640,
                height: 480,
                timestamp_ns: 0,
                seq: 0,
            };
            pre.run(&frame, &mut input)?;
        }
    }
    let mut outputs = vec![0f32; model.policy.output_len()];
    let t = Instant::now();
    model.policy.infer(&input, &mut outputs)?;
    let inference_ms = t.elapsed().as_secs_f64() * 1e3;
    let action = ActionMapper::new(&model.metadata.action_space).map(&outputs, 1.0);
    Ok(CheckReport {
        backend: model.policy.backend_name().to_string(),
        graph: model.graph_name.clone(),
        format: model.format.as_str(),
        input: spec,
        output_len: outputs.len(),
        action_space: model.metadata.action_space.clone(),
        outputs,
        action,
        load_ms,
        inference_ms,
        frame: frame_name,
    })
}
