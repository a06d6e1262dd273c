//! Errors of the cost model: bad tables, bad architecture descriptions,
//! layers that cannot be costed. Each names the file, entry and field.

use std::path::PathBuf;

use thiserror::Error;

/// Why a table, an architecture or a costing was rejected.
#[derive(Debug, Error)]
pub enum CostError {
    /// Unreadable file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Malformed TOML, a mistyped value or an unknown key.
    #[error("{path}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// An impossible value.
    #[error("{path}: {entry}: `{field}` = {value}: {reason}")]
    Field {
        /// The file.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// The field.
        field: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A design knob the cost model cannot cost (the caller names the design).
    #[error("`{field}` = {value}: {reason}")]
    Knob {
        /// The knob.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A lookup that has no entry (an ADC resolution missing from the table, an unknown design).
    #[error("{0}")]
    Missing(String),
}
