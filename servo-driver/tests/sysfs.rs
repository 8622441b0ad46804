//! The sysfs backend against a fake sysfs tree in a temp dir.

mod common;

use common::{read, write, FakeSysfs};
use servo_driver::sysfs::{SysfsError, SysfsPwm};
use servo_driver::{Calibration, ServoDriver};
use std::fs;

fn driver(tree: &FakeSysfs) -> ServoDriver {
    let cal = Calibration::stock();
    let pwm = SysfsPwm::open(&tree.config(), &cal).expect("open");
    ServoDriver::new(cal, Box::new(pwm)).expect("driver")
}

#[test]
fn finds_chip_by_device_path_and_puts_neutral_on_the_wire() {
    let tree = FakeSysfs::new();
    let _d = driver(&tree);
    // Throttle = channel 0, steering = channel 1 on the matching chip.
    assert_eq!(tree.attr(0, "period"), "20000000");
    assert_eq!(tree.attr(0, "duty_cycle"), "1446000");
    assert_eq!(tree.attr(0, "enable"), "1");
    assert_eq!(tree.attr(1, "period"), "20000000");
    assert_eq!(tree.attr(1, "duty_cycle"), "1450000");
    assert_eq!(tree.attr(1, "enable"), "1");
    // The decoy chip on another device is untouched, nothing was exported.
    for ch in 0..2 {
        for f in ["period", "duty_cycle", "enable"] {
            assert_eq!(read(&tree.decoy().join(format!("pwm{ch}/{f}"))), "0");
        }
    }
    assert_eq!(read(&tree.chip().join("export")), "");
    // Other channels (tail light) untouched.
    assert_eq!(tree.attr(2, "duty_cycle"), "0");
}

#[test]
fn drive_writes_the_stock_mapping() {
    let tree = FakeSysfs::new();
    let mut d = driver(&tree);
    // Steering polarity +1: full left command -> max. Throttle polarity -1:
    // full forward command -> min.
    d.drive(1.0, 1.0).unwrap();
    assert_eq!(tree.attr(1, "duty_cycle"), "1700000");
    assert_eq!(tree.attr(0, "duty_cycle"), "1311000");
    d.drive(-0.5, 0.5).unwrap();
    assert_eq!(tree.attr(1, "duty_cycle"), "1325000");
    assert_eq!(tree.attr(0, "duty_cycle"), "1378500");
    d.drive(0.0, -1.0).unwrap();
    assert_eq!(tree.attr(1, "duty_cycle"), "1450000");
    assert_eq!(tree.attr(0, "duty_cycle"), "1603500");
}

#[test]
fn unchanged_duty_is_not_rewritten() {
    let tree = FakeSysfs::new();
    let mut d = driver(&tree);
    d.drive(0.3, 0.3).unwrap();
    let steer = tree.chip().join("pwm1/duty_cycle");
    let thr = tree.chip().join("pwm0/duty_cycle");
    assert_eq!(read(&steer), "1525000");
    // Mark both files; a write would overwrite the marks.
    write(&steer, "marker");
    write(&thr, "marker");
    d.drive(0.3, 0.3).unwrap();
    assert_eq!(read(&steer), "marker");
    assert_eq!(read(&thr), "marker");
    // Only the channel that changed is written.
    d.drive(0.4, 0.3).unwrap();
    assert_eq!(read(&steer), "1550000");
    assert_eq!(read(&thr), "marker");
}

#[test]
fn shorter_value_replaces_longer_one_completely() {
    let tree = FakeSysfs::new();
    let mut cal = Calibration::stock();
    cal.steering = servo_driver::ChannelCalibration {
        min: 500_000,
        mid: 1_500_000,
        max: 2_500_000,
        polarity: 1,
    };
    let pwm = SysfsPwm::open(&tree.config(), &cal).unwrap();
    let mut d = ServoDriver::new(cal, Box::new(pwm)).unwrap();
    d.drive(-1.0, 0.0).unwrap();
    assert_eq!(tree.attr(1, "duty_cycle"), "500000");
}

