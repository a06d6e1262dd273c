//! Post-training 8-bit quantisation and quantised execution of any imported
//! model.
//!
//! * Weights: per-output-channel symmetric int8 (`raella_compiler::quantize_per_channel`)
//!   of every weight layer's matrix, per group for grouped convolutions
//!   (BatchNormalization and bias additions were folded in at import).
//! * Activations: every weight layer's input tensor gets one scale, calibrated
//!   on calibration inputs with the float32 network ([`activation_scale`]):
//!   `max / 255` as uint8 when the tensor was never negative there, else
//!   `max |x| / 127` as int8 (run in two passes on the crossbars). Zero maps to
//!   zero, so padding stays exact.
//! * A weight layer computes `y_int = W_q x_q` (exactly, or on simulated
//!   crossbars, see [`MacBackend`]) and dequantises per output channel:
//!   `y = y_int * (s_w[f] * s_x) + b[f]`; the next weight layer rounds its
//!   input to 8 bits again. Everything between weight layers runs in float32
//!   (`raella-onnx`), on the dequantised values; element-wise ops that commute
//!   with rounding (ReLU, Clip, max pooling) give what integer requantisation
//!   followed by the op on 8-bit codes would.
//!
//! No weight is trained or tuned.

use std::sync::Mutex;

use ndarray::{Array2, ArrayD, Axis, linalg::general_mat_mul};
use raella_compiler::{QuantizedMatrix, quantize_per_channel};
use raella_device::Kernel;
use raella_onnx::{
    FloatRunner, Graph, InputQuant, LayerKind, LayerRunner, PARALLEL_VALUES, Tensor, Vectors,
    WeightLayer,
};
use raella_runtime::{CHUNK_VECTORS, LayerStats};
use rayon::prelude::*;

use crate::NetworkError;

/// What a weight layer does per item (image or document), measured on the
/// calibration inputs (averages when items differ, e.g. documents of
/// different lengths).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    /// `Conv`, `ConvTranspose` or `Linear` (Gemm and MatMul).
    pub kind: &'static str,
    /// Input vectors per item (output positions of a conv, tokens of a linear).
    pub vectors_per_item: f64,
    /// Input tensor elements per item.
    pub in_elems: f64,
    /// Output tensor elements per item.
    pub out_elems: f64,
}

/// One weight layer's quantisation.
#[derive(Debug, Clone)]
pub struct QuantLayer {
    /// Node name.
    pub name: String,
    /// Input activation scale: real value = code * scale.
    pub input_scale: f32,
    /// Inputs are int8 (two crossbar passes) instead of uint8.
    pub signed_input: bool,
    /// Int8 weights per group (`outputs of the group x inputs`).
    pub groups: Vec<QuantizedMatrix>,
    /// Shape facts per item.
    pub info: LayerInfo,
}

/// One batch through a quantised network ([`QuantModel::run`]).
#[derive(Debug, Clone)]
pub struct BatchRun {
    /// The graph outputs, in graph order.
    pub outputs: Vec<Tensor>,
    /// Per weight layer, this batch's statistics (groups summed); `None` for
    /// a layer the backend keeps none for.
    pub stats: Vec<Option<LayerStats>>,
    /// The last weight layer's input tensor (the penultimate features).
    pub features: Option<ArrayD<f32>>,
    /// Where the batch's time went.
    pub times: raella_onnx::RunProfile,
}

/// A graph with its 8-bit quantisation.
#[derive(Debug)]
pub struct QuantModel {
    /// The graph.
    pub graph: Graph,
    /// Weight layers, indexed as `graph.layers`.
    pub layers: Vec<QuantLayer>,
}

/// 8-bit input vectors of one weight layer (vectors x inputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QInput {
    /// uint8 codes.
    Unsigned(Array2<u8>),
    /// int8 codes.
    Signed(Array2<i8>),
}

impl QInput {
    /// Number of vectors.
    #[must_use]
    pub fn nrows(&self) -> usize {
        match self {
            Self::Unsigned(x) => x.nrows(),
            Self::Signed(x) => x.nrows(),
        }
    }

    /// The vectors as the crossbars see them, unsigned: the codes themselves,
    /// or for signed inputs the positive parts then the negative magnitudes
    /// (with `offset`: the codes plus 128, one pass).
    #[must_use]
    pub fn crossbar_vectors_as(&self, offset: bool) -> Array2<u8> {
        match self {
            Self::Signed(x) if offset => x.mapv(offset_code),
            _ => self.crossbar_vectors(),
        }
    }

