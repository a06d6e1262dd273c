//! Control flow: `If`, `Loop` and `Scan`, whose bodies are graphs of their own.
//!
//! The importer builds each body as a [`Graph`] whose last inputs are the
//! values it reads from enclosing scopes, and appends those values to the
//! node's inputs; a kernel here runs the body with [`crate::exec::run`]. Weight
//! layers inside a body run on the float runner, whatever runs the outer graph
//! (exports put their convolutions outside control flow).

use ndarray::{Axis, stack};

use super::{Kernel, arg, axis, opt};
use crate::attrs::Attrs;
use crate::exec::{FloatRunner, run};
use crate::graph::Graph;
use crate::tensor::{Data, Tensor};
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &["If", "Loop", "Scan"];

/// A body and which of the node's free (outer-scope) inputs it reads.
#[derive(Debug)]
pub struct Body {
    graph: Graph,
    reads: Vec<usize>,
}

impl Body {
    /// A body reading `reads` (indices into the node's free inputs).
    #[must_use]
    pub fn new(graph: Graph, reads: Vec<usize>) -> Self {
        Self { graph, reads }
    }

    fn run(&self, mut ins: Vec<Tensor>, free: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        ins.extend(self.reads.iter().map(|&i| free[i].clone()));
        run(&self.graph, ins, &FloatRunner, 0).map_err(|e| OpError(format!("in the body: {e}")))
    }
}

fn truth(t: &Tensor) -> Result<bool, OpError> {
    if t.len() != 1 {
        op_bail!("a condition of shape {:?}: expected one value", t.shape());
    }
    Ok(t.to_f32().iter().next().is_some_and(|&v| v != 0.0))
}

/// Stacks equally shaped tensors along a new axis `ax`.
fn stack_all(ts: &[Tensor], ax: usize) -> Result<Tensor, OpError> {
    let Some(first) = ts.first() else {
        op_bail!("nothing to stack");
    };
    if ts
        .iter()
        .any(|t| t.dtype() != first.dtype() || t.shape() != first.shape())
    {
        op_bail!("scan outputs of different types or shapes");
    }
    let err = |e: ndarray::ShapeError| OpError(e.to_string());
    Ok(match first.data() {
        Data::Float(_) => {
            let v: Vec<_> = ts
                .iter()
                .map(|t| t.floats().expect("float").view())
                .collect();
            Tensor::float(stack(Axis(ax), &v).map_err(err)?, first.dtype())
        }
        Data::Int(_) => {
            let v: Vec<_> = ts.iter().map(|t| t.ints().expect("int").view()).collect();
            Tensor::int(stack(Axis(ax), &v).map_err(err)?, first.dtype())
        }
    })
}

#[derive(Debug)]
struct If {
    then_branch: Body,
    else_branch: Body,
    free: usize,
}

impl Kernel for If {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let free: Vec<&Tensor> = inputs[inputs.len() - self.free..]
            .iter()
            .map(|t| t.ok_or_else(|| OpError("an outer value is missing".into())))
            .collect::<Result<_, _>>()?;
        let body = if truth(arg(inputs, 0)?)? {
            &self.then_branch
        } else {
            &self.else_branch
        };
        body.run(Vec::new(), &free)
    }
}

#[derive(Debug)]
struct Loop {
    body: Body,
    free: usize,
}

/// Most iterations a loop without a trip count may run.
const MAX_ITERATIONS: i64 = 1 << 24;

impl Kernel for Loop {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let declared = &inputs[..inputs.len() - self.free];
        let free: Vec<&Tensor> = inputs[inputs.len() - self.free..]
            .iter()
            .map(|t| t.ok_or_else(|| OpError("an outer value is missing".into())))
            .collect::<Result<_, _>>()?;
        let max = match opt(declared, 0) {
            Some(t) => t
                .to_i64_vec()?
                .first()
                .copied()
                .ok_or_else(|| OpError("M is empty".into()))?,
            None => MAX_ITERATIONS,
        };
        let mut cond = opt(declared, 1).map(truth).transpose()?.unwrap_or(true);
        let mut carried: Vec<Tensor> = declared
            .iter()
            .skip(2)
            .map(|t| {
                t.cloned()
                    .ok_or_else(|| OpError("a loop-carried value is missing".into()))
            })
            .collect::<Result<_, _>>()?;
        let n = carried.len();
        let mut scans: Vec<Vec<Tensor>> = Vec::new();
        let mut i = 0i64;
        while i < max && cond {
            let mut ins = vec![
                Tensor::i64(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[]), i)),
                Tensor::bool(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[]), cond)),
            ];
            ins.extend(carried.iter().cloned());
            let mut outs = self.body.run(ins, &free)?;
            if outs.len() < n + 1 {
                op_bail!(
                    "the body returns {} values, expected at least {}",
                    outs.len(),
                    n + 1
                );
            }
            let rest = outs.split_off(n + 1);
            cond = truth(&outs[0])?;
            carried = outs.split_off(1);
            if scans.is_empty() {
                scans = vec![Vec::new(); rest.len()];
            }
            for (s, t) in scans.iter_mut().zip(rest) {
                s.push(t);
            }
            i += 1;
        }
        if i >= MAX_ITERATIONS && cond && opt(declared, 0).is_none() {
            op_bail!("no trip count and the condition held for {MAX_ITERATIONS} iterations");
        }
        let mut out = carried;
        for s in &scans {
            out.push(stack_all(s, 0)?);
        }
        Ok(out)
    }
}

