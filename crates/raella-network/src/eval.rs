//! Evaluating a network over a data set given as batches of model inputs:
//! batches in parallel, results and statistics combined in batch order (so
//! they do not depend on scheduling).

use ndarray::{Array2, ArrayD, ArrayView2, Axis, concatenate};
use raella_onnx::{FloatRunner, Graph, LayerRunner, RunProfile, Tensor, Vectors, WeightLayer};
use raella_runtime::LayerStats;
use rayon::prelude::*;

use std::sync::Mutex;

use crate::NetworkError;
use crate::quant::{BatchRun, MacBackend, QuantModel};

/// Items (images) per batch that callers should use for image models: bounds
/// memory (activations of one batch per thread) while keeping the crossbar
/// matrix products large.
pub const BATCH_ITEMS: usize = 64;

/// The last weight layer's input per item (`items x numel`), as it reached
/// that layer (before its 8-bit rounding): the penultimate features.
pub type Features = Option<Array2<f32>>;

/// Outputs of a whole evaluation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Per batch, the graph outputs in order.
    pub outputs: Vec<Vec<Tensor>>,
    /// Per weight layer, statistics over all batches (simulated designs only).
    pub layer_stats: Vec<Option<LayerStats>>,
    /// Per batch, the last weight layer's input tensor.
    pub features: Vec<Option<ArrayD<f32>>>,
    /// Per weight layer, its input vectors over all batches (of one group).
    pub vectors: Vec<usize>,
    /// Where the time went, summed over batches (thread time).
    pub times: RunProfile,
}

/// `rows x rest` of a tensor whose first dimension is the items.
fn item_rows(t: &ArrayD<f32>) -> Result<Array2<f32>, NetworkError> {
    let items = t.shape().first().copied().unwrap_or(1).max(1);
    let rest = t.len() / items;
    t.as_standard_layout()
        .into_owned()
        .into_shape_with_order((items, rest))
        .map_err(|e| NetworkError::BadInput(e.to_string()))
}

fn stack(parts: Vec<Array2<f32>>, what: &str) -> Result<Array2<f32>, NetworkError> {
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    concatenate(Axis(0), &views).map_err(|_| {
        NetworkError::BadInput(format!(
            "{what} differ in size between batches (e.g. documents of different lengths)"
        ))
    })
}

impl Evaluation {
    /// Output `k` of every batch, one row per item (`items x rest`), batches in order.
    ///
    /// # Errors
    /// No such output, a non-float output, or sizes that differ between batches.
    pub fn output_rows(&self, k: usize) -> Result<Array2<f32>, NetworkError> {
        let parts = self
            .outputs
            .iter()
            .map(|b| {
                let t = b.get(k).ok_or_else(|| {
                    NetworkError::BadInput(format!("the model has no output {k}"))
                })?;
                item_rows(&t.to_f32())
            })
            .collect::<Result<Vec<_>, _>>()?;
        stack(parts, &format!("output {k}'s items"))
    }

    /// The penultimate features, one row per item; `None` when the model has no
    /// weight layer or their size differs between batches.
    #[must_use]
    pub fn feature_rows(&self) -> Features {
        let parts: Option<Vec<Array2<f32>>> = self
            .features
            .iter()
            .map(|f| f.as_ref().and_then(|t| item_rows(t).ok()))
            .collect();
        parts.and_then(|p| stack(p, "features").ok())
    }
}

/// Adds one part's per-layer statistics (a batch) to `acc`, in order.
fn add_layer_stats(acc: &mut [Option<LayerStats>], part: &[Option<LayerStats>]) {
    for (a, s) in acc.iter_mut().zip(part) {
        if let Some(s) = s {
            match a {
                Some(a) => *a += s,
                None => *a = Some(s.clone()),
            }
        }
    }
}

/// Float execution that keeps the last weight layer's input and counts vectors.
struct FloatFeatures {
    last: usize,
    got: Mutex<Option<ArrayD<f32>>>,
    vectors: Mutex<Vec<usize>>,
}

