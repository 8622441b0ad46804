//! Model folders and archives: finding the graph and the metadata, checking
//! that they agree, and building a ready-to-run `Policy`.

use crate::backend::Backend;
use crate::metadata::{MetadataError, ModelMetadata, METADATA_FILE};
use crate::policy::Policy;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Graphs bigger than this are not DeepRacer models (the deep network is
/// about 100 MB); refusing early protects a car's memory from a bad upload.
/// 256 MB leaves the deep network room to grow 2.5 times while the check
/// child (which holds the bytes, the decoded graph and the engine's copy)
/// stays well inside its address-space limit (`check::ChildLimits`).
pub const MAX_GRAPH_BYTES: u64 = 256 << 20;
use crate::metadata::MAX_METADATA_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{file}: {message}")]
    Archive { file: String, message: String },
    #[error("{dir}: no {what} found (a model is a folder or .tar.gz with model_metadata.json and model.onnx, or a DeepRacer model.pb at the root or under agent/)")]
    Missing { dir: String, what: &'static str },
    #[error("{file}: cannot load the graph: {message}")]
    Graph { file: String, message: String },
    #[error("{file}: the model's input {message}")]
    Input { file: String, message: String },
    #[error("{file}: the model outputs {got} values but model_metadata.json's {space} action space needs {want}")]
    OutputMismatch {
        file: String,
        got: usize,
        want: usize,
        space: &'static str,
    },
}

/// Which kind of graph a model holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    Onnx,
    /// A DeepRacer TensorFlow 1 frozen graph (`model.pb`).
    TensorFlow,
}

impl GraphFormat {
    pub fn as_str(&self) -> &'static str {
        match self {
            GraphFormat::Onnx => "onnx",
            GraphFormat::TensorFlow => "tensorflow",
        }
    }
}

/// The raw contents of a model folder or archive, validated as far as
/// possible without running anything.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The folder or archive given.
    pub source: PathBuf,
    pub metadata: ModelMetadata,
    pub format: GraphFormat,
    /// Where the graph was found (for messages): `dir/model.onnx`, `x.tar.gz:agent/model.pb`.
    pub graph_name: String,
    pub graph: Vec<u8>,
}

fn io_err(file: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        file: file.display().to_string(),
        source,
    }
}

/// Model folders come from outside too (a USB stick): a FIFO or a device
/// named `model.onnx` is refused at once instead of blocking the loader.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ModelError> {
    safe_io::read_limited(path, limit).map_err(|e| match e {
        safe_io::ReadError::Io { source, .. } => io_err(path)(source),
        e => ModelError::Archive {
            file: path.display().to_string(),
            message: e.reason(),
        },
    })
}

fn is_archive(path: &Path) -> bool {
    let n = path.to_string_lossy().to_ascii_lowercase();
    n.ends_with(".tar.gz") || n.ends_with(".tgz")
}

impl ModelFiles {
    /// Read a model folder or a `.tar.gz`.
    pub fn read(path: &Path) -> Result<ModelFiles, ModelError> {
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        if meta.is_dir() {
            Self::read_dir(path)
        } else if is_archive(path) {
            Self::read_archive(path)
        } else {
            Err(ModelError::Archive {
                file: path.display().to_string(),
                message: "not a model folder or a .tar.gz archive".into(),
            })
        }
    }

    fn read_dir(dir: &Path) -> Result<ModelFiles, ModelError> {
        let meta_path = dir.join(METADATA_FILE);
        if !meta_path.is_file() {
            return Err(ModelError::Missing {
                dir: dir.display().to_string(),
                what: "model_metadata.json",
            });
        }
        let text = read_limited(&meta_path, MAX_METADATA_BYTES)?;
        let text = String::from_utf8(text).map_err(|_| ModelError::Archive {
            file: meta_path.display().to_string(),
            message: "not UTF-8 text".into(),
        })?;
        let metadata = ModelMetadata::parse(&text, &meta_path.display().to_string())?;
        for (rel, format) in [
            ("model.onnx", GraphFormat::Onnx),
            ("agent/model.onnx", GraphFormat::Onnx),
            ("model.pb", GraphFormat::TensorFlow),
            ("agent/model.pb", GraphFormat::TensorFlow),
        ] {
            let p = dir.join(rel);
            if p.is_file() {
                let graph = read_limited(&p, MAX_GRAPH_BYTES)?;
                return Ok(ModelFiles {
                    source: dir.to_path_buf(),
                    metadata,
                    format,
                    graph_name: p.display().to_string(),
                    graph,
                });
            }
        }
        Err(ModelError::Missing {
            dir: dir.display().to_string(),
            what: "model.onnx or model.pb",
        })
    }

