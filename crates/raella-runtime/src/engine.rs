//! The fast path: a compiled layer programmed onto crossbars, and the batched
//! execution of input vectors on it.
//!
//! Per chunk of vectors and per crossbar, each input slice's column sums for
//! the whole chunk are one matrix product `pulses x (G+ - G-)`: exact `i32`
//! integers for ideal devices ([`ProgrammedCrossbar::column_sums_int`]; made
//! f32 when read noise perturbs them), else an f32 product over the non-zero
//! pulses ([`ProgrammedCrossbar::column_sums`], exact for integer sums below
//! 2^24, so both give the same values where both apply). The ADC, the
//! speculation flags and the shift-add then run over that product; flagged
//! column-slices are recovered by 1-bit dot products over their column only. The digital side adds the per-filter
//! center term, undoes ISAAC bit flips and sums partial results across
//! row blocks.
//!
//! Chunks run in parallel (rayon). Read-noise draws come from counter-based
//! streams (`raella_device::normal`) keyed by `(seed, pass, crossbar, vector,
//! slice)`, draw `c` for column `c`, and in recovery by `(seed, pass,
//! crossbar, vector, ns + slice, column)`, draw `t` for bit `t`: every
//! conversion draws its own value, and results do not depend on chunking or
//! thread count.

use std::sync::OnceLock;

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, s};
use raella_compiler::MappedLayer;
use raella_device::normal::{
    ChildSteps, fill_normals, normal_pairs, stream_child, stream_child_of, stream_key,
};
use raella_device::{
    Adc, AdcInstance, BitRows, ColumnNoise, DeviceNoise, DriftCompensation, ExactBits,
    IntConversion, IntCounts, Kernel, ProgrammedCrossbar, stream_rng,
};
use rayon::prelude::*;

use crate::{InputMode, LayerStats, RunConfig, RuntimeError};

/// Vectors per parallel work item: large enough for an efficient matrix
/// product, small enough to bound memory (a few MB per item).
pub const CHUNK_VECTORS: usize = 256;

/// Input values, or one crossbar's column sums, per chunk that narrow
/// layers grow their chunks to (up to [`MAX_CHUNK_VECTORS`] vectors).
const CHUNK_ELEMENTS: usize = 1 << 16;

/// The most vectors a chunk holds.
const MAX_CHUNK_VECTORS: usize = 16 * CHUNK_VECTORS;

// A chunk's per-row pulse counts fit `u32` lanes ([`row_totals`],
// [`slices_and_totals`]): a value's slices sum to at most the value, 255,
// and recovery reads at most its 8 bits, so 263 pulses a value at most.
const _: () = assert!(MAX_CHUNK_VECTORS * 263 < u32::MAX as usize);

/// A thread's large per-crossbar buffers, kept from one chunk to the next
/// ([`SCRATCH`]) instead of allocated and zeroed for each: the accumulators
/// (zeroed before each use), and the integer sums, magnitudes and draws,
/// which are overwritten before they are read (the products write every
/// value; a draw row left unwritten belongs to a row whose magnitudes are
/// all zero, and only finite draws or zeros are ever stored, so its stale
/// values add `0 * z = 0`).
#[derive(Default)]
struct Scratch {
    acc: Vec<i64>,
    sums: Vec<i32>,
    mags: Vec<i32>,
    draws: Vec<f32>,
    /// Lumped-noise recovery's bit sums, magnitudes and draws
    /// ([`recover_lumped`]), or the bit sums and instances of recovery
    /// through ADC instances ([`recover_exact_instances`]); each written
    /// before it is read.
    recovery: Vec<f32>,
    /// Recovery's active rows per input bit-plane (`8` per vector) and per
    /// flagged vector the most of a slice's bits: each written for a vector
    /// with a flagged column before it is read.
    xones: Vec<u32>,
    peak: Vec<u32>,
    /// The integer ADC passes' flag words ([`convert_shift_add_int`],
    /// [`convert_shift_add_noisy`]; cleared and written by each pass).
    flag_words: Vec<u64>,
    /// Recovery's reads by the kernel ([`DenseBits::read`] rewrites it).
    dense: DenseBits,
    /// A slice's integer sums shifted by ADC instances ([`instance_shift`];
    /// rewritten per slice).
    shifted: Vec<i32>,
}

thread_local! {
    /// This thread's [`Scratch`]: taken by a chunk and put back when it ends
    /// (a chunk run nested on the same thread takes an empty one).
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
    /// A signed run's negative-pass outputs of one chunk
    /// ([`ProgrammedLayer::run_signed_wide`]): not zeroed between chunks, since
    /// a chunk gathered by filters writes every output before adding to it.
    static NEGATIVE_PASS: std::cell::Cell<Vec<i64>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Crossbar cycles per vector that recovery adds: one per input bit when it
/// is on (the schedule is fixed).
fn recovery_cycles(cfg: &RunConfig) -> u64 {
    if cfg.input.recovers() {
        u64::from(cfg.input.slicing().total_bits())
    } else {
        0
    }
}

/// `v` at length `n`: its old values kept (the caller overwrites them), any
/// new ones zero, its allocation reused.
fn resized<T: Copy + Default>(mut v: Vec<T>, n: usize) -> Vec<T> {
    v.resize(n, T::default());
    v
}

/// What a pass's chunks share (both passes' of a signed run): each
/// crossbar's safe rows and ADC instances' tables. (An input slice's pulses
/// are `(v >> shift) & mask`, computed. A depthwise layer makes these once
/// per group: each entry is filled by the first chunk that needs it.)
struct Luts {
    /// Per crossbar, per column, the active rows a recovered read can have
    /// and still be known in range ([`ExactBits::safe_rows`] under the
    /// pass's ADC, its bounds less the column's shift where ADC instances
    /// shift the sums): built by the pass's first chunk with an exact
    /// recovery on that crossbar, and shared by the others.
    safe: Vec<OnceLock<Vec<u32>>>,
    /// Per crossbar with ADC instances, each column's [`instance_shift`]
    /// under the pass's ADC when every column has one: its conversions are
    /// then the ideal ADC's of the integer sums shifted by them. Repeated
    /// over whole vectors, at least 64 sums (the first `cols` are the
    /// columns' shifts), so the shifting loop runs over a chunk's flat sums.
    /// Built by the pass's first chunk on that crossbar.
    shifts: Vec<OnceLock<Option<Vec<i32>>>>,
    /// Per crossbar with ADC instances that move codes, the instances'
    /// parameters tiled over whole vectors for [`transfer_codes`]. Built by
    /// the pass's first chunk on that crossbar.
    instances: Vec<OnceLock<InstanceTiles>>,
}

impl Luts {
    fn new(crossbars: usize) -> Self {
        Self {
            safe: (0..crossbars).map(|_| OnceLock::new()).collect(),
            shifts: (0..crossbars).map(|_| OnceLock::new()).collect(),
            instances: (0..crossbars).map(|_| OnceLock::new()).collect(),
        }
    }
}

/// One row block's pulse counts, one matrix per input slice: `u8` rows padded
/// to [`ProgrammedCrossbar::pulse_stride`] for ideal devices (exact integer
/// products), `f32` for programmed, real-valued conductances.
enum Pulses {
    Int(Vec<Vec<u8>>),
    Real(Vec<Array2<f32>>),
}

/// One crossbar's column sums of one input slice (`vectors x cols`, row-major):
/// exact integers without read noise, else (possibly perturbed) `f32`.
enum Sums {
    Int(Vec<i32>),
    Real(Array2<f32>),
}

/// What a pass returns per vector: the filters' outputs, or what every
/// crossbar column measured ([`ProgrammedLayer::run_columns`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gather {
    Filters,
    Columns,
}

