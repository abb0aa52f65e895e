//! One error type for the library. Every variant says what was being done, on which file or flag, what was
//! expected and what was found, so the CLI can print it as one line and exit non-zero.

use std::path::PathBuf;

/// Errors a user can cause: bad paths, bad files, bad sizes, bad flags.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused to open, read, write or map a file.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file was read but its contents are not what its format promises.
    #[error("{}: {what}: expected {expected}, found {found}", path.display())]
    Format { path: PathBuf, what: String, expected: String, found: String },

    /// The run would need more memory than the machine has; says what needs how much.
    #[error("not enough memory: {0}")]
    OutOfMemory(String),

    /// The CUDA driver refused something: no driver, no GPU, a module that does not load.
    #[error("CUDA: {0}")]
    Cuda(String),

    /// A kernel launch failed on the device or in the emulator (which names block, thread and source line).
    #[error("kernel {kernel} failed: {message}")]
    Kernel { kernel: String, message: String },

    /// An HTTP download failed: no connection, an error status, or a body cut short.
    #[error("cannot download {url}: {message}")]
    Download { url: String, message: String },

    /// Training cannot go on (updates skipped too many times in a row: the run diverged).
    #[error("training stopped: {0}")]
    Training(String),

    /// A flag or configuration value is out of range or inconsistent with another.
    #[error("invalid {name}: {message}")]
    Config { name: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O failure on `path` while doing `action` ("cannot open", "cannot write", ...).
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }

    /// A format violation in `path`: `what` field expected `expected` but the file holds `found`.
    pub fn format(
        path: impl Into<PathBuf>,
        what: impl Into<String>,
        expected: impl ToString,
        found: impl ToString,
    ) -> Self {
        Error::Format { path: path.into(), what: what.into(), expected: expected.to_string(), found: found.to_string() }
    }

    /// A bad configuration value, named as the user wrote it (a flag such as `--seq-len`).
    pub fn config(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { name: name.into(), message: message.into() }
    }
}
