//! Errors of quantisation and execution on simulated crossbars. Each names the
//! layer or input at fault; import and data errors carry their own types.

use raella_compiler::CompileError;
use raella_runtime::RuntimeError;
use thiserror::Error;

/// Why a network could not be quantised or run.
#[derive(Debug, Error)]
pub enum NetworkError {
    /// Import or a digital node failed (the message names the file or node).
    #[error(transparent)]
    Onnx(#[from] raella_onnx::OnnxError),
    /// Inputs or calibration data that do not fit the model.
    #[error("input data: {0}")]
    BadInput(String),
    /// A weight layer could not be quantised or compiled.
    #[error("layer `{layer}`: {source}")]
    Compile {
        /// The layer.
        layer: String,
        /// The compiler's error.
        source: CompileError,
    },
    /// A weight layer could not run on its crossbars.
    #[error("layer `{layer}`: {source}")]
    Runtime {
        /// The layer.
        layer: String,
        /// The runtime's error.
        source: RuntimeError,
    },
}
