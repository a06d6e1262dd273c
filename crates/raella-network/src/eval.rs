//! Evaluating a network over a data set: batches in parallel, results and
//! statistics combined in batch order (so they do not depend on scheduling).

use ndarray::{Array2, ArrayView2, Axis, concatenate, s};
use raella_runtime::LayerStats;
use rayon::prelude::*;

use std::sync::Mutex;

use crate::NetworkError;
use crate::forward::{FloatExec, LayerExec, forward};
use crate::graph::{Graph, Node, Shape};
use crate::quant::{MacBackend, QuantModel};

/// Images per batch: bounds memory (activations of one batch per thread) while
/// keeping the crossbar matrix products large.
pub const BATCH_IMAGES: usize = 64;

/// Outputs of a whole evaluation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Final outputs (`images x classes`), before any softmax the graph omits.
    pub outputs: Array2<f32>,
    /// Per crossbar layer, statistics over all images (simulated designs only).
    pub layer_stats: Vec<Option<LayerStats>>,
    /// The penultimate features: the last crossbar layer's input per image
    /// (`images x numel`), as it reached that layer (before its 8-bit rounding).
    pub features: Array2<f32>,
}

/// Delegates to `inner` and keeps the input of crossbar node `node`.
pub(crate) struct Features<'a, E> {
    pub(crate) inner: &'a E,
    pub(crate) node: Option<usize>,
    pub(crate) got: Mutex<Option<Array2<f32>>>,
}

impl<'a, E> Features<'a, E> {
    /// Captures the last crossbar layer's input of `graph`.
    pub(crate) fn last_layer(graph: &Graph, inner: &'a E) -> Self {
        Self {
            inner,
            node: graph.crossbar_layers().last().copied(),
            got: Mutex::new(None),
        }
    }

    /// The captured features (`batch x 0` when the graph has no crossbar layer).
    pub(crate) fn take(self, batch: usize) -> Array2<f32> {
        self.got
            .into_inner()
            .expect("no panics while held")
            .unwrap_or_else(|| Array2::zeros((batch, 0)))
    }
}

impl<E: LayerExec> LayerExec for Features<'_, E> {
    fn crossbar_layer(
        &self,
        node_index: usize,
        node: &Node,
        x: ArrayView2<'_, f32>,
        in_shape: &Shape,
        out_shape: &Shape,
        batch_index: u64,
    ) -> Result<Array2<f32>, NetworkError> {
        if Some(node_index) == self.node {
            *self.got.lock().expect("no panics while held") = Some(x.to_owned());
        }
        self.inner
            .crossbar_layer(node_index, node, x, in_shape, out_shape, batch_index)
    }
}

/// Adds one part's per-layer statistics (batch, document) to `acc`, in order.
pub(crate) fn add_layer_stats(acc: &mut [Option<LayerStats>], part: &[Option<LayerStats>]) {
    for (a, s) in acc.iter_mut().zip(part) {
        if let Some(s) = s {
            match a {
                Some(a) => *a += s,
                None => *a = Some(s.clone()),
            }
        }
    }
}

fn concat(parts: &[Array2<f32>]) -> Result<Array2<f32>, NetworkError> {
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    concatenate(Axis(0), &views).map_err(|e| NetworkError::BadInput(e.to_string()))
}

fn batches(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .step_by(BATCH_IMAGES)
        .map(|s| (s, (s + BATCH_IMAGES).min(n)))
        .collect()
}

/// The float32 reference on `images` (`images x numel(input)`).
///
/// # Errors
/// Input shape errors.
pub fn eval_float(graph: &Graph, images: ArrayView2<'_, f32>) -> Result<Array2<f32>, NetworkError> {
    Ok(eval_float_features(graph, images)?.0)
}

/// The float32 reference on `images`, with its penultimate features (see
/// [`Evaluation::features`]).
///
/// # Errors
/// Input shape errors.
pub fn eval_float_features(
    graph: &Graph,
    images: ArrayView2<'_, f32>,
) -> Result<(Array2<f32>, Array2<f32>), NetworkError> {
    let parts: Vec<(Array2<f32>, Array2<f32>)> = batches(images.nrows())
        .par_iter()
        .map(|&(a, b)| {
            let exec = Features::last_layer(graph, &FloatExec);
            let y = forward(graph, images.slice(s![a..b, ..]).to_owned(), &exec, 0)?;
            Ok((y, exec.take(b - a)))
        })
        .collect::<Result<_, NetworkError>>()?;
    let (ys, fs): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    Ok((concat(&ys)?, concat(&fs)?))
}

/// The quantised network with `backend` for the MACs (exact: the 8-bit digital
/// reference; crossbars: a simulated design).
///
/// # Errors
/// Input shape or backend errors.
pub fn eval_quant(
    model: &QuantModel,
    backend: &impl MacBackend,
    images: ArrayView2<'_, f32>,
) -> Result<Evaluation, NetworkError> {
    let parts: Vec<Evaluation> = batches(images.nrows())
        .par_iter()
        .enumerate()
        .map(|(i, &(a, b))| {
            model.forward_features(images.slice(s![a..b, ..]).to_owned(), backend, i as u64)
        })
        .collect::<Result<_, _>>()?;
    let mut layer_stats: Vec<Option<LayerStats>> = vec![None; model.layers.len()];
    for p in &parts {
        add_layer_stats(&mut layer_stats, &p.layer_stats);
    }
    let (ys, fs): (Vec<_>, Vec<_>) = parts.into_iter().map(|p| (p.outputs, p.features)).unzip();
    Ok(Evaluation {
        outputs: concat(&ys)?,
        layer_stats,
        features: concat(&fs)?,
    })
}

/// Mean cosine similarity of corresponding rows (a row pair with a zero
/// vector counts 1 when both are zero, else 0).
#[must_use]
pub fn mean_row_cosine(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> f64 {
    let n = a.nrows().min(b.nrows());
    if n == 0 {
        return 0.0;
    }
    let total: f64 = a
        .rows()
        .into_iter()
        .zip(b.rows())
        .map(|(x, y)| {
            let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
            for (&p, &q) in x.iter().zip(y) {
                let (p, q) = (f64::from(p), f64::from(q));
                xy += p * q;
                xx += p * p;
                yy += q * q;
            }
            match (xx > 0.0, yy > 0.0) {
                (true, true) => xy / (xx.sqrt() * yy.sqrt()),
                (false, false) => 1.0,
                _ => 0.0,
            }
        })
        .sum();
    total / n as f64
}

/// Index of the largest value per row (first on ties).
#[must_use]
pub fn argmax_rows(x: ArrayView2<'_, f32>) -> Vec<usize> {
    x.rows()
        .into_iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0
        })
        .collect()
}
