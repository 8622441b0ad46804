//! Writing ONNX models from Rust: a small graph builder over tract-onnx's
//! generated protobuf types, and the networks our tests and the trainer need
//! (the DeepRacer shallow CNN and a small linear/MLP policy). The output is
//! opset 13, which both tract and ONNX Runtime load.

use crate::metadata::{ModelMetadata, METADATA_FILE};
use crate::preprocess::{InputSpec, Layout};
use prost::Message;
use std::path::Path;
use tract_onnx::pb;

pub const OPSET: i64 = 13;
const IR_VERSION: i64 = 8;
const FLOAT: i32 = 1;
const INT64: i32 = 7;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Invalid(String),
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
}

/// An attribute value for `GraphBuilder::node`.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
}

/// Builds one ONNX graph with a single float input and output.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: pb::GraphProto,
    counter: usize,
}

fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl GraphBuilder {
    pub fn new(name: &str) -> GraphBuilder {
        GraphBuilder {
            graph: pb::GraphProto {
                name: name.into(),
                ..Default::default()
            },
            counter: 0,
        }
    }

    pub fn input(&mut self, name: &str, dims: &[i64]) -> String {
        self.graph.input.push(value_info(name, dims));
        name.to_string()
    }

    pub fn output(&mut self, name: &str, dims: &[i64]) {
        self.graph.output.push(value_info(name, dims));
    }

    /// A float constant. `data.len()` must equal the product of `dims`.
    pub fn init(&mut self, name: &str, dims: &[i64], data: &[f32]) -> Result<String, ExportError> {
        let n: i64 = dims.iter().product();
        if n as usize != data.len() {
            return Err(ExportError::Invalid(format!(
                "initializer {name}: shape {dims:?} needs {n} values, got {}",
                data.len()
            )));
        }
        let mut raw = Vec::with_capacity(data.len() * 4);
        for v in data {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        self.graph.initializer.push(pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: FLOAT,
            raw_data: raw,
            ..Default::default()
        });
        Ok(name.to_string())
    }

    /// An int64 constant (shapes for Reshape).
    pub fn init_i64(&mut self, name: &str, data: &[i64]) -> String {
        let mut raw = Vec::with_capacity(data.len() * 8);
        for v in data {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        self.graph.initializer.push(pb::TensorProto {
            name: name.into(),
            dims: vec![data.len() as i64],
            data_type: INT64,
            raw_data: raw,
            ..Default::default()
        });
        name.to_string()
    }

    /// Add a node; returns its (single) output name. `out` = None picks a fresh name.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        out: Option<&str>,
        attrs: &[(&str, Attr)],
    ) -> String {
        self.counter += 1;
        let out = out
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}_{}", op.to_ascii_lowercase(), self.counter));
        let attribute = attrs
            .iter()
            .map(|(name, a)| {
                use pb::attribute_proto::AttributeType as T;
                let mut p = pb::AttributeProto {
                    name: (*name).into(),
                    ..Default::default()
                };
                match a {
                    Attr::Int(i) => {
                        p.r#type = T::Int as i32;
                        p.i = *i;
                    }
                    Attr::Float(f) => {
                        p.r#type = T::Float as i32;
                        p.f = *f;
                    }
                    Attr::Ints(v) => {
                        p.r#type = T::Ints as i32;
                        p.ints = v.clone();
                    }
                }
                p
            })
            .collect();
        self.graph.node.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: format!("n{}_{op}", self.counter),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        out
    }

    pub fn into_model(self) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "deepracer-rs policy::export".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(self.graph),
            ..Default::default()
        }
    }

    pub fn to_bytes(self) -> Vec<u8> {
        self.into_model().encode_to_vec()
    }
}

/// What the network ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Probabilities (DeepRacer discrete PPO).
    Softmax,
    /// Raw values (DeepRacer continuous PPO exports raw means, clipped later).
    Linear,
    /// Values squashed to [-1, 1].
    Tanh,
}

/// Input and output of an exported policy.
#[derive(Debug, Clone, Copy)]
pub struct NetSpec {
    /// Input size and layout; `scale` is ignored (exports take raw 0-255
    /// and divide by 255 inside, like DeepRacer models).
    pub input: InputSpec,
    pub outputs: usize,
    pub head: Head,
}

