//! The status LEDs and tail light as the daemon drives them, on a fake
//! sysfs tree laid out like the stock board's (a pwmchip on PCI 0000:00:17.0
//! with its five channels exported, the nine LED GPIO lines, a Wi-Fi
//! interface that is up).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use car_runtime::config::{Config, SourceKind};
use car_runtime::daemon::{assemble, RunOptions};
use car_runtime::lights::LightsBackend;
use servo_driver::leds::STOCK_STATUS_GPIOS;

fn put(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

fn get(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The fake board; returns (root, pwmchip dir).
fn board(root: &Path) -> PathBuf {
    let dev = root.join("devices/pci0000:00/0000:00:17.0");
    std::fs::create_dir_all(&dev).unwrap();
    let chip = root.join("class/pwm/pwmchip0");
    std::fs::create_dir_all(&chip).unwrap();
    std::os::unix::fs::symlink(&dev, chip.join("device")).unwrap();
    put(&chip.join("export"), "");
    for c in 0..5 {
        for f in ["period", "duty_cycle", "enable"] {
            put(&chip.join(format!("pwm{c}/{f}")), "0\n");
        }
    }
    put(&root.join("class/gpio/export"), "");
    for n in STOCK_STATUS_GPIOS.iter().flatten() {
        put(&root.join(format!("class/gpio/gpio{n}/direction")), "in\n");
        put(&root.join(format!("class/gpio/gpio{n}/value")), "0\n");
    }
    put(&root.join("class/net/lo/operstate"), "unknown\n");
    put(&root.join("class/net/wlan0/operstate"), "up\n");
    chip
}

fn leds(root: &Path) -> Vec<[String; 3]> {
    STOCK_STATUS_GPIOS
        .iter()
        .map(|l| l.map(|n| get(&root.join(format!("class/gpio/gpio{n}/value")))))
        .collect()
}

fn on(r: u8, g: u8, b: u8) -> [String; 3] {
    [r, g, b].map(|v| v.to_string())
}

#[test]
fn a_running_daemon_shows_ready_and_connected_on_the_leds_and_the_kept_tail_colour() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("sys");
    let chip = board(&root);
    let mut cfg = Config::default();
    cfg.source.kind = SourceKind::Sim;
    cfg.model.backend = car_runtime::config::BackendChoice::Tract;
    cfg.actuator.backend = servo_driver::BackendKind::Sim;
    cfg.actuator.calibration = t.path().join("calibration.json");
    cfg.actuator.sysfs.root = root.clone();
    cfg.lights.backend = LightsBackend::Deepracer;
    cfg.lights.stock_led_values = t.path().join("no-stock-file.json");
    cfg.web.address = "127.0.0.1:0".into();
    cfg.web.state_dir = Some(t.path().join("state"));
    // The racer chose orange on an earlier run.
    put(
        &t.path().join("tail-light.json"),
        r#"{"r": 255, "g": 128, "b": 0}"#,
    );
    let run = RunOptions {
        duration: Some(Duration::from_millis(2500)),
        ..RunOptions::default()
    };
    let d = assemble(cfg, &run, None).unwrap();
    // The tail light is on before the loop runs.
    let duty = |c: u32| get(&chip.join(format!("pwm{c}/duty_cycle")));
    assert_eq!([duty(2), duty(3), duty(4)], ["10000000", "5019607", "0"]);
    assert_eq!(get(&chip.join("pwm2/period")), "20000000");
    let handle = std::thread::spawn(move || d.run().unwrap());
    // Ready (a model, stopped): LED 1 green. On a network, no phone: LED 2
    // blue. No gauge: LED 3 dark.
    let want = vec![on(0, 1, 0), on(0, 0, 1), on(0, 0, 0)];
    let t0 = Instant::now();
    while leds(&root) != want {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "LEDs {:?}, want {want:?}",
            leds(&root)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The Wi-Fi drops: LED 2 blinks yellow (on half of each second).
    put(&root.join("class/net/wlan0/operstate"), "down\n");
    let mut seen = std::collections::HashSet::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1200) {
        seen.insert(leds(&root)[1].clone());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen.contains(&on(1, 1, 0)), "{seen:?}");
    assert!(seen.contains(&on(0, 0, 0)), "{seen:?}");
    let out = handle.join().unwrap();
    assert_eq!(
        out.summary.last_pulses,
        Some(servo_driver::Calibration::stock().neutral())
    );
    // Ended: the status LEDs are dark; the tail light keeps the colour;
    // the servo channels were never the lights'.
    assert_eq!(leds(&root), vec![on(0, 0, 0), on(0, 0, 0), on(0, 0, 0)]);
    assert_eq!(duty(2), "10000000");
    assert_eq!([duty(0), duty(1)], ["0", "0"]);
}

#[test]
fn a_board_without_the_lights_drives_the_same() {
    // backend = "deepracer" on a machine with no such GPIO or pwmchip: the
    // error is logged, the daemon runs and ends in neutral.
    let t = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.source.kind = SourceKind::Sim;
    cfg.model.backend = car_runtime::config::BackendChoice::Tract;
    cfg.actuator.backend = servo_driver::BackendKind::Sim;
    cfg.actuator.calibration = t.path().join("calibration.json");
    cfg.actuator.sysfs.root = t.path().join("empty-sys");
    cfg.lights.backend = LightsBackend::Deepracer;
    cfg.web.address = "127.0.0.1:0".into();
    cfg.web.state_dir = Some(t.path().join("state"));
    let run = RunOptions {
        duration: Some(Duration::from_millis(800)),
        ..RunOptions::default()
    };
    let t0 = Instant::now();
    let out = assemble(cfg, &run, None).unwrap().run().unwrap();
    assert_eq!(
        out.summary.last_pulses,
        Some(servo_driver::Calibration::stock().neutral())
    );
    // No export wait per missing line: the whole run stays short.
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
}