#[test]
fn drop_writes_neutral() {
    let tree = FakeSysfs::new();
    let mut d = driver(&tree);
    d.drive(1.0, -1.0).unwrap();
    assert_eq!(tree.attr(0, "duty_cycle"), "1603500");
    drop(d);
    assert_eq!(tree.attr(0, "duty_cycle"), "1446000");
    assert_eq!(tree.attr(1, "duty_cycle"), "1450000");
}

#[test]
fn nan_and_out_of_range_never_reach_the_wire_and_are_counted() {
    let tree = FakeSysfs::new();
    let mut d = driver(&tree);
    d.drive(f32::NAN, 7.0).unwrap();
    assert_eq!(tree.attr(1, "duty_cycle"), "1450000");
    assert_eq!(tree.attr(0, "duty_cycle"), "1311000");
    d.drive(f32::NEG_INFINITY, f32::NAN).unwrap();
    assert_eq!(tree.attr(1, "duty_cycle"), "1200000");
    assert_eq!(tree.attr(0, "duty_cycle"), "1446000");
    let bad = d.bad_commands();
    assert_eq!(bad.nan, 2);
    assert_eq!(bad.out_of_range, 2);
}

#[test]
fn missing_chip_error_lists_what_was_found() {
    let tree = FakeSysfs::new();
    let mut cfg = tree.config();
    cfg.chip_match = "0000:00:99.0".into();
    let err = SysfsPwm::open(&cfg, &Calibration::stock())
        .err()
        .expect("must fail");
    assert!(matches!(err, SysfsError::NoChip { .. }));
    let msg = err.to_string();
    assert!(msg.contains("0000:00:99.0"), "{msg}");
    assert!(msg.contains("pwmchip0 -> "), "{msg}");
    assert!(msg.contains("pwm-lpss"), "{msg}");
    assert!(msg.contains("pwmchip1 -> "), "{msg}");
    assert!(msg.contains("0000:00:17.0"), "{msg}");
}

#[test]
fn no_pwm_class_at_all_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = servo_driver::config::SysfsConfig {
        root: dir.path().to_path_buf(),
        ..Default::default()
    };
    let msg = SysfsPwm::open(&cfg, &Calibration::stock())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("no pwmchip at all"), "{msg}");
    assert!(msg.contains("class/pwm"), "{msg}");
}

#[test]
fn exports_missing_channels_and_power_gate() {
    let tree = FakeSysfs::unexported();
    let mut cfg = tree.config();
    cfg.power_gate_gpio = Some(436);
    let cal = Calibration::stock();
    let pwm = SysfsPwm::open(&cfg, &cal).expect("open with export");
    let _d = ServoDriver::new(cal, Box::new(pwm)).unwrap();
    assert_eq!(
        *tree.exported.lock().unwrap(),
        vec!["pwm0".to_string(), "pwm1".into(), "gpio436".into()]
    );
    assert_eq!(tree.attr(0, "duty_cycle"), "1446000");
    assert_eq!(tree.attr(1, "enable"), "1");
    assert_eq!(tree.gpio(436, "direction"), "out");
    assert_eq!(tree.gpio(436, "value"), "0");
}

#[test]
fn power_gate_already_exported_is_switched_on() {
    let tree = FakeSysfs::new();
    let mut cfg = tree.config();
    cfg.power_gate_gpio = Some(436);
    let _pwm = SysfsPwm::open(&cfg, &Calibration::stock()).unwrap();
    assert_eq!(tree.gpio(436, "direction"), "out");
    assert_eq!(tree.gpio(436, "value"), "0");
    assert_eq!(read(&tree.root().join("class/gpio/export")), "");
}

