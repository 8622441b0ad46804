//! Choosing the ONNX inference engine behind `ort`: ONNX Runtime loaded at
//! run time, or the pure-Rust tract. `ort::set_api` is process-global and
//! one-shot, so the choice is made once per process by `Backend::init`.
//! With tract, `ort` is pointed at `ort-tract` so that every `ort` call
//! stays valid, but `Policy` runs ONNX graphs on tract-onnx itself (see
//! `Policy::from_onnx_tract`: `ort` leaks per run through the shim).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the user asked for (config `backend = "auto" | "tract" |
/// "onnxruntime"`, the CLIs' `--backend`): the one parser for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// ONNX Runtime if its library loads, else tract.
    Auto,
    Tract,
    #[serde(alias = "ort")]
    OnnxRuntime,
}

impl BackendChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Tract => "tract",
            BackendChoice::OnnxRuntime => "onnxruntime",
        }
    }
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "tract" => Ok(BackendChoice::Tract),
            "onnxruntime" | "ort" | "onnx-runtime" => Ok(BackendChoice::OnnxRuntime),
            other => Err(format!(
                "unknown backend \"{other}\" (expected auto, tract or onnxruntime)"
            )),
        }
    }
}

/// The engine actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Tract,
    OnnxRuntime,
}

impl BackendKind {
    pub fn name(&self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::OnnxRuntime => "onnxruntime",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("ONNX Runtime library not found (looked in: {searched}); install it (e.g. `pip install onnxruntime`) or set ORT_DYLIB_PATH / the config's library path")]
    NotFound { searched: String },
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("inference backend already initialised as {current} (asked for {requested:?}); the backend is chosen once per process")]
    AlreadyInitialised {
        current: &'static str,
        requested: BackendChoice,
    },
    #[error("cannot create the inference environment: {0}")]
    Environment(String),
}

/// A handle on the process's inference engine. Cheap to clone.
#[derive(Clone)]
pub struct Backend {
    kind: BackendKind,
    library: Option<PathBuf>,
    version: String,
    env: ort::environment::Environment,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("kind", &self.kind)
            .field("library", &self.library)
            .field("version", &self.version)
            .finish()
    }
}

static STATE: Mutex<Option<(BackendChoice, Backend)>> = Mutex::new(None);

impl Backend {
    /// Pick and initialise the engine. Call once per process; calling again
    /// with the same choice (or with the kind that `Auto` resolved to)
    /// returns the same backend, any other choice is an error.
    pub fn init(choice: BackendChoice, lib_path: Option<&Path>) -> Result<Backend, BackendError> {
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((first, b)) = state.as_ref() {
            let same = *first == choice
                || choice == BackendChoice::Auto
                || (choice == BackendChoice::Tract && b.kind == BackendKind::Tract)
                || (choice == BackendChoice::OnnxRuntime && b.kind == BackendKind::OnnxRuntime);
            if same {
                return Ok(b.clone());
            }
            return Err(BackendError::AlreadyInitialised {
                current: b.kind.name(),
                requested: choice,
            });
        }
        let (kind, library, version, api) = match choice {
            BackendChoice::Tract => (BackendKind::Tract, None, tract_version(), ort_tract::api()),
            BackendChoice::OnnxRuntime => {
                let (path, version, api) = load_onnxruntime(lib_path)?;
                (BackendKind::OnnxRuntime, Some(path), version, api)
            }
            BackendChoice::Auto => match load_onnxruntime(lib_path) {
                Ok((path, version, api)) => (BackendKind::OnnxRuntime, Some(path), version, api),
                Err(e) => {
                    tracing::info!("using tract: {e}");
                    (BackendKind::Tract, None, tract_version(), ort_tract::api())
                }
            },
        };
        if !ort::set_api(api) {
            // Someone called ort::set_api behind our back: we cannot know
            // which engine is live, so refuse rather than guess.
            return Err(BackendError::Environment(
                "ort::set_api was already called outside policy::Backend::init".into(),
            ));
        }
        let env = ort::init()
            .with_name("car")
            .with_telemetry(false)
            .build()
            .map_err(|e| BackendError::Environment(e.to_string()))?;
        let b = Backend {
            kind,
            library,
            version,
            env,
        };
        tracing::info!(backend = kind.name(), version = %b.version, library = ?b.library, "inference backend ready");
        *state = Some((choice, b.clone()));
        Ok(b)
    }

    /// The backend initialised earlier in this process, if any.
    pub fn current() -> Option<Backend> {
        STATE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, b)| b.clone())
    }

    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The ONNX Runtime library file, when that is the engine.
    pub fn library(&self) -> Option<&Path> {
        self.library.as_deref()
    }

    /// Engine version string ("1.31.1", "tract 0.23").
    pub fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn environment(&self) -> &ort::environment::Environment {
        &self.env
    }
}

