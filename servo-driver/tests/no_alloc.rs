//! The hot path allocates nothing: `ServoDriver::drive` through the sim and
//! sysfs backends, counted by a global allocator that tracks this thread.

mod common;

use servo_driver::sim::SimActuator;
use servo_driver::sim_link::SimLink;
use servo_driver::sysfs::SysfsPwm;
use servo_driver::{Calibration, ServoDriver};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

struct Counting;

thread_local! {
    static COUNT: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| {
            if c.get() {
                ALLOCS.with(|a| a.set(a.get() + 1));
            }
        });
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = COUNT.try_with(|c| {
            if c.get() {
                ALLOCS.with(|a| a.set(a.get() + 1));
            }
        });
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocations_during(mut f: impl FnMut()) -> u64 {
    ALLOCS.with(|a| a.set(0));
    COUNT.with(|c| c.set(true));
    f();
    COUNT.with(|c| c.set(false));
    ALLOCS.with(|a| a.get())
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