    /// [`Self::crossbar_vectors_as`] with signed inputs split in two passes.
    #[must_use]
    pub fn crossbar_vectors(&self) -> Array2<u8> {
        match self {
            Self::Unsigned(x) => x.clone(),
            Self::Signed(x) => {
                let pos = x.mapv(positive_part);
                let neg = x.mapv(negative_magnitude);
                ndarray::concatenate(ndarray::Axis(0), &[pos.view(), neg.view()])
                    .expect("same width")
            }
        }
    }

    /// Rows `i n / max` (`i < max`) of the `n` rows of
    /// [`Self::crossbar_vectors_as`]`(offset)`, or all of them when `n <= max`:
    /// an evenly spaced subsample, the chosen rows converted alone.
    #[must_use]
    pub fn sampled_crossbar_vectors(&self, offset: bool, max: usize) -> Array2<u8> {
        let m = self.nrows();
        let split = matches!(self, Self::Signed(_)) && !offset;
        let n = if split { 2 * m } else { m };
        if n <= max {
            return self.crossbar_vectors_as(offset);
        }
        let idx: Vec<usize> = (0..max).map(|i| i * n / max).collect();
        match self {
            Self::Unsigned(x) => x.select(ndarray::Axis(0), &idx),
            Self::Signed(x) if offset => x.select(ndarray::Axis(0), &idx).mapv(offset_code),
            Self::Signed(x) => {
                // The positive parts' rows come first, then the negative
                // magnitudes'.
                let mut out = Array2::zeros((max, x.ncols()));
                for (mut o, &j) in out.rows_mut().into_iter().zip(&idx) {
                    if j < m {
                        o.zip_mut_with(&x.row(j), |o, &v| *o = positive_part(v));
                    } else {
                        o.zip_mut_with(&x.row(j - m), |o, &v| *o = negative_magnitude(v));
                    }
                }
                out
            }
        }
    }

    fn as_f64(&self) -> Array2<f64> {
        match self {
            Self::Unsigned(x) => x.mapv(f64::from),
            Self::Signed(x) => x.mapv(f64::from),
        }
    }

    /// `self` with `other`'s rows appended (same kind and width).
    fn append(&mut self, other: Self) -> Result<(), NetworkError> {
        let bad = || NetworkError::BadInput("calibration batches differ in kind or width".into());
        match (self, other) {
            (Self::Unsigned(a), Self::Unsigned(b)) => {
                a.append(ndarray::Axis(0), b.view()).map_err(|_| bad())
            }
            (Self::Signed(a), Self::Signed(b)) => {
                a.append(ndarray::Axis(0), b.view()).map_err(|_| bad())
            }
            _ => Err(bad()),
        }
    }
}

/// Computes `y_int = W_q x_q` for one group of one weight layer.
pub trait MacBackend: Sync {
    /// Integer outputs (vectors x outputs of the group) and, for simulated
    /// crossbars, the run's statistics.
    ///
    /// # Errors
    /// A runtime error of the backend.
    fn mac(
        &self,
        layer: usize,
        group: usize,
        x: &QInput,
        batch_index: u64,
    ) -> Result<(Array2<i64>, Option<LayerStats>), NetworkError>;
}

/// Exact integer MACs: the 8-bit digital reference. Sums run in f64, exact
/// below 2^53 (an 8b x 8b layer would need over 10^11 inputs to reach it).
#[derive(Debug, Clone)]
pub struct ExactBackend {
    weights_t: Vec<Vec<Array2<f64>>>,
}

impl ExactBackend {
    /// The reference for `model`.
    #[must_use]
    pub fn new(model: &QuantModel) -> Self {
        let layers: Vec<&[QuantizedMatrix]> =
            model.layers.iter().map(|l| l.groups.as_slice()).collect();
        Self::from_layers(&layers)
    }

    /// The reference for any list of weight layers, each a slice of its
    /// groups' int8 weights (in the order the layers are indexed by
    /// [`MacBackend::mac`]).
    #[must_use]
    pub fn from_layers(layers: &[&[QuantizedMatrix]]) -> Self {
        let weights_t = layers
            .iter()
            .map(|groups| {
                groups
                    .iter()
                    .map(|g| g.weights.t().mapv(f64::from))
                    .collect()
            })
            .collect();
        Self { weights_t }
    }
}

