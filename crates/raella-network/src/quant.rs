//! Post-training 8-bit quantisation and quantised execution.
//!
//! * Weights: per-output-channel symmetric int8 (`raella_compiler::quantize_per_channel`),
//!   per group for grouped convolutions.
//! * Activations: every crossbar layer's input tensor gets one scale, calibrated
//!   on calibration images with the float32 network: `max / 255` as uint8 when the
//!   tensor was never negative there, else `max |x| / 127` as int8 (run in two
//!   passes on the crossbars). Zero maps to zero, so padding stays exact.
//! * A crossbar layer computes `y_int = W_q x_q` (exactly, or on simulated
//!   crossbars, see [`MacBackend`]) and requantises per output channel:
//!   `y = y_int * (s_w[f] * s_x) + b[f]`; the next crossbar layer rounds its input
//!   to 8 bits again. The digital ops in between (ReLU, Clip, max/avg pooling,
//!   flatten, concat, add, softmax) run exactly in f32 on those values; ReLU, Clip
//!   and max pooling commute with the rounding, so for them this equals integer
//!   requantisation followed by the op on 8-bit codes.
//!
//! No weight is trained or tuned.

use std::sync::Mutex;

use ndarray::{Array2, ArrayView2, linalg::general_mat_mul};
use raella_compiler::{QuantizedMatrix, quantize_per_channel};
use raella_runtime::LayerStats;
use rayon::prelude::*;

use crate::NetworkError;
use crate::forward::{FloatExec, LayerExec, forward};
use crate::graph::{Graph, Node, Op, Shape};
use crate::ops;

/// One crossbar layer's quantisation.
#[derive(Debug, Clone)]
pub struct QuantLayer {
    /// Node index in the graph.
    pub node: usize,
    /// Node name.
    pub name: String,
    /// Input activation scale: real value = code * scale.
    pub input_scale: f32,
    /// Inputs are int8 (two crossbar passes) instead of uint8.
    pub signed_input: bool,
    /// Int8 weights per group (`outputs/groups x inputs-per-group`).
    pub groups: Vec<QuantizedMatrix>,
    /// Float bias per output channel.
    pub bias: Vec<f32>,
}

/// A graph with its 8-bit quantisation.
#[derive(Debug, Clone)]
pub struct QuantModel {
    /// The graph.
    pub graph: Graph,
    /// Crossbar layers in execution order.
    pub layers: Vec<QuantLayer>,
    node_to_layer: Vec<Option<usize>>,
}

/// 8-bit input vectors of one crossbar layer (vectors x inputs).
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
    /// or for signed inputs the positive parts then the negative magnitudes.
    #[must_use]
    pub fn crossbar_vectors(&self) -> Array2<u8> {
        match self {
            Self::Unsigned(x) => x.clone(),
            Self::Signed(x) => {
                let pos = x.mapv(|v| u8::try_from(v.max(0)).unwrap_or(0));
                let neg = x.mapv(|v| u8::try_from(-i16::from(v.min(0))).unwrap_or(u8::MAX));
                ndarray::concatenate(ndarray::Axis(0), &[pos.view(), neg.view()])
                    .expect("same width")
            }
        }
    }

    fn as_f64(&self) -> Array2<f64> {
        match self {
            Self::Unsigned(x) => x.mapv(f64::from),
            Self::Signed(x) => x.mapv(f64::from),
        }
    }
}

/// Computes `y_int = W_q x_q` for one group of one crossbar layer.
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

    /// The reference for any list of crossbar layers, each a slice of its
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

/// The activation rule of every crossbar-layer input, from the range `[lo, hi]`
/// its float values took on calibration data: `(scale, signed)`, with scale
/// `max / 255` (uint8) when never negative, else `max |x| / 127` (int8, two
/// crossbar passes); 1 for an all-zero or non-finite range.
pub(crate) fn activation_scale(lo: f32, hi: f32) -> (f32, bool) {
    let signed = lo < 0.0;
    let max = if signed { lo.abs().max(hi) } else { hi };
    let scale = if max > 0.0 && max.is_finite() {
        max / if signed { 127.0 } else { 255.0 }
    } else {
        1.0
    };
    (scale, signed)
}

/// Widens `range` (min, max) to cover every value of `x`.
pub(crate) fn widen_range(range: &mut (f32, f32), x: ArrayView2<'_, f32>) {
    *range = x.iter().fold(*range, |(a, b), &v| (a.min(v), b.max(v)));
}

/// Records min and max of each crossbar layer's input during float runs.
struct RangeRecorder {
    ranges: Mutex<Vec<(f32, f32)>>,
    node_to_layer: Vec<Option<usize>>,
}

