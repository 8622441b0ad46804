//! Calibration files from outside: FIFOs, devices and huge files are
//! refused at once, temp files of killed saves are cleaned up, and the two
//! parsers never panic on any text and accept only valid calibrations.

use proptest::prelude::*;
use safe_io::atomic::remove_stale_temps;
use servo_driver::calibration::MAX_CALIBRATION_BYTES;
use servo_driver::Calibration;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Run `f` on another thread; a block (FIFO) fails the test after 10 s.
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("blocked for 10 s: the read must fail at once")
}

fn mkfifo(p: &Path) {
    assert!(std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap()
        .success());
}

#[test]
fn import_of_dev_zero_a_fifo_or_a_huge_file_fails_at_once() {
    let e = within_10s(|| Calibration::import_deepracer(Path::new("/dev/zero")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/dev/zero") && e.contains("not a regular file (a character device)"),
        "{e}"
    );
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("calibration.json");
    mkfifo(&fifo);
    let f = fifo.clone();
    let e = within_10s(move || Calibration::import_deepracer(&f))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("calibration.json") && e.contains("a FIFO"),
        "{e}"
    );
    let f = fifo.clone();
    let e = within_10s(move || Calibration::load(&f))
        .unwrap_err()
        .to_string();
    assert!(e.contains("a FIFO"), "{e}");

    let big = d.path().join("big.json");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(MAX_CALIBRATION_BYTES + 1).unwrap();
    let e = Calibration::import_deepracer(&big).unwrap_err().to_string();
    assert!(e.contains("big.json") && e.contains("limit"), "{e}");
}

/// The process id of a process that has just exited (what a killed save leaves).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn litter(dir: &Path, dead: u32) -> (PathBuf, Vec<String>) {
    let path = dir.join("calibration.json");
    Calibration::stock().save(&path).unwrap();
    let stale = format!(".calibration.json.tmp.{dead}.3");
    let keep = vec![
        // A save in flight in this very process.
        format!(".calibration.json.tmp.{}.99", std::process::id()),
        // Not ours: other files, other names, a user's own temp files.
        ".calibration.json.tmp.notes".to_string(),
        format!(".other.json.tmp.{dead}.3"),
        format!("calibration.json.tmp.{dead}.3"),
        "calibration.json".to_string(),
        "calibration.json.tmp".to_string(),
    ];
    for n in std::iter::once(&stale).chain(&keep) {
        if n != "calibration.json" {
            std::fs::write(dir.join(n), b"{\"half\": ").unwrap();
        }
    }
    (path, keep)
}

#[test]
fn a_save_removes_what_a_killed_save_left_and_nothing_else() {
    let d = tempfile::tempdir().unwrap();
    let (path, mut keep) = litter(d.path(), dead_pid());
    let mut c = Calibration::stock();
    c.steering.mid = 1_470_000;
    c.save(&path).unwrap();
    keep.sort();
    assert_eq!(names(d.path()), keep);
    assert_eq!(Calibration::load(&path).unwrap(), c);
}

#[test]
fn loading_removes_them_too() {
    let d = tempfile::tempdir().unwrap();
    let (path, mut keep) = litter(d.path(), dead_pid());
    Calibration::load(&path).unwrap();
    keep.sort();
    assert_eq!(names(d.path()), keep);
    // And calling the sweep on a missing folder is harmless.
    remove_stale_temps(&d.path().join("nowhere/calibration.json"));
}

fn stock_project_json() -> String {
    Calibration::stock().to_project_json()
}

fn stock_deepracer_json() -> String {
    Calibration::stock().to_deepracer_json()
}

/// JSON values of every kind, including the numbers that trip parsers.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|v| json!(v)),
        any::<u64>().prop_map(|v| json!(v)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |v| v.is_finite())
            .prop_map(|v| json!(v)),
        (400_000u32..2_600_000).prop_map(|v| json!(v)),
        prop_oneof![Just(1.0), Just(-1.0), Just(0.5), Just(1e300), Just(-0.0)]
            .prop_map(|v| json!(v)),
        "[a-z_]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("min".to_string()),
                    Just("mid".to_string()),
                    Just("max".to_string()),
                    Just("polarity".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Anything a parser accepts must validate and survive a round trip.
fn accepted_is_valid(
    r: Result<Calibration, servo_driver::calibration::CalibrationError>,
) -> Result<(), TestCaseError> {
    if let Ok(c) = r {
        prop_assert!(c.validate().is_ok(), "{:?}", c);
        let p = Path::new("x.json");
        prop_assert_eq!(
            Calibration::from_project_json(&c.to_project_json(), p).unwrap(),
            c
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let p = Path::new("x.json");
        accepted_is_valid(Calibration::from_project_json(&text, p))?;
        accepted_is_valid(Calibration::from_deepracer_json(&text, p))?;
    }

    #[test]
    fn mutated_real_files_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        deepracer in any::<bool>(),
    ) {
        let mut b = if deepracer { stock_deepracer_json() } else { stock_project_json() }.into_bytes();
        for (at, x) in flips {
            let i = at % b.len();
            b[i] = x;
        }
        let text = String::from_utf8_lossy(&b);
        let p = Path::new("x.json");
        accepted_is_valid(Calibration::from_project_json(&text, p))?;
        accepted_is_valid(Calibration::from_deepracer_json(&text, p))?;
    }

    /// The right shape with arbitrary values in every field.
    #[test]
    fn arbitrary_field_values_never_panic(
        s in json_value(), t in json_value(), period in json_value(), v in json_value(),
    ) {
        let p = Path::new("x.json");
        let project = serde_json::json!({"version": v, "steering": s, "throttle": t, "period_ns": period});
        accepted_is_valid(Calibration::from_project_json(&project.to_string(), p))?;
        let dr = serde_json::json!({"Calibration": {"Servo": s, "Motor": t, "version": 1}});
        accepted_is_valid(Calibration::from_deepracer_json(&dr.to_string(), p))?;
    }
}
