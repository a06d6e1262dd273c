//! The slow, obviously-correct reference the fast path is tested against.
//!
//! It follows the spec's words one column-slice at a time, and no noise. For
//! each vector, crossbar, column and input slice: the column sum, its ADC code;
//! for a flagged speculative slice with recovery, one 1-bit column sum and
//! conversion per bit of the slice; then shift-add, flip correction, the
//! digital center term, and partial sums across crossbars.
//!
//! [`run_reference`] works on the compiled integer levels with integer
//! arithmetic. [`run_reference_programmed`] works on a programmed layer's
//! conductances (programming variation, stuck cells): its column sums are
//! exact (`f64`) sums of `pulses x (G+ - G-)`, while the fast path adds `f32`
//! products in its own order, so a conversion whose sum lies within the `f32`
//! rounding bound of a code boundary (or of saturation) may go either way. Each
//! output is then an interval holding every result those conversions allow; on
//! integer conductances every interval is a single value.

use ndarray::{Array2, ArrayView2};
use raella_compiler::MappedLayer;

use crate::{InputMode, ProgrammedLayer, RunConfig};
use raella_device::Kernel;

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

/// A reference run on programmed conductances: every output lies in `lo ..= hi`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceBounds {
    /// Smallest result (vectors x outputs).
    pub lo: Array2<i64>,
    /// Largest result.
    pub hi: Array2<i64>,
    /// Counts with every conversion at its exact sum.
    pub counts: ReferenceCounts,
    /// Conversions whose code the `f32` rounding may change.
    pub ambiguous_codes: u64,
    /// Speculative conversions whose flag the `f32` rounding may change
    /// (`counts.flagged` may be off by that many), and the same weighted by
    /// slice width (for `counts.recovery`).
    pub ambiguous_flags: u64,
    /// [`Self::ambiguous_flags`] weighted by slice width.
    pub ambiguous_flag_bits: u64,
}

/// The exact integer result `y = W x` (vectors x outputs).
///
/// Integer dot products, compiled for the engine's instruction set
/// ([`Kernel::dispatch`]): every product `x w` has magnitude at most
/// `255 x 128 = 32,640`, so any `2^16` of them sum exactly in `i32`; blocks
/// of that many inputs are summed in `i32`, the blocks in `i64`. Four vectors
/// take their turns over each weight row while it is in cache.
///
/// # Panics
/// If the inputs' length is not the weights'.
#[must_use]
pub fn exact_outputs(weights: ArrayView2<'_, i8>, inputs: ArrayView2<'_, u8>) -> Array2<i64> {
    assert_eq!(inputs.ncols(), weights.ncols(), "one weight per input");
    Kernel::dispatch_selected(
        #[inline(always)]
        || exact_outputs_blocks(weights, inputs),
    )
}

/// [`exact_outputs`]' body.
#[inline(always)]
fn exact_outputs_blocks(weights: ArrayView2<'_, i8>, inputs: ArrayView2<'_, u8>) -> Array2<i64> {
    const BLOCK: usize = 1 << 16;
    const V: usize = 4;
    let (w, x) = (weights.as_standard_layout(), inputs.as_standard_layout());
    let (ws, xs) = (
        w.as_slice().expect("standard layout"),
        x.as_slice().expect("standard layout"),
    );
    let (k, nf) = (w.ncols(), w.nrows());
    let mut y = Array2::<i64>::zeros((x.nrows(), nf));
    if k == 0 {
        return y;
    }
    let mut xi = vec![0i16; V * k];
    for (xrows, mut yrows) in xs
        .chunks(V * k)
        .zip(y.axis_chunks_iter_mut(ndarray::Axis(0), V))
    {
        let nv = xrows.len() / k;
        for (d, &v) in xi.iter_mut().zip(xrows) {
            *d = i16::from(v);
        }
        xi[nv * k..].fill(0);
        let xv: [&[i16]; V] = std::array::from_fn(|j| &xi[j * k..(j + 1) * k]);
        for (f, wrow) in ws.chunks_exact(k).enumerate() {
            let mut total = [0i64; V];
            for b in (0..k).step_by(BLOCK) {
                let e = (b + BLOCK).min(k);
                let wb = &wrow[b..e];
                for (t, xr) in total.iter_mut().zip(&xv) {
                    let dot: i32 = xr[b..e]
                        .iter()
                        .zip(wb)
                        .map(|(&a, &w)| i32::from(a) * i32::from(w))
                        .sum();
                    *t += i64::from(dot);
                }
            }
            for (j, &t) in total.iter().enumerate().take(nv) {
                yrows[[j, f]] = t;
            }
        }
    }
    y
}