    /// Read the model's two files straight out of the archive through
    /// `safe_io::archive`, the reader the web upload uses too, so
    /// `check-model` and the web accept and refuse the same archives.
    /// Nothing is written to disk.
    fn read_archive(path: &Path) -> Result<ModelFiles, ModelError> {
        use safe_io::archive::{self, ArchiveError, GraphKind};
        let file_name = path.display().to_string();
        let m =
            archive::read_model_archive(path, &archive::Limits::MODEL).map_err(|e| match e {
                ArchiveError::Missing { what, .. } => ModelError::Missing {
                    dir: file_name.clone(),
                    what,
                },
                e => ModelError::Archive {
                    file: file_name.clone(),
                    message: e.reason(),
                },
            })?;
        let format = match m.graph_kind {
            GraphKind::Onnx => GraphFormat::Onnx,
            GraphKind::TensorFlow => GraphFormat::TensorFlow,
        };
        let meta_file = format!("{file_name}:{}", m.metadata.name);
        let text = String::from_utf8(m.metadata.bytes).map_err(|_| ModelError::Archive {
            file: meta_file.clone(),
            message: "not UTF-8 text".into(),
        })?;
        let metadata = ModelMetadata::parse(&text, &meta_file)?;
        Ok(ModelFiles {
            source: path.to_path_buf(),
            metadata,
            format,
            graph_name: format!("{file_name}:{}", m.graph.name),
            graph: m.graph.bytes,
        })
    }
}

/// A loaded model, ready to drive.
pub struct Model {
    pub source: PathBuf,
    pub metadata: ModelMetadata,
    pub format: GraphFormat,
    pub graph_name: String,
    pub policy: Policy,
    /// Wall time to read, parse, optimise and warm up the model.
    pub load_ms: f64,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("source", &self.source)
            .field("format", &self.format)
            .field("input", self.policy.input_spec())
            .field("outputs", &self.policy.output_len())
            .field("backend", &self.policy.backend_name())
            .finish()
    }
}

impl Model {
    /// Load a folder or `.tar.gz`. ONNX graphs run on `backend`; TensorFlow
    /// graphs always run on tract-tensorflow.
    pub fn load(path: &Path, backend: &Backend) -> Result<Model, ModelError> {
        let start = Instant::now();
        let files = ModelFiles::read(path)?;
        Self::from_files(files, backend, start)
    }

    pub fn from_files(
        files: ModelFiles,
        backend: &Backend,
        start: Instant,
    ) -> Result<Model, ModelError> {
        let ModelFiles {
            source,
            metadata,
            format,
            graph_name,
            graph,
        } = files;
        let sensor =
            metadata.camera_sensor(&format!("{}", source.join(METADATA_FILE).display()))?;
        let mut policy = match format {
            GraphFormat::Onnx => Policy::from_onnx(&graph, &graph_name, backend)?,
            GraphFormat::TensorFlow => {
                Policy::from_tensorflow(&graph, &graph_name, &metadata, &sensor)?
            }
        };
        drop(graph);
        let want = metadata.action_space.output_len();
        // One run on a blank frame: checks the real output size (shapes in
        // the graph may be symbolic) and warms the engine up.
        let got = policy.warm_up().map_err(|e| ModelError::Graph {
            file: graph_name.clone(),
            message: e.to_string(),
        })?;
        if got != want {
            return Err(ModelError::OutputMismatch {
                file: graph_name,
                got,
                want,
                space: metadata.action_space.type_name(),
            });
        }
        Ok(Model {
            source,
            metadata,
            format,
            graph_name,
            policy,
            load_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }
}