#[test]
fn export_that_never_appears_is_a_clear_error() {
    let tree = FakeSysfs::dead_export();
    let err = SysfsPwm::open(&tree.config(), &Calibration::stock())
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        matches!(err, SysfsError::ExportTimeout { index: 0, .. }),
        "{msg}"
    );
    assert!(msg.contains("pwmchip1/export"), "{msg}");
    assert_eq!(read(&tree.chip().join("export")), "0");
}

#[test]
fn unwritable_attribute_error_names_the_file() {
    // A directory where the duty_cycle file should be fails for root too.
    let tree = FakeSysfs::new();
    let duty = tree.chip().join("pwm1/duty_cycle");
    fs::remove_file(&duty).unwrap();
    fs::create_dir(&duty).unwrap();
    let msg = SysfsPwm::open(&tree.config(), &Calibration::stock())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("pwmchip1/pwm1/duty_cycle"), "{msg}");
}

/// Permission denied must name the file and say how to fix it. Root
/// ignores file modes, so as root this test re-runs itself as `nobody`.
#[test]
fn permission_denied_names_file_and_suggests_udev_rule() {
    use std::os::unix::fs::PermissionsExt;
    let child_root = std::env::var_os("SERVO_DRIVER_PERM_ROOT");
    // SAFETY: geteuid takes nothing and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if let Some(root) = child_root {
        let cfg = servo_driver::config::SysfsConfig {
            root: root.into(),
            ..Default::default()
        };
        let err = SysfsPwm::open(&cfg, &Calibration::stock()).err().unwrap();
        let msg = err.to_string();
        assert!(matches!(err, SysfsError::Permission { .. }), "{msg}");
        assert!(msg.contains("pwmchip1/pwm0/period"), "{msg}");
        assert!(msg.contains("udev rule"), "{msg}");
        return;
    }
    let tree = FakeSysfs::new();
    // Readable and traversable by everyone, writable by the owner only.
    fs::set_permissions(tree.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    if euid != 0 {
        for ch in 0..2 {
            for f in ["period", "duty_cycle", "enable"] {
                let p = tree.chip().join(format!("pwm{ch}/{f}"));
                fs::set_permissions(&p, fs::Permissions::from_mode(0o444)).unwrap();
            }
        }
        std::env::set_var("SERVO_DRIVER_PERM_ROOT", tree.root());
        return permission_denied_names_file_and_suggests_udev_rule();
    }
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(&exe)
        .args([
            "--exact",
            "permission_denied_names_file_and_suggests_udev_rule",
            "--nocapture",
        ])
        .env("SERVO_DRIVER_PERM_ROOT", tree.root())
        .uid(65534)
        .gid(65534)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(text.contains("1 passed"), "child ran no test: {text}");
        }
        Ok(o)
            if String::from_utf8_lossy(&o.stderr).contains("Permission denied")
                && o.stdout.is_empty() =>
        {
            eprintln!("SKIP: the test binary is not executable by uid 65534 here");
        }
        Ok(o) => panic!(
            "child as nobody failed: {}\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("SKIP: cannot run the test binary as uid 65534: {e}"),
    }
}

#[test]
fn live_calibration_change_takes_effect_and_rewrites_period() {
    let tree = FakeSysfs::new();
    let mut d = driver(&tree);
    let mut cal = Calibration::stock();
    cal.steering.mid = 1_480_000;
    cal.period_ns = 16_666_667;
    d.set_calibration(cal).unwrap();
    d.drive(0.0, 0.0).unwrap();
    assert_eq!(tree.attr(1, "duty_cycle"), "1480000");
    assert_eq!(tree.attr(0, "period"), "16666667");
    assert_eq!(tree.attr(1, "period"), "16666667");
    // An invalid calibration is refused and the old one stays in force.
    let mut bad = cal;
    bad.throttle.mid = 2_600_000;
    let msg = d.set_calibration(bad).unwrap_err().to_string();
    assert_eq!(
        msg,
        "throttle.mid: 2600000 is outside the safe range 500000..=2500000"
    );
    assert_eq!(d.calibration(), &cal);
}

