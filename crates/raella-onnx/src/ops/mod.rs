//! The digital operators: a [`Kernel`] per node, built from its attributes and
//! the model's opset, and a registry over the operator families.
//!
//! Every kernel takes its inputs as tensors with their own shapes (nothing is
//! fixed at import but the attributes), so shape computations inside a graph
//! run as ordinary integer ops. Kernels check what they read and return an
//! [`OpError`] the executor prefixes with the node.

use std::fmt;

use ndarray::{ArrayD, IxDyn, Zip};
use rayon::prelude::*;

use crate::attrs::Attrs;
use crate::tensor::{DType, Data, Tensor};
use crate::{OpError, op_bail};

/// Applies generic code to a tensor's values, float or integer, keeping its dtype
/// (shared by the `index` and `shape` families).
macro_rules! same_kind {
    ($t:expr, |$a:ident| $body:expr) => {{
        let t: &$crate::tensor::Tensor = $t;
        let data = match t.data() {
            $crate::tensor::Data::Float($a) => $crate::tensor::Data::Float($body),
            $crate::tensor::Data::Int($a) => $crate::tensor::Data::Int($body),
        };
        $crate::ops::like(t.dtype(), data)
    }};
}

/// `f` on every element, on all threads in parts of
/// [`crate::exec::PARALLEL_VALUES`] (element-wise, so independent of them;
/// a small tensor is one part, on the calling thread). Each part is a loop
/// over plain slices, so it vectorises.
pub(crate) fn par_map<T: Send + Copy + Default>(
    x: &ArrayD<f32>,
    f: impl Fn(f32) -> T + Sync,
) -> ArrayD<T> {
    const PART: usize = crate::exec::PARALLEL_VALUES;
    let x = x.as_standard_layout();
    let src = x.as_slice().expect("standard layout");
    let mut data = vec![T::default(); src.len()];
    data.par_chunks_mut(PART)
        .zip(src.par_chunks(PART))
        .for_each(|(o, i)| {
            for (o, &v) in o.iter_mut().zip(i) {
                *o = f(v);
            }
        });
    ArrayD::from_shape_vec(x.raw_dim(), data).expect("same shape")
}

pub mod attention;
pub mod control;
pub mod detect;
pub mod einsum;
pub mod elementwise;
pub mod index;
pub mod loss;
pub mod nn;
pub mod norm;
pub mod quant;
pub mod reduce;
pub mod resize;
pub mod rnn;
pub mod sample;
pub mod shape;
pub mod window;

/// A digital operator, ready to run.
pub trait Kernel: Send + Sync + fmt::Debug {
    /// Runs the operator. `inputs[i]` is `None` for an omitted optional input.
    ///
    /// # Errors
    /// Inputs of the wrong type, count or shape.
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError>;

    /// False for kernels whose output is not a function of their inputs
    /// (random ops): they are never folded. True for everything supported.
    fn deterministic(&self) -> bool {
        true
    }
}

/// Ops resolved before kernels exist (the importer handles them).
pub const IMPORT_OPS: [&str; 1] = ["Constant"];

/// Every supported op type, sorted (the weight-layer ops included).
#[must_use]
pub fn supported_ops() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = elementwise::OPS
        .iter()
        .chain(shape::OPS)
        .chain(index::OPS)
        .chain(loss::OPS)
        .chain(attention::OPS)
        .chain(control::OPS)
        .chain(detect::OPS)
        .chain(einsum::OPS)
        .chain(reduce::OPS)
        .chain(nn::OPS)
        .chain(norm::OPS)
        .chain(quant::OPS)
        .chain(resize::OPS)
        .chain(rnn::OPS)
        .chain(sample::OPS)
        .chain(window::OPS)
        .chain(IMPORT_OPS.iter())
        .copied()
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// What a kernel's builder knows besides the attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// The model's default-domain opset.
    pub opset: i64,
    /// The number of outputs the node declares.
    pub outputs: usize,
}

