//! Track loading: real files, built-ins, and every malformed case gets an
//! error naming the file and the problem.

mod common;

use sim::npy::write_f64_2d;
use sim::{Track, TrackError};

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A small valid square loop, 4 m per side, 0.6 m wide, closed in file.
fn square_rows() -> Vec<[f64; 6]> {
    let c = [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]];
    let i = [[0.3, 0.3], [3.7, 0.3], [3.7, 3.7], [0.3, 3.7], [0.3, 0.3]];
    let o = [
        [-0.3, -0.3],
        [4.3, -0.3],
        [4.3, 4.3],
        [-0.3, 4.3],
        [-0.3, -0.3],
    ];
    (0..5)
        .map(|k| [c[k][0], c[k][1], i[k][0], i[k][1], o[k][0], o[k][1]])
        .collect()
}

fn npy_of(rows: &[[f64; 6]]) -> Vec<u8> {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    write_f64_2d(rows.len(), 6, &flat)
}

fn err_text(path: &std::path::Path) -> String {
    let e = Track::load(path).expect_err("must be rejected");
    let s = e.to_string();
    assert!(
        s.contains(&path.display().to_string()),
        "error does not name the file: {s}"
    );
    s
}

#[test]
fn loads_a_valid_file() {
    let d = tempfile::tempdir().unwrap();
    let p = write(&d, "square.npy", &npy_of(&square_rows()));
    let t = Track::load(&p).unwrap();
    assert_eq!(t.name(), "square");
    assert_eq!(t.waypoints().len(), 5);
    assert!(t.closed_in_file());
    assert!((t.length() - 16.0).abs() < 1e-12);
    // Diagonal offset 0.3*sqrt2 each side at corners and straights alike.
    assert!((t.width() - 2.0 * 0.3 * 2f64.sqrt()).abs() < 1e-9);
}

#[test]
fn wrong_shape_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    let p = write(&d, "five_cols.npy", &write_f64_2d(4, 5, &[1.0; 20]));
    let s = err_text(&p);
    assert!(s.contains("wrong shape (4, 5)"), "{s}");
    // 1-D array.
    let mut one_d = write_f64_2d(1, 6, &[0.0; 6]);
    let at = one_d.windows(6).position(|w| w == b"(1, 6)").unwrap();
    one_d[at..at + 6].copy_from_slice(b"(6,)  ");
    let p = write(&d, "flat.npy", &one_d);
    let s = err_text(&p);
    assert!(s.contains("2-D"), "{s}");
}

#[test]
fn nan_is_rejected_with_row_and_column() {
    let d = tempfile::tempdir().unwrap();
    let mut rows = square_rows();
    rows[2][3] = f64::NAN;
    let p = write(&d, "nan.npy", &npy_of(&rows));
    let s = err_text(&p);
    assert!(s.contains("row 2 column 3 is NaN"), "{s}");
    rows[2][3] = f64::INFINITY;
    let p = write(&d, "inf.npy", &npy_of(&rows));
    assert!(err_text(&p).contains("inf"));
}

#[test]
fn fewer_than_three_points_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    let rows = &square_rows()[..2];
    let p = write(&d, "two.npy", &npy_of(rows));
    let s = err_text(&p);
    assert!(s.contains("only 2 distinct centre-line points"), "{s}");
    // Many rows, but all the same point.
    let same = vec![square_rows()[0]; 10];
    let p = write(&d, "same.npy", &npy_of(&same));
    assert!(err_text(&p).contains("only 1 distinct"));
    let p = write(&d, "empty.npy", &write_f64_2d(0, 6, &[]));
    assert!(err_text(&p).contains("only 0 distinct"));
}

#[test]
fn non_float64_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    let f8 = npy_of(&square_rows());
    let at = f8.windows(3).position(|w| w == b"<f8").unwrap();
    for dtype in ["<f4", "<i8", ">f8", "|O8"] {
        let mut b = f8.clone();
        b[at..at + 3].copy_from_slice(dtype.as_bytes());
        let p = write(&d, "typed.npy", &b);
        let s = err_text(&p);
        assert!(s.contains("not a float64 array"), "{dtype}: {s}");
        assert!(s.contains(dtype), "{s}");
    }
    let p = write(&d, "text.npy", b"centre,inner,outer\n1,2,3\n");
    assert!(err_text(&p).contains("not a .npy file"));
    let p = write(&d, "truncated.npy", &f8[..f8.len() - 8]);
    assert!(err_text(&p).contains("bytes"));
}

#[test]
fn missing_file_and_unknown_name() {
    let e = Track::load("/nonexistent/dir/track.npy").unwrap_err();
    assert!(matches!(e, TrackError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/dir/track.npy"));
    let e = Track::resolve("no_such_track").unwrap_err().to_string();
    assert!(e.contains("no_such_track") && e.contains("oval"), "{e}");
}

#[test]
fn resolve_takes_builtin_names_then_paths() {
    for n in Track::builtin_names() {
        assert_eq!(Track::resolve(n).unwrap().name(), n);
    }
    assert!(Track::builtin_names().len() >= 3);
    let d = tempfile::tempdir().unwrap();
    let p = write(&d, "sq.npy", &npy_of(&square_rows()));
    let t = Track::resolve(p.to_str().unwrap()).unwrap();
    assert_eq!(t.source(), Some(p.as_path()));
}

#[test]
fn open_file_is_closed_implicitly() {
    let rows = &square_rows()[..4];
    let t = Track::from_rows("open", "open.npy", rows).unwrap();
    assert!(!t.closed_in_file());
    assert!((t.length() - 16.0).abs() < 1e-12);
    assert_eq!(t.closest_waypoints(3), [3, 0]);
}

#[test]
fn real_tracks_load() {
    let Some(files) = common::shared_tracks() else {
        return;
    };
    assert_eq!(files.len(), 5, "{files:?}");
    for f in files {
        let t = Track::load(&f).unwrap();
        assert!(t.closed_in_file(), "{}", f.display());
        assert!(t.length() > 15.0 && t.length() < 40.0, "{}", t.length());
        assert!(t.width() > 0.5 && t.width() < 1.3, "{}", t.width());
    }
    // Lengths from the shared README.
    let base =
        Track::load(common::manifest_dir().join("../../shared/tracks/reinvent_base.npy")).unwrap();
    assert!((base.length() - 17.71).abs() < 0.01, "{}", base.length());
    assert_eq!(base.waypoints().len(), 119);
    assert!((base.width() - 0.762).abs() < 0.01);
}
