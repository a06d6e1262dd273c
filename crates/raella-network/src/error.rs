//! Errors of model import, data loading and network execution. Each names the
//! file, node, field or value at fault.

use std::path::PathBuf;

use raella_compiler::CompileError;
use raella_runtime::RuntimeError;
use thiserror::Error;

/// Why a model, a data set or a run was rejected.
#[derive(Debug, Error)]
pub enum NetworkError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A path that is a folder, FIFO, device or socket where a file is expected.
    #[error("{path}: is {is}, not a regular file (expected {expected})")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is (`a folder`, `a named pipe (FIFO)`, ...).
        is: &'static str,
        /// What was expected there.
        expected: &'static str,
    },
    /// A file (or decompressed stream) past its size limit.
    #[error("{path}: {what} of {size} is past the limit of {limit}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What it holds.
        what: &'static str,
        /// Its size.
        size: String,
        /// The limit.
        limit: String,
    },
    /// A corrupt or truncated gzip stream.
    #[error("{path}: corrupt or truncated gzip stream: {reason}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// Any import error of an ONNX model, with the model file named.
    #[error("{path}: {error}")]
    Onnx {
        /// The model file (or the name given to bytes).
        path: PathBuf,
        /// What is wrong (part of this message, not a separate cause, so an
        /// error chain does not print it twice).
        error: Box<NetworkError>,
    },
    /// Bytes that are not a valid ONNX protobuf (e.g. a truncated file).
    #[error("{path}: not a valid ONNX model: {reason}")]
    OnnxDecode {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// An operator the importer does not support.
    #[error("unsupported ONNX operator `{op}` at node `{node}` (supported: {supported})")]
    UnsupportedOp {
        /// The op type.
        op: String,
        /// The node name.
        node: String,
        /// The supported list.
        supported: &'static str,
    },
    /// A supported operator used in a way the importer does not handle.
    #[error("node `{node}` ({op}): {reason}")]
    BadNode {
        /// The node name.
        node: String,
        /// The op type.
        op: String,
        /// What is wrong.
        reason: String,
    },
    /// A model-level problem (inputs, outputs, initializers).
    #[error("model: {0}")]
    BadModel(String),
    /// A weight that is NaN or infinite.
    #[error("initializer `{name}` element {index} is not finite ({value})")]
    NonFiniteWeight {
        /// Initializer name.
        name: String,
        /// Flat index.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A malformed IDX file.
    #[error("{path}: {reason}")]
    Idx {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Inputs that do not match the model.
    #[error("input data: {0}")]
    BadInput(String),
    /// Compiling a layer failed.
    #[error("layer `{layer}`: {source}")]
    Compile {
        /// Node name.
        layer: String,
        /// The compiler's error.
        source: CompileError,
    },
    /// Running a layer failed.
    #[error("layer `{layer}`: {source}")]
    Runtime {
        /// Node name.
        layer: String,
        /// The runtime's error.
        source: RuntimeError,
    },
    /// A model or data file (or folder) that does not exist.
    #[error("{path}: not found ({hint})")]
    Missing {
        /// The file or folder.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },
    /// A model file that cannot be parsed or does not describe a supported model.
    #[error("{path}: {reason}")]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor that is missing, of the wrong shape or type, or not finite.
    #[error("{path}: tensor `{tensor}`: {reason}")]
    Tensor {
        /// The safetensors file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A malformed line of a text data file.
    #[error("{path}:{line}: {reason}")]
    DataLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl NetworkError {
    /// The error itself, or for [`NetworkError::Onnx`] the import error it
    /// wraps (the file name stripped).
    #[must_use]
    pub fn inner(&self) -> &Self {
        match self {
            Self::Onnx { error, .. } => error.inner(),
            other => other,
        }
    }
}
