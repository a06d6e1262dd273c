//! `Einsum`: any equation numpy accepts (explicit or implicit output,
//! ellipses, repeated labels for diagonals, broadcasting of size-1 dimensions),
//! by a direct loop over the output and summed labels, accumulating in f64
//! (floats) or i64 (integers). Transformer exports use it for small attention
//! products; the loop is simple rather than fast.

use std::collections::BTreeMap;

use ndarray::{ArrayD, IxDyn};

use super::{Ctx, Kernel, like};
use crate::attrs::Attrs;
use crate::tensor::{Data, Tensor, checked_numel};
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &["Einsum"];

/// A label: a letter, or (from 256 on) one axis of the ellipsis.
type Label = u16;

/// One term: its labels, with the position of `...` if any.
#[derive(Debug, Clone)]
struct Term {
    labels: Vec<Label>,
    ellipsis: Option<usize>,
}

fn parse_term(t: &str, eq: &str) -> Result<Term, OpError> {
    let mut labels = Vec::new();
    let mut ellipsis = None;
    let mut rest = t;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("...") {
            if ellipsis.replace(labels.len()).is_some() {
                op_bail!("equation `{eq}`: two ellipses in one term");
            }
            rest = r;
            continue;
        }
        let c = rest.as_bytes()[0];
        if !c.is_ascii_alphabetic() {
            op_bail!("equation `{eq}`: unexpected `{}`", c as char);
        }
        labels.push(Label::from(c));
        rest = &rest[1..];
    }
    Ok(Term { labels, ellipsis })
}

#[derive(Debug)]
struct Einsum {
    equation: String,
    inputs: Vec<Term>,
    output: Option<Term>,
}

/// A term's labels with its ellipsis expanded to `k` labels (the last `k` of
/// the `e` broadcast ellipsis axes).
fn expand(t: &Term, k: usize, e: usize) -> Vec<Label> {
    match t.ellipsis {
        None => t.labels.clone(),
        Some(at) => {
            let mut v = t.labels[..at].to_vec();
            v.extend((e - k..e).map(|i| 256 + Label::try_from(i).expect("small")));
            v.extend(&t.labels[at..]);
            v
        }
    }
}

impl Kernel for Einsum {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let ts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
        let eq = &self.equation;
        if ts.len() != self.inputs.len() {
            op_bail!(
                "equation `{eq}` has {} terms, {} inputs given",
                self.inputs.len(),
                ts.len()
            );
        }
        let Some(first) = ts.first() else {
            op_bail!("no inputs");
        };
        if ts.iter().any(|t| t.dtype() != first.dtype()) {
            op_bail!("inputs of different types");
        }
        // Ellipsis ranks, and the broadcast ellipsis rank.
        let mut ks = Vec::with_capacity(ts.len());
        for (t, term) in ts.iter().zip(&self.inputs) {
            let r = t.shape().len();
            let k = match term.ellipsis {
                Some(_) => r.checked_sub(term.labels.len()),
                None => (r == term.labels.len()).then_some(0),
            }
            .ok_or_else(|| {
                OpError(format!(
                    "equation `{eq}`: input of shape {:?} does not match its term",
                    t.shape()
                ))
            })?;
            ks.push(k);
        }
        let e = ks.iter().copied().max().unwrap_or(0);
        let labels: Vec<Vec<Label>> = self
            .inputs
            .iter()
            .zip(&ks)
            .map(|(t, &k)| expand(t, k, e))
            .collect();
        let mut size: BTreeMap<Label, usize> = BTreeMap::new();
        for (t, ls) in ts.iter().zip(&labels) {
            for (&l, &d) in ls.iter().zip(t.shape()) {
                let s = size.entry(l).or_insert(d);
                if *s == 1 {
                    *s = d;
                } else if d != 1 && d != *s {
                    op_bail!("equation `{eq}`: label sizes {d} and {s} disagree");
                }
            }
        }
        let out: Vec<Label> = match &self.output {
            // Without `...` in an explicit output, the ellipsis axes are summed.
            Some(o) => expand(o, e, e),
            None => {
                let mut once: Vec<Label> = size
                    .keys()
                    .copied()
                    .filter(|&l| {
                        l < 256 && labels.iter().flatten().filter(|&&m| m == l).count() == 1
                    })
                    .collect();
                once.sort_unstable();
                let mut v: Vec<Label> = (0..e)
                    .map(|i| 256 + Label::try_from(i).expect("small"))
                    .collect();
                v.extend(once);
                v
            }
        };
        for l in &out {
            if !size.contains_key(l) {
                op_bail!("equation `{eq}`: an output label appears in no input");
            }
        }
        let summed: Vec<Label> = size.keys().copied().filter(|l| !out.contains(l)).collect();
        let out_shape: Vec<usize> = out.iter().map(|l| size[l]).collect();
        checked_numel(&out_shape)?;
        // Per operand, per loop label (output labels, then summed): its stride.
        let loop_labels: Vec<Label> = out.iter().chain(&summed).copied().collect();
        let strides: Vec<Vec<usize>> = ts
            .iter()
            .zip(&labels)
            .map(|(t, ls)| {
                let shape = t.shape();
                let mut st = vec![0usize; shape.len()];
                for i in (0..shape.len()).rev() {
                    st[i] = if i + 1 < shape.len() {
                        st[i + 1] * shape[i + 1]
                    } else {
                        1
                    };
                }
                loop_labels
                    .iter()
                    .map(|l| {
                        ls.iter()
                            .enumerate()
                            .filter(|(i, m)| *m == l && shape[*i] != 1)
                            .map(|(i, _)| st[i])
                            .sum()
                    })
                    .collect()
            })
            .collect();
        let dims: Vec<usize> = loop_labels.iter().map(|l| size[l]).collect();
        let n_out: usize = out_shape.iter().product();
        let n_sum: usize = summed.iter().map(|l| size[l]).product();
        let no = out.len();
        // The loop visits every (output, summed) index: bound its length.
        if n_out.checked_mul(n_sum).is_none_or(|v| v > 1 << 32) {
            op_bail!("equation `{eq}` needs {n_out} x {n_sum} steps, more than 2^32");
        }
        let run = |f: &mut dyn FnMut(usize, &[usize])| {
            let mut offs = vec![0usize; ts.len()];
            let mut idx = vec![0usize; dims.len()];
            for o in 0..n_out {
                for s in 0..n_sum {
                    // Decode (o, s) into the loop index.
                    let (mut a, mut b) = (o, s);
                    for d in (0..dims.len()).rev() {
                        if d >= no {
                            idx[d] = b % dims[d];
                            b /= dims[d];
                        } else {
                            idx[d] = a % dims[d];
                            a /= dims[d];
                        }
                    }
                    for (k, st) in strides.iter().enumerate() {
                        offs[k] = idx.iter().zip(st).map(|(i, s)| i * s).sum();
                    }
                    f(o, &offs);
                }
            }
        };
        let data = match first.data() {
            Data::Float(_) => {
                let srcs: Vec<Vec<f64>> = ts
                    .iter()
                    .map(|t| t.to_f32().iter().map(|&v| f64::from(v)).collect())
                    .collect();
                let mut acc = vec![0.0f64; n_out];
                run(&mut |o, offs| {
                    acc[o] += srcs.iter().zip(offs).map(|(s, &i)| s[i]).product::<f64>();
                });
                #[allow(clippy::cast_possible_truncation)]
                Data::Float(
                    ArrayD::from_shape_vec(
                        IxDyn(&out_shape),
                        acc.iter().map(|&v| v as f32).collect(),
                    )
                    .expect("shape"),
                )
            }
            Data::Int(_) => {
                let srcs: Vec<Vec<i64>> = ts
                    .iter()
                    .map(|t| t.ints().map(|a| a.iter().copied().collect()))
                    .collect::<Result<_, _>>()?;
                let mut acc = vec![0i64; n_out];
                run(&mut |o, offs| {
                    let p = srcs
                        .iter()
                        .zip(offs)
                        .fold(1i64, |p, (s, &i)| p.wrapping_mul(s[i]));
                    acc[o] = acc[o].wrapping_add(p);
                });
                Data::Int(ArrayD::from_shape_vec(IxDyn(&out_shape), acc).expect("shape"))
            }
        };
        Ok(vec![like(first.dtype(), data)])
    }
}