#[test]
fn raw_pulse_is_clamped_into_the_safe_range() {
    let tree = FakeSysfs::new();
    let mut d = driver(&tree);
    assert_eq!(
        d.raw_pulse(servo_driver::Channel::Steering, 1_234_567)
            .unwrap(),
        1_234_567
    );
    assert_eq!(tree.attr(1, "duty_cycle"), "1234567");
    assert_eq!(tree.attr(0, "duty_cycle"), "1446000");
    assert_eq!(
        d.raw_pulse(servo_driver::Channel::Throttle, 9_000_000)
            .unwrap(),
        2_500_000
    );
    assert_eq!(tree.attr(0, "duty_cycle"), "2500000");
    assert_eq!(tree.attr(1, "duty_cycle"), "1234567");
    assert_eq!(
        d.raw_pulse(servo_driver::Channel::Steering, 0).unwrap(),
        500_000
    );
}

#[test]
fn disable_latches_neutral_until_enable() {
    let tree = FakeSysfs::new();
    let mut d = driver(&tree);
    d.drive(1.0, 1.0).unwrap();
    d.disable().unwrap();
    assert_eq!(tree.attr(0, "duty_cycle"), "1446000");
    assert!(d.is_disabled());
    let p = d.drive(1.0, 1.0).unwrap();
    assert_eq!(p.throttle_ns, 1_446_000);
    assert_eq!(tree.attr(0, "duty_cycle"), "1446000");
    assert!(d
        .raw_pulse(servo_driver::Channel::Throttle, 1_600_000)
        .is_err());
    d.enable();
    d.drive(1.0, 1.0).unwrap();
    assert_eq!(tree.attr(0, "duty_cycle"), "1311000");
}

#[test]
fn fresh_process_neutral_path_overrides_a_stale_duty() {
    // `car-runtime neutral`: a previous process died with throttle applied.
    let tree = FakeSysfs::new();
    for ch in 0..2 {
        write(&tree.chip().join(format!("pwm{ch}/period")), "20000000");
        write(&tree.chip().join(format!("pwm{ch}/enable")), "1");
    }
    write(&tree.chip().join("pwm0/duty_cycle"), "1603500");
    write(&tree.chip().join("pwm1/duty_cycle"), "1700000");
    let mut d = servo_driver::open(&tree.actuator_config(), None).expect("open");
    d.neutral().unwrap();
    assert_eq!(tree.attr(0, "duty_cycle"), "1446000");
    assert_eq!(tree.attr(1, "duty_cycle"), "1450000");
    assert_eq!(d.backend(), "sysfs");
}

// ---- the stock board's lights (servo_driver::leds) on the same fake tree

use servo_driver::leds::{
    OnOff, Rgb, StatusLeds, TailLight, STOCK_STATUS_GPIOS, STOCK_TAIL_CHANNELS,
};

#[test]
fn status_leds_export_their_nine_lines_as_outputs_and_write_colours() {
    let tree = FakeSysfs::unexported();
    let mut leds = StatusLeds::open(&tree.root(), &STOCK_STATUS_GPIOS).expect("open");
    assert_eq!(leds.len(), 3);
    let exported = tree.exported.lock().unwrap().clone();
    let want: Vec<String> = STOCK_STATUS_GPIOS
        .iter()
        .flatten()
        .map(|n| format!("gpio{n}"))
        .collect();
    assert_eq!(exported, want);
    for n in STOCK_STATUS_GPIOS.iter().flatten() {
        // "low": output, driven off in the same write.
        assert_eq!(tree.gpio(*n, "direction"), "low", "gpio{n}");
    }
    leds.set(0, OnOff::RED).unwrap();
    leds.set(1, OnOff::CYAN).unwrap();
    leds.set(2, OnOff::OFF).unwrap();
    let v = |n: u32| tree.gpio(n, "value");
    assert_eq!([v(448), v(447), v(437)], ["1", "0", "0"]);
    assert_eq!([v(446), v(445), v(443)], ["0", "1", "1"]);
    assert_eq!([v(450), v(457), v(458)], ["0", "0", "0"]);
    // Unchanged lines are not written again: a value changed behind the
    // writer's back stays as it is until the colour changes.
    write(&tree.root().join("class/gpio/gpio448/value"), "x");
    leds.set(0, OnOff::RED).unwrap();
    assert_eq!(v(448), "x");
    leds.set(0, OnOff::YELLOW).unwrap();
    assert_eq!([v(448), v(447), v(437)], ["x", "1", "0"]);
    leds.set(0, OnOff::OFF).unwrap();
    assert_eq!([v(448), v(447), v(437)], ["0", "0", "0"]);
    // Past the last LED: nothing, no error.
    leds.set(7, OnOff::WHITE).unwrap();
    leds.all_off().unwrap();
    assert!(STOCK_STATUS_GPIOS.iter().flatten().all(|&n| v(n) == "0"));
}

