//! Every seed (`corpus/<target>/`) and every crash the fuzzer ever found
//! (`regressions/<target>/`) through its target, in the normal test run:
//! a fixed bug stays fixed without anyone running the fuzzer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Per input. Generous: this is a debug build, and the slowest seed (a
/// 640x480 frame through the general decoder, twice) takes tens of
/// milliseconds there; a hang the fuzzer found would take far longer.
const PER_INPUT: Duration = Duration::from_secs(10);

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            // `.gitkeep` holds an empty folder in git; not an input.
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn every_seed_and_regression_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut slow = Vec::new();
    for (name, run) in fuzz_targets::TARGETS {
        let seeds = files(&root.join("corpus").join(name));
        assert!(
            !seeds.is_empty(),
            "target {name} has no seeds in corpus/{name}"
        );
        let regressions = files(&root.join("regressions").join(name));
        for f in seeds.iter().chain(&regressions) {
            let data = std::fs::read(f).unwrap();
            let t = Instant::now();
            // A panic names the target and file (the harness prints it).
            eprintln!("{name}: {}", f.display());
            run(&data);
            if t.elapsed() > PER_INPUT {
                slow.push(format!("{}: {:?}", f.display(), t.elapsed()));
            }
        }
    }
    assert!(slow.is_empty(), "inputs over {PER_INPUT:?}: {slow:?}");
}

#[test]
fn every_target_has_corpus_and_regression_folders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in fuzz_targets::TARGETS {
        assert!(root.join("corpus").join(name).is_dir(), "corpus/{name}");
        assert!(
            root.join("regressions").join(name).is_dir(),
            "regressions/{name}"
        );
    }
}