impl MacBackend for ExactBackend {
    fn mac(
        &self,
        layer: usize,
        group: usize,
        x: &QInput,
        _batch_index: u64,
    ) -> Result<(Array2<i64>, Option<LayerStats>), NetworkError> {
        let w = &self.weights_t[layer][group];
        let xf = x.as_f64();
        let mut y = Array2::<f64>::zeros((xf.nrows(), w.ncols()));
        general_mat_mul(1.0, &xf, w, 0.0, &mut y);
        // Integer-valued and far below 2^53: the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        Ok((y.mapv(|v| v as i64), None))
    }
}

/// The activation rule of every weight layer's input, from the range `[lo, hi]`
/// its float values took on calibration data: `(scale, signed)`, with scale
/// `max / 255` (uint8) when never negative, else `max |x| / 127` (int8, two
/// crossbar passes); 1 for an all-zero or non-finite range.
#[must_use]
pub fn activation_scale(lo: f32, hi: f32) -> (f32, bool) {
    let signed = lo < 0.0;
    let max = if signed { lo.abs().max(hi) } else { hi };
    let scale = if max > 0.0 && max.is_finite() {
        max / if signed { 127.0 } else { 255.0 }
    } else {
        1.0
    };
    (scale, signed)
}

/// Per layer during calibration: the input range, and counts for [`LayerInfo`].
#[derive(Debug, Clone)]
struct Seen {
    lo: f32,
    hi: f32,
    in_elems: usize,
    out_elems: usize,
    vectors: usize,
}

/// Float execution that records every weight layer's input range and sizes.
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

impl LayerRunner for Recorder {
    fn observe_input(&self, index: usize, x: &ArrayD<f32>) {
        let (lo, hi) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let mut s = self.seen.lock().expect("no panics while held");
        let e = &mut s[index];
        e.lo = e.lo.min(lo);
        e.hi = e.hi.max(hi);
        e.in_elems += x.len();
    }

    fn observe_output(&self, index: usize, y: &ArrayD<f32>) {
        self.seen.lock().expect("no panics while held")[index].out_elems += y.len();
    }

    fn matmul(
        &self,
        index: usize,
        layer: &WeightLayer,
        group: usize,
        x: Vectors,
        batch: u64,
    ) -> Result<Array2<f32>, String> {
        if group == 0 {
            self.seen.lock().expect("no panics while held")[index].vectors += x.nrows();
        }
        FloatRunner.matmul(index, layer, group, x, batch)
    }
}

/// The number of items (the leading dimension of the first input) of a batch.
#[must_use]
pub fn batch_items(inputs: &[Tensor]) -> usize {
    inputs
        .first()
        .and_then(|t| t.shape().first().copied())
        .unwrap_or(1)
        .max(1)
}

