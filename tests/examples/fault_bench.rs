//! Prints the wire-level fault table: for each fault class, the time from
//! the fault to neutral on a fake stock PWM board, median and worst of N
//! runs of the real daemon, against the stated bound; then the hostile
//! model uploads (time to the refusal while the old model drives on).
//!
//!     cargo run --release -p e2e-tests --example fault_bench [-- RUNS]

use e2e_tests::faults::{self, BadFrame, Outcome};

fn print_row(fault: &str, bound: f64, mut ms: Vec<f64>, ended: &str) {
    ms.sort_by(f64::total_cmp);
    let (med, max) = (ms[ms.len() / 2], ms[ms.len() - 1]);
    let ok = if max <= bound { "yes" } else { "NO" };
    println!("| {fault} | {med:.1} | {max:.1} | {bound:.0} | {ok} | {ended} |");
}

fn failed(fault: &str, bound: f64, e: &str) {
    println!("| {fault} | FAILED: {e} | | {bound} | no |");
}

/// `runs` separate runs of `f`.
fn row(fault: &str, bound: f64, runs: usize, mut f: impl FnMut() -> Result<Outcome, String>) {
    let mut ms = Vec::new();
    let mut ended = String::new();
    for _ in 0..runs {
        match f() {
            Ok(o) => {
                ms.push(o.ms);
                ended = o.ended;
            }
            Err(e) => return failed(fault, bound, &e),
        }
    }
    print_row(fault, bound, ms, &ended);
}

/// Outcomes measured together (one daemon for all runs).
fn row_of(fault: &str, bound: f64, r: Result<Vec<Outcome>, String>) {
    match r {
        Ok(v) if !v.is_empty() => {
            let ended = v.last().map(|o| o.ended.clone()).unwrap_or_default();
            print_row(fault, bound, v.iter().map(|o| o.ms).collect(), &ended);
        }
        Ok(_) => failed(fault, bound, "no runs"),
        Err(e) => failed(fault, bound, &e),
    }
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    println!("fault -> neutral on the wire, ms ({runs} runs each)\n");
    println!("| fault | median | worst | bound | within | daemon then |");
    println!("|---|---|---|---|---|---|");
    for &sig in &faults::GRACEFUL {
        row(
            &format!("{} (graceful stop)", faults::signal_name(sig)),
            faults::GRACEFUL_BOUND_MS,
            runs,
            || faults::signal(sig),
        );
    }
    for &sig in &faults::FATAL {
        row(
            &format!("{} (fatal, sent)", faults::signal_name(sig)),
            faults::FATAL_BOUND_MS,
            runs,
            || faults::signal(sig),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let good = faults::recorded_frames(dir.path());
    for kind in BadFrame::ALL {
        row(kind.name(), faults::FRAME_BOUND_MS, runs, || {
            faults::bad_frame(kind, &good)
        });
    }
    row(
        "hung stage: a valid model too slow for the car, loaded while driving",
        faults::HUNG_BOUND_MS,
        runs,
        faults::hung_stage,
    );
    row_of(
        "e-stop (HTTP) while 4 drive sockets flood manual commands",
        faults::ESTOP_BOUND_MS,
        faults::estop_drive_flood(runs),
    );
    row_of(
        &format!(
            "e-stop (HTTP, logged-in phone) while {} idle + slowloris connections flood a cap of {}",
            faults::FLOOD_CONNECTIONS,
            faults::FLOOD_CAP
        ),
        faults::ESTOP_BOUND_MS,
        faults::estop_connection_flood(runs),
    );
    println!("\nhostile model uploads while driving: time to the refusal, ms\n");
    println!("| upload | median | worst | bound | within | daemon then |");
    println!("|---|---|---|---|---|---|");
    match faults::bad_uploads(runs) {
        Ok(rows) => {
            for (kind, outcomes) in rows {
                row_of(kind.name(), faults::UPLOAD_BOUND_MS, Ok(outcomes));
            }
        }
        Err(e) => failed("uploads", faults::UPLOAD_BOUND_MS, &e),
    }
}
