//! Load-time ONNX graph rewrites that steer ONNX Runtime onto its fast
//! kernels without changing what the model computes.
//!
//! The one rewrite: a one-element constant (`x / 255`, `x * 0.0039`) that
//! meets the camera tensor in Add/Sub/Mul/Div gets the camera tensor's rank
//! (`[]` becomes `[1,1,1,1]`). ONNX Runtime 1.31's CPU kernels broadcast a
//! rank-0 or rank-1 constant over `[1,120,160,1]`, the NHWC one-channel
//! input of every model converted from a DeepRacer TensorFlow graph, one
//! element at a time: 280 us for the division alone, against 11 us for the
//! same constant shaped `[1,1,1,1]` or the same tensor as NCHW (measured
//! with onnxruntime's profiler on this repo's shallow network). Broadcasting
//! a one-element tensor of rank <= r against a rank-r tensor gives the same
//! values and the same rank-r shape, so the rewrite is exact.

use std::collections::{HashMap, HashSet};

use prost::Message;
use tract_onnx::pb;

/// Ops whose output has the rank of their (only) data input.
const UNARY: &[&str] = &[
    "Abs",
    "Cast",
    "Ceil",
    "Clip",
    "Elu",
    "Exp",
    "Floor",
    "HardSigmoid",
    "Identity",
    "LeakyRelu",
    "Log",
    "Neg",
    "Relu",
    "Round",
    "Sigmoid",
    "Sqrt",
    "Tanh",
];

/// Elementwise binary ops with numpy broadcasting.
const BINARY: &[&str] = &["Add", "Sub", "Mul", "Div"];

/// What `widen_scalar_constants` changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Widened {
    /// (node name or op type, constant name, new rank).
    pub(crate) constants: Vec<(String, String, usize)>,
}

/// Returns the rewritten model, or `None` when there is nothing to change
/// or the bytes do not decode (the engine then reports its own error on
/// the original bytes).
pub(crate) fn widen_scalar_constants(onnx: &[u8]) -> Option<(Vec<u8>, Widened)> {
    let mut model = pb::ModelProto::decode(onnx).ok()?;
    // IR < 4 wants every initializer listed as a graph input too; those
    // models predate every DeepRacer converter, so leave them alone.
    if model.ir_version < 4 {
        return None;
    }
    // Before opset 7, Add/Sub/Mul/Div broadcast only with an explicit
    // `broadcast` attribute and a suffix rule that a [1,1,1,1] constant
    // would break.
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)?;
    if opset < 7 {
        return None;
    }
    let graph = model.graph.as_mut()?;

    // One-element constants: initializers and Constant nodes.
    let mut consts: HashMap<String, pb::TensorProto> = HashMap::new();
    for t in &graph.initializer {
        if is_one_element(&t.dims) {
            consts.insert(t.name.clone(), t.clone());
        }
    }
    for n in &graph.node {
        if n.op_type == "Constant" && n.domain.is_empty() && n.output.len() == 1 {
            if let Some(t) = constant_value(n) {
                if is_one_element(&t.dims) {
                    consts.insert(n.output[0].clone(), t);
                }
            }
        }
    }
    let init_names: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();

    // Ranks known for certain: the graph's real inputs, then forward
    // through rank-preserving elementwise ops (nodes are in topological
    // order, as ONNX requires).
    let mut rank: HashMap<String, usize> = HashMap::new();
    for v in &graph.input {
        if init_names.contains(&v.name) {
            continue;
        }
        if let Some(r) = declared_rank(v) {
            rank.insert(v.name.clone(), r);
        }
    }

    let mut added: Vec<pb::TensorProto> = Vec::new();
    let mut added_names: HashSet<String> = HashSet::new();
    let mut widened = Widened::default();
    for node in &mut graph.node {
        if !node.domain.is_empty() || node.output.len() != 1 {
            continue;
        }
        let op = node.op_type.as_str();
        let out_rank = if UNARY.contains(&op) {
            node.input.first().and_then(|i| rank.get(i).copied())
        } else if BINARY.contains(&op) && node.input.len() == 2 {
            let ranks = [
                rank.get(&node.input[0]).copied(),
                rank.get(&node.input[1]).copied(),
            ];
            match ranks {
                [Some(a), Some(b)] => Some(a.max(b)),
                [Some(r), None] | [None, Some(r)] => {
                    let ci = if ranks[0].is_some() { 1 } else { 0 };
                    match consts.get(&node.input[ci]) {
                        Some(c) if c.dims.len() <= r => {
                            if c.dims.len() < r {
                                let name = format!("{}__rank{r}", node.input[ci]);
                                if added_names.insert(name.clone()) {
                                    let mut t = c.clone();
                                    t.name = name.clone();
                                    t.dims = vec![1; r];
                                    added.push(t);
                                }
                                let label = if node.name.is_empty() {
                                    node.op_type.clone()
                                } else {
                                    node.name.clone()
                                };
                                let old = std::mem::replace(&mut node.input[ci], name);
                                widened.constants.push((label, old, r));
                            }
                            Some(r)
                        }
                        // A constant of higher rank, or a tensor of unknown
                        // rank: the output rank is not known here.
                        _ => None,
                    }
                }
                [None, None] => None,
            }
        } else {
            None
        };
        if let Some(r) = out_rank {
            rank.insert(node.output[0].clone(), r);
        }
    }
    if added.is_empty() {
        return None;
    }
    graph.initializer.extend(added);
    Some((model.encode_to_vec(), widened))
}

