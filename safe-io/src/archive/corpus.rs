//! A corpus of hostile (and a few good) model archives, built on the fly,
//! for tests of every caller of [`super::read_model_archive`]: the CLI and
//! the web must give the same answer for each. Behind the `test-corpus`
//! feature so it never ships in the daemon.
//!
//! Tar headers are written by hand rather than with `tar::Builder`, which
//! refuses to write the `..`, absolute and link entries we need.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Metadata that `policy`'s parser accepts: three discrete actions.
pub const GOOD_META: &[u8] = br#"{"action_space":[{"steering_angle":-30,"speed":1},{"steering_angle":0,"speed":1},{"steering_angle":30,"speed":1}],"sensor":["FRONT_FACING_CAMERA"],"neural_network":"DEEP_CONVOLUTIONAL_NETWORK_SHALLOW","version":"3"}"#;
/// Stands in for a graph: the archive reader never parses it.
pub const GRAPH: &[u8] = b"not really a graph, but the archive reader does not look";

/// One archive entry: name, contents, tar type flag (`b'0'` file,
/// `b'2'` symlink, `b'5'` folder, ...).
pub struct Raw<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
    pub kind: u8,
}

/// A regular file entry.
pub fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        data,
        kind: b'0',
    }
}

fn header(name: &str, size: u64, kind: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    assert!(name.len() <= 100, "corpus names fit a plain ustar header");
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    if matches!(kind, b'1' | b'2') {
        h[157..168].copy_from_slice(b"/etc/passwd");
    }
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// The uncompressed tar stream for `entries`, with the end marker.
pub fn tar(entries: &[Raw]) -> Vec<u8> {
    let mut t = Vec::new();
    for e in entries {
        t.extend_from_slice(&header(e.name, e.data.len() as u64, e.kind));
        t.extend_from_slice(e.data);
        t.resize(t.len().div_ceil(512) * 512, 0);
    }
    t.resize(t.len() + 1024, 0);
    t
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

pub fn tar_gz(entries: &[Raw]) -> Vec<u8> {
    gzip(&tar(entries))
}

/// One archive of the corpus and the answer every reader must give.
pub struct Case {
    pub name: &'static str,
    pub path: PathBuf,
    pub accept: bool,
}

/// Write the corpus into `dir`. Cheap: a few MB in all.
pub fn write_corpus(dir: &Path) -> Vec<Case> {
    let good = tar_gz(&[
        file("model_metadata.json", GOOD_META),
        file("model.onnx", GRAPH),
    ]);
    let mut cases: Vec<(&'static str, Vec<u8>, bool)> = vec![
        ("good-flat", good.clone(), true),
        (
            "good-console-export",
            tar_gz(&[
                file("agent/model.pb", GRAPH),
                file("model_metadata.json", GOOD_META),
                file("model/checkpoint", b"model_checkpoint_path: \"x\""),
            ]),
            true,
        ),
        (
            "good-folder-prefix",
            tar_gz(&[
                Raw {
                    name: "export/",
                    data: b"",
                    kind: b'5',
                },
                file("export/model.onnx", GRAPH),
                file("export/model_metadata.json", GOOD_META),
                file("export/notes.txt", b"hi"),
            ]),
            true,
        ),
        (
            "good-dot-slash",
            tar_gz(&[
                file("./model_metadata.json", GOOD_META),
                file("./agent/model.onnx", GRAPH),
            ]),
            true,
        ),
        (
            // `git archive` puts a pax global header first.
            "good-pax-global-header",
            tar_gz(&[
                Raw {
                    name: "pax_global_header",
                    data: b"52 comment=0000000000000000000000000000000000000000\n",
                    kind: b'g',
                },
                file("model_metadata.json", GOOD_META),
                file("model.onnx", GRAPH),
            ]),
            true,
        ),
        (
            // A deeper second metadata (e.g. a backup) does not make it ambiguous.
            "good-shallowest-wins",
            tar_gz(&[
                file("model_metadata.json", GOOD_META),
                file("old/model_metadata.json", b"{}"),
                file("model.onnx", GRAPH),
            ]),
            true,
        ),
    ];
    // Corruptions of the good archive: the gzip trailer is CRC32 then ISIZE.
    let n = good.len();
    let mut bad_crc = good.clone();
    bad_crc[n - 8] ^= 0xff;
    let mut bad_isize = good.clone();
    bad_isize[n - 2] ^= 0x01;
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"#!/bin/sh\nrm -rf /\n");
    cases.extend([
        ("bad-crc32", bad_crc, false),
        ("bad-isize", bad_isize, false),
        ("truncated-trailer", good[..n - 4].to_vec(), false),
        ("truncated-middle", good[..n / 2].to_vec(), false),
        ("trailing-garbage", trailing, false),
        ("empty-file", Vec::new(), false),
        ("not-gzip", b"PK\x03\x04 this is a zip".to_vec(), false),
        ("gzip-not-tar", gzip(&[0x55u8; 4096]), false),
        ("empty-tar", tar_gz(&[]), false),
        ("no-metadata", tar_gz(&[file("model.onnx", GRAPH)]), false),
        (
            "no-graph",
            tar_gz(&[file("model_metadata.json", GOOD_META)]),
            false,
        ),
        (
            "traversal",
            tar_gz(&[
                file("model_metadata.json", GOOD_META),
                file("model.onnx", GRAPH),
                file("../../etc/evil", b"x"),
            ]),
            false,
        ),
        (
            "traversal-inside",
            tar_gz(&[
                file("model_metadata.json", GOOD_META),
                file("agent/../../model.onnx", GRAPH),
            ]),
            false,
        ),
        (
            "absolute",
            tar_gz(&[
                file("/tmp/model_metadata.json", GOOD_META),
                file("model.onnx", GRAPH),
            ]),
            false,
        ),
        (
            "symlink-model",
            tar_gz(&[
                file("model_metadata.json", GOOD_META),
                Raw {
                    name: "model.onnx",
                    data: b"",
                    kind: b'2',
                },
            ]),
            false,
        ),
        (
            // Old CLI skipped links it did not want; an extractor would not.
            "symlink-other",
            tar_gz(&[
                file("model_metadata.json", GOOD_META),
                file("model.onnx", GRAPH),
                Raw {
                    name: "passwd",
                    data: b"",
                    kind: b'2',
                },
            ]),
            false,
        ),
        (
            "hardlink",
            tar_gz(&[
                file("model_metadata.json", GOOD_META),
                file("model.onnx", GRAPH),
                Raw {
                    name: "shadow",
                    data: b"",
                    kind: b'1',
                },
            ]),
            false,
        ),
        (
            "device",
            tar_gz(&[
                file("model_metadata.json", GOOD_META),
                file("model.onnx", GRAPH),
                Raw {
                    name: "sda",
                    data: b"",
                    kind: b'4',
                },
            ]),
            false,
        ),
        (
            "fifo",
            tar_gz(&[
                file("model_metadata.json", GOOD_META),
                file("model.onnx", GRAPH),
                Raw {
                    name: "pipe",
                    data: b"",
                    kind: b'6',
                },
            ]),
            false,
        ),
        (
            // Old CLI kept the first copy, old web the last.
            "duplicate-graph",
            tar_gz(&[
                file("model_metadata.json", GOOD_META),
                file("model.onnx", GRAPH),
                file("model.onnx", b"a different graph"),
            ]),
            false,
        ),
        (
            "duplicate-spelled-differently",
            tar_gz(&[
                file("model_metadata.json", GOOD_META),
                file("./model_metadata.json", b"{}"),
                file("model.onnx", GRAPH),
            ]),
            false,
        ),
        (
            "two-models-same-depth",
            tar_gz(&[
                file("a/model_metadata.json", GOOD_META),
                file("a/model.onnx", GRAPH),
                file("b/model_metadata.json", GOOD_META),
                file("b/model.onnx", b"another"),
            ]),
            false,
        ),
        (
            "metadata-too-big",
            tar_gz(&[
                file("model_metadata.json", &vec![b' '; (1 << 20) + 1]),
                file("model.onnx", GRAPH),
            ]),
            false,
        ),
    ]);
    // 10,001 empty files: each header is 512 bytes, 5 MB of tar, 10 kB gzipped.
    let names: Vec<String> = (0..10_001).map(|i| format!("f{i}")).collect();
    let mut many: Vec<Raw> = vec![
        file("model_metadata.json", GOOD_META),
        file("model.onnx", GRAPH),
    ];
    many.extend(names.iter().map(|n| file(n, b"")));
    cases.push(("too-many-entries", tar_gz(&many), false));
    // A header that claims 8 GiB (the most a plain ustar size field holds);
    // no data follows: it must be refused on the claim, not after inflating.
    let mut claim = tar(&[
        file("model_metadata.json", GOOD_META),
        file("model.onnx", GRAPH),
    ]);
    claim.truncate(claim.len() - 1024);
    claim.extend_from_slice(&header("checkpoint.data", (8 << 30) - 1, b'0'));
    claim.resize(claim.len() + (1 << 16), 0);
    cases.push(("claims-8GiB", gzip(&claim), false));

    cases
        .into_iter()
        .map(|(name, bytes, accept)| {
            let path = dir.join(format!("{name}.tar.gz"));
            std::fs::write(&path, bytes).unwrap();
            Case { name, path, accept }
        })
        .collect()
}

/// A real gzip bomb: a good model plus `entries` checkpoint files of
/// `each` zero bytes, streamed through the encoder (about 1 kB of gzip per
/// MB unpacked), so every entry is small but together they are huge.
pub fn write_bomb(dir: &Path, entries: usize, each: u64) -> PathBuf {
    let path = dir.join("bomb.tar.gz");
    // The tar stream without its end marker, then the zero-filled entries.
    let f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    let mut head = tar(&[
        file("model_metadata.json", GOOD_META),
        file("model.onnx", GRAPH),
    ]);
    head.truncate(head.len() - 1024);
    gz.write_all(&head).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for i in 0..entries {
        gz.write_all(&header(&format!("checkpoint-{i}.data"), each, b'0'))
            .unwrap();
        let mut left = each;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            gz.write_all(&zeros[..n]).unwrap();
            left -= n as u64;
        }
        let pad = (512 - each % 512) % 512;
        gz.write_all(&zeros[..pad as usize]).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap().flush().unwrap();
    path
}
