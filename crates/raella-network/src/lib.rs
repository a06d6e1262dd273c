//! Whole networks on simulated crossbars: post-training 8-bit quantisation of
//! any model imported by `raella-onnx` (int8 per output channel, one activation
//! scale per weight layer's input from calibration data), the 8-bit digital
//! reference, and the execution of every weight layer on programmed crossbars
//! of a design ([`CrossbarBackend`]), with per-layer statistics.
//!
//! The digital nodes (pooling, normalisation, attention's activation products,
//! softmax, ...) run in float32 in `raella-onnx`, as the paper keeps non-MVM
//! work digital; only the weight layers' products go through a [`MacBackend`].

mod crossbar;
mod error;
mod eval;
mod quant;

pub use crossbar::{ArchConfig, CALIBRATION_VECTORS, CHECKED_VECTORS, CrossbarBackend};
pub use error::NetworkError;
pub use eval::{
    BATCH_ITEMS, Evaluation, Features, argmax_rows, eval_float, eval_quant, eval_quant_batches,
    mean_row_cosine,
};
pub use quant::{
    BatchRun, ExactBackend, LayerInfo, MacBackend, QInput, QuantLayer, QuantModel,
    activation_scale, batch_items, offset_code,
};
