//! Prints the wire-level fault table: for each fault class, the time from
//! the fault to neutral on a fake stock PWM board, median and worst of N
//! runs of the real daemon, against the stated bound.
//!
//!     cargo run --release -p e2e-tests --example fault_bench [-- RUNS]

use e2e_tests::faults::{self, BadFrame, Outcome};

fn stats(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

fn row(fault: &str, bound: f64, runs: usize, mut f: impl FnMut() -> Result<Outcome, String>) {
    let mut ms = Vec::new();
    let mut ended = String::new();
    for _ in 0..runs {
        match f() {
            Ok(o) => {
                ms.push(o.ms);
                ended = o.ended;
            }
            Err(e) => {
                println!("| {fault} | FAILED: {e} | | {bound} | no |");
                return;
            }
        }
    }
    let (med, max) = stats(&mut ms);
    let ok = if max <= bound { "yes" } else { "NO" };
    println!("| {fault} | {med:.1} | {max:.1} | {bound:.0} | {ok} | {ended} |");
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
}
