//! Weight encodings: how a signed int8 weight becomes a digital center plus
//! an analog offset whose 8-bit magnitude is sliced across devices.
//!
//! Every encoding here has the same algebra, `w = center_f + offset`, so
//! `y_f = center_f * sum_i x_i + sum_i x_i * offset_i`; the first term is
//! computed digitally and exactly, the second on the crossbar.
//!
//! * [`Encoding::CenterOffset`] (RAELLA): a per-filter center (see [`CenterRule`]),
//!   signed offsets `w - c` in 2T2R pairs (`|o| <= 255`).
//! * [`Encoding::ZeroOffset`]: 2T2R with center 0, the plain signed weight.
//! * [`Encoding::UnsignedOffset`] (ISAAC): 1T1R cells hold `w + 128` (center
//!   `-128`, offsets in `[1, 255]`), optionally with ISAAC's per-column bit flip.

use std::fmt;

use ndarray::{ArrayView1, ArrayView2};
use raella_device::CellKind;

use crate::{CompileError, Slicing};

/// How the per-filter center of [`Encoding::CenterOffset`] is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CenterRule {
    /// The rounded mean of the filter's weights (the public worked example's rule).
    #[default]
    Mean,
    /// The median (the mean of the two middle weights, rounded, for even counts).
    Median,
    /// The integer center within `SEARCH_RADIUS` of the mean that minimises
    /// the mean absolute column sum over weight slices, input slices and crossbar
    /// row blocks, on calibration inputs.
    Search,
}

/// How far from the mean [`CenterRule::Search`] looks, in weight codes.
pub const SEARCH_RADIUS: i32 = 8;

/// Calibration vectors the `search` rule evaluates on, at most.
pub const SEARCH_MAX_VECTORS: usize = 16;

impl fmt::Display for CenterRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mean => "mean",
            Self::Median => "median",
            Self::Search => "search",
        })
    }
}

/// A weight encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// RAELLA's Center+Offset: 2T2R, signed offsets around a per-filter center.
    CenterOffset(CenterRule),
    /// Differential 2T2R with center 0.
    ZeroOffset,
    /// ISAAC's unsigned offset: `w + 128` in 1T1R, `128 * sum x` subtracted digitally.
    UnsignedOffset {
        /// Store a column inverted when its levels are mostly high (ISAAC's trick).
        bit_flip: bool,
    },
}

impl Default for Encoding {
    fn default() -> Self {
        Self::CenterOffset(CenterRule::Mean)
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CenterOffset(rule) => write!(f, "center_offset({rule})"),
            Self::ZeroOffset => f.write_str("zero_offset"),
            Self::UnsignedOffset { bit_flip: true } => f.write_str("unsigned_offset(bit_flip)"),
            Self::UnsignedOffset { bit_flip: false } => f.write_str("unsigned_offset"),
        }
    }
}

impl Encoding {
    /// The cell technology the encoding needs.
    #[must_use]
    pub fn cell_kind(&self) -> CellKind {
        match self {
            Self::CenterOffset(_) | Self::ZeroOffset => CellKind::TwoT2R,
            Self::UnsignedOffset { .. } => CellKind::OneT1R,
        }
    }

    /// Whether compiling reads the calibration inputs (only the `search`
    /// center rule does): otherwise a compile is a function of the weights and
    /// the configuration alone.
    #[must_use]
    pub fn reads_calibration(&self) -> bool {
        *self == Self::CenterOffset(CenterRule::Search)
    }
}

/// Calibration inputs: real input vectors of the layer and the input slicing
/// they will be applied with. Used by the `search` center rule.
#[derive(Debug, Clone, Copy)]
pub struct Calibration<'a> {
    /// Vectors x inputs, unsigned 8-bit.
    pub inputs: ArrayView2<'a, u8>,
    /// Input slicing (the widths applied per crossbar cycle).
    pub input_slicing: &'a Slicing,
}