/// Weights of the DeepRacer shallow CNN in ONNX conventions: conv kernels
/// `[out, in, kh, kw]`, dense matrices `[in, out]`. The flatten after the last
/// conv is channel-major (NCHW order).
#[derive(Debug, Clone)]
pub struct ShallowWeights {
    pub conv1_w: Vec<f32>,
    pub conv1_b: Vec<f32>,
    pub conv2_w: Vec<f32>,
    pub conv2_b: Vec<f32>,
    pub conv3_w: Vec<f32>,
    pub conv3_b: Vec<f32>,
    pub fc_w: Vec<f32>,
    pub fc_b: Vec<f32>,
    pub head_w: Vec<f32>,
    pub head_b: Vec<f32>,
}

/// Deterministic pseudo-random numbers (SplitMix64): seeded weights without
/// pulling a RNG crate into the car's dependency tree.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn fill(&mut self, n: usize, limit: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * limit).collect()
    }
}

/// Output size of a valid (unpadded) convolution.
fn conv_out(n: usize, k: usize, s: usize) -> Result<usize, ExportError> {
    if n < k {
        return Err(ExportError::Invalid(format!(
            "input of {n} pixels is smaller than the {k}-pixel kernel"
        )));
    }
    Ok((n - k) / s + 1)
}

/// The shallow network's layer sizes for an input spec: (h3, w3) after conv3.
fn shallow_dims(input: &InputSpec) -> Result<(usize, usize), ExportError> {
    let h = conv_out(conv_out(conv_out(input.height, 8, 4)?, 4, 2)?, 3, 1)?;
    let w = conv_out(conv_out(conv_out(input.width, 8, 4)?, 4, 2)?, 3, 1)?;
    Ok((h, w))
}

impl ShallowWeights {
    /// He-uniform random weights, zero biases; a small head so the initial
    /// policy is near uniform.
    pub fn random(spec: &NetSpec, seed: u64) -> Result<ShallowWeights, ExportError> {
        let c = spec.input.channels;
        let (h3, w3) = shallow_dims(&spec.input)?;
        let flat = 64 * h3 * w3;
        let mut r = SplitMix::new(seed);
        let he = |fan_in: usize| (6.0 / fan_in as f32).sqrt();
        Ok(ShallowWeights {
            conv1_w: r.fill(32 * c * 64, he(c * 64)),
            conv1_b: vec![0.0; 32],
            conv2_w: r.fill(64 * 32 * 16, he(32 * 16)),
            conv2_b: vec![0.0; 64],
            conv3_w: r.fill(64 * 64 * 9, he(64 * 9)),
            conv3_b: vec![0.0; 64],
            fc_w: r.fill(flat * 512, he(flat)),
            fc_b: vec![0.0; 512],
            head_w: r.fill(512 * spec.outputs, 0.1 * he(512)),
            head_b: vec![0.0; spec.outputs],
        })
    }
}

/// Divide by 255 and bring the input to NCHW; returns the tensor name.
fn input_stage(g: &mut GraphBuilder, spec: &InputSpec) -> Result<String, ExportError> {
    if spec.channels != 1 && spec.channels != 3 {
        return Err(ExportError::Invalid(
            "input must have 1 or 3 channels".into(),
        ));
    }
    let dims: Vec<i64> = spec.shape().iter().map(|&d| d as i64).collect();
    let x = g.input("camera", &dims);
    let k = g.init("c255", &[], &[255.0])?;
    let x = g.node("Div", &[&x, &k], None, &[]);
    Ok(match spec.layout {
        Layout::Nchw => x,
        Layout::Nhwc => g.node(
            "Transpose",
            &[&x],
            None,
            &[("perm", Attr::Ints(vec![0, 3, 1, 2]))],
        ),
    })
}

fn head_stage(g: &mut GraphBuilder, x: &str, head: Head, outputs: usize) {
    match head {
        Head::Softmax => g.node("Softmax", &[x], Some("policy"), &[("axis", Attr::Int(1))]),
        Head::Tanh => g.node("Tanh", &[x], Some("policy"), &[]),
        Head::Linear => g.node("Identity", &[x], Some("policy"), &[]),
    };
    g.output("policy", &[1, outputs as i64]);
}

fn check_len(name: &str, v: &[f32], n: usize) -> Result<(), ExportError> {
    if v.len() != n {
        return Err(ExportError::Invalid(format!(
            "{name}: expected {n} values, got {}",
            v.len()
        )));
    }
    Ok(())
}

