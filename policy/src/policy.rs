//! A ready-to-run network: fixed input spec, fixed output length, `infer`.

use crate::backend::{Backend, BackendKind};
use crate::metadata::{ModelMetadata, Sensor, TrainingAlgorithm};
use crate::model::ModelError;
use crate::preprocess::{InputSpec, Layout};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::Tensor as OrtTensor;
use std::sync::Arc;
use tract_tensorflow::prelude::*;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("input has {got} values, the model needs {want}")]
    InputSize { got: usize, want: usize },
    #[error("output buffer has {got} values, the model produces {want}")]
    OutputSize { got: usize, want: usize },
    #[error("inference failed: {0}")]
    Run(String),
    /// A broken model: the car must not act on NaN or infinity.
    #[error("inference gave a non-finite output ({value} at output {index})")]
    NonFinite { index: usize, value: f32 },
}

/// Largest width or height of a model input. DeepRacer inputs are 160x120;
/// 1280 leaves room for any camera resize the car could do, and keeps one
/// input tensor (with the channel and element caps) to a few MB.
pub const MAX_INPUT_SIDE: i64 = 1280;
/// Most channels: 1 or 3 for one camera, a few stacked frames at most.
pub const MAX_INPUT_CHANNELS: i64 = 16;
/// Most values in one input tensor (16 MB of f32): 1280x960x3 fits.
pub const MAX_INPUT_ELEMENTS: i64 = 4 << 20;
/// Most nodes in a graph, subgraphs included. The stock deep network is a
/// few hundred nodes even as a TensorFlow frozen graph; engines' load time
/// grows faster than the square of the node count (100,000 chained nodes
/// took minutes), so the cap keeps a hostile graph's load to seconds.
pub const MAX_GRAPH_NODES: usize = 20_000;
/// Most values in the output the ONNX Runtime path preallocates: one score
/// per action of the largest discrete action space.
pub const MAX_OUTPUT_ELEMENTS: i64 = crate::metadata::MAX_DISCRETE_ACTIONS as i64;

struct OrtRunner {
    session: Session,
    input: OrtTensor<f32>,
    /// ONNX Runtime writes into a preallocated output tensor.
    run_options: Option<RunOptions<HasSelectedOutputs>>,
}

type TractPlan = Arc<TypedSimplePlan>;

/// tract directly: TensorFlow graphs, and ONNX graphs on the tract backend.
struct TractRunner {
    state: TypedSimpleState,
    shape: [usize; 4],
    _plan: TractPlan,
}

enum Runner {
    Ort(OrtRunner),
    Tract(TractRunner),
}

/// One model, loaded and optimised, with its input and output sizes fixed.
pub struct Policy {
    runner: Runner,
    spec: InputSpec,
    output_len: usize,
    backend: &'static str,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("spec", &self.spec)
            .field("output_len", &self.output_len)
            .field("backend", &self.backend)
            .finish()
    }
}

/// Decide NCHW or NHWC from a rank-4 shape with batch first, within the
/// size caps (checked before anything is allocated for the input).
pub fn spec_from_shape(dims: &[i64]) -> Result<InputSpec, String> {
    if dims.len() != 4 {
        return Err(format!(
            "has shape {dims:?}; expected an image [1,C,H,W] or [1,H,W,C]"
        ));
    }
    // Every dimension first: which one is the channel count is not known
    // yet, and a 65535x65535 image must be refused before any layout logic.
    for (i, &d) in dims.iter().enumerate().skip(1) {
        if d > MAX_INPUT_SIDE {
            return Err(format!(
                "dimension {i} is {d} (shape {dims:?}); the limit is {MAX_INPUT_SIDE} for width and height, {MAX_INPUT_CHANNELS} for channels"
            ));
        }
    }
    let total = dims[1..]
        .iter()
        .try_fold(1i64, |acc, &d| acc.checked_mul(d.max(1)))
        .filter(|&n| n <= MAX_INPUT_ELEMENTS);
    if total.is_none() {
        return Err(format!(
            "has shape {dims:?}, more than {MAX_INPUT_ELEMENTS} values"
        ));
    }
    if dims[0] > 1 {
        return Err(format!(
            "has batch size {} (shape {dims:?}); expected 1 or dynamic",
            dims[0]
        ));
    }
    let is_c = |d: i64| d == 1 || d == 3;
    let (layout, c, h, w) = if is_c(dims[3]) && !is_c(dims[1]) {
        (Layout::Nhwc, dims[3], dims[1], dims[2])
    } else if is_c(dims[1]) && !is_c(dims[3]) {
        (Layout::Nchw, dims[1], dims[2], dims[3])
    } else if is_c(dims[3]) {
        // Both could be channels (a 1- or 3-pixel-high image is no camera
        // frame): TensorFlow-born models are NHWC, so lean that way.
        (Layout::Nhwc, dims[3], dims[1], dims[2])
    } else {
        return Err(format!(
            "has shape {dims:?}; expected 1 or 3 channels in NCHW [1,C,H,W] or NHWC [1,H,W,C]"
        ));
    };
    if c > MAX_INPUT_CHANNELS {
        return Err(format!(
            "has {c} channels (shape {dims:?}); the limit is {MAX_INPUT_CHANNELS}"
        ));
    }
    if h <= 0 || w <= 0 {
        return Err(format!(
            "has a dynamic height or width (shape {dims:?}); the model must fix its image size"
        ));
    }
    Ok(InputSpec {
        layout,
        width: w as usize,
        height: h as usize,
        channels: c as usize,
        scale: 1.0,
    })
}

