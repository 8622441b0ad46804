//! Model storage: safe names, safe archive extraction, install and list.
//!
//! Uploads are written into `<models_dir>/.staging-<random>`, validated by
//! the car ([`crate::CarApi::validate_model`]) and only then renamed to
//! `<models_dir>/<name>`, so a bad upload never replaces anything.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Files an upload or archive may contribute; everything else in a console
/// export (checkpoints, logs) is skipped.
pub const MODEL_FILES: &[&str] = &["model.onnx", "model_metadata.json", "model.pb"];
/// Total unpacked limit of an archive relative to the upload limit: a
/// gzip bomb stops here (see [`archive_limits`]).
pub const UNPACK_FACTOR: u64 = 4;
pub const INFO_FILE: &str = ".web-ui.json";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("model name {0:?}: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'")]
    BadName(String),
    #[error("{file}: {reason}")]
    Rejected { file: String, reason: String },
    #[error("upload is larger than the {limit_mb} MB limit")]
    TooLarge { limit_mb: u64 },
    #[error("a model named {0:?} exists: delete it first or pick another name")]
    Exists(String),
    #[error("no model named {0:?}")]
    NotFound(String),
    #[error("model {0:?} is the one driving or loading; load another first")]
    InUse(String),
    #[error("{0}")]
    Io(String),
}

/// Check a user-supplied model name. No separators, no `..`, no hidden files.
pub fn check_name(name: &str) -> Result<&str, ModelError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(name)
    } else {
        Err(ModelError::BadName(name.to_string()))
    }
}

/// The base name of an uploaded file if it is one we accept; the client's
/// path is never used, so `../../etc/passwd` or `C:\x\model.onnx` cannot
/// reach outside the staging folder.
pub fn upload_kind(filename: &str) -> Result<UploadKind, ModelError> {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or("");
    if base != filename {
        return Err(ModelError::Rejected {
            file: filename.to_string(),
            reason: "file names must not contain a path".into(),
        });
    }
    if MODEL_FILES.contains(&base) {
        return Ok(UploadKind::File(base.to_string()));
    }
    if base.ends_with(".tar.gz") || base.ends_with(".tgz") {
        return Ok(UploadKind::Archive);
    }
    Err(ModelError::Rejected {
        file: filename.to_string(),
        reason: "expected model.onnx, model_metadata.json, model.pb or a .tar.gz holding them"
            .into(),
    })
}

#[derive(Debug, PartialEq)]
pub enum UploadKind {
    File(String),
    Archive,
}

/// The archive rules for an upload: the ones `check-model` uses
/// ([`safe_io::archive::Limits::MODEL`]), with the unpack limit also held
/// to [`UNPACK_FACTOR`] times the upload limit. With the default 64 MiB
/// upload limit that is 256 MiB: a `.tar.gz` of real weights unpacks to
/// barely more than its own size, so only an archive of mostly zeros (a
/// bomb) lands between this and the CLI's 1 GiB.
pub fn archive_limits(upload_limit: u64) -> safe_io::archive::Limits {
    let model = safe_io::archive::Limits::MODEL;
    safe_io::archive::Limits {
        max_unpacked_bytes: model
            .max_unpacked_bytes
            .min(upload_limit.saturating_mul(UNPACK_FACTOR)),
        ..model
    }
}

