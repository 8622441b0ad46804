//! Crash-safe replacement as its users see it: the old file survives a
//! failed save, secrets are never readable by others, and a writer that
//! needs a path (burn's recorders) gets the same guarantees.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_save_that_fails_half_way_leaves_the_old_file_and_no_temp() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("history.json");
    safe_io::atomic::write(&path, b"old, complete").unwrap();
    let err = safe_io::atomic::write_with(&path, |f| {
        f.write_all(b"new, but only ha")?;
        Err(std::io::Error::other("disk full"))
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "disk full");
    assert_eq!(fs::read(&path).unwrap(), b"old, complete");
    assert_eq!(names(d.path()), ["history.json"]);
    safe_io::atomic::write(&path, b"new").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
}

#[test]
fn a_secret_is_0600_whatever_the_umask_and_whatever_was_there() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("password.phc");
    fs::write(&path, b"old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    safe_io::atomic::write_private(&path, b"$argon2id$...").unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(fs::read(&path).unwrap(), b"$argon2id$...");
    // An ordinary save keeps the default mode (what the umask allows).
    let other = d.path().join("race.json");
    safe_io::atomic::write(&other, b"{}").unwrap();
    let mode = fs::metadata(&other).unwrap().permissions().mode() & 0o777;
    assert_ne!(
        mode & 0o044,
        0,
        "ordinary files are readable by the group/others"
    );
}

#[test]
fn a_file_written_by_path_replaces_the_old_one_or_nothing() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("model.bpk");
    fs::write(&path, b"old").unwrap();
    let tmp = d.path().join("model.tmp.bpk");
    fs::write(&tmp, b"new weights").unwrap();
    safe_io::atomic::replace_with_written(&tmp, &path).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new weights");
    assert_eq!(names(d.path()), ["model.bpk"]);

    // The writer never produced its file: nothing is replaced.
    let err = safe_io::atomic::replace_with_written(&d.path().join("never.bpk"), &path);
    assert!(err.is_err());
    assert_eq!(fs::read(&path).unwrap(), b"new weights");
}

#[test]
fn a_path_without_a_file_name_is_refused() {
    let err = safe_io::atomic::write(Path::new("/"), b"x").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