/// The center of one filter under `encoding` (before any search).
fn basic_center(w: ArrayView1<'_, i8>, encoding: Encoding) -> i32 {
    match encoding {
        Encoding::ZeroOffset => 0,
        Encoding::UnsignedOffset { .. } => -128,
        Encoding::CenterOffset(CenterRule::Median) => median(w),
        Encoding::CenterOffset(_) => mean(w),
    }
}

/// Rounded mean (ties away from zero).
#[must_use]
pub fn mean(w: ArrayView1<'_, i8>) -> i32 {
    let n = i64::try_from(w.len().max(1)).unwrap_or(i64::MAX);
    let s: i64 = w.iter().map(|&v| i64::from(v)).sum();
    let r = (2 * s + n * s.signum()) / (2 * n);
    i32::try_from(r).unwrap_or(0)
}

/// Median; the rounded mean of the two middle values for even counts.
#[must_use]
pub fn median(w: ArrayView1<'_, i8>) -> i32 {
    let mut v: Vec<i32> = w.iter().map(|&x| i32::from(x)).collect();
    v.sort_unstable();
    let n = v.len();
    if n == 0 {
        return 0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        let s = v[n / 2 - 1] + v[n / 2];
        // Round half away from zero.
        (2 * s + 2 * s.signum()) / 4
    }
}

/// Per-filter centers of `weights` (outputs x inputs).
///
/// `rows_per_crossbar` is used by the `search` rule: column sums are per
/// crossbar, so the objective is evaluated per row block.
///
/// # Errors
/// [`CompileError::SearchNeedsCalibration`] or [`CompileError::CalibrationShape`]
/// for the `search` rule without suitable calibration inputs.
pub fn centers(
    weights: ArrayView2<'_, i8>,
    encoding: Encoding,
    weight_slicing: &Slicing,
    rows_per_crossbar: usize,
    calibration: Option<Calibration<'_>>,
) -> Result<Vec<i32>, CompileError> {
    if !encoding.reads_calibration() {
        return Ok(weights
            .rows()
            .into_iter()
            .map(|w| basic_center(w, encoding))
            .collect());
    }
    let cal = calibration.ok_or(CompileError::SearchNeedsCalibration)?;
    if cal.inputs.ncols() != weights.ncols() {
        return Err(CompileError::CalibrationShape {
            expected: weights.ncols(),
            got: cal.inputs.ncols(),
        });
    }
    // Input slice planes, computed once: [vector][input slice][input] as i32.
    let nv = cal.inputs.nrows().min(SEARCH_MAX_VECTORS);
    let ns = cal.input_slicing.len();
    let n_in = weights.ncols();
    let mut planes = vec![0i32; nv * ns * n_in];
    for v in 0..nv {
        for j in 0..ns {
            for i in 0..n_in {
                let p = cal.input_slicing.slice(u32::from(cal.inputs[[v, i]]), j);
                planes[(v * ns + j) * n_in + i] = i32::try_from(p).unwrap_or(0);
            }
        }
    }
    let rpc = rows_per_crossbar.max(1);
    Ok(weights
        .rows()
        .into_iter()
        .map(|w| {
            let m = mean(w);
            let lo = (m - SEARCH_RADIUS).max(-128);
            let hi = (m + SEARCH_RADIUS).min(127);
            let mut best = (f64::INFINITY, m);
            // Visit candidates nearest the mean first, so ties keep the mean.
            let mut order: Vec<i32> = (lo..=hi).collect();
            order.sort_by_key(|c| ((c - m).abs(), *c));
            for c in order {
                let cost = search_cost(w, c, weight_slicing, &planes, nv, ns, rpc);
                if cost < best.0 {
                    best = (cost, c);
                }
            }
            best.1
        })
        .collect())
}

