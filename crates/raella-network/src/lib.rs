//! DNN graphs for the RAELLA simulator: ONNX import, the float32 and 8-bit
//! digital references, and quantised execution on simulated crossbars.
//!
//! * [`import_onnx_file`]: an ONNX model to a shape-inferred [`Graph`] (op set in
//!   [`SUPPORTED_OPS`]; anything else is an error naming the op and node).
//! * [`QuantModel::calibrate`]: int8 per-channel weights and 8-bit activation
//!   scales from calibration images (no retraining).
//! * [`eval_float`], [`eval_quant`] with [`ExactBackend`] (8-bit digital reference)
//!   or [`CrossbarBackend`] (a simulated design, [`ArchConfig`]).
//! * [`BertModel`]: a BERT sentence encoder (all-MiniLM-L6-v2) in float32 and
//!   with its linear layers on crossbars ([`QuantBert`]); [`Lee50`] scores it.
//! * [`IdxDataset`]: MNIST-format IDX images and labels (optionally gzipped).
//!
//! Conv layers map onto crossbars through im2col: each output position is one
//! input vector of `C/groups * KH * KW` rows, filters (x weight slices) across
//! the columns. A grouped or depthwise convolution is mapped group by group, each
//! group its own matrix (`M/groups x C/groups*KH*KW`) on its own crossbars, so no
//! cell holds a structural zero and each filter's center covers only its inputs;
//! small groups therefore use crossbars poorly, and the statistics show it.
//!
//! ```no_run
//! use raella_network::{import_onnx_file, QuantModel, ExactBackend, eval_quant};
//! # fn main() -> Result<(), raella_network::NetworkError> {
//! let graph = import_onnx_file("model.onnx".as_ref())?;
//! let images = ndarray::Array2::<f32>::zeros((8, graph.numel(graph.input)));
//! let model = QuantModel::calibrate(graph, images.view())?;
//! let int8 = eval_quant(&model, &ExactBackend::new(&model), images.view())?;
//! println!("{:?}", int8.outputs.dim());
//! # Ok(()) }
//! ```

pub mod bert;
mod crossbar;
mod error;
mod eval;
pub mod files;
pub mod forward;
pub mod graph;
mod idx;
mod images;
pub mod lee50;
mod onnx;
pub mod ops;
mod quant;

/// Rust types generated from the vendored ONNX schema (`proto/onnx.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use bert::{BertEmbeddings, BertModel, QuantBert};
pub use crossbar::{ArchConfig, CALIBRATION_VECTORS, CrossbarBackend};
pub use error::NetworkError;
pub use eval::{
    BATCH_IMAGES, Evaluation, argmax_rows, eval_float, eval_float_features, eval_quant,
    mean_row_cosine,
};
pub use graph::Graph;
pub use idx::{IdxDataset, decode_idx, parse_idx};
pub use images::{ImageFolder, decode_image, image_files};
pub use lee50::{Correlations, Lee50};
pub use onnx::{SUPPORTED_OPS, import_onnx_bytes, import_onnx_file};
pub use quant::{ExactBackend, MacBackend, QInput, QuantLayer, QuantModel};