/// A compiled layer whose crossbars have been programmed.
#[derive(Debug, Clone)]
pub struct ProgrammedLayer {
    mapped: MappedLayer,
    crossbars: Vec<ProgrammedCrossbar>,
    /// Every crossbar ideal: column sums and magnitudes are exact integer
    /// products ([`ProgrammedCrossbar::column_sums_int`]).
    integer_sums: bool,
    /// A finite OFF state alone: the integer levels that runs without read
    /// noise read ([`raella_device::Crossbar::exact_off`]; on 1T1R also
    /// without ADC variation and recovery).
    exact_off: Option<Vec<ProgrammedCrossbar>>,
    /// Per crossbar, per used column: its ADC's drawn non-idealities (one ADC
    /// instance per column), when ADC variation is on.
    adcs: Option<Vec<Vec<AdcInstance>>>,
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
        // Ideal programming never draws from its generator.
        let crossbars = mapped
            .crossbars()
            .par_iter()
            .map(|x| {
                // Compiled for the engine's instruction set (the byte levels
                // and packing of every build's crossbars).
                Kernel::dispatch_selected(
                    #[inline(always)]
                    || x.crossbar.program(None, &mut stream_rng(0, &[])),
                )
            })
            .collect();
        Self::new(mapped, crossbars)
    }

    /// Builds every crossbar's lazily built read structures that a run under
    /// `cfg` reads ([`ProgrammedCrossbar::prepare_reads`]): a simulated
    /// design's build calls it once per layer; adaptive slicing's candidates
    /// never do.
    pub fn prepare_reads(&self, cfg: &RunConfig) {
        let recovery = cfg.input.recovers();
        self.crossbars_for(cfg).0.par_iter().for_each(|x| {
            let perturbed = !cfg.column_noise.is_off() || self.adcs.is_some() || !x.is_ideal();
            // Exact reads serve unperturbed recovery and recovery through
            // the ADC instances alone.
            let exact = recovery && (!perturbed || self.instances_read_exact(x, cfg));
            x.prepare_reads(exact, perturbed, cfg.column_noise.needs_magnitude());
        });
    }

    /// Whether recovery on `x` reads exact bit sums and passes them through
    /// the ADC instances ([`recover_exact_instances`]): ADC variation on
    /// ideal devices, with nothing else perturbing the reads.
    fn instances_read_exact(&self, x: &ProgrammedCrossbar, cfg: &RunConfig) -> bool {
        self.adcs.is_some() && cfg.column_noise.is_off() && x.is_ideal() && x.off_per_pulse() == 0.0
    }

    /// Programs the layer with device non-idealities, one seeded stream per
    /// crossbar (and one per crossbar for its ADC instances). With drift under
    /// global compensation, every crossbar is then read through one gain per
    /// layer, `alpha = sum |I(t0)| / sum |I(t)|` over all-ones reference reads.
    #[must_use]
    pub fn program(mapped: MappedLayer, noise: &DeviceNoise, seed: u64) -> Self {
        // Each crossbar draws from its own stream: built in parallel, the same
        // conductances.
        let mut crossbars: Vec<ProgrammedCrossbar> = mapped
            .crossbars()
            .par_iter()
            .enumerate()
            .map(|(i, x)| {
                x.crossbar
                    .program(Some(noise), &mut stream_rng(seed, &[u64::MAX, i as u64]))
            })
            .collect();
        if noise
            .drift()
            .is_some_and(|d| d.compensation() == DriftCompensation::Global)
        {
            let (t0, now) = crossbars
                .iter()
                .filter_map(ProgrammedCrossbar::reference_reads)
                .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
            if now > 0.0 && t0 > 0.0 {
                let alpha = t0 / now;
                crossbars = crossbars
                    .into_par_iter()
                    .map(|px| px.into_scaled(alpha))
                    .collect();
            }
        }
        let exact_off: Option<Vec<ProgrammedCrossbar>> = mapped
            .crossbars()
            .par_iter()
            .zip(&crossbars)
            .map(|(x, px)| x.crossbar.exact_off(noise, px))
            .collect();
        let mut layer = Self::new(mapped, crossbars);
        layer.exact_off = exact_off;
        if !noise.adc().is_off() {
            layer.adcs = Some(
                layer
                    .crossbars
                    .iter()
                    .enumerate()
                    .map(|(i, px)| {
                        let mut rng = stream_rng(seed, &[u64::MAX - 1, i as u64]);
                        (0..px.used_cols())
                            .map(|_| noise.adc().draw(&mut rng))
                            .collect()
                    })
                    .collect(),
            );
        }
        layer
    }

    fn new(mapped: MappedLayer, crossbars: Vec<ProgrammedCrossbar>) -> Self {
        let integer_sums = crossbars.iter().all(ProgrammedCrossbar::is_ideal);
        Self {
            mapped,
            crossbars,
            integer_sums,
            exact_off: None,
            adcs: None,
        }
    }

    /// The crossbars a run under `cfg` reads: [`Self::crossbars`], or with
    /// a finite OFF state alone, their integer levels
    /// ([`raella_device::Crossbar::exact_off`]), when no read noise needs
    /// the OFF conductances' magnitudes: on 2T2R, whose pairs cancel the OFF
    /// currents, always; on 1T1R, whose columns carry them, without ADC
    /// variation and recovery (the integer pass adds the exact OFF current,
    /// `G_off P`, before the ADC and removes its nominal value after).
    #[must_use]
    pub fn crossbars_read(&self, cfg: &RunConfig) -> &[ProgrammedCrossbar] {
        self.crossbars_for(cfg).0
    }

    /// [`Self::crossbars_read`], and whether their sums are exact integers.
    fn crossbars_for(&self, cfg: &RunConfig) -> (&[ProgrammedCrossbar], bool) {
        match &self.exact_off {
            Some(c)
                if cfg.column_noise.is_off()
                    && (c.iter().all(|px| px.off_per_pulse() == 0.0)
                        || (self.adcs.is_none() && !cfg.input.recovers())) =>
            {
                (c, true)
            }
            _ => (&self.crossbars, self.integer_sums),
        }
    }

    /// The ADC instance of each used column of each crossbar, when ADC
    /// variation is on.
    #[must_use]
    pub fn adc_instances(&self) -> Option<&[Vec<AdcInstance>]> {
        self.adcs.as_deref()
    }

    /// The compiled mapping.
    #[must_use]
    pub fn mapped(&self) -> &MappedLayer {
        &self.mapped
    }

    /// The compiled mapping, the programmed crossbars dropped (to program
    /// it again, on other devices).
    #[must_use]
    pub fn into_mapped(self) -> MappedLayer {
        self.mapped
    }

    /// The programmed crossbars, in the mapping's order.
    #[must_use]
    pub fn crossbars(&self) -> &[ProgrammedCrossbar] {
        &self.crossbars
    }

    /// Runs unsigned 8-bit input vectors (vectors x inputs).
    ///
    /// # Errors
    /// [`RuntimeError::InputShape`], an invalid input mode, or an invalid
    /// `RAELLA_KERNEL` ([`raella_device::Kernel::selected`]).
    pub fn run(
        &self,
        inputs: ArrayView2<'_, u8>,
        cfg: &RunConfig,
    ) -> Result<LayerOutput, RuntimeError> {
        self.run_once(inputs, cfg, Gather::Filters)
    }

    /// Runs unsigned 8-bit input vectors like [`Self::run`], but the outputs
    /// are what every crossbar column measured, before the digital side
    /// combines the columns: vectors x (every crossbar's used columns, in
    /// mapping order); the statistics are [`Self::run`]'s.
    /// A column's value is its ADC codes shift-added over the input slices
    /// (a flagged slice's recovered 1-bit codes in its place), without the
    /// flip correction, the weight-slice shift, the center term or the sums
    /// over row blocks. For diagnostics and the statistical tests of read
    /// noise, which need the error of each conversion apart.
    ///
    /// # Errors
    /// As [`Self::run`].
    pub fn run_columns(
        &self,
        inputs: ArrayView2<'_, u8>,
        cfg: &RunConfig,
    ) -> Result<LayerOutput, RuntimeError> {
        self.run_once(inputs, cfg, Gather::Columns)
    }

    /// One pass of unsigned inputs, gathered per filter or per column.
    fn run_once(
        &self,
        inputs: ArrayView2<'_, u8>,
        cfg: &RunConfig,
        gather: Gather,
    ) -> Result<LayerOutput, RuntimeError> {
        let (y, stats) = self.run_once_wide(inputs, cfg, gather)?;
        Ok(LayerOutput {
            outputs: y.mapv(narrow),
            stats,
        })
    }

    /// [`Self::run`] with the outputs left in `i64` (saturated to the `i32`
    /// range, the same values): for callers that widen them again.
    ///
    /// # Errors
    /// As [`Self::run`].
    pub fn run_wide(
        &self,
        inputs: ArrayView2<'_, u8>,
        cfg: &RunConfig,
    ) -> Result<(Array2<i64>, LayerStats), RuntimeError> {
        self.run_once_wide(inputs, cfg, Gather::Filters)
    }

    fn run_once_wide(
        &self,
        inputs: ArrayView2<'_, u8>,
        cfg: &RunConfig,
        gather: Gather,
    ) -> Result<(Array2<i64>, LayerStats), RuntimeError> {
        self.check(inputs.ncols(), cfg)?;
        let (y, mut stats) = self.run_pass(inputs, cfg, 0, gather, true);
        stats.passes = 1;
        Ok((y, stats))
    }

    /// Runs signed 8-bit input vectors as two passes, the positive parts and the
    /// magnitudes of the negative parts, subtracted digitally. Conversions, cycles
    /// and input activity are those of both passes.
    ///
    /// # Errors
    /// [`RuntimeError::InputShape`], an invalid input mode, or an invalid
    /// `RAELLA_KERNEL` ([`raella_device::Kernel::selected`]).
    pub fn run_signed(
        &self,
        inputs: ArrayView2<'_, i8>,
        cfg: &RunConfig,
    ) -> Result<LayerOutput, RuntimeError> {
        let (y, stats) = self.run_signed_wide(inputs, cfg)?;
        Ok(LayerOutput {
            outputs: y.mapv(narrow),
            stats,
        })
    }

    /// [`Self::run_signed`] with the outputs left in `i64`, as [`Self::run_wide`].
    ///
    /// # Errors
    /// As [`Self::run_signed`].
    pub fn run_signed_wide(
        &self,
        inputs: ArrayView2<'_, i8>,
        cfg: &RunConfig,
    ) -> Result<(Array2<i64>, LayerStats), RuntimeError> {
        self.check(inputs.ncols(), cfg)?;
        // One set of tables for both passes: none depends on the pass or
        // its inputs (the safe rows are built once, not once per pass).
        let luts = Luts::new(self.crossbars_for(cfg).0.len());
        // Both passes of a chunk of vectors per item, the negative one into
        // the item's own buffer, subtracted while both are in cache: the
        // same chunks and integers as two whole passes (each chunk's result
        // is a function of its pass, vectors and inputs alone), without a
        // second layer-sized output. The statistics are added per pass in
        // chunk order, as two passes add them.
        let n = inputs.nrows();
        let width = self.gather_width(Gather::Filters);
        let (y, parts) = self.in_chunks(cfg, (n, width), |start, mut out| {
            let xs = inputs.slice(s![start..start + out.nrows(), ..]);
            let pos = xs.mapv(|v| u8::try_from(v.max(0)).unwrap_or(0));
            let neg = xs.mapv(|v| u8::try_from(-i16::from(v.min(0))).unwrap_or(u8::MAX));
            let run = |x: &Array2<u8>, pass: u64, y: ArrayViewMut2<'_, i64>| {
                self.run_chunk(
                    x.view(),
                    start,
                    cfg,
                    &luts,
                    pass,
                    Gather::Filters,
                    (y, false),
                )
            };
            let sp = run(&pos, 0, out.view_mut());
            // The thread's buffer, old values and all: each output is
            // written (its center term) before anything is added to it.
            let yn = resized(NEGATIVE_PASS.take(), out.len());
            let mut yn = Array2::from_shape_vec(out.dim(), yn).expect("one row per vector");
            let sn = run(&neg, 1, yn.view_mut());
            // Whole rows of standard-layout arrays: contiguous. The loop
            // is compiled for the engine's vector units (the baseline has
            // no vector 64-bit min and max).
            let p = out.as_slice_mut().expect("whole rows");
            let q = yn.as_slice().expect("whole rows");
            Kernel::dispatch_selected(
                #[inline(always)]
                || {
                    for (p, &q) in p.iter_mut().zip(q) {
                        *p = saturate(*p - q);
                    }
                },
            );
            NEGATIVE_PASS.set(yn.into_raw_vec_and_offset().0);
            (sp, sn)
        });
        let (mut sp, mut sn) = (LayerStats::default(), LayerStats::default());
        for (p, q) in &parts {
            sp += p;
            sn += q;
        }
        let mut stats = self.pass_totals(sp, n, cfg);
        let sn = self.pass_totals(sn, n, cfg);
        stats += &sn;
        stats.vectors = sn.vectors;
        stats.macs = sn.macs;
        stats.passes = 2;
        Ok((y, stats))
    }

    fn check(&self, got: usize, cfg: &RunConfig) -> Result<(), RuntimeError> {
        cfg.input.validate()?;
        // A bad RAELLA_KERNEL is reported here, not as a panic in the products.
        Kernel::selected()?;
        if got != self.mapped.inputs() {
            return Err(RuntimeError::InputShape {
                expected: self.mapped.inputs(),
                got,
            });
        }
        Ok(())
    }

    /// One pass of `x` on all threads, a chunk of vectors per item; with
    /// `saturated`, each chunk's outputs saturated to the `i32` range as it ends.
    fn run_pass(
        &self,
        x: ArrayView2<'_, u8>,
        cfg: &RunConfig,
        pass: u64,
        gather: Gather,
        saturated: bool,
    ) -> (Array2<i64>, LayerStats) {
        let luts = Luts::new(self.crossbars_for(cfg).0.len());
        let n = x.nrows();
        let (y, parts) = self.in_chunks(cfg, (n, self.gather_width(gather)), |start, mut out| {
            let end = start + out.nrows();
            self.run_chunk(
                x.slice(s![start..end, ..]),
                start,
                cfg,
                &luts,
                pass,
                gather,
                (out.view_mut(), saturated),
            )
        });
        let mut stats = LayerStats::default();
        for st in &parts {
            stats += st;
        }
        (y, self.pass_totals(stats, n, cfg))
    }

    /// A pass's `n x width` outputs, a chunk of vectors per item on all
    /// threads: `f(start, rows)` writes the rows of the chunk whose first
    /// vector is `start` in place and returns its part, the parts in chunk
    /// order (so the float sums added from them do not depend on thread
    /// timing).
    fn in_chunks<S: Send>(
        &self,
        cfg: &RunConfig,
        (n, width): (usize, usize),
        f: impl Fn(usize, ArrayViewMut2<'_, i64>) -> S + Sync,
    ) -> (Array2<i64>, Vec<S>) {
        let chunk = self.chunk_vectors(cfg);
        let mut y = Array2::<i64>::zeros((n, width));
        let rows: Vec<ArrayViewMut2<'_, i64>> = y.axis_chunks_iter_mut(Axis(0), chunk).collect();
        let parts = rows
            .into_par_iter()
            .enumerate()
            .map(|(k, out)| f(k * chunk, out))
            .collect();
        (y, parts)
    }

    /// Vectors per chunk of a pass. Narrow layers (depthwise groups) take
    /// longer chunks, so per-chunk costs stay small against the work; results
    /// do not depend on this. Wide crossbars keep them shorter: a chunk's
    /// buffers are `vectors x columns` per crossbar, and stay in cache between
    /// the slices' passes.
    fn chunk_vectors(&self, cfg: &RunConfig) -> usize {
        let widest = self
            .crossbars_for(cfg)
            .0
            .iter()
            .map(ProgrammedCrossbar::used_cols)
            .max()
            .unwrap_or(0);
        (CHUNK_ELEMENTS / self.mapped.inputs().max(widest).max(1))
            .clamp(CHUNK_VECTORS, MAX_CHUNK_VECTORS)
    }

    /// A pass's statistics (its chunks' added in chunk order) with its cell
    /// level reads over `n` vectors: once per pass, not per chunk, as
    /// real-valued level sums' products would otherwise round differently
    /// with the chunk size.
    fn pass_totals(&self, mut stats: LayerStats, n: usize, cfg: &RunConfig) -> LayerStats {
        let cycles = n as u64 * (cfg.input.slicing().widths().len() as u64 + recovery_cycles(cfg));
        stats.activity.cell_level_reads = self
            .crossbars_for(cfg)
            .0
            .iter()
            .map(|px| cycles as f64 * px.level_sum())
            .sum();
        stats
    }

    /// Values per vector that a pass returns.
    fn gather_width(&self, gather: Gather) -> usize {
        match gather {
            Gather::Filters => self.mapped.outputs(),
            Gather::Columns => self
                .crossbars
                .iter()
                .map(ProgrammedCrossbar::used_cols)
                .sum(),
        }
    }

    /// Executes one chunk of vectors whose first vector has global index `v0`
    /// (its outputs saturated to the `i32` range when `saturated`),
    /// compiled for the instruction set of the process's kernel
    /// ([`Kernel::dispatch`]: the loops below and the device reads they
    /// inline get the CPU's vector units without `-C target-cpu=native`).
    #[allow(clippy::too_many_arguments)]
    fn run_chunk(
        &self,
        x: ArrayView2<'_, u8>,
        v0: usize,
        cfg: &RunConfig,
        luts: &Luts,
        pass: u64,
        gather: Gather,
        (mut y, saturated): (ArrayViewMut2<'_, i64>, bool),
    ) -> LayerStats {
        let kernel = Kernel::selected().expect("checked by `check`");
        kernel.dispatch(
            #[inline(always)]
            || {
                let st = self.run_chunk_body(x, v0, cfg, luts, pass, gather, y.view_mut());
                // The outputs saturated to the `i32` range, when asked.
                if saturated {
                    for v in y.as_slice_mut().expect("a chunk's whole rows") {
                        *v = saturate(*v);
                    }
                }
                st
            },
        )
    }

    /// [`Self::run_chunk`]'s work, inlined into each instruction set's copy:
    /// the chunk's outputs into `y` (`x.nrows() x gather width`; gathered by
    /// filters, each output is first written with its center term, so `y`
    /// may hold anything; gathered by columns, zeroed).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn run_chunk_body(
        &self,
        x: ArrayView2<'_, u8>,
        v0: usize,
        cfg: &RunConfig,
        luts: &Luts,
        pass: u64,
        gather: Gather,
        mut y: ArrayViewMut2<'_, i64>,
    ) -> LayerStats {
        let m = &self.mapped;
        let (crossbars, integer_sums) = self.crossbars_for(cfg);
        let b = x.nrows();
        // Chunks come from `in_chunks`: per-row pulse counts fit `u32`.
        assert!(b <= MAX_CHUNK_VECTORS, "a chunk of {b} vectors");
        let slicing = cfg.input.slicing();
        let (widths, shifts) = (slicing.widths(), slicing.shifts());
        let ns = widths.len();
        let speculative = matches!(cfg.input, InputMode::Speculative { .. });
        let recovery = cfg.input.recovers();
        let recovery_cycles = recovery_cycles(cfg);
        let wslicing = m.weight_slicing();
        // The largest squared pulse of any input slice.
        let max_pulse_sq: u64 = widths
            .iter()
            .map(|&w| ((1u64 << w) - 1).pow(2))
            .max()
            .unwrap_or(0);
        let adc = cfg.adc;
        let noise = cfg.column_noise;
        let as_u64 = |v: usize| v as u64;

        let mut stats = LayerStats {
            vectors: as_u64(b),
            macs: as_u64(b * m.outputs() * m.inputs()),
            flagged_by_slice: if speculative { vec![0; ns] } else { vec![] },
            crossbars: as_u64(crossbars.len()),
            ..LayerStats::default()
        };
        stats.activity.max_level = m.config().geometry.max_level();

        // Digital center term: y_f = c_f * sum_i x_i + analog part.
        let totals: Vec<i64> = row_sums(x);
        if gather == Gather::Filters {
            let width = y.ncols();
            let flat = y.as_slice_mut().expect("a chunk's whole rows");
            if let ([c], 1) = (m.centers(), width) {
                // One filter (a depthwise group): one flat loop, vectorised
                // across the vectors (a row of one value each would not be).
                let c = i64::from(*c);
                for (o, &t) in flat.iter_mut().zip(&totals) {
                    *o = c * t;
                }
            } else {
                for (yrow, &t) in flat.chunks_exact_mut(width.max(1)).zip(&totals) {
                    for (o, &c) in yrow.iter_mut().zip(m.centers()) {
                        *o = i64::from(c) * t;
                    }
                }
            }
        }
        // First output column of the current crossbar (`Gather::Columns`).
        let mut col_offset = 0;
        let mut scratch = SCRATCH.take();

        let pulse_capacity_per_vector: u64 =
            widths.iter().map(|&w| (1u64 << w) - 1).sum::<u64>() + recovery_cycles;

        // The flagged `(vector, column)`s of one slice of one crossbar
        // (cleared per slice; one buffer for the chunk, so it grows once).
        let mut flagged: Vec<(usize, usize)> = Vec::new();
        let mut xi = 0;
        while xi < m.crossbars().len() {
            let rb = m.crossbars()[xi].row_block;
            let row_start = m.crossbars()[xi].row_start;
            let rows = m.crossbars()[xi].crossbar.used_rows();
            // This row block's inputs, contiguous.
            // Borrowed when the block is the whole (contiguous) input.
            let xv = x.slice(s![.., row_start..row_start + rows]);
            let xr = xv.as_standard_layout();
            let xs = xr.as_slice().expect("standard layout");
            // Each row's pulses, when made with the slices.
            let mut narrow_totals: Option<Vec<u64>> = None;
            // Pulse matrices of this row block, one per input slice.
            // Ideal devices: exact integer column sums (and magnitudes), converted
            // to f32 only when read noise perturbs them.
            // Slice `j` of `v` is `(v >> shift) & mask` (`Slicing::slice`
            // computes the same): a shift and a mask vectorise where a
            // table lookup per byte does not.
            let cuts: Vec<(u32, u8)> = shifts
                .iter()
                .zip(widths)
                .map(|(&sh, &w)| (sh, u8::try_from((1u32 << w) - 1).unwrap_or(u8::MAX)))
                .collect();
            let pulses = if integer_sums {
                let stride = crossbars[xi].pulse_stride();
                let mut slices: Vec<Vec<u8>> = cuts.iter().map(|_| vec![0u8; b * stride]).collect();
                // Narrow rows: the slices and their rows' pulses in one pass
                // over the inputs ([`slices_and_totals`]).
                // (Not a closure: it would be compiled outside the
                // instruction set's copy of this function.)
                if stride != rows && stride <= 16 {
                    narrow_totals = Some(slices_and_totals::<16>(
                        xs,
                        rows,
                        &cuts,
                        &mut slices,
                        stride,
                        recovery,
                    ));
                }
                if narrow_totals.is_none() {
                    for (p, &cut) in slices.iter_mut().zip(&cuts) {
                        slice_into(xs, rows, cut, p, stride);
                    }
                }
                Pulses::Int(slices)
            } else {
                Pulses::Real(
                    cuts.iter()
                        .map(|&(sh, mask)| {
                            let data = xs.iter().map(|&v| f32::from((v >> sh) & mask)).collect();
                            Array2::from_shape_vec((b, rows), data).expect("shape")
                        })
                        .collect(),
                )
            };
            // The block's input sums (the whole vector's when it has every row).
            let rb_sums: Vec<i64> = if rows == x.ncols() {
                totals.clone()
            } else {
                row_sums(xr.view())
            };
            // Pulses applied per row over the chunk (for input and cell activity).
            let mut row_pulses = vec![0u64; rows];
            match &pulses {
                _ if narrow_totals.is_some() => {
                    row_pulses = narrow_totals.take().expect("made with the slices");
                }
                // Integer pulses: each slice's pulses, and each set bit when
                // recovery reads them (the speculative and recovery cycles'), summed
                // from the slices already made, in `u32` lanes that vectorise
                // ([`row_totals`]; exact: a value applies at most 263 pulses;
                // a slice's padding pulses are zero and fold into no row).
                Pulses::Int(slices) => {
                    let stride = crossbars[xi].pulse_stride();
                    for p in slices {
                        row_totals(p, stride, u32::from, &mut row_pulses);
                    }
                    if recovery {
                        row_totals(xs, rows, u8::count_ones, &mut row_pulses);
                    }
                }
                // Real pulses: the same counts, each slice's computed per value
                // (a shift and a mask, vectorised) in `u32` lanes as above.
                Pulses::Real(_) => {
                    for &(sh, m) in &cuts {
                        row_totals(xs, rows, |v| u32::from((v >> sh) & m), &mut row_pulses);
                    }
                    if recovery {
                        row_totals(xs, rows, u8::count_ones, &mut row_pulses);
                    }
                }
            }
            let pulses_total: u64 = row_pulses.iter().sum();
            // Input bit-planes for recovery, written for a vector when it first
            // has a flagged column (most vectors never do).
            let words = ProgrammedCrossbar::row_bit_words(rows);
            // Allocated (zeroed) when first needed: a row block whose columns
            // are all read-free ([`ExactBits::safe_rows`]) never needs it.
            let mut xbits: Vec<u64> = Vec::new();
            // Each bit-plane's set bits (active rows), written with the
            // vector's planes (`have_bits`) and read only for such vectors:
            // the thread's buffer, not zeroed.
            let mut xones = resized(
                std::mem::take(&mut scratch.xones),
                if recovery { b * 8 } else { 0 },
            );
            let mut have_bits = vec![false; if recovery { b } else { 0 }];
            // A flagged vector's most active rows over the bits of the slice
            // being recovered (written for the vectors it lists before they
            // are read; the thread's buffer, not zeroed).
            let mut peak = resized(
                std::mem::take(&mut scratch.peak),
                if recovery { b } else { 0 },
            );

            while xi < m.crossbars().len() && m.crossbars()[xi].row_block == rb {
                let mx = &m.crossbars()[xi];
                let px = &crossbars[xi];
                let cols = px.used_cols();
                let acc_buffer = std::mem::take(&mut scratch.acc);
                let adcs = self.adcs.as_ref().map(|a| a[xi].as_slice());
                let off = px.off_per_pulse();
                let (need_mag, need_sq) = (noise.needs_magnitude(), noise.needs_squares());
                // Read noise of one model on ideal devices, nothing else: exact
                // integer sums and their magnitudes (lumped) or squares (per
                // device), perturbed and converted in one pass
                // ([`convert_shift_add_noisy`]). Squares only when their `f32`
                // products are exact integers ([`ProgrammedCrossbar::squares_int_limit`]),
                // so the integers are the same values.
                let int_noise = matches!(pulses, Pulses::Int(_))
                    && need_mag != need_sq
                    && adcs.is_none()
                    && off == 0.0;
                let lumped_int = int_noise && need_mag;
                let device_int = int_noise
                    && need_sq
                    && max_pulse_sq <= u64::from(u8::MAX)
                    && px
                        .squares_int_limit()
                        .is_some_and(|limit| limit.saturating_mul(max_pulse_sq) < 1 << 24);
                let noisy_int = lumped_int || device_int;
                // ADC variation alone on ideal devices: exact integer sums, each
                // through its column's instance ([`transfer_codes`]) and then
                // the integer pass, recovered from the exact planes
                // ([`recover_exact_instances`]).
                let inst_int =
                    matches!(pulses, Pulses::Int(_)) && self.instances_read_exact(px, cfg);
                // ADC instances that only shift the integer sums
                // ([`instance_shift`]): an integer pass over shifted sums.
                // `shift_tile` repeats them over whole vectors (`Luts::shifts`).
                let shift_tile: Option<&[i32]> = match adcs {
                    Some(inst) if inst_int && cols > 0 => luts.shifts[xi]
                        .get_or_init(|| {
                            let (lo, hi) = (adc.min_code() as f32, adc.max_code() as f32);
                            let k = inst
                                .get(..cols)?
                                .iter()
                                .map(|a| instance_shift(a, lo, hi))
                                .collect::<Option<Vec<i32>>>()?;
                            let period = cols * 64usize.div_ceil(cols);
                            Some((0..period).map(|i| k[i % cols]).collect())
                        })
                        .as_deref(),
                    _ => None,
                };
                let adc_shifts = shift_tile.map(|t| &t[..cols]);
                // Real-valued sums whenever anything else perturbs them before the ADC.
                let real_sums = (!noise.is_off() || adcs.is_some()) && !noisy_int && !inst_int;
                // One device per cell: `G+ + G- = G+ - G-`, the magnitudes are the sums.
                let one_device = px.geometry().cell() == raella_device::CellKind::OneT1R;
                let mut sums = match &pulses {
                    Pulses::Int(_) if !real_sums => {
                        Sums::Int(resized(std::mem::take(&mut scratch.sums), b * cols))
                    }
                    _ => Sums::Real(Array2::zeros((b, cols))),
                };
                // Every integer pass writes its accumulators on the first
                // input slice (`IntConversion::write`) rather than adding to
                // them: they are zeroed only for the f32 pass, which adds.
                let write_first = matches!(sums, Sums::Int(_)) && ns > 0;
                let mut acc = {
                    let mut a = acc_buffer;
                    if !write_first {
                        a.clear();
                    }
                    a.resize(b * cols, 0);
                    Array2::from_shape_vec((b, cols), a).expect("b x cols")
                };
                // The integer noise path's magnitudes or squares.
                let mut noise_mags = resized(
                    std::mem::take(&mut scratch.mags),
                    if (lumped_int && !one_device) || device_int {
                        b * cols
                    } else {
                        0
                    },
                );
                // Squared pulses (per-device noise on integers).
                let mut pulses_sq = vec![0u8; if device_int { b * px.pulse_stride() } else { 0 }];
                // The f32 path's magnitudes and squares (the integer paths keep
                // their own).
                let mut mags =
                    Array2::<f32>::zeros((b, if need_mag && real_sums { cols } else { 0 }));
                let mut sqs =
                    Array2::<f32>::zeros((b, if need_sq && real_sums { cols } else { 0 }));
                // Integer scratch for ideal devices under read noise.
                let (mut isums, mut imags) = match (&pulses, &sums) {
                    (Pulses::Int(_), Sums::Real(_)) => (
                        vec![0i32; b * cols],
                        vec![0i32; if need_mag && !one_device { b * cols } else { 0 }],
                    ),
                    _ => (Vec::new(), Vec::new()),
                };
                // Per vector, the OFF current's nominal value in this slice (1T1R).
                let mut off_nominal = vec![0f32; if off > 0.0 { b } else { 0 }];
                // Per column, the active rows a recovered read can have and
                // still be known in range (`luts.safe`; taken on the first
                // exact recovery).
                let mut safe: &[u32] = &[];
                // Reads strictly inside the ADC's range: neither clipped nor
                // flagged.
                let above = adc.min_code() - i32::from(!adc.signed());
                // Exact recovery's reader: recovery on ideal devices, integer
                // sums, nothing perturbing them ([`recover_exact`]). Only then
                // are its planes built (not for adaptive slicing's 1-bit
                // candidate runs, nor under noise).
                // (Also for ADC instances that shift the sums: the exact
                // reads, each shifted.)
                let exact_reader = (recovery
                    && matches!(sums, Sums::Int(_))
                    && !noisy_int
                    && (!inst_int || adc_shifts.is_some()))
                .then(|| px.exact_bits())
                .flatten();
                // Recovery through the ADC instances from exact bit sums
                // (the speculative sums' integers are still in `isums`).
                let instances_reader = (recovery && inst_int && adc_shifts.is_none())
                    .then(|| px.exact_bits())
                    .flatten();
                // Exact recovery where every column's reads lie in range
                // under any input: a flagged sum recovers to itself (each
                // 1-bit code is its sum, and they shift-add to it), so the
                // conversion pass keeps it and lists nothing
                // ([`convert_shift_add_int`]). With ADC shifts `k` (each
                // column's reads shifted by its `k` in range), to `S + k (2^w
                // - 1)`: the pass keeps the shifted sum `S + k`, and
                // [`add_shifts_in_place`] adds the other `k (2^w - 2)`
                // (not with a 1T1R OFF current, whose pass lists its flags).
                let in_place = speculative
                    && recovery
                    && (adc_shifts.is_none() || off <= 0.0)
                    && exact_reader.is_some_and(|reader| {
                        let (lo, hi) = reader.read_bounds();
                        let (least, most) = adc_shifts.map_or((0, 0), |k| {
                            k.iter()
                                .fold((i32::MAX, i32::MIN), |(l, m), &k| (l.min(k), m.max(k)))
                        });
                        lo + i64::from(least) > i64::from(above)
                            && hi + i64::from(most) < i64::from(adc.max_code())
                    });
                let xkey = crossbar_key(cfg.seed, pass, xi);
                // Each vector's stream key, hashed once for all its slices:
                // `slice_key(xkey, v0 + v, s)` is `stream_child(vkeys[v], s)`
                // (read noise only).
                let vkeys = if noise.is_off() {
                    Vec::new()
                } else {
                    vector_keys(xkey, v0, b)
                };
                // The slice's half of the hash from the table ([`ChildSteps`]):
                // every path takes slice `s` of vector `v` as
                // `stream_child_of(vkeys[v], steps.hash(s))`, the step hashed
                // once per slice.
                let steps = ChildSteps::new();
                // One row of standard normal draws (read noise).
                let mut z = vec![0f32; if noise.is_off() || noisy_int { 0 } else { cols }];
                // The chunk's draws of one slice, `b x cols` (read noise on integers).
                let mut zs = resized(
                    std::mem::take(&mut scratch.draws),
                    if noisy_int { b * cols } else { 0 },
                );
                for j in 0..ns {
                    match (&pulses, &mut sums) {
                        (Pulses::Int(slices), Sums::Int(sums)) => {
                            px.column_sums_int(&slices[j], sums);
                            if lumped_int && !one_device {
                                px.column_magnitudes_int(&slices[j], &mut noise_mags);
                            }
                            if device_int {
                                // At most 15^2 (checked above).
                                for (q, &p) in pulses_sq.iter_mut().zip(&slices[j]) {
                                    *q = p * p;
                                }
                                px.column_squares_int(&pulses_sq, &mut noise_mags);
                            }
                        }
                        (pulses, Sums::Real(sums)) => {
                            match pulses {
                                Pulses::Real(p) => {
                                    px.column_sums(p[j].view(), sums.view_mut());
                                    if need_mag && one_device {
                                        mags.assign(sums);
                                    } else if need_mag {
                                        px.column_magnitudes(p[j].view(), mags.view_mut());
                                    }
                                    if need_sq {
                                        px.column_squares(
                                            p[j].mapv(|v| v * v).view(),
                                            sqs.view_mut(),
                                        );
                                    }
                                    if off > 0.0 {
                                        for (o, prow) in off_nominal.iter_mut().zip(p[j].rows()) {
                                            *o = off_current(off, prow.sum());
                                        }
                                    }
                                }
                                // Exact integers, so the same f32 values as the product above.
                                #[allow(clippy::cast_precision_loss)]
                                Pulses::Int(slices) => {
                                    // Over plain slices: the conversions vectorise
                                    // (ndarray's element iterators did not).
                                    px.column_sums_int(&slices[j], &mut isums);
                                    let flat = sums.as_slice_mut().expect("standard layout");
                                    for (o, &v) in flat.iter_mut().zip(&isums) {
                                        *o = v as f32;
                                    }
                                    if need_mag && one_device {
                                        mags.assign(sums);
                                    } else if need_mag {
                                        px.column_magnitudes_int(&slices[j], &mut imags);
                                        let flat = mags.as_slice_mut().expect("standard layout");
                                        for (o, &v) in flat.iter_mut().zip(&imags) {
                                            *o = v as f32;
                                        }
                                    }
                                    if need_sq {
                                        // Row by row over plain slices (an indexed
                                        // fill did not vectorise).
                                        let stride = px.pulse_stride();
                                        let mut sq = Vec::with_capacity(b * rows);
                                        for prow in slices[j].chunks_exact(stride) {
                                            sq.extend(
                                                prow[..rows].iter().map(|&q| f32::from(q).powi(2)),
                                            );
                                        }
                                        let sq = Array2::from_shape_vec((b, rows), sq)
                                            .expect("one row per vector");
                                        px.column_squares(sq.view(), sqs.view_mut());
                                    }
                                }
                            }
                            if !noise.is_off() {
                                let step = steps.hash(j);
                                for (v, mut row) in sums.rows_mut().into_iter().enumerate() {
                                    fill_normals(stream_child_of(vkeys[v], step), &mut z);
                                    noise.perturb_row(
                                        row.as_slice_mut().expect("standard layout"),
                                        if need_mag {
                                            mags.row(v).to_slice().expect("layout")
                                        } else {
                                            &[]
                                        },
                                        if need_sq {
                                            sqs.row(v).to_slice().expect("layout")
                                        } else {
                                            &[]
                                        },
                                        &z,
                                    );
                                }
                            }
                            if let Some(inst) = adcs {
                                let (lo, hi) = (adc.min_code() as f32, adc.max_code() as f32);
                                // Rows as slices: the loop vectorises.
                                let flat = sums.as_slice_mut().expect("standard layout");
                                for row in flat.chunks_exact_mut(cols.max(1)) {
                                    for (x, a) in row.iter_mut().zip(inst) {
                                        *x = a.transfer(*x, lo, hi);
                                    }
                                }
                            }
                        }
                        _ => unreachable!("pulses and sums are built together"),
                    }
                    let sh = shifts[j];
                    // The chunk's first slice writes the integer passes'
                    // accumulators; the rest add to them.
                    let write = write_first && j == 0;
                    flagged.clear();
                    let drop_flagged = speculative && recovery;
                    // 1T1R with an exact OFF conductance: whether a code can
                    // clamp. The OFF current grows with the pulses, so it is
                    // at most `R_max`, that of every row at the slice's
                    // largest pulse; with the largest column sum under it
                    // strictly below the top code, every code is the sum
                    // plus the OFF current's, in range and unflagged, and
                    // the correction leaves the sum (the levels are
                    // non-negative, so no sum falls below the bottom code):
                    // the plain integer pass gives the same codes and counts
                    // (a half-LSB tie of the OFF current either way).
                    let off_clamps = off > 0.0 && {
                        let top = (1i64 << widths[j]) - 1;
                        #[allow(
                            clippy::cast_precision_loss,
                            clippy::cast_possible_truncation,
                            clippy::cast_possible_wrap
                        )]
                        let r_max =
                            round_half_away(off_current(off, (px.used_rows() as i64 * top) as f32))
                                as i64;
                        px.largest_column_sum()
                            .is_none_or(|m| m * top + r_max >= i64::from(adc.max_code()))
                    };
                    let counts = match &sums {
                        // 1T1R with an exact OFF conductance (no read noise,
                        // ADC variation or recovery: `crossbars_for`): every
                        // column of vector `v` carries `S + G_off P_v` (`P_v`
                        // the slice's pulses), which the ADC converts as the
                        // integer `S + R_v`, `R_v = round(G_off P_v)`; the
                        // digital side removes `R_v` ([`off_corrected`]: an
                        // in-range code becomes `S`, a clamped one `code -
                        // R_v`). The sum exact, not the `f32` product's: a
                        // half-LSB tie of `G_off P_v` rounds as `R_v` does.
                        Sums::Int(sums) if off_clamps => {
                            let Pulses::Int(slices) = &pulses else {
                                unreachable!("integer sums come from integer pulses")
                            };
                            let (stride, width) = (px.pulse_stride(), cols.max(1));
                            let shifted = &mut scratch.shifted;
                            shifted.clear();
                            let mut nominal = Vec::with_capacity(b);
                            for (srow, prow) in
                                sums.chunks_exact(width).zip(slices[j].chunks_exact(stride))
                            {
                                // At most 2^24 pulses: exact in `f32`.
                                #[allow(
                                    clippy::cast_precision_loss,
                                    clippy::cast_possible_truncation
                                )]
                                let r =
                                    round_half_away(off_current(off, lane_sum(prow) as f32)) as i32;
                                nominal.push(i64::from(r) << sh);
                                shifted.extend(srow.iter().map(|&s| s + r));
                            }
                            let counts = convert_shift_add_int(
                                &adc,
                                shifted,
                                cols,
                                &mut acc,
                                sh,
                                (drop_flagged, false, write),
                                (&mut flagged, &mut scratch.flag_words),
                            );
                            let flat = acc.as_slice_mut().expect("standard layout");
                            for (arow, &r) in flat.chunks_exact_mut(width).zip(&nominal) {
                                for a in arow {
                                    *a -= r;
                                }
                            }
                            counts
                        }
                        Sums::Int(sums) if shift_tile.is_some() => {
                            let tile = shift_tile.expect("tested");
                            let mut shifted =
                                resized(std::mem::take(&mut scratch.shifted), sums.len());
                            // Over the flat sums, a whole number of vectors
                            // at a time (a loop per vector of a narrow
                            // crossbar would not vectorise), in plain loops
                            // (an `extend` of a mapped iterator did not).
                            for (out, block) in
                                shifted.chunks_mut(tile.len()).zip(sums.chunks(tile.len()))
                            {
                                for ((o, &s), &k) in out.iter_mut().zip(block).zip(tile) {
                                    *o = s + k;
                                }
                            }
                            let counts = convert_shift_add_int(
                                &adc,
                                &shifted,
                                cols,
                                &mut acc,
                                sh,
                                (drop_flagged, in_place, write),
                                (&mut flagged, &mut scratch.flag_words),
                            );
                            if in_place && counts.saturated > 0 {
                                add_shifts_in_place(&adc, &shifted, tile, widths[j], sh, &mut acc);
                            }
                            scratch.shifted = shifted;
                            counts
                        }
                        Sums::Int(sums) if inst_int => {
                            let codes = &mut scratch.shifted;
                            let tiles = luts.instances[xi].get_or_init(|| {
                                InstanceTiles::new(adcs.expect("ADC instances"), cols)
                            });
                            transfer_codes(&adc, sums, tiles, codes);
                            convert_shift_add_int(
                                &adc,
                                codes,
                                cols,
                                &mut acc,
                                sh,
                                (drop_flagged, false, write),
                                (&mut flagged, &mut scratch.flag_words),
                            )
                        }
                        Sums::Int(sums) if noisy_int => convert_shift_add_noisy(
                            &adc,
                            sums,
                            if lumped_int && one_device {
                                sums
                            } else {
                                &noise_mags
                            },
                            NoiseRows {
                                e: if lumped_int {
                                    noise.e()
                                } else {
                                    noise.device_sigma()
                                },
                                vkeys: &vkeys,
                                step: steps.hash(j),
                                z: &mut zs,
                            },
                            &mut acc,
                            sh,
                            (drop_flagged, write),
                            (&mut flagged, &mut scratch.flag_words),
                        ),
                        Sums::Int(sums) => convert_shift_add_int(
                            &adc,
                            sums,
                            cols,
                            &mut acc,
                            sh,
                            (drop_flagged, in_place, write),
                            (&mut flagged, &mut scratch.flag_words),
                        ),
                        Sums::Real(sums) => convert_shift_add(
                            &adc,
                            sums,
                            (off > 0.0).then_some(off_nominal.as_slice()),
                            &mut acc,
                            sh,
                            drop_flagged,
                        ),
                    };
                    let (in_range, saturated, inexact) =
                        (counts.in_range, counts.saturated, counts.inexact);
                    if drop_flagged && saturated > 0 {
                        match &sums {
                            // Listed by the conversion pass.
                            Sums::Int(_) => {}
                            Sums::Real(sums) => {
                                let hi = adc.max_code() as f32 - 0.5;
                                let lo = if adc.signed() {
                                    adc.min_code() as f32 + 0.5
                                } else {
                                    f32::NEG_INFINITY
                                };
                                let flat = sums.as_slice().expect("standard layout");
                                find_flagged(flat, cols, |x| x >= hi || x <= lo, &mut flagged);
                            }
                        }
                        debug_assert_eq!(
                            flagged.len() as u64,
                            if in_place { 0 } else { saturated }
                        );
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
                        // The recovery streams' slice step (`slice_key(xkey, v0 + v,
                        // ns + j)` is `stream_child_of(vkeys[v], recovery_step)`).
                        let recovery_step = steps.hash(ns + j);
                        let exact = match (&sums, exact_reader) {
                            (Sums::Int(sums), Some(reader)) => Some((sums, reader)),
                            _ => None,
                        };
                        if let Some((_, reader)) = exact
                            && safe.is_empty()
                            && !in_place
                        {
                            // Shifted sums: the bounds less the column's shift
                            // (none where they no longer straddle zero).
                            safe = luts.safe[xi].get_or_init(|| {
                                (0..cols)
                                    .map(|c| {
                                        let k = adc_shifts.map_or(0, |k| k[c]);
                                        let (below, above) = (adc.max_code() - k, above - k);
                                        if above < 0 && below > 0 {
                                            reader.safe_rows(c, below, above)
                                        } else {
                                            0
                                        }
                                    })
                                    .collect()
                            });
                        }
                        // Recovery's reads by the kernel, all columns of each
                        // flagged vector at once, when that costs less than
                        // reading the flagged columns one by one (the same
                        // integers): under lumped read noise and through ADC
                        // instances, every flagged column, decided here (these
                        // reads need no input bit-planes); on ideal devices
                        // without noise, the columns the bounds cannot settle,
                        // decided below from the planes' popcounts.
                        // (Whether magnitudes are read too: lumped noise on
                        // 2T2R crossbars; a 1T1R column's magnitude is its
                        // sum, and ADC instances need none.)
                        let lumped_reads = noisy_int && !device_int && instances_reader.is_none();
                        let every_column = !in_place
                            && widths[j] >= 2
                            && exact.is_none()
                            && matches!(sums, Sums::Int(_))
                            && (lumped_reads || (instances_reader.is_some() && adcs.is_some()))
                            && DenseBits::pays(
                                px,
                                flagged.iter().copied(),
                                lumped_reads && !one_device,
                                widths[j] as usize - 1,
                            );
                        // Recovered in place, or read by the kernel: no
                        // bit-planes (and in place nothing was listed). The
                        // list is in vector order.
                        let mut last = usize::MAX;
                        for &(v, _) in flagged.iter().filter(|_| !in_place && !every_column) {
                            if v == last {
                                continue;
                            }
                            last = v;
                            if !have_bits[v] {
                                have_bits[v] = true;
                                if xbits.is_empty() {
                                    xbits = vec![0u64; b * 8 * words];
                                }
                                let planes = &mut xbits[v * 8 * words..(v + 1) * 8 * words];
                                raella_device::bit_planes(&xs[v * rows..(v + 1) * rows], planes);
                                for (o, plane) in xones[v * 8..(v + 1) * 8]
                                    .iter_mut()
                                    .zip(planes.chunks(words))
                                {
                                    *o = plane.iter().map(|w| w.count_ones()).sum();
                                }
                            }
                            let first = v * 8 + sh as usize;
                            peak[v] = xones[first..first + widths[j] as usize]
                                .iter()
                                .copied()
                                .max()
                                .unwrap_or(0);
                        }
                        let dense = if every_column {
                            Some(scratch.dense.read(
                                px,
                                (xs, rows, b),
                                flagged.iter().copied(),
                                (sh, widths[j]),
                                lumped_reads && !one_device,
                            ))
                        } else if exact.is_some() && !in_place && widths[j] >= 2 {
                            // Some bit has more active rows than the column's
                            // safe count (never when that is `u32::MAX`).
                            let unsettled = |&(v, c): &(usize, usize)| peak[v] > safe[c];
                            let listed = || flagged.iter().copied().filter(unsettled);
                            // (Not `bool::then`: its closure was compiled
                            // apart, outside the kernel's instruction set.)
                            if DenseBits::pays_unsettled(
                                px,
                                &flagged,
                                unsettled,
                                widths[j] as usize - 1,
                            ) {
                                Some(scratch.dense.read(
                                    px,
                                    (xs, rows, b),
                                    listed(),
                                    (sh, widths[j]),
                                    false,
                                ))
                            } else {
                                None
                            }
                        } else {
                            None
                        };
                        let exact_reads = |reader, sums| ExactRecovery {
                            reader,
                            sums,
                            cols,
                            bits: (&xbits, &xones),
                            shift: sh,
                            width: widths[j],
                            dense: None,
                            adc_shifts,
                        };
                        let r = if in_place {
                            // Each flagged sum's `width` 1-bit conversions,
                            // all in range (as `recover_exact` counts them).
                            Recovered {
                                conversions: saturated * u64::from(widths[j]),
                                ..Recovered::default()
                            }
                        } else if let Some((sums, reader)) = exact {
                            // A function of its own on the same instruction set
                            // (compiled apart from this large body, it ran 4-5%
                            // faster on the MNIST CNN's recovery).
                            let reads = ExactRecovery {
                                dense,
                                ..exact_reads(reader, sums)
                            };
                            Kernel::selected().expect("checked by `check`").dispatch(
                                #[inline(always)]
                                || recover_exact(reads, &adc, &flagged, (safe, &peak), &mut acc),
                            )
                        } else if let (Some(reader), Some(inst), Sums::Int(sums)) =
                            (instances_reader, adcs, &sums)
                        {
                            let reads = ExactRecovery {
                                dense,
                                ..exact_reads(reader, sums)
                            };
                            let buf = &mut scratch.recovery;
                            Kernel::selected().expect("checked by `check`").dispatch(
                                #[inline(always)]
                                || {
                                    recover_exact_instances(
                                        reads,
                                        (&adc, inst),
                                        &flagged,
                                        &mut acc,
                                        buf,
                                    )
                                },
                            )
                        } else if let (true, Sums::Int(sums)) = (noisy_int, &sums) {
                            // Compiled apart from this large body (as
                            // `recover_exact`), on the same instruction set.
                            let mags = if lumped_int && one_device {
                                sums
                            } else {
                                &noise_mags
                            };
                            let buf = &mut scratch.recovery;
                            Kernel::selected().expect("checked by `check`").dispatch(
                                #[inline(always)]
                                || {
                                    recover_lumped(
                                        px,
                                        &adc,
                                        (noise, device_int),
                                        &flagged,
                                        (sums, mags),
                                        (&xbits, &xones),
                                        sh,
                                        widths[j],
                                        &mut acc,
                                        |v| stream_child_of(vkeys[v], recovery_step),
                                        (buf, dense),
                                    )
                                },
                            )
                        } else if !px.is_integral()
                            && noise.is_off()
                            && adcs.is_none()
                            && !general_recovery()
                        {
                            // Compiled apart from this large body (as
                            // `recover_exact`), on the same instruction set.
                            let buf = &mut scratch.recovery;
                            Kernel::selected().expect("checked by `check`").dispatch(
                                #[inline(always)]
                                || {
                                    recover_real(
                                        px,
                                        &adc,
                                        &flagged,
                                        &xbits,
                                        (sh, widths[j]),
                                        &mut acc,
                                        buf,
                                    )
                                },
                            )
                        } else {
                            recover(
                                px,
                                &adc,
                                noise,
                                adcs,
                                &flagged,
                                &xbits,
                                sh,
                                widths[j],
                                &mut acc,
                                |v| stream_child_of(vkeys[v], recovery_step),
                            )
                        };
                        stats.recovery_conversions += r.conversions;
                        stats.activity.conversions += r.conversions;
                        stats.activity.saturated_conversions += r.saturated;
                        stats.recovery_out_of_range += r.out_of_range;
                        stats.inexact_column_slices += r.inexact_slices;
                    }
                }
                if gather == Gather::Columns {
                    y.slice_mut(s![.., col_offset..col_offset + cols])
                        .assign(&acc);
                    col_offset += cols;
                } else {
                    // Digital combine: undo bit flips, shift by the weight slice, add to
                    // filters. Per column `val = ((a ^ s) - s + fm * bsum) << wsh` with
                    // `s = -1, fm = mask` on flipped columns (`fm * bsum - a`), `s = fm = 0`
                    // otherwise: branch-free, so it vectorises. A filter's weight slices are
                    // adjacent columns (the first and last filter may continue on other
                    // crossbars): each filter is one sum, one store.
                    let nws = wslicing.widths().len();
                    let (mut flip_s, mut flip_m, mut wsh) = (
                        Vec::with_capacity(cols),
                        Vec::with_capacity(cols),
                        Vec::with_capacity(cols),
                    );
                    for lc in 0..cols {
                        let (_, k) = m.column_role(mx.col_start + lc);
                        let mask = (1i64 << wslicing.widths()[k]) - 1;
                        let flip = mx.flipped[lc];
                        flip_s.push(-i64::from(flip));
                        flip_m.push(if flip { mask } else { 0 });
                        wsh.push(u64::from(wslicing.shifts()[k]));
                    }
                    let first_f = m.column_role(mx.col_start).0;
                    let lead = ((nws - mx.col_start % nws) % nws).min(cols);
                    let width = y.ncols().max(1);
                    let flat = y.as_slice_mut().expect("a chunk's whole rows");
                    let arows = acc.as_slice().expect("standard layout");
                    let columns = (flip_s.as_slice(), flip_m.as_slice(), wsh.as_slice());
                    let to = (flat, width, first_f);
                    // One whole filter of up to 4 weight slices (a depthwise
                    // group's crossbar): a fixed-size loop per vector.
                    match cols {
                        1 if lead == 0 && nws == 1 => {
                            combine_filter::<1>(arows, &rb_sums, columns, to);
                        }
                        2 if lead == 0 && nws == 2 => {
                            combine_filter::<2>(arows, &rb_sums, columns, to);
                        }
                        3 if lead == 0 && nws == 3 => {
                            combine_filter::<3>(arows, &rb_sums, columns, to);
                        }
                        4 if lead == 0 && nws == 4 => {
                            combine_filter::<4>(arows, &rb_sums, columns, to);
                        }
                        _ => {
                            let mut vals = vec![0i64; cols];
                            for ((arow, yrow), &bsum) in arows
                                .chunks_exact(cols.max(1))
                                .zip(to.0.chunks_exact_mut(width))
                                .zip(&rb_sums)
                            {
                                for ((((o, &a), &fs), &fm), &sh) in vals
                                    .iter_mut()
                                    .zip(arow)
                                    .zip(&flip_s)
                                    .zip(&flip_m)
                                    .zip(&wsh)
                                {
                                    *o = ((a ^ fs) - fs + fm * bsum) << sh;
                                }
                                let (head, rest) = vals.split_at(lead);
                                let mut f = first_f;
                                if lead > 0 {
                                    yrow[f] += head.iter().sum::<i64>();
                                    f += 1;
                                }
                                add_filter_sums(&mut yrow[f..], rest, nws);
                            }
                        }
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
                act.input_pulses += pulses_total;
                act.cell_charge += row_pulses
                    .iter()
                    .zip(px.row_magnitudes())
                    .map(|(&p, &g)| p as f64 * f64::from(g))
                    .sum::<f64>();
                scratch.acc = acc.into_raw_vec_and_offset().0;
                if let Sums::Int(sums) = sums {
                    scratch.sums = sums;
                }
                scratch.mags = noise_mags;
                scratch.draws = zs;
                xi += 1;
            }
            scratch.xones = xones;
            scratch.peak = peak;
        }
        SCRATCH.set(scratch);
        stats
    }
}

