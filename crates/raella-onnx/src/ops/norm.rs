//! Normalisations and Lp pooling beyond the classics in `nn.rs`:
//! `LpNormalization`, `MeanVarianceNormalization`, `RMSNormalization`,
//! `GroupNormalization`, `LpPool`, `GlobalLpPool`. Statistics accumulate in f64.

use ndarray::{ArrayD, Axis, IxDyn};

use super::nn::{Window, pool_sum_f32, window};
use super::{Ctx, Kernel, arg, axis, to_usize};
use crate::attrs::Attrs;
use crate::tensor::Tensor;
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &[
    "GlobalLpPool",
    "GroupNormalization",
    "LpNormalization",
    "LpPool",
    "MeanVarianceNormalization",
    "RMSNormalization",
];

#[derive(Debug)]
struct LpNorm {
    axis: i64,
    p: i64,
}

impl Kernel for LpNorm {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        let ax = axis(self.axis, xa.ndim())?;
        let mut y = xa.clone();
        let p = self.p;
        for mut lane in y.lanes_mut(Axis(ax)) {
            let norm = if p == 1 {
                lane.iter().map(|v| f64::from(v.abs())).sum::<f64>()
            } else {
                lane.iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    .sqrt()
            };
            // A zero lane stays zero (as onnxruntime and the reference do).
            let norm = if norm == 0.0 { 1.0 } else { norm };
            #[allow(clippy::cast_possible_truncation)]
            lane.mapv_inplace(|v| (f64::from(v) / norm) as f32);
        }
        Ok(vec![Tensor::float(y, x.dtype())])
    }
}

/// Mean and inverse deviation of every group of `inner` consecutive values:
/// `(x - mean) * inv`, `inv = 1 / f(var)`.
#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
fn normalise_chunks(x: &[f32], inner: usize, inv_of_var: impl Fn(f64) -> f64) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for (src, dst) in x.chunks(inner.max(1)).zip(out.chunks_mut(inner.max(1))) {
        let n = src.len() as f64;
        let mean = src.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = src
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let inv = inv_of_var(var);
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = ((f64::from(s) - mean) * inv) as f32;
        }
    }
    out
}

#[derive(Debug)]
struct Mvn {
    axes: Vec<i64>,
}

impl Kernel for Mvn {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        let r = xa.ndim();
        let mut axes: Vec<usize> = self
            .axes
            .iter()
            .map(|&a| axis(a, r))
            .collect::<Result<_, _>>()?;
        axes.sort_unstable();
        axes.dedup();
        // The normalised axes last: then each group is contiguous.
        let mut perm: Vec<usize> = (0..r).filter(|a| !axes.contains(a)).collect();
        perm.extend(&axes);
        let inner: usize = axes.iter().map(|&a| xa.shape()[a]).product();
        let moved = xa
            .view()
            .permuted_axes(IxDyn(&perm))
            .as_standard_layout()
            .into_owned();
        let flat: Vec<f32> = moved.iter().copied().collect();
        // As onnx defines it: (x - mean) / (sqrt(var) + 1e-9).
        let out = normalise_chunks(&flat, inner, |v| 1.0 / (v.sqrt() + 1e-9));
        let y = ArrayD::from_shape_vec(moved.raw_dim(), out).expect("shape");
        let mut inv = vec![0; r];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        let y = y.permuted_axes(IxDyn(&inv));
        Ok(vec![Tensor::float(y, x.dtype())])
    }
}

#[derive(Debug)]
struct RmsNorm {
    axis: i64,
    eps: f64,
}

impl Kernel for RmsNorm {
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        let ax = axis(self.axis, xa.ndim())?;
        let inner_shape = &xa.shape()[ax..];
        let inner: usize = inner_shape.iter().product();
        let scale = arg(inputs, 1)?.to_f32();
        let sc: Vec<f32> = scale
            .broadcast(IxDyn(inner_shape))
            .ok_or_else(|| {
                OpError(format!(
                    "scale {:?} does not broadcast to {inner_shape:?}",
                    scale.shape()
                ))
            })?
            .iter()
            .copied()
            .collect();
        let mut out: Vec<f32> = xa.iter().copied().collect();
        for chunk in out.chunks_mut(inner.max(1)) {
            let ms = chunk.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / inner as f64;
            let inv = 1.0 / (ms + self.eps).sqrt();
            for (v, &g) in chunk.iter_mut().zip(&sc) {
                *v = (f64::from(*v) * inv) as f32 * g;
            }
        }
        let y = ArrayD::from_shape_vec(IxDyn(xa.shape()), out).expect("shape");
        Ok(vec![Tensor::float(y, x.dtype())])
    }
}

