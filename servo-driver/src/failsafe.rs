//! Process-wide failsafe: every live [`crate::ServoDriver`] registers an
//! "emergency neutral" closure here (built from its backend's independent
//! writer). The panic hook and the signal guard call them all.
//!
//! Fault -> what ends it:
//! - drop of the driver: `Drop` writes neutral (in `ServoDriver`);
//! - panic anywhere: [`install_panic_hook`] runs [`emergency_neutral_all`]
//!   before the previous hook, and latches every driver at neutral;
//! - SIGTERM / SIGINT: [`SignalGuard`] raises a flag the control loop polls;
//!   if the loop has not reported neutral within the grace time (100 ms by
//!   default) the guard thread writes neutral itself;
//! - explicit `ServoDriver::disable()`;
//! - the process is killed: nothing in-process can help; the service unit
//!   runs `car-runtime neutral` (a fresh process, same backends) in
//!   `ExecStopPost`. See `docs/CALIBRATION.md`.

use crate::ActuatorError;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Emergency = Arc<dyn Fn() -> Result<(), ActuatorError> + Send + Sync>;

static REGISTRY: Mutex<Vec<(u64, Emergency)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Keeps a closure in the registry; dropping it removes the closure.
pub struct Registration {
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        reg.retain(|(id, _)| *id != self.id);
    }
}

/// Add an emergency-neutral closure. `ServoDriver::new` does this for its
/// backend; call it yourself only for outputs that bypass `ServoDriver`.
pub fn register(f: Emergency) -> Registration {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, f));
    Registration { id }
}

/// Outcome of [`emergency_neutral_all`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeutralReport {
    pub written: usize,
    pub failed: usize,
}

/// Write neutral through every registered emergency writer now, and latch
/// their drivers. Safe to call from any thread, a panic hook or a signal
/// guard thread (not from a signal handler: it allocates and does I/O).
pub fn emergency_neutral_all() -> NeutralReport {
    // Copy out and release the lock before calling: a writer that panics
    // would otherwise re-enter the panic hook and deadlock on the lock.
    let entries: Vec<Emergency> = REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(_, f)| Arc::clone(f))
        .collect();
    let mut report = NeutralReport::default();
    for f in entries {
        match f() {
            Ok(()) => report.written += 1,
            Err(e) => {
                report.failed += 1;
                // eprintln, not only tracing: in a panic the subscriber may
                // be gone, and this line is what a user needs to see.
                eprintln!("servo-driver: emergency neutral failed: {e}");
                tracing::error!(error = %e, "emergency neutral failed");
            }
        }
    }
    report
}

/// How many emergency writers are registered (for tests and diagnostics).
pub fn registered() -> usize {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Chain a panic hook that writes neutral through every registered driver
/// before the previous hook prints the panic. Idempotent.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let r = emergency_neutral_all();
            eprintln!(
                "servo-driver: panic: wrote neutral on {} output(s), {} failed",
                r.written, r.failed
            );
            previous(info);
        }));
    });
}

/// Default time the control loop has to write neutral after SIGTERM/SIGINT
/// before the guard thread does it itself.
pub const DEFAULT_GRACE: Duration = Duration::from_millis(100);

struct GuardState {
    stop: AtomicBool,
    neutral_done: AtomicBool,
    signal: AtomicI32,
    guard_wrote_neutral: AtomicBool,
}

/// SIGTERM / SIGINT handling for the control loop.
///
/// `install` replaces the default "terminate" action of both signals: the
/// process no longer dies on them, it sets [`Self::stop_requested`]. The
/// loop polls that flag every iteration, writes neutral, calls
/// [`Self::neutral_done`] and exits. If it has not done so within the grace
/// time the guard thread calls [`emergency_neutral_all`] (which also
/// latches the drivers, so a late loop cannot undo it). A second signal
/// forces neutral and exits the process with 128 + signal.
pub struct SignalGuard {
    state: Arc<GuardState>,
    handle: signal_hook::iterator::Handle,
    thread: Option<JoinHandle<()>>,
}

impl SignalGuard {
    /// Install with the default 100 ms grace.
    pub fn install() -> std::io::Result<Self> {
        Self::install_with_grace(DEFAULT_GRACE)
    }

    pub fn install_with_grace(grace: Duration) -> std::io::Result<Self> {
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let handle = signals.handle();
        let state = Arc::new(GuardState {
            stop: AtomicBool::new(false),
            neutral_done: AtomicBool::new(false),
            signal: AtomicI32::new(0),
            guard_wrote_neutral: AtomicBool::new(false),
        });
        let st = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("servo-signal-guard".into())
            .spawn(move || {
                for sig in signals.forever() {
                    let first = !st.stop.swap(true, Ordering::SeqCst);
                    st.signal.store(sig, Ordering::SeqCst);
                    if !first {
                        emergency_neutral_all();
                        std::process::exit(128 + sig);
                    }
                    let deadline = Instant::now() + grace;
                    while Instant::now() < deadline && !st.neutral_done.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    if !st.neutral_done.load(Ordering::SeqCst) {
                        let r = emergency_neutral_all();
                        st.guard_wrote_neutral.store(true, Ordering::SeqCst);
                        eprintln!(
                            "servo-driver: control loop did not stop within {grace:?} of signal {sig}; \
                             guard wrote neutral on {} output(s), {} failed",
                            r.written, r.failed
                        );
                    }
                }
            })?;
        Ok(SignalGuard {
            state,
            handle,
            thread: Some(thread),
        })
    }

    /// True once SIGTERM or SIGINT arrived. One relaxed load: poll it every
    /// loop iteration.
    #[inline]
    pub fn stop_requested(&self) -> bool {
        self.state.stop.load(Ordering::Relaxed)
    }

    /// The signal that arrived (SIGTERM = 15, SIGINT = 2), or 0.
    pub fn signal(&self) -> i32 {
        self.state.signal.load(Ordering::SeqCst)
    }

    /// The loop reports that it has written neutral; the guard stands down.
    pub fn neutral_done(&self) {
        self.state.neutral_done.store(true, Ordering::SeqCst);
    }

    /// True if the guard had to write neutral because the loop was late.
    pub fn guard_wrote_neutral(&self) -> bool {
        self.state.guard_wrote_neutral.load(Ordering::SeqCst)
    }

    /// A clonable flag for code that cannot hold the guard itself.
    pub fn stop_flag(&self) -> StopFlag {
        StopFlag(Arc::clone(&self.state))
    }
}

/// See [`SignalGuard::stop_flag`].
#[derive(Clone)]
pub struct StopFlag(Arc<GuardState>);

impl StopFlag {
    #[inline]
    pub fn stop_requested(&self) -> bool {
        self.0.stop.load(Ordering::Relaxed)
    }
    pub fn neutral_done(&self) {
        self.0.neutral_done.store(true, Ordering::SeqCst);
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