fn tract_version() -> String {
    "tract 0.23".into()
}

/// Where to look for the ONNX Runtime library, in order. Exposed so that
/// `check-model` can say where it looked.
pub fn onnxruntime_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(p.to_path_buf());
        return out;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(ld) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&ld));
    }
    for d in [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/opt/onnxruntime/lib",
        "/opt/aws/deepracer/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    // pip wheels: site-packages/onnxruntime/capi/ under virtualenvs, pyenv,
    // the user's ~/.local and the system Pythons.
    let mut py_roots: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        py_roots.push(PathBuf::from(v).join("lib"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        let h = PathBuf::from(h);
        py_roots.push(h.join(".local/lib"));
        if let Ok(rd) = std::fs::read_dir(h.join(".pyenv/versions")) {
            for e in rd.flatten() {
                py_roots.push(e.path().join("lib"));
            }
        }
    }
    for r in ["/usr/local/lib", "/usr/lib", "/opt/venv/lib"] {
        py_roots.push(PathBuf::from(r));
    }
    for root in py_roots {
        if let Ok(rd) = std::fs::read_dir(&root) {
            let mut pys: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("python3"))
                })
                .collect();
            pys.sort();
            for p in pys.into_iter().rev() {
                dirs.push(p.join("site-packages/onnxruntime/capi"));
                dirs.push(p.join("dist-packages/onnxruntime/capi"));
            }
        }
    }
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut found: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n == "libonnxruntime.so"
                        || n.starts_with("libonnxruntime.so.")
                        || n == "libonnxruntime.dylib"
                })
            })
            .collect();
        // Unversioned first, then the highest version.
        found.sort_by(|a, b| b.cmp(a));
        found.sort_by_key(|p| p.file_name().map(|n| n != "libonnxruntime.so"));
        out.extend(found);
    }
    out
}

fn load_onnxruntime(
    explicit: Option<&Path>,
) -> Result<(PathBuf, String, ort::sys::OrtApi), BackendError> {
    // ONNX Runtime reads this when it starts; the builder's telemetry switch
    // alone does not stop Microsoft builds from emitting telemetry.
    // Set before the library loads; init holds the state lock, and the
    // daemon calls init at start-up before it spawns threads.
    std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    let candidates = onnxruntime_candidates(explicit);
    if candidates.is_empty() {
        return Err(BackendError::NotFound {
            searched: "ORT_DYLIB_PATH, LD_LIBRARY_PATH, /usr/local/lib, /usr/lib, pip site-packages/onnxruntime/capi".into(),
        });
    }
    let mut last_err = None;
    for path in &candidates {
        if !path.exists() {
            last_err = Some(BackendError::Load {
                path: path.clone(),
                message: "no such file".into(),
            });
            continue;
        }
        match load_one(path) {
            Ok((version, api)) => return Ok((path.clone(), version, api)),
            Err(e) => {
                tracing::debug!("{e}");
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or(BackendError::NotFound {
        searched: "nowhere".into(),
    }))
}

fn load_one(path: &Path) -> Result<(String, ort::sys::OrtApi), BackendError> {
    let err = |m: String| BackendError::Load {
        path: path.to_path_buf(),
        message: m,
    };
    // SAFETY: loading ONNX Runtime runs its static initialisers, which is
    // what we want; the library stays loaded for the life of the process.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| err(e.to_string()))?;
    // SAFETY: `OrtGetApiBase` is ONNX Runtime's documented entry point with
    // this signature; the `OrtApiBase` it returns is checked for null and
    // points at static data of the library, which stays loaded; the version
    // string it gives is a NUL-terminated static C string (checked for null).
    let (version, api) = unsafe {
        let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase\0")
                .map_err(|e| err(format!("not an ONNX Runtime library: {e}")))?;
        let base = get_base();
        if base.is_null() {
            return Err(err("OrtGetApiBase returned null".into()));
        }
        let vptr = ((*base).GetVersionString)();
        let version = if vptr.is_null() {
            "unknown".to_string()
        } else {
            std::ffi::CStr::from_ptr(vptr)
                .to_string_lossy()
                .into_owned()
        };
        let api = ((*base).GetApi)(ort::sys::ORT_API_VERSION);
        if api.is_null() {
            return Err(err(format!(
                "version {version} does not provide C API {} (need ONNX Runtime 1.{} or newer)",
                ort::sys::ORT_API_VERSION,
                ort::sys::ORT_API_VERSION
            )));
        }
        // The OrtApi table is static data inside the library, which we never
        // unload; ort keeps its own copy of the function pointers.
        (version, (*api).clone())
    };
    std::mem::forget(lib);
    Ok((version, api))
}
