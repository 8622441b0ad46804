//! Process-wide failsafe: every live [`crate::ServoDriver`] registers an
//! "emergency neutral" closure here (built from its backend's independent
//! writer). The panic hook and the signal guard call them all.
//!
//! Fault -> what ends it:
//! - drop of the driver: `Drop` writes neutral (in `ServoDriver`);
//! - panic anywhere: [`install_panic_hook`] runs [`emergency_neutral_all`]
//!   before the previous hook, and latches every driver at neutral; except
//!   a panic inside [`catch_panic`] (an inference engine's), which the
//!   caller turns into an error (the control loop's stall rule);
//! - every terminating signal that can be caught (TERM, INT, HUP, QUIT,
//!   USR1, USR2, ALRM, VTALRM, PROF, XCPU, XFSZ, PWR, STKFLT, IO):
//!   [`SignalGuard`] raises a flag the control loop polls; if the loop has
//!   not reported neutral within the grace time (100 ms by default) the
//!   guard thread writes neutral itself;
//! - the fatal signals (ABRT, SEGV, BUS, ILL, FPE, SYS, TRAP): a handler
//!   installed by [`install_fatal_handlers`] writes neutral through the
//!   signal-safe table ([`raw`]), then lets the signal end the process as it
//!   would have. An allocation failure aborts (SIGABRT), so it is covered;
//! - SIGPIPE: the Rust runtime ignores it (a closed socket is an error, not
//!   a death);
//! - explicit `ServoDriver::disable()`;
//! - the process is killed (SIGKILL, OOM) or the power goes: nothing
//!   in-process can help; the service unit runs `car-runtime neutral` (a
//!   fresh process, same backends) in `ExecStopPost`, and the ESC's own
//!   failsafe stops the motor when pulses stop. See `docs/CALIBRATION.md`.

use crate::ActuatorError;
use signal_hook::consts::signal::*;
use signal_hook::iterator::Signals;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod raw;

/// An emergency writer; the argument says whether to latch the driver
/// (keep it at neutral until `enable`) as well.
type Emergency = Arc<dyn Fn(bool) -> Result<(), ActuatorError> + Send + Sync>;

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
    /// Writers that put neutral on the wire.
    pub written: usize,
    /// Writers whose write failed (each printed to stderr): that output may
    /// still be driving.
    pub failed: usize,
}

/// Write neutral through every registered emergency writer now, and latch
/// their drivers. Safe to call from any thread, a panic hook or a signal
/// guard thread (not from a signal handler: it allocates and does I/O).
pub fn emergency_neutral_all() -> NeutralReport {
    run_writers(true)
}

/// Write neutral now through the signal-safe table and every registered
/// writer, *without* latching: the supervisor's call when the control loop
/// misses its deadline (the loop, once it runs again, stops the car itself
/// and the racer can start it again).
pub fn neutral_now() -> NeutralReport {
    let raw = raw::write_all();
    let mut r = run_writers(false);
    // A slot the raw table wrote counts once even if its writer also ran.
    r.written = r.written.max(raw.written as usize);
    r
}

fn run_writers(latch: bool) -> NeutralReport {
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
        match f(latch) {
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
            if CATCHING.with(Cell::get) > 0 {
                // Caught by `catch_panic`: the caller reports an error and
                // its own rules bring the car to neutral; latching here
                // would silently disable every later good model. One short
                // line, and not the previous hook: with RUST_BACKTRACE set
                // it symbolises a backtrace, hundreds of milliseconds on the
                // control thread, at every frame of a broken model.
                static CAUGHT: AtomicU64 = AtomicU64::new(0);
                let n = CAUGHT.fetch_add(1, Ordering::Relaxed) + 1;
                if n <= 3 || n.is_power_of_two() {
                    eprintln!("servo-driver: caught panic #{n} (an error, not latched): {info}");
                }
                return;
            }
            let r = emergency_neutral_all();
            eprintln!(
                "servo-driver: panic: wrote neutral on {} output(s), {} failed",
                r.written, r.failed
            );
            previous(info);
        }));
    });
}

thread_local! {
    static CATCHING: Cell<u32> = const { Cell::new(0) };
}

/// Run `f`, turning a panic into `Err(message)` instead of unwinding
/// further. The panic hook sees that the panic is caught here and does not
/// latch the drivers: the caller owns the consequence (the control loop
/// counts an inference error and its stall rule writes neutral). Costs one
/// thread-local increment and decrement; no allocation unless it panics.
pub fn catch_panic<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    struct Depth;
    impl Drop for Depth {
        fn drop(&mut self) {
            CATCHING.with(|c| c.set(c.get() - 1));
        }
    }
    CATCHING.with(|c| c.set(c.get() + 1));
    let _depth = Depth;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic with a non-text payload".into())
    })
}

