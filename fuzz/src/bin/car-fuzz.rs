//! The libFuzzer driver for every target in `fuzz_targets::TARGETS`; the
//! target comes from `CAR_FUZZ_TARGET` (one binary links tract and axum
//! once). Built by `scripts/suites/fuzz.sh` with coverage instrumentation;
//! see README.md, "Fuzzing".
#![no_main]

use std::sync::OnceLock;

fn selected() -> fn(&[u8]) {
    static T: OnceLock<fn(&[u8])> = OnceLock::new();
    *T.get_or_init(|| {
        let name = std::env::var("CAR_FUZZ_TARGET").unwrap_or_default();
        fuzz_targets::target(&name).unwrap_or_else(|| {
            let names: Vec<&str> = fuzz_targets::TARGETS.iter().map(|(n, _)| *n).collect();
            eprintln!("set CAR_FUZZ_TARGET to one of: {}", names.join(", "));
            std::process::exit(2)
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| selected()(data));
