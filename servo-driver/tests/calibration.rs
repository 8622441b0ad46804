//! Calibration files: validation messages, the stock mapping, DeepRacer
//! import/export, the project's own format and atomic saving.

use safe_io::atomic::write_with as atomic_write_with;
use servo_driver::calibration::{Calibration, CalibrationError};
use servo_driver::ChannelCalibration;
use std::fs;
use std::io::Write;
use std::path::Path;

const STOCK_DEEPRACER: &str = r#"{"Calibration": {"Servo": {"max": 1700000, "mid": 1450000, "min": 1200000, "polarity": 1},
                 "Motor": {"max": 1603500, "mid": 1446000, "min": 1311000, "polarity": -1},
                 "version": 1}}"#;

#[test]
fn stock_defaults_are_the_deepracer_ones() {
    let c = Calibration::stock();
    assert_eq!(
        c.steering,
        ChannelCalibration {
            min: 1_200_000,
            mid: 1_450_000,
            max: 1_700_000,
            polarity: 1
        }
    );
    assert_eq!(
        c.throttle,
        ChannelCalibration {
            min: 1_311_000,
            mid: 1_446_000,
            max: 1_603_500,
            polarity: -1
        }
    );
    assert_eq!(c.period_ns, 20_000_000);
}

#[test]
fn mapping_matches_the_stock_formula() {
    let c = Calibration::stock();
    // adj = v * polarity; adj < 0: mid + adj*(mid-min); adj > 0: mid + adj*(max-mid)
    assert_eq!(c.steering.pulse_ns(0.0), 1_450_000);
    assert_eq!(c.steering.pulse_ns(1.0), 1_700_000);
    assert_eq!(c.steering.pulse_ns(-1.0), 1_200_000);
    assert_eq!(c.steering.pulse_ns(0.25), 1_512_500);
    assert_eq!(c.throttle.pulse_ns(1.0), 1_311_000); // polarity -1
    assert_eq!(c.throttle.pulse_ns(-1.0), 1_603_500);
    assert_eq!(c.throttle.pulse_ns(0.8), 1_338_000);
    assert_eq!(c.throttle.pulse_ns(-0.5), 1_524_750);
}

#[test]
fn validation_errors_name_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.json");
    let mut c = Calibration::stock();
    c.throttle.mid = 2_600_000;
    fs::write(&path, c.to_project_json()).unwrap();
    let err = Calibration::load(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: throttle.mid: 2600000 is outside the safe range 500000..=2500000",
            path.display()
        )
    );
    let cases: &[(&str, &str)] = &[
        (
            r#""steering": {"min": 1500000, "mid": 1450000, "max": 1700000, "polarity": 1}"#,
            "steering.min: 1500000 must be below mid (1450000)",
        ),
        (
            r#""steering": {"min": 1200000, "mid": 1450000, "max": 1450000, "polarity": 1}"#,
            "steering.max: 1450000 must be above mid (1450000)",
        ),
        (
            r#""steering": {"min": 1200000, "mid": 1450000, "max": 1700000, "polarity": 0}"#,
            "steering.polarity: 0 must be 1 or -1",
        ),
        (
            r#""steering": {"min": 1200000, "mid": 1450000, "polarity": 1}"#,
            "steering.max: missing",
        ),
        (
            r#""steering": {"min": 1200000.5, "mid": 1450000, "max": 1700000, "polarity": 1}"#,
            "steering.min: 1200000.5 is not a whole number of nanoseconds",
        ),
        (
            r#""steering": {"min": 400000, "mid": 1450000, "max": 1700000, "polarity": 1}"#,
            "steering.min: 400000 is outside the safe range 500000..=2500000",
        ),
    ];
    let throttle =
        r#""throttle": {"min": 1311000, "mid": 1446000, "max": 1603500, "polarity": -1}"#;
    for (steering, want) in cases {
        fs::write(
            &path,
            format!("{{{steering}, {throttle}, \"period_ns\": 20000000}}"),
        )
        .unwrap();
        let msg = Calibration::load(&path).unwrap_err().to_string();
        assert_eq!(msg, format!("{}: {want}", path.display()));
    }
    fs::write(&path, format!("{{{throttle}, \"periodns\": 1}}")).unwrap();
    let msg = Calibration::load(&path).unwrap_err().to_string();
    assert!(msg.ends_with("periodns: unknown field"), "{msg}");
    fs::write(&path, "{\"steering\": ").unwrap();
    let msg = Calibration::load(&path).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}: not valid JSON", path.display())),
        "{msg}"
    );
    let e = Calibration::load(&dir.path().join("nope.json")).unwrap_err();
    assert!(matches!(e, CalibrationError::Io { .. }));
}