/// Mean |column sum| of one filter with center `c`.
fn search_cost(
    w: ArrayView1<'_, i8>,
    c: i32,
    slicing: &Slicing,
    planes: &[i32],
    nv: usize,
    ns: usize,
    rows_per_crossbar: usize,
) -> f64 {
    let n_in = w.len();
    let nk = slicing.len();
    // Signed slice values per weight slice: sign(o) * slice_k(|o|).
    let mut signed = vec![0i32; nk * n_in];
    for (i, &wi) in w.iter().enumerate() {
        let o = i32::from(wi) - c;
        let mag = o.unsigned_abs();
        for k in 0..nk {
            let s = i32::try_from(slicing.slice(mag, k)).unwrap_or(0);
            signed[k * n_in + i] = if o < 0 { -s } else { s };
        }
    }
    let mut total = 0.0f64;
    let mut count = 0usize;
    for v in 0..nv {
        for j in 0..ns {
            let plane = &planes[(v * ns + j) * n_in..(v * ns + j + 1) * n_in];
            for k in 0..nk {
                let sk = &signed[k * n_in..(k + 1) * n_in];
                for start in (0..n_in).step_by(rows_per_crossbar) {
                    let end = (start + rows_per_crossbar).min(n_in);
                    let s: i64 = plane[start..end]
                        .iter()
                        .zip(&sk[start..end])
                        .map(|(&p, &o)| i64::from(p * o))
                        .sum();
                    total += s.unsigned_abs() as f64;
                    count += 1;
                }
            }
        }
    }
    total / count.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn worked_example_from_the_spec() {
        // Weights 15, 10, 14 -> center 13, offsets +2, -3, +1; inputs 4, 2, 1.
        let w = array![[15i8, 10, 14]];
        let s = Slicing::parse("4-4").unwrap();
        let c = centers(
            w.view(),
            Encoding::CenterOffset(CenterRule::Mean),
            &s,
            512,
            None,
        )
        .unwrap();
        assert_eq!(c, vec![13]);
        let x = [4i32, 2, 1];
        let digital = c[0] * x.iter().sum::<i32>();
        let analog: i32 = w
            .row(0)
            .iter()
            .zip(x)
            .map(|(&wi, xi)| (i32::from(wi) - c[0]) * xi)
            .sum();
        assert_eq!((digital, analog, digital + analog), (91, 3, 94));
    }

    #[test]
    fn mean_and_median_round_half_away() {
        assert_eq!(mean(array![1i8, 2].view()), 2);
        assert_eq!(mean(array![-1i8, -2].view()), -2);
        assert_eq!(mean(array![-1i8, 1, 3].view()), 1);
        assert_eq!(median(array![5i8, -3, 0, 100].view()), 3);
        assert_eq!(median(array![5i8, -4, 0, 100].view()), 3);
        assert_eq!(median(array![7i8, -4, 0].view()), 0);
    }

    #[test]
    fn search_needs_calibration() {
        let w = array![[1i8, 2]];
        let s = Slicing::parse("4-4").unwrap();
        let e = centers(
            w.view(),
            Encoding::CenterOffset(CenterRule::Search),
            &s,
            512,
            None,
        );
        assert_eq!(e, Err(CompileError::SearchNeedsCalibration));
    }

    #[test]
    fn search_is_never_worse_than_the_mean() {
        let w = array![[10i8, 12, 9, 40, 11, 10, -30, 8]];
        let x = array![
            [3u8, 200, 17, 0, 255, 9, 1, 64],
            [0, 0, 100, 5, 5, 5, 250, 7]
        ];
        let ws = Slicing::parse("4-2-2").unwrap();
        let is = Slicing::parse("4-2-2").unwrap();
        let cal = Calibration {
            inputs: x.view(),
            input_slicing: &is,
        };
        let mean_c = centers(
            w.view(),
            Encoding::CenterOffset(CenterRule::Mean),
            &ws,
            4,
            None,
        )
        .unwrap();
        let best = centers(
            w.view(),
            Encoding::CenterOffset(CenterRule::Search),
            &ws,
            4,
            Some(cal),
        )
        .unwrap();
        let mut planes = vec![];
        for v in 0..2 {
            for j in 0..3 {
                for i in 0..8 {
                    planes.push(i32::try_from(is.slice(u32::from(x[[v, i]]), j)).unwrap());
                }
            }
        }
        let cost = |c| search_cost(w.row(0), c, &ws, &planes, 2, 3, 4);
        assert!(cost(best[0]) <= cost(mean_c[0]));
    }
}
