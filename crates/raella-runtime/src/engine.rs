//! The fast path: a compiled layer programmed onto crossbars, and the batched
//! execution of input vectors on it.
//!
//! Per chunk of vectors and per crossbar, each input slice's column sums for
//! the whole chunk are one matrix product (`pulses x (G+ - G-)`, f32, exact for
//! integer sums below 2^24). The ADC, the speculation flags and the shift-add
//! then run over that product; flagged column-slices are recovered by 1-bit
//! dot products over their column only. The digital side adds the per-filter
//! center term, undoes ISAAC bit flips and sums partial results across
//! row blocks.
//!
//! Chunks run in parallel (rayon). Read-noise draws come from streams keyed by
//! `(seed, pass, crossbar, vector, slice)`, so results do not depend on chunking
//! or thread count.

use ndarray::{Array2, ArrayView2, s};
use raella_compiler::MappedLayer;
use raella_device::{
    Adc, ColumnNoise, DeviceNoise, ProgrammedCrossbar, Xoshiro256PlusPlus, stream_rng,
};
use rayon::prelude::*;

use crate::{InputMode, LayerStats, RunConfig, RuntimeError};

/// Vectors per parallel work item: large enough for an efficient matrix
/// product, small enough to bound memory (a few MB per item).
pub const CHUNK_VECTORS: usize = 256;

/// A compiled layer whose crossbars have been programmed.
#[derive(Debug, Clone)]
pub struct ProgrammedLayer {
    mapped: MappedLayer,
    crossbars: Vec<ProgrammedCrossbar>,
}

/// The result of running a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerOutput {
    /// Vectors x outputs, the integer dot products as the hardware computed them.
    pub outputs: Array2<i32>,
    /// What happened.
    pub stats: LayerStats,
}

impl ProgrammedLayer {
    /// Programs the layer with ideal devices (levels exactly as compiled).
    #[must_use]
    pub fn ideal(mapped: MappedLayer) -> Self {
        let mut rng = stream_rng(0, &[]);
        let crossbars = mapped.crossbars().iter().map(|x| x.crossbar.program(None, &mut rng)).collect();
        Self { mapped, crossbars }
    }

    /// Programs the layer with device non-idealities, one seeded stream per crossbar.
    #[must_use]
    pub fn program(mapped: MappedLayer, noise: &DeviceNoise, seed: u64) -> Self {
        let crossbars = mapped
            .crossbars()
            .iter()
            .enumerate()
            .map(|(i, x)| x.crossbar.program(Some(noise), &mut stream_rng(seed, &[u64::MAX, i as u64])))
            .collect();
        Self { mapped, crossbars }
    }

    /// The compiled mapping.
    #[must_use]
    pub fn mapped(&self) -> &MappedLayer {
        &self.mapped
    }

    /// The programmed crossbars, in the mapping's order.
    #[must_use]
    pub fn crossbars(&self) -> &[ProgrammedCrossbar] {
        &self.crossbars
    }

    /// Runs unsigned 8-bit input vectors (vectors x inputs).
    ///
    /// # Errors
    /// [`RuntimeError::InputShape`] or an invalid input mode.
    pub fn run(&self, inputs: ArrayView2<'_, u8>, cfg: &RunConfig) -> Result<LayerOutput, RuntimeError> {
        self.check(inputs.ncols(), cfg)?;
        let (y, mut stats) = self.run_pass(inputs, cfg, 0);
        stats.passes = 1;
        Ok(LayerOutput { outputs: y.mapv(saturate_i32), stats })
    }

    /// Runs signed 8-bit input vectors as two passes, the positive parts and the
    /// magnitudes of the negative parts, subtracted digitally. Conversions, cycles
    /// and input activity are those of both passes.
    ///
    /// # Errors
    /// [`RuntimeError::InputShape`] or an invalid input mode.
    pub fn run_signed(
        &self,
        inputs: ArrayView2<'_, i8>,
        cfg: &RunConfig,
    ) -> Result<LayerOutput, RuntimeError> {
        self.check(inputs.ncols(), cfg)?;
        let pos = inputs.mapv(|v| u8::try_from(v.max(0)).unwrap_or(0));
        let neg = inputs.mapv(|v| u8::try_from(-i16::from(v.min(0))).unwrap_or(u8::MAX));
        let (yp, sp) = self.run_pass(pos.view(), cfg, 0);
        let (yn, sn) = self.run_pass(neg.view(), cfg, 1);
        let mut stats = sp;
        stats += &sn;
        stats.vectors = sn.vectors;
        stats.macs = sn.macs;
        stats.passes = 2;
        Ok(LayerOutput { outputs: (yp - yn).mapv(saturate_i32), stats })
    }