#[test]
fn a_status_led_gpio_that_never_appears_is_an_export_timeout_naming_it() {
    let tree = FakeSysfs::dead_export();
    match StatusLeds::open(&tree.root(), &[[448, 447, 437]]) {
        Err(e @ SysfsError::ExportTimeout { index: 448, .. }) => {
            assert!(e.to_string().contains("gpio448"), "{e}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened LEDs that do not exist"),
    }
}

#[test]
fn the_tail_light_uses_channels_2_to_4_at_the_servo_period_and_never_the_servos() {
    let tree = FakeSysfs::new();
    let _d = driver(&tree);
    let steering_before = tree.attr(1, "duty_cycle");
    let mut tail = TailLight::open(&tree.config(), STOCK_TAIL_CHANNELS, 20_000_000).expect("open");
    for ch in 2..5 {
        assert_eq!(tree.attr(ch, "period"), "20000000");
        assert_eq!(tree.attr(ch, "duty_cycle"), "0");
        assert_eq!(tree.attr(ch, "enable"), "1");
    }
    tail.set(Rgb {
        r: 255,
        g: 128,
        b: 0,
    })
    .unwrap();
    assert_eq!(tree.attr(2, "duty_cycle"), "10000000");
    assert_eq!(tree.attr(3, "duty_cycle"), "5019607");
    assert_eq!(tree.attr(4, "duty_cycle"), "0");
    tail.set(Rgb { r: 0, g: 0, b: 255 }).unwrap();
    assert_eq!(
        [
            tree.attr(2, "duty_cycle"),
            tree.attr(3, "duty_cycle"),
            tree.attr(4, "duty_cycle")
        ],
        ["0", "0", "10000000"]
    );
    // The servos' channels are as the driver left them.
    assert_eq!(tree.attr(1, "duty_cycle"), steering_before);
    assert_eq!(tree.attr(0, "duty_cycle"), "1446000");
    assert_eq!(tree.attr(0, "period"), "20000000");
    // The decoy chip is untouched.
    assert_eq!(read(&tree.decoy().join("pwm2/duty_cycle")), "0");
}

#[test]
fn a_tail_light_on_a_servo_channel_is_refused() {
    let tree = FakeSysfs::new();
    let e = TailLight::open(&tree.config(), [1, 3, 4], 20_000_000)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("pwm1"), "{e}");
    assert!(e.to_string().contains("steering or throttle"), "{e}");
    assert_eq!(
        tree.attr(1, "duty_cycle"),
        "0",
        "nothing written to the servo channel"
    );
}

#[test]
fn tail_levels_map_linearly_onto_the_stock_ten_millisecond_range() {
    assert_eq!(Rgb::duty_ns(0), 0);
    assert_eq!(Rgb::duty_ns(255), 10_000_000);
    assert_eq!(Rgb::duty_ns(1), 39_215);
    let d: Vec<u32> = (0..=255u8).map(Rgb::duty_ns).collect();
    assert!(d.windows(2).all(|w| w[0] < w[1]));
}