/// The signals whose default action ends the process and that a handler
/// can catch, minus the fatal ones below: each starts the graceful stop.
pub const TERMINATING: [i32; 14] = [
    SIGTERM,
    SIGINT,
    SIGHUP,
    SIGQUIT,
    SIGUSR1,
    SIGUSR2,
    SIGALRM,
    SIGVTALRM,
    SIGPROF,
    SIGXCPU,
    SIGXFSZ,
    libc::SIGPWR,
    libc::SIGSTKFLT,
    SIGIO,
];

/// Signals after which the process cannot safely go on: neutral from the
/// handler through [`raw`], then the signal's own effect.
pub const FATAL: [i32; 7] = [SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGSYS, SIGTRAP];

struct OldActions(std::cell::UnsafeCell<[std::mem::MaybeUninit<libc::sigaction>; FATAL.len()]>);
// SAFETY: written once, under `Once`, before any handler that reads it is
// installed; read only by the handlers afterwards.
unsafe impl Sync for OldActions {}
static OLD_ACTIONS: OldActions = OldActions(std::cell::UnsafeCell::new(
    [std::mem::MaybeUninit::uninit(); FATAL.len()],
));

/// Install the fatal-signal handlers (idempotent). Each writes neutral
/// through [`raw::write_all`], prints one line with `write(2)`, then lets
/// the signal do what it would have done: a sent one (kill, raise, abort)
/// is raised again under the default action; a real fault returns to the
/// faulting instruction under the action that was there before (the Rust
/// runtime's stack-overflow reporter for SEGV/BUS, else the default). The
/// process still dies of the signal, with the same status.
pub fn install_fatal_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (i, &sig) in FATAL.iter().enumerate() {
            // SAFETY: sigaction with a zeroed struct we fill; the old action
            // is stored before the new handler can run (sigaction installs
            // atomically and our handler only reads slot i after that).
            unsafe {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = on_fatal as *const () as usize;
                new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut new.sa_mask);
                let old = (*OLD_ACTIONS.0.get())[i].as_mut_ptr();
                libc::sigaction(sig, std::ptr::null(), old);
                libc::sigaction(sig, &new, std::ptr::null_mut());
            }
        }
    });
}

extern "C" fn on_fatal(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let r = raw::write_all();
    let msg: &[u8] = if r.failed == 0 {
        b"servo-driver: fatal signal: neutral written through the signal-safe path\n"
    } else {
        b"servo-driver: fatal signal: a neutral write FAILED\n"
    };
    // SAFETY: write, sigaction and raise are async-signal-safe; the old
    // action was stored before this handler was installed; `info` is the
    // kernel's siginfo for this delivery.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        if info.is_null() || (*info).si_code <= 0 {
            // Sent by a process (kill, or tgkill from raise/abort):
            // returning would just carry on, and the runtime's handler (a
            // stack-overflow reporter) ignores sent signals. Deliver it again
            // under the default action: the process dies of it as it would
            // have without us.
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        } else if let Some(i) = FATAL.iter().position(|&s| s == sig) {
            // Caused by the faulting instruction, which runs again on
            // return and faults under the action that was there before us
            // (the runtime's stack-overflow message, else the default).
            let old = (*OLD_ACTIONS.0.get())[i].as_ptr();
            libc::sigaction(sig, old, std::ptr::null_mut());
        }
    }
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

/// Handling of every [`TERMINATING`] signal for the control loop.
///
/// `install` replaces the default "terminate" action of each: the
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

    /// [`Self::install`] with a chosen grace: how long the loop has, after the
    /// first signal, to call [`Self::neutral_done`] before the guard writes
    /// neutral itself. Fails if the handlers or the guard thread cannot be set up.
    pub fn install_with_grace(grace: Duration) -> std::io::Result<Self> {
        let mut signals = Signals::new(TERMINATING)?;
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

    /// True once a terminating signal arrived. One relaxed load: poll it every
    /// loop iteration.
    #[inline]
    pub fn stop_requested(&self) -> bool {
        self.state.stop.load(Ordering::Relaxed)
    }

    /// The signal that arrived (SIGTERM = 15, SIGHUP = 1, ...), or 0.
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
    /// True once a terminating signal arrived; one relaxed load, poll it every
    /// loop iteration.
    #[inline]
    pub fn stop_requested(&self) -> bool {
        self.0.stop.load(Ordering::Relaxed)
    }
    /// Report that neutral is written; the guard stands down (see
    /// [`SignalGuard::neutral_done`]).
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