/// [`exact_outputs`] by the plain integer triple loop (its test oracle).
#[cfg(test)]
fn exact_outputs_loop(weights: ArrayView2<'_, i8>, inputs: ArrayView2<'_, u8>) -> Array2<i64> {
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

/// Runs `layer` on `inputs` the slow way, on its integer levels (noise is
/// ignored: the reference is noise-free).
///
/// # Panics
/// If the inputs do not match the layer.
#[must_use]
pub fn run_reference(
    layer: &MappedLayer,
    inputs: ArrayView2<'_, u8>,
    cfg: &RunConfig,
) -> (Array2<i64>, ReferenceCounts) {
    let column = |xi: usize, c: usize, pulses: &[(usize, u8)]| -> Sum {
        let xb = &layer.crossbars()[xi].crossbar;
        Sum::exact(
            pulses
                .iter()
                .map(|&(r, p)| {
                    let (pos, neg) = xb.levels(r, c);
                    i64::from(p) * (i64::from(pos) - i64::from(neg))
                })
                .sum(),
        )
    };
    let sums = |xi: usize, pulses: &[(usize, u8)]| -> Vec<Sum> {
        let xb = &layer.crossbars()[xi].crossbar;
        let mut dense = vec![0u8; xb.used_rows()];
        for &(r, p) in pulses {
            dense[r] = p;
        }
        xb.column_sums_exact(&dense)
            .into_iter()
            .map(Sum::exact)
            .collect()
    };
    let b = reference(layer, inputs, cfg, sums, column);
    assert_eq!(b.lo, b.hi, "integer sums are never ambiguous");
    (b.lo, b.counts)
}

/// Runs `layer` on `inputs` the slow way on its programmed conductances
/// (noise-free reads); see the module doc for the bounds.
///
/// # Panics
/// If the inputs do not match the layer.
#[must_use]
pub fn run_reference_programmed(
    layer: &ProgrammedLayer,
    inputs: ArrayView2<'_, u8>,
    cfg: &RunConfig,
) -> ReferenceBounds {
    // Crossbars whose conductances are all integers (ideal, or stuck cells only).
    let integral: Vec<bool> = layer
        .crossbars()
        .iter()
        .map(|x| (0..x.used_cols()).all(|c| x.diff_column(c).iter().all(|g| g.fract() == 0.0)))
        .collect();
    let column = |xi: usize, c: usize, pulses: &[(usize, u8)]| -> Sum {
        let g = layer.crossbars()[xi].diff_column(c);
        let (mut sum, mut abs) = (0f64, 0f64);
        for &(r, p) in pulses {
            let x = f64::from(p) * f64::from(g[r]);
            sum += x;
            abs += x.abs();
        }
        // Integers whose partial sums stay below 2^24 add exactly in f32, in any
        // order. Otherwise adding `k` f32 terms (products rounded too) errs by
        // about u sqrt(k) |partial sums| (u = 2^-24), each partial at most
        // `abs`: eight times that bound is far outside anything rounding produces.
        #[allow(clippy::cast_precision_loss)]
        let k = pulses.len() as f64;
        let delta = if integral[xi] && abs < f64::from(1u32 << 24) {
            0.0
        } else {
            8.0 * f64::from(f32::EPSILON) / 2.0 * k.sqrt() * abs
        };
        Sum { value: sum, delta }
    };
    let sums = |xi: usize, pulses: &[(usize, u8)]| -> Vec<Sum> {
        (0..layer.crossbars()[xi].used_cols())
            .map(|c| column(xi, c, pulses))
            .collect()
    };
    reference(layer.mapped(), inputs, cfg, sums, column)
}

/// A column sum and how far the fast path's may be from it.
#[derive(Clone, Copy)]
struct Sum {
    value: f64,
    delta: f64,
}

impl Sum {
    #[allow(clippy::cast_precision_loss)]
    fn exact(v: i64) -> Self {
        // |v| < 2^53: exact.
        Self {
            value: v as f64,
            delta: 0.0,
        }
    }
}

/// An interval of integers.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Range {
    lo: i64,
    hi: i64,
}

