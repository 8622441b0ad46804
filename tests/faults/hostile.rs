//! Hostile model packages, built in the test (nothing large is committed):
//! ONNX graphs through the crate's small ONNX writer, metadata, and a
//! `.tar.gz` gzip bomb with a hand-made deflate stream.

use crate::{node, onnx_model, Init, Node, ANGLES};

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// `model_metadata.json` for the [`ANGLES`] action space at `speed` m/s.
pub fn metadata(speed: f32) -> Vec<u8> {
    let actions: Vec<serde_json::Value> = ANGLES
        .iter()
        .enumerate()
        .map(|(i, a)| serde_json::json!({"index": i, "steering_angle": a, "speed": speed}))
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "action_space": actions,
        "action_space_type": "discrete",
        "sensor": ["FRONT_FACING_CAMERA"],
        "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
        "training_algorithm": "clipped_ppo",
        "version": "5",
    }))
    .unwrap()
}

/// `x` [1,C,H,W] -> sum over H,W -> [1,C] x `w_head` [C,7] -> softmax.
fn head(nodes: &mut Vec<Node>, inits: &mut Vec<Init>, x: &'static str, c: i64) {
    let mut sum = node("ReduceSum", &[x, "hw_axes"], &["pooled"]);
    sum.int_attrs.push(("keepdims", 0));
    nodes.push(sum);
    nodes.push(node("MatMul", &["pooled", "w_head"], &["logits"]));
    let mut sm = node("Softmax", &["logits"], &["policy"]);
    sm.int_attrs.push(("axis", 1));
    nodes.push(sm);
    inits.push(Init::I64("hw_axes", vec![2], vec![2, 3]));
    let n = ANGLES.len() as i64;
    inits.push(Init::F32(
        "w_head",
        vec![c, n],
        (0..c * n).map(|i| ((i % 7) as f32 - 3.0) * 1e-9).collect(),
    ));
}

fn finish(nodes: Vec<Node>, inits: Vec<Init>, input: &[i64]) -> Vec<u8> {
    onnx_model(
        &nodes,
        &inits,
        ("input", input),
        ("policy", &[1, ANGLES.len() as i64]),
    )
}

/// A valid model, within every cap, whose one inference takes seconds:
/// `layers` 3x3 convolutions of `channels` channels over the full 160x120
/// camera frame (NCHW [1,1,120,160]).
pub fn slow_model(channels: i64, layers: usize) -> Vec<u8> {
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut x: &'static str = "input";
    let mut cin = 1i64;
    for l in 0..layers {
        let w = leak(format!("w{l}"));
        let y = leak(format!("c{l}"));
        let r = leak(format!("r{l}"));
        let n = (channels * cin * 9) as usize;
        // Small weights: the values stay finite however deep the stack.
        inits.push(Init::F32(
            w,
            vec![channels, cin, 3, 3],
            (0..n)
                .map(|i| 1.0 / (cin as f32 * 9.0) * if i % 2 == 0 { 1.0 } else { 0.5 })
                .collect(),
        ));
        nodes.push(node("Conv", &[x, w], &[y]));
        nodes.push(node("Relu", &[y], &[r]));
        x = r;
        cin = channels;
    }
    head(&mut nodes, &mut inits, x, cin);
    finish(nodes, inits, &[1, 1, 120, 160])
}

/// A model declaring a 1x1x65535x65535 input.
pub fn huge_input_model() -> Vec<u8> {
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    head(&mut nodes, &mut inits, "input", 1);
    finish(nodes, inits, &[1, 1, 65535, 65535])
}

/// A chain of `n` Relu nodes.
pub fn chain_model(n: usize) -> Vec<u8> {
    let mut nodes = Vec::with_capacity(n + 3);
    let mut inits = Vec::new();
    let mut x: &'static str = "input";
    for i in 0..n {
        let y = leak(format!("r{i}"));
        nodes.push(node("Relu", &[x], &[y]));
        x = y;
    }
    head(&mut nodes, &mut inits, x, 1);
    finish(nodes, inits, &[1, 1, 120, 160])
}

/// sqrt(-x): -0 on a black frame, NaN on any camera frame with light in it.
pub fn nan_model() -> Vec<u8> {
    let mut nodes = vec![
        node("Neg", &["input"], &["neg"]),
        node("Sqrt", &["neg"], &["root"]),
    ];
    let mut inits = Vec::new();
    head(&mut nodes, &mut inits, "root", 1);
    finish(nodes, inits, &[1, 1, 120, 160])
}

