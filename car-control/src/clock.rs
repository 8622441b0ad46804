//! CLOCK_MONOTONIC in nanoseconds: the clock V4L2 stamps frames with, so
//! capture-to-PWM latency compares like with like.

/// CLOCK_MONOTONIC now, ns: the clock of frame timestamps, received commands
/// and the loop's heartbeat on a car.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleep until the monotonic clock reaches `deadline_ns` (no-op if past).
pub fn sleep_until(deadline_ns: u64) {
    let now = monotonic_ns();
    if deadline_ns > now {
        std::thread::sleep(std::time::Duration::from_nanos(deadline_ns - now));
    }
}
