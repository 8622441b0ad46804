//! Track files a racer might hand the car by mistake (or a fuzzer on
//! purpose): each must give a clear error naming the file, quickly. Before,
//! 1e-200 hung the loader forever, 1e300 panicked, a track in millimetres
//! drove 290 s and exited with 0 laps, and `/dev/zero` read until OOM.

mod common;

use sim::npy::write_f64_2d;
use sim::Track;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// The 4 m square of the loader tests, scaled by `k` and shifted by `off`.
fn square(k: f64, off: f64) -> Vec<u8> {
    let c = [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]];
    let i = [[0.3, 0.3], [3.7, 0.3], [3.7, 3.7], [0.3, 3.7], [0.3, 0.3]];
    let o = [
        [-0.3, -0.3],
        [4.3, -0.3],
        [4.3, 4.3],
        [-0.3, 4.3],
        [-0.3, -0.3],
    ];
    let mut flat = Vec::new();
    for r in 0..5 {
        for p in [c[r], i[r], o[r]] {
            flat.push(p[0] * k + off);
            flat.push(p[1] * k + off);
        }
    }
    write_f64_2d(5, 6, &flat)
}

/// Load on another thread: a hang fails the test after `secs` instead of
/// hanging the suite (the thread is leaked, the test process ends anyway).
fn load_within(path: &Path, secs: u64) -> Result<Track, String> {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Track::load(&p).map_err(|e| e.to_string()));
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{}: loading did not finish in {secs} s", path.display()))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn refused(path: &Path) -> String {
    let e = load_within(path, 10).expect_err("must be refused");
    assert!(
        e.contains(&path.display().to_string()),
        "error does not name the file: {e}"
    );
    e
}

#[test]
fn tiny_coordinates_are_degenerate_not_a_hang() {
    let d = tempfile::tempdir().unwrap();
    let e = refused(&write(d.path(), "tiny.npy", &square(1e-200, 0.0)));
    assert!(e.contains("degenerate"), "{e}");
    // Small but not underflowing: still all within a millimetre.
    let e = refused(&write(d.path(), "micro.npy", &square(1e-5, 3.0)));
    assert!(e.contains("degenerate"), "{e}");
}

#[test]
fn huge_coordinates_are_refused_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let e = refused(&write(d.path(), "huge.npy", &square(1e300, 0.0)));
    assert!(e.contains("absurd for a DeepRacer track"), "{e}");
    assert!(!e.contains("millimetres"), "{e}");
}

#[test]
fn a_track_in_millimetres_is_named_as_such() {
    let d = tempfile::tempdir().unwrap();
    let e = refused(&write(d.path(), "mm.npy", &square(1000.0, 0.0)));
    assert!(e.contains("looks like millimetres"), "{e}");
    // A real track in millimetres, if the shared ones are here.
    if let Some(files) = common::shared_tracks() {
        let a = sim::npy::parse_f64_2d(&std::fs::read(&files[0]).unwrap()).unwrap();
        let mm: Vec<f64> = a.data.iter().map(|v| v * 1000.0).collect();
        let p = write(d.path(), "real-mm.npy", &write_f64_2d(a.rows, a.cols, &mm));
        let e = refused(&p);
        assert!(e.contains("looks like millimetres"), "{e}");
    }
}

#[test]
fn nan_and_infinity_are_refused_naming_the_file_and_place() {
    let d = tempfile::tempdir().unwrap();
    for (name, v) in [("nan.npy", f64::NAN), ("inf.npy", f64::INFINITY)] {
        let mut b = square(1.0, 0.0);
        // Row 2 column 3 of the data, which starts after the 128-byte header.
        let at = b.len() - 5 * 6 * 8 + (2 * 6 + 3) * 8;
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        let e = refused(&write(d.path(), name, &b));
        assert!(e.contains("row 2 column 3"), "{e}");
    }
}

#[test]
fn dev_zero_and_a_fifo_are_refused_at_once() {
    let e = refused(Path::new("/dev/zero"));
    assert!(e.contains("not a regular file"), "{e}");
    // `resolve` (what `--track` uses) goes the same way.
    let e = Track::resolve("/dev/zero").unwrap_err().to_string();
    assert!(
        e.contains("/dev/zero") && e.contains("not a regular file"),
        "{e}"
    );

    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("track.npy");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let e = refused(&fifo);
    assert!(e.contains("a FIFO"), "{e}");
}

#[test]
fn an_oversized_file_is_refused_before_it_is_read() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("big.npy");
    let f = std::fs::File::create(&p).unwrap();
    // Sparse: costs no disk.
    f.set_len(sim::track::MAX_TRACK_FILE_BYTES + 1).unwrap();
    let e = refused(&p);
    assert!(e.contains("limit"), "{e}");
}

#[test]
fn a_nan_position_does_not_panic_the_geometry() {
    let t = Track::builtin("oval").unwrap();
    let _ = t.segment_at(f64::NAN);
    let _ = t.point_at(f64::NAN);
    let _ = t.segment_at(-0.0);
    let _ = t.nearest([f64::NAN, 0.0]);
}

#[test]
fn real_and_builtin_tracks_still_load() {
    for n in Track::builtin_names() {
        Track::builtin(n).unwrap();
    }
    if let Some(files) = common::shared_tracks() {
        for f in files {
            load_within(&f, 10).unwrap();
        }
    }
}
