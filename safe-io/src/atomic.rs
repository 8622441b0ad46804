//! Replacing a file so that at every instant its path holds either the old
//! complete file or the new complete file: a temp file in the same
//! directory, fsync, rename, fsync the directory.
//!
//! One routine for every file the car or the trainer keeps (calibration,
//! model metadata, exported models, passwords and TLS keys, race history,
//! training checkpoints and reports), so they all get the same durability:
//! a power cut half-way through a save, the common way a car is switched
//! off, never leaves a truncated file behind.
//!
//! Temp files are named `.<name>.tmp.<pid>.<counter>`. A save that was
//! killed leaves one behind; [`remove_stale_temps`] (called by every save)
//! removes those of dead processes and those older than any save takes,
//! and never touches any other name.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A temp file from a save older than this is left over from a save that
/// was killed (a save takes milliseconds), whoever its process id names.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60);

/// Replace `path` with `bytes`.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |f| f.write_all(bytes))
}

/// [`write`] for secrets (password hashes, TLS keys): the temp file is
/// mode 0600 from its creation, so the secret is never readable by others
/// even for the instant before a `chmod`.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_inner(path, Some(0o600), |f| f.write_all(bytes))
}

/// [`write`] with the content produced by `fill`. If `fill` fails (or
/// anything after it), the temp file is removed and `path` is left as it
/// was. Public so tests can inject a failure half-way through a write.
pub fn write_with(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    write_inner(path, None, fill)
}

fn write_inner(
    path: &Path,
    mode: Option<u32>,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temp_path(path)?;
    remove_stale_temps(path);
    let result = (|| {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        if let Some(mode) = mode {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            opts.mode(mode);
            let mut f = opts.open(&tmp)?;
            // `mode` is masked by the umask: set it exactly.
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            fill(&mut f)?;
            return commit_file(f, &tmp, path);
        }
        let mut f = opts.open(&tmp)?;
        fill(&mut f)?;
        commit_file(f, &tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// For writers that must be handed a path and write the file themselves
/// (burn's recorders): `tmp`, already written and closed by the caller,
/// is synced and renamed over `path`, then the directory is synced. `tmp`
/// must be in `path`'s directory. On error `tmp` is removed.
pub fn replace_with_written(tmp: &Path, path: &Path) -> io::Result<()> {
    let result = File::open(tmp).and_then(|f| commit_file(f, tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

fn commit_file(f: File, tmp: &Path, path: &Path) -> io::Result<()> {
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, path)?;
    sync_dir(&dir_of(path))
}

/// The rename itself is only durable once the directory is synced. A file
/// system that cannot sync a directory says so with EINVAL; the file has
/// been replaced all the same, so that is not an error.
fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        r => r,
    }
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Same directory, so the rename cannot cross file systems. The name is
/// what `stale_temp_pid` recognises.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    Ok(dir_of(path).join(format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )))
}

/// The process id in a temp file name [`write_with`] made for
/// `target_name`, `.<target_name>.tmp.<pid>.<counter>`; `None` for every
/// other name, so a user's own `*.tmp` files are never touched.
fn stale_temp_pid(file_name: &str, target_name: &str) -> Option<u32> {
    let rest = file_name
        .strip_prefix('.')?
        .strip_prefix(target_name)?
        .strip_prefix(".tmp.")?;
    let (pid, counter) = rest.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(counter) {
        return None;
    }
    pid.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // Signal 0 checks existence only. EPERM means it exists (another user's).
    // SAFETY: kill with signal 0 sends nothing and touches no memory.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Remove temp files that a killed save of `path` left behind: ours by
/// name, and either from a process that no longer runs or older than any
/// save takes. A save in flight (a live process, a fresh file) is left
/// alone. Best effort: errors are ignored, the save or load goes on.
pub fn remove_stale_temps(path: &Path) {
    let dir = dir_of(path);
    let Some(target) = path.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let Ok(rd) = fs::read_dir(&dir) else {
        return;
    };
    let me = std::process::id();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| stale_temp_pid(n, target)) else {
            continue;
        };
        // Only plain files: never follow or remove anything else.
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        if !meta.file_type().is_file() {
            continue;
        }
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        let orphan = pid != me && !process_alive(pid);
        if old || orphan {
            let _ = fs::remove_file(e.path());
        }
    }
}