/// Nodes in an ONNX graph, its subgraphs (If, Loop, Scan bodies) included.
fn onnx_node_count(g: &tract_onnx::pb::GraphProto) -> usize {
    g.node.len()
        + g.node
            .iter()
            .flat_map(|n| n.attribute.iter())
            .map(|a| {
                a.g.iter()
                    .chain(a.graphs.iter())
                    .map(onnx_node_count)
                    .sum::<usize>()
            })
            .sum::<usize>()
}

/// The caps, checked on the decoded protobuf before any engine sees the
/// graph: decoding is linear in the file size, the engines are not.
fn precheck_onnx(proto: &tract_onnx::pb::ModelProto, file: &str) -> Result<InputSpec, ModelError> {
    let graph = proto.graph.as_ref().ok_or_else(|| ModelError::Graph {
        file: file.into(),
        message: "the model has no graph".into(),
    })?;
    let nodes = onnx_node_count(graph);
    if nodes > MAX_GRAPH_NODES {
        return Err(ModelError::Graph {
            file: file.into(),
            message: format!(
                "graph.node: {nodes} nodes is over the limit of {MAX_GRAPH_NODES} (DeepRacer networks have a few hundred)"
            ),
        });
    }
    let dims = onnx_input_dims(proto).map_err(|message| ModelError::Input {
        file: file.into(),
        message,
    })?;
    spec_from_shape(&dims).map_err(|m| ModelError::Input {
        file: file.into(),
        message: m,
    })
}

/// The TensorFlow side of [`precheck_graph`]: decode and the node cap.
fn precheck_tensorflow(
    tf: &tract_tensorflow::Tensorflow,
    bytes: &[u8],
    file: &str,
) -> Result<tract_tensorflow::tfpb::tensorflow::GraphDef, ModelError> {
    let gerr = |m: String| ModelError::Graph {
        file: file.to_string(),
        message: m,
    };
    let graph = tf
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| gerr(format!("not a TensorFlow frozen graph: {e}")))?;
    if graph.node.len() > MAX_GRAPH_NODES {
        return Err(gerr(format!(
            "node: {} nodes is over the limit of {MAX_GRAPH_NODES} (DeepRacer networks have a few hundred)",
            graph.node.len()
        )));
    }
    Ok(graph)
}

/// Everything the car does with a graph's bytes before an engine builds
/// anything from them: the protobuf decode, the caps (nodes, input shape)
/// and, for ONNX, the load-time rewrite the ONNX Runtime path applies.
/// Public so the fuzz targets run exactly this code in-process; the engines
/// themselves only ever see a graph inside the limited check child. Returns
/// the ONNX input spec (TensorFlow inputs come from the metadata: `None`).
pub fn precheck_graph(
    format: crate::model::GraphFormat,
    bytes: &[u8],
    file: &str,
) -> Result<Option<InputSpec>, ModelError> {
    match format {
        crate::model::GraphFormat::Onnx => {
            let proto = tract_onnx::onnx()
                .proto_model_for_read(&mut &bytes[..])
                .map_err(|e| ModelError::Graph {
                    file: file.to_string(),
                    message: format!("not an ONNX model: {e:#}"),
                })?;
            let spec = precheck_onnx(&proto, file)?;
            drop(proto);
            let _ = crate::rewrite::widen_scalar_constants(bytes);
            Ok(Some(spec))
        }
        crate::model::GraphFormat::TensorFlow => {
            precheck_tensorflow(&tract_tensorflow::tensorflow(), bytes, file).map(|_| None)
        }
    }
}