impl Range {
    fn point(v: i64) -> Self {
        Self { lo: v, hi: v }
    }

    fn add(self, o: Self) -> Self {
        Self {
            lo: self.lo + o.lo,
            hi: self.hi + o.hi,
        }
    }

    fn shl(self, s: u32) -> Self {
        Self {
            lo: self.lo << s,
            hi: self.hi << s,
        }
    }

    fn union(self, o: Self) -> Self {
        Self {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
        }
    }
}

/// The spec's ADC: round half away from zero, clamp.
#[allow(clippy::cast_possible_truncation)]
fn convert(cfg: &RunConfig, sum: f64) -> i64 {
    // Column sums are far below 2^63.
    (sum.round() as i64).clamp(i64::from(cfg.adc.min_code()), i64::from(cfg.adc.max_code()))
}

fn is_saturated(cfg: &RunConfig, code: i64) -> bool {
    code == i64::from(cfg.adc.max_code())
        || (cfg.adc.signed() && code == i64::from(cfg.adc.min_code()))
}

/// The reference loop, given each crossbar's column sums of a pulse vector
/// (`sums`) and one column's sum (`column`, for the 1-bit recovery reads).
/// Pulse vectors are given by their non-zero `(row, pulses)`: rows without a
/// pulse add nothing.
fn reference(
    layer: &MappedLayer,
    inputs: ArrayView2<'_, u8>,
    cfg: &RunConfig,
    sums: impl Fn(usize, &[(usize, u8)]) -> Vec<Sum>,
    column: impl Fn(usize, usize, &[(usize, u8)]) -> Sum,
) -> ReferenceBounds {
    assert_eq!(inputs.ncols(), layer.inputs());
    let slicing = cfg.input.slicing();
    let speculative = matches!(cfg.input, InputMode::Speculative { .. });
    let recovery = cfg.input.recovers();
    let ws = layer.weight_slicing();
    let mut counts = ReferenceCounts::default();
    let (mut ambiguous_codes, mut ambiguous_flags, mut ambiguous_flag_bits) = (0, 0, 0);
    let (n, outs) = (inputs.nrows(), layer.outputs());
    let (mut lo, mut hi) = (
        Array2::<i64>::zeros((n, outs)),
        Array2::<i64>::zeros((n, outs)),
    );
    for (v, x) in inputs.rows().into_iter().enumerate() {
        let total: i64 = x.iter().map(|&a| i64::from(a)).sum();
        let mut y: Vec<Range> = layer
            .centers()
            .iter()
            .map(|&c| Range::point(i64::from(c) * total))
            .collect();
        for (xi, mx) in layer.crossbars().iter().enumerate() {
            let xb = &mx.crossbar;
            let xs: Vec<u32> = (0..xb.used_rows())
                .map(|r| u32::from(x[mx.row_start + r]))
                .collect();
            let block_sum: i64 = xs.iter().map(|&a| i64::from(a)).sum();
            let nonzero = |pulse: &dyn Fn(u32) -> u32| -> Vec<(usize, u8)> {
                xs.iter()
                    .enumerate()
                    .map(|(r, &a)| (r, u8::try_from(pulse(a)).unwrap()))
                    .filter(|&(_, p)| p != 0)
                    .collect()
            };
            let slice_sums: Vec<Vec<Sum>> = (0..slicing.len())
                .map(|j| sums(xi, &nonzero(&|a| slicing.slice(a, j))))
                .collect();
            let bit_pulses: Vec<Vec<(usize, u8)>> =
                (0..8).map(|bit| nonzero(&|a| (a >> bit) & 1)).collect();
            // A conversion's code, as a range when rounding may change it.
            let mut code = |s: Sum| -> Range {
                let r = Range {
                    lo: convert(cfg, s.value - s.delta),
                    hi: convert(cfg, s.value + s.delta),
                };
                ambiguous_codes += u64::from(r.lo != r.hi);
                r
            };
            for c in 0..xb.used_cols() {
                let mut measured = Range::point(0);
                for (j, s) in slice_sums.iter().map(|s| s[c]).enumerate() {
                    let (width, shift) = (slicing.widths()[j], slicing.shifts()[j]);
                    let spec = code(s);
                    let exact = convert(cfg, s.value);
                    counts.primary += 1;
                    // Flagged at the exact sum, and whether rounding may change that.
                    let flagged = speculative && is_saturated(cfg, exact);
                    let may_flag =
                        speculative && (is_saturated(cfg, spec.lo) || is_saturated(cfg, spec.hi));
                    let may_keep =
                        !speculative || !is_saturated(cfg, spec.lo) || !is_saturated(cfg, spec.hi);
                    if flagged {
                        counts.flagged += 1;
                        counts.flagged_bits += u64::from(width);
                        if recovery {
                            counts.recovery += u64::from(width);
                        }
                    }
                    if may_flag && may_keep {
                        ambiguous_flags += 1;
                        ambiguous_flag_bits += u64::from(width);
                    }
                    let kept = spec.shl(shift);
                    let replaced = (recovery && may_flag).then(|| {
                        (0..width).fold(Range::point(0), |acc, t| {
                            let bit = shift + t;
                            acc.add(code(column(xi, c, &bit_pulses[bit as usize])).shl(bit))
                        })
                    });
                    measured = measured.add(match replaced {
                        Some(r) if may_keep => r.union(kept),
                        Some(r) => r,
                        None => kept,
                    });
                }
                let (f, k) = layer.column_role(mx.col_start + c);
                let mask = (1i64 << ws.widths()[k]) - 1;
                let value = if mx.flipped[c] {
                    Range {
                        lo: mask * block_sum - measured.hi,
                        hi: mask * block_sum - measured.lo,
                    }
                } else {
                    measured
                };
                y[f] = y[f].add(value.shl(ws.shifts()[k]));
            }
        }
        for (f, r) in y.iter().enumerate() {
            lo[[v, f]] = r.lo;
            hi[[v, f]] = r.hi;
        }
    }
    ReferenceBounds {
        lo,
        hi,
        counts,
        ambiguous_codes,
        ambiguous_flags,
        ambiguous_flag_bits,
    }
}

#[cfg(test)]
mod exact_tests {
    use super::*;

    /// The blocked products equal the plain integer loop, at the extremes too
    /// (all inputs 255 against weights of -128 and 127 on long vectors, more
    /// inputs than one `i32` block holds), with vector counts that are not a
    /// multiple of four.
    #[test]
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    fn the_blocked_product_is_the_integer_result() {
        let mut state = 0x1234_5678_u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as u32
        };
        for &(v, n, f, extreme) in &[
            (7, 9, 3, false),
            (33, 700, 21, false),
            (5, 4000, 6, true),
            (1, 1, 1, false),
            (6, 70_000, 3, true),
            (3, 70_000, 2, false),
        ] {
            let w = Array2::from_shape_fn((f, n), |(i, _)| {
                if extreme {
                    if i % 2 == 0 { -128 } else { 127 }
                } else {
                    (next() % 256) as u8 as i8
                }
            });
            let x =
                Array2::from_shape_fn((v, n), |_| if extreme { 255 } else { (next() % 256) as u8 });
            assert_eq!(
                exact_outputs(w.view(), x.view()),
                exact_outputs_loop(w.view(), x.view())
            );
        }
    }
}