/// `sum_i x_i` of one input vector.
#[inline(always)]
fn row_sum(r: &ndarray::ArrayView1<'_, u8>) -> i64 {
    match r.as_slice() {
        Some(s) if s.len() < (1 << 24) => lane_sum(s),
        _ => r.iter().map(|&v| i64::from(v)).sum(),
    }
}

/// `sum_i s_i` in `u32` lanes (they vectorise): exact below 2^24 values
/// (255 x 2^24 < 2^32).
#[inline(always)]
fn lane_sum(s: &[u8]) -> i64 {
    i64::from(s.iter().map(|&v| u32::from(v)).sum::<u32>())
}

/// `sum_i x_i` of every row of `x`: over flat rows when the rows are one
/// contiguous slice (no per-row view: narrow layers have few values per row).
fn row_sums(x: ArrayView2<'_, u8>) -> Vec<i64> {
    match x.as_slice() {
        // Narrow rows (a depthwise group's 9): a fixed window of 16 values
        // per vector, those past the row masked to zero.
        Some(flat) if x.ncols() > 0 && x.ncols() < 16 && flat.len() >= 16 => {
            let rows = x.ncols();
            let keep: [u8; 16] = std::array::from_fn(|i| if i < rows { u8::MAX } else { 0 });
            let whole = (flat.len() - 16) / rows + 1;
            let mut sums: Vec<i64> = (0..whole)
                .map(|v| {
                    let a: &[u8; 16] = flat[v * rows..v * rows + 16].try_into().expect("16");
                    i64::from(
                        a.iter()
                            .zip(&keep)
                            .map(|(&a, &k)| u32::from(a & k))
                            .sum::<u32>(),
                    )
                })
                .collect();
            sums.extend(flat[whole * rows..].chunks_exact(rows).map(lane_sum));
            sums
        }
        Some(flat) if x.ncols() > 0 && x.ncols() < (1 << 24) => {
            flat.chunks_exact(x.ncols()).map(lane_sum).collect()
        }
        _ => x.rows().into_iter().map(|r| row_sum(&r)).collect(),
    }
}

