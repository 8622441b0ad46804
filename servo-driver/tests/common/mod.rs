//! A fake sysfs tree in a temp dir, laid out like the stock DeepRacer board:
//! a decoy pwmchip0 on another device, the real one (pwmchip1) whose
//! `device` symlink resolves to `.../0000:00:17.0`, and the power-gate GPIO.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct FakeSysfs {
    pub dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    pub exported: Arc<Mutex<Vec<String>>>,
}

pub fn write(p: &Path, s: &str) {
    fs::write(p, s).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

pub fn read(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn make_channel(chip: &Path, n: u32) {
    let ch = chip.join(format!("pwm{n}"));
    fs::create_dir_all(&ch).unwrap();
    for f in ["period", "duty_cycle", "enable"] {
        write(&ch.join(f), "0\n");
    }
    write(&ch.join("polarity"), "normal\n");
}

fn make_chip(root: &Path, name: &str, device: &str, channels: bool) -> PathBuf {
    let dev = root.join("devices").join(device);
    fs::create_dir_all(&dev).unwrap();
    let chip = root.join("class/pwm").join(name);
    fs::create_dir_all(&chip).unwrap();
    std::os::unix::fs::symlink(&dev, chip.join("device")).unwrap();
    write(&chip.join("export"), "");
    write(&chip.join("unexport"), "");
    write(&chip.join("npwm"), "5\n");
    if channels {
        for n in 0..5 {
            make_channel(&chip, n);
        }
    }
    chip
}

impl FakeSysfs {
    /// Channels already exported.
    pub fn new() -> Self {
        Self::build(true)
    }

    /// Channels not exported; a helper thread plays the kernel: when a
    /// number is written to `export` it creates `pwmN/` (and `gpioN/`).
    pub fn unexported() -> Self {
        let t = Self::build(false);
        let stop = Arc::clone(&t.stop);
        let log = Arc::clone(&t.exported);
        let root = t.root();
        std::thread::spawn(move || {
            let chip = root.join("class/pwm/pwmchip1");
            let gpio = root.join("class/gpio");
            while !stop.load(Ordering::Relaxed) {
                let s = fs::read_to_string(chip.join("export")).unwrap_or_default();
                if let Ok(n) = s.trim().parse::<u32>() {
                    log.lock().unwrap().push(format!("pwm{n}"));
                    make_channel(&chip, n);
                    write(&chip.join("export"), "");
                }
                let s = fs::read_to_string(gpio.join("export")).unwrap_or_default();
                if let Ok(n) = s.trim().parse::<u32>() {
                    log.lock().unwrap().push(format!("gpio{n}"));
                    let g = gpio.join(format!("gpio{n}"));
                    fs::create_dir_all(&g).unwrap();
                    write(&g.join("direction"), "in\n");
                    write(&g.join("value"), "1\n");
                    write(&gpio.join("export"), "");
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        t
    }

    /// Channels not exported and nobody answering the export.
    pub fn dead_export() -> Self {
        Self::build(false)
    }

    fn build(channels: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        make_chip(root, "pwmchip0", "platform/INT3453:00/pwm-lpss", channels);
        make_chip(root, "pwmchip1", "pci0000:00/0000:00:17.0", channels);
        let gpio = root.join("class/gpio");
        fs::create_dir_all(&gpio).unwrap();
        write(&gpio.join("export"), "");
        if channels {
            let g = gpio.join("gpio436");
            fs::create_dir_all(&g).unwrap();
            write(&g.join("direction"), "in\n");
            write(&g.join("value"), "1\n");
        }
        FakeSysfs {
            dir,
            stop: Arc::new(AtomicBool::new(false)),
            exported: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn chip(&self) -> PathBuf {
        self.root().join("class/pwm/pwmchip1")
    }

    pub fn decoy(&self) -> PathBuf {
        self.root().join("class/pwm/pwmchip0")
    }

    pub fn attr(&self, channel: u32, name: &str) -> String {
        read(&self.chip().join(format!("pwm{channel}/{name}")))
    }

    pub fn gpio(&self, n: u32, name: &str) -> String {
        read(&self.root().join(format!("class/gpio/gpio{n}/{name}")))
    }

    pub fn config(&self) -> servo_driver::config::SysfsConfig {
        servo_driver::config::SysfsConfig {
            root: self.root(),
            ..Default::default()
        }
    }

    pub fn actuator_config(&self) -> servo_driver::ActuatorConfig {
        servo_driver::ActuatorConfig {
            backend: servo_driver::BackendKind::Sysfs,
            calibration: self.root().join("no-such-calibration.json"),
            sysfs: self.config(),
            ..Default::default()
        }
    }
}

impl Drop for FakeSysfs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
