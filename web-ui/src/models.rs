//! Model storage: safe names, safe archive extraction, install and list.
//!
//! Uploads are written into `<models_dir>/.staging-<random>`, validated by
//! the car ([`crate::CarApi::validate_model`]) and only then renamed to
//! `<models_dir>/<name>`, so a bad upload never replaces anything.

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Files an upload or archive may contribute; everything else in a console
/// export (checkpoints, logs) is skipped.
pub const MODEL_FILES: &[&str] = &["model.onnx", "model_metadata.json", "model.pb"];
/// Per-file limit inside an archive and total unpacked limit relative to
/// the upload limit: a gzip bomb stops here.
const UNPACK_FACTOR: u64 = 4;
const MAX_ARCHIVE_ENTRIES: usize = 10_000;
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

/// Unpack the model files of a `.tar.gz` into `dest`. Any entry whose path
/// is absolute, has `..`, or that is a link or device rejects the whole
/// archive, naming the entry.
pub fn extract_archive(
    archive: &Path,
    dest: &Path,
    upload_limit: u64,
) -> Result<Vec<String>, ModelError> {
    let label = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rej = |reason: String| ModelError::Rejected {
        file: label.clone(),
        reason,
    };
    let f = std::fs::File::open(archive).map_err(|e| rej(e.to_string()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let total_limit = upload_limit.saturating_mul(UNPACK_FACTOR);
    let mut total = 0u64;
    let mut written = Vec::new();
    let entries = tar
        .entries()
        .map_err(|e| rej(format!("not a .tar.gz: {e}")))?;
    for (i, entry) in entries.enumerate() {
        if i >= MAX_ARCHIVE_ENTRIES {
            return Err(rej(format!("more than {MAX_ARCHIVE_ENTRIES} entries")));
        }
        let mut entry = entry.map_err(|e| rej(format!("not a .tar.gz: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| rej(format!("bad entry name: {e}")))?
            .into_owned();
        let shown = path.display().to_string();
        let mut clean = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(p) => clean.push(p),
                Component::CurDir => {}
                _ => {
                    return Err(rej(format!(
                        "entry {shown:?} points outside the archive (absolute or '..')"
                    )))
                }
            }
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(rej(format!(
                "entry {shown:?} is a link or special file; only regular files are allowed"
            )));
        }
        let Some(base) = clean.file_name().and_then(|b| b.to_str()) else {
            continue;
        };
        if !MODEL_FILES.contains(&base) {
            continue;
        }
        // Keep only the last folder level that matters (console exports put
        // the graph in `agent/model.pb`); drop every other prefix.
        let rel = if base == "model.pb" {
            PathBuf::from("agent").join(base)
        } else {
            PathBuf::from(base)
        };
        let size = entry.header().size().unwrap_or(u64::MAX);
        total = total.saturating_add(size);
        if total > total_limit {
            return Err(rej(format!(
                "unpacks to more than {} MB",
                total_limit / (1024 * 1024)
            )));
        }
        let out = dest.join(&rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ModelError::Io(e.to_string()))?;
        }
        let mut file = std::fs::File::create(&out).map_err(|e| ModelError::Io(e.to_string()))?;
        let copied = std::io::copy(&mut (&mut entry).take(size), &mut file)
            .map_err(|e| rej(format!("entry {shown:?}: {e}")))?;
        if copied != size {
            return Err(rej(format!("entry {shown:?} is truncated")));
        }
        written.push(rel.display().to_string());
    }
    Ok(written)
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
