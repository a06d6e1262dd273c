//! The slow, obviously-correct reference the fast path is tested against.
//!
//! It follows the spec's words one column-slice at a time, on the compiled
//! integer levels (never the programmed f32 image), with integer arithmetic,
//! and no noise. For each vector, crossbar, column and input slice: the column
//! sum, its ADC code; for a flagged speculative slice with recovery, one 1-bit
//! column sum and conversion per bit of the slice; then shift-add, flip
//! correction, the digital center term, and partial sums across crossbars.

use ndarray::{Array2, ArrayView2};
use raella_compiler::MappedLayer;

use crate::{InputMode, RunConfig};

/// Conversion counts of a reference run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReferenceCounts {
    /// Primary conversions.
    pub primary: u64,
    /// Flagged speculative conversions.
    pub flagged: u64,
    /// 1-bit recovery conversions.
    pub recovery: u64,
    /// Flagged conversions weighted by their slice width (`sum_k flagged_k * b_k`).
    pub flagged_bits: u64,
}

/// The exact integer result `y = W x` (vectors x outputs).
#[must_use]
pub fn exact_outputs(weights: ArrayView2<'_, i8>, inputs: ArrayView2<'_, u8>) -> Array2<i64> {
    let mut y = Array2::<i64>::zeros((inputs.nrows(), weights.nrows()));
    for (v, x) in inputs.rows().into_iter().enumerate() {
        for (f, w) in weights.rows().into_iter().enumerate() {
            y[[v, f]] = x
                .iter()
                .zip(w.iter())
                .map(|(&a, &b)| i64::from(a) * i64::from(b))
                .sum();
        }
    }
    y
}

/// Runs `layer` on `inputs` the slow way (noise is ignored: the reference is noise-free).
///
/// # Panics
/// If the inputs do not match the layer.
#[must_use]
pub fn run_reference(
    layer: &MappedLayer,
    inputs: ArrayView2<'_, u8>,
    cfg: &RunConfig,
) -> (Array2<i64>, ReferenceCounts) {
    assert_eq!(inputs.ncols(), layer.inputs());
    let slicing = cfg.input.slicing();
    let speculative = matches!(cfg.input, InputMode::Speculative { .. });
    let recovery = cfg.input.recovers();
    let ws = layer.weight_slicing();
    let mut counts = ReferenceCounts::default();
    let mut y = Array2::<i64>::zeros((inputs.nrows(), layer.outputs()));
    for (v, x) in inputs.rows().into_iter().enumerate() {
        let total: i64 = x.iter().map(|&a| i64::from(a)).sum();
        for f in 0..layer.outputs() {
            y[[v, f]] = i64::from(layer.centers()[f]) * total;
        }
        for mx in layer.crossbars() {
            let xb = &mx.crossbar;
            let xs: Vec<u32> = (0..xb.used_rows())
                .map(|r| u32::from(x[mx.row_start + r]))
                .collect();
            let block_sum: i64 = xs.iter().map(|&a| i64::from(a)).sum();
            for c in 0..xb.used_cols() {
                let mut measured: i64 = 0;
                for j in 0..slicing.len() {
                    let pulses: Vec<u8> = xs
                        .iter()
                        .map(|&a| u8::try_from(slicing.slice(a, j)).unwrap())
                        .collect();
                    let code = convert(cfg, xb.column_sums_exact(&pulses)[c]);
                    counts.primary += 1;
                    let flagged = speculative && is_saturated(cfg, code);
                    if flagged {
                        counts.flagged += 1;
                        counts.flagged_bits += u64::from(slicing.widths()[j]);
                    }
                    if flagged && recovery {
                        for t in 0..slicing.widths()[j] {
                            let bit = slicing.shifts()[j] + t;
                            let bits: Vec<u8> = xs
                                .iter()
                                .map(|&a| u8::try_from((a >> bit) & 1).unwrap())
                                .collect();
                            let code1 = convert(cfg, xb.column_sums_exact(&bits)[c]);
                            counts.recovery += 1;
                            measured += code1 << bit;
                        }
                    } else {
                        measured += code << slicing.shifts()[j];
                    }
                }
                let (f, k) = layer.column_role(mx.col_start + c);
                let mask = (1i64 << ws.widths()[k]) - 1;
                let value = if mx.flipped[c] {
                    mask * block_sum - measured
                } else {
                    measured
                };
                y[[v, f]] += value << ws.shifts()[k];
            }
        }
    }
    (y, counts)
}

fn convert(cfg: &RunConfig, sum: i64) -> i64 {
    sum.clamp(i64::from(cfg.adc.min_code()), i64::from(cfg.adc.max_code()))
}

fn is_saturated(cfg: &RunConfig, code: i64) -> bool {
    code == i64::from(cfg.adc.max_code())
        || (cfg.adc.signed() && code == i64::from(cfg.adc.min_code()))
}
