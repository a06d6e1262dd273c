//! Recurrent layers: `RNN`, `GRU`, `LSTM` (OCR heads, speech and sequence
//! models), every direction, both layouts, sequence lengths, clipping, custom
//! activations, LSTM peepholes and coupled input-forget gates, GRU's
//! `linear_before_reset`. Their weights stay digital: a crossbar would hold
//! `W` and `R`, but the step-by-step recurrence is no single weight layer.

use ndarray::{Array2, Array3, ArrayView2, Axis, s};

use super::{Ctx, Kernel, arg, opt, to_usize};
use crate::attrs::Attrs;
use crate::tensor::Tensor;
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &["GRU", "LSTM", "RNN"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    Rnn,
    Gru,
    Lstm,
}

impl Cell {
    /// Gates per step: RNN 1, GRU 3 (z, r, h), LSTM 4 (i, o, f, c).
    fn gates(self) -> usize {
        match self {
            Self::Rnn => 1,
            Self::Gru => 3,
            Self::Lstm => 4,
        }
    }

    /// Activations per direction.
    fn activations(self) -> usize {
        match self {
            Self::Rnn => 1,
            Self::Gru => 2,
            Self::Lstm => 3,
        }
    }
}

/// An activation of the recurrent ops.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    Sigmoid,
    Tanh,
    Relu,
    HardSigmoid(f32, f32),
    LeakyRelu(f32),
    ThresholdedRelu(f32),
    ScaledTanh(f32, f32),
    Affine(f32, f32),
    Elu(f32),
    Softsign,
    Softplus,
}

impl Act {
    fn apply(self, x: f32) -> f32 {
        match self {
            Self::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Self::Tanh => x.tanh(),
            Self::Relu => x.max(0.0),
            Self::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Self::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Self::ThresholdedRelu(a) => {
                if x > a {
                    x
                } else {
                    0.0
                }
            }
            Self::ScaledTanh(a, b) => a * (b * x).tanh(),
            Self::Affine(a, b) => a * x + b,
            Self::Elu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * (x.exp() - 1.0)
                }
            }
            Self::Softsign => x / (1.0 + x.abs()),
            Self::Softplus => (1.0 + x.exp()).ln(),
        }
    }
}

/// Parses `activations` with their `activation_alpha`/`beta`, consumed in order
/// by the activations that take them (as onnxruntime does).
fn activations(a: &Attrs<'_>, cell: Cell, dirs: usize) -> Result<Vec<Act>, OpError> {
    let names: Vec<String> = match a.has("activations") {
        false => {
            let d: &[&str] = match cell {
                Cell::Rnn => &["Tanh"],
                Cell::Gru => &["Sigmoid", "Tanh"],
                Cell::Lstm => &["Sigmoid", "Tanh", "Tanh"],
            };
            d.iter()
                .cycle()
                .take(d.len() * dirs)
                .map(|s| (*s).to_string())
                .collect()
        }
        true => strings(a, "activations")?,
    };
    if names.len() != cell.activations() * dirs {
        op_bail!(
            "{} activations for {dirs} direction(s), expected {}",
            names.len(),
            cell.activations() * dirs
        );
    }
    let alphas = a.floats("activation_alpha")?.unwrap_or_default();
    let betas = a.floats("activation_beta")?.unwrap_or_default();
    let (mut ia, mut ib) = (0, 0);
    let next = |v: &[f32], i: &mut usize, d: f32| {
        let x = v.get(*i).copied().unwrap_or(d);
        *i += 1;
        x
    };
    names
        .iter()
        .map(|n| {
            Ok(match n.to_ascii_lowercase().as_str() {
                "sigmoid" => Act::Sigmoid,
                "tanh" => Act::Tanh,
                "relu" => Act::Relu,
                "hardsigmoid" => {
                    Act::HardSigmoid(next(&alphas, &mut ia, 0.2), next(&betas, &mut ib, 0.5))
                }
                "leakyrelu" => Act::LeakyRelu(next(&alphas, &mut ia, 0.01)),
                "thresholdedrelu" => Act::ThresholdedRelu(next(&alphas, &mut ia, 1.0)),
                "scaledtanh" => {
                    Act::ScaledTanh(next(&alphas, &mut ia, 1.0), next(&betas, &mut ib, 1.0))
                }
                "affine" => Act::Affine(next(&alphas, &mut ia, 1.0), next(&betas, &mut ib, 0.0)),
                "elu" => Act::Elu(next(&alphas, &mut ia, 1.0)),
                "softsign" => Act::Softsign,
                "softplus" => Act::Softplus,
                other => op_bail!("activation `{other}` is not supported"),
            })
        })
        .collect()
}

