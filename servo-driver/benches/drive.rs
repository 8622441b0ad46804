//! Per-call cost of `ServoDriver::drive` per backend. Prints figures; run
//! with `cargo bench -p servo-driver --bench drive` (add `-- --json` for
//! one JSON object per line).

use servo_driver::config::{Pca9685Config, SysfsConfig};
use servo_driver::pca9685::{Pca9685, Pca9685Model};
use servo_driver::sim::SimActuator;
use servo_driver::sim_link::SimLink;
use servo_driver::sysfs::SysfsPwm;
use servo_driver::{Actuator, Calibration, ServoDriver};
use std::sync::Arc;
use std::time::Instant;

fn fake_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let dev = root.join("devices/pci0000:00/0000:00:17.0");
    std::fs::create_dir_all(&dev).unwrap();
    let chip = root.join("class/pwm/pwmchip0");
    std::fs::create_dir_all(&chip).unwrap();
    std::os::unix::fs::symlink(&dev, chip.join("device")).unwrap();
    for ch in 0..2 {
        let c = chip.join(format!("pwm{ch}"));
        std::fs::create_dir_all(&c).unwrap();
        for f in ["period", "duty_cycle", "enable"] {
            std::fs::write(c.join(f), "0").unwrap();
        }
    }
    dir
}

fn measure(name: &str, json: bool, act: Box<dyn Actuator>, changing: bool) {
    let cal = Calibration::stock();
    let mut d = ServoDriver::new(cal, act).unwrap();
    let n = 200_000u32;
    let t = Instant::now();
    for i in 0..n {
        let v = if changing {
            ((i % 201) as f32 - 100.0) / 100.0
        } else {
            0.25
        };
        d.drive(v, -v).unwrap();
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    let what = if changing {
        "every call changes both pulses"
    } else {
        "unchanged pulses (writes skipped)"
    };
    if json {
        println!("{{\"bench\":\"drive\",\"backend\":\"{name}\",\"changing\":{changing},\"ns_per_call\":{ns:.1}}}");
    } else {
        println!("drive {name:>16}: {ns:>9.1} ns/call  ({what})");
    }
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let cal = Calibration::stock();
    for changing in [true, false] {
        let link = Arc::new(SimLink::default());
        measure("sim", json, Box::new(SimActuator::new(link, cal)), changing);
        let tree = fake_tree();
        let cfg = SysfsConfig {
            root: tree.path().to_path_buf(),
            ..Default::default()
        };
        let pwm = SysfsPwm::open(&cfg, &cal).unwrap();
        measure("sysfs(tmp files)", json, Box::new(pwm), changing);
        let model = Pca9685Model::new();
        let pca = Pca9685::open_with(model.factory(), &Pca9685Config::default(), &cal).unwrap();
        measure("pca9685(model)", json, Box::new(pca), changing);
    }
}
