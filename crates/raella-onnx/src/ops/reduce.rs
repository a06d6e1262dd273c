//! Reductions: `ReduceMean/Sum/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare`
//! (axes as an attribute or, from the opset that moved them, an input),
//! `ArgMax/ArgMin`, `CumSum`, `CumProd`, `Det` (each matrix to a number).

use ndarray::{ArrayD, Axis, IxDyn};

use super::{Ctx, Kernel, arg, axis, opt};
use crate::attrs::Attrs;
use crate::tensor::{Data, Tensor};
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &[
    "ArgMax",
    "ArgMin",
    "CumProd",
    "CumSum",
    "Det",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Red {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

#[derive(Debug)]
struct Reduce {
    op: Red,
    /// Axes as an attribute (before the opset that made them an input).
    axes: Option<Vec<i64>>,
    axes_input: bool,
    keepdims: bool,
    noop_with_empty_axes: bool,
}

fn reduce_f32(a: &ArrayD<f32>, axes: &[usize], op: Red) -> ArrayD<f32> {
    let mut cur = a.clone();
    // Highest axis first, so lower indices stay valid.
    let mut sorted = axes.to_vec();
    sorted.sort_unstable_by(|x, y| y.cmp(x));
    match op {
        Red::L1 => cur.mapv_inplace(f32::abs),
        Red::L2 | Red::SumSquare => cur.mapv_inplace(|v| v * v),
        _ => {}
    }
    if op == Red::LogSumExp {
        // Stable: max + ln(sum(exp(x - max))).
        let mut m = cur.clone();
        for &ax in &sorted {
            m = m
                .fold_axis(Axis(ax), f32::NEG_INFINITY, |&a, &b| a.max(b))
                .insert_axis(Axis(ax));
        }
        let shifted = &cur - &m;
        let mut s = shifted.mapv(f32::exp);
        for &ax in &sorted {
            s = s.sum_axis(Axis(ax));
        }
        let mut mm = m;
        for &ax in &sorted {
            mm = mm.index_axis_move(Axis(ax), 0);
        }
        return s.mapv(f32::ln) + mm;
    }
    #[allow(clippy::cast_precision_loss)]
    for &ax in &sorted {
        let n = cur.shape()[ax] as f32;
        cur = match op {
            Red::Max => cur.fold_axis(Axis(ax), f32::NEG_INFINITY, |&a, &b| {
                if b.is_nan() || a.is_nan() {
                    f32::NAN
                } else {
                    a.max(b)
                }
            }),
            Red::Min => cur.fold_axis(Axis(ax), f32::INFINITY, |&a, &b| {
                if b.is_nan() || a.is_nan() {
                    f32::NAN
                } else {
                    a.min(b)
                }
            }),
            Red::Prod => cur.fold_axis(Axis(ax), 1.0, |&a, &b| a * b),
            Red::Mean => cur.sum_axis(Axis(ax)) / n,
            _ => cur.sum_axis(Axis(ax)),
        };
    }
    match op {
        Red::L2 => cur.mapv(f32::sqrt),
        Red::LogSum => cur.mapv(f32::ln),
        _ => cur,
    }
}

/// `lo`/`hi`: the type's range, the Max/Min of an empty set.
fn reduce_i64(
    a: &ArrayD<i64>,
    axes: &[usize],
    op: Red,
    (lo, hi): (i64, i64),
) -> Result<ArrayD<i64>, OpError> {
    let mut cur = a.clone();
    let mut sorted = axes.to_vec();
    sorted.sort_unstable_by(|x, y| y.cmp(x));
    for &ax in &sorted {
        let n = i64::try_from(cur.shape()[ax]).expect("dim");
        cur = match op {
            Red::Max => cur.fold_axis(Axis(ax), lo, |&a, &b| a.max(b)),
            Red::Min => cur.fold_axis(Axis(ax), hi, |&a, &b| a.min(b)),
            Red::Prod => cur.fold_axis(Axis(ax), 1i64, |&a, &b| a.wrapping_mul(b)),
            Red::Sum => cur.fold_axis(Axis(ax), 0i64, |&a, &b| a.wrapping_add(b)),
            Red::Mean if n > 0 => cur.fold_axis(Axis(ax), 0i64, |&a, &b| a.wrapping_add(b)) / n,
            Red::L1 => cur.fold_axis(Axis(ax), 0i64, |&a, &b| a.wrapping_add(b.wrapping_abs())),
            Red::SumSquare => {
                cur.fold_axis(Axis(ax), 0i64, |&a, &b| a.wrapping_add(b.wrapping_mul(b)))
            }
            _ => op_bail!("{op:?} of an integer tensor is not supported"),
        };
    }
    Ok(cur)
}

impl Kernel for Reduce {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let r = x.shape().len();
        let axes = if self.axes_input {
            opt(inputs, 1).map(Tensor::to_i64_vec).transpose()?
        } else {
            self.axes.clone()
        };
        let axes: Vec<usize> = match axes {
            Some(a) if !a.is_empty() => {
                let mut v = a
                    .iter()
                    .map(|&i| axis(i, r))
                    .collect::<Result<Vec<_>, _>>()?;
                v.sort_unstable();
                v.dedup();
                v
            }
            _ if self.noop_with_empty_axes => return Ok(vec![x.clone()]),
            _ => (0..r).collect(),
        };
        let mut out = match x.data() {
            Data::Float(a) => Data::Float(reduce_f32(a, &axes, self.op)),
            Data::Int(a) => Data::Int(reduce_i64(
                a,
                &axes,
                self.op,
                crate::tensor::int_range(x.dtype()),
            )?),
        };
        if self.keepdims {
            let mut shape = x.shape().to_vec();
            for &a in &axes {
                shape[a] = 1;
            }
            out = match out {
                Data::Float(a) => {
                    Data::Float(a.into_shape_with_order(IxDyn(&shape)).expect("same size"))
                }
                Data::Int(a) => {
                    Data::Int(a.into_shape_with_order(IxDyn(&shape)).expect("same size"))
                }
            };
        }
        Ok(vec![super::like(x.dtype(), out)])
    }
}

#[derive(Debug)]
struct ArgExt {
    max: bool,
    axis: i64,
    keepdims: bool,
    last: bool,
}

impl Kernel for ArgExt {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let a = x.to_f32();
        let ax = axis(self.axis, a.ndim())?;
        if a.shape()[ax] == 0 {
            op_bail!("ArgMax/ArgMin over an empty axis");
        }
        let (max, last) = (self.max, self.last);
        let mut out = a.map_axis(Axis(ax), |lane| {
            let mut best = 0usize;
            for (i, &v) in lane.iter().enumerate() {
                let b = lane[best];
                let better = if max { v > b } else { v < b };
                if better || (last && v == b) {
                    best = i;
                }
            }
            i64::try_from(best).expect("index")
        });
        if self.keepdims {
            out = out.insert_axis(Axis(ax));
        }
        Ok(vec![Tensor::i64(out)])
    }
}

