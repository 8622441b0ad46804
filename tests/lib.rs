//! End-to-end tests live in `tests/tests/*.rs`; they run the workspace's real
//! binaries (`car-runtime`, `car-sim`) as a racer would and check what a racer
//! would see. This library holds only helpers shared by those tests: finding
//! (building) the binaries, and writing small ONNX models by hand so the tests
//! do not depend on the bundled model or on Python.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub mod faults;

/// The workspace root (this package lives in `<root>/tests`).
/// The checkout's root. Cargo sets `CARGO_MANIFEST_DIR` when it runs a test;
/// it is preferred to the compile-time value, which names whichever checkout
/// built the binary (CI and a developer may share one target dir, and cargo
/// then reuses the other checkout's test binaries).
pub fn workspace_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `../shared` beside the checkout, if present.
pub fn shared_dir() -> Option<PathBuf> {
    let p = workspace_root().join("../shared");
    p.is_dir().then(|| p.canonicalize().unwrap_or(p))
}

/// Path to a freshly built workspace binary (built once per test process
/// with the same profile and target dir as the tests themselves).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // <target>/<profile>/deps/<test exe>
        let exe = std::env::current_exe().expect("test exe path");
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target/<profile>")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        // `cargo test` does not put cargo on PATH for the test process; the
        // compile-time CARGO is the one that built us.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").into());
        // The same package selection as the test command's own
        // `cargo test --workspace --exclude trainer`, so that cargo resolves
        // the same features and finds the binaries it built for that run
        // (car-runtime's and sim's integration tests make cargo build them)
        // already fresh. A narrower `cargo build -p car-runtime` resolves
        // other features and builds the whole dependency tree a second time.
        let mut cmd = std::process::Command::new(cargo);
        cmd.current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", &target_dir)
            .args([
                "test",
                "--no-run",
                "--quiet",
                "--workspace",
                "--exclude",
                "trainer",
            ]);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("running cargo build for the binaries");
        assert!(st.success(), "cargo build of the binaries failed");
        profile_dir
    });
    let p = dir.join(name);
    assert!(p.is_file(), "{} was not built", p.display());
    p
}

pub fn car_runtime() -> PathBuf {
    binary("car-runtime")
}

// ---------------------------------------------------------------------------
// A minimal ONNX (protobuf) writer: enough for small test graphs.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn field_varint(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 0);
    varint(out, v);
}

