//! The panic hook writes neutral through every registered backend (its own
//! process: the hook and the registry are process-wide).

mod common;

use common::FakeSysfs;
use servo_driver::config::Pca9685Config;
use servo_driver::pca9685::{Output, Pca9685, Pca9685Model};
use servo_driver::{failsafe, Calibration, ServoDriver};

#[test]
fn panic_anywhere_puts_every_output_at_neutral_and_latches() {
    let tree = FakeSysfs::new();
    let mut sysfs = servo_driver::open(&tree.actuator_config(), None).unwrap();
    let model = Pca9685Model::new();
    let cal = Calibration::stock();
    let pca = Pca9685::open_with(model.factory(), &Pca9685Config::default(), &cal).unwrap();
    let mut pca = ServoDriver::new(cal, Box::new(pca)).unwrap();
    assert_eq!(failsafe::registered(), 2);

    sysfs.drive(1.0, 1.0).unwrap();
    pca.drive(1.0, 1.0).unwrap();
    assert_eq!(tree.attr(0, "duty_cycle"), "1311000");
    assert_eq!(model.output(0), Output::Pulse { on: 0, off: 269 });

    failsafe::install_panic_hook();
    failsafe::install_panic_hook(); // idempotent
    let r = std::thread::spawn(|| panic!("inference thread blew up")).join();
    assert!(r.is_err());

    // The hook wrote neutral while both drivers were still alive.
    assert_eq!(tree.attr(0, "duty_cycle"), "1446000");
    assert_eq!(tree.attr(1, "duty_cycle"), "1450000");
    assert_eq!(model.output(0), Output::Pulse { on: 0, off: 296 });
    assert_eq!(model.output(1), Output::Pulse { on: 0, off: 297 });

    // The control thread cannot undo it: drive keeps writing neutral.
    assert!(sysfs.is_disabled() && pca.is_disabled());
    sysfs.drive(1.0, 1.0).unwrap();
    pca.drive(1.0, 1.0).unwrap();
    assert_eq!(tree.attr(0, "duty_cycle"), "1446000");
    assert_eq!(model.output(0), Output::Pulse { on: 0, off: 296 });

    // Re-armed explicitly, both drive again (their write caches were reset).
    sysfs.enable();
    pca.enable();
    sysfs.drive(1.0, 1.0).unwrap();
    pca.drive(1.0, 1.0).unwrap();
    assert_eq!(tree.attr(0, "duty_cycle"), "1311000");
    assert_eq!(model.output(0), Output::Pulse { on: 0, off: 269 });

    drop(sysfs);
    drop(pca);
    assert_eq!(failsafe::registered(), 0);
    assert_eq!(failsafe::emergency_neutral_all().written, 0);
}
