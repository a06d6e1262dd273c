//! The speculation/recovery runtime: executes compiled layers on simulated
//! ReRAM crossbars, bit-accurately.
//!
//! * [`InputMode`]: fixed input slicing (`1x8`, `2x4`, `4-4`, ...) or RAELLA's
//!   speculation (default `4-2-2`) with or without recovery.
//! * [`ProgrammedLayer`]: a [`raella_compiler::MappedLayer`] programmed onto
//!   crossbars (ideal, or with device noise), run on batches of unsigned or
//!   signed 8-bit vectors; int32 outputs and [`LayerStats`].
//! * [`choose_weight_slicing`]: adaptive weight slicing by simulation.
//! * [`mod@reference`]: the slow, obviously-correct reference used by the tests.
//!
//! Only this crate decides speculation and recovery.
//!
//! ```
//! use ndarray::array;
//! use raella_compiler::{CompileConfig, compile};
//! use raella_runtime::{ProgrammedLayer, RunConfig, reference::exact_outputs};
//!
//! let w = array![[12i8, -7, 100, 3], [-128, 5, 0, 9]];
//! let x = array![[200u8, 0, 17, 255], [1, 2, 3, 4]];
//! let layer = ProgrammedLayer::ideal(compile(w.view(), &CompileConfig::raella(), None)?);
//! let out = layer.run(x.view(), &RunConfig::raella())?;
//! // No 1-bit recovery conversion saturated, so the result is exact.
//! assert_eq!(out.stats.recovery_out_of_range, 0);
//! assert_eq!(out.outputs.mapv(i64::from), exact_outputs(w.view(), x.view()));
//! println!("converts per MAC {:.4}", out.stats.converts_per_mac());
//! # Ok::<(), raella_runtime::RuntimeError>(())
//! ```

mod adaptive;
mod config;
mod engine;
mod error;
pub mod reference;
mod stats;

pub use adaptive::{
    calibration_run, choose_weight_slicing, choose_weight_slicing_layer,
    choose_weight_slicing_layer_packed,
};
pub use config::{InputMode, MAX_INPUT_SLICE_BITS, RunConfig};
pub use engine::{CHUNK_VECTORS, LayerOutput, ProgrammedLayer};
pub use error::RuntimeError;
pub use stats::LayerStats;
