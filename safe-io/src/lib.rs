//! Reading files that come from outside (a racer's USB stick, a web upload,
//! a command-line argument) without trusting them.
//!
//! One home for these helpers, shared by `sim`, `servo-driver`, `policy`,
//! `web-ui` and `car-runtime`: every path that reads an outside file goes
//! through [`read_limited`] (or [`archive`]), so a FIFO, `/dev/zero` or a
//! 20 GiB file gets the same clear error everywhere instead of a hang or an
//! out-of-memory abort. And the other way round: every file they keep is
//! written through [`atomic`], so a power cut never leaves half a file.

use std::io::Read;
use std::path::{Path, PathBuf};

pub mod archive;
pub mod atomic;

/// Why an outside file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A FIFO, a device, a socket or a directory: reading it could block
    /// forever (FIFO) or never end (`/dev/zero`).
    #[error("{path}: not a regular file ({kind})")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: {size} bytes is more than the {limit}-byte limit for this kind of file")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
}

impl ReadError {
    /// The message without the path in front, for callers that put the
    /// file's name (or the user's name for it) in front themselves.
    pub fn reason(&self) -> String {
        match self {
            ReadError::Io { source, .. } => source.to_string(),
            ReadError::NotRegular { kind, .. } => format!("not a regular file ({kind})"),
            ReadError::TooLarge { size, limit, .. } => {
                format!("{size} bytes is more than the {limit}-byte limit for this kind of file")
            }
        }
    }
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Open a regular file of at most `limit` bytes for streaming (an archive
/// too big to hold in memory at once). Same checks as [`read_limited`];
/// the caller must still bound what it reads, in case the file grows.
///
/// Refuses anything that is not a regular file *before* opening it for
/// reading (opening a FIFO blocks until a writer comes), and checks the
/// type and size again from the open handle's metadata (so a swap between
/// the check and the open changes nothing). Returns the file and its size.
pub fn open_limited(path: &Path, limit: u64) -> Result<(std::fs::File, u64), ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(meta.file_type()),
        });
    }
    // O_NONBLOCK: if the path was swapped for a FIFO after the check, the
    // open returns at once instead of waiting for a writer.
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nonblock())
        .open(path)
        .map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(meta.file_type()),
        });
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
        });
    }
    Ok((f, meta.len()))
}

/// Read a whole regular file of at most `limit` bytes.
///
/// The checks of [`open_limited`], and the read still stops after
/// `limit + 1` bytes in case the file grows while it is read.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let (f, len) = open_limited(path, limit)?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(limit + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

/// [`read_limited`] for text files: also refuses invalid UTF-8, naming the file.
pub fn read_limited_to_string(path: &Path, limit: u64) -> Result<String, ReadError> {
    let bytes = read_limited(path, limit)?;
    String::from_utf8(bytes).map_err(|e| ReadError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

// O_NONBLOCK is 0o4000 on every Linux architecture we build for (x86_64,
// aarch64); spelled out to keep this crate free of a libc dependency.
const fn libc_o_nonblock() -> i32 {
    0o4000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        std::fs::write(&p, b"{}").unwrap();
        assert_eq!(read_limited(&p, 10).unwrap(), b"{}");
    }

    #[test]
    fn refuses_dev_zero_and_a_directory_and_a_fifo_without_blocking() {
        let e = read_limited(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(
            e.to_string()
                .contains("/dev/zero: not a regular file (a character device)"),
            "{e}"
        );
        let d = tempfile::tempdir().unwrap();
        let e = read_limited(d.path(), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let fifo = d.path().join("pipe");
        // std has no mkfifo; coreutils' mkfifo(1) is on every Debian machine.
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        let e = read_limited(&fifo, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
    }

    #[test]
    fn refuses_a_file_over_the_limit_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.npy");
        std::fs::write(&p, vec![0u8; 101]).unwrap();
        let e = read_limited(&p, 100).unwrap_err();
        assert!(
            e.to_string()
                .contains("big.npy: 101 bytes is more than the 100-byte limit"),
            "{e}"
        );
    }
}