/// Slice `(v >> shift) & mask` of every value of `xs` (vectors of `rows`
/// values) into `p`, vectors `stride >= rows` apart, the padding zero (`p`
/// comes zeroed). Narrow rows go a fixed-width window per vector: the
/// window's values past `rows` are masked to zero, so a window reaching into
/// the next vector's place writes zeros there before that vector's own.
#[inline(always)]
fn slice_into(xs: &[u8], rows: usize, (shift, mask): (u32, u8), p: &mut [u8], stride: usize) {
    #[inline(always)]
    fn windows<const W: usize>(
        xs: &[u8],
        rows: usize,
        (shift, mask): (u32, u8),
        p: &mut [u8],
        stride: usize,
    ) {
        let keep: [u8; W] = std::array::from_fn(|i| if i < rows { mask } else { 0 });
        let b = p.len() / stride;
        // Vectors whose window lies inside both buffers.
        let whole = (xs.len().saturating_sub(W) / rows + 1)
            .min(p.len().saturating_sub(W) / stride + 1)
            .min(b)
            .min(usize::from(xs.len() >= W && p.len() >= W) * b);
        for v in 0..whole {
            let a: &[u8; W] = xs[v * rows..v * rows + W].try_into().expect("W values");
            let o: [u8; W] = std::array::from_fn(|i| (a[i] >> shift) & keep[i]);
            p[v * stride..v * stride + W].copy_from_slice(&o);
        }
        per_row(
            &xs[whole * rows..],
            rows,
            (shift, mask),
            &mut p[whole * stride..],
            stride,
        );
    }
    #[inline(always)]
    fn per_row(xs: &[u8], rows: usize, (shift, mask): (u32, u8), p: &mut [u8], stride: usize) {
        for (prow, xrow) in p.chunks_exact_mut(stride).zip(xs.chunks_exact(rows)) {
            for (q, &v) in prow.iter_mut().zip(xrow) {
                *q = (v >> shift) & mask;
            }
        }
    }
    if stride == rows {
        for (q, &v) in p.iter_mut().zip(xs) {
            *q = (v >> shift) & mask;
        }
    } else if stride <= 16 {
        windows::<16>(xs, rows, (shift, mask), p, stride);
    } else if stride <= 32 {
        windows::<32>(xs, rows, (shift, mask), p, stride);
    } else {
        per_row(xs, rows, (shift, mask), p, stride);
    }
}