#[derive(Debug)]
struct Scan {
    body: Body,
    free: usize,
    scan_inputs: usize,
    in_axes: Vec<i64>,
    in_reverse: Vec<bool>,
    out_axes: Vec<i64>,
    out_reverse: Vec<bool>,
}

impl Kernel for Scan {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let declared: Vec<&Tensor> = inputs[..inputs.len() - self.free]
            .iter()
            .map(|t| t.ok_or_else(|| OpError("an input is missing".into())))
            .collect::<Result<_, _>>()?;
        let free: Vec<&Tensor> = inputs[inputs.len() - self.free..]
            .iter()
            .map(|t| t.ok_or_else(|| OpError("an outer value is missing".into())))
            .collect::<Result<_, _>>()?;
        let m = self.scan_inputs;
        if m > declared.len() {
            op_bail!("{m} scan inputs among {} inputs", declared.len());
        }
        let n = declared.len() - m;
        let mut states: Vec<Tensor> = declared[..n].iter().map(|t| (*t).clone()).collect();
        let xs = &declared[n..];
        let axes: Vec<usize> = (0..m)
            .map(|k| {
                axis(
                    self.in_axes.get(k).copied().unwrap_or(0),
                    xs[k].shape().len(),
                )
            })
            .collect::<Result<_, _>>()?;
        let len = xs.first().map_or(0, |t| t.shape()[axes[0]]);
        if xs.iter().zip(&axes).any(|(t, &a)| t.shape()[a] != len) {
            op_bail!("scan inputs of different lengths");
        }
        let mut scans: Vec<Vec<Tensor>> = Vec::new();
        for t in 0..len {
            let mut ins = states.clone();
            for (k, x) in xs.iter().enumerate() {
                let i = if self.in_reverse.get(k).copied().unwrap_or(false) {
                    len - 1 - t
                } else {
                    t
                };
                let ax = Axis(axes[k]);
                ins.push(match x.data() {
                    Data::Float(a) => Tensor::float(a.index_axis(ax, i).to_owned(), x.dtype()),
                    Data::Int(a) => Tensor::int(a.index_axis(ax, i).to_owned(), x.dtype()),
                });
            }
            let mut outs = self.body.run(ins, &free)?;
            if outs.len() < n {
                op_bail!("the body returns {} values for {n} states", outs.len());
            }
            let rest = outs.split_off(n);
            states = outs;
            if scans.is_empty() {
                scans = vec![Vec::new(); rest.len()];
            }
            for (s, v) in scans.iter_mut().zip(rest) {
                s.push(v);
            }
        }
        let mut out = states;
        for (k, mut s) in scans.into_iter().enumerate() {
            if self.out_reverse.get(k).copied().unwrap_or(false) {
                s.reverse();
            }
            let rank = s.first().map_or(0, |t| t.shape().len()) + 1;
            let ax = axis(self.out_axes.get(k).copied().unwrap_or(0), rank)?;
            out.push(stack_all(&s, ax)?);
        }
        Ok(out)
    }
}

/// Builds a control-flow kernel from its bodies (by attribute name).
///
/// # Errors
/// A missing body or bad attributes.
pub fn build(
    op: &str,
    a: &Attrs<'_>,
    mut bodies: Vec<(String, Body)>,
    free: usize,
    opset: i64,
) -> Result<Box<dyn Kernel>, OpError> {
    let mut take = |name: &str| -> Result<Body, OpError> {
        let i = bodies
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| OpError(format!("{op} needs the graph attribute `{name}`")))?;
        Ok(bodies.swap_remove(i).1)
    };
    Ok(match op {
        "If" => Box::new(If {
            then_branch: take("then_branch")?,
            else_branch: take("else_branch")?,
            free,
        }),
        "Loop" => Box::new(Loop {
            body: take("body")?,
            free,
        }),
        "Scan" => {
            if opset < 9 {
                op_bail!("Scan before opset 9 (batched, with sequence_lens) is not supported");
            }
            let bools = |name: &str| -> Result<Vec<bool>, OpError> {
                Ok(a.ints(name)?
                    .unwrap_or_default()
                    .iter()
                    .map(|&v| v != 0)
                    .collect())
            };
            Box::new(Scan {
                body: take("body")?,
                free,
                scan_inputs: usize::try_from(
                    a.int("num_scan_inputs")?
                        .ok_or_else(|| OpError("Scan needs `num_scan_inputs`".into()))?,
                )
                .map_err(|_| OpError("num_scan_inputs must be >= 0".into()))?,
                in_axes: a.ints("scan_input_axes")?.unwrap_or_default(),
                in_reverse: bools("scan_input_directions")?,
                out_axes: a.ints("scan_output_axes")?.unwrap_or_default(),
                out_reverse: bools("scan_output_directions")?,
            })
        }
        _ => op_bail!("`{op}` is not a control-flow op"),
    })
}
