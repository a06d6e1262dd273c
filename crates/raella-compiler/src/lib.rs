//! The encoding/slicing compiler: maps pretrained weights onto ReRAM crossbars.
//!
//! A pure function of (weights, configuration): no randomness, no IO.
//!
//! * [`quantize_per_channel`]: float weights to per-output-channel symmetric int8.
//! * [`Encoding`]: Center+Offset (RAELLA; [`CenterRule`] `mean`/`median`/`search`),
//!   Zero+Offset, and ISAAC's unsigned offset with optional bit flip.
//! * [`Slicing`]: MSB-first bit slices of any widths (`4-4`, `4-2-2`, `2x4`, `1x8`).
//! * [`compile`]: the matrix onto crossbars ([`MappedLayer`]), inputs down the rows
//!   (spilling over row blocks), filter slices across the columns.
//! * [`AdaptiveSlicing`]: per-layer choice of the fewest-slice candidate within an
//!   error budget, with a pluggable [`ErrorMetric`].
//!
//! ```
//! use ndarray::array;
//! use raella_compiler::{CompileConfig, compile, quantize_per_channel};
//!
//! let w = array![[0.12f32, -0.30, 0.05, 0.01], [0.2, 0.2, -0.1, 0.0]];
//! let q = quantize_per_channel(w.view())?;
//! let layer = compile(q.weights.view(), &CompileConfig::raella(), None)?;
//! assert_eq!(layer.crossbars().len(), 1);
//! // Center + offsets reconstruct every weight exactly.
//! assert_eq!(layer.decode(), q.weights.mapv(i32::from));
//! println!("utilisation {:.4}", layer.stats().utilisation);
//! # Ok::<(), raella_compiler::CompileError>(())
//! ```

mod adaptive;
mod encoding;
mod error;
mod mapping;
mod quant;
mod slicing;

pub use adaptive::{
    AUTO_BUDGET_RATIO, AdaptiveSlicing, Budget, DEFAULT_BUDGET, DEFAULT_CANDIDATES, ErrorMetric,
    NormalisedMaxAbs, RelativeRms, SlicingChoice,
};
pub use encoding::{
    Calibration, CenterRule, Encoding, SEARCH_MAX_VECTORS, SEARCH_RADIUS, centers, mean, median,
};
pub use error::CompileError;
pub use mapping::{CompileConfig, MappedCrossbar, MappedLayer, MappingStats, compile};
pub use quant::{QuantizedMatrix, quantize_per_channel};
pub use slicing::{Slicing, VALUE_BITS};