fn field_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A float tensor (`dims`, row-major values) or an int64 tensor.
pub enum Init {
    F32(&'static str, Vec<i64>, Vec<f32>),
    I64(&'static str, Vec<i64>, Vec<i64>),
}

/// One graph node: op type, inputs, outputs, integer attributes.
pub struct Node {
    pub op: &'static str,
    pub inputs: Vec<&'static str>,
    pub outputs: Vec<&'static str>,
    pub int_attrs: Vec<(&'static str, i64)>,
}

pub fn node(op: &'static str, inputs: &[&'static str], outputs: &[&'static str]) -> Node {
    Node {
        op,
        inputs: inputs.to_vec(),
        outputs: outputs.to_vec(),
        int_attrs: Vec::new(),
    }
}

fn tensor(init: &Init) -> Vec<u8> {
    let mut t = Vec::new();
    let (name, dims) = match init {
        Init::F32(n, d, _) | Init::I64(n, d, _) => (n, d),
    };
    for d in dims {
        field_varint(&mut t, 1, *d as u64);
    }
    match init {
        Init::F32(_, _, v) => {
            field_varint(&mut t, 2, 1);
            let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            field_bytes(&mut t, 8, name.as_bytes());
            field_bytes(&mut t, 9, &raw);
        }
        Init::I64(_, _, v) => {
            field_varint(&mut t, 2, 7);
            let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            field_bytes(&mut t, 8, name.as_bytes());
            field_bytes(&mut t, 9, &raw);
        }
    }
    t
}

fn value_info(name: &str, dims: &[i64]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        field_varint(&mut dim, 1, *d as u64);
        field_bytes(&mut shape, 1, &dim);
    }
    let mut tt = Vec::new();
    field_varint(&mut tt, 1, 1); // FLOAT
    field_bytes(&mut tt, 2, &shape);
    let mut ty = Vec::new();
    field_bytes(&mut ty, 1, &tt);
    let mut vi = Vec::new();
    field_bytes(&mut vi, 1, name.as_bytes());
    field_bytes(&mut vi, 2, &ty);
    vi
}

/// Serialise an opset-13 ONNX model with one float input and one float output.
pub fn onnx_model(
    nodes: &[Node],
    inits: &[Init],
    input: (&str, &[i64]),
    output: (&str, &[i64]),
) -> Vec<u8> {
    let mut g = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut nb = Vec::new();
        for inp in &n.inputs {
            field_bytes(&mut nb, 1, inp.as_bytes());
        }
        for o in &n.outputs {
            field_bytes(&mut nb, 2, o.as_bytes());
        }
        field_bytes(&mut nb, 3, format!("n{i}").as_bytes());
        field_bytes(&mut nb, 4, n.op.as_bytes());
        for (name, v) in &n.int_attrs {
            let mut a = Vec::new();
            field_bytes(&mut a, 1, name.as_bytes());
            field_varint(&mut a, 3, *v as u64);
            field_varint(&mut a, 20, 2); // INT
            field_bytes(&mut nb, 5, &a);
        }
        field_bytes(&mut g, 1, &nb);
    }
    field_bytes(&mut g, 2, b"test_graph");
    for init in inits {
        field_bytes(&mut g, 5, &tensor(init));
    }
    field_bytes(&mut g, 11, &value_info(input.0, input.1));
    field_bytes(&mut g, 12, &value_info(output.0, output.1));
    let mut m = Vec::new();
    field_varint(&mut m, 1, 8); // ir_version
    field_bytes(&mut m, 2, b"e2e-tests");
    field_bytes(&mut m, 7, &g);
    let mut op = Vec::new();
    field_bytes(&mut op, 1, b"");
    field_varint(&mut op, 2, 13);
    field_bytes(&mut m, 8, &op);
    m
}

/// Steering angles of the test controller's discrete action space.
pub const ANGLES: [f32; 7] = [-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0];

/// A centre-seeking controller as an ONNX graph (DeepRacer input contract:
/// NHWC [1,120,160,1], raw 0-255): it steers towards the centroid of the
/// bright pixels (track border lines) in the lower half of the image and
/// outputs softmax scores over [`ANGLES`] at `speed` m/s. Not a trained
/// network: a test fixture that really drives the simulated car.
pub fn write_centre_seeking_model(dir: &Path, speed: f32) {
    let w = 160i64;
    let xs: Vec<f32> = (0..w)
        .map(|j| (j as f32 - (w as f32 - 1.0) / 2.0) / ((w as f32 - 1.0) / 2.0))
        .collect();
    let mut reduce_hc = node("ReduceSum", &["bright", "axes_hc"], &["mass"]);
    reduce_hc.int_attrs.push(("keepdims", 0));
    let mut sum_num = node("ReduceSum", &["moment", "axis1"], &["num"]);
    sum_num.int_attrs.push(("keepdims", 1));
    let mut sum_den = node("ReduceSum", &["mass", "axis1"], &["den0"]);
    sum_den.int_attrs.push(("keepdims", 1));
    let mut softmax = node("Softmax", &["logits"], &["policy"]);
    softmax.int_attrs.push(("axis", 1));
    let nodes = vec![
        node("Slice", &["input", "starts", "ends"], &["band"]),
        node("Sub", &["band", "thr"], &["shifted"]),
        node("Relu", &["shifted"], &["bright"]),
        reduce_hc,
        node("Mul", &["mass", "xpos"], &["moment"]),
        sum_num,
        sum_den,
        node("Add", &["den0", "eps"], &["den"]),
        node("Div", &["num", "den"], &["centroid"]),
        node("Mul", &["centroid", "gain"], &["target0"]),
        node("Max", &["target0", "lo"], &["target1"]),
        node("Min", &["target1", "hi"], &["target"]),
        node("Sub", &["target", "angles"], &["diff"]),
        node("Mul", &["diff", "diff"], &["sq"]),
        node("Mul", &["sq", "sharp"], &["logits"]),
        softmax,
    ];
    let inits = vec![
        Init::I64("starts", vec![4], vec![0, 60, 0, 0]),
        Init::I64("ends", vec![4], vec![1, 120, 160, 1]),
        Init::F32("thr", vec![1], vec![110.0]),
        Init::I64("axes_hc", vec![2], vec![1, 3]),
        Init::F32("xpos", vec![1, w], xs),
        Init::I64("axis1", vec![1], vec![1]),
        Init::F32("eps", vec![1], vec![1e-3]),
        Init::F32("gain", vec![1], vec![-60.0]),
        Init::F32("lo", vec![1], vec![-30.0]),
        Init::F32("hi", vec![1], vec![30.0]),
        Init::F32("angles", vec![1, ANGLES.len() as i64], ANGLES.to_vec()),
        Init::F32("sharp", vec![1], vec![-0.02]),
    ];
    let bytes = onnx_model(
        &nodes,
        &inits,
        ("input", &[1, 120, 160, 1]),
        ("policy", &[1, ANGLES.len() as i64]),
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("model.onnx"), bytes).unwrap();
    let actions: Vec<serde_json::Value> = ANGLES
        .iter()
        .enumerate()
        .map(|(i, a)| serde_json::json!({"index": i, "steering_angle": a, "speed": speed}))
        .collect();
    let meta = serde_json::json!({
        "action_space": actions,
        "action_space_type": "discrete",
        "sensor": ["FRONT_FACING_CAMERA"],
        "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
        "training_algorithm": "clipped_ppo",
        "version": "5",
    });
    std::fs::write(
        dir.join("model_metadata.json"),
        serde_json::to_string_pretty(&meta).unwrap(),
    )
    .unwrap();
}