#[test]
fn deepracer_import_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let stock = dir.path().join("calibration.json");
    fs::write(&stock, STOCK_DEEPRACER).unwrap();
    let c = servo_driver::calibration::import_deepracer(&stock).unwrap();
    assert_eq!(c, Calibration::stock());

    let out = dir.path().join("exported.json");
    servo_driver::calibration::export_deepracer(&c, &out).unwrap();
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&out).unwrap()).unwrap();
    let want: serde_json::Value = serde_json::from_str(STOCK_DEEPRACER).unwrap();
    assert_eq!(v, want, "exported file is the stock file, field for field");
    assert_eq!(Calibration::import_deepracer(&out).unwrap(), c);

    // Errors use the DeepRacer field names.
    fs::write(&stock, STOCK_DEEPRACER.replace("1446000", "2600000")).unwrap();
    let msg = Calibration::import_deepracer(&stock)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        format!(
            "{}: Calibration.Motor.mid: 2600000 is outside the safe range 500000..=2500000",
            stock.display()
        )
    );
    fs::write(&stock, r#"{"steering": {}}"#).unwrap();
    let msg = Calibration::import_deepracer(&stock)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("Calibration: missing"), "{msg}");
}

#[test]
fn project_file_round_trip_and_show_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.json");
    let mut c = Calibration::stock();
    c.steering.mid = 1_460_000;
    c.throttle.polarity = 1;
    c.period_ns = 16_666_667;
    c.save(&path).unwrap();
    assert_eq!(Calibration::load(&path).unwrap(), c);
    let show = c.to_show_json();
    assert_eq!(
        show,
        serde_json::json!({
            "steering": {"min": 1200000, "mid": 1460000, "max": 1700000, "polarity": 1},
            "throttle": {"min": 1311000, "mid": 1446000, "max": 1603500, "polarity": 1},
            "period_ns": 16666667
        })
    );
}

fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect()
}

#[test]
fn failed_write_never_replaces_the_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.json");
    let good = Calibration::stock();
    good.save(&path).unwrap();
    let before = fs::read(&path).unwrap();

    // The write dies half-way (disk full, power cut in the middle).
    let half = &before[..before.len() / 2];
    let err = atomic_write_with(&path, |f| {
        f.write_all(half)?;
        Err(std::io::Error::other("disk full"))
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "disk full");
    assert_eq!(fs::read(&path).unwrap(), before);
    assert!(temp_files(dir.path()).is_empty(), "temp file cleaned up");
    assert_eq!(Calibration::load(&path).unwrap(), good);

    // A crash after a partial temp file (the process died, no cleanup):
    // the good file is still the one that loads.
    fs::write(dir.path().join(".calibration.json.tmp.1.0"), half).unwrap();
    assert_eq!(Calibration::load(&path).unwrap(), good);

    // An invalid calibration is refused before anything is written.
    let mut bad = good;
    bad.steering.polarity = 2;
    let msg = bad.save(&path).unwrap_err().to_string();
    assert!(
        msg.ends_with("steering.polarity: 2 must be 1 or -1"),
        "{msg}"
    );
    assert_eq!(fs::read(&path).unwrap(), before);

    // A save into a directory that does not exist fails and names the path.
    let nowhere = dir.path().join("missing/calibration.json");
    let msg = good.save(&nowhere).unwrap_err().to_string();
    assert!(msg.contains("missing/calibration.json"), "{msg}");
}

#[test]
fn saving_replaces_the_file_and_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.json");
    Calibration::stock().save(&path).unwrap();
    let mut c = Calibration::stock();
    c.steering.mid = 1_470_000;
    c.save(&path).unwrap();
    assert_eq!(Calibration::load(&path).unwrap().steering.mid, 1_470_000);
    assert!(temp_files(dir.path()).is_empty());
}