/// A list-of-strings attribute.
fn strings(a: &Attrs<'_>, name: &str) -> Result<Vec<String>, OpError> {
    a.list()
        .iter()
        .find(|p| p.name() == name)
        .map(|p| {
            p.strings
                .iter()
                .map(|b| {
                    String::from_utf8(b.clone())
                        .map_err(|_| OpError(format!("attribute `{name}` is not UTF-8")))
                })
                .collect()
        })
        .unwrap_or_else(|| Ok(Vec::new()))
}

#[derive(Debug)]
struct Recurrent {
    cell: Cell,
    hidden: usize,
    dirs: usize,
    reverse: bool,
    acts: Vec<Act>,
    clip: Option<f32>,
    batch_first: bool,
    linear_before_reset: bool,
    input_forget: bool,
}

/// One direction's parameters.
struct Params<'a> {
    w: ArrayView2<'a, f32>,
    r: ArrayView2<'a, f32>,
    wb: Vec<f32>,
    rb: Vec<f32>,
    p: Vec<f32>,
    acts: &'a [Act],
}

impl Recurrent {
    /// Runs one direction over `x [seq, batch, input]`: the hidden state at
    /// every step (zero past a sequence's length) and the final h and c.
    #[allow(clippy::too_many_lines)]
    fn direction(
        &self,
        x: &Array3<f32>,
        pr: &Params<'_>,
        h0: Array2<f32>,
        c0: Array2<f32>,
        lens: &[usize],
        reverse: bool,
    ) -> (Array3<f32>, Array2<f32>, Array2<f32>) {
        let (seq, batch, _) = x.dim();
        let hs = self.hidden;
        let g = self.cell.gates();
        let clip = |v: f32| self.clip.map_or(v, |c| v.clamp(-c, c));
        // X W^T + Wb for every step at once.
        let xw = {
            let x2 = x
                .view()
                .into_shape_with_order((seq * batch, x.dim().2))
                .expect("contiguous");
            let mut m = x2.dot(&pr.w.t());
            for mut row in m.rows_mut() {
                for (v, b) in row.iter_mut().zip(&pr.wb) {
                    *v += b;
                }
            }
            m.into_shape_with_order((seq, batch, g * hs)).expect("size")
        };
        let (mut h, mut c) = (h0, c0);
        let mut y = Array3::<f32>::zeros((seq, batch, hs));
        let acts = pr.acts;
        for step in 0..seq {
            // Per batch entry the time index: reversed within its own length.
            let hr = h.dot(&pr.r.t());
            let mut hn = h.clone();
            let mut cn = c.clone();
            for b in 0..batch {
                if step >= lens[b] {
                    continue;
                }
                let t = if reverse { lens[b] - 1 - step } else { step };
                let xg = xw.slice(s![t, b, ..]);
                let rg = hr.row(b);
                let pre = |k: usize, j: usize| xg[k * hs + j] + rg[k * hs + j] + pr.rb[k * hs + j];
                // GRU's candidate pre-activation: the reset gate applies after
                // (linear_before_reset) or before the product with R_h.
                let gru_cand: Vec<f32> = if self.cell == Cell::Gru {
                    let r: Vec<f32> = (0..hs).map(|k| acts[0].apply(clip(pre(1, k)))).collect();
                    (0..hs)
                        .map(|j| {
                            let rec = if self.linear_before_reset {
                                r[j] * (rg[2 * hs + j] + pr.rb[2 * hs + j])
                            } else {
                                (0..hs)
                                    .map(|k| r[k] * h[[b, k]] * pr.r[[2 * hs + j, k]])
                                    .sum::<f32>()
                                    + pr.rb[2 * hs + j]
                            };
                            xg[2 * hs + j] + rec
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                for j in 0..hs {
                    match self.cell {
                        Cell::Rnn => {
                            hn[[b, j]] = acts[0].apply(clip(pre(0, j)));
                        }
                        Cell::Gru => {
                            let z = acts[0].apply(clip(pre(0, j)));
                            let hh = acts[1].apply(clip(gru_cand[j]));
                            hn[[b, j]] = (1.0 - z) * hh + z * h[[b, j]];
                        }
                        Cell::Lstm => {
                            let cp = c[[b, j]];
                            let (pi, po, pf) = if pr.p.is_empty() {
                                (0.0, 0.0, 0.0)
                            } else {
                                (pr.p[j], pr.p[hs + j], pr.p[2 * hs + j])
                            };
                            let i = acts[0].apply(clip(pre(0, j) + pi * cp));
                            let f = if self.input_forget {
                                1.0 - i
                            } else {
                                acts[0].apply(clip(pre(2, j) + pf * cp))
                            };
                            let cc = acts[1].apply(clip(pre(3, j)));
                            let ct = f * cp + i * cc;
                            let o = acts[0].apply(clip(pre(1, j) + po * ct));
                            cn[[b, j]] = ct;
                            hn[[b, j]] = o * acts[2].apply(ct);
                        }
                    }
                }
                y.slice_mut(s![t, b, ..]).assign(&hn.row(b));
            }
            h = hn;
            c = cn;
        }
        (y, h, c)
    }
}

impl Kernel for Recurrent {
    #[allow(clippy::too_many_lines)]
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.to_f32();
        let &[d0, d1, input] = xa.shape() else {
            op_bail!("X of shape {:?}: expected rank 3", xa.shape());
        };
        let (seq, batch) = if self.batch_first { (d1, d0) } else { (d0, d1) };
        let x3 = xa.into_shape_with_order((d0, d1, input)).expect("rank 3");
        let x3: Array3<f32> = if self.batch_first {
            x3.permuted_axes([1, 0, 2])
                .as_standard_layout()
                .into_owned()
        } else {
            x3
        };
        let (hs, g, dirs) = (self.hidden, self.cell.gates(), self.dirs);
        crate::tensor::checked_numel(&[seq, dirs, batch, hs])?;
        crate::tensor::checked_numel(&[seq, batch, g, hs])?;
        let w = arg(inputs, 1)?.to_f32();
        let r = arg(inputs, 2)?.to_f32();
        if w.shape() != [dirs, g * hs, input] || r.shape() != [dirs, g * hs, hs] {
            op_bail!(
                "W {:?} and R {:?}: expected [{dirs}, {}, {input}] and [{dirs}, {}, {hs}]",
                w.shape(),
                r.shape(),
                g * hs,
                g * hs
            );
        }
        let b = opt(inputs, 3).map(Tensor::to_f32);
        if let Some(b) = &b
            && b.shape() != [dirs, 2 * g * hs]
        {
            op_bail!(
                "B of shape {:?}: expected [{dirs}, {}]",
                b.shape(),
                2 * g * hs
            );
        }
        let lens: Vec<usize> = match opt(inputs, 4) {
            Some(t) => t
                .to_i64_vec()?
                .iter()
                .map(|&l| to_usize(l, "a sequence length").map(|l| l.min(seq)))
                .collect::<Result<_, _>>()?,
            None => vec![seq; batch],
        };
        if lens.len() != batch {
            op_bail!("{} sequence lengths for a batch of {batch}", lens.len());
        }
        // Initial states, [dirs, batch, hidden] (layout 1: [batch, dirs, hidden]).
        let state = |i: usize| -> Result<Option<Array3<f32>>, OpError> {
            let Some(t) = opt(inputs, i) else {
                return Ok(None);
            };
            let a = t.to_f32();
            let want = if self.batch_first {
                [batch, dirs, hs]
            } else {
                [dirs, batch, hs]
            };
            if a.shape() != want {
                op_bail!("initial state of shape {:?}: expected {want:?}", a.shape());
            }
            let a3 = a.into_shape_with_order(want).expect("rank 3");
            Ok(Some(if self.batch_first {
                a3.permuted_axes([1, 0, 2])
                    .as_standard_layout()
                    .into_owned()
            } else {
                a3
            }))
        };
        let h0 = state(5)?;
        let c0 = if self.cell == Cell::Lstm {
            state(6)?
        } else {
            None
        };
        let p = if self.cell == Cell::Lstm {
            opt(inputs, 7).map(Tensor::to_f32)
        } else {
            None
        };
        let na = self.cell.activations();
        let mut ys = Vec::with_capacity(dirs);
        let (mut hl, mut cl) = (Vec::new(), Vec::new());
        for d in 0..dirs {
            let bias = |k: usize| -> Vec<f32> {
                b.as_ref().map_or(vec![0.0; g * hs], |b| {
                    b.slice(s![d, k * g * hs..(k + 1) * g * hs]).to_vec()
                })
            };
            let w3 = w
                .view()
                .into_shape_with_order((dirs, g * hs, input))
                .expect("3-D");
            let r3 = r
                .view()
                .into_shape_with_order((dirs, g * hs, hs))
                .expect("3-D");
            let pr = Params {
                w: w3.index_axis_move(Axis(0), d),
                r: r3.index_axis_move(Axis(0), d),
                wb: bias(0),
                rb: bias(1),
                p: p.as_ref()
                    .map(|p| p.iter().skip(d * 3 * hs).take(3 * hs).copied().collect())
                    .unwrap_or_default(),
                acts: &self.acts[d * na..(d + 1) * na],
            };
            let init = |s: &Option<Array3<f32>>| {
                s.as_ref().map_or_else(
                    || Array2::zeros((batch, hs)),
                    |a| a.index_axis(Axis(0), d).to_owned(),
                )
            };
            let reverse = self.reverse || d == 1;
            let (y, h, c) = self.direction(&x3, &pr, init(&h0), init(&c0), &lens, reverse);
            ys.push(y);
            hl.push(h);
            cl.push(c);
        }
        // Y [seq, dirs, batch, hidden] (layout 1: [batch, seq, dirs, hidden]).
        let mut y = ndarray::Array4::<f32>::zeros((seq, dirs, batch, hs));
        for (d, yd) in ys.iter().enumerate() {
            y.slice_mut(s![.., d, .., ..]).assign(yd);
        }
        let stack = |v: &[Array2<f32>]| {
            let mut a = Array3::<f32>::zeros((dirs, batch, hs));
            for (d, m) in v.iter().enumerate() {
                a.index_axis_mut(Axis(0), d).assign(m);
            }
            if self.batch_first {
                a.permuted_axes([1, 0, 2])
                    .as_standard_layout()
                    .into_owned()
                    .into_dyn()
            } else {
                a.into_dyn()
            }
        };
        let y = if self.batch_first {
            y.permuted_axes([2, 0, 1, 3])
                .as_standard_layout()
                .into_owned()
                .into_dyn()
        } else {
            y.into_dyn()
        };
        let dt = x.dtype();
        let mut out = vec![Tensor::float(y, dt), Tensor::float(stack(&hl), dt)];
        if self.cell == Cell::Lstm {
            out.push(Tensor::float(stack(&cl), dt));
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
    let cell = match op {
        "RNN" => Cell::Rnn,
        "GRU" => Cell::Gru,
        "LSTM" => Cell::Lstm,
        _ => return Ok(None),
    };
    let (dirs, reverse) = match a.string_or("direction", "forward")?.as_str() {
        "forward" => (1, false),
        "reverse" => (1, true),
        "bidirectional" => (2, false),
        d => op_bail!("direction \"{d}\" is not supported"),
    };
    let hidden = to_usize(
        a.int("hidden_size")?
            .ok_or_else(|| OpError(format!("{op} needs `hidden_size`")))?,
        "hidden_size",
    )?;
    Ok(Some(Box::new(Recurrent {
        cell,
        hidden,
        dirs,
        reverse,
        acts: activations(a, cell, dirs)?,
        clip: a.float("clip")?,
        batch_first: a.int_or("layout", 0)? != 0,
        linear_before_reset: a.int_or("linear_before_reset", 0)? != 0,
        input_forget: a.int_or("input_forget", 0)? != 0,
    })))
}
