//! The PCA9685 backend against the in-memory register model of the chip.

use servo_driver::config::Pca9685Config;
use servo_driver::pca9685::*;
use servo_driver::{Calibration, ServoDriver};

fn cfg() -> Pca9685Config {
    Pca9685Config::default()
}

fn open(model: &Pca9685Model, cfg: &Pca9685Config) -> ServoDriver {
    let cal = Calibration::stock();
    let pca = Pca9685::open_with(model.factory(), cfg, &cal).expect("open");
    ServoDriver::new(cal, Box::new(pca)).expect("driver")
}

/// OFF registers (L, H) of a channel.
fn off(model: &Pca9685Model, ch: u8) -> (u8, u8) {
    let b = channel_base(ch);
    (model.reg(b + 2), model.reg(b + 3))
}

#[test]
fn cold_init_sequence_and_registers_are_exact() {
    let model = Pca9685Model::new();
    assert_eq!(model.output(0), Output::Stopped, "power-on: asleep");
    let _d = open(&model, &cfg());
    // 25 MHz / (4096 * 50 Hz) = 122.07 -> PRE_SCALE 121; one count = 4880 ns.
    // Throttle mid 1446000 ns -> 296.3 -> 296 = 0x128; steering mid
    // 1450000 ns -> 297.1 -> 297 = 0x129.
    let b0 = channel_base(0);
    let b1 = channel_base(1);
    assert_eq!(
        model.writes(),
        vec![
            (MODE1, 0x31), // sleep + auto-increment + allcall
            (PRE_SCALE, 121),
            (MODE2, 0x04), // totem pole
            (b0, 0),
            (b0 + 1, 0),
            (b0 + 2, 0x28),
            (b0 + 3, 0x01),
            (b1, 0),
            (b1 + 1, 0),
            (b1 + 2, 0x29),
            (b1 + 3, 0x01),
            (MODE1, 0x21), // wake
            (MODE1, 0xA1), // restart
        ]
    );
    assert_eq!(model.reg(MODE1), 0x21, "awake, RESTART cleared");
    assert_eq!(model.reg(PRE_SCALE), 121);
    assert_eq!(model.ignored_prescale_writes(), 0);
    assert_eq!(model.early_restarts(), 0, "waited for the oscillator");
    assert_eq!(model.output(0), Output::Pulse { on: 0, off: 296 });
    assert_eq!(model.output(1), Output::Pulse { on: 0, off: 297 });
    assert_eq!(model.output(2), Output::FullOff, "other channels untouched");
    assert!((model.frequency_hz() - 50.03).abs() < 0.01);
    let ns = model.pulse_ns(0).unwrap();
    assert!((ns - 1_446_000.0).abs() <= 4880.0 / 2.0, "{ns}");
}

#[test]
fn drive_writes_only_changed_registers() {
    let model = Pca9685Model::new();
    let mut d = open(&model, &cfg());
    model.clear_writes();
    // Steering +1 -> 1700000 ns -> 348.4 -> 348 = 0x15C: only OFF_L of
    // channel 1 changes (0x29 -> 0x5C; OFF_H stays 0x01).
    d.drive(1.0, 0.0).unwrap();
    assert_eq!(model.writes(), vec![(channel_base(1) + 2, 0x5C)]);
    model.clear_writes();
    d.drive(1.0, 0.0).unwrap();
    assert!(model.writes().is_empty(), "unchanged: no bus traffic");
    // Throttle +1 (polarity -1) -> min 1311000 ns -> 268.6 -> 269 = 0x10D.
    d.drive(1.0, 1.0).unwrap();
    assert_eq!(model.writes(), vec![(channel_base(0) + 2, 0x0D)]);
    assert_eq!(off(&model, 0), (0x0D, 0x01));
    assert_eq!(model.output(1), Output::Pulse { on: 0, off: 348 });
}

#[test]
fn both_bytes_change_in_the_safer_order() {
    let model = Pca9685Model::new();
    let mut cal = Calibration::stock();
    cal.steering.min = 1_000_000; // 205 counts = 0x0CD
    let pca = Pca9685::open_with(model.factory(), &cfg(), &cal).unwrap();
    let mut d = ServoDriver::new(cal, Box::new(pca)).unwrap();
    model.clear_writes();
    // 0x129 -> 0x0CD: low first leaves 0x1CD (too long) in between, high
    // first leaves 0x029 (41 counts, a pulse servos ignore): high first.
    d.drive(-1.0, 0.0).unwrap();
    let b = channel_base(1);
    assert_eq!(model.writes(), vec![(b + 3, 0x00), (b + 2, 0xCD)]);
    assert_eq!(model.output(1), Output::Pulse { on: 0, off: 0xCD });
}

#[test]
fn warm_open_does_not_stop_the_outputs() {
    let model = Pca9685Model::new();
    let d = open(&model, &cfg());
    drop(d);
    model.clear_writes();
    // `car-runtime neutral` in a fresh process: chip already at 50 Hz.
    let _d = open(&model, &cfg());
    let w = model.writes();
    assert!(
        w.iter().all(|&(r, v)| r != MODE1 || v & MODE1_SLEEP == 0),
        "no sleep on a running chip: {w:?}"
    );
    assert!(w.iter().all(|&(r, _)| r != PRE_SCALE));
    assert_eq!(model.output(0), Output::Pulse { on: 0, off: 296 });
}