/// Every slice `(v >> shift) & mask` of `cuts` of every value of `xs`
/// (vectors of `rows` values) into `ps[j]` as [`slice_into`] writes it (`ps`
/// zeroed, vectors `stride` apart, `rows < stride <= W`), and each row's
/// pulses: the sum of its values' slices and, with `popcounts`, of their set
/// bits (recovery's 1-bit reads), as [`row_totals`] gives them from the
/// slices and the inputs. One pass over the inputs: a fixed window of `W`
/// values per vector (the values past `rows` masked to zero, so a window
/// reaching into the next vector's place writes zeros there before that
/// vector's own), its slices added into `u32` lanes (exact below `2^24`
/// vectors: at most 255 pulses per slice value and 8 set bits).
#[inline(always)]
fn slices_and_totals<const W: usize>(
    xs: &[u8],
    rows: usize,
    cuts: &[(u32, u8)],
    ps: &mut [Vec<u8>],
    stride: usize,
    popcounts: bool,
) -> Vec<u64> {
    let b = ps.first().map_or(0, |p| p.len() / stride.max(1));
    let all: [u8; W] = std::array::from_fn(|i| if i < rows { u8::MAX } else { 0 });
    let mut acc = [0u32; W];
    // Vectors whose window lies inside both buffers.
    let whole = (xs.len().saturating_sub(W) / rows.max(1) + 1)
        .min((b * stride).saturating_sub(W) / stride.max(1) + 1)
        .min(b)
        .min(usize::from(xs.len() >= W && b * stride >= W) * b);
    // Four vectors at a time where the windows are 16 values and every
    // cut's slice stays within its byte (then `a >> shift` per byte, masked,
    // is the slice).
    let mut first = 0;
    if W == 16
        && cuts
            .iter()
            .all(|&(sh, m)| sh < 8 && (u32::from(m) << sh) <= 0xff)
        && cuts.iter().map(|&(_, m)| u32::from(m)).sum::<u32>() <= 0xff
    {
        let all16: &[u8; 16] = all[..16].try_into().expect("16 values");
        let acc16: &mut [u32; 16] = (&mut acc[..16]).try_into().expect("16 lanes");
        first = four_windows(
            xs,
            rows,
            (*all16, stride),
            cuts,
            ps,
            (whole, popcounts),
            acc16,
        );
    }
    for v in first..whole {
        let a: &[u8; W] = xs[v * rows..v * rows + W].try_into().expect("W values");
        let a: [u8; W] = std::array::from_fn(|i| a[i] & all[i]);
        for (p, &(shift, mask)) in ps.iter_mut().zip(cuts) {
            let o: [u8; W] = std::array::from_fn(|i| (a[i] >> shift) & mask);
            p[v * stride..v * stride + W].copy_from_slice(&o);
            for (s, &q) in acc.iter_mut().zip(&o) {
                *s += u32::from(q);
            }
        }
        if popcounts {
            for (s, &q) in acc.iter_mut().zip(&a) {
                *s += q.count_ones();
            }
        }
    }
    let mut totals: Vec<u64> = acc[..rows].iter().map(|&s| u64::from(s)).collect();
    // The rest value by value.
    for v in whole..b {
        for (r, (&x, t)) in xs[v * rows..(v + 1) * rows]
            .iter()
            .zip(&mut totals)
            .enumerate()
        {
            for (p, &(shift, mask)) in ps.iter_mut().zip(cuts) {
                let q = (x >> shift) & mask;
                p[v * stride + r] = q;
                *t += u64::from(q);
            }
            if popcounts {
                *t += u64::from(x.count_ones());
            }
        }
    }
    totals
}

/// [`slices_and_totals`]' windows of 16 values four vectors at a time (64
/// bytes: one register on AVX-512): each cut's slices of four windows at
/// once, stored window by window in vector order (so a window reaching into
/// the next vector's place is overwritten by it, as one at a time), and the
/// rows' pulses added into `u16` lanes, moved to `acc` every 128 steps
/// (a step adds at most `255 + 8` per lane: the caller takes this path only
/// when the cuts' masks sum to at most 255). Returns how many vectors
/// it did (a multiple of four, at most `whole`); the same slices and sums as
/// one window at a time.
#[inline(always)]
fn four_windows(
    xs: &[u8],
    rows: usize,
    (all, stride): ([u8; 16], usize),
    cuts: &[(u32, u8)],
    ps: &mut [Vec<u8>],
    (whole, popcounts): (usize, bool),
    acc: &mut [u32; 16],
) -> usize {
    let keep: [u8; 64] = std::array::from_fn(|i| all[i % 16]);
    let mut lanes = [0u16; 64];
    let mut wide = [0u32; 64];
    let fours = whole / 4;
    for (step, v) in (0..fours).map(|f| 4 * f).enumerate() {
        let mut a = [0u8; 64];
        let span = &xs[v * rows..(v + 3) * rows + 16];
        for (k, w) in a.chunks_exact_mut(16).enumerate() {
            w.copy_from_slice(&span[k * rows..k * rows + 16]);
        }
        let a: [u8; 64] = std::array::from_fn(|i| a[i] & keep[i]);
        for (p, &(shift, mask)) in ps.iter_mut().zip(cuts) {
            let o: [u8; 64] = std::array::from_fn(|i| (a[i] >> shift) & mask);
            // The four windows' span, bounds-checked once.
            let span = &mut p[v * stride..(v + 3) * stride + 16];
            for (k, w) in o.chunks_exact(16).enumerate() {
                span[k * stride..k * stride + 16].copy_from_slice(w);
            }
            for (l, &q) in lanes.iter_mut().zip(&o) {
                *l += u16::from(q);
            }
        }
        if popcounts {
            for (l, &q) in lanes.iter_mut().zip(&a) {
                // At most 8.
                #[allow(clippy::cast_possible_truncation)]
                let ones = u32::from(q).count_ones() as u16;
                *l += ones;
            }
        }
        if step % 128 == 127 {
            for (w, l) in wide.iter_mut().zip(&mut lanes) {
                *w += u32::from(std::mem::take(l));
            }
        }
    }
    for (w, &l) in wide.iter_mut().zip(&lanes) {
        *w += u32::from(l);
    }
    for (r, a) in acc.iter_mut().enumerate() {
        *a += wide[r] + wide[16 + r] + wide[32 + r] + wide[48 + r];
    }
    4 * fours
}