    fn check(&self, got: usize, cfg: &RunConfig) -> Result<(), RuntimeError> {
        cfg.input.validate()?;
        if got != self.mapped.inputs() {
            return Err(RuntimeError::InputShape { expected: self.mapped.inputs(), got });
        }
        Ok(())
    }

    fn run_pass(&self, x: ArrayView2<'_, u8>, cfg: &RunConfig, pass: u64) -> (Array2<i64>, LayerStats) {
        let n = x.nrows();
        let starts: Vec<usize> = (0..n).step_by(CHUNK_VECTORS).collect();
        let parts: Vec<(Array2<i64>, LayerStats)> = starts
            .par_iter()
            .map(|&start| {
                let end = (start + CHUNK_VECTORS).min(n);
                self.run_chunk(x.slice(s![start..end, ..]), start, cfg, pass)
            })
            .collect();
        let mut y = Array2::<i64>::zeros((n, self.mapped.outputs()));
        let mut stats = LayerStats::default();
        for (&start, (part, st)) in starts.iter().zip(&parts) {
            y.slice_mut(s![start..start + part.nrows(), ..]).assign(part);
            stats += st;
        }
        (y, stats)
    }

    /// Executes one chunk of vectors whose first vector has global index `v0`.
    #[inline(never)]
    fn run_chunk(
        &self,
        x: ArrayView2<'_, u8>,
        v0: usize,
        cfg: &RunConfig,
        pass: u64,
    ) -> (Array2<i64>, LayerStats) {
        let m = &self.mapped;
        let b = x.nrows();
        let slicing = cfg.input.slicing();
        let (widths, shifts) = (slicing.widths(), slicing.shifts());
        let ns = widths.len();
        let speculative = matches!(cfg.input, InputMode::Speculative { .. });
        let recovery = cfg.input.recovers();
        let recovery_cycles: u64 = if recovery { u64::from(slicing.total_bits()) } else { 0 };
        let wslicing = m.weight_slicing();
        let adc = cfg.adc;
        let noise = cfg.column_noise;
        let as_u64 = |v: usize| v as u64;

        let mut stats = LayerStats {
            vectors: as_u64(b),
            macs: as_u64(b * m.outputs() * m.inputs()),
            flagged_by_slice: if speculative { vec![0; ns] } else { vec![] },
            crossbars: as_u64(self.crossbars.len()),
            ..LayerStats::default()
        };
        stats.activity.max_level = m.config().geometry.max_level();

        // Digital center term: y_f = c_f * sum_i x_i + analog part.
        let totals: Vec<i64> = x.rows().into_iter().map(|r| r.iter().map(|&v| i64::from(v)).sum()).collect();
        let mut y = Array2::<i64>::zeros((b, m.outputs()));
        for (v, t) in totals.iter().enumerate() {
            for (f, &c) in m.centers().iter().enumerate() {
                y[[v, f]] = i64::from(c) * t;
            }
        }

        // Lookup tables over the 256 input values: pulses per slice, and the
        // pulses a value applies over all cycles (speculative + recovery).
        let slice_lut: Vec<[f32; 256]> = (0..ns)
            .map(|j| {
                let mut t = [0f32; 256];
                for (v, p) in (0u32..).zip(t.iter_mut()) {
                    *p = f32::from(u8::try_from(slicing.slice(v, j)).unwrap_or(0));
                }
                t
            })
            .collect();
        let mut pulse_lut = [0u64; 256];
        for (v, p) in (0u32..).zip(pulse_lut.iter_mut()) {
            let spec: u32 = (0..ns).map(|j| slicing.slice(v, j)).sum();
            *p = u64::from(spec + if recovery { v.count_ones() } else { 0 });
        }
        let pulse_capacity_per_vector: u64 =
            widths.iter().map(|&w| (1u64 << w) - 1).sum::<u64>() + recovery_cycles;

        let mut xi = 0;
        while xi < m.crossbars().len() {
            let rb = m.crossbars()[xi].row_block;
            let row_start = m.crossbars()[xi].row_start;
            let rows = m.crossbars()[xi].crossbar.used_rows();
            // This row block's inputs, contiguous.
            let xr = x.slice(s![.., row_start..row_start + rows]).as_standard_layout().into_owned();
            let xs = xr.as_slice().expect("standard layout");
            // Pulse matrices of this row block, one per input slice.
            let pulses: Vec<Array2<f32>> = slice_lut
                .iter()
                .map(|lut| {
                    let data = xs.iter().map(|&v| lut[usize::from(v)]).collect();
                    Array2::from_shape_vec((b, rows), data).expect("shape")
                })
                .collect();
            let rb_sums: Vec<i64> =
                xr.rows().into_iter().map(|r| r.iter().map(|&v| i64::from(v)).sum()).collect();
            // Pulses applied per row over the chunk (for input and cell activity).
            let mut row_pulses = vec![0u64; rows];
            for xrow in xs.chunks_exact(rows) {
                for (rp, &v) in row_pulses.iter_mut().zip(xrow) {
                    *rp += pulse_lut[usize::from(v)];
                }
            }
            let pulses_total: u64 = row_pulses.iter().sum();

            while xi < m.crossbars().len() && m.crossbars()[xi].row_block == rb {
                let mx = &m.crossbars()[xi];
                let px = &self.crossbars[xi];
                let cols = px.used_cols();
                let mut acc = Array2::<i64>::zeros((b, cols));
                let mut sums = Array2::<f32>::zeros((b, cols));
                let mut mags = Array2::<f32>::zeros((b, if noise.is_off() { 0 } else { cols }));
                let mut flagged: Vec<(usize, usize)> = Vec::new();
                for j in 0..ns {
                    px.column_sums(pulses[j].view(), sums.view_mut());
                    if !noise.is_off() {
                        px.column_magnitudes(pulses[j].view(), mags.view_mut());
                        for v in 0..b {
                            let mut rng = noise_rng(cfg.seed, pass, xi, v0 + v, j);
                            for c in 0..cols {
                                sums[[v, c]] = noise.perturb(sums[[v, c]], mags[[v, c]], &mut rng);
                            }
                        }
                    }
                    let sh = shifts[j];
                    flagged.clear();
                    let (mut in_range, mut saturated, mut inexact) = (0u64, 0u64, 0u64);
                    let sums_s = sums.as_slice().expect("standard layout");
                    let acc_s = acc.as_slice_mut().expect("standard layout");
                    for (i, (&sum, a)) in sums_s.iter().zip(acc_s.iter_mut()).enumerate() {
                        let conv = adc.convert(sum);
                        in_range += u64::from(conv.in_range);
                        saturated += u64::from(conv.saturated);
                        if speculative && conv.saturated && recovery {
                            flagged.push((i / cols, i % cols));
                        } else {
                            inexact += u64::from(!conv.in_range);
                            *a += i64::from(conv.code) << sh;
                        }
                    }
                    let primary = as_u64(b * cols);
                    stats.column_sums += primary;
                    stats.column_sums_in_range += in_range;
                    stats.activity.conversions += primary;
                    stats.activity.saturated_conversions += saturated;
                    if speculative {
                        stats.flagged += saturated;
                        stats.flagged_by_slice[j] += saturated;
                    }
                    stats.inexact_column_slices += inexact;
                    if recovery {
                        let r = recover(px, &adc, noise, &flagged, xs, sh, widths[j], &mut acc, |v| {
                            noise_rng(cfg.seed, pass, xi, v0 + v, ns + j)
                        });
                        stats.recovery_conversions += r.conversions;
                        stats.activity.conversions += r.conversions;
                        stats.activity.saturated_conversions += r.saturated;
                        stats.recovery_out_of_range += r.out_of_range;
                        stats.inexact_column_slices += r.inexact_slices;
                    }
                }
                // Digital combine: undo bit flips, shift by the weight slice, add to filters.
                let roles: Vec<(usize, u32, i64, bool)> = (0..cols)
                    .map(|lc| {
                        let (f, k) = m.column_role(mx.col_start + lc);
                        let mask = (1i64 << wslicing.widths()[k]) - 1;
                        (f, wslicing.shifts()[k], mask, mx.flipped[lc])
                    })
                    .collect();
                for ((arow, mut yrow), &bsum) in acc.rows().into_iter().zip(y.rows_mut()).zip(&rb_sums) {
                    for (&a, &(f, wsh, mask, flip)) in arow.iter().zip(&roles) {
                        let val = if flip { mask * bsum - a } else { a };
                        yrow[f] += val << wsh;
                    }
                }
                // Activity: the schedule is fixed (recovery cycles run whenever recovery is on).
                let cycles = as_u64(b) * (as_u64(ns) + recovery_cycles);
                let act = &mut stats.activity;
                act.crossbar_cycles += cycles;
                act.row_drives += cycles * as_u64(rows);
                act.input_pulse_capacity += as_u64(b * rows) * pulse_capacity_per_vector;
                act.cell_reads += cycles * as_u64(rows * cols);
                act.cell_level_reads += cycles as f64 * px.level_sum();
                act.input_pulses += pulses_total;
                act.cell_charge += row_pulses
                    .iter()
                    .zip(px.row_magnitudes())
                    .map(|(&p, &g)| p as f64 * f64::from(g))
                    .sum::<f64>();
                xi += 1;
            }
        }
        (y, stats)
    }
}

