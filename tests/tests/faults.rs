//! The wire-level fault suite: every fault class that can reach the real
//! daemon from outside ends in neutral on the (fake stock) PWM board within
//! its stated bound (ARCHITECTURE.md's safety table). The in-process
//! classes (an engine panic, the dead-man) are in
//! `car-runtime/tests/safety_net.rs`.

use e2e_tests::faults::{self, BadFrame};

/// One fault at a time: each test runs daemons and floods that would
/// otherwise take the two cores from another test's daemon and measure the
/// machine, not the car.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn every_catchable_signal_ends_in_neutral_within_its_bound() {
    let _alone = alone();
    let mut failures = Vec::new();
    for (sigs, bound, must_die) in [
        (&faults::GRACEFUL[..], faults::GRACEFUL_BOUND_MS, false),
        (&faults::FATAL[..], faults::FATAL_BOUND_MS, true),
    ] {
        for &sig in sigs {
            let name = faults::signal_name(sig);
            match faults::signal(sig) {
                Ok(o) => {
                    eprintln!("{name}: neutral after {:.1} ms, {}", o.ms, o.ended);
                    if o.ms > bound {
                        failures.push(format!("{name}: {:.1} ms > {bound} ms", o.ms));
                    }
                    // Graceful: the loop's clean exit. Fatal: the process
                    // still dies of the signal (systemd sees the crash).
                    let died = o.ended.starts_with("killed by signal");
                    if died != must_die {
                        failures.push(format!("{name}: ended with {}", o.ended));
                    }
                }
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn hostile_camera_frames_end_in_neutral_and_the_daemon_lives() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let good = faults::recorded_frames(dir.path());
    assert!(good.len() > 60, "recorded {} frames", good.len());
    let mut failures = Vec::new();
    for kind in BadFrame::ALL {
        match faults::bad_frame(kind, &good) {
            Ok(o) => {
                eprintln!("{}: neutral after {:.1} ms, {}", kind.name(), o.ms, o.ended);
                if o.ms > faults::FRAME_BOUND_MS {
                    failures.push(format!("{}: {:.1} ms", kind.name(), o.ms));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_model_too_slow_for_the_car_trips_the_supervisor_and_the_daemon_lives() {
    let _alone = alone();
    let o = faults::hung_stage().unwrap();
    eprintln!("hung stage: neutral after {:.1} ms, {}", o.ms, o.ended);
    assert!(
        o.ms <= faults::HUNG_BOUND_MS,
        "{:.1} ms > {} ms",
        o.ms,
        faults::HUNG_BOUND_MS
    );
    assert!(o.ended.contains("missed its deadline"), "{}", o.ended);
}

#[test]
fn hostile_model_uploads_are_refused_while_the_old_model_drives() {
    let _alone = alone();
    let mut failures = Vec::new();
    for (kind, outcomes) in faults::bad_uploads(1).unwrap() {
        for o in outcomes {
            eprintln!("{}: refused in {:.1} ms, {}", kind.name(), o.ms, o.ended);
            if o.ms > faults::UPLOAD_BOUND_MS {
                failures.push(format!("{}: {:.1} ms", kind.name(), o.ms));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_estop_through_a_drive_socket_flood_ends_in_neutral_within_its_bound() {
    let _alone = alone();
    for o in faults::estop_drive_flood(3).unwrap() {
        eprintln!(
            "e-stop, drive flood: neutral after {:.1} ms, {}",
            o.ms, o.ended
        );
        assert!(o.ms <= faults::ESTOP_BOUND_MS, "{:.1} ms", o.ms);
    }
}

#[test]
fn the_estop_through_a_connection_flood_ends_in_neutral_and_the_page_answers() {
    let _alone = alone();
    for o in faults::estop_connection_flood(3).unwrap() {
        eprintln!(
            "e-stop, connection flood: neutral after {:.1} ms, {}",
            o.ms, o.ended
        );
        assert!(o.ms <= faults::ESTOP_BOUND_MS, "{:.1} ms", o.ms);
    }
}
