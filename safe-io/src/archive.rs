//! The one reader for model archives (`.tar.gz`) from outside: used by the
//! CLI (`check-model`, `run --model`) and the web upload alike, so both give
//! the same answer for the same file.
