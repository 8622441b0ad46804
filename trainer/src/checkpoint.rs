//! Checkpoint files shared by imitation and PPO: each file is written beside
//! its final name, synced and renamed, so a crash or power cut mid-write
//! leaves the previous checkpoint whole; `state.json` (written last) says
//! which algorithm wrote the folder, so one cannot resume the other's run.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub const STATE_FILE: &str = "state.json";

/// Write `dir/name` through `save` (a burn recorder, which writes in place)
/// into a temporary file first.
pub fn save_atomic(
    dir: &Path,
    name: &str,
    save: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Burn's file recorders set the extension themselves: keep `.bpk` last.
    let stem = name.strip_suffix(".bpk").unwrap_or(name);
    let tmp = dir.join(format!("{stem}.tmp.bpk"));
    let dest = dir.join(name);
    let result = match save(&tmp) {
        Ok(()) => safe_io::atomic::replace_with_written(&tmp, &dest).map_err(|e| e.to_string()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    };
    result.map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(())
}

/// Write `state.json` with an `"algo"` field next to `state`'s own.
pub fn write_state<T: Serialize>(dir: &Path, algo: &str, state: &T) -> Result<(), String> {
    let path = dir.join(STATE_FILE);
    let mut v = serde_json::to_value(state).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("algo".into(), algo.into());
    }
    let text = serde_json::to_vec_pretty(&v).expect("a JSON value serialises");
    safe_io::atomic::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Read `state.json`, refusing a checkpoint another algorithm wrote.
/// Checkpoints from before the field existed are imitation ones.
pub fn read_state<T: DeserializeOwned>(dir: &Path, algo: &str) -> Result<T, String> {
    let path = dir.join(STATE_FILE);
    let file = path.display();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{file}: cannot resume: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{file}: cannot resume: {e}"))?;
    let found = v.get("algo").and_then(|a| a.as_str()).unwrap_or("dagger");
    if found != algo {
        return Err(format!(
            "{file}: algo: this checkpoint is from a `--algo {found}` run; resume it with \
             `--algo {found}`, or pick another --out for a new `--algo {algo}` run"
        ));
    }
    serde_json::from_value(v).map_err(|e| format!("{file}: cannot resume: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct S {
        update: usize,
    }

    #[test]
    fn state_names_the_algorithm_and_refuses_the_other() {
        let d = tempfile::tempdir().unwrap();
        write_state(d.path(), "ppo", &S { update: 3 }).unwrap();
        assert_eq!(read_state::<S>(d.path(), "ppo").unwrap(), S { update: 3 });
        let e = read_state::<S>(d.path(), "dagger").unwrap_err();
        assert!(e.contains("state.json") && e.contains("--algo ppo"), "{e}");
        // An old imitation checkpoint has no "algo".
        std::fs::write(d.path().join(STATE_FILE), r#"{"update": 1}"#).unwrap();
        assert_eq!(
            read_state::<S>(d.path(), "dagger").unwrap(),
            S { update: 1 }
        );
        assert!(read_state::<S>(d.path(), "ppo").is_err());
        let e = read_state::<S>(&d.path().join("none"), "ppo").unwrap_err();
        assert!(e.contains("cannot resume"), "{e}");
    }

    #[test]
    fn a_failed_save_leaves_the_previous_file() {
        let d = tempfile::tempdir().unwrap();
        save_atomic(d.path(), "m.bpk", |p| {
            std::fs::write(p, b"one").map_err(|e| e.to_string())
        })
        .unwrap();
        let e = save_atomic(d.path(), "m.bpk", |p| {
            std::fs::write(p, b"half").unwrap();
            Err("disk full".into())
        })
        .unwrap_err();
        assert!(e.contains("m.bpk") && e.contains("disk full"), "{e}");
        assert_eq!(std::fs::read(d.path().join("m.bpk")).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
