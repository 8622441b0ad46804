//! The archive reader against the hostile corpus, a real gzip bomb and
//! random damage.

use super::corpus::{self, file, tar_gz, GOOD_META, GRAPH};
use super::*;
use proptest::prelude::*;

fn limits() -> Limits {
    Limits::MODEL
}

#[test]
fn corpus_answers_are_the_expected_ones_and_refusals_name_archive_and_entry() {
    let d = tempfile::tempdir().unwrap();
    for case in corpus::write_corpus(d.path()) {
        let r = read_model_archive(&case.path, &limits());
        match (&r, case.accept) {
            (Ok(_), true) => {}
            (Err(e), false) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&case.path.display().to_string()),
                    "{}: error does not name the archive: {msg}",
                    case.name
                );
            }
            (Ok(_), false) => panic!("{}: accepted a hostile archive", case.name),
            (Err(e), true) => panic!("{}: refused a good archive: {e}", case.name),
        }
    }
}

fn refusal(case: &str) -> String {
    let d = tempfile::tempdir().unwrap();
    let c = corpus::write_corpus(d.path())
        .into_iter()
        .find(|c| c.name == case)
        .unwrap();
    read_model_archive(&c.path, &limits())
        .expect_err(case)
        .to_string()
}

#[test]
fn each_refusal_says_what_is_wrong() {
    for (case, want) in [
        ("bad-crc32", "CRC32"),
        ("bad-isize", "CRC32 or length"),
        ("truncated-trailer", "truncated"),
        ("trailing-garbage", "after the end of the gzip stream"),
        ("empty-file", "empty file"),
        (
            "traversal",
            "entry \"../../etc/evil\": refusing a name with \"..\"",
        ),
        (
            "absolute",
            "entry \"/tmp/model_metadata.json\": refusing an absolute name",
        ),
        ("symlink-other", "entry \"passwd\": is a symbolic link"),
        ("hardlink", "is a hard link"),
        ("device", "is a device"),
        ("fifo", "is a FIFO"),
        ("duplicate-graph", "entry \"model.onnx\": appears twice"),
        ("duplicate-spelled-differently", "appears twice"),
        (
            "two-models-same-depth",
            "same depth as \"a/model_metadata.json\"",
        ),
        ("too-many-entries", "more than 10000 entries"),
        ("claims-8GiB", "entry \"checkpoint.data\": 8589934591 bytes"),
        ("metadata-too-big", "over the 1 MiB limit"),
        ("no-metadata", "no model_metadata.json found"),
        ("no-graph", "no model.onnx or model.pb found"),
    ] {
        let msg = refusal(case);
        assert!(msg.contains(want), "{case}: {msg}");
    }
}

#[test]
fn picks_the_graph_and_metadata_a_model_folder_would() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("m.tar.gz");
    // ONNX wins over TensorFlow even when deeper; names keep their folders.
    std::fs::write(
        &p,
        tar_gz(&[
            file("./model_metadata.json", GOOD_META),
            file("model.pb", b"tf"),
            file("agent/model.onnx", GRAPH),
        ]),
    )
    .unwrap();
    let m = read_model_archive(&p, &limits()).unwrap();
    assert_eq!(m.metadata.name, "model_metadata.json");
    assert_eq!(m.metadata.bytes, GOOD_META);
    assert_eq!(m.graph.name, "agent/model.onnx");
    assert_eq!(m.graph_kind, GraphKind::Onnx);
    assert_eq!(m.graph.bytes, GRAPH);

    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let console = d.path().join("c.tar.gz");
    std::fs::write(
        &console,
        tar_gz(&[
            file("agent/model.pb", GRAPH),
            file("model_metadata.json", GOOD_META),
        ]),
    )
    .unwrap();
    let written = extract_model_archive(&console, &out, &limits()).unwrap();
    assert_eq!(written, ["model_metadata.json", "agent/model.pb"]);
    assert_eq!(std::fs::read(out.join("agent/model.pb")).unwrap(), GRAPH);
}

#[test]
fn refuses_fifos_and_devices_as_archives_at_once() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("m.tar.gz");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let e = read_model_archive(&fifo, &limits()).unwrap_err();
    assert!(e.to_string().contains("not a regular file (a FIFO)"), "{e}");
    let e = read_model_archive(Path::new("/dev/zero"), &limits()).unwrap_err();
    assert!(e.to_string().contains("a character device"), "{e}");
}

#[test]
fn a_gzip_bomb_is_refused_once_it_crosses_the_unpack_limit() {
    let d = tempfile::tempdir().unwrap();
    // 24 MiB of zeros in 8 entries, each under every per-file limit; a
    // 16 MiB unpack limit makes it a bomb without inflating gigabytes.
    let bomb = corpus::write_bomb(d.path(), 8, 3 << 20);
    assert!(std::fs::metadata(&bomb).unwrap().len() < 100 << 10);
    let small = Limits {
        max_unpacked_bytes: 16 << 20,
        ..Limits::MODEL
    };
    let e = read_model_archive(&bomb, &small).unwrap_err().to_string();
    assert!(e.contains("unpacks to more than 16 MiB"), "{e}");
    // Under a limit it fits, it is an ordinary (if odd) model archive.
    let roomy = Limits {
        max_unpacked_bytes: 32 << 20,
        ..Limits::MODEL
    };
    read_model_archive(&bomb, &roomy).unwrap();
}

#[test]
fn the_unpack_limit_counts_what_is_inflated_not_only_what_headers_claim() {
    // A good tar, then 9 MiB of zeros after its end marker: no header
    // claims them, tar never reads them, only the drain to the gzip
    // trailer does, and it counts them.
    let d = tempfile::tempdir().unwrap();
    let mut t = corpus::tar(&[
        file("model_metadata.json", GOOD_META),
        file("model.onnx", GRAPH),
    ]);
    t.resize(t.len() + (9 << 20), 0);
    let p = d.path().join("sea.tar.gz");
    std::fs::write(&p, corpus::gzip(&t)).unwrap();
    let tight = Limits {
        max_unpacked_bytes: 8 << 20,
        ..Limits::MODEL
    };
    let e = read_model_archive(&p, &tight).unwrap_err().to_string();
    assert!(e.contains("unpacks to more than 8 MiB"), "{e}");
    read_model_archive(&p, &Limits::MODEL).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the bytes, the reader answers (no panic, no hang), and an
    /// accepted archive gives the files that were put in.
    #[test]
    fn damaged_archives_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                                    cut in any::<usize>()) {
        let good = tar_gz(&[file("model_metadata.json", GOOD_META), file("model.onnx", GRAPH)]);
        let mut b = good.clone();
        for (at, x) in flips {
            let i = at % b.len();
            b[i] ^= x | 1;
        }
        b.truncate(cut % (b.len() + 1));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.tar.gz");
        std::fs::write(&p, &b).unwrap();
        if let Ok(m) = read_model_archive(&p, &Limits::MODEL) {
            // The CRC32 guards the data: damage that got through must have
            // been outside it (header fields such as mtime or the OS byte).
            prop_assert_eq!(m.metadata.bytes, GOOD_META);
            prop_assert_eq!(m.graph.bytes, GRAPH);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.tar.gz");
        std::fs::write(&p, &b).unwrap();
        let _ = read_model_archive(&p, &Limits::MODEL);
    }
}