fn noise_rng(seed: u64, pass: u64, crossbar: usize, vector: usize, slice: usize) -> Xoshiro256PlusPlus {
    stream_rng(seed, &[pass, crossbar as u64, vector as u64, slice as u64])
}

#[derive(Default)]
struct Recovered {
    conversions: u64,
    saturated: u64,
    out_of_range: u64,
    inexact_slices: u64,
}

/// Rows per i16 accumulation block: `2048 x 15 < 2^15`, so no lane overflows.
const I16_BLOCK: usize = 2048;

/// `sum_r (w_r & mask_r)`: a 1-bit column sum on integer levels, where
/// `mask_r` is all ones when the row's input bit is 1 and zero otherwise.
/// i16 lanes, blocks of [`I16_BLOCK`] rows added in i32.
#[inline]
fn masked_sum(w: &[i16], mask: &[i16]) -> i32 {
    const L: usize = 64;
    let mut total = 0i32;
    for (wb, mb) in w.chunks(I16_BLOCK).zip(mask.chunks(I16_BLOCK)) {
        let mut acc = [0i16; L];
        let (cw, cm) = (wb.chunks_exact(L), mb.chunks_exact(L));
        let (rw, rm) = (cw.remainder(), cm.remainder());
        for (ws, ms) in cw.zip(cm) {
            for k in 0..L {
                acc[k] += ws[k] & ms[k];
            }
        }
        let tail: i32 = rw.iter().zip(rm).map(|(&a, &b)| i32::from(a & b)).sum();
        total += acc.iter().map(|&a| i32::from(a)).sum::<i32>() + tail;
    }
    total
}