impl QuantModel {
    /// Quantises `graph`: int8 weights, and activation scales calibrated on
    /// the `calibration` batches (each one tensor per graph input).
    ///
    /// # Errors
    /// No calibration data, a run error, or weights that cannot be quantised.
    pub fn calibrate(graph: Graph, calibration: &[Vec<Tensor>]) -> Result<Self, NetworkError> {
        if calibration.is_empty() {
            return Err(NetworkError::BadInput(
                "calibration needs at least one input".into(),
            ));
        }
        let rec = Recorder {
            seen: Mutex::new(vec![
                Seen {
                    lo: f32::INFINITY,
                    hi: f32::NEG_INFINITY,
                    in_elems: 0,
                    out_elems: 0,
                    vectors: 0,
                };
                graph.layers.len()
            ]),
        };
        let mut items = 0usize;
        for batch in calibration {
            items += batch_items(batch);
            raella_onnx::run(&graph, batch.clone(), &rec, 0)?;
        }
        let seen = rec.seen.into_inner().expect("no panics while held");
        #[allow(clippy::cast_precision_loss)]
        let per = |v: usize| v as f64 / items.max(1) as f64;
        let mut layers = Vec::with_capacity(graph.layers.len());
        for (wl, s) in graph.layers.iter().zip(&seen) {
            if s.vectors == 0 {
                return Err(NetworkError::BadInput(format!(
                    "layer `{}` never ran on the calibration inputs",
                    wl.name
                )));
            }
            let (input_scale, signed_input) = activation_scale(s.lo, s.hi);
            let groups = wl
                .matrices
                .iter()
                .map(|m| {
                    quantize_per_channel(m.view()).map_err(|e| NetworkError::Compile {
                        layer: wl.name.clone(),
                        source: e,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            layers.push(QuantLayer {
                name: wl.name.clone(),
                input_scale,
                signed_input,
                groups,
                info: LayerInfo {
                    kind: match wl.kind {
                        LayerKind::Conv(_) => "Conv",
                        LayerKind::ConvTranspose(_) => "ConvTranspose",
                        _ => "Linear",
                    },
                    vectors_per_item: per(s.vectors),
                    in_elems: per(s.in_elems),
                    out_elems: per(s.out_elems),
                },
            });
        }
        Ok(Self { graph, layers })
    }

    /// One empty slot per weight layer and group.
    fn per_group<T: Clone>(&self) -> Vec<Vec<Option<T>>> {
        self.layers
            .iter()
            .map(|l| vec![None; l.groups.len()])
            .collect()
    }

    /// Runs one batch with `backend` for the MACs: the graph outputs, per
    /// weight layer this batch's statistics (groups summed), and the last
    /// weight layer's input tensor (the penultimate features).
    ///
    /// # Errors
    /// Input or backend errors.
    pub fn run(
        &self,
        inputs: Vec<Tensor>,
        backend: &impl MacBackend,
        batch_index: u64,
    ) -> Result<BatchRun, NetworkError> {
        let runner = QuantRunner {
            model: self,
            backend,
            stats: Mutex::new(self.per_group()),
            capture: None,
            features: Mutex::new(None),
            error: Mutex::new(None),
        };
        let out = raella_onnx::run_timed(&self.graph, inputs, &runner, batch_index);
        if let Some(e) = runner.error.into_inner().expect("no panics while held") {
            return Err(e);
        }
        let (outputs, times) = out?;
        Ok(BatchRun {
            outputs,
            times,
            stats: sum_groups(runner.stats.into_inner().expect("no panics while held")),
            features: runner.features.into_inner().expect("no panics while held"),
        })
    }

    /// Runs the `batches` with exact MACs and returns every weight layer's
    /// 8-bit input vectors per group, all batches' rows together (for
    /// calibrating adaptive slicing).
    ///
    /// # Errors
    /// Input errors.
    pub fn capture_inputs(
        &self,
        batches: &[Vec<Tensor>],
    ) -> Result<Vec<Vec<QInput>>, NetworkError> {
        let backend = ExactBackend::new(self);
        let mut all: Vec<Vec<Option<QInput>>> = self.per_group();
        for batch in batches {
            let runner = QuantRunner {
                model: self,
                backend: &backend,
                stats: Mutex::new(self.per_group()),
                capture: Some(Mutex::new(self.per_group())),
                features: Mutex::new(None),
                error: Mutex::new(None),
            };
            raella_onnx::run(&self.graph, batch.clone(), &runner, 0)?;
            if let Some(e) = runner.error.into_inner().expect("no panics while held") {
                return Err(e);
            }
            let cap = runner
                .capture
                .expect("set")
                .into_inner()
                .expect("no panics while held");
            for (acc, got) in all.iter_mut().zip(cap) {
                for (a, g) in acc.iter_mut().zip(got) {
                    match (a.as_mut(), g) {
                        (Some(a), Some(g)) => a.append(g)?,
                        (None, g) => *a = g,
                        (Some(_), None) => {}
                    }
                }
            }
        }
        all.into_iter()
            .zip(&self.layers)
            .map(|(groups, l)| {
                groups
                    .into_iter()
                    .map(|q| {
                        q.ok_or_else(|| {
                            NetworkError::BadInput(format!(
                                "layer `{}` never ran on the calibration inputs",
                                l.name
                            ))
                        })
                    })
                    .collect()
            })
            .collect()
    }
}

/// Each layer's statistics, its groups' summed in group order (vectors counted
/// once: groups split the same vectors' outputs).
fn sum_groups(per_group: Vec<Vec<Option<LayerStats>>>) -> Vec<Option<LayerStats>> {
    per_group
        .into_iter()
        .map(|groups| {
            groups.into_iter().flatten().reduce(|mut acc, st| {
                acc += &st;
                acc.vectors = st.vectors;
                acc
            })
        })
        .collect()
}

/// Quantised execution: the executor quantises each weight layer's input with
/// the calibrated scale, the backend computes the integer products, and the
/// results are dequantised per output channel.
struct QuantRunner<'a, B> {
    model: &'a QuantModel,
    backend: &'a B,
    /// Per layer, per group: groups may run in any order, and are summed in
    /// group order at the end (float fields sum the same way every run).
    stats: Mutex<Vec<Vec<Option<LayerStats>>>>,
    capture: Option<Mutex<Vec<Vec<Option<QInput>>>>>,
    features: Mutex<Option<ArrayD<f32>>>,
    /// The backend's own error, kept whole (the executor only carries text).
    error: Mutex<Option<NetworkError>>,
}

impl<B: MacBackend> LayerRunner for QuantRunner<'_, B> {
    fn input_quant(&self, index: usize) -> Option<InputQuant> {
        let l = &self.model.layers[index];
        Some(InputQuant {
            scale: l.input_scale,
            signed: l.signed_input,
        })
    }

    fn observe_input(&self, index: usize, x: &ArrayD<f32>) {
        if index + 1 == self.model.layers.len() {
            *self.features.lock().expect("no panics while held") = Some(x.clone());
        }
    }

    fn matmul(
        &self,
        index: usize,
        _layer: &WeightLayer,
        group: usize,
        x: Vectors,
        batch: u64,
    ) -> Result<Array2<f32>, String> {
        let q = match x {
            Vectors::U8(v) => QInput::Unsigned(v),
            Vectors::I8(v) => QInput::Signed(v),
            Vectors::F32(_) => return Err("expected quantised vectors".into()),
        };
        let (y, st) = match self.backend.mac(index, group, &q, batch) {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                // Groups may fail at once: keep the first error seen.
                self.error
                    .lock()
                    .expect("no panics while held")
                    .get_or_insert(e);
                return Err(msg);
            }
        };
        if let Some(cap) = &self.capture {
            cap.lock().expect("no panics while held")[index][group] = Some(q);
        }
        if let Some(st) = st {
            self.stats.lock().expect("no panics while held")[index][group] = Some(st);
        }
        let ql = &self.model.layers[index];
        let scales = &ql.groups[group].scales;
        let sx = f64::from(ql.input_scale);
        let mut out = Array2::<f32>::zeros(y.dim());
        // On all threads, a block of vectors per item (merged while small).
        let blocks: Vec<_> = out
            .axis_chunks_iter_mut(Axis(0), CHUNK_VECTORS)
            .zip(y.axis_chunks_iter(Axis(0), CHUNK_VECTORS))
            .collect();
        let per_block = CHUNK_VECTORS * y.ncols().max(1);
        let blocks = blocks
            .into_par_iter()
            .with_min_len(PARALLEL_VALUES / per_block);
        let width = y.ncols().max(1);
        blocks.for_each(|(mut o, y)| {
            // Flat rows (no per-row views: a depthwise group has one output).
            let y = y.as_standard_layout();
            let y = y.as_slice().expect("standard layout");
            let o = o.as_slice_mut().expect("standard layout");
            // Compiled for the engine's vector units (the baseline has no
            // vector `i64 -> f64` conversion); the same values on every set.
            Kernel::dispatch_selected(
                #[inline(always)]
                || {
                    // One output per vector (a depthwise group's): across the vectors.
                    if let [sw] = scales[..] {
                        for (o, &v) in o.iter_mut().zip(y) {
                            *o = requantise(v, sw, sx);
                        }
                        return;
                    }
                    for (yrow, orow) in y.chunks_exact(width).zip(o.chunks_exact_mut(width)) {
                        for ((o, &v), &sw) in orow.iter_mut().zip(yrow).zip(scales) {
                            *o = requantise(v, sw, sx);
                        }
                    }
                },
            );
        });
        Ok(out)
    }
}

/// An output's exact integer `v` times the combined scale `sw * sx`; the
/// narrowing to `f32` is the requantisation's own rounding.
#[inline(always)]
fn requantise(v: i64, sw: f32, sx: f64) -> f32 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let r = (v as f64 * f64::from(sw) * sx) as f32;
    r
}

/// A signed code's positive part (0 for a negative code).
fn positive_part(v: i8) -> u8 {
    u8::try_from(v.max(0)).unwrap_or(0)
}

/// A signed code's negative magnitude (0 for a positive code; 128 for -128).
fn negative_magnitude(v: i8) -> u8 {
    u8::try_from(-i16::from(v.min(0))).unwrap_or(u8::MAX)
}

/// A signed 8-bit code cast to unsigned by adding 128 (`-128..=127` -> `0..=255`),
/// the input encoding of an offset-correcting design (`signed_inputs = "offset"`).
#[must_use]
pub fn offset_code(v: i8) -> u8 {
    // Flipping the sign bit adds 128 modulo 256: exact on the whole range.
    v.cast_unsigned() ^ 0x80
}
