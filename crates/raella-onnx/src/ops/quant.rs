//! Integer and quantised-linear operators of int8 exports:
//! `DynamicQuantizeLinear`, `MatMulInteger`, `ConvInteger`, `QLinearMatMul`,
//! `QLinearConv`. (`QuantizeLinear`/`DequantizeLinear` are in `nn.rs`.)
//!
//! Integer products run as f64 products of the zero-point-shifted codes: every
//! partial sum of 8-bit products is an integer far below 2^53, so they are exact.

use ndarray::{ArrayD, Axis, IxDyn};

use super::nn::{conv, conv_geom, matmul};
use super::{Ctx, Kernel, arg, opt};
use crate::attrs::Attrs;
use crate::proto::AttributeProto;
use crate::tensor::{DType, Tensor, int_range};
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &[
    "ConvInteger",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "QLinearConv",
    "QLinearMatMul",
];

fn is_8bit(t: &Tensor, what: &str) -> Result<(), OpError> {
    if !matches!(t.dtype(), DType::U8 | DType::I8) {
        op_bail!("{what} must be uint8 or int8, got {}", t.dtype().name());
    }
    Ok(())
}

/// Integer codes as f64, less a zero point that is a scalar or, when
/// `per_axis` is given, one value per index of that axis.
#[allow(clippy::cast_precision_loss)]
fn shifted(
    t: &Tensor,
    zero: Option<&Tensor>,
    per_axis: Option<usize>,
) -> Result<ArrayD<f64>, OpError> {
    let mut v = t.ints()?.mapv(|x| x as f64);
    let Some(z) = zero else {
        return Ok(v);
    };
    let zv: Vec<f64> = z.ints()?.iter().map(|&x| x as f64).collect();
    match (zv.len(), per_axis) {
        (1, _) => v.mapv_inplace(|x| x - zv[0]),
        (n, Some(ax)) if ax < v.ndim() && v.shape()[ax] == n => {
            for (i, mut lane) in v.axis_iter_mut(Axis(ax)).enumerate() {
                lane.mapv_inplace(|x| x - zv[i]);
            }
        }
        (n, _) => op_bail!("a zero point of {n} values for shape {:?}", t.shape()),
    }
    Ok(v)
}

/// A float scalar or per-axis vector as f64 values, rounded through its own type.
fn scale_values(t: &Tensor) -> Vec<f64> {
    t.to_f32().iter().map(|&v| f64::from(v)).collect()
}

#[allow(clippy::cast_possible_truncation)]
fn to_i32(y: &ArrayD<f64>) -> Tensor {
    Tensor::int(y.mapv(|v| v.round() as i64), DType::I32)
}

/// Requantises integer sums: `saturate(round_half_even(acc * m) + zp)` into
/// `dtype`, `m` the multiplier of each index along `axis` (or one for all).
#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
fn requantise(acc: &ArrayD<f64>, m: &[f64], axis: usize, zp: f64, dtype: DType) -> Tensor {
    let (lo, hi) = int_range(dtype);
    let mut y = acc.clone();
    if m.len() == 1 {
        y.mapv_inplace(|v| v * m[0]);
    } else {
        for (i, mut lane) in y.axis_iter_mut(Axis(axis)).enumerate() {
            lane.mapv_inplace(|v| v * m[i]);
        }
    }
    Tensor::int(
        y.mapv(|v| (v.round_ties_even() + zp).clamp(lo as f64, hi as f64) as i64),
        dtype,
    )
}

/// The multiplier `a_scale * b_scale / y_scale` as onnx computes it: in the
/// scales' float type.
fn multiplier(sa: &[f64], sb: &[f64], sy: f64, dtype: DType) -> Vec<f64> {
    let n = sa.len().max(sb.len());
    (0..n)
        .map(|i| {
            let a = sa[i.min(sa.len() - 1)];
            let b = sb[i.min(sb.len() - 1)];
            #[allow(clippy::cast_possible_truncation)]
            let m = dtype.round_float((a * b) as f32);
            #[allow(clippy::cast_possible_truncation)]
            f64::from(dtype.round_float((f64::from(m) / sy) as f32))
        })
        .collect()
}

#[derive(Debug)]
struct DynamicQuantize;