/// name, weights, bias, out channels, in channels, kernel, stride.
type ConvLayer<'a> = (&'a str, &'a [f32], &'a [f32], i64, i64, i64, i64);

/// The DeepRacer shallow CNN: conv 32x8/4, conv 64x4/2, conv 64x3/1 (ReLU,
/// valid), dense 512 (ReLU), head. 22.2 M multiply-adds at 160x120x1.
pub fn shallow_cnn(spec: &NetSpec, w: &ShallowWeights) -> Result<Vec<u8>, ExportError> {
    let c = spec.input.channels;
    let (h3, w3) = shallow_dims(&spec.input)?;
    let flat = 64 * h3 * w3;
    let n = spec.outputs;
    if n == 0 {
        return Err(ExportError::Invalid(
            "a policy needs at least one output".into(),
        ));
    }
    check_len("conv1_w", &w.conv1_w, 32 * c * 64)?;
    check_len("conv1_b", &w.conv1_b, 32)?;
    check_len("conv2_w", &w.conv2_w, 64 * 32 * 16)?;
    check_len("conv2_b", &w.conv2_b, 64)?;
    check_len("conv3_w", &w.conv3_w, 64 * 64 * 9)?;
    check_len("conv3_b", &w.conv3_b, 64)?;
    check_len("fc_w", &w.fc_w, flat * 512)?;
    check_len("fc_b", &w.fc_b, 512)?;
    check_len("head_w", &w.head_w, 512 * n)?;
    check_len("head_b", &w.head_b, n)?;

    let mut g = GraphBuilder::new("deepracer_shallow");
    let mut x = input_stage(&mut g, &spec.input)?;
    let convs: [ConvLayer; 3] = [
        ("conv1", &w.conv1_w, &w.conv1_b, 32, c as i64, 8, 4),
        ("conv2", &w.conv2_w, &w.conv2_b, 64, 32, 4, 2),
        ("conv3", &w.conv3_w, &w.conv3_b, 64, 64, 3, 1),
    ];
    for (name, wt, b, out_c, in_c, k, s) in convs {
        let wn = g.init(&format!("{name}.weight"), &[out_c, in_c, k, k], wt)?;
        let bn = g.init(&format!("{name}.bias"), &[out_c], b)?;
        let y = g.node(
            "Conv",
            &[&x, &wn, &bn],
            None,
            &[
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![s, s])),
            ],
        );
        x = g.node("Relu", &[&y], None, &[]);
    }
    let x = g.node("Flatten", &[&x], None, &[("axis", Attr::Int(1))]);
    let fw = g.init("fc.weight", &[flat as i64, 512], &w.fc_w)?;
    let fb = g.init("fc.bias", &[512], &w.fc_b)?;
    let x = g.node("Gemm", &[&x, &fw, &fb], None, &[]);
    let x = g.node("Relu", &[&x], None, &[]);
    let hw = g.init("head.weight", &[512, n as i64], &w.head_w)?;
    let hb = g.init("head.bias", &[n as i64], &w.head_b)?;
    let x = g.node("Gemm", &[&x, &hw, &hb], None, &[]);
    head_stage(&mut g, &x, spec.head, n);
    Ok(g.to_bytes())
}

/// A small, fast policy: average-pool the image by `pool` (e.g. 8: 160x120
/// -> 20x15), then a hidden ReLU layer of `hidden` units (0 = purely linear),
/// then the head. Weights: `w1 [pooled, hidden]`, `b1`, `w2 [hidden, outputs]`, `b2`.
#[derive(Debug, Clone)]
pub struct LinearWeights {
    pub pool: usize,
    pub hidden: usize,
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

impl LinearWeights {
    pub fn pooled_len(spec: &NetSpec, pool: usize) -> usize {
        (spec.input.height / pool) * (spec.input.width / pool) * spec.input.channels
    }