// ---------------------------------------------------------------------------
// tar + gzip by hand.

fn tar_entry(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = width - 1);
        h[at..at + width].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, 0o644);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, 1_700_000_000);
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn crc32(crc: u32, data: impl Iterator<Item = u8>) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !crc;
    for b in data {
        c = t[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, v: u32, len: u32) {
        self.acc |= u64::from(v) << self.n;
        self.n += len;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
    /// A Huffman code, most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        let rev = code.reverse_bits() >> (32 - len);
        self.put(rev, len);
    }
    fn literal(&mut self, b: u8) {
        if b < 144 {
            self.code(0x30 + u32::from(b), 8);
        } else {
            self.code(0x190 + u32::from(b) - 144, 9);
        }
    }
}

/// A `.tar.gz` holding a small valid model, followed by `zeros` bytes of
/// zeros after the tar end marker: about 13 bits on the wire per 258 bytes
/// unpacked (fixed-Huffman deflate, length 258 at distance 1).
pub fn gzip_bomb(zeros: u64) -> Vec<u8> {
    let mut tar = Vec::new();
    tar_entry(&mut tar, "model_metadata.json", &metadata(1.0));
    tar_entry(&mut tar, "model.onnx", &chain_model(1));
    tar.extend_from_slice(&[0u8; 1024]);
    let runs = zeros / 258;
    let total = tar.len() as u64 + runs * 258;
    let mut b = Bits {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // fixed Huffman
    for &x in &tar {
        b.literal(x);
    }
    for _ in 0..runs {
        b.code(0b1100_0101, 8); // length code 285: 258
        b.code(0, 5); // distance code 0: 1
    }
    b.code(0, 7); // end of block
    if b.n > 0 {
        b.out.push(b.acc as u8);
    }
    let crc = crc32(
        0,
        tar.iter()
            .copied()
            .chain(std::iter::repeat_n(0u8, (runs * 258) as usize)),
    );
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    gz.extend_from_slice(&b.out);
    gz.extend_from_slice(&crc.to_le_bytes());
    gz.extend_from_slice(&(total as u32).to_le_bytes());
    gz
}

/// A continuous-action driving model (NHWC [1,120,160,1], as the
/// centre-seeker): steering towards the centroid of the bright pixels in the
/// lower half, clipped to [-1, 1]; speed sin(bright mass / 100) in [-1, 1],
/// 1-2 m/s. The mass changes with every frame, so the throttle on the wire
/// changes on almost every tick while the car drives: a stuck or replaced
/// model shows at once.
pub fn write_jittery_driver(dir: &std::path::Path) {
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
    let mut concat = node("Concat", &["steer", "speed"], &["policy"]);
    concat.int_attrs.push(("axis", 1));
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
        node("Mul", &["centroid", "gain"], &["steer0"]),
        node("Max", &["steer0", "lo"], &["steer1"]),
        node("Min", &["steer1", "hi"], &["steer"]),
        node("Mul", &["den", "freq"], &["phase"]),
        node("Sin", &["phase"], &["speed"]),
        concat,
    ];
    let inits = vec![
        Init::I64("starts", vec![4], vec![0, 60, 0, 0]),
        Init::I64("ends", vec![4], vec![1, 120, 160, 1]),
        Init::F32("thr", vec![1], vec![110.0]),
        Init::I64("axes_hc", vec![2], vec![1, 3]),
        Init::F32("xpos", vec![1, w], xs),
        Init::I64("axis1", vec![1], vec![1]),
        Init::F32("eps", vec![1], vec![1e-3]),
        Init::F32("gain", vec![1], vec![-2.0]),
        Init::F32("lo", vec![1], vec![-1.0]),
        Init::F32("hi", vec![1], vec![1.0]),
        Init::F32("freq", vec![1], vec![0.01]),
    ];
    let bytes = onnx_model(
        &nodes,
        &inits,
        ("input", &[1, 120, 160, 1]),
        ("policy", &[1, 2]),
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("model.onnx"), bytes).unwrap();
    let meta = serde_json::json!({
        "action_space": {"steering_angle": {"low": -30.0, "high": 30.0}, "speed": {"low": 1.0, "high": 2.0}},
        "action_space_type": "continuous",
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
