//! Fused transformer operators of opsets 23+: `Attention` (masks, causal and
//! sliding windows, KV cache, padding lengths, grouped-query heads, softcap,
//! the four `qk_matmul_output` modes) and `RotaryEmbedding`, after onnx's
//! reference step by step.

use ndarray::{Array4, ArrayD, Axis, Ix4, IxDyn, concatenate, s};

use super::nn::matmul;
use super::{Ctx, Kernel, arg, opt, to_usize};
use crate::attrs::Attrs;
use crate::tensor::{DType, Tensor};
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &["Attention", "RotaryEmbedding"];

#[derive(Debug)]
struct Attention {
    causal: bool,
    q_heads: Option<usize>,
    kv_heads: Option<usize>,
    mode: i64,
    scale: Option<f32>,
    softcap: f32,
    left: i64,
    right: i64,
}

/// `[B, S, H*D]` to `[B, H, S, D]`, or a 4-D input as it is.
fn heads(t: &Tensor, h: Option<usize>, what: &str) -> Result<Array4<f32>, OpError> {
    let a = t.to_f32();
    match a.shape() {
        &[b, sq, hidden] => {
            let Some(h) = h.filter(|&h| h > 0 && hidden % h == 0) else {
                op_bail!(
                    "{what} of shape {:?}: the head count must divide {hidden}",
                    a.shape()
                );
            };
            Ok(a.into_shape_with_order((b, sq, h, hidden / h))
                .expect("size")
                .permuted_axes([0, 2, 1, 3])
                .as_standard_layout()
                .into_owned())
        }
        &[_, _, _, _] => Ok(a.into_dimensionality::<Ix4>().expect("4-D")),
        other => op_bail!("{what} of shape {other:?}: expected rank 3 or 4"),
    }
}

/// `bias + where(allowed(i, j, b), 0, -inf)` over `[batch or 1, 1, q, kv]`.
fn masked(
    bias: ArrayD<f32>,
    q: usize,
    kv: usize,
    offsets: &[i64],
    allowed: impl Fn(i64, i64) -> bool,
) -> Result<ArrayD<f32>, OpError> {
    let nb = offsets.len();
    let m = ArrayD::from_shape_fn(IxDyn(&[nb, 1, q, kv]), |p| {
        let i = i64::try_from(p[2]).expect("i") + offsets[p[0]];
        if allowed(i, i64::try_from(p[3]).expect("j")) {
            0.0
        } else {
            f32::NEG_INFINITY
        }
    });
    super::zip_f32(&bias, &m, |a, b| a + b)
}

