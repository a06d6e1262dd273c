//! Losses, as exported training graphs (or evaluation graphs) carry them:
//! `NegativeLogLikelihoodLoss` and `SoftmaxCrossEntropyLoss`, with class
//! weights, `ignore_index` and every reduction. Sums accumulate in f64.

use ndarray::{ArrayD, Axis, IxDyn};

use super::{Ctx, Kernel, arg, opt};
use crate::attrs::Attrs;
use crate::tensor::Tensor;
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reduction {
    None,
    Sum,
    Mean,
}

#[derive(Debug)]
struct Loss {
    softmax: bool,
    reduction: Reduction,
    ignore: Option<i64>,
}

/// `-log_prob[n, t, d] * w[t]` per (n, d), the weights, and the reduction.
#[allow(clippy::cast_possible_truncation)]
fn nll(
    logp: &ArrayD<f32>,
    target: &ArrayD<i64>,
    weight: Option<&ArrayD<f32>>,
    ignore: Option<i64>,
    reduction: Reduction,
) -> Result<ArrayD<f32>, OpError> {
    let s = logp.shape();
    if s.len() < 2 {
        op_bail!("input of shape {s:?}: expected [N, C, ...]");
    }
    let c = s[1];
    let mut want = vec![s[0]];
    want.extend(&s[2..]);
    if target.shape() != want.as_slice() {
        op_bail!("target of shape {:?}, expected {want:?}", target.shape());
    }
    // Class axis last: each lane is one (n, d)'s class scores.
    let moved = logp.view().permuted_axes(
        std::iter::once(0)
            .chain(2..s.len())
            .chain(std::iter::once(1))
            .collect::<Vec<_>>(),
    );
    let lanes: Vec<ndarray::ArrayView1<'_, f32>> =
        moved.lanes(Axis(s.len() - 1)).into_iter().collect();
    let mut loss = Vec::with_capacity(target.len());
    let mut wsum = 0.0f64;
    for (lane, &t) in lanes.iter().zip(target.iter()) {
        if Some(t) == ignore {
            loss.push(0.0f64);
            continue;
        }
        let ti = usize::try_from(t)
            .ok()
            .filter(|&i| i < c)
            .ok_or_else(|| OpError(format!("target {t} outside the {c} classes")))?;
        let w = weight.map_or(1.0, |w| f64::from(w[ti]));
        wsum += w;
        loss.push(-f64::from(lane[ti]) * w);
    }
    Ok(match reduction {
        Reduction::None => {
            ArrayD::from_shape_vec(IxDyn(&want), loss.iter().map(|&v| v as f32).collect())
                .expect("shape")
        }
        Reduction::Sum => ArrayD::from_elem(IxDyn(&[]), loss.iter().sum::<f64>() as f32),
        Reduction::Mean => {
            let total = loss.iter().sum::<f64>();
            let v = if wsum == 0.0 { 0.0 } else { total / wsum };
            ArrayD::from_elem(IxDyn(&[]), v as f32)
        }
    })
}

impl Kernel for Loss {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let target = arg(inputs, 1)?.ints()?;
        let weight = opt(inputs, 2).map(Tensor::to_f32);
        let xa = x.floats()?;
        let logp = if self.softmax {
            let mut l = xa.clone();
            for mut lane in l.lanes_mut(Axis(1)) {
                let m = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let s: f32 = lane.iter().map(|&v| (v - m).exp()).sum();
                let ls = s.ln();
                lane.mapv_inplace(|v| v - m - ls);
            }
            l
        } else {
            xa.clone()
        };
        let y = nll(&logp, target, weight.as_ref(), self.ignore, self.reduction)?;
        let mut out = vec![Tensor::float(y, x.dtype())];
        if self.softmax {
            out.push(Tensor::float(logp, x.dtype()));
        }
        Ok(out)
    }
}

/// Builds a kernel of this family.
///
/// # Errors
/// Bad attributes.
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Option<Box<dyn Kernel>>, OpError> {
    let _ = ctx;
    if !OPS.contains(&op) {
        return Ok(None);
    }
    Ok(Some(Box::new(Loss {
        softmax: op == "SoftmaxCrossEntropyLoss",
        reduction: match a.string_or("reduction", "mean")?.as_str() {
            "none" => Reduction::None,
            "sum" => Reduction::Sum,
            "mean" => Reduction::Mean,
            r => op_bail!("reduction \"{r}\" is not supported"),
        },
        ignore: a.int("ignore_index")?,
    })))
}