#[test]
fn oscillator_trim_and_frequency_change_prescale_and_counts() {
    let model = Pca9685Model::new();
    let cfg = Pca9685Config {
        frequency_hz: 60.0,
        oscillator_hz: 26_000_000,
        throttle_channel: 4,
        steering_channel: 7,
        ..Default::default()
    };
    let cal = Calibration::stock();
    let pca = Pca9685::open_with(model.factory(), &cfg, &cal).unwrap();
    // 26e6 / (4096 * 60) = 105.8 -> 106 - 1 = 105.
    assert_eq!(pca.prescale(), 105);
    assert_eq!(model.reg(PRE_SCALE), 105);
    let tick = 106.0 * 1e9 / 26e6; // 4076.9 ns
    assert!((pca.tick_ns() - tick).abs() < 1e-9);
    let mut d = ServoDriver::new(cal, Box::new(pca)).unwrap();
    d.drive(-1.0, 0.0).unwrap();
    // Steering min 1200000 / 4076.9 = 294.3 -> 294.
    assert_eq!(model.output(7), Output::Pulse { on: 0, off: 294 });
    assert_eq!(model.output(4), Output::Pulse { on: 0, off: 355 }); // 1446000/4076.9 = 354.7
    assert_eq!(model.output(0), Output::FullOff);
}

#[test]
fn every_command_lands_within_one_count_of_the_calibrated_pulse() {
    let model = Pca9685Model::new();
    let mut d = open(&model, &cfg());
    let cal = Calibration::stock();
    let tick = tick_ns(25_000_000, 121);
    for i in -20..=20 {
        let v = i as f32 / 20.0;
        d.drive(v, -v).unwrap();
        let want_s = cal.steering.pulse_ns(v) as f64;
        let want_t = cal.throttle.pulse_ns(-v) as f64;
        let got_s = model.pulse_ns(1).unwrap();
        let got_t = model.pulse_ns(0).unwrap();
        assert!(
            (got_s - want_s).abs() <= tick / 2.0 + 1e-6,
            "v={v}: {got_s} vs {want_s}"
        );
        assert!(
            (got_t - want_t).abs() <= tick / 2.0 + 1e-6,
            "v={v}: {got_t} vs {want_t}"
        );
    }
}

#[test]
fn model_ignores_prescale_while_awake_and_needs_restart_after_sleep() {
    let model = Pca9685Model::new();
    let _d = open(&model, &cfg());
    let mut dev = model.device();
    dev.write_byte_data(PRE_SCALE, 3).unwrap();
    assert_eq!(model.reg(PRE_SCALE), 121);
    assert_eq!(model.ignored_prescale_writes(), 1);
    // Sleep with PWM running: RESTART reads 1, outputs stop.
    dev.write_byte_data(MODE1, 0x31).unwrap();
    assert_eq!(model.reg(MODE1) & MODE1_RESTART, MODE1_RESTART);
    assert_eq!(model.output(0), Output::Stopped);
    // Wake without restart: still stopped.
    dev.write_byte_data(MODE1, 0x21).unwrap();
    assert_eq!(model.output(0), Output::Stopped);
    std::thread::sleep(std::time::Duration::from_millis(1));
    dev.write_byte_data(MODE1, 0xA1).unwrap();
    assert_eq!(model.output(0), Output::Pulse { on: 0, off: 296 });
    // ALL_LED registers read back as 0 and write every channel.
    dev.write_byte_data(ALL_LED_ON_L + 3, 0x10).unwrap();
    assert_eq!(dev.read_byte_data(ALL_LED_ON_L + 3).unwrap(), 0);
    assert_eq!(model.output(0), Output::FullOff);
    assert_eq!(model.output(15), Output::FullOff);
}

#[test]
fn bus_failure_is_reported_and_recovery_rewrites_everything() {
    let model = Pca9685Model::new();
    let mut d = open(&model, &cfg());
    d.drive(0.5, 0.5).unwrap();
    model.set_fail_writes(true);
    let err = d.drive(1.0, 1.0).unwrap_err().to_string();
    assert!(err.contains("pca9685 channel 0"), "{err}");
    assert!(err.contains("Input/output error"), "{err}");
    model.set_fail_writes(false);
    model.clear_writes();
    d.drive(1.0, 1.0).unwrap();
    // The failed channel's cache is unknown: both its bytes go out again;
    // the steering channel only changes its low byte (0x143 -> 0x15C).
    let (b0, b1) = (channel_base(0), channel_base(1));
    assert_eq!(
        model.writes(),
        vec![(b0 + 2, 0x0D), (b0 + 3, 0x01), (b1 + 2, 0x5C)]
    );
    assert_eq!(model.output(0), Output::Pulse { on: 0, off: 269 });
    assert_eq!(model.output(1), Output::Pulse { on: 0, off: 348 });
}

#[test]
fn missing_bus_error_names_bus_and_hint() {
    let cfg = Pca9685Config {
        bus: "/dev/i2c-does-not-exist".into(),
        ..Default::default()
    };
    let msg = Pca9685::open_linux(&cfg, &Calibration::stock())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("/dev/i2c-does-not-exist @ 0x40"), "{msg}");
    assert!(msg.contains("modprobe i2c-dev"), "{msg}");
}

#[test]
fn a_non_pca_device_is_refused() {
    // A register file where PRE_SCALE does not stick (e.g. another chip).
    struct NotPca([u8; 256]);
    impl SmbusDevice for NotPca {
        fn read_byte_data(&mut self, reg: u8) -> std::io::Result<u8> {
            Ok(self.0[reg as usize])
        }
        fn write_byte_data(&mut self, reg: u8, v: u8) -> std::io::Result<()> {
            if reg != PRE_SCALE {
                self.0[reg as usize] = v;
            }
            Ok(())
        }
        fn describe(&self) -> String {
            "other-chip".into()
        }
    }
    let f: DeviceFactory = std::sync::Arc::new(|| Ok(Box::new(NotPca([0; 256])) as _));
    let msg = Pca9685::open_with(f, &cfg(), &Calibration::stock())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("PRE_SCALE reads 0 after writing 121"), "{msg}");
}