impl Policy {
    pub(crate) fn from_onnx(
        bytes: &[u8],
        file: &str,
        backend: &Backend,
    ) -> Result<Policy, ModelError> {
        let gerr = |m: String| ModelError::Graph {
            file: file.to_string(),
            message: m,
        };
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| gerr(format!("not an ONNX model: {e:#}")))?;
        let declared = precheck_onnx(&proto, file)?;
        if backend.kind() == BackendKind::Tract {
            return Self::from_onnx_tract(proto, declared, file);
        }
        drop(proto);
        // From here on: ONNX Runtime, at its full optimisation, on one core
        // (the car's other core runs the camera, web server and recorder; a
        // thread pool would also add jitter).
        let b = Session::builder(backend.environment()).map_err(|e| gerr(e.to_string()))?;
        let b = b
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| gerr(e.to_string()))?;
        let b = b.with_intra_threads(1).map_err(|e| gerr(e.to_string()))?;
        let b = b.with_inter_threads(1).map_err(|e| gerr(e.to_string()))?;
        let mut builder = b
            .with_intra_op_spinning(false)
            .map_err(|e| gerr(e.to_string()))?;
        let widened = crate::rewrite::widen_scalar_constants(bytes);
        if let Some((_, w)) = &widened {
            for (node, constant, rank) in &w.constants {
                tracing::debug!(
                    file,
                    node,
                    constant,
                    rank,
                    "constant widened for ONNX Runtime's fast broadcast"
                );
            }
        }
        let session = builder
            .commit_from_memory(widened.as_ref().map_or(bytes, |(b, _)| b.as_slice()))
            .map_err(|e| gerr(e.to_string()))?;
        if session.inputs().len() != 1 {
            return Err(ModelError::Input {
                file: file.into(),
                message: format!(
                    "count is {}; a camera model has exactly one input",
                    session.inputs().len()
                ),
            });
        }
        if session.outputs().is_empty() {
            return Err(gerr("the graph has no outputs".into()));
        }
        let dims: Vec<i64> = session.inputs()[0]
            .dtype()
            .tensor_shape()
            .map(|s| s.iter().copied().collect())
            .ok_or_else(|| ModelError::Input {
                file: file.into(),
                message: "is not a tensor".into(),
            })?;
        let spec = spec_from_shape(&dims).map_err(|m| ModelError::Input {
            file: file.into(),
            message: m,
        })?;
        if spec != declared {
            // ONNX Runtime read the input differently from the protobuf we
            // checked; refuse rather than trust either.
            return Err(ModelError::Input {
                file: file.into(),
                message: format!(
                    "is {:?} to ONNX Runtime but {:?} in the graph",
                    spec.shape(),
                    declared.shape()
                ),
            });
        }
        let shape = spec.shape();
        let input =
            OrtTensor::<f32>::from_array((shape, vec![0f32; spec.len()].into_boxed_slice()))
                .map_err(|e| gerr(e.to_string()))?;
        let out_dims: Option<Vec<i64>> = session.outputs()[0]
            .dtype()
            .tensor_shape()
            .map(|s| s.iter().copied().collect());
        let run_options = match out_dims {
            Some(d) if d.iter().all(|&x| x > 0 || x == -1) => {
                let d: Vec<i64> = d.iter().map(|&x| if x == -1 { 1 } else { x }).collect();
                let n = d
                    .iter()
                    .try_fold(1i64, |acc, &x| acc.checked_mul(x))
                    .filter(|&n| n <= MAX_OUTPUT_ELEMENTS)
                    .ok_or_else(|| {
                        gerr(format!(
                            "output shape {d:?} has more than {MAX_OUTPUT_ELEMENTS} values (one per action at most)"
                        ))
                    })?;
                let out =
                    OrtTensor::<f32>::from_array((d, vec![0f32; n as usize].into_boxed_slice()))
                        .map_err(|e| gerr(e.to_string()))?;
                let name = session.outputs()[0].name().to_string();
                let ro = RunOptions::new()
                    .map_err(|e| gerr(e.to_string()))?
                    .with_outputs(
                        OutputSelector::no_default()
                            .with(name.clone())
                            .preallocate(name, out),
                    );
                Some(ro)
            }
            _ => None,
        };
        Ok(Policy {
            runner: Runner::Ort(OrtRunner {
                session,
                input,
                run_options,
            }),
            spec,
            output_len: 0,
            backend: BackendKind::OnnxRuntime.name(),
        })
    }

    /// ONNX on tract through tract-onnx itself, not through `ort`'s tract
    /// shim: `ort` 2.0.0-rc.14 leaks an `OrtTypeInfo` (two heap blocks, 56
    /// bytes) for every output of every run whose output it did not
    /// preallocate, and the shim cannot take preallocated outputs, so the
    /// car leaked on every frame. Same engine, same optimisation.
    fn from_onnx_tract(
        proto: tract_onnx::pb::ModelProto,
        spec: InputSpec,
        file: &str,
    ) -> Result<Policy, ModelError> {
        let gerr = |m: String| ModelError::Graph {
            file: file.to_string(),
            message: m,
        };
        let onnx = tract_onnx::onnx();
        let model = onnx
            .model_for_proto_model(&proto)
            .map_err(|e| gerr(format!("{e:#}")))?;
        drop(proto);
        if model.outputs.is_empty() {
            return Err(gerr("the graph has no outputs".into()));
        }
        tract_policy(model, spec, BackendKind::Tract.name()).map_err(gerr)
    }

    pub(crate) fn from_tensorflow(
        bytes: &[u8],
        file: &str,
        metadata: &ModelMetadata,
        sensor: &Sensor,
    ) -> Result<Policy, ModelError> {
        let gerr = |m: String| ModelError::Graph {
            file: file.to_string(),
            message: m,
        };
        let mut tf = tract_tensorflow::tensorflow();
        // Only the training graph uses StopGradient; at inference it is the
        // identity, and tract does not know it.
        tf.op_register.insert("StopGradient", |_, _| {
            Ok(Box::new(
                tract_tensorflow::tract_hir::ops::identity::Identity,
            ))
        });
        let graph = precheck_tensorflow(&tf, bytes, file)?;
        let mut model = tf
            .model_for_proto_model(&graph)
            .map_err(|e| gerr(format!("{e:#}")))?;
        drop(graph);
        let agent = match metadata.training_algorithm {
            TrainingAlgorithm::ClippedPpo => "main",
            TrainingAlgorithm::Sac => "policy",
        };
        let s = sensor.as_str();
        let input_name = format!("main_level/agent/{agent}/online/network_0/{s}/{s}");
        let input_name = if model.node_by_name(&input_name).is_ok() {
            input_name
        } else {
            // Some exports name the sensor input differently; take the one
            // placeholder under network_0 if there is exactly one.
            let cands: Vec<String> = model
                .nodes()
                .iter()
                .filter(|n| n.op_is::<tract_tensorflow::tract_hir::ops::source::Source>())
                .filter(|n| n.name.contains("/online/network_0/"))
                .map(|n| n.name.clone())
                .collect();
            if cands.len() != 1 {
                return Err(ModelError::Input {
                    file: file.into(),
                    message: format!("node \"{input_name}\" is not in the graph (placeholders under network_0: {cands:?})"),
                });
            }
            cands[0].clone()
        };
        let output_name = {
            let want = format!("main_level/agent/{agent}/online/network_1/ppo_head_0/policy");
            if model.node_by_name(&want).is_ok() {
                want
            } else {
                let cands: Vec<String> = model
                    .nodes()
                    .iter()
                    .filter(|n| {
                        n.name.contains("/online/network_1/") && n.name.ends_with("/policy")
                    })
                    .map(|n| n.name.clone())
                    .collect();
                if cands.len() != 1 {
                    return Err(gerr(format!(
                        "output \"{want}\" is not in the graph (candidates: {cands:?})"
                    )));
                }
                cands[0].clone()
            }
        };
        let channels = if *sensor == Sensor::StereoCameras {
            2
        } else {
            1
        };
        let spec = InputSpec {
            layout: Layout::Nhwc,
            width: 160,
            height: 120,
            channels,
            scale: 1.0,
        };
        model = model
            .with_input_names([input_name.as_str()])
            .and_then(|m| m.with_outputs_by_name([output_name.as_str()]))
            .map_err(|e| gerr(format!("{e:#}")))?;
        tract_policy(model, spec, "tract-tensorflow").map_err(gerr)
    }

    /// Run once on zeros and record the output length.
    pub(crate) fn warm_up(&mut self) -> Result<usize, PolicyError> {
        let input = vec![0f32; self.spec.len()];
        let n = self.run_raw(&input, None)?;
        self.output_len = n;
        let mut out = vec![0f32; n];
        self.infer(&input, &mut out)?;
        Ok(n)
    }

    pub fn input_spec(&self) -> &InputSpec {
        &self.spec
    }

    pub fn output_len(&self) -> usize {
        self.output_len
    }

    /// "onnxruntime", "tract" or "tract-tensorflow".
    pub fn backend_name(&self) -> &'static str {
        self.backend
    }

    /// Run the network. `input` has `input_spec().len()` values in the
    /// model's layout; `output` receives `output_len()` values.
    pub fn infer(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), PolicyError> {
        if output.len() != self.output_len {
            return Err(PolicyError::OutputSize {
                got: output.len(),
                want: self.output_len,
            });
        }
        self.run_raw(input, Some(output))?;
        // A handful of floats, no allocation: free next to the inference.
        match output.iter().position(|x| !x.is_finite()) {
            None => Ok(()),
            Some(index) => Err(PolicyError::NonFinite {
                index,
                value: output[index],
            }),
        }
    }

    fn run_raw(&mut self, input: &[f32], output: Option<&mut [f32]>) -> Result<usize, PolicyError> {
        if input.len() != self.spec.len() {
            return Err(PolicyError::InputSize {
                got: input.len(),
                want: self.spec.len(),
            });
        }
        let fail = |e: &dyn std::fmt::Display| PolicyError::Run(e.to_string());
        match &mut self.runner {
            Runner::Ort(r) => {
                r.input.extract_tensor_mut().1.copy_from_slice(input);
                let outputs = match &r.run_options {
                    Some(ro) => r.session.run_with_options(ort::inputs![&r.input], ro),
                    None => r.session.run(ort::inputs![&r.input]),
                }
                .map_err(|e| fail(&e))?;
                let (_, data) = outputs[0]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| fail(&e))?;
                copy_out(data, output)
            }
            Runner::Tract(r) => {
                let t = tract_tensorflow::prelude::Tensor::from_shape(&r.shape, input)
                    .map_err(|e| fail(&e))?;
                let out = r.state.run(tvec![t.into()]).map_err(|e| fail(&e))?;
                let view = out[0].to_plain_array_view::<f32>().map_err(|e| fail(&e))?;
                match view.as_slice() {
                    Some(data) => copy_out(data, output),
                    None => {
                        let data: Vec<f32> = view.iter().copied().collect();
                        copy_out(&data, output)
                    }
                }
            }
        }
    }
}