#[derive(Debug)]
struct GroupNorm {
    groups: usize,
    eps: f64,
}

impl Kernel for GroupNorm {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        if xa.ndim() < 2 {
            op_bail!("input of shape {:?}: expected [N, C, ...]", xa.shape());
        }
        let (n, c) = (xa.shape()[0], xa.shape()[1]);
        let g = self.groups;
        if g == 0 || c % g != 0 {
            op_bail!("{c} channels do not split into {g} groups");
        }
        let spatial: usize = xa.shape()[2..].iter().product();
        let (scale, bias) = (arg(inputs, 1)?.to_f32(), arg(inputs, 2)?.to_f32());
        // Opset 21: one scale and bias per channel; opset 18: per group.
        let per = |t: &ArrayD<f32>, what: &str| -> Result<Vec<f32>, OpError> {
            let v: Vec<f32> = t.iter().copied().collect();
            if v.len() == c {
                Ok(v)
            } else if v.len() == g {
                Ok((0..c).map(|ci| v[ci / (c / g)]).collect())
            } else {
                op_bail!(
                    "{what} has {} values for {c} channels in {g} groups",
                    v.len()
                )
            }
        };
        let (sc, bs) = (per(&scale, "scale")?, per(&bias, "bias")?);
        let flat: Vec<f32> = xa.iter().copied().collect();
        let eps = self.eps;
        let mut out = normalise_chunks(&flat, (c / g) * spatial, |v| 1.0 / (v + eps).sqrt());
        for (k, chunk) in out.chunks_mut(spatial.max(1)).enumerate().take(n * c) {
            let ci = k % c;
            for v in chunk.iter_mut() {
                *v = *v * sc[ci] + bs[ci];
            }
        }
        let y = ArrayD::from_shape_vec(IxDyn(xa.shape()), out).expect("shape");
        Ok(vec![Tensor::float(y, x.dtype())])
    }
}

#[derive(Debug)]
struct LpPool {
    /// `None`: global.
    win: Option<Window>,
    p: f32,
}

impl Kernel for LpPool {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        let p = self.p;
        let pow = xa.mapv(|v| v.abs().powf(p));
        let sums = match &self.win {
            Some(w) => pool_sum_f32(&pow, w)?,
            None => {
                if xa.ndim() < 3 {
                    op_bail!("input of shape {:?}: expected [N, C, ...]", xa.shape());
                }
                let mut s = pow;
                while s.ndim() > 2 {
                    s = s.sum_axis(Axis(2));
                }
                let mut shape = xa.shape()[..2].to_vec();
                shape.extend(std::iter::repeat_n(1, xa.ndim() - 2));
                s.into_shape_with_order(IxDyn(&shape)).expect("same size")
            }
        };
        Ok(vec![Tensor::float(
            sums.mapv(|v| v.powf(1.0 / p)),
            x.dtype(),
        )])
    }
}

/// Builds a kernel of this family.
///
/// # Errors
/// Bad attributes.
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Option<Box<dyn Kernel>>, OpError> {
    let _ = ctx;
    let stash = || -> Result<(), OpError> {
        // stash_type 1 (float32) is what is done anyway (in f64, closer still).
        match a.int_or("stash_type", 1)? {
            1 => Ok(()),
            s => op_bail!("stash_type {s} is not supported"),
        }
    };
    Ok(Some(match op {
        "LpNormalization" => {
            let p = a.int_or("p", 2)?;
            if p != 1 && p != 2 {
                op_bail!("p = {p}: 1 and 2 are supported");
            }
            Box::new(LpNorm {
                axis: a.int_or("axis", -1)?,
                p,
            })
        }
        "MeanVarianceNormalization" => Box::new(Mvn {
            axes: a.ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]),
        }),
        "RMSNormalization" => {
            stash()?;
            Box::new(RmsNorm {
                axis: a.int_or("axis", -1)?,
                eps: f64::from(a.float_or("epsilon", 1e-5)?),
            })
        }
        "GroupNormalization" => {
            stash()?;
            Box::new(GroupNorm {
                groups: to_usize(
                    a.int("num_groups")?
                        .ok_or_else(|| OpError("GroupNormalization needs `num_groups`".into()))?,
                    "num_groups",
                )?,
                eps: f64::from(a.float_or("epsilon", 1e-5)?),
            })
        }
        "LpPool" | "GlobalLpPool" => {
            #[allow(clippy::cast_precision_loss)]
            let p = a.int_or("p", 2)? as f32;
            if p <= 0.0 {
                op_bail!("p = {p} must be positive");
            }
            Box::new(LpPool {
                win: if op == "LpPool" {
                    Some(window(a, None)?)
                } else {
                    None
                },
                p,
            })
        }
        _ => return Ok(None),
    }))
}