/// `out[r] += sum_v f(xs[v * rows + r])` over the vectors of `rows` values in
/// `xs`, for the first `out.len()` rows: one flat loop into `u32` lanes, a
/// vector wide for wide rows and sixteen vectors wide for narrow ones (so it
/// vectorises however few the rows), folded per row. Exact while each lane's
/// sum stays below `2^32`.
#[inline(always)]
fn row_totals(xs: &[u8], rows: usize, f: impl Fn(u8) -> u32, out: &mut [u64]) {
    if rows == 0 {
        return;
    }
    let lanes = if rows >= 32 { 1 } else { 16 };
    let period = rows * lanes;
    let mut acc = vec![0u32; period];
    let mut blocks = xs.chunks_exact(period);
    for block in &mut blocks {
        for (a, &v) in acc.iter_mut().zip(block) {
            *a += f(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(blocks.remainder()) {
        *a += f(v);
    }
    // `out` may be shorter than `rows` (padding rows fold nowhere).
    for (r, o) in out.iter_mut().enumerate().take(rows) {
        *o += (0..lanes)
            .map(|k| u64::from(acc[k * rows + r]))
            .sum::<u64>();
    }
}

/// The digital combine of a crossbar holding exactly one filter's `N`
/// weight-slice columns: per vector `v`, `y[v][f] += sum_c ((a ^ s_c) - s_c +
/// m_c bsum_v) << sh_c` over its column sums `a` (see the engine's combine),
/// in a fixed-size loop (the general one walks five zipped slices of `N`
/// values per vector). The same integers.
#[inline(always)]
fn combine_filter<const N: usize>(
    arows: &[i64],
    bsums: &[i64],
    (flip_s, flip_m, wsh): (&[i64], &[i64], &[u64]),
    (y, width, f): (&mut [i64], usize, usize),
) {
    let fs: &[i64; N] = flip_s.try_into().expect("N columns");
    let fm: &[i64; N] = flip_m.try_into().expect("N columns");
    let sh: &[u64; N] = wsh.try_into().expect("N columns");
    if width == 1 {
        // One value per vector (a depthwise group): a flat output, so the
        // loop vectorises across the vectors.
        for ((a, yv), &bsum) in arows.chunks_exact(N).zip(y.iter_mut()).zip(bsums) {
            let a: &[i64; N] = a.try_into().expect("N columns");
            let mut t = 0;
            for c in 0..N {
                t += ((a[c] ^ fs[c]) - fs[c] + fm[c] * bsum) << sh[c];
            }
            *yv += t;
        }
        return;
    }
    for ((a, yrow), &bsum) in arows
        .chunks_exact(N)
        .zip(y.chunks_exact_mut(width))
        .zip(bsums)
    {
        let a: &[i64; N] = a.try_into().expect("N columns");
        let mut t = 0;
        for c in 0..N {
            t += ((a[c] ^ fs[c]) - fs[c] + fm[c] * bsum) << sh[c];
        }
        yrow[f] += t;
    }
}

/// `y[f] += sum(vals[f * nws .. (f + 1) * nws])` for every whole or partial
/// group of `nws` values (a filter's weight-slice columns), with fixed-size
/// loops for the usual slice counts.
#[inline(always)]
fn add_filter_sums(y: &mut [i64], vals: &[i64], nws: usize) {
    #[inline(always)]
    fn fixed<const N: usize>(y: &mut [i64], vals: &[i64]) {
        let whole = vals.chunks_exact(N);
        let tail = whole.remainder();
        let n = vals.len() / N;
        for (yf, g) in y.iter_mut().zip(whole) {
            *yf += g.iter().sum::<i64>();
        }
        if let (false, Some(yf)) = (tail.is_empty(), y.get_mut(n)) {
            *yf += tail.iter().sum::<i64>();
        }
    }
    match nws {
        1 => y.iter_mut().zip(vals).for_each(|(yf, &v)| *yf += v),
        2 => fixed::<2>(y, vals),
        3 => fixed::<3>(y, vals),
        4 => fixed::<4>(y, vals),
        _ => {
            for (yf, group) in y.iter_mut().zip(vals.chunks(nws)) {
                *yf += group.iter().sum::<i64>();
            }
        }
    }
}

/// Appends the `(vector, column)` of every flagged sum in `flat` (`cols` per
/// vector), in order.
#[inline(always)]
fn find_flagged<T: Copy>(
    flat: &[T],
    cols: usize,
    flag: impl Fn(T) -> bool,
    out: &mut Vec<(usize, usize)>,
) {
    // The whole chunk at once, as [`convert_shift_add_int`] lists its
    // flags: a word of flags per 64 sums, branch-free, then only the set
    // bits visited (a row of a narrow crossbar's few columns would pay a
    // test and a branch per vector).
    let mut at_row = FlagRows::new(cols);
    let mut blocks = flat.chunks_exact(64);
    for (wi, block) in (&mut blocks).enumerate() {
        let block: &[T; 64] = block.try_into().expect("64 sums");
        let mut word = 0u64;
        for (i, &x) in block.iter().enumerate() {
            word |= u64::from(flag(x)) << i;
        }
        at_row.push(word, wi * 64, out);
    }
    let base = flat.len() - blocks.remainder().len();
    let mut word = 0u64;
    for (i, &x) in blocks.remainder().iter().enumerate() {
        word |= u64::from(flag(x)) << i;
    }
    at_row.push(word, base, out);
}

/// `f::<SIGNED, DROP>(args)` for the runtime values of the ADC's signedness
/// and of whether flagged codes are dropped: the conversion loops take both
/// as constants, so they test neither per sum.
macro_rules! with_adc_flags {
    ($signed:expr, $drop:expr, $($f:ident)::+ ($($arg:expr),* $(,)?)) => {
        match ($signed, $drop) {
            (false, false) => $($f)::+::<false, false>($($arg),*),
            (false, true) => $($f)::+::<false, true>($($arg),*),
            (true, false) => $($f)::+::<true, false>($($arg),*),
            (true, true) => $($f)::+::<true, true>($($arg),*),
        }
    };
}

/// Round half away from zero, as [`Adc::convert`] rounds.
#[inline(always)]
fn round_half_away(x: f32) -> f32 {
    (x + 0.5f32.copysign(x)).trunc()
}

/// The integer `k` for which `instance` converts every integer sum `s` to
/// the code the ideal ADC gives `s + k`, on an ADC of codes `lo ..= hi`,
/// when there is one: then [`AdcInstance::transfer`] and [`adc_step`] of `s`
/// give the same code, range test and flag as [`convert_int_sums`] of `s +
/// k`, and an integer pass over shifted sums is the same conversion (an
/// offset alone, or with a gain and INL too small to move any code).
///
/// Checked, not assumed: every `s` of a window covering the codes on both
/// sides of the shift (`lo - 2 ..= hi + 2` and the same less `k`) rounds to
/// `s + k`; outside it the transfer is monotone in `s` (a positive gain, and
/// the INL bow is zero once `s` leaves the range), so both conversions are
/// saturated there alike.
///
/// [`convert_int_sums`]: raella_device::convert_int_sums
fn instance_shift(instance: &AdcInstance, lo: f32, hi: f32) -> Option<i32> {
    let AdcInstance { gain, offset, inl } = *instance;
    // Far from any code: a shift that large is no ADC (and keeps `s + k` in `i32`).
    if !(gain > 0.0 && gain.is_finite() && inl.is_finite() && offset.abs() < 1e6) {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    let (k, lo_i, hi_i) = (round_half_away(offset) as i32, lo as i32, hi as i32);
    let from = lo_i.min(lo_i - k) - 2;
    let to = hi_i.max(hi_i - k) + 2;
    #[allow(clippy::cast_precision_loss)]
    (from..=to)
        .all(|s| round_half_away(instance.transfer(s as f32, lo, hi)) == (s + k) as f32)
        .then_some(k)
}

/// [`AdcInstance::transfer`] of an instance without an INL bow (`inl` zero):
/// `gain * sum + offset`, the same operations less the bow's term, which is
/// then a zero; adding a zero changes at most the sign of a zero sum, which
/// [`adc_step`] converts alike. No division per sum.
#[inline(always)]
fn linear_transfer(gain: f32, offset: f32, sum: f32) -> f32 {
    gain * sum + offset
}

/// One conversion of a real-valued sum as [`Adc::convert`] makes it, for the
/// branch-free ADC passes: the code, whether the sum was in range, whether the
/// code is an extreme (flagged), and whether the code is kept (a flagged code
/// is dropped when recovery replaces it).
#[derive(Clone, Copy)]
struct Step {
    code: f32,
    ok: bool,
    sat: bool,
    keep: bool,
}

/// [`Step`] of `sum` on an ADC of codes `lo ..= hi`.
#[inline(always)]
fn adc_step(sum: f32, lo: f32, hi: f32, signed: bool, drop_flagged: bool) -> Step {
    let r = round_half_away(sum);
    let code = r.clamp(lo, hi);
    let sat = code == hi || (signed && code == lo);
    Step {
        code,
        ok: r == code,
        sat,
        keep: !(drop_flagged && sat),
    }
}

/// The integer an integral `x` with `|x| < 2^22` holds (an ADC code), as
/// `x as i32` gives it: `x + 1.5 x 2^23` puts it in the low mantissa bits,
/// read back as an integer. Unlike the saturating cast, which LLVM leaves
/// as one scalar conversion per value, it vectorises ([`integral_i64`]).
#[inline(always)]
fn small_integral_i32(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    debug_assert!(x.fract() == 0.0 && x.abs() < 4_194_304.0, "{x}");
    // Two's complement: the mantissa's offset from `MAGIC`'s is the integer.
    #[allow(clippy::cast_possible_wrap)]
    let v = (x + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    v
}

/// The integer an integral `x` holds (a code, or a code less a rounded OFF
/// current: `|x| < 2^25`), as `x as i64` gives it: `x + 1.5 x 2^52` in `f64`
/// puts it in the low mantissa bits, read back as an integer. Exact for
/// integral `|x| < 2^51`; unlike the saturating cast, which LLVM leaves as
/// one scalar conversion per value, it vectorises.
#[inline(always)]
fn integral_i64(x: f32) -> i64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    debug_assert!(x.fract() == 0.0 && x.abs() < 2f32.powi(51), "{x}");
    // Two's complement: the mantissa's offset from `MAGIC`'s is the integer.
    #[allow(clippy::cast_possible_wrap)]
    let v = (f64::from(x) + MAGIC)
        .to_bits()
        .wrapping_sub(MAGIC.to_bits()) as i64;
    v
}

/// The value the digital side keeps of one conversion of `sum` whose code is
/// `code`, for a 1T1R column carrying the nominal OFF current `off`: an
/// in-range code becomes `round(sum - off)` (the conversion grid offset by the
/// nominal current, as a reference-current calibration sets it, so an ideal
/// OFF state's half-LSB ties cannot round two ways), a clamped one `code -
/// round(off)`. With `off = 0` it is the code.
#[inline(always)]
fn off_corrected(sum: f32, code: f32, in_range: bool, off: f32) -> f32 {
    if in_range {
        round_half_away(sum - off)
    } else {
        code - round_half_away(off)
    }
}

/// Converts every column sum (as [`Adc::convert`]) and shift-adds the codes
/// into `acc`; with `drop_flagged`, saturated codes are left out (recovery
/// replaces them). `off`, per vector, is a 1T1R column's nominal OFF current
/// in this slice, removed digitally ([`off_corrected`]); `None` for none.
/// Branch-free, so it vectorises.
#[inline(always)]
fn convert_shift_add(
    adc: &Adc,
    sums: &Array2<f32>,
    off: Option<&[f32]>,
    acc: &mut Array2<i64>,
    shift: u32,
    drop_flagged: bool,
) -> IntCounts {
    let (lo, hi) = (adc.min_code() as f32, adc.max_code() as f32);
    let signed = adc.signed();
    let cols = sums.ncols().max(1);
    let mut total = IntCounts::default();
    let sums = sums.as_slice().expect("standard layout");
    let acc = acc.as_slice_mut().expect("standard layout");
    if off.is_none() {
        // Nothing per vector: the whole chunk as one row, in blocks whose
        // `u32` counters cannot overflow (a narrow crossbar's rows of a few
        // columns would each pay a call's set-up).
        for (srow, arow) in sums.chunks(1 << 24).zip(acc.chunks_mut(1 << 24)) {
            let row = (srow, (lo, hi), 0.0, shift);
            let (in_range, saturated, inexact) =
                with_adc_flags!(signed, drop_flagged, convert_real_row(row, arow));
            total.add(in_range, saturated, inexact);
        }
        return total;
    }
    for (v, (srow, arow)) in sums
        .chunks_exact(cols)
        .zip(acc.chunks_exact_mut(cols))
        .enumerate()
    {
        let row = (srow, (lo, hi), off.map_or(0.0, |o| o[v]), shift);
        // Per row: the u32 counters cannot overflow (at most 8,192 columns).
        let (in_range, saturated, inexact) =
            with_adc_flags!(signed, drop_flagged, convert_real_row(row, arow));
        total.add(in_range, saturated, inexact);
    }
    total
}

/// One vector's sums of [`convert_shift_add`] (`sums`, the ADC's code range,
/// the nominal OFF current, the slice's shift) converted and shift-added into
/// `acc`: the in-range, saturated and inexact counts. The ADC's signedness
/// and whether flagged codes are dropped are constants, so the loop tests
/// neither per sum.
#[inline(always)]
fn convert_real_row<const SIGNED: bool, const DROP: bool>(
    (sums, (lo, hi), off, shift): (&[f32], (f32, f32), f32, u32),
    acc: &mut [i64],
) -> (u32, u32, u32) {
    let (mut in_range, mut saturated, mut inexact) = (0u32, 0u32, 0u32);
    for (&sum, a) in sums.iter().zip(acc.iter_mut()) {
        let st = adc_step(sum, lo, hi, SIGNED, DROP);
        in_range += u32::from(st.ok);
        saturated += u32::from(st.sat);
        inexact += u32::from(st.keep && !st.ok);
        let value = off_corrected(sum, st.code, st.ok, off);
        let c = if st.keep { integral_i64(value) } else { 0 };
        *a += c << shift;
    }
    (in_range, saturated, inexact)
}

/// A crossbar's ADC instances' parameters, tiled over whole vectors (a
/// multiple of 64 values, the first `cols` the columns' own), so narrow
/// crossbars' loops in [`transfer_codes`] vectorise across the vectors.
struct InstanceTiles {
    period: usize,
    gain: Vec<f32>,
    offset: Vec<f32>,
    inl: Vec<f32>,
    /// Whether some instance has an INL bow ([`linear_transfer`] otherwise).
    bow: bool,
}

impl InstanceTiles {
    fn new(inst: &[AdcInstance], cols: usize) -> Self {
        let cols = cols.max(1);
        let period = cols * 64usize.div_ceil(cols);
        let tile = |f: fn(&AdcInstance) -> f32| -> Vec<f32> {
            (0..period)
                .map(|i| inst.get(i % cols).map_or(0.0, f))
                .collect()
        };
        let inl = tile(|a| a.inl);
        Self {
            period,
            gain: tile(|a| a.gain),
            offset: tile(|a| a.offset),
            bow: inl.iter().any(|&b| b != 0.0),
            inl,
        }
    }
}

/// Each exact integer sum's code as its column's ADC instance gives it,
/// unclamped, into `out`: `round(transfer(s))` ([`AdcInstance::transfer`],
/// without an INL bow [`linear_transfer`]), held to `lo - 1 ..= hi + 1`.
/// The integer pass ([`convert_shift_add_int`]) over these gives the same
/// codes, range tests, flags and counts as [`adc_step`] of the transfers:
/// it clamps the held value to the same code, and the value is in range
/// exactly when the rounded transfer is. The sums are whole vectors of the
/// crossbar whose instances `tiles` holds.
#[inline(always)]
fn transfer_codes(adc: &Adc, sums: &[i32], tiles: &InstanceTiles, out: &mut Vec<i32>) {
    let (lo, hi) = (adc.min_code() as f32, adc.max_code() as f32);
    let InstanceTiles {
        period,
        ref gain,
        ref offset,
        ref inl,
        bow,
    } = *tiles;
    // Every value is written below: only a longer buffer is extended (and
    // zeroed), not the whole one each slice.
    out.resize(sums.len(), 0);
    // Plain loops over slices (an `extend` of a mapped iterator was left as
    // a function of its own, compiled for the baseline: a `truncf` call per
    // value).
    for (block, ob) in sums.chunks(period).zip(out.chunks_mut(period)) {
        // Exact: |s| < 2^24; the held value is a small integer.
        #[allow(clippy::cast_precision_loss)]
        if bow {
            for ((((&s, o), &gain), &offset), &inl) in block
                .iter()
                .zip(ob.iter_mut())
                .zip(gain)
                .zip(offset)
                .zip(inl)
            {
                let y = AdcInstance { gain, offset, inl }.transfer(s as f32, lo, hi);
                *o = small_integral_i32(round_half_away(y).clamp(lo - 1.0, hi + 1.0));
            }
        } else {
            for (((&s, o), &gain), &offset) in block.iter().zip(ob.iter_mut()).zip(gain).zip(offset)
            {
                let y = linear_transfer(gain, offset, s as f32);
                *o = small_integral_i32(round_half_away(y).clamp(lo - 1.0, hi + 1.0));
            }
        }
    }
}

/// One primary slice's read-noise rows for [`convert_shift_add_noisy`]: the
/// relative magnitude `E`, the chunk's vector keys ([`vector_keys`]) and the
/// slice's step hash (vector `v`'s stream is `stream_child_of(vkeys[v],
/// step)`, its [`slice_key`]), and scratch for the draws (`vectors x
/// columns`).
struct NoiseRows<'a> {
    e: f64,
    vkeys: &'a [u64],
    step: u64,
    z: &'a mut [f32],
}

/// Fills `z` (`keys.len()` narrow rows of `cols`: depthwise groups have a
/// few columns) with each row's stream, draw `c` in column `c`, pair by pair
/// across all rows at once ([`normal_pairs`]) so the arithmetic vectorises:
/// the same values as [`fill_normals`] row by row, which
/// [`convert_shift_add_noisy`] uses for wide rows.
#[inline(always)]
fn draw_rows(keys: &[u64], cols: usize, z: &mut [f32]) {
    let n = keys.len();
    let (mut za, mut zb) = (vec![0f32; n], vec![0f32; n]);
    for i in 0..cols.div_ceil(2) {
        normal_pairs(keys, i as u64, &mut za, &mut zb);
        // Both halves of the pair, or the first alone in the last column of
        // an odd count: one loop each, with no test per row.
        if 2 * i + 1 < cols {
            for ((row, &a), &b) in z.chunks_exact_mut(cols).zip(&za).zip(&zb) {
                row[2 * i] = a;
                row[2 * i + 1] = b;
            }
        } else {
            for (row, &a) in z.chunks_exact_mut(cols).zip(&za) {
                row[2 * i] = a;
            }
        }
    }
}

/// Read noise on exact integer sums and magnitudes (lumped: `E sqrt(M)`; per
/// device, `e` is `s` and `mags` the squares `Q`: `s sqrt(Q)`), in one pass: draws
/// every vector's normals ([`draw_rows`]), then per column the same `f32`
/// operations as [`ColumnNoise::perturb_row`] followed by
/// [`convert_shift_add`] (no OFF current), and lists the saturated codes as
/// [`convert_shift_add_int`] does. The same values as those passes over
/// `f32` copies of the sums, without the copies.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn convert_shift_add_noisy(
    adc: &Adc,
    sums: &[i32],
    mags: &[i32],
    rows: NoiseRows<'_>,
    acc: &mut Array2<i64>,
    shift: u32,
    (drop_flagged, write): (bool, bool),
    (flagged, words): (&mut Vec<(usize, usize)>, &mut Vec<u64>),
) -> IntCounts {
    #[allow(clippy::cast_possible_truncation)]
    let e = rows.e as f32;
    let cols = acc.ncols().max(1);
    let z = rows.z;
    assert_eq!(rows.vkeys.len(), acc.nrows(), "one stream key per vector");
    if cols < 32 {
        // Narrow rows: drawn all at once.
        // A plain loop over the vector keys with the step's hash hoisted (a
        // closure per vector compiled to a scalar loop), for the reason
        // `vector_keys` gives.
        let mut keys = vec![0u64; acc.nrows()];
        for (k, &vk) in keys.iter_mut().zip(rows.vkeys) {
            *k = stream_child_of(vk, rows.step);
        }
        draw_rows(&keys, cols, z);
    } else {
        // Wide rows, row by row, skipping a row whose magnitudes are all zero
        // (its noise is `0 * z` for whatever finite `z` the buffer holds: the
        // draws cannot change a code, so skipping them changes no result).
        for (v, (mrow, zrow)) in mags
            .chunks_exact(cols)
            .zip(z.chunks_exact_mut(cols))
            .enumerate()
        {
            // Branch-free (a maximum vectorises; `any` stops early, scalar).
            if mrow.iter().fold(0, |a, &m| a.max(m)) > 0 {
                fill_normals(stream_child_of(rows.vkeys[v], rows.step), zrow);
            }
        }
    }
    let conv = IntConversion {
        lo: adc.min_code(),
        hi: adc.max_code(),
        signed: adc.signed(),
        drop_flagged,
        in_place: false,
        shift,
        write,
    };
    // The whole chunk at once, whatever vectors it spans (as
    // [`convert_shift_add_int`]).
    let acc = acc.as_slice_mut().expect("standard layout");
    let counts = raella_device::convert_noisy_sums(&conv, (sums, mags, z, e), acc, words);
    FlagRows::list(words, cols, flagged);
    counts
}

/// Completes the in-place recovery of shifted sums: the conversion pass
/// (`in_place`) kept each flagged shifted sum `S + k`, and its recovery is
/// `S + k (2^w - 1)` (every 1-bit read shifted by the column's `k`, inside the
/// ADC's range, shift-added: [`ExactRecovery::recover`]'s value for a column
/// whose bits all lie inside), so each flagged sum gets `k (2^w - 2)` more,
/// `<< shift`. Flagged as the pass flags: at the top code, or the bottom one
/// when signed. `tile` is the shifts repeated over whole vectors.
#[inline(always)]
fn add_shifts_in_place(
    adc: &Adc,
    shifted: &[i32],
    tile: &[i32],
    width: u32,
    shift: u32,
    acc: &mut Array2<i64>,
) {
    let (lo, hi, signed) = (adc.min_code(), adc.max_code(), adc.signed());
    let more = (1i64 << width) - 2;
    let acc = acc.as_slice_mut().expect("standard layout");
    for (a, block) in acc.chunks_mut(tile.len()).zip(shifted.chunks(tile.len())) {
        for ((a, &s), &k) in a.iter_mut().zip(block).zip(tile) {
            let flagged = s >= hi || (signed && s <= lo);
            *a += if flagged {
                (i64::from(k) * more) << shift
            } else {
                0
            };
        }
    }
}

/// [`convert_shift_add`] for exact integer sums ([`Adc::convert_exact`]),
/// `cols` per vector. With `drop_flagged`, the `(vector, column)` of every
/// saturated sum is appended to `flagged` in the same pass: 64 flags per
/// word, branch-free, then only the set bits are visited. With `in_place`
/// as well (every column's recovered reads are known to lie in range), a
/// saturated sum is kept as its own recovery, the sum itself, and nothing is
/// listed: the same values and counts as dropping it, listing it and
/// recovering it ([`recover_exact`]). With `write` (a chunk's first slice),
/// the values are written over `acc` rather than added to it, so it needs no
/// zeroing ([`IntConversion::write`]; the noisy pass likewise).
#[inline(always)]
fn convert_shift_add_int(
    adc: &Adc,
    sums: &[i32],
    cols: usize,
    acc: &mut Array2<i64>,
    shift: u32,
    (drop_flagged, in_place, write): (bool, bool, bool),
    (flagged, words): (&mut Vec<(usize, usize)>, &mut Vec<u64>),
) -> IntCounts {
    let conv = IntConversion {
        lo: adc.min_code(),
        hi: adc.max_code(),
        signed: adc.signed(),
        drop_flagged,
        in_place,
        shift,
        write,
    };
    let acc = acc.as_slice_mut().expect("standard layout");
    // The whole chunk at once, whatever vectors it spans (a narrow crossbar,
    // such as a depthwise group's 2 columns, would otherwise pay a loop per
    // vector for a few conversions); the flags come back one word per 64
    // sums.
    let counts = raella_device::convert_int_sums(&conv, sums, acc, words);
    FlagRows::list(words, cols, flagged);
    counts
}

/// Flagged positions of a chunk's flat sums (`cols` per vector) back to
/// `(vector, column)`, in order: the vector advances as the positions pass
/// its end.
struct FlagRows {
    cols: usize,
    v: usize,
    row0: usize,
}

impl FlagRows {
    fn new(cols: usize) -> Self {
        Self {
            cols: cols.max(1),
            v: 0,
            row0: 0,
        }
    }

    /// Lists every flagged position of a chunk's flag words (one per 64
    /// flat sums, `cols` per vector), in order.
    fn list(words: &[u64], cols: usize, flagged: &mut Vec<(usize, usize)>) {
        let mut at_row = Self::new(cols);
        for (wi, &word) in words.iter().enumerate() {
            at_row.push(word, wi * 64, flagged);
        }
    }

    /// Lists the set bits of `word`, flags of the flat positions `base ..
    /// base + 64` (called with increasing `base`).
    #[inline(always)]
    fn push(&mut self, mut word: u64, base: usize, flagged: &mut Vec<(usize, usize)>) {
        while word != 0 {
            let at = base + word.trailing_zeros() as usize;
            while at >= self.row0 + self.cols {
                self.row0 += self.cols;
                self.v += 1;
            }
            flagged.push((self.v, at - self.row0));
            word &= word - 1;
        }
    }
}

/// The key under which one crossbar's read-noise streams of one pass lie:
/// `stream_key(seed, [pass, crossbar])`.
fn crossbar_key(seed: u64, pass: u64, crossbar: usize) -> u64 {
    stream_key(seed, &[pass, crossbar as u64])
}

/// The read-noise stream of one input slice of one vector under a crossbar's
/// key ([`crossbar_key`]), i.e. `stream_key(seed, [pass, crossbar, vector,
/// slice])`. A primary slice `j` draws column `c`'s value as draw `c`
/// ([`fill_normals`]). A recovered column-slice (`slice` is `ns + j` for
/// speculative slice `j`) has its own stream one step below, keyed by the
/// column (`stream_child(.., column)`): draw `t` is its bit `t`'s conversion.
/// Flagged columns of one vector are recovered one after another, and each
/// must draw its own values. The engine hashes each vector's part once
/// ([`vector_keys`]) and takes `stream_child(vector key, slice)` per slice.
#[cfg(test)]
fn slice_key(crossbar_key: u64, vector: usize, slice: usize) -> u64 {
    stream_child(stream_child(crossbar_key, vector as u64), slice as u64)
}

/// `stream_child(crossbar_key, v)` for the vectors `v0 .. v0 + n`: the part
/// of [`slice_key`] every slice of a vector shares.
///
/// A plain loop inlined into the caller (the engine's dispatched chunk), so
/// the hashes vectorise there; LLVM leaves a `collect` as a function of its
/// own, compiled for the baseline.
#[inline(always)]
fn vector_keys(crossbar_key: u64, v0: usize, n: usize) -> Vec<u64> {
    let mut keys = vec![0u64; n];
    for (k, v) in keys.iter_mut().zip(v0..) {
        *k = stream_child(crossbar_key, v as u64);
    }
    keys
}

/// The recovery streams of flagged columns: `stream_child(vector_key(v), c)`,
/// each vector's key hashed once (flagged pairs come vector by vector) and
/// each column's half of the hash taken from a table ([`ChildSteps`]).
struct ColumnKeys<F: Fn(usize) -> u64> {
    vector_key: F,
    last: Option<(usize, u64)>,
    columns: ChildSteps,
}

impl<F: Fn(usize) -> u64> ColumnKeys<F> {
    fn new(vector_key: F) -> Self {
        Self {
            vector_key,
            last: None,
            columns: ChildSteps::new(),
        }
    }

    #[inline(always)]
    fn column(&mut self, v: usize, c: usize) -> u64 {
        let key = match self.last {
            Some((kv, key)) if kv == v => key,
            _ => {
                let key = (self.vector_key)(v);
                self.last = Some((v, key));
                key
            }
        };
        self.columns.child(key, c)
    }
}

#[derive(Default)]
struct Recovered {
    conversions: u64,
    saturated: u64,
    out_of_range: u64,
    inexact_slices: u64,
}

impl Recovered {
    /// The end of a recovery in phases: the conversions, branch-free over
    /// every bit of every flagged column, and the shift-adds. `seen[t * n +
    /// k]` is what the ADC sees of bit `t` of flagged column `k` (`n =
    /// flagged.len()`, bit-major): its code and flags are [`adc_step`]'s
    /// ([`Adc::convert`]'s for every finite value); with `nominal`, a 1T1R
    /// column's nominal OFF current at the same index, the digital side
    /// keeps [`off_corrected`] of a bit with an OFF current (a bit with no
    /// active row has none). Each column's value, `sum_t kept_t 2^(shift +
    /// t)`, is added into `acc`; the counts are of its `width` conversions (a
    /// column with any bit out of range is an inexact slice).
    #[inline(always)]
    fn convert_add(
        flagged: &[(usize, usize)],
        seen: &[f32],
        nominal: Option<&[f32]>,
        adc: &Adc,
        shift: u32,
        acc: &mut Array2<i64>,
    ) -> Self {
        let n = flagged.len();
        if n == 0 {
            return Self::default();
        }
        let (lo, hi) = (adc.min_code() as f32, adc.max_code() as f32);
        let signed = adc.signed();
        let mut values = vec![0i64; n];
        let mut out_of_range = vec![false; n];
        let (mut in_range, mut saturated) = (0u64, 0u64);
        for (t, srow) in (0u32..).zip(seen.chunks_exact(n)) {
            let (mut ok_row, mut sat_row) = (0u32, 0u32);
            let mut step = |s: f32, out: &mut bool| {
                let st = adc_step(s, lo, hi, signed, false);
                ok_row += u32::from(st.ok);
                sat_row += u32::from(st.sat);
                *out |= !st.ok;
                st
            };
            let lanes = srow
                .iter()
                .zip(values.iter_mut())
                .zip(out_of_range.iter_mut());
            if let Some(nominal) = nominal {
                let nrow = &nominal[t as usize * n..(t as usize + 1) * n];
                for (((&s, value), out), &nom) in lanes.zip(nrow) {
                    let st = step(s, out);
                    let kept = if nom > 0.0 {
                        off_corrected(s, st.code, st.ok, nom)
                    } else {
                        st.code
                    };
                    *value += integral_i64(kept) << (shift + t);
                }
            } else {
                for ((&s, value), out) in lanes {
                    let st = step(s, out);
                    *value += integral_i64(st.code) << (shift + t);
                }
            }
            in_range += u64::from(ok_row);
            saturated += u64::from(sat_row);
        }
        let cols = acc.ncols();
        let acc = acc.as_slice_mut().expect("standard layout");
        for (&(v, c), &value) in flagged.iter().zip(&values) {
            acc[v * cols + c] += value;
        }
        let conversions = seen.len() as u64;
        Self {
            conversions,
            saturated,
            out_of_range: conversions - in_range,
            inexact_slices: out_of_range.iter().map(|&o| u64::from(o)).sum(),
        }
    }

    /// Counts one recovery conversion; whether its sum was out of range.
    #[inline(always)]
    fn count(&mut self, conv: raella_device::Conversion) -> bool {
        self.conversions += 1;
        self.saturated += u64::from(conv.saturated);
        self.out_of_range += u64::from(!conv.in_range);
        !conv.in_range
    }
}

/// Re-runs each flagged `(vector, column)` of a `width`-bit speculative slice at
/// `shift` as `width` 1-bit slices over its column only, and shift-adds the
/// 1-bit codes into `acc`. `xbits` holds the row block's input bit-planes
/// (see [`raella_device::bit_planes`]). Ideal devices without read noise take
/// [`recover_exact`], real-valued conductances without read noise or ADC
/// instances [`recover_real`] (the same values).
#[inline(always)]
fn recover(
    px: &ProgrammedCrossbar,
    adc: &Adc,
    noise: ColumnNoise,
    adcs: Option<&[AdcInstance]>,
    flagged: &[(usize, usize)],
    xbits: &[u64],
    shift: u32,
    width: u32,
    acc: &mut Array2<i64>,
    vector_key: impl Fn(usize) -> u64,
) -> Recovered {
    let words = ProgrammedCrossbar::row_bit_words(px.used_rows());
    let cols = px.used_cols();
    let mut out = Recovered::default();
    let noisy = !noise.is_off();
    let mut keys = ColumnKeys::new(vector_key);
    // Real-valued conductances: when a vector has many flagged columns, every
    // column's 1-bit sums (and magnitudes, squares) at once, row by row over
    // the set bits ([`ProgrammedCrossbar::bit_rows_sum`]: the same values as
    // the column reads).
    let w = width as usize;
    let (need_mag, need_sq) = (
        noisy && noise.needs_magnitude(),
        noisy && noise.needs_squares(),
    );
    let mut dense: Option<usize> = None;
    let (mut dsum, mut dmag, mut dsq) = (Vec::new(), Vec::new(), Vec::new());
    for (k, &(v, c)) in flagged.iter().enumerate() {
        let start = (v * 8 + shift as usize) * words;
        let planes = &xbits[start..start + width as usize * words];
        if !px.is_ideal() && dense.is_none_or(|dv| dv != v) {
            let run = flagged[k..].iter().take_while(|f| f.0 == v).count();
            if run >= (cols / 64).max(2) {
                dsum.resize(w * cols, 0.0);
                dmag.resize(if need_mag { w * cols } else { 0 }, 0.0);
                dsq.resize(if need_sq { w * cols } else { 0 }, 0.0);
                for (t, plane) in planes.chunks_exact(words).enumerate() {
                    let o = t * cols..(t + 1) * cols;
                    px.bit_rows_sum(BitRows::Diff, plane, &mut dsum[o.clone()]);
                    if need_mag {
                        px.bit_rows_sum(BitRows::Magnitude, plane, &mut dmag[o.clone()]);
                    }
                    if need_sq {
                        px.bit_rows_sum(BitRows::Squares, plane, &mut dsq[o]);
                    }
                }
                dense = Some(v);
            } else {
                dense = None;
            }
        }
        let dense_here = dense == Some(v);
        // The column-slice's draws, one per 1-bit conversion.
        let mut z = [0f32; 8];
        if noisy {
            fill_normals(keys.column(v, c), &mut z[..width as usize]);
        }
        let mut any_out = false;
        let mut value = 0i64;
        // `kept`: the value the digital side keeps of the conversion.
        let mut record = |t: u32, conv: raella_device::Conversion, kept: i64| {
            any_out |= out.count(conv);
            value += kept << (shift + t);
        };
        let (lo, hi) = (adc.min_code() as f32, adc.max_code() as f32);
        let off = px.off_per_pulse();
        for (t, plane) in (0..width).zip(planes.chunks_exact(words)) {
            let exact = if !noisy && adcs.is_none() {
                px.column_sum_bits_exact(c, plane)
            } else {
                None
            };
            let mut sum_seen = 0f32;
            let conv = match exact {
                Some(exact) => adc.convert_exact(exact),
                None => {
                    let at = t as usize * cols + c;
                    let (mut sum, mag) = if dense_here {
                        (dsum[at], if need_mag { dmag[at] } else { 0.0 })
                    } else if need_mag {
                        px.column_sum_and_magnitude_bits(c, plane)
                    } else {
                        (px.column_sum_bits(c, plane), 0.0)
                    };
                    if noisy {
                        let sq = if !need_sq {
                            0.0
                        } else if dense_here {
                            dsq[at]
                        } else {
                            px.column_square_bits(c, plane)
                        };
                        sum += noise.sigma(mag, sq) * z[t as usize];
                    }
                    if let Some(inst) = adcs {
                        sum = inst[c].transfer(sum, lo, hi);
                    }
                    sum_seen = sum;
                    adc.convert(sum)
                }
            };
            // 1T1R OFF current: the digital side removes its nominal value.
            #[allow(clippy::cast_precision_loss)]
            let nominal = if off > 0.0 {
                let active: u32 = plane.iter().map(|w| w.count_ones()).sum();
                off_current(off, active as f32)
            } else {
                0.0
            };
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            let kept = if nominal > 0.0 {
                off_corrected(sum_seen, conv.code as f32, conv.in_range, nominal) as i64
            } else {
                i64::from(conv.code)
            };
            record(t, conv, kept);
        }
        acc[[v, c]] += value;
        out.inexact_slices += u64::from(any_out);
    }
    out
}

/// Whether a test sends real-valued conductances' recovery through
/// [`recover`] rather than [`recover_real`] (always `false` outside tests).
#[inline(always)]
fn general_recovery() -> bool {
    #[cfg(test)]
    if tests::GENERAL_RECOVERY.get() {
        return true;
    }
    false
}

/// [`recover`] on programmed (real-valued) conductances without read noise
/// or ADC instances, in phases: every flagged column's 1-bit sums (read as
/// [`recover`] reads them: by rows across all columns when a vector has many
/// flagged columns) and, for a 1T1R column's OFF current, its nominal value;
/// then the conversions, branch-free over every bit of every column
/// ([`adc_step`], as [`Adc::convert`] makes them), and the shift-adds. The
/// same values and counts as [`recover`], without a call and branches per
/// conversion.
#[inline(always)]
fn recover_real(
    px: &ProgrammedCrossbar,
    adc: &Adc,
    flagged: &[(usize, usize)],
    xbits: &[u64],
    (shift, width): (u32, u32),
    acc: &mut Array2<i64>,
    scratch: &mut Vec<f32>,
) -> Recovered {
    let words = ProgrammedCrossbar::row_bit_words(px.used_rows());
    let cols = px.used_cols();
    let w = width as usize;
    let n = flagged.len();
    if n == 0 {
        return Recovered::default();
    }
    let off = px.off_per_pulse();
    // Bit-major: bit `t` of flagged column `k` at `[t * n + k]`; each
    // written below before it is read.
    let mut buf = resized(
        std::mem::take(scratch),
        if off > 0.0 { 2 * n * w } else { n * w },
    );
    let (sums, nominal) = buf.split_at_mut(n * w);
    let mut dense: Option<usize> = None;
    let mut dsum = Vec::new();
    for (k, &(v, c)) in flagged.iter().enumerate() {
        let start = (v * 8 + shift as usize) * words;
        let planes = &xbits[start..start + w * words];
        if dense.is_none_or(|dv| dv != v) {
            let run = flagged[k..].iter().take_while(|f| f.0 == v).count();
            if run >= (cols / 64).max(2) {
                dsum.resize(w * cols, 0.0);
                for (t, plane) in planes.chunks_exact(words).enumerate() {
                    px.bit_rows_sum(BitRows::Diff, plane, &mut dsum[t * cols..(t + 1) * cols]);
                }
                dense = Some(v);
            } else {
                dense = None;
            }
        }
        // (Planes by index: `chunks_exact` divides by `words` per column.)
        if dense == Some(v) {
            for t in 0..w {
                sums[t * n + k] = dsum[t * cols + c];
            }
        } else {
            for t in 0..w {
                sums[t * n + k] = px.column_sum_bits(c, &planes[t * words..(t + 1) * words]);
            }
        }
        if off > 0.0 {
            for t in 0..w {
                let plane = &planes[t * words..(t + 1) * words];
                let active: u32 = plane.iter().map(|w| w.count_ones()).sum();
                // At most 512 rows: exact.
                #[allow(clippy::cast_precision_loss)]
                {
                    nominal[t * n + k] = off_current(off, active as f32);
                }
            }
        }
    }
    let got = Recovered::convert_add(
        flagged,
        sums,
        (off > 0.0).then_some(&*nominal),
        adc,
        shift,
        acc,
    );
    *scratch = buf;
    got
}

/// [`recover`] on ideal devices without read noise or ADC variation, from
/// the exact speculative sums: bits `1..width` of each flagged column are
/// read together ([`ExactBits::column_sums`]) and bit 0 is
/// `S - sum_{t>0} S_t 2^t`, the same integers and conversions as [`recover`].
///
/// The bit-planes and their popcounts are not written when every `safe[c]`
/// is `u32::MAX`. When none of the slice's bits has more active rows than
/// `safe[c]`, every read is known to lie strictly inside the ADC's range:
/// each code is its sum, none clips or is flagged, and the codes shift-add
/// to `S` itself, so no read is made (`peak[v]`, vector `v`'s most active
/// rows over the slice's bits, at most `safe[c]`).
#[inline(always)]
fn recover_exact(
    reads: ExactRecovery<'_>,
    adc: &Adc,
    flagged: &[(usize, usize)],
    safe: (&[u32], &[u32]),
    acc: &mut Array2<i64>,
) -> Recovered {
    reads.recover(flagged, safe, adc, acc)
}

/// [`recover`] with ADC instances on ideal devices and nothing else
/// perturbing the reads: the exact bit sums of [`recover_exact`], each
/// through its column's instance and the ADC: the same integers (exact in
/// `f32`), transfers and conversions as [`recover`]'s level-plane reads,
/// with fewer popcounts, or from the kernel's reads of whole vectors when
/// they cost less ([`DenseBits`]). No read is skipped: an instance can move
/// any code. In phases, as [`recover_lumped`], so the transfers and conversions
/// vectorise across the flagged columns: every bit's exact sum (bit-major)
/// and each column's instance, then per bit the transfer and [`adc_step`]
/// ([`Adc::convert`]'s code and flags for every finite value).
#[inline(always)]
fn recover_exact_instances(
    reads: ExactRecovery<'_>,
    (adc, inst): (&Adc, &[AdcInstance]),
    flagged: &[(usize, usize)],
    acc: &mut Array2<i64>,
    scratch: &mut Vec<f32>,
) -> Recovered {
    let n = flagged.len();
    if n == 0 {
        return Recovered::default();
    }
    let (shift, width) = (reads.shift, reads.width);
    let w = width as usize;
    // Bit `t` of flagged column `k` at `[t * n + k]`; column `k`'s instance:
    // each written in full below before it is read.
    let mut buf = resized(std::mem::take(scratch), (w + 3) * n);
    let (sums, rest) = buf.split_at_mut(n * w);
    let (gain, rest) = rest.split_at_mut(n);
    let (offset, inl) = rest.split_at_mut(n);
    let mut bit_sums = [0i32; 8];
    for (k, &(v, c)) in flagged.iter().enumerate() {
        reads.bit_sums(v, c, &mut bit_sums);
        // Integer sums far below 2^24: exact in f32.
        #[allow(clippy::cast_precision_loss)]
        for (t, &st) in bit_sums[..w].iter().enumerate() {
            sums[t * n + k] = st as f32;
        }
        let a = inst[c];
        (gain[k], offset[k], inl[k]) = (a.gain, a.offset, a.inl);
    }
    // What the ADC sees: each sum through its column's instance.
    let (lo, hi) = (adc.min_code() as f32, adc.max_code() as f32);
    if inl.iter().any(|&b| b != 0.0) {
        for srow in sums.chunks_exact_mut(n) {
            for (((s, &gain), &offset), &inl) in
                srow.iter_mut().zip(&*gain).zip(&*offset).zip(&*inl)
            {
                *s = AdcInstance { gain, offset, inl }.transfer(*s, lo, hi);
            }
        }
    } else {
        for srow in sums.chunks_exact_mut(n) {
            for ((s, &gain), &offset) in srow.iter_mut().zip(&*gain).zip(&*offset) {
                *s = linear_transfer(gain, offset, *s);
            }
        }
    }
    let got = Recovered::convert_add(flagged, sums, None, adc, shift, acc);
    *scratch = buf;
    got
}

/// [`DenseBits::pays`]' cost of one AMX step (32 pulse vectors x 64 rows x
/// 32 columns: four `tdpbusd` of 16 cycles each, 64 cycles) in its unit, one
/// `vpdpbusd` (two a cycle). Measured against 64 and 256 on MiniLM-L6,
/// MobileNetV2 and InceptionV3 (`docs/RESULTS.md`, 2026-12-06 mid-morning).
const AMX_STEP: usize = 128;

/// Recovery's 1-bit reads of bits `1..width` of a slice, for every vector
/// with a flagged column, made for all columns at once by the integer kernel
/// ([`ProgrammedCrossbar::column_sums_int`] on 0/1 pulse vectors, and
/// [`ProgrammedCrossbar::column_magnitudes_int`] when magnitudes are needed):
/// the same integers as the level-plane popcounts of one column at a time
/// ([`ExactBits::column_sums`]), cheaper per read when many columns of a
/// vector are flagged. Bit `t` of flagged vector `i`'s column `c` at
/// `[(i * (width - 1) + t - 1) * cols + c]`; `row[v]` is `i`.
#[derive(Default)]
struct DenseBits {
    row: Vec<u32>,
    pulses: Vec<u8>,
    sums: Vec<i32>,
    mags: Vec<i32>,
    bits: usize,
    cols: usize,
}

impl DenseBits {
    /// Whether the kernel's reads cost less than one column's popcounts per
    /// flagged column (`flagged` in vector order; `magnitudes` doubles the
    /// kernel's work, where the popcounts read both in one pass; `bits` the
    /// reads per vector, `width - 1`). The estimate counts vector
    /// instructions: per flagged column and bit, the level planes (about 5)
    /// times the 512-bit blocks of the row bitset, or scalar popcounts for
    /// one word; per flagged vector and bit, one `vpdpbusd` per row group and
    /// column tile and the pulse bytes; under the AMX kernel, [`AMX_STEP`]
    /// per step of 32 pulse vectors, 64 rows and 32 columns, a partial step
    /// counted whole. Either way gives the same integers. (Inlined, as
    /// [`Self::read`], into the chunk's copy for the kernel's instruction
    /// set.)
    #[inline(always)]
    fn pays(
        px: &ProgrammedCrossbar,
        flagged: impl Iterator<Item = (usize, usize)>,
        magnitudes: bool,
        bits: usize,
    ) -> bool {
        // Flagged columns and the vectors they lie in (listed in vector order).
        let (mut n, mut vectors, mut last) = (0usize, 0usize, usize::MAX);
        for (v, _) in flagged {
            n += 1;
            vectors += usize::from(v != last);
            last = v;
        }
        Self::pays_for(px, (n, vectors), magnitudes, bits)
    }

    /// [`Self::pays`] for the flagged columns that the bounds cannot settle
    /// (`unsettled`, the caller's test, the same one that lists them for
    /// [`Self::read`]), counted without a branch per column (whether a
    /// column is settled is as good as random to a branch predictor).
    #[inline(always)]
    fn pays_unsettled(
        px: &ProgrammedCrossbar,
        flagged: &[(usize, usize)],
        unsettled: impl Fn(&(usize, usize)) -> bool,
        bits: usize,
    ) -> bool {
        let (mut n, mut vectors, mut last) = (0usize, 0usize, usize::MAX);
        for f @ &(v, _) in flagged {
            let unsettled = unsettled(f);
            n += usize::from(unsettled);
            vectors += usize::from(unsettled & (v != last));
            last = if unsettled { v } else { last };
        }
        Self::pays_for(px, (n, vectors), false, bits)
    }

    /// [`Self::pays`] given the flagged columns' count and their vectors'.
    #[inline(always)]
    fn pays_for(
        px: &ProgrammedCrossbar,
        (n, vectors): (usize, usize),
        magnitudes: bool,
        bits: usize,
    ) -> bool {
        if n == 0 {
            return false;
        }
        #[cfg(test)]
        if let Some(forced) = tests::FORCE_DENSE.get() {
            return forced;
        }
        let words = ProgrammedCrossbar::row_bit_words(px.used_rows());
        let per_column = if words == 1 { 10 } else { 20 * words / 8 + 6 };
        let (stride, cols) = (px.pulse_stride(), px.used_cols());
        let reads = vectors * bits;
        // AMX's tiles start at 64 rows (as `column_sums` does).
        let amx = stride >= 64 && Kernel::selected().is_ok_and(|k| k == Kernel::Amx);
        let kernel = if amx {
            reads.div_ceil(32) * (stride / 4).div_ceil(16) * cols.div_ceil(32) * AMX_STEP
        } else {
            reads * (stride / 4) * cols.div_ceil(16)
        } * (1 + usize::from(magnitudes));
        kernel + reads * (stride / 8 + cols / 4) < n * bits * per_column
    }

    /// The reads of bits `1..width` of the slice at `shift` of the chunk's
    /// `b` input vectors `xs` (`rows` values each) that have a flagged
    /// column, written over `self` (its buffers reused).
    #[inline(always)]
    fn read(
        &mut self,
        px: &ProgrammedCrossbar,
        (xs, rows, b): (&[u8], usize, usize),
        flagged: impl Iterator<Item = (usize, usize)>,
        (shift, width): (u32, u32),
        magnitudes: bool,
    ) -> &Self {
        let bits = width as usize - 1;
        let (stride, cols) = (px.pulse_stride(), px.used_cols());
        let row = &mut self.row;
        row.clear();
        row.resize(b, u32::MAX);
        let mut n = 0u32;
        for (v, _) in flagged {
            if row[v] == u32::MAX {
                row[v] = n;
                n += 1;
            }
        }
        let n = n as usize;
        // The pulse rows are zero past `rows`: cleared, then written.
        let pulses = &mut self.pulses;
        pulses.clear();
        pulses.resize(n * bits * stride, 0);
        for (v, &i) in row.iter().enumerate().filter(|(_, i)| **i != u32::MAX) {
            let x = &xs[v * rows..(v + 1) * rows];
            for (t, sh) in (1..=bits).zip(shift + 1..) {
                let p = &mut pulses[(i as usize * bits + t - 1) * stride..][..rows];
                for (d, &xv) in p.iter_mut().zip(x) {
                    *d = (xv >> sh) & 1;
                }
            }
        }
        // Every value written by the kernel.
        self.sums.resize(n * bits * cols, 0);
        px.column_sums_int(pulses, &mut self.sums);
        // Without magnitudes, none: a reader takes a column's sum for its
        // magnitude (1T1R).
        self.mags.clear();
        if magnitudes {
            self.mags.resize(n * bits * cols, 0);
            px.column_magnitudes_int(pulses, &mut self.mags);
        }
        self.bits = bits;
        self.cols = cols;
        self
    }

    /// Where bit `t` (`1..width`) of vector `v`'s column `c` lies.
    #[inline(always)]
    fn at(&self, v: usize, c: usize, t: usize) -> usize {
        (self.row[v] as usize * self.bits + t - 1) * self.cols + c
    }
}

/// One slice's exact recovery reads: the exact planes, the speculative exact
/// sums (`cols` per vector) and the input bit-planes with their popcounts.
struct ExactRecovery<'a> {
    reader: ExactBits<'a>,
    sums: &'a [i32],
    cols: usize,
    bits: (&'a [u64], &'a [u32]),
    shift: u32,
    width: u32,
    /// Bits `1..width` already read by the kernel, when that pays.
    dense: Option<&'a DenseBits>,
    /// Each column's ADC shift ([`instance_shift`]) when its instance
    /// converts `s` as the ideal ADC converts `s + k`.
    adc_shifts: Option<&'a [i32]>,
}

impl ExactRecovery<'_> {
    /// Flagged column `(v, c)`'s exact bit sums `S_t` at `out[t]`, `t <
    /// width`: bits `1..width` read together ([`ExactBits::column_sums`]),
    /// bit 0 as `S - sum_{t>0} S_t 2^t` (the same integer a read gives).
    /// Returns the least and the greatest of the `width` sums, taken from the
    /// scalars as they are read: a vector load of `out` right after its
    /// scalar stores would wait for them (a failed store forwarding, 20% of
    /// InceptionV3's recovery samples when the range test read the array).
    #[inline(always)]
    fn bit_sums(&self, v: usize, c: usize, out: &mut [i32; 8]) -> (i32, i32) {
        let w = self.width as usize;
        if let Some(d) = self.dense {
            for (t, o) in out.iter_mut().enumerate().take(w).skip(1) {
                *o = d.sums[d.at(v, c, t)];
            }
        } else {
            let (xbits, xones) = self.bits;
            let words = self.reader.words();
            let first = v * 8 + self.shift as usize;
            let start = (first + 1) * words;
            self.reader.column_sums(
                c,
                &xbits[start..start + (w - 1) * words],
                &xones[first + 1..first + w],
                &mut out[1..w],
            );
        }
        let mut rest = self.sums[v * self.cols + c];
        let (mut least, mut most) = (i32::MAX, i32::MIN);
        for (t, &st) in (1..).zip(&out[1..w]) {
            rest -= st << t;
            least = least.min(st);
            most = most.max(st);
        }
        out[0] = rest;
        (least.min(rest), most.max(rest))
    }

    /// For each vector the kernel read (`d.row`'s order), whether each of
    /// its columns' `width` bit sums (shifted by the column's ADC shift)
    /// lies strictly inside `(lo, hi)`: [`Self::bit_sums`]' test, the same
    /// integers, for `cols` columns at a time.
    #[inline(always)]
    fn inside_dense(&self, d: &DenseBits, (lo, hi): (i32, i32)) -> Vec<bool> {
        let (cols, bits) = (self.cols, self.width as usize - 1);
        let n = d.sums.len() / (bits * cols).max(1);
        let mut inside = vec![false; n * cols];
        let (mut rest, mut least, mut most) =
            (vec![0i32; cols], vec![0i32; cols], vec![0i32; cols]);
        let zeros = vec![0i32; cols];
        let shifts = self.adc_shifts.unwrap_or(&zeros);
        for (v, &i) in d.row.iter().enumerate().filter(|(_, i)| **i != u32::MAX) {
            let i = i as usize;
            rest.copy_from_slice(&self.sums[v * cols..(v + 1) * cols]);
            least.fill(i32::MAX);
            most.fill(i32::MIN);
            for (t, row) in
                (1..).zip(d.sums[i * bits * cols..(i + 1) * bits * cols].chunks_exact(cols))
            {
                for (((r, l), m), &st) in rest.iter_mut().zip(&mut least).zip(&mut most).zip(row) {
                    *r -= st << t;
                    *l = (*l).min(st);
                    *m = (*m).max(st);
                }
            }
            for ((((o, &r), &l), &m), &k) in inside[i * cols..(i + 1) * cols]
                .iter_mut()
                .zip(&rest)
                .zip(&least)
                .zip(&most)
                .zip(shifts)
            {
                *o = (lo < l.min(r) + k) & (m.max(r) + k < hi);
            }
        }
        inside
    }

    /// Every flagged column's bits ([`Self::bit_sums`]), each converted
    /// exactly and shift-added into `acc`; a column none of whose bits has
    /// more active rows than `safe[c]` (`peak[v]`, the most of any of the
    /// slice's bits, at most `safe[c]`) keeps `S` unread (see
    /// [`recover_exact`]).
    #[inline(always)]
    fn recover(
        &self,
        flagged: &[(usize, usize)],
        (safe, peak): (&[u32], &[u32]),
        adc: &Adc,
        acc: &mut Array2<i64>,
    ) -> Recovered {
        let (cols, shift, width) = (self.cols, self.shift, self.width);
        let acc = acc.as_slice_mut().expect("standard layout");
        let w = width as usize;
        let mut out = Recovered::default();
        let mut bit_sums = [0i32; 8];
        // Sums strictly inside `(lo, hi)` convert to themselves unsaturated.
        let (lo, hi) = (adc.min_code() - i32::from(!adc.signed()), adc.max_code());
        // `S + k (2^w - 1)`: every bit's sum shifted by `k`, shift-added.
        let ones = (1i64 << w) - 1;
        // With the kernel's reads, whether each column of each read vector
        // lies inside, for all its columns at once (vectorised) rather than
        // per flagged column from scattered reads.
        let inside_dense = self.dense.map(|d| self.inside_dense(d, (lo, hi)));
        for &(v, c) in flagged {
            let k = self.adc_shifts.map_or(0, |k| k[c]);
            // A safe column adds `S` without a read. So does, after its read,
            // a column whose bits all lie strictly inside the ADC's range
            // (98-99.6% of those read on the MNIST CNN and InceptionV3): each
            // code is its sum, none saturated, and they shift-add to `S`
            // (with ADC shifts, the bits shifted, and their codes to `S`
            // plus each bit's shift).
            let inside = peak[v] <= safe[c]
                || match (&inside_dense, self.dense) {
                    (Some(inside), Some(d)) => inside[d.row[v] as usize * cols + c],
                    _ => {
                        let (least, most) = self.bit_sums(v, c, &mut bit_sums);
                        (lo < least + k) & (most + k < hi)
                    }
                };
            if inside {
                out.conversions += u64::from(width);
                acc[v * cols + c] +=
                    (i64::from(self.sums[v * cols + c]) + i64::from(k) * ones) << shift;
                continue;
            }
            if self.dense.is_some() {
                self.bit_sums(v, c, &mut bit_sums);
            }
            let mut value = 0i64;
            let mut any_out = false;
            for (t, &st) in (0..).zip(&bit_sums[..w]) {
                let conv = adc.convert_exact(st + k);
                any_out |= out.count(conv);
                value += i64::from(conv.code) << (shift + t);
            }
            acc[v * cols + c] += value;
            out.inexact_slices += u64::from(any_out);
        }
        out
    }
}