/// Fix the input to `spec`'s shape, optimise, and make the run state: the
/// tail shared by ONNX and TensorFlow graphs on tract. Errors are the
/// message only; the caller names the file.
fn tract_policy(
    mut model: InferenceModel,
    spec: InputSpec,
    backend: &'static str,
) -> Result<Policy, String> {
    let shape = spec.shape();
    model
        .set_input_fact(0, f32::fact(shape).into())
        .map_err(|e| format!("{e:#}"))?;
    let plan = model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| format!("{e:#}"))?;
    let state = TypedSimpleState::new(&plan).map_err(|e| format!("{e:#}"))?;
    Ok(Policy {
        runner: Runner::Tract(TractRunner {
            state,
            shape,
            _plan: plan,
        }),
        spec,
        output_len: 0,
        backend,
    })
}

/// The dims of an ONNX graph's one real input (initializers listed as
/// inputs, as old IR versions do, are not inputs); -1 where not fixed.
fn onnx_input_dims(proto: &tract_onnx::pb::ModelProto) -> Result<Vec<i64>, String> {
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value, type_proto};
    let graph = proto.graph.as_ref().ok_or("the model has no graph")?;
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|v| !inits.contains(v.name.as_str()))
        .collect();
    if inputs.len() != 1 {
        return Err(format!(
            "count is {}; a camera model has exactly one input",
            inputs.len()
        ));
    }
    let Some(type_proto::Value::TensorType(t)) =
        inputs[0].r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err("is not a tensor".into());
    };
    let shape = t.shape.as_ref().ok_or("has no declared shape")?;
    Ok(shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(Value::DimValue(v)) => v,
            _ => -1,
        })
        .collect())
}

fn copy_out(data: &[f32], output: Option<&mut [f32]>) -> Result<usize, PolicyError> {
    if let Some(o) = output {
        if o.len() != data.len() {
            return Err(PolicyError::OutputSize {
                got: o.len(),
                want: data.len(),
            });
        }
        o.copy_from_slice(data);
    }
    Ok(data.len())
}
