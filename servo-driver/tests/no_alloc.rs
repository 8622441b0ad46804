//! The hot path allocates nothing: `ServoDriver::drive` through the sim and
//! sysfs backends, counted by a global allocator that tracks this thread.

mod common;

use servo_driver::sim::SimActuator;
use servo_driver::sim_link::SimLink;
use servo_driver::sysfs::SysfsPwm;
use servo_driver::{Calibration, ServoDriver};
use std::sync::Arc;

#[global_allocator]
static A: test_support::alloc::CountingAlloc = test_support::alloc::CountingAlloc;

/// Allocations on this thread while `f` runs (other tests' threads do not count).
fn allocations_during(f: impl FnMut()) -> u64 {
    test_support::alloc::on_this_thread(f).1
}

fn sweep(d: &mut ServoDriver) {
    for i in 0..2000 {
        let v = ((i % 200) as f32 - 100.0) / 90.0; // includes out-of-range
        let s = if i % 97 == 0 { f32::NAN } else { v };
        d.drive(s, -v).unwrap();
    }
}

#[test]
fn drive_allocates_nothing_on_sim_and_sysfs() {
    let cal = Calibration::stock();
    let link = Arc::new(SimLink::default());
    let mut sim = ServoDriver::new(cal, Box::new(SimActuator::new(link, cal))).unwrap();
    sweep(&mut sim); // warm-up
    assert_eq!(allocations_during(|| sweep(&mut sim)), 0, "sim backend");

    let tree = common::FakeSysfs::new();
    let pwm = SysfsPwm::open(&tree.config(), &cal).unwrap();
    let mut sysfs = ServoDriver::new(cal, Box::new(pwm)).unwrap();
    sweep(&mut sysfs);
    assert_eq!(allocations_during(|| sweep(&mut sysfs)), 0, "sysfs backend");
    // The counter works: an allocation in the window is seen.
    assert_eq!(allocations_during(|| drop(vec![1u8; 16])), 1);
}