impl Kernel for Attention {
    #[allow(clippy::too_many_lines, clippy::cast_precision_loss)]
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (qt, kt, vt) = (arg(inputs, 0)?, arg(inputs, 1)?, arg(inputs, 2)?);
        let three_d = qt.shape().len() == 3;
        let q = heads(qt, self.q_heads, "Q")?;
        let mut k = heads(kt, self.kv_heads, "K")?;
        let mut v = heads(vt, self.kv_heads, "V")?;
        let (past_k, past_v) = (opt(inputs, 4), opt(inputs, 5));
        if past_k.is_some() != past_v.is_some() {
            op_bail!("past_key and past_value must come together");
        }
        if let (Some(pk), Some(pv)) = (past_k, past_v) {
            let (pk, pv) = (heads(pk, None, "past_key")?, heads(pv, None, "past_value")?);
            k = concatenate(Axis(2), &[pk.view(), k.view()]).map_err(|e| OpError(e.to_string()))?;
            v = concatenate(Axis(2), &[pv.view(), v.view()]).map_err(|e| OpError(e.to_string()))?;
        }
        let past = past_k.map_or(0, |t| t.shape().get(2).copied().unwrap_or(0));
        // Present keys and values: the cache before any head repetition.
        let (pk, pv) = (k.clone(), v.clone());
        let (b, hq, sq, dq) = q.dim();
        let kv = k.dim().2;
        let nonpad: Option<Vec<i64>> = opt(inputs, 6).map(Tensor::to_i64_vec).transpose()?;
        if nonpad.is_some() && past_k.is_some() {
            op_bail!("nonpad_kv_seqlen cannot be combined with a past cache");
        }
        let scale = self.scale.unwrap_or(1.0 / (dq as f32).sqrt()).sqrt();
        // The additive bias, broadcastable to [B, H, q, kv].
        let mut bias = ArrayD::<f32>::zeros(IxDyn(&[sq, kv]));
        let mask = opt(inputs, 3).map(|m| -> Result<ArrayD<f32>, OpError> {
            let boolean = m.dtype() == DType::Bool;
            let mut a = if boolean {
                m.ints()?
                    .mapv(|v| if v != 0 { 0.0 } else { f32::NEG_INFINITY })
            } else {
                m.to_f32()
            };
            let last = a.shape().last().copied().unwrap_or(0);
            if last < kv {
                let mut shape = a.shape().to_vec();
                *shape.last_mut().expect("rank") = kv - last;
                let pad = ArrayD::from_elem(IxDyn(&shape), f32::NEG_INFINITY);
                a = concatenate(Axis(a.ndim() - 1), &[a.view(), pad.view()])
                    .map_err(|e| OpError(e.to_string()))?;
            }
            Ok(a)
        });
        let mask = mask.transpose()?;
        let offsets: Vec<i64> = match &nonpad {
            Some(n) if past_k.is_none() => n
                .iter()
                .map(|&l| l - i64::try_from(sq).expect("q"))
                .collect(),
            _ => vec![i64::try_from(past).expect("past")],
        };
        if self.causal {
            let base = mask.clone().unwrap_or_else(|| bias.clone());
            bias = masked(base, sq, kv, &offsets, |i, j| j <= i)?;
        } else if let Some(m) = &mask {
            bias = super::zip_f32(&bias, m, |a, c| a + c)?;
        }
        if self.left >= 0 || self.right >= 0 {
            let (l, r) = (self.left, self.right);
            bias = masked(bias, sq, kv, &offsets, |i, j| {
                (l < 0 || i - j <= l) && (r < 0 || j - i <= r)
            })?;
        }
        if let Some(n) = &nonpad {
            let pm = ArrayD::from_shape_fn(IxDyn(&[n.len(), 1, 1, kv]), |p| {
                if i64::try_from(p[3]).expect("j") < n[p[0]] {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            });
            bias = super::zip_f32(&bias, &pm, |a, c| a + c)?;
        }
        // Grouped-query attention: each K/V head serves hq / hk query heads.
        let hk = k.dim().1;
        if hk != hq {
            if hk == 0 || hq % hk != 0 || v.dim().1 != hk {
                op_bail!("{hq} query heads for {hk} key/value heads");
            }
            let idx: Vec<usize> = (0..hq).map(|h| h / (hq / hk)).collect();
            k = k.select(Axis(1), &idx);
            v = v.select(Axis(1), &idx);
        }
        let qs = q.mapv(|x| x * scale).into_dyn();
        let kts = k
            .mapv(|x| x * scale)
            .permuted_axes([0, 1, 3, 2])
            .as_standard_layout()
            .into_owned()
            .into_dyn();
        let mut qk = matmul(&qs, &kts)?;
        if self.softcap > 0.0 {
            let c = self.softcap;
            qk.mapv_inplace(|x| (x / c).tanh() * c);
        }
        let full = IxDyn(&[b, hq, sq, kv]);
        let bias4 = bias
            .broadcast(full.clone())
            .ok_or_else(|| {
                OpError(format!(
                    "a mask of shape {:?} for scores {:?}",
                    bias.shape(),
                    [b, hq, sq, kv]
                ))
            })?
            .to_owned();
        let with_bias = &qk + &bias4;
        let mut sm = with_bias.clone();
        for (mut lane, bl) in sm.lanes_mut(Axis(3)).into_iter().zip(bias4.lanes(Axis(3))) {
            let bmax = bl.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if bmax == f32::NEG_INFINITY {
                // A fully masked row attends to nothing.
                lane.fill(0.0);
                continue;
            }
            let m = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let m = if m == f32::NEG_INFINITY { 0.0 } else { m };
            lane.mapv_inplace(|x| (x - m).exp());
            let s: f32 = lane.sum();
            let s = if s == 0.0 { 1.0 } else { s };
            lane.mapv_inplace(|x| x / s);
        }
        let qk_out = match self.mode {
            0 | 1 => qk,
            2 => with_bias,
            3 => sm.clone(),
            m => op_bail!("qk_matmul_output_mode {m} is not supported"),
        };
        let mut y = matmul(&sm, &v.into_dyn())?;
        if three_d {
            let dv = y.shape()[3];
            y = y
                .permuted_axes(IxDyn(&[0, 2, 1, 3]))
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(&[b, sq, hq * dv]))
                .expect("size");
        }
        let dt = qt.dtype();
        Ok(vec![
            Tensor::float(y, dt),
            Tensor::float(pk.into_dyn(), dt),
            Tensor::float(pv.into_dyn(), dt),
            Tensor::float(qk_out, dt),
        ])
    }
}

