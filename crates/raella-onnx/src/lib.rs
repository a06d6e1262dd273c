//! ONNX models for the RAELLA simulator: import any CNN or transformer exported
//! to ONNX, fold what depends only on constants, and run it, with the products
//! of its weight layers on a [`LayerRunner`] of the caller's choice (float
//! here; the 8-bit digital reference and simulated crossbars in
//! `raella-network`).
//!
//! ```no_run
//! use raella_onnx::{FloatRunner, Tensor, import_file, run};
//! use ndarray::ArrayD;
//!
//! let graph = import_file(std::path::Path::new("model.onnx"))?;
//! let x = Tensor::f32(ArrayD::zeros(ndarray::IxDyn(&[1, 3, 224, 224])));
//! let outputs = run(&graph, vec![x], &FloatRunner, 0)?;
//! println!("{:?}", outputs[0].shape());
//! # Ok::<(), raella_onnx::OnnxError>(())
//! ```
//!
//! What is supported: opsets 1-28 of the default domain, the operators listed
//! by [`ops::supported_ops`], tensors of float32/float16/bfloat16/float64,
//! int64/int32/int16/int8, uint64/32/16/8 and bool, 1-D and 2-D convolutions
//! and pooling, control flow (bodies on the float runner). Anything else
//! (sequences, strings, float8 and 4-bit types, 3-D windows, other domains) is
//! an error naming the node.
//! `tests/conformance.rs` runs onnx's backend test data against all of it.

pub mod attrs;
pub mod build;
mod error;
pub mod exec;
pub mod graph;
pub mod import;
pub mod ops;
pub mod tensor;

/// The ONNX protobuf schema (vendored `onnx.proto`, compiled by prost).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use error::{OnnxError, OpError};
pub use exec::{
    FloatRunner, InputQuant, LayerRunner, PARALLEL_VALUES, RunProfile, Vectors, run, run_timed,
};
pub use graph::{ConvGeom, Dim, Graph, LayerKind, Node, NodeKind, ValueId, ValueInfo, WeightLayer};
pub use import::{import_bytes, tensor_from_proto};
pub use tensor::{DType, Data, MAX_ELEMENTS, Tensor};

/// Most bytes an ONNX file may have: 2 GiB, protobuf's own limit.
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// Imports an ONNX file.
///
/// # Errors
/// Unreadable, too large, or any import error (naming the file).
pub fn import_file(path: &std::path::Path) -> Result<Graph, OnnxError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| OnnxError::File {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    if !meta.is_file() {
        return Err(OnnxError::File {
            path: shown,
            message: "not a regular file".into(),
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(OnnxError::File {
            path: shown,
            message: format!(
                "{} bytes, more than the 2 GiB an ONNX file can hold",
                meta.len()
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| OnnxError::File {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    import_bytes(&bytes, &shown)
}
