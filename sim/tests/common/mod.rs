//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// This crate's folder. Cargo sets `CARGO_MANIFEST_DIR` when it runs a test;
/// it is preferred to the compile-time value, which names whichever checkout
/// built the binary (checkouts may share one target dir, and cargo then
/// reuses the other checkout's test binaries).
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// The real DeepRacer tracks in `<repo>/../shared/tracks`, or `None` (with a
/// message) when that folder is absent, e.g. on a fresh clone.
pub fn shared_tracks() -> Option<Vec<PathBuf>> {
    let dir = manifest_dir().join("../../shared/tracks");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        eprintln!(
            "SKIP: {} is absent; real DeepRacer tracks not tested",
            dir.display()
        );
        return None;
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "npy"))
        .collect();
    v.sort();
    Some(v)
}
