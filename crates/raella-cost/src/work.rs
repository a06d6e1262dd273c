//! The work of one crossbar layer per inference: event counts, from the
//! functional simulation or estimated from a layer's shape and its statistics
//! file (the RAELLA artifact's `KEY=VALUE` format). The cost model never sees
//! tensors; these counts are all it needs.

use serde::Serialize;

use crate::CostError;
use crate::arch::CostArch;

/// A crossbar layer's shape (per inference).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerShape {
    /// Layer name.
    pub name: String,
    /// Input vectors per inference (output positions, or tokens).
    pub vectors: f64,
    /// Groups (1, or channels for depthwise).
    pub groups: usize,
    /// Rows of one group's matrix (`C/groups * KH * KW`).
    pub rows: usize,
    /// Filters of one group.
    pub filters: usize,
    /// Input feature-map elements per inference.
    pub in_elems: f64,
    /// Output feature-map elements per inference.
    pub out_elems: f64,
}

impl LayerShape {
    /// MACs per inference.
    #[must_use]
    pub fn macs(&self) -> f64 {
        self.vectors * (self.groups * self.rows * self.filters) as f64
    }
}

/// A layer's statistics (the RAELLA artifact's per-layer file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LayerStatistics {
    /// `AVERAGE_WEIGHT_VALUE`: average normalised cell value seen by reads.
    pub average_weight_value: f64,
    /// `AVERAGE_INPUT_VALUE`: average normalised input pulses per row drive.
    pub average_input_value: f64,
    /// `ADC_ACTION_SHARE`: conversions relative to 1-bit input slicing.
    pub adc_action_share: f64,
    /// `CIM_UNITS_PER_WEIGHT`: columns (weight slices) per weight.
    pub cim_units_per_weight: usize,
    /// `SPECULATION_ENABLED`.
    pub speculation_enabled: bool,
}

impl LayerStatistics {
    /// Parses `KEY=VALUE` lines (`#` comments and blank lines allowed; all five keys required).
    ///
    /// # Errors
    /// [`CostError::Field`] naming the key and value, for unknown, missing or malformed keys.
    pub fn parse(path: &std::path::Path, text: &str) -> Result<Self, CostError> {
        let err = |k: &str, v: &str, r: &str| CostError::Field {
            path: path.to_path_buf(),
            entry: "statistics".into(),
            field: k.to_string(),
            value: v.to_string(),
            reason: r.to_string(),
        };
        let (mut w, mut i, mut a, mut c, mut s) = (None, None, None, None, None);
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| err(line, "", "expected KEY=VALUE"))?;
            let (k, v) = (k.trim(), v.trim());
            let num = || {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| err(k, v, "expected a non-negative number"))
            };
            match k {
                "AVERAGE_WEIGHT_VALUE" => w = Some(num()?),
                "AVERAGE_INPUT_VALUE" => i = Some(num()?),
                "ADC_ACTION_SHARE" => a = Some(num()?),
                "CIM_UNITS_PER_WEIGHT" => {
                    c = Some(
                        v.parse::<usize>()
                            .ok()
                            .filter(|&n| n > 0)
                            .ok_or_else(|| err(k, v, "expected a positive integer"))?,
                    )
                }
                "SPECULATION_ENABLED" => {
                    s = Some(match v {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => return Err(err(k, v, "expected 0 or 1")),
                    })
                }
                other => return Err(err(other, v, "unknown key")),
            }
        }
        Ok(Self {
            average_weight_value: w.ok_or_else(|| err("AVERAGE_WEIGHT_VALUE", "", "missing"))?,
            average_input_value: i.ok_or_else(|| err("AVERAGE_INPUT_VALUE", "", "missing"))?,
            adc_action_share: a.ok_or_else(|| err("ADC_ACTION_SHARE", "", "missing"))?,
            cim_units_per_weight: c.ok_or_else(|| err("CIM_UNITS_PER_WEIGHT", "", "missing"))?,
            speculation_enabled: s.ok_or_else(|| err("SPECULATION_ENABLED", "", "missing"))?,
        })
    }
}