/// [`recover`] under read noise of one model on ideal devices (no ADC
/// variation, no OFF current; per-device noise with `squares`, whose bits'
/// squares are read from the square planes, and `sigma(0, Q_t)`): the same
/// conversions and values, in phases so
/// the draws, the noise arithmetic and the conversions vectorise across the
/// flagged columns: every bit's exact sum and magnitude (bits `1..width` from
/// the level planes, bit 0 from the speculative slice's exact sum and
/// magnitude, `spec`, `cols` per vector: `S_0 = S - sum_{t>0} S_t 2^t`, the
/// same integers a read gives), then each column stream's normals
/// ([`normal_pairs`], pair `i` of every stream at once), then `sum + sigma *
/// z` and its conversion ([`adc_step`] gives [`Adc::convert`]'s code and
/// flags for every finite sum).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn recover_lumped(
    px: &ProgrammedCrossbar,
    adc: &Adc,
    (noise, squares): (ColumnNoise, bool),
    flagged: &[(usize, usize)],
    spec: (&[i32], &[i32]),
    (xbits, xones): (&[u64], &[u32]),
    shift: u32,
    width: u32,
    acc: &mut Array2<i64>,
    vector_key: impl Fn(usize) -> u64,
    (scratch, dense): (&mut Vec<f32>, Option<&DenseBits>),
) -> Recovered {
    let words = ProgrammedCrossbar::row_bit_words(px.used_rows());
    let cols = acc.ncols();
    let w = width as usize;
    let n = flagged.len();
    if n == 0 {
        return Recovered::default();
    }
    // Sums, magnitudes and draws, each written in full below before it is read.
    let mut buf = resized(std::mem::take(scratch), 3 * n * w);
    let (sums, rest) = buf.split_at_mut(n * w);
    let (mags, z) = rest.split_at_mut(n * w);
    let square_reads = squares.then(|| {
        (
            ExactRecovery {
                reader: px.exact_bits().expect("integer levels"),
                sums: spec.0,
                cols,
                bits: (xbits, xones),
                shift,
                width,
                dense: None,
                adc_shifts: None,
            },
            px.exact_square_bits()
                .expect("squares fit a byte (squares_int_limit)"),
        )
    });
    // Bit-major: bit `t` of flagged column `k` at `[t * n + k]`.
    let mut keys = Vec::with_capacity(n);
    let mut column_keys = ColumnKeys::new(vector_key);
    for (k, &(v, c)) in flagged.iter().enumerate() {
        keys.push(column_keys.column(v, c));
        let start = (v * 8 + shift as usize) * words;
        let (mut s0, mut m0) = (spec.0[v * cols + c], spec.1[v * cols + c]);
        // (Not written when the kernel read every flagged vector.)
        let planes = || &xbits[start..start + w * words];
        if let Some((reads, sq_reader)) = &square_reads {
            // Per-device noise: the exact bit sums, and every bit's squares
            // read (a slice's squares are not its bits' squares shifted).
            let ones = &xones[v * 8 + shift as usize..][..w];
            let (mut bs, mut qs) = ([0i32; 8], [0i32; 8]);
            reads.bit_sums(v, c, &mut bs);
            sq_reader.column_sums(c, planes(), ones, &mut qs[..w]);
            // |S_t| <= rows x 30, Q_t <= rows x 2^8: exact in f32.
            #[allow(clippy::cast_precision_loss)]
            for t in 0..w {
                sums[t * n + k] = bs[t] as f32;
                mags[t * n + k] = qs[t] as f32;
            }
            continue;
        }
        // Bits `1..w`, in one call (or read by the kernel already; a 1T1R
        // column's magnitude is its sum).
        let mut read = [(0i32, 0i32); 8];
        if let Some(d) = dense {
            for (t, r) in read[..w - 1].iter_mut().enumerate() {
                let at = d.at(v, c, t + 1);
                *r = (d.sums[at], d.mags.get(at).copied().unwrap_or(d.sums[at]));
            }
        } else {
            px.column_sums_and_magnitudes_bits_int(c, &planes()[words..], &mut read[..w - 1]);
        }
        for (t, &(s, m)) in (1..).zip(&read[..w - 1]) {
            s0 -= s << t;
            m0 -= m << t;
            // |S_t|, M_t <= rows x 30 < 2^24: exact in f32.
            #[allow(clippy::cast_precision_loss)]
            {
                sums[t * n + k] = s as f32;
                mags[t * n + k] = m as f32;
            }
        }
        // |S_0|, M_0 <= rows x 30 < 2^24: exact in f32.
        #[allow(clippy::cast_precision_loss)]
        {
            sums[k] = s0 as f32;
            mags[k] = m0 as f32;
        }
    }
    // Draw `t` of stream `k` at `z[t * n + k]` (pair `t / 2`, half `t % 2`).
    let mut spare = vec![0f32; if w % 2 == 1 { n } else { 0 }];
    for (i, pair) in z.chunks_mut(2 * n).enumerate() {
        let (za, zb) = pair.split_at_mut(n);
        let zb = if zb.is_empty() { &mut spare[..] } else { zb };
        normal_pairs(&keys, i as u64, za, zb);
    }
    // `sum + sigma z`, as `recover` computes it (`noise.sigma(m, 0)` lumped,
    // `noise.sigma(0, Q)` per device): what the ADC sees.
    for ((s, &m), &z) in sums.iter_mut().zip(&*mags).zip(&*z) {
        let sigma = if squares {
            noise.sigma(0.0, m)
        } else {
            noise.sigma(m, 0.0)
        };
        *s += sigma * z;
    }
    let got = Recovered::convert_add(flagged, sums, None, adc, shift, acc);
    *scratch = buf;
    got
}

/// The nominal OFF current of `pulses` pulses at `off` per pulse, in LSBs.
#[inline(always)]
fn off_current(off: f32, pulses: f32) -> f32 {
    off * pulses
}

/// `v` clamped to the `i32` range.
#[inline(always)]
fn saturate(v: i64) -> i64 {
    v.clamp(i64::from(i32::MIN), i64::from(i32::MAX))
}

/// A [`saturate`]d value as `i32` (exact).
fn narrow(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}

#[cfg(test)]
mod noise_tests;

#[cfg(test)]
mod tests;
