//! Evaluating a network over a data set: batches in parallel, results and
//! statistics combined in batch order (so they do not depend on scheduling).

use ndarray::{Array2, ArrayView2, Axis, concatenate, s};
use raella_runtime::LayerStats;
use rayon::prelude::*;

use crate::NetworkError;
use crate::forward::{FloatExec, forward};
use crate::graph::Graph;
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
    let parts: Vec<Array2<f32>> = batches(images.nrows())
        .par_iter()
        .map(|&(a, b)| forward(graph, images.slice(s![a..b, ..]).to_owned(), &FloatExec, 0))
        .collect::<Result<_, _>>()?;
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    concatenate(Axis(0), &views).map_err(|e| NetworkError::BadInput(e.to_string()))
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
    let parts: Vec<(Array2<f32>, Vec<Option<LayerStats>>)> = batches(images.nrows())
        .par_iter()
        .enumerate()
        .map(|(i, &(a, b))| model.forward(images.slice(s![a..b, ..]).to_owned(), backend, i as u64))
        .collect::<Result<_, _>>()?;
    let views: Vec<_> = parts.iter().map(|p| p.0.view()).collect();
    let outputs =
        concatenate(Axis(0), &views).map_err(|e| NetworkError::BadInput(e.to_string()))?;
    let mut layer_stats: Vec<Option<LayerStats>> = vec![None; model.layers.len()];
    for (_, st) in &parts {
        for (acc, s) in layer_stats.iter_mut().zip(st) {
            if let Some(s) = s {
                match acc {
                    Some(a) => *a += s,
                    None => *acc = Some(s.clone()),
                }
            }
        }
    }
    Ok(Evaluation {
        outputs,
        layer_stats,
    })
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