/// Unpack the model files of a `.tar.gz` into `dest` through the reader
/// the CLI uses ([`safe_io::archive`]): the same checks, the same answers.
/// Any entry that is absolute, has `..`, is a link or device, or appears
/// twice rejects the whole archive, naming the entry; so do a bad CRC, a
/// truncated stream and a gzip bomb. Only `model_metadata.json` and the
/// graph (`model.onnx`, or `agent/model.pb` as in a console export) are
/// written, and only once the whole archive has passed.
pub fn extract_archive(
    archive: &Path,
    dest: &Path,
    upload_limit: u64,
) -> Result<Vec<String>, ModelError> {
    let label = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    safe_io::archive::extract_model_archive(archive, dest, &archive_limits(upload_limit)).map_err(
        |e| match e {
            safe_io::archive::ArchiveError::Write { .. } => ModelError::Io(e.to_string()),
            e => ModelError::Rejected {
                file: label,
                reason: e.reason(),
            },
        },
    )
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub path: String,
    pub size_bytes: u64,
    pub uploaded_unix: u64,
    pub summary: Option<crate::ModelSummary>,
    pub active: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredInfo {
    uploaded_unix: u64,
    summary: crate::ModelSummary,
}

pub fn write_info(dir: &Path, summary: &crate::ModelSummary) -> Result<(), ModelError> {
    let info = StoredInfo {
        uploaded_unix: now_unix(),
        summary: summary.clone(),
    };
    std::fs::write(
        dir.join(INFO_FILE),
        serde_json::to_vec_pretty(&info).unwrap_or_default(),
    )
    .map_err(|e| ModelError::Io(e.to_string()))
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => n += dir_size(&e.path()),
                Ok(t) if t.is_file() => n += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    n
}

/// Installed models, by name. `active` is the path the car drives with.
pub fn list(models_dir: &Path, active: Option<&str>) -> Vec<ModelInfo> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(models_dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let path = e.path();
        let stored: Option<StoredInfo> = std::fs::read(path.join(INFO_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let path_s = path.display().to_string();
        out.push(ModelInfo {
            active: active.map(|a| same_path(a, &path)).unwrap_or(false),
            size_bytes: dir_size(&path),
            uploaded_unix: stored.as_ref().map(|s| s.uploaded_unix).unwrap_or(0),
            summary: stored.map(|s| s.summary),
            name,
            path: path_s,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub fn same_path(a: &str, b: &Path) -> bool {
    let a = Path::new(a);
    a == b
        || match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    //! The CLI (`check-model`: `policy::ModelFiles::read` on the archive)
    //! and the web upload (`extract_archive`, then the folder read as the
    //! car validates it) must give the same answer for every archive.
    use super::*;
    use safe_io::archive::corpus;
    use std::path::PathBuf;

    /// The graph the CLI would run, or its error.
    fn cli(archive: &Path) -> Result<Vec<u8>, String> {
        policy::ModelFiles::read(archive)
            .map(|m| m.graph)
            .map_err(|e| e.to_string())
    }

    /// The graph the web would install, or its error.
    fn web(archive: &Path) -> Result<Vec<u8>, String> {
        let dest = tempfile::tempdir().unwrap();
        let limit = crate::WebConfig::default().max_upload_bytes;
        extract_archive(archive, dest.path(), limit).map_err(|e| e.to_string())?;
        policy::ModelFiles::read(dest.path())
            .map(|m| m.graph)
            .map_err(|e| e.to_string())
    }

    fn same_answer(name: &str, archive: &Path, accept: bool) {
        let (c, w) = (cli(archive), web(archive));
        match (&c, &w) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{name}: CLI and web took different graphs"),
            (Err(_), Err(_)) => {}
            _ => panic!("{name}: CLI says {c:?}, web says {w:?}"),
        }
        assert_eq!(c.is_ok(), accept, "{name}: {c:?}");
    }

    #[test]
    fn cli_and_web_agree_on_every_archive_of_the_corpus() {
        let d = tempfile::tempdir().unwrap();
        let cases = corpus::write_corpus(d.path());
        assert!(cases.len() > 25);
        for c in &cases {
            same_answer(c.name, &c.path, c.accept);
        }
    }

    #[test]
    fn cli_and_web_both_refuse_a_gzip_bomb() {
        // 9 x 120 MiB of zeros (about 1 MB of gzip) unpacks past both the
        // CLI's 1 GiB and the web's 256 MiB; each entry alone is under
        // every per-file limit. The old web counted only model files and
        // accepted it.
        let d = tempfile::tempdir().unwrap();
        let bomb = corpus::write_bomb(d.path(), 9, 120 << 20);
        assert!(std::fs::metadata(&bomb).unwrap().len() < 4 << 20);
        same_answer("bomb", &bomb, false);
        let e = web(&bomb).unwrap_err();
        assert!(e.contains("unpacks to more than 256 MiB"), "{e}");
        let e = cli(&bomb).unwrap_err();
        assert!(e.contains("unpacks to more than 1024 MiB"), "{e}");
    }

    #[test]
    fn cli_and_web_both_take_the_console_export() {
        // Cargo's run-time value names this checkout (several may share a target dir).
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        let p = manifest.join("../../shared/models/deepracer-console-structure.tar.gz");
        if !p.is_file() {
            eprintln!(
                "SKIP: {} is absent; the console export is not tested",
                p.display()
            );
            return;
        }
        same_answer("console export", &p, true);
        let dest = tempfile::tempdir().unwrap();
        let written = extract_archive(&p, dest.path(), 64 << 20).unwrap();
        assert_eq!(written, ["model_metadata.json", "agent/model.pb"]);
    }
}