/// Builds a kernel of this family.
///
/// # Errors
/// A malformed equation.
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Option<Box<dyn Kernel>>, OpError> {
    let _ = ctx;
    if op != "Einsum" {
        return Ok(None);
    }
    let equation: String = a
        .string("equation")?
        .ok_or_else(|| OpError("Einsum needs `equation`".into()))?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let (lhs, rhs) = match equation.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (equation.as_str(), None),
    };
    let inputs = lhs
        .split(',')
        .map(|t| parse_term(t, &equation))
        .collect::<Result<Vec<_>, _>>()?;
    let output = rhs.map(|r| parse_term(r, &equation)).transpose()?;
    Ok(Some(Box::new(Einsum {
        equation,
        inputs,
        output,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::AttributeProto;

    fn einsum(eq: &str, ins: &[&Tensor]) -> Tensor {
        let a = [AttributeProto {
            name: Some("equation".into()),
            s: Some(eq.as_bytes().to_vec()),
            r#type: Some(3),
            ..Default::default()
        }];
        let k = build(
            "Einsum",
            &Attrs::new(&a),
            Ctx {
                opset: 12,
                outputs: 1,
            },
        )
        .unwrap()
        .unwrap();
        let v: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
        k.eval(&v).unwrap().remove(0)
    }

    #[test]
    fn implicit_output_sorts_the_free_labels() {
        // `ba` alone is a transpose: the implicit output is `ab`.
        let x = Tensor::f32(
            ArrayD::from_shape_vec(IxDyn(&[2, 3]), (0..6).map(|v| v as f32).collect()).unwrap(),
        );
        let y = einsum("ba", &[&x]);
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(y.floats().unwrap()[[2, 1]], 5.0);
        // A repeated label is a diagonal, summed when absent from the output.
        let m =
            Tensor::f32(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, 2.0, 3.0, 4.0]).unwrap());
        assert_eq!(einsum("ii", &[&m]).floats().unwrap()[[]], 5.0);
        // Ellipses broadcast: a batched matrix product.
        let b = Tensor::f32(ArrayD::from_elem(IxDyn(&[4, 2, 3]), 1.0));
        let c = Tensor::f32(ArrayD::from_elem(IxDyn(&[3, 5]), 2.0));
        let p = einsum("...ij,jk->...ik", &[&b, &c]);
        assert_eq!(p.shape(), &[4, 2, 5]);
        assert_eq!(p.floats().unwrap()[[3, 1, 4]], 6.0);
    }
}
