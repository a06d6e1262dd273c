//! Errors of import and execution. Each names what it is about: the file, the
//! node (name and op type) or tensor, and the offending value.

use thiserror::Error;

/// Why a model was rejected or could not run.
#[derive(Debug, Error)]
pub enum OnnxError {
    /// The file could not be read or decoded as an ONNX `ModelProto`.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The model is malformed or uses something unsupported (not tied to one node).
    #[error("{0}")]
    Model(String),
    /// A node is malformed, unsupported, or failed to run.
    #[error("node `{node}` ({op}): {message}")]
    Node {
        /// Node name (or `#index` when unnamed).
        node: String,
        /// Its op type.
        op: String,
        /// What went wrong.
        message: String,
    },
    /// An initializer or constant is malformed.
    #[error("tensor `{name}`: {message}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A graph input was missing, mis-shaped or of the wrong type.
    #[error("input `{name}`: {message}")]
    Input {
        /// Input name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// An error of the executor that runs weight layers.
    #[error("layer `{layer}`: {message}")]
    Layer {
        /// The weight layer's node name.
        layer: String,
        /// The executor's message.
        message: String,
    },
}

/// The message of an op kernel, before the executor adds the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError(pub String);

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for OpError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for OpError {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

/// `Err(OpError)` from a format string.
#[macro_export]
macro_rules! op_bail {
    ($($t:tt)*) => { return Err($crate::OpError(format!($($t)*))) };
}