impl LayerRunner for FloatFeatures {
    fn observe_input(&self, index: usize, x: &ArrayD<f32>) {
        if index == self.last {
            *self.got.lock().expect("no panics while held") = Some(x.clone());
        }
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
            self.vectors.lock().expect("no panics while held")[index] += x.nrows();
        }
        FloatRunner.matmul(index, layer, group, x, batch)
    }
}

/// The float32 reference on `batches` (each one tensor per graph input).
///
/// # Errors
/// Input or node errors.
pub fn eval_float(graph: &Graph, batches: &[Vec<Tensor>]) -> Result<Evaluation, NetworkError> {
    // Per batch: the outputs, the times, the captured features and the vectors per layer.
    type Part = (Vec<Tensor>, RunProfile, Option<ArrayD<f32>>, Vec<usize>);
    let parts: Vec<Part> = batches
        .par_iter()
        .map(|b| {
            let runner = FloatFeatures {
                last: graph.layers.len().wrapping_sub(1),
                got: Mutex::new(None),
                vectors: Mutex::new(vec![0; graph.layers.len()]),
            };
            let (y, t) = raella_onnx::run_timed(graph, b.clone(), &runner, 0)?;
            Ok((
                y,
                t,
                runner.got.into_inner().expect("no panics while held"),
                runner.vectors.into_inner().expect("no panics while held"),
            ))
        })
        .collect::<Result<_, NetworkError>>()?;
    let mut vectors = vec![0; graph.layers.len()];
    let mut outputs = Vec::with_capacity(parts.len());
    let mut features = Vec::with_capacity(parts.len());
    let mut times = RunProfile::default();
    for (y, t, f, v) in parts {
        times += t;
        for (a, b) in vectors.iter_mut().zip(v) {
            *a += b;
        }
        outputs.push(y);
        features.push(f);
    }
    Ok(Evaluation {
        outputs,
        layer_stats: vec![None; graph.layers.len()],
        features,
        vectors,
        times,
    })
}

/// The quantised network with `backend` for the MACs (exact: the 8-bit digital
/// reference; crossbars: a simulated design). Batch `i` runs with batch index
/// `i` (its noise streams).
///
/// # Errors
/// Input or backend errors.
pub fn eval_quant(
    model: &QuantModel,
    backend: &impl MacBackend,
    batches: &[Vec<Tensor>],
) -> Result<Evaluation, NetworkError> {
    let parts = eval_quant_batches(model, backend, batches, 0)?;
    Ok(Evaluation::from_batch_runs(model.layers.len(), parts))
}

/// The batches of [`eval_quant`] one by one, not yet combined: `batches[i]`
/// runs with batch index `first + i`, so a contiguous range of an
/// evaluation's batches gives exactly the runs (outputs, statistics, noise
/// draws) the whole evaluation has for those batches.
///
/// # Errors
/// Input or backend errors.
pub fn eval_quant_batches(
    model: &QuantModel,
    backend: &impl MacBackend,
    batches: &[Vec<Tensor>],
    first: u64,
) -> Result<Vec<BatchRun>, NetworkError> {
    batches
        .par_iter()
        .enumerate()
        .map(|(i, b)| model.run(b.clone(), backend, first + i as u64))
        .collect()
}

impl Evaluation {
    /// Combines batch runs of a network of `layers` weight layers, in the
    /// order given: outputs and features listed, per-layer statistics added
    /// batch after batch (the order fixes the float sums), times added.
    #[must_use]
    pub fn from_batch_runs(layers: usize, parts: Vec<BatchRun>) -> Self {
        let mut layer_stats: Vec<Option<LayerStats>> = vec![None; layers];
        let mut outputs = Vec::with_capacity(parts.len());
        let mut features = Vec::with_capacity(parts.len());
        let mut times = RunProfile::default();
        for r in parts {
            times += r.times;
            add_layer_stats(&mut layer_stats, &r.stats);
            outputs.push(r.outputs);
            features.push(r.features);
        }
        let vectors = layer_stats
            .iter()
            .map(|s| {
                s.as_ref()
                    .map_or(0, |s| usize::try_from(s.vectors).unwrap_or(usize::MAX))
            })
            .collect();
        Self {
            outputs,
            layer_stats,
            features,
            vectors,
            times,
        }
    }
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