impl LayerExec for RangeRecorder {
    fn crossbar_layer(
        &self,
        node_index: usize,
        node: &Node,
        x: ArrayView2<'_, f32>,
        in_shape: &Shape,
        out_shape: &Shape,
        batch_index: u64,
    ) -> Result<Array2<f32>, NetworkError> {
        if let Some(l) = self.node_to_layer[node_index] {
            widen_range(&mut self.ranges.lock().expect("no panics while held")[l], x);
        }
        FloatExec.crossbar_layer(node_index, node, x, in_shape, out_shape, batch_index)
    }
}

impl QuantModel {
    /// Quantises `graph`: int8 weights, and activation scales calibrated on
    /// `calibration` images (`images x numel(input)`, preprocessed floats).
    ///
    /// # Errors
    /// Empty calibration data, or a forward-pass error.
    pub fn calibrate(graph: Graph, calibration: ArrayView2<'_, f32>) -> Result<Self, NetworkError> {
        if calibration.nrows() == 0 {
            return Err(NetworkError::BadInput(
                "calibration needs at least one image".into(),
            ));
        }
        let xl = graph.crossbar_layers();
        let mut node_to_layer = vec![None; graph.nodes.len()];
        for (l, &n) in xl.iter().enumerate() {
            node_to_layer[n] = Some(l);
        }
        let rec = RangeRecorder {
            ranges: Mutex::new(vec![(f32::INFINITY, f32::NEG_INFINITY); xl.len()]),
            node_to_layer: node_to_layer.clone(),
        };
        for chunk in calibration.axis_chunks_iter(ndarray::Axis(0), 64) {
            forward(&graph, chunk.to_owned(), &rec, 0)?;
        }
        let ranges = rec.ranges.into_inner().expect("no panics while held");
        let mut layers = Vec::with_capacity(xl.len());
        for (l, &n) in xl.iter().enumerate() {
            let node = &graph.nodes[n];
            let (lo, hi) = ranges[l];
            let (input_scale, signed_input) = activation_scale(lo, hi);
            let compile_err = |e| NetworkError::Compile {
                layer: node.name.clone(),
                source: e,
            };
            let (groups, bias) = match &node.op {
                Op::Conv(c) => (
                    (0..c.groups)
                        .map(|g| {
                            quantize_per_channel(c.group_matrix(g).view()).map_err(compile_err)
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    c.bias.clone(),
                ),
                Op::Linear(lin) => (
                    vec![quantize_per_channel(lin.weight.view()).map_err(compile_err)?],
                    lin.bias.clone(),
                ),
                _ => unreachable!("crossbar layers are Conv or Linear"),
            };
            layers.push(QuantLayer {
                node: n,
                name: node.name.clone(),
                input_scale,
                signed_input,
                groups,
                bias,
            });
        }
        Ok(Self {
            graph,
            layers,
            node_to_layer,
        })
    }

    /// The crossbar-layer index of a node.
    #[must_use]
    pub fn layer_of(&self, node: usize) -> Option<usize> {
        self.node_to_layer[node]
    }

    /// Runs a batch with `backend` for the MACs; returns the output tensor and,
    /// per crossbar layer, the statistics of this batch (groups summed).
    ///
    /// # Errors
    /// Input shape or backend errors.
    pub fn forward(
        &self,
        x: Array2<f32>,
        backend: &impl MacBackend,
        batch_index: u64,
    ) -> Result<(Array2<f32>, Vec<Option<LayerStats>>), NetworkError> {
        let ev = self.forward_features(x, backend, batch_index)?;
        Ok((ev.outputs, ev.layer_stats))
    }

    /// As [`forward`](Self::forward), also returning the penultimate features
    /// (the last crossbar layer's input, `batch x numel`): the batch's
    /// [`Evaluation`](crate::Evaluation).
    ///
    /// # Errors
    /// Input shape or backend errors.
    pub fn forward_features(
        &self,
        x: Array2<f32>,
        backend: &impl MacBackend,
        batch_index: u64,
    ) -> Result<crate::Evaluation, NetworkError> {
        let batch = x.nrows();
        let exec = QuantExec {
            model: self,
            backend,
            stats: Mutex::new(vec![None; self.layers.len()]),
            capture: None,
        };
        let features = crate::eval::Features::last_layer(&self.graph, &exec);
        let y = forward(&self.graph, x, &features, batch_index)?;
        let f = features.take(batch);
        Ok(crate::Evaluation {
            outputs: y,
            layer_stats: exec.stats.into_inner().expect("no panics while held"),
            features: f,
        })
    }

    /// Runs a batch with exact MACs and returns every crossbar layer's 8-bit
    /// input vectors per group (for calibrating adaptive slicing).
    ///
    /// # Errors
    /// Input shape errors.
    pub fn capture_inputs(&self, x: Array2<f32>) -> Result<Vec<Vec<QInput>>, NetworkError> {
        let backend = ExactBackend::new(self);
        let exec = QuantExec {
            model: self,
            backend: &backend,
            stats: Mutex::new(vec![None; self.layers.len()]),
            capture: Some(Mutex::new(
                self.layers
                    .iter()
                    .map(|l| vec![None; l.groups.len()])
                    .collect(),
            )),
        };
        forward(&self.graph, x, &exec, 0)?;
        let cap = exec
            .capture
            .expect("set")
            .into_inner()
            .expect("no panics while held");
        Ok(cap
            .into_iter()
            .map(|g| g.into_iter().map(|q| q.expect("every layer ran")).collect())
            .collect())
    }
}

struct QuantExec<'a, B> {
    model: &'a QuantModel,
    backend: &'a B,
    stats: Mutex<Vec<Option<LayerStats>>>,
    capture: Option<Mutex<Vec<Vec<Option<QInput>>>>>,
}

pub(crate) fn quantize_input(x: ArrayView2<'_, f32>, scale: f32, signed: bool) -> QInput {
    // Clamped before the cast, so it is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    if signed {
        QInput::Signed(par_map(x, |v| {
            (v / scale).round().clamp(-127.0, 127.0) as i8
        }))
    } else {
        QInput::Unsigned(par_map(x, |v| (v / scale).round().clamp(0.0, 255.0) as u8))
    }
}

