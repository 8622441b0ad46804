//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The real DeepRacer tracks in `<repo>/../shared/tracks`, or `None` (with a
/// message) when that folder is absent, e.g. on a fresh clone.
pub fn shared_tracks() -> Option<Vec<PathBuf>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/tracks");
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
