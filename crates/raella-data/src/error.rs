//! Errors of reading data files. Each names the file and what is wrong with it.

use std::path::PathBuf;

use thiserror::Error;

/// Why a data file was rejected.
#[derive(Debug, Error)]
pub enum DataError {
    /// The OS could not read the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The path is not a regular file (a folder, FIFO, device, ...).
    #[error("{path}: is {is}, not a regular file (expected {expected})")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        is: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// A file, or what it decompresses to or declares, is past a limit.
    #[error("{path}: {what} of {size} is past the limit of {limit}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What is too large.
        what: &'static str,
        /// Its size, as shown.
        size: String,
        /// The limit, as shown.
        limit: String,
    },
    /// A gzip stream is corrupt or truncated.
    #[error("{path}: corrupt or truncated gzip stream: {reason}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// A malformed IDX file.
    #[error("{path}: {reason}")]
    Idx {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Data that does not fit what it is used for.
    #[error("input data: {0}")]
    BadInput(String),
    /// A file of a model or data set is not usable.
    #[error("{path}: {reason}")]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A bad line of a text data file.
    #[error("{path}:{line}: {reason}")]
    DataLine {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// A cached file that was never fetched.
    #[error("{path}: not found ({hint})")]
    Missing {
        /// The path.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },
}
