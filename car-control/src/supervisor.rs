//! The safety net outside the control thread.
//!
//! Every rule in the arbiter (stall, dead-man, e-stop) runs *on* the control
//! thread, so a stage that never returns (a decoder walking a frame's
//! forged 65535x65535 header, an engine stuck in a pathological graph, a
//! blocked write) would keep the last throttle on the wire with every rule
//! silenced. The supervisor is a separate thread that shares nothing with
//! the loop but two atomics: the loop stores CLOCK_MONOTONIC at the end of
//! every tick ([`crate::commands::Shared::heartbeat_ns`]) and whether its
//! last write left anything but neutral on the wire (`wire_live`); when the
//! heartbeat is older than the bound and the wire is live, the supervisor
//! writes neutral through the
//! failsafe's independent writers ([`servo_driver::failsafe::neutral_now`]:
//! the signal-safe descriptors and each backend's reopened path, never the
//! loop's handle) and raises `supervisor_tripped`. When the loop runs again
//! it sees the flag before its next write, stops the car and tells the
//! phone; the racer starts it again.
//!
//! Bound: the check runs every [`CHECK_EVERY`] and trips once the heartbeat
//! is older than `bound - CHECK_EVERY`, so neutral is on the wire within
//! `bound` of the last completed tick (plus the write itself).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::monotonic_ns;
use crate::commands::{event, Shared};

/// How often the supervisor looks at the heartbeat.
pub const CHECK_EVERY: Duration = Duration::from_millis(5);

/// The running supervisor; dropping it stops the thread.
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Watch `shared.heartbeat_ns`; write neutral when no tick completed
    /// within `bound`.
    pub fn start(shared: Arc<Shared>, bound: Duration) -> std::io::Result<Supervisor> {
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let trip_after = bound.saturating_sub(CHECK_EVERY).as_nanos() as u64;
        let thread = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || {
                // The heartbeat value of the hang already handled: one
                // neutral write per hang, not one per check.
                let mut handled = 0;
                while !st.load(Ordering::Relaxed) {
                    std::thread::sleep(CHECK_EVERY);
                    let beat = shared.heartbeat_ns.load(Ordering::Acquire);
                    if beat == 0 || beat == handled {
                        continue;
                    }
                    let late = monotonic_ns().saturating_sub(beat);
                    // Neutral already on the wire: nothing to make safe, and
                    // the car resumes by itself as after any stall.
                    if late <= trip_after || !shared.wire_live.load(Ordering::Acquire) {
                        continue;
                    }
                    let r = servo_driver::failsafe::neutral_now();
                    handled = beat;
                    shared.supervisor_trips.fetch_add(1, Ordering::Relaxed);
                    shared.supervisor_tripped.store(true, Ordering::Release);
                    shared.set_event(event::LOOP_STALLED);
                    tracing::error!(
                        late_ms = late / 1_000_000,
                        written = r.written,
                        failed = r.failed,
                        "control loop missed its deadline: supervisor wrote neutral"
                    );
                }
            })?;
        Ok(Supervisor {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