/// Exactly one element: every dimension 1 (a scalar has none). Not the
/// product of the dims: the file's dims are anything, so the product
/// overflows (a panic in debug builds) or, wrapped or with two negative
/// dims, comes out as 1 for a tensor that is not one element.
fn is_one_element(dims: &[i64]) -> bool {
    dims.iter().all(|&d| d == 1)
}

fn declared_rank(v: &pb::ValueInfoProto) -> Option<usize> {
    let pb::type_proto::Value::TensorType(t) = v.r#type.as_ref()?.value.as_ref()?;
    t.shape.as_ref().map(|s| s.dim.len())
}

/// The tensor a Constant node produces, for the two forms a one-element
/// float constant takes (`value` tensor, `value_float`).
fn constant_value(n: &pb::NodeProto) -> Option<pb::TensorProto> {
    n.attribute.iter().find_map(|a| match a.name.as_str() {
        "value" => a.t.clone(),
        "value_float" => Some(pb::TensorProto {
            data_type: 1,
            float_data: vec![a.f],
            ..Default::default()
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{Attr, GraphBuilder};

    fn model_with(input_dims: &[i64], build: impl FnOnce(&mut GraphBuilder, String)) -> Vec<u8> {
        let mut g = GraphBuilder::new("t");
        let x = g.input("camera", input_dims);
        build(&mut g, x);
        g.to_bytes()
    }

    fn decode(b: &[u8]) -> pb::GraphProto {
        pb::ModelProto::decode(b).unwrap().graph.unwrap()
    }

    fn dims_of(g: &pb::GraphProto, name: &str) -> Vec<i64> {
        g.initializer
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no initializer {name}"))
            .dims
            .clone()
    }

    #[test]
    fn scalar_divisor_of_the_nhwc_camera_gets_rank_four() {
        let bytes = model_with(&[1, 120, 160, 1], |g, x| {
            let k = g.init("c255", &[], &[255.0]).unwrap();
            let y = g.node("Div", &[&x, &k], None, &[]);
            let y = g.node("Relu", &[&y], None, &[]);
            let s = g.init("half", &[1], &[0.5]).unwrap();
            let y = g.node("Mul", &[&s, &y], None, &[]);
            g.node(
                "Transpose",
                &[&y],
                Some("policy"),
                &[("perm", Attr::Ints(vec![0, 3, 1, 2]))],
            );
            g.output("policy", &[1, 1, 120, 160]);
        });
        let (out, w) = widen_scalar_constants(&bytes).expect("rewritten");
        assert_eq!(w.constants.len(), 2, "{w:?}");
        let g = decode(&out);
        assert_eq!(g.node[0].input[1], "c255__rank4");
        assert_eq!(dims_of(&g, "c255__rank4"), vec![1, 1, 1, 1]);
        // The constant operand is first in the Mul: still found.
        assert_eq!(g.node[2].input[0], "half__rank4");
        assert_eq!(dims_of(&g, "half__rank4"), vec![1, 1, 1, 1]);
        // The originals stay for anything else that reads them.
        assert_eq!(dims_of(&g, "c255"), Vec::<i64>::new());
    }

    #[test]
    fn constant_nodes_are_widened_too() {
        let bytes = model_with(&[1, 120, 160, 1], |g, x| {
            let c = g.node(
                "Constant",
                &[],
                None,
                &[("value_float", Attr::Float(255.0))],
            );
            g.node("Div", &[&x, &c], Some("policy"), &[]);
            g.output("policy", &[1, 120, 160, 1]);
        });
        let (out, _) = widen_scalar_constants(&bytes).expect("rewritten");
        let g = decode(&out);
        let name = &g.node[1].input[1];
        assert!(name.ends_with("__rank4"), "{name}");
        let t = g.initializer.iter().find(|t| &t.name == name).unwrap();
        assert_eq!(
            (t.dims.clone(), t.float_data.clone()),
            (vec![1, 1, 1, 1], vec![255.0])
        );
    }

    #[test]
    fn nothing_to_do_leaves_the_model_alone() {
        // Already rank 4, a non-elementwise consumer, and a constant that
        // meets a tensor of unknown rank (after a Conv) are all left as is.
        let bytes = model_with(&[1, 1, 120, 160], |g, x| {
            let k = g.init("k", &[1, 1, 1, 1], &[255.0]).unwrap();
            let y = g.node("Div", &[&x, &k], None, &[]);
            let w = g.init("w", &[1, 1, 1, 1], &[2.0]).unwrap();
            let y = g.node("Conv", &[&y, &w], None, &[]);
            let s = g.init("s", &[], &[3.0]).unwrap();
            g.node("Mul", &[&y, &s], Some("policy"), &[]);
            g.output("policy", &[1, 1, 120, 160]);
        });
        assert_eq!(widen_scalar_constants(&bytes), None);
        assert_eq!(widen_scalar_constants(b"not a model"), None);
    }

    /// Found by the fuzzer (fuzz/regressions/model/initializer-dims-overflow):
    /// an initializer whose dims multiply past i64 panicked in debug builds,
    /// and in release builds a wrapped product, or two negative dims,
    /// passed for a one-element constant.
    #[test]
    fn constants_with_huge_or_negative_dims_are_not_one_element() {
        let bytes = model_with(&[1, 120, 160, 1], |g, x| {
            let k = g.init("k", &[], &[255.0]).unwrap();
            g.node("Div", &[&x, &k], Some("policy"), &[]);
            g.output("policy", &[1, 120, 160, 1]);
        });
        assert!(widen_scalar_constants(&bytes).is_some());
        for dims in [vec![i64::MAX, 2], vec![1 << 32, 1 << 32, 1], vec![-1, -1]] {
            let mut m = pb::ModelProto::decode(bytes.as_slice()).unwrap();
            let g = m.graph.as_mut().unwrap();
            let t = g.initializer.iter_mut().find(|t| t.name == "k").unwrap();
            t.dims = dims.clone();
            assert_eq!(widen_scalar_constants(&m.encode_to_vec()), None, "{dims:?}");
        }
    }

    #[test]
    fn models_older_than_opset_7_are_left_alone() {
        let bytes = model_with(&[1, 120, 160, 1], |g, x| {
            let k = g.init("c255", &[], &[255.0]).unwrap();
            g.node("Div", &[&x, &k], Some("policy"), &[]);
            g.output("policy", &[1, 120, 160, 1]);
        });
        assert!(widen_scalar_constants(&bytes).is_some());
        let mut m = pb::ModelProto::decode(bytes.as_slice()).unwrap();
        m.opset_import[0].version = 6;
        assert_eq!(widen_scalar_constants(&m.encode_to_vec()), None);
    }
}