#[derive(Debug)]
struct CumSum {
    exclusive: bool,
    reverse: bool,
    /// CumProd (opset 26).
    prod: bool,
}

impl Kernel for CumSum {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let ax_t = arg(inputs, 1)?.to_i64_vec()?;
        let Some(&ax) = ax_t.first() else {
            op_bail!("an axis is needed");
        };
        let ax = axis(ax, x.shape().len())?;
        let (ex, rev, prod) = (self.exclusive, self.reverse, self.prod);
        let out = match x.data() {
            Data::Float(a) => {
                let mut o = a.clone();
                for mut lane in o.lanes_mut(Axis(ax)) {
                    let vals: Vec<f32> = lane.iter().copied().collect();
                    let n = vals.len();
                    let mut acc = if prod { 1.0 } else { 0.0 };
                    let step = |a: f32, v: f32| if prod { a * v } else { a + v };
                    for k in 0..n {
                        let i = if rev { n - 1 - k } else { k };
                        if ex {
                            lane[i] = acc;
                            acc = step(acc, vals[i]);
                        } else {
                            acc = step(acc, vals[i]);
                            lane[i] = acc;
                        }
                    }
                }
                Data::Float(o)
            }
            Data::Int(a) => {
                let mut o = a.clone();
                for mut lane in o.lanes_mut(Axis(ax)) {
                    let vals: Vec<i64> = lane.iter().copied().collect();
                    let n = vals.len();
                    let mut acc = i64::from(prod);
                    let step = |a: i64, v: i64| {
                        if prod {
                            a.wrapping_mul(v)
                        } else {
                            a.wrapping_add(v)
                        }
                    };
                    for k in 0..n {
                        let i = if rev { n - 1 - k } else { k };
                        if ex {
                            lane[i] = acc;
                            acc = step(acc, vals[i]);
                        } else {
                            acc = step(acc, vals[i]);
                            lane[i] = acc;
                        }
                    }
                }
                Data::Int(o)
            }
        };
        Ok(vec![super::like(x.dtype(), out)])
    }
}

