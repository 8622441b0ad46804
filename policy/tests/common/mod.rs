//! Helpers shared by the integration tests: models written by our exporter.
#![allow(dead_code)]

use policy::export::{self, Head, LinearWeights, NetSpec, ShallowWeights};
use policy::metadata::{ActionSpace, DiscreteAction, ModelMetadata, Range};
use policy::preprocess::{InputSpec, Layout};
use std::path::{Path, PathBuf};

/// This crate's folder. Cargo sets `CARGO_MANIFEST_DIR` when it runs a test;
/// it is preferred to the compile-time value, which names whichever checkout
/// built the binary (checkouts may share one target dir, and cargo then
/// reuses the other checkout's test binaries).
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

pub fn discrete(n: usize) -> ActionSpace {
    ActionSpace::Discrete(
        (0..n)
            .map(|i| DiscreteAction {
                steering_angle: -30.0 + 60.0 * i as f64 / (n.max(2) - 1) as f64,
                speed: 1.0 + (i % 2) as f64,
            })
            .collect(),
    )
}

pub fn continuous() -> ActionSpace {
    ActionSpace::Continuous {
        steering_angle: Range {
            low: -30.0,
            high: 30.0,
        },
        speed: Range {
            low: 0.5,
            high: 2.0,
        },
    }
}

pub fn spec(layout: Layout, outputs: usize, head: Head) -> NetSpec {
    NetSpec {
        input: InputSpec {
            layout,
            ..InputSpec::deepracer()
        },
        outputs,
        head,
    }
}

/// Shallow CNN weights laid out for NHWC and NCHW are the same (ONNX conv
/// weights are always [out, in, kh, kw]), so both layouts compute the same
/// function of the image.
pub fn shallow_dir(dir: &Path, layout: Layout, space: ActionSpace, seed: u64) -> PathBuf {
    let head = if matches!(space, ActionSpace::Discrete(_)) {
        Head::Softmax
    } else {
        Head::Linear
    };
    let s = spec(layout, space.output_len(), head);
    let w = ShallowWeights::random(&s, seed).unwrap();
    let bytes = export::shallow_cnn(&s, &w).unwrap();
    export::write_model_dir(dir, &bytes, &ModelMetadata::new(space)).unwrap();
    dir.to_path_buf()
}

pub fn linear_dir(dir: &Path, layout: Layout, space: ActionSpace, seed: u64) -> PathBuf {
    let head = if matches!(space, ActionSpace::Discrete(_)) {
        Head::Softmax
    } else {
        Head::Tanh
    };
    let s = spec(layout, space.output_len(), head);
    let w = LinearWeights::random(&s, 8, 16, seed);
    let bytes = export::linear_policy(&s, &w).unwrap();
    export::write_model_dir(dir, &bytes, &ModelMetadata::new(space)).unwrap();
    dir.to_path_buf()
}

/// A deterministic 160x120 grey image with structure.
pub fn image_160x120() -> Vec<f32> {
    (0..120 * 160usize)
        .map(|i| {
            let (y, x) = (i / 160, i % 160);
            (((x * 7 + y * 3) % 256) as f32
                + if (x as i32 - 80).abs() < y as i32 / 2 {
                    60.0
                } else {
                    0.0
                })
            .min(255.0)
        })
        .collect()
}

/// Tar+gzip the given (name, bytes) entries, names written raw so tests can
/// build hostile archives the tar crate would refuse to write.
pub fn tar_gz(path: &Path, entries: &[(&str, &[u8])]) {
    let f = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let g = h.as_gnu_mut().unwrap();
            g.name[..name.len()].copy_from_slice(name.as_bytes());
        }
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}