    pub fn random(spec: &NetSpec, pool: usize, hidden: usize, seed: u64) -> LinearWeights {
        let p = Self::pooled_len(spec, pool);
        let mut r = SplitMix::new(seed);
        let (w1, b1, first_out) = if hidden > 0 {
            (
                r.fill(p * hidden, (6.0 / p as f32).sqrt()),
                vec![0.0; hidden],
                hidden,
            )
        } else {
            (Vec::new(), Vec::new(), p)
        };
        LinearWeights {
            pool,
            hidden,
            w1,
            b1,
            w2: r.fill(first_out * spec.outputs, (6.0 / first_out as f32).sqrt()),
            b2: vec![0.0; spec.outputs],
        }
    }
}

pub fn linear_policy(spec: &NetSpec, w: &LinearWeights) -> Result<Vec<u8>, ExportError> {
    let n = spec.outputs;
    if w.pool == 0 || spec.input.height < w.pool || spec.input.width < w.pool || n == 0 {
        return Err(ExportError::Invalid(
            "pool must be between 1 and the image size, outputs > 0".into(),
        ));
    }
    let p = LinearWeights::pooled_len(spec, w.pool);
    let mut g = GraphBuilder::new("linear_policy");
    let x = input_stage(&mut g, &spec.input)?;
    let k = w.pool as i64;
    let x = g.node(
        "AveragePool",
        &[&x],
        None,
        &[
            ("kernel_shape", Attr::Ints(vec![k, k])),
            ("strides", Attr::Ints(vec![k, k])),
        ],
    );
    let mut x = g.node("Flatten", &[&x], None, &[("axis", Attr::Int(1))]);
    let mut width = p;
    if w.hidden > 0 {
        check_len("w1", &w.w1, p * w.hidden)?;
        check_len("b1", &w.b1, w.hidden)?;
        let a = g.init("l1.weight", &[p as i64, w.hidden as i64], &w.w1)?;
        let b = g.init("l1.bias", &[w.hidden as i64], &w.b1)?;
        let y = g.node("Gemm", &[&x, &a, &b], None, &[]);
        x = g.node("Relu", &[&y], None, &[]);
        width = w.hidden;
    }
    check_len("w2", &w.w2, width * n)?;
    check_len("b2", &w.b2, n)?;
    let a = g.init("l2.weight", &[width as i64, n as i64], &w.w2)?;
    let b = g.init("l2.bias", &[n as i64], &w.b2)?;
    let x = g.node("Gemm", &[&x, &a, &b], None, &[]);
    head_stage(&mut g, &x, spec.head, n);
    Ok(g.to_bytes())
}

/// Rename a single-input, single-output model's graph input and output, and
/// every node edge that refers to them. Exporters such as burn-onnx pick
/// their own names; DeepRacer tools look for the stock ones.
pub fn rename_io(onnx: &[u8], input: &str, output: &str) -> Result<Vec<u8>, ExportError> {
    let mut model = pb::ModelProto::decode(onnx)
        .map_err(|e| ExportError::Invalid(format!("not an ONNX model: {e}")))?;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| ExportError::Invalid("ONNX model has no graph".into()))?;
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<usize> = (0..graph.input.len())
        .filter(|&i| !inits.contains(graph.input[i].name.as_str()))
        .collect();
    if inputs.len() != 1 || graph.output.len() != 1 {
        return Err(ExportError::Invalid(format!(
            "expected one input and one output, found {} and {}",
            inputs.len(),
            graph.output.len()
        )));
    }
    let old_in = std::mem::replace(&mut graph.input[inputs[0]].name, input.to_string());
    let old_out = std::mem::replace(&mut graph.output[0].name, output.to_string());
    for node in &mut graph.node {
        for name in node.input.iter_mut().chain(node.output.iter_mut()) {
            if *name == old_in {
                *name = input.to_string();
            } else if *name == old_out {
                *name = output.to_string();
            }
        }
    }
    for v in &mut graph.value_info {
        if v.name == old_out {
            v.name = output.to_string();
        }
    }
    Ok(model.encode_to_vec())
}

/// Write `model.onnx` and `model_metadata.json` into `dir` (created if
/// needed), each atomically.
pub fn write_model_dir(
    dir: &Path,
    onnx: &[u8],
    metadata: &ModelMetadata,
) -> Result<(), ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Io {
        file: dir.display().to_string(),
        source,
    })?;
    let p = dir.join("model.onnx");
    safe_io::atomic::write(&p, onnx).map_err(|source| ExportError::Io {
        file: p.display().to_string(),
        source,
    })?;
    metadata.save(&dir.join(METADATA_FILE))?;
    Ok(())
}