impl Kernel for DynamicQuantize {
    // Clamped to [0, 255] before the casts.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        let max = xa.iter().copied().fold(0.0f32, f32::max);
        let min = xa.iter().copied().fold(0.0f32, f32::min);
        let scale = if max == min { 1.0 } else { max - min } / 255.0;
        let zp = (0.0 - min / scale).clamp(0.0, 255.0).round_ties_even();
        let y =
            xa.mapv(|v| i64::from(((v / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8));
        Ok(vec![
            Tensor::int(y, DType::U8),
            Tensor::float(ArrayD::from_elem(IxDyn(&[]), scale), x.dtype()),
            Tensor::int(
                ArrayD::from_elem(IxDyn(&[]), i64::from(zp as u8)),
                DType::U8,
            ),
        ])
    }
}

#[derive(Debug)]
struct MatMulInteger;

impl Kernel for MatMulInteger {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (arg(inputs, 0)?, arg(inputs, 1)?);
        is_8bit(a, "A")?;
        is_8bit(b, "B")?;
        // a's zero point per row (axis -2), b's per column (axis -1).
        let ra = a.shape().len();
        let av = shifted(a, opt(inputs, 2), ra.checked_sub(2))?;
        let bv = shifted(b, opt(inputs, 3), b.shape().len().checked_sub(1))?;
        Ok(vec![to_i32(&matmul(&av, &bv)?)])
    }
}

#[derive(Debug)]
struct QLinearMatMul;

impl Kernel for QLinearMatMul {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, sa, b, sb, sy) = (
            arg(inputs, 0)?,
            arg(inputs, 1)?,
            arg(inputs, 3)?,
            arg(inputs, 4)?,
            arg(inputs, 6)?,
        );
        is_8bit(a, "A")?;
        is_8bit(b, "B")?;
        let av = shifted(a, opt(inputs, 2), a.shape().len().checked_sub(2))?;
        let bv = shifted(b, opt(inputs, 5), b.shape().len().checked_sub(1))?;
        let acc = matmul(&av, &bv)?;
        let (va, vb) = (scale_values(sa), scale_values(sb));
        if va.len() > 1 {
            op_bail!("per-row A scales are not supported");
        }
        let m = multiplier(&va, &vb, scale_values(sy)[0], sa.dtype());
        let zy = opt(inputs, 7);
        let dtype = zy.map_or(a.dtype(), Tensor::dtype);
        #[allow(clippy::cast_precision_loss)]
        let zp = zy.map_or(0.0, |t| {
            t.ints()
                .map_or(0.0, |v| v.iter().next().copied().unwrap_or(0) as f64)
        });
        Ok(vec![requantise(
            &acc,
            &m,
            acc.ndim().saturating_sub(1),
            zp,
            dtype,
        )])
    }
}

#[derive(Debug)]
struct ConvInteger {
    attrs: Vec<AttributeProto>,
    /// QLinearConv (requantised output) rather than ConvInteger (int32 sums).
    qlinear: bool,
}

impl Kernel for ConvInteger {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let a = Attrs::new(&self.attrs);
        // Input positions: ConvInteger (x, w, x_zp, w_zp); QLinearConv
        // (x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B).
        let (xi, xzi, wi, wzi) = if self.qlinear {
            (0, 2, 3, 5)
        } else {
            (0, 2, 1, 3)
        };
        let (x, w) = (arg(inputs, xi)?, arg(inputs, wi)?);
        is_8bit(x, "x")?;
        is_8bit(w, "w")?;
        let g = conv_geom(&a, w.shape(), false)?;
        let xv = shifted(x, opt(inputs, xzi), None)?;
        let wv = shifted(w, opt(inputs, wzi), Some(0))?;
        let mut acc = conv(&xv, &wv, &g)?;
        if !self.qlinear {
            return Ok(vec![to_i32(&acc)]);
        }
        if let Some(bias) = opt(inputs, 8) {
            let bv = bias.ints()?;
            if bv.len() != g.out_channels {
                op_bail!("B has {} values for {} outputs", bv.len(), g.out_channels);
            }
            #[allow(clippy::cast_precision_loss)]
            for (mut plane, &b) in acc.axis_iter_mut(Axis(1)).zip(bv.iter()) {
                plane += b as f64;
            }
        }
        let (sx, sw, sy) = (arg(inputs, 1)?, arg(inputs, 4)?, arg(inputs, 6)?);
        let m = multiplier(
            &scale_values(sx),
            &scale_values(sw),
            scale_values(sy)[0],
            sx.dtype(),
        );
        let zy = opt(inputs, 7);
        let dtype = zy.map_or(x.dtype(), Tensor::dtype);
        #[allow(clippy::cast_precision_loss)]
        let zp = zy.map_or(0.0, |t| {
            t.ints()
                .map_or(0.0, |v| v.iter().next().copied().unwrap_or(0) as f64)
        });
        Ok(vec![requantise(&acc, &m, 1, zp, dtype)])
    }
}

/// Builds a kernel of this family.
///
/// # Errors
/// Bad attributes.
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Option<Box<dyn Kernel>>, OpError> {
    let _ = ctx;
    Ok(Some(match op {
        "DynamicQuantizeLinear" => Box::new(DynamicQuantize),
        "MatMulInteger" => Box::new(MatMulInteger),
        "QLinearMatMul" => Box::new(QLinearMatMul),
        "ConvInteger" | "QLinearConv" => Box::new(ConvInteger {
            attrs: a.list().to_vec(),
            qlinear: op == "QLinearConv",
        }),
        _ => return Ok(None),
    }))
}