/// One 1-bit column sum on real-valued conductances (after programming noise).
#[inline]
fn bit_dot_f32(x: &[u8], bit: u32, w: &[f32]) -> f32 {
    const L: usize = 32;
    let mut acc = [0f32; L];
    let (cx, cw) = (x.chunks_exact(L), w.chunks_exact(L));
    let (rx, rw) = (cx.remainder(), cw.remainder());
    for (xs, ws) in cx.zip(cw) {
        for k in 0..L {
            acc[k] += f32::from((xs[k] >> bit) & 1) * ws[k];
        }
    }
    let tail: f32 = rx.iter().zip(rw).map(|(&a, &b)| f32::from((a >> bit) & 1) * b).sum();
    acc.iter().sum::<f32>() + tail
}

/// Re-runs each flagged `(vector, column)` of a `width`-bit speculative slice at
/// `shift` as `width` 1-bit slices over its column only, and shift-adds the
/// 1-bit codes into `acc`. `x` holds the row block's inputs, one vector per
/// `rows` values; `flagged` is ordered by vector, so each vector's bit masks
/// are built once and shared by its flagged columns.
fn recover(
    px: &ProgrammedCrossbar,
    adc: &Adc,
    noise: ColumnNoise,
    flagged: &[(usize, usize)],
    x: &[u8],
    shift: u32,
    width: u32,
    acc: &mut Array2<i64>,
    rng_for: impl Fn(usize) -> Xoshiro256PlusPlus,
) -> Recovered {
    let rows = px.used_rows();
    let nbits = width as usize;
    let mut out = Recovered::default();
    let mut masks = vec![0i16; nbits * rows];
    let mut masks_for = usize::MAX;
    let mut sums = [0f32; 4];
    for &(v, c) in flagged {
        let xr = &x[v * rows..(v + 1) * rows];
        match px.diff_column_int(c) {
            Some(w) => {
                if masks_for != v {
                    for (t, m) in masks.chunks_exact_mut(rows).enumerate() {
                        let bit = shift + u32::try_from(t).unwrap_or(0);
                        for (mr, &xv) in m.iter_mut().zip(xr) {
                            *mr = -i16::from((xv >> bit) & 1);
                        }
                    }
                    masks_for = v;
                }
                for (s, m) in sums.iter_mut().zip(masks.chunks_exact(rows)) {
                    // Exact: |sum| <= rows x 15 < 2^24.
                    #[allow(clippy::cast_precision_loss)]
                    let f = masked_sum(w, m) as f32;
                    *s = f;
                }
            }
            None => {
                for (t, s) in (0..width).zip(sums.iter_mut()) {
                    *s = bit_dot_f32(xr, shift + t, px.diff_column(c));
                }
            }
        }
        let mut rng = (!noise.is_off()).then(|| rng_for(v));
        let mut any_out = false;
        let mut value = 0i64;
        for (t, &sum) in (0..width).zip(&sums) {
            let bit = shift + t;
            let mut sum = sum;
            if let Some(rng) = rng.as_mut() {
                let mag = bit_dot_f32(xr, bit, px.magnitude_column(c));
                sum = noise.perturb(sum, mag, rng);
            }
            let conv = adc.convert(sum);
            out.conversions += 1;
            out.saturated += u64::from(conv.saturated);
            out.out_of_range += u64::from(!conv.in_range);
            any_out |= !conv.in_range;
            value += i64::from(conv.code) << bit;
        }
        acc[[v, c]] += value;
        out.inexact_slices += u64::from(any_out);
    }
    out
}

fn saturate_i32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}
