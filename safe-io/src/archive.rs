//! The one reader for model archives (`.tar.gz`) from outside: used by the
//! CLI (`check-model`, `run --model`) and the web upload alike, so both give
//! the same answer for the same file.
//!
//! What it guarantees, whoever calls it:
//! - the archive is a regular file under [`Limits::max_archive_bytes`]
//!   (no FIFO, no `/dev/zero`);
//! - every byte the gzip stream unpacks to (tar headers, every entry's data
//!   whether we want it or not, the padding after the end marker) counts
//!   against one [`Limits::max_unpacked_bytes`]; a gzip bomb is refused as
//!   soon as it crosses it, and an entry whose header already claims more is
//!   refused before a byte of it is inflated;
//! - the gzip stream is read to its end, so flate2 checks the trailer's
//!   CRC32 and ISIZE (it does so only at EOF: a reader that stops at the
//!   tar end marker never sees a corrupt or truncated trailer);
//! - at most [`Limits::max_entries`] entries; no absolute names, no `..`,
//!   no symlinks, hard links, devices, FIFOs or sparse files, no duplicate
//!   names, anywhere in the archive (not only among the files we keep);
//! - every refusal names the archive and, where there is one, the entry.
//!
//! What a model archive must hold: a `model_metadata.json` and a graph
//! (`model.onnx`, else a TensorFlow `model.pb`), at any folder depth, as a
//! console export (`agent/model.pb`) or a tarred model folder
//! (`my-model/model_metadata.json`) has them. The shallowest of each wins
//! (ONNX before TensorFlow); two candidates at the same depth are refused
//! as ambiguous instead of picking one silently. Nothing else is kept.

use crate::{open_limited, ReadError};
use std::cell::Cell;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

/// The metadata file every model has.
pub const METADATA_FILE: &str = "model_metadata.json";

/// How much an archive may hold. Callers share [`Limits::MODEL`] so the
/// CLI and the web refuse the same archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Size of the `.tar.gz` file itself.
    pub max_archive_bytes: u64,
    /// Everything the gzip stream unpacks to, all entries together.
    pub max_unpacked_bytes: u64,
    pub max_entries: usize,
    /// Longest entry name, bytes (PATH_MAX): keeps the duplicate-name set bounded.
    pub max_name_bytes: usize,
    pub max_metadata_bytes: u64,
    /// The deep DeepRacer network is about 100 MB; 512 MiB leaves room.
    pub max_graph_bytes: u64,
}

impl Limits {
    /// Model archives: a console export with checkpoints fits; a bomb does
    /// not. 1 GiB unpacked is what `check-model` always allowed.
    pub const MODEL: Limits = Limits {
        max_archive_bytes: 1 << 30,
        max_unpacked_bytes: 1 << 30,
        max_entries: 10_000,
        max_name_bytes: 4096,
        max_metadata_bytes: 1 << 20,
        max_graph_bytes: 512 << 20,
    };
}

/// Which graph the archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphKind {
    Onnx,
    /// A DeepRacer TensorFlow 1 frozen graph (`model.pb`).
    TensorFlow,
}

impl GraphKind {
    /// The file name in the archive.
    pub fn file_name(&self) -> &'static str {
        match self {
            GraphKind::Onnx => "model.onnx",
            GraphKind::TensorFlow => "model.pb",
        }
    }
}