#[derive(Debug)]
struct Rotary {
    interleaved: bool,
    dim: usize,
    heads: usize,
}

impl Kernel for Rotary {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let (cos, sin) = (arg(inputs, 1)?.to_f32(), arg(inputs, 2)?.to_f32());
        let pos = opt(inputs, 3).map(Tensor::to_i64_vec).transpose()?;
        let xa = x.to_f32();
        let shape = xa.shape().to_vec();
        // To [B, S, H, D].
        let x4: Array4<f32> = match shape.as_slice() {
            &[b, h, sq, d] => xa
                .into_shape_with_order((b, h, sq, d))
                .expect("4-D")
                .permuted_axes([0, 2, 1, 3])
                .as_standard_layout()
                .into_owned(),
            &[b, sq, hidden] => {
                let h = self.heads;
                if h == 0 || hidden % h != 0 {
                    op_bail!("num_heads {h} does not divide the hidden size {hidden}");
                }
                xa.into_shape_with_order((b, sq, h, hidden / h))
                    .expect("size")
            }
            other => op_bail!("input of shape {other:?}: expected rank 3 or 4"),
        };
        let (b, sq, h, d) = x4.dim();
        let rd = if self.dim == 0 { d } else { self.dim };
        let half = rd / 2;
        if rd > d || rd % 2 != 0 {
            op_bail!("rotary_embedding_dim {rd} for heads of {d}");
        }
        // cos/sin [B, S, half] (from position ids into [max_pos, half], or given so).
        let table = |c: &ArrayD<f32>, bi: usize, si: usize| -> Result<Vec<f32>, OpError> {
            let row: Vec<f32> = match &pos {
                Some(p) => {
                    let i = to_usize(p[(bi * sq + si).min(p.len() - 1)], "a position id")?;
                    if c.ndim() != 2 || i >= c.shape()[0] {
                        op_bail!("position {i} outside the cache {:?}", c.shape());
                    }
                    c.index_axis(Axis(0), i).iter().copied().collect()
                }
                None => {
                    if c.ndim() != 3 {
                        op_bail!(
                            "a cache of shape {:?} without position ids: expected [B, S, D/2]",
                            c.shape()
                        );
                    }
                    c.slice(s![bi, si, ..]).iter().copied().collect()
                }
            };
            if row.len() != half {
                op_bail!(
                    "cache rows of {} values for a rotary dimension of {rd}",
                    row.len()
                );
            }
            Ok(row)
        };
        let mut y = x4.clone();
        for bi in 0..b {
            for si in 0..sq {
                let (cr, sr) = (table(&cos, bi, si)?, table(&sin, bi, si)?);
                for hi in 0..h {
                    for j in 0..half {
                        let (i1, i2) = if self.interleaved {
                            (2 * j, 2 * j + 1)
                        } else {
                            (j, j + half)
                        };
                        let (x1, x2) = (x4[[bi, si, hi, i1]], x4[[bi, si, hi, i2]]);
                        y[[bi, si, hi, i1]] = cr[j] * x1 - sr[j] * x2;
                        y[[bi, si, hi, i2]] = sr[j] * x1 + cr[j] * x2;
                    }
                }
            }
        }
        let y = if shape.len() == 4 {
            y.permuted_axes([0, 2, 1, 3])
                .as_standard_layout()
                .into_owned()
                .into_dyn()
        } else {
            y.into_shape_with_order(IxDyn(&shape)).expect("size")
        };
        Ok(vec![Tensor::float(y, x.dtype())])
    }
}

/// Builds a kernel of this family.
///
/// # Errors
/// Bad attributes.
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Option<Box<dyn Kernel>>, OpError> {
    let _ = ctx;
    let count = |name: &str| -> Result<Option<usize>, OpError> {
        a.int(name)?.map(|v| to_usize(v, name)).transpose()
    };
    Ok(Some(match op {
        "Attention" => Box::new(Attention {
            causal: a.int_or("is_causal", 0)? != 0,
            q_heads: count("q_num_heads")?,
            kv_heads: count("kv_num_heads")?,
            mode: a.int_or("qk_matmul_output_mode", 0)?,
            scale: a.float("scale")?,
            softcap: a.float_or("softcap", 0.0)?,
            left: a.int_or("left_window_size", -1)?,
            right: a.int_or("right_window_size", -1)?,
        }),
        "RotaryEmbedding" => Box::new(Rotary {
            interleaved: a.int_or("interleaved", 0)? != 0,
            dim: count("rotary_embedding_dim")?.unwrap_or(0),
            heads: count("num_heads")?.unwrap_or(0),
        }),
        _ => return Ok(None),
    }))
}
