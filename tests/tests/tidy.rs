//! The tree's own rules, checked on the tree as it is: every module says
//! what it is for, the control crate stays free of the web stack and the
//! daemon free of the trainer's framework, and nothing generated is
//! committed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn tracked() -> Vec<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root())
        .args(["ls-files", "-z"])
        .output()
        .expect("git ls-files (the tidy test needs git)");
    assert!(out.status.success(), "git ls-files failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// `cargo tree -p krate -e edges` with no prefix: one package (or, with
/// `features` in `edges`, one package feature) per line.
fn tree(krate: &str, edges: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args([
            "tree",
            "--offline",
            "-e",
            edges,
            "--prefix",
            "none",
            "-p",
            krate,
        ])
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {krate}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Names of the packages in `-p krate`'s normal (not dev, not build)
/// dependency tree.
fn dependency_names(krate: &str) -> Vec<String> {
    tree(krate, "normal")
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let missing: Vec<String> = tracked()
        .into_iter()
        .filter(|f| f.ends_with(".rs") && f.contains("/src/"))
        // A file deleted in the working tree but not yet in a commit.
        .filter(|f| root().join(f).exists())
        .filter(|f| {
            let text = std::fs::read_to_string(root().join(f)).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a //! module doc: {missing:?}"
    );
}

#[test]
fn the_control_crate_has_no_web_cli_or_async_dependency() {
    let deps = dependency_names("car-control");
    assert!(deps.iter().any(|d| d == "car-control"), "{deps:?}");
    for banned in [
        "web-ui", "axum", "tokio", "hyper", "rustls", "argon2", "burn",
    ] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "car-control depends on {banned}: the control thread's crate must stay free of the web stack (see ARCHITECTURE.md)"
        );
    }
}

#[test]
fn the_daemon_does_not_depend_on_the_trainers_framework() {
    let deps = dependency_names("car-runtime");
    assert!(deps.iter().any(|d| d == "car-runtime"), "{deps:?}");
    let burn: Vec<&String> = deps.iter().filter(|d| d.starts_with("burn")).collect();
    assert!(burn.is_empty(), "car-runtime depends on {burn:?}");
}

#[test]
fn test_helpers_and_writers_stay_out_of_the_daemon() {
    // The daemon's tree is what ships in the .deb: no dev-only crate, and
    // none of our crates' features for tests and tools: servo-driver's
    // in-memory chip, policy's ONNX writer, sim's track generator.
    let deps = dependency_names("car-runtime");
    assert!(
        !deps.iter().any(|d| d == "test-support"),
        "car-runtime depends on test-support, a dev-only crate"
    );
    let tree = tree("car-runtime", "normal,features");
    for (krate, feature) in [
        ("servo-driver", "test-model"),
        ("policy", "export"),
        ("sim", "trackgen"),
    ] {
        assert!(
            tree.lines().any(|l| l.starts_with(&format!("{krate} v"))),
            "{krate} missing:\n{tree}"
        );
        let line = format!("{krate} feature \"{feature}\"");
        assert!(
            !tree.lines().any(|l| l.starts_with(&line)),
            "the daemon builds {krate} with its {feature} feature"
        );
    }
}

#[test]
fn nothing_generated_is_committed() {
    let generated: Vec<String> = tracked()
        .into_iter()
        .filter(|f| {
            f.ends_with(".pyc")
                || f.contains("__pycache__/")
                || f.starts_with("target/")
                || f.starts_with("dist/")
                || f.contains("node_modules/")
                || f.ends_with(".deb")
                || f.ends_with(".o")
        })
        .collect();
    assert!(
        generated.is_empty(),
        "generated files are tracked: {generated:?}"
    );
}
