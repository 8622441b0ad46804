//! SIGTERM with a control loop that does not answer: the guard thread
//! writes neutral itself (its own process: signals are process-wide).

mod common;

use common::FakeSysfs;
use servo_driver::failsafe::SignalGuard;
use std::time::{Duration, Instant};

#[test]
fn sigterm_with_a_hung_loop_still_ends_in_neutral() {
    let tree = FakeSysfs::new();
    let mut d = servo_driver::open(&tree.actuator_config(), None).unwrap();
    let guard = SignalGuard::install().unwrap();
    d.drive(0.0, 1.0).unwrap();
    assert_eq!(tree.attr(0, "duty_cycle"), "1311000");
    assert!(!guard.stop_requested());

    // SAFETY: raise sends a signal to this process; the guard handles it.
    unsafe { libc::raise(libc::SIGTERM) };
    let start = Instant::now();
    while !guard.stop_requested() {
        assert!(start.elapsed() < Duration::from_secs(5), "flag never set");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(guard.signal(), libc::SIGTERM);
    // The "loop" is hung: it never writes neutral nor reports it.
    while !guard.guard_wrote_neutral() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "guard never acted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(tree.attr(0, "duty_cycle"), "1446000");
    assert_eq!(tree.attr(1, "duty_cycle"), "1450000");
    assert!(d.is_disabled(), "a late loop cannot drive again");
}
