//! The fast path: a compiled layer programmed onto crossbars, and the batched
//! execution of input vectors on it.
//!
//! Per chunk of vectors and per crossbar, each input slice's column sums for
//! the whole chunk are one matrix product (`pulses x (G+ - G-)`, f32, exact for
//! integer sums below 2^24), computed over the non-zero pulses only
//! ([`ProgrammedCrossbar::column_sums`]). The ADC, the speculation flags and the shift-add
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

/// Input values per chunk that narrow layers grow their chunks to (up to
/// 16 x [`CHUNK_VECTORS`] vectors).
const CHUNK_ELEMENTS: usize = 1 << 16;

/// Lookup tables over the 256 input values: pulses per input slice, and the
/// pulses a value applies over all cycles (speculative + recovery).
struct Luts {
    slice: Vec<[f32; 256]>,
    pulse: [u64; 256],
}

impl Luts {
    fn new(cfg: &RunConfig) -> Self {
        let slicing = cfg.input.slicing();
        let ns = slicing.widths().len();
        let recovery = cfg.input.recovers();
        let slice = (0..ns)
            .map(|j| {
                let mut t = [0f32; 256];
                for (v, p) in (0u32..).zip(t.iter_mut()) {
                    *p = f32::from(u8::try_from(slicing.slice(v, j)).unwrap_or(0));
                }
                t
            })
            .collect();
        let mut pulse = [0u64; 256];
        for (v, p) in (0u32..).zip(pulse.iter_mut()) {
            let spec: u32 = (0..ns).map(|j| slicing.slice(v, j)).sum();
            *p = u64::from(spec + if recovery { v.count_ones() } else { 0 });
        }
        Self { slice, pulse }
    }
}

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
        let crossbars = mapped
            .crossbars()
            .iter()
            .map(|x| x.crossbar.program(None, &mut rng))
            .collect();
        Self { mapped, crossbars }
    }

    /// Programs the layer with device non-idealities, one seeded stream per crossbar.
    #[must_use]
    pub fn program(mapped: MappedLayer, noise: &DeviceNoise, seed: u64) -> Self {
        let crossbars = mapped
            .crossbars()
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.crossbar
                    .program(Some(noise), &mut stream_rng(seed, &[u64::MAX, i as u64]))
            })
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
    pub fn run(
        &self,
        inputs: ArrayView2<'_, u8>,
        cfg: &RunConfig,
    ) -> Result<LayerOutput, RuntimeError> {
        self.check(inputs.ncols(), cfg)?;
        let (y, mut stats) = self.run_pass(inputs, cfg, 0);
        stats.passes = 1;
        Ok(LayerOutput {
            outputs: y.mapv(saturate_i32),
            stats,
        })
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
        Ok(LayerOutput {
            outputs: (yp - yn).mapv(saturate_i32),
            stats,
        })
    }

    fn check(&self, got: usize, cfg: &RunConfig) -> Result<(), RuntimeError> {
        cfg.input.validate()?;
        if got != self.mapped.inputs() {
            return Err(RuntimeError::InputShape {
                expected: self.mapped.inputs(),
                got,
            });
        }
        Ok(())
    }

    fn run_pass(
        &self,
        x: ArrayView2<'_, u8>,
        cfg: &RunConfig,
        pass: u64,
    ) -> (Array2<i64>, LayerStats) {
        let n = x.nrows();
        // Narrow layers (depthwise groups) take longer chunks, so per-chunk
        // costs stay small against the work; results do not depend on this.
        let chunk =
            (CHUNK_ELEMENTS / self.mapped.inputs().max(1)).clamp(CHUNK_VECTORS, 16 * CHUNK_VECTORS);
        let luts = Luts::new(cfg);
        let starts: Vec<usize> = (0..n).step_by(chunk).collect();
        let parts: Vec<(Array2<i64>, LayerStats)> = starts
            .par_iter()
            .map(|&start| {
                let end = (start + chunk).min(n);
                self.run_chunk(x.slice(s![start..end, ..]), start, cfg, &luts, pass)
            })
            .collect();
        let mut y = Array2::<i64>::zeros((n, self.mapped.outputs()));
        let mut stats = LayerStats::default();
        for (&start, (part, st)) in starts.iter().zip(&parts) {
            y.slice_mut(s![start..start + part.nrows(), ..])
                .assign(part);
            stats += st;
        }
        (y, stats)
    }

    /// Executes one chunk of vectors whose first vector has global index `v0`.
    fn run_chunk(
        &self,
        x: ArrayView2<'_, u8>,
        v0: usize,
        cfg: &RunConfig,
        luts: &Luts,
        pass: u64,
    ) -> (Array2<i64>, LayerStats) {
        let m = &self.mapped;
        let b = x.nrows();
        let slicing = cfg.input.slicing();
        let (widths, shifts) = (slicing.widths(), slicing.shifts());
        let ns = widths.len();
        let speculative = matches!(cfg.input, InputMode::Speculative { .. });
        let recovery = cfg.input.recovers();
        let recovery_cycles: u64 = if recovery {
            u64::from(slicing.total_bits())
        } else {
            0
        };
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
        let totals: Vec<i64> = x
            .rows()
            .into_iter()
            .map(|r| r.iter().map(|&v| i64::from(v)).sum())
            .collect();
        let mut y = Array2::<i64>::zeros((b, m.outputs()));
        for (v, t) in totals.iter().enumerate() {
            for (f, &c) in m.centers().iter().enumerate() {
                y[[v, f]] = i64::from(c) * t;
            }
        }

        let (slice_lut, pulse_lut) = (&luts.slice, &luts.pulse);
        let pulse_capacity_per_vector: u64 =
            widths.iter().map(|&w| (1u64 << w) - 1).sum::<u64>() + recovery_cycles;

        let mut xi = 0;
        while xi < m.crossbars().len() {
            let rb = m.crossbars()[xi].row_block;
            let row_start = m.crossbars()[xi].row_start;
            let rows = m.crossbars()[xi].crossbar.used_rows();
            // This row block's inputs, contiguous.
            let xr = x
                .slice(s![.., row_start..row_start + rows])
                .as_standard_layout()
                .into_owned();
            let xs = xr.as_slice().expect("standard layout");
            // Pulse matrices of this row block, one per input slice.
            let pulses: Vec<Array2<f32>> = slice_lut
                .iter()
                .map(|lut| {
                    let data = xs.iter().map(|&v| lut[usize::from(v)]).collect();
                    Array2::from_shape_vec((b, rows), data).expect("shape")
                })
                .collect();
            let rb_sums: Vec<i64> = xr
                .rows()
                .into_iter()
                .map(|r| r.iter().map(|&v| i64::from(v)).sum())
                .collect();
            // Pulses applied per row over the chunk (for input and cell activity).
            let mut row_pulses = vec![0u64; rows];
            for xrow in xs.chunks_exact(rows) {
                for (rp, &v) in row_pulses.iter_mut().zip(xrow) {
                    *rp += pulse_lut[usize::from(v)];
                }
            }
            let pulses_total: u64 = row_pulses.iter().sum();
            let xbits = if recovery {
                bit_planes(xs, rows)
            } else {
                Vec::new()
            };

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
                    let drop_flagged = speculative && recovery;
                    let counts = convert_shift_add(&adc, &sums, &mut acc, sh, drop_flagged);
                    let (in_range, saturated, inexact) =
                        (counts.in_range, counts.saturated, counts.inexact);
                    if drop_flagged && saturated > 0 {
                        let hi = adc.max_code() as f32 - 0.5;
                        let lo = if adc.signed() {
                            adc.min_code() as f32 + 0.5
                        } else {
                            f32::NEG_INFINITY
                        };
                        let flat = sums.as_slice().expect("standard layout");
                        // Scan in blocks with a branch-free test first: flags are sparse.
                        for (bi, block) in flat.chunks(64).enumerate() {
                            if block.iter().fold(false, |a, &x| a | (x >= hi) | (x <= lo)) {
                                for (k, &sum) in block.iter().enumerate() {
                                    if sum >= hi || sum <= lo {
                                        let i = bi * 64 + k;
                                        flagged.push((i / cols, i % cols));
                                    }
                                }
                            }
                        }
                        debug_assert_eq!(flagged.len() as u64, saturated);
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
                        let r = recover(
                            px,
                            &adc,
                            noise,
                            &flagged,
                            &xbits,
                            sh,
                            widths[j],
                            &mut acc,
                            |v| noise_rng(cfg.seed, pass, xi, v0 + v, ns + j),
                        );
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
                for ((arow, mut yrow), &bsum) in
                    acc.rows().into_iter().zip(y.rows_mut()).zip(&rb_sums)
                {
                    for (&a, &(f, wsh, mask, flip)) in arow.iter().zip(&roles) {
                        let val = if flip { mask * bsum - a } else { a };
                        yrow[f] += val << wsh;
                    }
                }
                // Activity: the schedule is fixed (recovery cycles run whenever recovery is on).
                let cycles = as_u64(b) * (as_u64(ns) + recovery_cycles);
                stats.slice_macs += as_u64(b * ns * rows * cols);
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

/// Row bitsets of every input bit of every vector in `x` (vectors of `rows`
/// values): layout `[(vector * 8 + bit) * words + word]`, `words = rows / 64`
/// rounded up, bits past the last row zero.
fn bit_planes(x: &[u8], rows: usize) -> Vec<u64> {
    let words = rows.div_ceil(64);
    let n = x.len() / rows.max(1);
    let mut out = vec![0u64; n * 8 * words];
    for (v, xr) in x.chunks_exact(rows).enumerate() {
        for (wi, group) in xr.chunks(64).enumerate() {
            for bit in 0..8 {
                let mut word = 0u64;
                for (k, &xv) in group.iter().enumerate() {
                    word |= u64::from((xv >> bit) & 1) << k;
                }
                out[(v * 8 + bit) * words + wi] = word;
            }
        }
    }
    out
}

/// Counts of one batch of conversions.
struct ConvertCounts {
    in_range: u64,
    saturated: u64,
    inexact: u64,
}

/// Converts every column sum (as [`Adc::convert`]) and shift-adds the codes
/// into `acc`; with `drop_flagged`, saturated codes are left out (recovery
/// replaces them). Branch-free, so it vectorises.
fn convert_shift_add(
    adc: &Adc,
    sums: &Array2<f32>,
    acc: &mut Array2<i64>,
    shift: u32,
    drop_flagged: bool,
) -> ConvertCounts {
    let (lo, hi) = (adc.min_code() as f32, adc.max_code() as f32);
    let signed = adc.signed();
    let (mut in_range, mut saturated, mut inexact) = (0u32, 0u32, 0u32);
    let mut total = ConvertCounts {
        in_range: 0,
        saturated: 0,
        inexact: 0,
    };
    let sums = sums.as_slice().expect("standard layout");
    let acc = acc.as_slice_mut().expect("standard layout");
    // Blocks keep the u32 counters from overflowing.
    for (sb, ab) in sums.chunks(1 << 20).zip(acc.chunks_mut(1 << 20)) {
        for (&sum, a) in sb.iter().zip(ab.iter_mut()) {
            let r = (sum + 0.5f32.copysign(sum)).trunc();
            let code = r.clamp(lo, hi);
            let ok = r == code;
            let sat = code == hi || (signed && code == lo);
            let keep = !(drop_flagged && sat);
            in_range += u32::from(ok);
            saturated += u32::from(sat);
            inexact += u32::from(keep && !ok);
            // |code| < 2^24: the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            let c = if keep { code as i64 } else { 0 };
            *a += c << shift;
        }
        total.in_range += u64::from(in_range);
        total.saturated += u64::from(saturated);
        total.inexact += u64::from(inexact);
        (in_range, saturated, inexact) = (0, 0, 0);
    }
    total
}

fn noise_rng(
    seed: u64,
    pass: u64,
    crossbar: usize,
    vector: usize,
    slice: usize,
) -> Xoshiro256PlusPlus {
    stream_rng(seed, &[pass, crossbar as u64, vector as u64, slice as u64])
}

#[derive(Default)]
struct Recovered {
    conversions: u64,
    saturated: u64,
    out_of_range: u64,
    inexact_slices: u64,
}

/// Re-runs each flagged `(vector, column)` of a `width`-bit speculative slice at
/// `shift` as `width` 1-bit slices over its column only, and shift-adds the
/// 1-bit codes into `acc`. `xbits` holds the row block's input bit-planes
/// (see [`bit_planes`]).
fn recover(
    px: &ProgrammedCrossbar,
    adc: &Adc,
    noise: ColumnNoise,
    flagged: &[(usize, usize)],
    xbits: &[u64],
    shift: u32,
    width: u32,
    acc: &mut Array2<i64>,
    rng_for: impl Fn(usize) -> Xoshiro256PlusPlus,
) -> Recovered {
    let words = px.used_rows().div_ceil(64);
    let mut out = Recovered::default();
    for &(v, c) in flagged {
        let start = (v * 8 + shift as usize) * words;
        let planes = &xbits[start..start + width as usize * words];
        let mut rng = (!noise.is_off()).then(|| rng_for(v));
        let mut any_out = false;
        let mut value = 0i64;
        for (t, plane) in (0..width).zip(planes.chunks_exact(words)) {
            let conv = match (rng.as_mut(), px.column_sum_bits_exact(c, plane)) {
                (None, Some(exact)) => adc.convert_exact(exact),
                (rng, _) => {
                    let mut sum = px.column_sum_bits(c, plane);
                    if let Some(rng) = rng {
                        sum = noise.perturb(sum, px.column_magnitude_bits(c, plane), rng);
                    }
                    adc.convert(sum)
                }
            };
            out.conversions += 1;
            out.saturated += u64::from(conv.saturated);
            out.out_of_range += u64::from(!conv.in_range);
            any_out |= !conv.in_range;
            value += i64::from(conv.code) << (shift + t);
        }
        acc[[v, c]] += value;
        out.inexact_slices += u64::from(any_out);
    }
    out
}

fn saturate_i32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}
