//! Every way the process can die that a handler can catch ends with neutral
//! on the wire: each case runs in a child process (this test binary
//! re-executed) that drives full throttle on a fake sysfs board and then
//! dies; the parent checks how it died and what the wire holds.

mod common;

use common::FakeSysfs;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CHILD: &str = "SERVO_FATAL_CHILD";
const ROOT: &str = "SERVO_FATAL_ROOT";

/// Stock calibration: full forward is 1311000 ns, neutral 1446000 ns.
const FULL_THROTTLE: &str = "1311000";
const NEUTRAL_THROTTLE: &str = "1446000";
const NEUTRAL_STEERING: &str = "1450000";

/// The child's side: open the fake board, drive, then die as told.
fn child_main(how: &str) -> ! {
    let root = std::path::PathBuf::from(std::env::var(ROOT).unwrap());
    let cfg = servo_driver::ActuatorConfig {
        backend: servo_driver::BackendKind::Sysfs,
        calibration: root.join("no-such-calibration.json"),
        sysfs: servo_driver::config::SysfsConfig {
            root: root.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    servo_driver::failsafe::install_panic_hook();
    servo_driver::failsafe::install_fatal_handlers();
    let guard = servo_driver::failsafe::SignalGuard::install().unwrap();
    let mut d = servo_driver::open(&cfg, None).unwrap();
    d.drive(0.5, 1.0).unwrap();
    let duty = root.join("class/pwm/pwmchip1/pwm0/duty_cycle");
    assert_eq!(common::read(&duty), FULL_THROTTLE);
    match how {
        "abort" => std::process::abort(),
        "alloc" => {
            // The allocation fails, std reports it and aborts (SIGABRT).
            let v: Vec<u8> = Vec::with_capacity(usize::MAX / 2);
            std::hint::black_box(v);
        }
        // SAFETY: not sound, on purpose: this child process exists to
        // take a real fault (si_code > 0, not a sent signal) and die of it.
        "segv" => unsafe {
            let p = std::hint::black_box(std::ptr::null_mut::<u32>());
            p.write_volatile(1);
        },
        sig => {
            let n: i32 = sig.parse().unwrap();
            // SAFETY: kill on our own pid touches no memory of ours.
            unsafe { libc::kill(libc::getpid(), n) };
        }
    }
    // Graceful signals: the loop's part is to notice the flag and exit;
    // this "loop" is hung, so the guard thread writes neutral (100 ms).
    let t = std::time::Instant::now();
    while !guard.guard_wrote_neutral() && t.elapsed() < std::time::Duration::from_secs(2) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::process::exit(0);
}

fn run_child(how: &str) -> (std::process::ExitStatus, FakeSysfs, String) {
    let tree = FakeSysfs::new();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD, how)
        .env(ROOT, tree.root())
        .output()
        .unwrap();
    (
        out.status,
        tree,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Not a test of its own: the entry point of the child processes.
#[test]
fn child_entry() {
    if let Ok(how) = std::env::var(CHILD) {
        child_main(&how);
    }
}

fn assert_neutral(tree: &FakeSysfs, what: &str, stderr: &str) {
    assert_eq!(
        tree.attr(0, "duty_cycle"),
        NEUTRAL_THROTTLE,
        "throttle after {what}; child stderr:\n{stderr}"
    );
    assert_eq!(
        tree.attr(1, "duty_cycle"),
        NEUTRAL_STEERING,
        "steering after {what}"
    );
}

#[test]
fn fatal_signals_and_real_faults_end_in_neutral_and_still_kill() {
    for (how, sig) in [
        ("abort", libc::SIGABRT),
        ("alloc", libc::SIGABRT),
        ("segv", libc::SIGSEGV),
        ("7", libc::SIGBUS),
        ("4", libc::SIGILL),
        ("8", libc::SIGFPE),
        ("31", libc::SIGSYS),
        ("5", libc::SIGTRAP),
        ("11", libc::SIGSEGV),
    ] {
        let (st, tree, err) = run_child(how);
        assert_eq!(
            st.signal(),
            Some(sig),
            "{how}: the process must still die of its signal ({st}); stderr:\n{err}"
        );
        assert_neutral(&tree, how, &err);
    }
}

#[test]
fn every_terminating_signal_ends_in_neutral() {
    for &sig in servo_driver::failsafe::TERMINATING.iter() {
        let (st, tree, err) = run_child(&sig.to_string());
        // The guard turns the signal into a stop request: the process lives
        // on (its loop would exit cleanly), so it did not die of it.
        assert_eq!(st.signal(), None, "signal {sig}: {st}; stderr:\n{err}");
        assert_neutral(&tree, &format!("signal {sig}"), &err);
    }
}
