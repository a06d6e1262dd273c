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

/// `x`'s values, as a new array in standard layout, put through `f` in place
/// in parts on all threads (`f` sees a part at a time).
pub(crate) fn par_in_place(x: &ArrayD<f32>, f: impl Fn(&mut [f32]) + Sync + Send) -> ArrayD<f32> {
    const PART: usize = crate::exec::PARALLEL_VALUES;
    let mut out = x.as_standard_layout().into_owned();
    out.as_slice_mut()
        .expect("standard layout")
        .par_chunks_mut(PART)
        .for_each(f);
    out
}

pub mod attention;
pub mod control;
pub mod detect;
pub mod einsum;
pub mod elementwise;
mod erf;
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
/// The common shapes (equal; one side a single value; one side the other's
/// trailing axes, as a bias row) go over flat slices, in parts on all
/// threads, where `f` inlines into a loop that vectorises; the rest through
/// ndarray's broadcast views. Every output is `f` of the same pair of values
/// either way.
///
/// # Errors
/// Incompatible shapes.
pub fn zip_f32(
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Result<ArrayD<f32>, OpError> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    if let (Some(xs), Some(ys)) = (a.as_slice(), b.as_slice()) {
        // `a`'s values with `b`'s repeating every `ys.len()` (or the reverse).
        let flat = if a.shape() == shape.as_slice() && trails(b.shape(), &shape) {
            Some(flat_zip(xs, ys, &f))
        } else if b.shape() == shape.as_slice() && trails(a.shape(), &shape) {
            Some(flat_zip(ys, xs, |q, p| f(p, q)))
        } else {
            None
        };
        if let Some(out) = flat {
            return Ok(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("same size"));
        }
    }
    let (av, bv) = (
        a.broadcast(IxDyn(&shape)).expect("broadcastable"),
        b.broadcast(IxDyn(&shape)).expect("broadcastable"),
    );
    Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
}

/// Whether an array of `part`'s shape, broadcast to `whole`, repeats its
/// flat values whole (`part` is `whole`'s trailing axes, after any leading
/// ones, or a single value).
fn trails(part: &[usize], whole: &[usize]) -> bool {
    let lead = part.iter().take_while(|&&d| d == 1).count();
    let rest = &part[lead..];
    rest.len() <= whole.len() && whole[whole.len() - rest.len()..] == *rest
}

/// `f(x, y)` for each `x` of `xs` and the `y` of `ys` at the same place in
/// its period (`ys` repeats every `ys.len()` values; `xs.len()` a multiple
/// of it), in parts on all threads.
fn flat_zip(xs: &[f32], ys: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    let mut out = vec![0f32; xs.len()];
    let period = ys.len().max(1);
    // Whole periods per part (at least one).
    let part = (crate::exec::PARALLEL_VALUES / period).max(1) * period;
    out.par_chunks_mut(part)
        .zip(xs.par_chunks(part))
        .for_each(|(o, x)| {
            if let [y] = ys {
                let y = *y;
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = f(x, y);
                }
            } else {
                for (o, x) in o.chunks_exact_mut(period).zip(x.chunks_exact(period)) {
                    for ((o, &x), &y) in o.iter_mut().zip(x).zip(ys) {
                        *o = f(x, y);
                    }
                }
            }
        });
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    /// [`zip_f32`]'s flat paths give what ndarray's broadcast views give, for
    /// every kind of shape pair they take and some they leave.
    #[test]
    fn zip_f32_equals_the_broadcast_views() {
        let pairs: [(&[usize], &[usize]); 11] = [
            (&[3, 40_000], &[3, 40_000]),
            (&[2, 3, 5], &[5]),
            (&[5], &[2, 3, 5]),
            (&[2, 3, 5], &[1, 3, 5]),
            (&[70_000], &[1]),
            (&[], &[4, 2]),
            (&[4, 2], &[]),
            (&[2, 3, 5], &[3, 1]),
            (&[2, 1, 5], &[3, 1]),
            (&[0, 5], &[5]),
            (&[9, 33_000], &[1, 33_000]),
        ];
        for (sa, sb) in pairs {
            let fill = |shape: &[usize], k: f32| {
                let n: usize = shape.iter().product();
                ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f32 * k - 7.0).collect())
                    .expect("shape")
            };
            let (a, b) = (fill(sa, 0.37), fill(sb, -1.3));
            // `a - b`, not symmetric, so a swapped pair would show.
            let got = zip_f32(&a, &b, |p, q| p - q).expect("broadcast");
            let shape = broadcast_shape(sa, sb).expect("broadcast");
            let want = Zip::from(&a.broadcast(IxDyn(&shape)).expect("a"))
                .and(&b.broadcast(IxDyn(&shape)).expect("b"))
                .map_collect(|&p, &q| p - q);
            assert_eq!(got, want, "{sa:?} and {sb:?}");
        }
        // A transposed (not standard layout) input takes the general path.
        let a = ArrayD::from_shape_vec(IxDyn(&[3, 4]), (0..12).map(|i| i as f32).collect())
            .expect("shape");
        // `a`'s values, laid out column by column.
        let t = a.t().as_standard_layout().into_owned().reversed_axes();
        assert!(t.as_slice().is_none());
        let got = zip_f32(&t, &a, |p, q| p * 10.0 + q).expect("same shape");
        assert_eq!(got, a.mapv(|v| v * 11.0));
    }
}