/// How inputs are applied (for estimating counts from statistics).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputScheme {
    /// Input slice widths per pass (speculative widths with speculation).
    pub slice_widths: Vec<u32>,
    /// Recovery cycles run (one per input bit) after the speculative slices.
    pub recovery: bool,
    /// 1, or 2 for signed inputs.
    pub passes: f64,
}

/// Event counts of one crossbar layer per inference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerWork {
    /// The shape.
    pub shape: LayerShape,
    /// Columns per weight.
    pub weight_slices: usize,
    /// Input passes.
    pub passes: f64,
    /// Crossbar cycles per input vector and pass (slices + recovery cycles).
    pub cycles_per_vector: f64,
    /// Of those, recovery cycles (0 without recovery).
    pub recovery_cycles_per_vector: f64,
    /// Speculation (the input buffer is read twice).
    pub speculation: bool,
    /// ADC conversions.
    pub conversions: f64,
    /// Row drives (rows x crossbar cycles).
    pub row_drives: f64,
    /// Input pulses over all row drives.
    pub input_pulses: f64,
    /// Pulses x normalised level summed over every read cell (both devices).
    pub cell_charge: f64,
    /// `simulation` or `statistics:<file>` or `typical`.
    pub stats_source: String,
}

/// Crossbars one group of a layer needs on `arch`: `(row blocks, column blocks)`.
#[must_use]
pub fn blocks(arch: &CostArch, rows: usize, filters: usize, slices: usize) -> (usize, usize) {
    (
        rows.div_ceil(arch.rows),
        (filters * slices).div_ceil(arch.cols),
    )
}

/// Crossbars one copy of a layer occupies on `arch`. Groups small enough to
/// share a crossbar are packed block-diagonally (`k` groups per crossbar, each
/// on its own rows and columns), as a crossbar compiler would map a depthwise
/// convolution; larger groups take `row blocks x column blocks` each.
#[must_use]
pub fn layer_crossbars(arch: &CostArch, shape: &LayerShape, slices: usize) -> usize {
    let (rb, cb) = blocks(arch, shape.rows, shape.filters, slices);
    if shape.groups > 1 && rb == 1 && cb == 1 {
        let per = (arch.rows / shape.rows.max(1))
            .min(arch.cols / (shape.filters * slices).max(1))
            .max(1);
        shape.groups.div_ceil(per)
    } else {
        shape.groups * rb * cb
    }
}

impl LayerWork {
    /// Estimates the counts of `shape` on `arch` from per-layer statistics.
    #[must_use]
    pub fn estimate(
        shape: LayerShape,
        arch: &CostArch,
        stats: &LayerStatistics,
        scheme: &InputScheme,
        source: &str,
    ) -> Self {
        let slices = stats.cim_units_per_weight;
        let (rb, cb) = blocks(arch, shape.rows, shape.filters, slices);
        let ns = scheme.slice_widths.len() as f64;
        let rec_bits: f64 = if scheme.recovery {
            scheme.slice_widths.iter().map(|&w| f64::from(w)).sum()
        } else {
            0.0
        };
        let cycles_per_vector = ns + rec_bits;
        let groups = shape.groups as f64;
        let row_drives = shape.vectors
            * scheme.passes
            * cycles_per_vector
            * groups
            * cb as f64
            * shape.rows as f64;
        let max_pulses: f64 = scheme
            .slice_widths
            .iter()
            .map(|&w| f64::from((1u32 << w) - 1))
            .sum::<f64>()
            + rec_bits;
        let input_pulses =
            row_drives * stats.average_input_value * max_pulses / cycles_per_vector.max(1.0);
        let cols_per_crossbar = (shape.filters * slices) as f64 / cb as f64;
        let cell_charge = input_pulses * cols_per_crossbar * stats.average_weight_value;
        let conversions = (shape.filters * slices) as f64
            * groups
            * rb as f64
            * shape.vectors
            * scheme.passes
            * 8.0
            * stats.adc_action_share;
        Self {
            shape,
            weight_slices: slices,
            passes: scheme.passes,
            cycles_per_vector,
            recovery_cycles_per_vector: rec_bits,
            speculation: stats.speculation_enabled,
            conversions,
            row_drives,
            input_pulses,
            cell_charge,
            stats_source: source.to_string(),
        }
    }
}