/// Builds the kernel of an op.
///
/// # Errors
/// An unsupported op (naming the supported ones) or bad attributes.
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Box<dyn Kernel>, OpError> {
    if a.has_subgraph() {
        op_bail!("control flow (`{op}` with a subgraph) is not supported");
    }
    for family in [
        elementwise::build,
        shape::build,
        index::build,
        loss::build,
        attention::build,
        detect::build,
        einsum::build,
        reduce::build,
        nn::build,
        norm::build,
        quant::build,
        resize::build,
        rnn::build,
        sample::build,
        window::build,
    ] {
        if let Some(k) = family(op, a, ctx)? {
            return Ok(k);
        }
    }
    Err(OpError(format!(
        "unsupported op `{op}` (supported: {})",
        supported_ops().join(", ")
    )))
}

/// Input `i`, required.
///
/// # Errors
/// Missing.
pub fn arg<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor, OpError> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| OpError(format!("input {i} is missing")))
}

/// Input `i`, optional.
#[must_use]
pub fn opt<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// An axis in `[-rank, rank)` as an index.
///
/// # Errors
/// Out of range.
pub fn axis(a: i64, rank: usize) -> Result<usize, OpError> {
    let r = i64::try_from(rank).unwrap_or(i64::MAX);
    if a < -r || a >= r {
        op_bail!("axis {a} is out of range for rank {rank}");
    }
    Ok(usize::try_from(if a < 0 { a + r } else { a }).expect("checked"))
}

/// The numpy broadcast of two shapes.
///
/// # Errors
/// Incompatible shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => op_bail!("shapes {a:?} and {b:?} do not broadcast"),
        };
    }
    crate::tensor::checked_numel(&out)?;
    Ok(out)
}

/// `f` over two float arrays, broadcast.
///
/// # Errors
/// Incompatible shapes.
pub fn zip_f32(
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Result<ArrayD<f32>, OpError> {
    if a.shape() == b.shape() {
        let mut out = a.clone();
        Zip::from(&mut out).and(b).for_each(|x, &y| *x = f(*x, y));
        return Ok(out);
    }
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let (av, bv) = (
        a.broadcast(IxDyn(&shape)).expect("broadcastable"),
        b.broadcast(IxDyn(&shape)).expect("broadcastable"),
    );
    Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
}

/// `f` over two integer arrays, broadcast.
///
/// # Errors
/// Incompatible shapes.
pub fn zip_i64<T: Clone>(
    a: &ArrayD<i64>,
    b: &ArrayD<i64>,
    f: impl Fn(i64, i64) -> T,
) -> Result<ArrayD<T>, OpError> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let (av, bv) = (
        a.broadcast(IxDyn(&shape)).expect("broadcastable"),
        b.broadcast(IxDyn(&shape)).expect("broadcastable"),
    );
    Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
}

/// Both inputs' values as the same kind (the second cast to the first's type
/// when they differ, as ONNX requires equal types; a mismatch is an error).
///
/// # Errors
/// Different dtypes.
pub fn same_type<'a>(a: &'a Tensor, b: &'a Tensor) -> Result<(&'a Data, &'a Data), OpError> {
    if a.dtype() != b.dtype() {
        op_bail!(
            "inputs of different types: {} and {}",
            a.dtype().name(),
            b.dtype().name()
        );
    }
    Ok((a.data(), b.data()))
}

/// A result tensor of the same kind as `like`: floats keep its float type, ints its int type.
#[must_use]
pub fn like(like: DType, data: Data) -> Tensor {
    match data {
        Data::Float(a) => Tensor::float(a, if like.is_float() { like } else { DType::F32 }),
        Data::Int(a) => Tensor::int(a, if like.is_float() { DType::I64 } else { like }),
    }
}

/// `t` with its values in a new shape of the same size.
///
/// # Errors
/// A different number of elements.
pub fn reshape(t: &Tensor, shape: &[usize]) -> Result<Tensor, OpError> {
    let bad = |e: ndarray::ShapeError| {
        OpError(format!("cannot reshape {:?} to {shape:?}: {e}", t.shape()))
    };
    Ok(match t.data() {
        Data::Float(a) => Tensor::float(
            a.as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(shape))
                .map_err(bad)?,
            t.dtype(),
        ),
        Data::Int(a) => Tensor::int(
            a.as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(shape))
                .map_err(bad)?,
            t.dtype(),
        ),
    })
}

/// A `usize` from an `i64` that must be non-negative.
///
/// # Errors
/// Negative.
pub fn to_usize(v: i64, what: &str) -> Result<usize, OpError> {
    usize::try_from(v).map_err(|_| OpError(format!("{what} = {v} must be >= 0")))
}