/// The determinant of every `[M, M]` matrix of `[..., M, M]`.
#[derive(Debug)]
struct Det;

/// A square matrix's determinant by LU decomposition with partial pivoting, in f64.
fn det(mut m: Vec<f64>, n: usize) -> f64 {
    let mut d = 1.0;
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| m[i * n + col].abs().total_cmp(&m[j * n + col].abs()))
            .unwrap_or(col);
        if m[piv * n + col] == 0.0 {
            return 0.0;
        }
        if piv != col {
            for k in 0..n {
                m.swap(piv * n + k, col * n + k);
            }
            d = -d;
        }
        let p = m[col * n + col];
        d *= p;
        for row in col + 1..n {
            let f = m[row * n + col] / p;
            for k in col..n {
                m[row * n + k] -= f * m[col * n + k];
            }
        }
    }
    d
}

impl Kernel for Det {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        let s = xa.shape();
        let r = s.len();
        if r < 2 || s[r - 1] != s[r - 2] {
            op_bail!("input of shape {s:?}: expected [..., M, M]");
        }
        let n = s[r - 1];
        let flat: Vec<f64> = xa.iter().map(|&v| f64::from(v)).collect();
        #[allow(clippy::cast_possible_truncation)]
        let v: Vec<f32> = flat
            .chunks(n * n)
            .map(|c| det(c.to_vec(), n) as f32)
            .collect();
        let v = if n == 0 {
            vec![1.0; xa.len().max(1)]
        } else {
            v
        };
        Ok(vec![Tensor::float(
            ArrayD::from_shape_vec(IxDyn(&s[..r - 2]), v).map_err(|e| OpError(e.to_string()))?,
            x.dtype(),
        )])
    }
}

/// Builds a kernel of this family.
///
/// # Errors
/// Bad attributes.
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Option<Box<dyn Kernel>>, OpError> {
    let red = match op {
        "ReduceMean" => Red::Mean,
        "ReduceSum" => Red::Sum,
        "ReduceMax" => Red::Max,
        "ReduceMin" => Red::Min,
        "ReduceProd" => Red::Prod,
        "ReduceL1" => Red::L1,
        "ReduceL2" => Red::L2,
        "ReduceLogSum" => Red::LogSum,
        "ReduceLogSumExp" => Red::LogSumExp,
        "ReduceSumSquare" => Red::SumSquare,
        "ArgMax" | "ArgMin" => {
            return Ok(Some(Box::new(ArgExt {
                max: op == "ArgMax",
                axis: a.int_or("axis", 0)?,
                keepdims: a.int_or("keepdims", 1)? != 0,
                last: a.int_or("select_last_index", 0)? != 0,
            })));
        }
        "Det" => return Ok(Some(Box::new(Det))),
        "CumSum" | "CumProd" => {
            return Ok(Some(Box::new(CumSum {
                exclusive: a.int_or("exclusive", 0)? != 0,
                reverse: a.int_or("reverse", 0)? != 0,
                prod: op == "CumProd",
            })));
        }
        _ => return Ok(None),
    };
    // ReduceSum took axes as an input from opset 13, the others from opset 18.
    let axes_input = if red == Red::Sum {
        ctx.opset >= 13
    } else {
        ctx.opset >= 18
    };
    Ok(Some(Box::new(Reduce {
        op: red,
        axes: if axes_input { None } else { a.ints("axes")? },
        axes_input,
        keepdims: a.int_or("keepdims", 1)? != 0,
        noop_with_empty_axes: a.int_or("noop_with_empty_axes", 0)? != 0,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    #[test]
    fn empty_integer_max_is_the_types_minimum() {
        // ReduceMax over an empty axis of bools is false, not i64::MIN wrapped to true.
        let k = build(
            "ReduceMax",
            &Attrs::new(&[]),
            Ctx {
                opset: 18,
                outputs: 1,
            },
        )
        .unwrap()
        .unwrap();
        let x = Tensor::int(ArrayD::zeros(IxDyn(&[2, 0])), DType::Bool);
        let axes = Tensor::i64_vec(vec![1]);
        let y = k.eval(&[Some(&x), Some(&axes)]).unwrap().remove(0);
        assert_eq!(y.to_i64_vec().unwrap(), vec![0, 0]);
    }
}