/// One file taken out of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The entry's name with `./` prefixes removed, e.g. `agent/model.pb`.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The two files a model needs, read into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelArchive {
    pub metadata: Member,
    pub graph: Member,
    pub graph_kind: GraphKind,
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive file itself (missing, a FIFO, a device, too large).
    #[error(transparent)]
    File(#[from] ReadError),
    /// The archive as a whole: not gzip, a bad CRC, truncated, a bomb.
    #[error("{}: {problem}", archive.display())]
    Archive { archive: PathBuf, problem: String },
    /// One entry is not acceptable; `entry` is its name as stored.
    #[error("{}: entry {entry:?}: {problem}", archive.display())]
    Entry {
        archive: PathBuf,
        entry: String,
        problem: String,
    },
    /// The archive is sound but lacks a file a model needs.
    #[error("{}: {}", archive.display(), missing(what))]
    Missing {
        archive: PathBuf,
        what: &'static str,
    },
    /// Extraction could not write into the destination folder.
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ArchiveError {
    /// The message without the archive's name in front, for callers that
    /// show the user's own file name instead (the web upload).
    pub fn reason(&self) -> String {
        match self {
            ArchiveError::Archive { problem, .. } => problem.clone(),
            ArchiveError::Entry { entry, problem, .. } => format!("entry {entry:?}: {problem}"),
            ArchiveError::File(e) => e.reason(),
            ArchiveError::Missing { what, .. } => missing(what),
            other => other.to_string(),
        }
    }
}

fn missing(what: &str) -> String {
    format!("no {what} found (a model archive holds model_metadata.json and model.onnx or model.pb, e.g. agent/model.pb)")
}

/// Counts every byte the gzip decoder hands out and fails once more than
/// `limit` have come: `take` would end the stream quietly instead, and tar
/// would then report a truncated archive rather than the bomb it is.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
    limit: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.limit.saturating_sub(self.count.get());
        // Read one byte past the limit at most, to know it was crossed.
        let want = buf
            .len()
            .min(usize::try_from(left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.count.set(self.count.get() + n as u64);
        if self.count.get() > self.limit {
            return Err(std::io::Error::other("unpack limit crossed"));
        }
        Ok(n)
    }
}

/// A graph or metadata candidate: its depth in folders and its contents.
struct Candidate {
    depth: usize,
    member: Member,
}

/// Keep the shallowest candidate; two at the same depth are ambiguous.
fn offer(slot: &mut Option<Candidate>, new: Candidate, archive: &Path) -> Result<(), ArchiveError> {
    match slot {
        Some(old) if old.depth == new.depth => Err(ArchiveError::Entry {
            archive: archive.to_path_buf(),
            entry: new.member.name,
            problem: format!(
                "a second model file at the same depth as {:?}: which model is meant? Pack one model per archive",
                old.member.name
            ),
        }),
        Some(old) if old.depth < new.depth => Ok(()),
        _ => {
            *slot = Some(new);
            Ok(())
        }
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Read the model files out of a `.tar.gz` into memory, checking the whole
/// archive (see the module docs). Nothing is written anywhere.
pub fn read_model_archive(path: &Path, limits: &Limits) -> Result<ModelArchive, ArchiveError> {
    let archive = path.to_path_buf();
    let whole = |problem: String| ArchiveError::Archive {
        archive: archive.clone(),
        problem,
    };
    let (file, size) = open_limited(path, limits.max_archive_bytes)?;
    if size == 0 {
        return Err(whole("empty file, not a .tar.gz archive".into()));
    }
    let count = Rc::new(Cell::new(0u64));
    let over = |count: &Rc<Cell<u64>>| count.get() > limits.max_unpacked_bytes;
    let bomb = || {
        whole(format!(
            "unpacks to more than {}, the limit for a model archive (a gzip bomb?)",
            human(limits.max_unpacked_bytes)
        ))
    };
    // bufread, not read: read::GzDecoder adds a buffer of its own, which
    // would swallow (and hide) whatever follows the gzip member.
    let gz = flate2::bufread::GzDecoder::new(BufReader::new(file));
    let mut tar = tar::Archive::new(Counted {
        inner: gz,
        count: count.clone(),
        limit: limits.max_unpacked_bytes,
    });
    let mut metadata: Option<Candidate> = None;
    let mut onnx: Option<Candidate> = None;
    let mut pb: Option<Candidate> = None;
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    {
        let entries = tar
            .entries()
            .map_err(|e| whole(format!("not a .tar.gz: {e}")))?;
        for (i, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|e| {
                if over(&count) {
                    bomb()
                } else {
                    whole(format!("corrupt or truncated .tar.gz: {e}"))
                }
            })?;
            if i >= limits.max_entries {
                return Err(whole(format!(
                    "more than {} entries: not a model archive",
                    limits.max_entries
                )));
            }
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let refuse = |problem: String| ArchiveError::Entry {
                archive: archive.clone(),
                entry: shown.clone(),
                problem,
            };
            if raw.len() > limits.max_name_bytes {
                return Err(refuse(format!(
                    "a name longer than {} bytes",
                    limits.max_name_bytes
                )));
            }
            // Clean the name: `./a//b/` is `a/b`; anything that climbs out
            // or starts at `/` refuses the whole archive, because an
            // extractor elsewhere might honour it.
            let mut parts: Vec<&[u8]> = Vec::new();
            for c in Path::new(std::ffi::OsStr::from_bytes(&raw)).components() {
                match c {
                    Component::Normal(p) => parts.push(p.as_bytes()),
                    Component::CurDir => {}
                    Component::ParentDir => {
                        return Err(refuse(
                            "refusing a name with \"..\": it points outside the archive".into(),
                        ))
                    }
                    Component::RootDir | Component::Prefix(_) => {
                        return Err(refuse(
                            "refusing an absolute name: it points outside the archive".into(),
                        ))
                    }
                }
            }
            let kind = entry.header().entry_type();
            if kind.is_dir() || kind.is_pax_global_extensions() {
                continue;
            }
            if !kind.is_file() {
                let what = if kind.is_symlink() {
                    "a symbolic link"
                } else if kind.is_hard_link() {
                    "a hard link"
                } else if kind.is_character_special() || kind.is_block_special() {
                    "a device"
                } else if kind.is_fifo() {
                    "a FIFO"
                } else {
                    "a special entry"
                };
                return Err(refuse(format!(
                    "is {what}; a model archive holds only regular files and folders"
                )));
            }
            if parts.is_empty() {
                return Err(refuse("a file with an empty name".into()));
            }
            let clean = parts.join(&b'/');
            let name = String::from_utf8_lossy(&clean).into_owned();
            if !seen.insert(clean) {
                return Err(refuse(
                    "appears twice: which copy is meant? Refusing rather than guessing".into(),
                ));
            }
            let claimed = entry.size();
            if count.get().saturating_add(claimed) > limits.max_unpacked_bytes {
                return Err(refuse(format!(
                    "{claimed} bytes: the archive unpacks to more than {} (a gzip bomb?)",
                    human(limits.max_unpacked_bytes)
                )));
            }
            let base = parts.last().copied().unwrap_or_default();
            let (limit, slot) = match base {
                b"model_metadata.json" => (limits.max_metadata_bytes, &mut metadata),
                b"model.onnx" => (limits.max_graph_bytes, &mut onnx),
                b"model.pb" => (limits.max_graph_bytes, &mut pb),
                // Checkpoints, logs: inflated (and counted) when tar skips them.
                _ => continue,
            };
            if claimed > limit {
                return Err(refuse(format!(
                    "{claimed} bytes is over the {} limit for this file",
                    human(limit)
                )));
            }
            let mut bytes = Vec::with_capacity(claimed as usize);
            (&mut entry)
                .take(limit + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| {
                    if over(&count) {
                        bomb()
                    } else {
                        refuse(format!("corrupt or truncated: {e}"))
                    }
                })?;
            if bytes.len() as u64 != claimed {
                return Err(refuse(format!(
                    "truncated: {} of {claimed} bytes",
                    bytes.len()
                )));
            }
            offer(
                slot,
                Candidate {
                    depth: parts.len(),
                    member: Member { name, bytes },
                },
                &archive,
            )?;
        }
    }
    // Read the gzip stream to its end: only then does flate2 compare the
    // trailer's CRC32 and length with what it inflated.
    let mut rest = tar.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| {
        if over(&count) {
            bomb()
        } else {
            whole(format!(
                "corrupt or truncated gzip stream (CRC32 or length check failed): {e}"
            ))
        }
    })?;
    // Anything after the gzip member is data nobody checked; zero padding
    // (some tape tools add it) is harmless.
    let mut raw = rest.inner.into_inner();
    loop {
        let buf = raw
            .fill_buf()
            .map_err(|e| whole(format!("cannot read: {e}")))?;
        if buf.is_empty() {
            break;
        }
        if buf.iter().any(|&b| b != 0) {
            return Err(whole(
                "data after the end of the gzip stream: not a plain .tar.gz".into(),
            ));
        }
        let n = buf.len();
        raw.consume(n);
    }
    let Some(metadata) = metadata else {
        return Err(ArchiveError::Missing {
            archive,
            what: METADATA_FILE,
        });
    };
    let (graph, graph_kind) = match (onnx, pb) {
        (Some(g), _) => (g, GraphKind::Onnx),
        (None, Some(g)) => (g, GraphKind::TensorFlow),
        (None, None) => {
            return Err(ArchiveError::Missing {
                archive,
                what: "model.onnx or model.pb",
            })
        }
    };
    Ok(ModelArchive {
        metadata: metadata.member,
        graph: graph.member,
        graph_kind,
    })
}

/// [`read_model_archive`], then write the two files into `dest` as a model
/// folder: `model_metadata.json` and `model.onnx` or `agent/model.pb` (the
/// console layout). Returns the names written, relative to `dest`. Nothing
/// is written unless the whole archive passed.
pub fn extract_model_archive(
    path: &Path,
    dest: &Path,
    limits: &Limits,
) -> Result<Vec<String>, ArchiveError> {
    let m = read_model_archive(path, limits)?;
    let graph_rel = match m.graph_kind {
        GraphKind::Onnx => "model.onnx",
        GraphKind::TensorFlow => "agent/model.pb",
    };
    let mut written = Vec::new();
    for (rel, bytes) in [
        (METADATA_FILE, &m.metadata.bytes),
        (graph_rel, &m.graph.bytes),
    ] {
        let out = dest.join(rel);
        let werr = |source| ArchiveError::Write {
            path: out.clone(),
            source,
        };
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(werr)?;
        }
        std::fs::write(&out, bytes).map_err(werr)?;
        written.push(rel.to_string());
    }
    Ok(written)
}

#[cfg(any(test, feature = "test-corpus"))]
pub mod corpus;

#[cfg(test)]
mod tests;