/// `x.mapv(f)` on all threads (elementwise, so the result does not depend on them).
fn par_map<T: Send>(x: ArrayView2<'_, f32>, f: impl Fn(f32) -> T + Sync) -> Array2<T> {
    let x = x.as_standard_layout();
    let data: Vec<T> = x
        .as_slice()
        .expect("standard layout")
        .par_iter()
        .with_min_len(1 << 14)
        .map(|&v| f(v))
        .collect();
    Array2::from_shape_vec(x.raw_dim(), data).expect("same shape")
}

impl<B: MacBackend> QuantExec<'_, B> {
    fn run_group(
        &self,
        layer: usize,
        group: usize,
        q: QInput,
        batch_index: u64,
    ) -> Result<Array2<f32>, NetworkError> {
        let ql = &self.model.layers[layer];
        let (y, st) = self.backend.mac(layer, group, &q, batch_index)?;
        if let Some(cap) = &self.capture {
            cap.lock().expect("no panics while held")[layer][group] = Some(q);
        }
        if let Some(st) = st {
            let mut s = self.stats.lock().expect("no panics while held");
            match &mut s[layer] {
                Some(acc) => {
                    *acc += &st;
                    // Groups split the same vectors' outputs: count vectors once per layer.
                    acc.vectors = st.vectors;
                }
                slot @ None => *slot = Some(st),
            }
        }
        let scales = &ql.groups[group].scales;
        let sx = f64::from(ql.input_scale);
        let mut out = Array2::<f32>::zeros(y.dim());
        for (yrow, mut orow) in y.rows().into_iter().zip(out.rows_mut()) {
            for ((o, &v), &sw) in orow.iter_mut().zip(yrow).zip(scales) {
                // Exact integer times the combined scale; the narrowing is the
                // requantisation's own rounding.
                #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
                let r = (v as f64 * f64::from(sw) * sx) as f32;
                *o = r;
            }
        }
        Ok(out)
    }
}

impl<B: MacBackend> LayerExec for QuantExec<'_, B> {
    fn crossbar_layer(
        &self,
        node_index: usize,
        node: &Node,
        x: ArrayView2<'_, f32>,
        in_shape: &Shape,
        out_shape: &Shape,
        batch_index: u64,
    ) -> Result<Array2<f32>, NetworkError> {
        let layer = self.model.node_to_layer[node_index].expect("crossbar layer");
        let ql = &self.model.layers[layer];
        let q = quantize_input(x, ql.input_scale, ql.signed_input);
        match &node.op {
            Op::Conv(c) => {
                let chw = (in_shape[0], in_shape[1], in_shape[2]);
                let (m, oh, ow) = (out_shape[0], out_shape[1], out_shape[2]);
                let mut out = Array2::<f32>::zeros((x.nrows(), m * oh * ow));
                for g in 0..c.groups {
                    let cols = match &q {
                        QInput::Unsigned(v) => QInput::Unsigned(ops::im2col(v.view(), chw, c, g)),
                        QInput::Signed(v) => QInput::Signed(ops::im2col(v.view(), chw, c, g)),
                    };
                    let res = self.run_group(layer, g, cols, batch_index)?;
                    ops::scatter_group(&mut out, res.view(), g, (m, oh, ow), c.groups);
                }
                ops::add_channel_bias(&mut out, &ql.bias, oh * ow);
                Ok(out)
            }
            Op::Linear(_) => {
                let mut y = self.run_group(layer, 0, q, batch_index)?;
                for mut row in y.rows_mut() {
                    for (v, b) in row.iter_mut().zip(&ql.bias) {
                        *v += b;
                    }
                }
                Ok(y)
            }
            other => unreachable!("{} is not a crossbar layer", other.kind()),
        }
    }
}
