//! Running a graph on a batch: the digital ops here, the crossbar layers
//! (Conv, Linear) through a [`LayerExec`], so the float32 reference, the 8-bit
//! digital reference and every simulated design share one code path.

use ndarray::{Array2, ArrayView2, linalg::general_mat_mul};

use crate::NetworkError;
use crate::graph::{Graph, LinearSpec, Node, Op, Shape};
use crate::ops;

/// Executes the crossbar layers of a graph.
pub trait LayerExec: Sync {
    /// Runs Conv/Linear node `node_index` on the batch `x` (`batch x numel(in_shape)`,
    /// float), returning `batch x numel(out_shape)` floats, bias included.
    /// `batch_index` identifies the batch (noise streams).
    ///
    /// # Errors
    /// Whatever the executor's backend reports.
    fn crossbar_layer(
        &self,
        node_index: usize,
        node: &Node,
        x: ArrayView2<'_, f32>,
        in_shape: &Shape,
        out_shape: &Shape,
        batch_index: u64,
    ) -> Result<Array2<f32>, NetworkError>;
}

/// Exact float32 execution: the float reference.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloatExec;

fn chw(shape: &Shape) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2])
}

impl LayerExec for FloatExec {
    fn crossbar_layer(
        &self,
        _node_index: usize,
        node: &Node,
        x: ArrayView2<'_, f32>,
        in_shape: &Shape,
        _out_shape: &Shape,
        _batch_index: u64,
    ) -> Result<Array2<f32>, NetworkError> {
        Ok(match &node.op {
            Op::Conv(c) => ops::conv_f32(x, chw(in_shape), c),
            Op::Linear(l) => linear_f32(x, l),
            other => unreachable!("{} is not a crossbar layer", other.kind()),
        })
    }
}

/// `x W^T + b`.
#[must_use]
pub fn linear_f32(x: ArrayView2<'_, f32>, l: &LinearSpec) -> Array2<f32> {
    let mut y = Array2::<f32>::zeros((x.nrows(), l.weight.nrows()));
    general_mat_mul(1.0, &x, &l.weight.t(), 0.0, &mut y);
    for mut row in y.rows_mut() {
        for (v, b) in row.iter_mut().zip(&l.bias) {
            *v += b;
        }
    }
    y
}

/// Runs `graph` on a batch (`batch x numel(input)`), returning the output tensor.
///
/// # Errors
/// A batch of the wrong width, or an executor error.
pub fn forward(
    graph: &Graph,
    x: Array2<f32>,
    exec: &impl LayerExec,
    batch_index: u64,
) -> Result<Array2<f32>, NetworkError> {
    if x.ncols() != graph.numel(graph.input) {
        return Err(NetworkError::BadInput(format!(
            "images have {} values, the model's input `{}` has shape {:?} ({} values)",
            x.ncols(),
            graph.tensors[graph.input].name,
            graph.tensors[graph.input].shape,
            graph.numel(graph.input)
        )));
    }
    let last = graph.last_use();
    let mut live: Vec<Option<Array2<f32>>> = vec![None; graph.tensors.len()];
    live[graph.input] = Some(x);
    for (i, node) in graph.nodes.iter().enumerate() {
        let shape = |t: usize| &graph.tensors[t].shape;
        let get = |t: usize| live[t].as_ref().expect("topological order").view();
        let a = node.inputs[0];
        let out = match &node.op {
            Op::Conv(_) | Op::Linear(_) => {
                exec.crossbar_layer(i, node, get(a), shape(a), shape(node.output), batch_index)?
            }
            Op::Add => &get(a) + &get(node.inputs[1]),
            Op::Relu => get(a).mapv(|v| v.max(0.0)),
            Op::Clip { min, max } => get(a).mapv(|v| v.clamp(*min, *max)),
            Op::MaxPool(p) => ops::pool(get(a), chw(shape(a)), p, true),
            Op::AvgPool(p) => ops::pool(get(a), chw(shape(a)), p, false),
            Op::GlobalAvgPool => {
                let s = shape(a);
                ops::global_avg_pool(get(a), s[0], s[1..].iter().product())
            }
            Op::Flatten | Op::Reshape(_) => get(a).to_owned(),
            Op::Concat(axis) => {
                let views: Vec<_> = node.inputs.iter().map(|&t| get(t)).collect();
                let shapes: Vec<_> = node.inputs.iter().map(|&t| shape(t).clone()).collect();
                ops::concat(&views, &shapes, *axis)
            }
            Op::Softmax(axis) => ops::softmax(get(a), shape(a), *axis),
        };
        live[node.output] = Some(out);
        for &t in &node.inputs {
            if last[t] == Some(i) && t != graph.output {
                live[t] = None;
            }
        }
    }
    live[graph.output]
        .take()
        .ok_or_else(|| NetworkError::BadModel("the output tensor is never computed".into()))
}
