//! The `[actuator]` TOML table and `open`.

use serde::Deserialize;
use servo_driver::sim_link::SimLink;
use servo_driver::{ActuatorConfig, BackendKind, Calibration};
use std::sync::Arc;

#[derive(Deserialize)]
struct Wrapper {
    actuator: ActuatorConfig,
}

const ISSUE_TOML: &str = r#"
[actuator]
backend = "sysfs"            # sysfs | rppal | pca9685 | sim
calibration = "/var/lib/car-runtime/calibration.json"   # the project's own format

[actuator.sysfs]
root = "/sys"                # the backend reads <root>/class/pwm/pwmchip* and <root>/class/gpio; tests point it at a fake tree
chip_match = "0000:00:17.0"  # substring of the pwmchip's resolved device path
throttle_channel = 0
steering_channel = 1
power_gate_gpio = 436        # optional

[actuator.pca9685]
bus = "/dev/i2c-1"
address = 0x40
frequency_hz = 50
throttle_channel = 0
steering_channel = 1
"#;

#[test]
fn parses_the_issue_table_exactly() {
    let c: Wrapper = toml::from_str(ISSUE_TOML).unwrap();
    let a = c.actuator;
    assert_eq!(a.backend, BackendKind::Sysfs);
    assert_eq!(
        a.calibration.to_str(),
        Some("/var/lib/car-runtime/calibration.json")
    );
    assert_eq!(a.sysfs.root.to_str(), Some("/sys"));
    assert_eq!(a.sysfs.chip_match, "0000:00:17.0");
    assert_eq!((a.sysfs.throttle_channel, a.sysfs.steering_channel), (0, 1));
    assert_eq!(a.sysfs.power_gate_gpio, Some(436));
    assert_eq!(a.pca9685.bus.to_str(), Some("/dev/i2c-1"));
    assert_eq!(a.pca9685.address, 0x40);
    assert_eq!(a.pca9685.frequency_hz, 50.0);
    assert_eq!(a.pca9685.oscillator_hz, 25_000_000);
    a.validate().unwrap();
}

#[test]
fn defaults_and_other_tables() {
    let c: Wrapper = toml::from_str("[actuator]\n").unwrap();
    assert_eq!(c.actuator, ActuatorConfig::default());
    assert_eq!(c.actuator.backend, BackendKind::Sim);
    let c: Wrapper = toml::from_str(
        "[actuator]\nbackend = \"rppal\"\n[actuator.rppal]\nsteering_channel = 3\npwmchip = 2\n\
         [actuator.pca9685]\naddress = 0x41\noscillator_hz = 25400000\nfrequency_hz = 60.5\n",
    )
    .unwrap();
    assert_eq!(c.actuator.backend, BackendKind::Rppal);
    assert_eq!(c.actuator.rppal.steering_channel, 3);
    assert_eq!(c.actuator.rppal.pwmchip, Some(2));
    assert_eq!(c.actuator.pca9685.address, 0x41);
    assert_eq!(c.actuator.pca9685.oscillator_hz, 25_400_000);
    assert_eq!(c.actuator.pca9685.frequency_hz, 60.5);
}

#[test]
fn unknown_keys_and_backends_are_named() {
    let e = toml::from_str::<Wrapper>("[actuator.sysfs]\nchip_mtach = \"x\"\n")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("chip_mtach"), "{e}");
    let e = toml::from_str::<Wrapper>("[actuator]\nbackend = \"gpio\"\n")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("gpio") && e.contains("sysfs"), "{e}");
}

#[test]
fn semantic_checks_name_the_field() {
    let mut a = ActuatorConfig {
        backend: BackendKind::Pca9685,
        ..Default::default()
    };
    a.pca9685.steering_channel = 16;
    assert_eq!(
        a.validate().unwrap_err().to_string(),
        "actuator.pca9685.steering_channel: 16 is not 0..=15"
    );
    a.pca9685.steering_channel = 0;
    assert!(a
        .validate()
        .unwrap_err()
        .to_string()
        .contains("must differ"));
    a.pca9685.steering_channel = 1;
    a.pca9685.address = 0x140;
    assert!(a
        .validate()
        .unwrap_err()
        .to_string()
        .contains("actuator.pca9685.address: 0x140"));
}

#[test]
fn sim_backend_moves_the_sim_through_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let a = ActuatorConfig {
        backend: BackendKind::Sim,
        calibration: dir.path().join("calibration.json"),
        ..Default::default()
    };
    let link = Arc::new(SimLink::default());
    let mut d = servo_driver::open(&a, Some(Arc::clone(&link))).unwrap();
    assert_eq!(d.backend(), "sim");
    assert_eq!(link.load(), (0.0, 0.0));
    let before = link.writes();
    d.drive(0.5, -1.0).unwrap();
    assert_eq!(link.writes(), before + 1);
    let (s, t) = link.load();
    assert!((s - 0.5).abs() < 1e-5 && (t + 1.0).abs() < 1e-6, "{s} {t}");
    drop(d);
    assert_eq!(
        link.load(),
        (0.0, 0.0),
        "drop = neutral on the sim wire too"
    );
}

#[test]
fn missing_calibration_file_means_stock_defaults_broken_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.json");
    let a = ActuatorConfig {
        calibration: path.clone(),
        ..Default::default()
    };
    let d = servo_driver::open(&a, None).unwrap();
    assert_eq!(d.calibration(), &Calibration::stock());
    drop(d);
    let mut c = Calibration::stock();
    c.steering.mid = 1_470_000;
    c.save(&path).unwrap();
    let d = servo_driver::open(&a, None).unwrap();
    assert_eq!(d.calibration().steering.mid, 1_470_000);
    drop(d);
    std::fs::write(&path, "{\"steering\": 1}").unwrap();
    let msg = servo_driver::open(&a, None).unwrap_err().to_string();
    // Once: file, field, reason (no repeated prefix from an error chain).
    assert_eq!(
        msg,
        format!("{}: steering: must be an object", path.display())
    );
}

#[test]
fn hardware_backends_fail_with_reasons_here() {
    let mut a = ActuatorConfig {
        backend: BackendKind::Pca9685,
        ..Default::default()
    };
    a.calibration = "/nonexistent/calibration.json".into();
    a.pca9685.bus = "/dev/i2c-no-such-bus".into();
    let msg = servo_driver::open(&a, None).unwrap_err().to_string();
    assert!(
        msg.starts_with("actuator.pca9685: /dev/i2c-no-such-bus @ 0x40"),
        "{msg}"
    );

    a.backend = BackendKind::Sysfs;
    let tmp = tempfile::tempdir().unwrap();
    a.sysfs.root = tmp.path().to_path_buf();
    let msg = servo_driver::open(&a, None).unwrap_err().to_string();
    assert!(msg.starts_with("actuator.sysfs: no pwmchip"), "{msg}");
}

#[test]
fn rppal_on_a_non_pi_is_a_clear_error() {
    if rppal::system::DeviceInfo::new().is_ok() {
        eprintln!("SKIP: this machine is a Raspberry Pi; the non-Pi error path cannot be shown");
        return;
    }
    let a = ActuatorConfig {
        backend: BackendKind::Rppal,
        calibration: "/nonexistent/calibration.json".into(),
        ..Default::default()
    };
    let msg = servo_driver::open(&a, None).unwrap_err().to_string();
    assert!(
        msg.starts_with("actuator.rppal: not a Raspberry Pi"),
        "{msg}"
    );
    assert!(msg.contains("backend = \"sysfs\""), "{msg}");
}
