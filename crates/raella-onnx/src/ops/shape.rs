//! Shape and indexing operators: `Shape`, `Size`, `Reshape`, `Flatten`,
//! `Squeeze`, `Unsqueeze`, `Transpose`, `Concat`, `Split`, `Slice`, `Gather`,
//! `GatherElements`, `GatherND`, `Expand`, `Tile`, `Pad`, `Range`,
//! `ConstantOfShape`, `DepthToSpace`, `SpaceToDepth`.
//! They move values without arithmetic, so they work on every dtype.

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice as NdSlice};

use super::{Ctx, Kernel, arg, axis, opt, to_usize};
use crate::attrs::Attrs;
use crate::tensor::{DType, Data, Tensor, checked_numel};
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &[
    "Concat",
    "ConstantOfShape",
    "DepthToSpace",
    "Expand",
    "Flatten",
    "Gather",
    "GatherElements",
    "GatherND",
    "Pad",
    "Range",
    "Reshape",
    "Shape",
    "Size",
    "Slice",
    "SpaceToDepth",
    "Split",
    "Squeeze",
    "Tile",
    "Transpose",
    "Unsqueeze",
];

fn usizes(v: &[i64], what: &str) -> Result<Vec<usize>, OpError> {
    v.iter().map(|&x| to_usize(x, what)).collect()
}

fn reshaped<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> Result<ArrayD<T>, OpError> {
    a.as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(shape))
        .map_err(|e| OpError(format!("cannot reshape {:?} to {shape:?}: {e}", a.shape())))
}

#[derive(Debug)]
struct Shape {
    start: i64,
    end: Option<i64>,
}

impl Kernel for Shape {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let s = arg(inputs, 0)?.shape();
        let r = i64::try_from(s.len()).expect("rank");
        let clamp =
            |v: i64| usize::try_from((if v < 0 { v + r } else { v }).clamp(0, r)).expect("clamped");
        let (a, b) = (clamp(self.start), clamp(self.end.unwrap_or(r)));
        let dims: Vec<i64> = s[a..b.max(a)]
            .iter()
            .map(|&d| i64::try_from(d).expect("dim"))
            .collect();
        Ok(vec![Tensor::i64_vec(dims)])
    }
}

#[derive(Debug)]
struct Size;

impl Kernel for Size {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let n = i64::try_from(arg(inputs, 0)?.len()).expect("len");
        Ok(vec![Tensor::i64(ArrayD::from_elem(IxDyn(&[]), n))])
    }
}

/// The output shape of `Reshape` (`0` copies the input's dim unless `allowzero`, `-1` is inferred).
fn reshape_target(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>, OpError> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        out.push(match d {
            -1 => {
                if infer.replace(i).is_some() {
                    op_bail!("shape {spec:?} has more than one -1");
                }
                1
            }
            0 if !allowzero => *input.get(i).ok_or_else(|| {
                OpError(format!("shape {spec:?}: 0 at {i} beyond the input's rank"))
            })?,
            d => to_usize(d, "a shape dimension")?,
        });
    }
    let total = checked_numel(input)?;
    if let Some(i) = infer {
        let known = checked_numel(&out)?;
        if known == 0 || total % known != 0 {
            op_bail!("cannot reshape {input:?} ({total} elements) to {spec:?}");
        }
        out[i] = total / known;
    }
    if checked_numel(&out)? != total {
        op_bail!("cannot reshape {input:?} ({total} elements) to {spec:?}");
    }
    Ok(out)
}

#[derive(Debug)]
struct Reshape {
    allowzero: bool,
    /// Opset < 5: the shape is an attribute.
    shape: Option<Vec<i64>>,
}

impl Kernel for Reshape {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let spec = match &self.shape {
            Some(s) => s.clone(),
            None => arg(inputs, 1)?.to_i64_vec()?,
        };
        let target = reshape_target(x.shape(), &spec, self.allowzero)?;
        Ok(vec![same_kind!(x, |a| reshaped(a, &target)?)])
    }
}

#[derive(Debug)]
struct Flatten {
    axis: i64,
}

impl Kernel for Flatten {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let s = x.shape();
        let ax = if self.axis == i64::try_from(s.len()).expect("rank") {
            s.len()
        } else {
            axis(self.axis, s.len())?
        };
        let target = [s[..ax].iter().product(), s[ax..].iter().product()];
        Ok(vec![same_kind!(x, |a| reshaped(a, &target)?)])
    }
}

#[derive(Debug)]
struct Squeeze {
    axes: Option<Vec<i64>>,
}

impl Kernel for Squeeze {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let s = x.shape();
        let axes = match (&self.axes, opt(inputs, 1)) {
            (Some(a), _) => Some(a.clone()),
            (None, Some(t)) => Some(t.to_i64_vec()?),
            (None, None) => None,
        };
        let drop: Vec<usize> = match axes {
            Some(a) => {
                let mut v = a
                    .iter()
                    .map(|&i| axis(i, s.len()))
                    .collect::<Result<Vec<_>, _>>()?;
                v.sort_unstable();
                v.dedup();
                for &i in &v {
                    if s[i] != 1 {
                        op_bail!("cannot squeeze axis {i} of size {} (shape {s:?})", s[i]);
                    }
                }
                v
            }
            None => (0..s.len()).filter(|&i| s[i] == 1).collect(),
        };
        let target: Vec<usize> = (0..s.len())
            .filter(|i| !drop.contains(i))
            .map(|i| s[i])
            .collect();
        Ok(vec![same_kind!(x, |a| reshaped(a, &target)?)])
    }
}

#[derive(Debug)]
struct Unsqueeze {
    axes: Option<Vec<i64>>,
}

impl Kernel for Unsqueeze {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let axes = match &self.axes {
            Some(a) => a.clone(),
            None => arg(inputs, 1)?.to_i64_vec()?,
        };
        let s = x.shape();
        let rank = s.len() + axes.len();
        let mut pos = axes
            .iter()
            .map(|&i| axis(i, rank))
            .collect::<Result<Vec<_>, _>>()?;
        pos.sort_unstable();
        if pos.windows(2).any(|w| w[0] == w[1]) {
            op_bail!("repeated axes {axes:?}");
        }
        let mut it = s.iter();
        let target: Vec<usize> = (0..rank)
            .map(|i| {
                if pos.contains(&i) {
                    1
                } else {
                    *it.next().expect("rank")
                }
            })
            .collect();
        Ok(vec![same_kind!(x, |a| reshaped(a, &target)?)])
    }
}

#[derive(Debug)]
struct Transpose {
    perm: Option<Vec<i64>>,
}

impl Kernel for Transpose {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let r = x.shape().len();
        let perm: Vec<usize> = match &self.perm {
            Some(p) => {
                let p = usizes(p, "perm")?;
                let mut sorted = p.clone();
                sorted.sort_unstable();
                if sorted != (0..r).collect::<Vec<_>>() {
                    op_bail!("perm {p:?} is not a permutation of the {r} axes");
                }
                p
            }
            None => (0..r).rev().collect(),
        };
        Ok(vec![same_kind!(x, |a| a
            .view()
            .permuted_axes(IxDyn(&perm))
            .as_standard_layout()
            .into_owned())])
    }
}

#[derive(Debug)]
struct Concat {
    axis: i64,
}

impl Kernel for Concat {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let ts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
        let Some(first) = ts.first() else {
            op_bail!("no inputs");
        };
        let ax = axis(self.axis, first.shape().len())?;
        let total: usize = ts
            .iter()
            .map(|t| t.shape().get(ax).copied().unwrap_or(0))
            .sum();
        let mut shape = first.shape().to_vec();
        shape[ax] = total;
        checked_numel(&shape)?;
        for t in &ts {
            if t.dtype() != first.dtype() {
                op_bail!(
                    "inputs of different types: {} and {}",
                    first.dtype().name(),
                    t.dtype().name()
                );
            }
        }
        let data = match first.data() {
            Data::Float(_) => {
                let views: Vec<_> = ts
                    .iter()
                    .map(|t| t.floats().expect("same type").view())
                    .collect();
                Data::Float(concatenate(ax, &views)?)
            }
            Data::Int(_) => {
                let views: Vec<_> = ts
                    .iter()
                    .map(|t| t.ints().expect("same type").view())
                    .collect();
                Data::Int(concatenate(ax, &views)?)
            }
        };
        Ok(vec![super::like(first.dtype(), data)])
    }
}

/// `arrays` joined along axis `ax`, in standard layout: for each index of
/// the axes before `ax`, each array's block of `len_ax x (axes after)`
/// values in turn (ndarray's `concatenate` puts the joined axis outermost in
/// memory, and the copy to standard layout then costs more than the join).
fn concatenate<T: Clone>(ax: usize, arrays: &[ArrayViewD<'_, T>]) -> Result<ArrayD<T>, OpError> {
    let Some(first) = arrays.first() else {
        op_bail!("no inputs");
    };
    let rank = first.ndim();
    if ax >= rank {
        op_bail!("axis {ax} of a rank-{rank} input");
    }
    let mut shape = first.shape().to_vec();
    shape[ax] = 0;
    for a in arrays {
        let same_off_axis =
            a.ndim() == rank && (0..rank).all(|d| d == ax || a.shape()[d] == first.shape()[d]);
        if !same_off_axis {
            op_bail!(
                "inputs of shapes {:?} and {:?} differ off axis {ax}",
                first.shape(),
                a.shape()
            );
        }
        shape[ax] += a.shape()[ax];
    }
    checked_numel(&shape)?;
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product();
    let parts: Vec<_> = arrays.iter().map(|a| a.as_standard_layout()).collect();
    let mut out = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for p in &parts {
            let block = p.shape()[ax] * inner;
            let values = p.as_slice().expect("standard layout");
            out.extend_from_slice(&values[o * block..(o + 1) * block]);
        }
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("the joined shape"))
}

#[derive(Debug)]
struct Split {
    axis: i64,
    split: Option<Vec<i64>>,
    num_outputs: Option<usize>,
    outputs: usize,
}

impl Kernel for Split {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let ax = axis(self.axis, x.shape().len())?;
        let len = x.shape()[ax];
        let sizes: Vec<usize> = match (&self.split, opt(inputs, 1)) {
            (Some(s), _) => usizes(s, "split")?,
            (None, Some(t)) => usizes(&t.to_i64_vec()?, "split")?,
            (None, None) => {
                let n = self.num_outputs.unwrap_or(self.outputs).max(1);
                let chunk = len.div_ceil(n);
                (0..n)
                    .map(|i| chunk.min(len.saturating_sub(i * chunk)))
                    .collect()
            }
        };
        if sizes.iter().sum::<usize>() != len {
            op_bail!("split sizes {sizes:?} do not add up to the axis length {len}");
        }
        let mut out = Vec::with_capacity(sizes.len());
        let mut start = 0;
        for s in sizes {
            let sl = NdSlice::from(start..start + s);
            out.push(same_kind!(x, |a| a.slice_axis(Axis(ax), sl).to_owned()));
            start += s;
        }
        Ok(out)
    }
}

/// `Slice`'s starts, ends and optional axes, when given as attributes.
type SliceAttrs = (Vec<i64>, Vec<i64>, Option<Vec<i64>>);

#[derive(Debug)]
struct SliceOp {
    /// Opset < 10: starts/ends/axes are attributes.
    attrs: Option<SliceAttrs>,
}

impl Kernel for SliceOp {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let (starts, ends, axes, steps) = match &self.attrs {
            Some((s, e, a)) => (s.clone(), e.clone(), a.clone(), None),
            None => (
                arg(inputs, 1)?.to_i64_vec()?,
                arg(inputs, 2)?.to_i64_vec()?,
                opt(inputs, 3).map(Tensor::to_i64_vec).transpose()?,
                opt(inputs, 4).map(Tensor::to_i64_vec).transpose()?,
            ),
        };
        let r = x.shape().len();
        let axes: Vec<usize> = match axes {
            Some(a) => a.iter().map(|&i| axis(i, r)).collect::<Result<_, _>>()?,
            None => (0..starts.len()).collect(),
        };
        let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
        if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            op_bail!("starts, ends, axes and steps differ in length");
        }
        let mut out = x.clone();
        for (((&s, &e), &ax), &st) in starts.iter().zip(&ends).zip(&axes).zip(&steps) {
            if st == 0 {
                op_bail!("step 0 on axis {ax}");
            }
            let dim = i64::try_from(out.shape()[ax]).expect("dim");
            let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
            let (s, e) = (norm(s), norm(e));
            let (lo, hi) = if st > 0 {
                (s.clamp(0, dim), e.clamp(0, dim))
            } else {
                (s.clamp(-1, dim - 1), e.clamp(-1, dim - 1))
            };
            // Indices lo, lo+st, ... strictly before hi.
            let idx: Vec<usize> = if st > 0 {
                (lo..hi)
                    .step_by(usize::try_from(st).expect("positive"))
                    .map(|i| usize::try_from(i).expect("clamped"))
                    .collect()
            } else {
                let mut v = Vec::new();
                let mut i = lo;
                while i > hi {
                    v.push(usize::try_from(i).expect("clamped"));
                    i += st;
                }
                v
            };
            out = same_kind!(&out, |a| a.select(Axis(ax), &idx));
        }
        Ok(vec![out])
    }
}

fn index(v: i64, dim: usize) -> Result<usize, OpError> {
    let d = i64::try_from(dim).expect("dim");
    let i = if v < 0 { v + d } else { v };
    if i < 0 || i >= d {
        op_bail!("index {v} is out of range for a dimension of {dim}");
    }
    Ok(usize::try_from(i).expect("checked"))
}

#[derive(Debug)]
struct Gather {
    axis: i64,
}

impl Kernel for Gather {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, ind) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let ax = axis(self.axis, x.shape().len())?;
        let dim = x.shape()[ax];
        let idx = ind.ints()?;
        let flat: Vec<usize> = idx
            .iter()
            .map(|&v| index(v, dim))
            .collect::<Result<_, _>>()?;
        let mut shape: Vec<usize> = x.shape()[..ax].to_vec();
        shape.extend(idx.shape());
        shape.extend(&x.shape()[ax + 1..]);
        checked_numel(&shape)?;
        Ok(vec![same_kind!(x, |a| reshaped(
            &a.select(Axis(ax), &flat),
            &shape
        )?)])
    }
}

#[derive(Debug)]
struct GatherElements {
    axis: i64,
}

impl Kernel for GatherElements {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, ind) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let r = x.shape().len();
        let ax = axis(self.axis, r)?;
        let idx = ind.ints()?;
        if idx.shape().len() != r {
            op_bail!("indices of rank {} for data of rank {r}", idx.shape().len());
        }
        let dim = x.shape()[ax];
        let gather = |pos: IxDyn, v: i64| -> Result<IxDyn, OpError> {
            let mut p = pos;
            p[ax] = index(v, dim)?;
            for i in 0..r {
                let d = p[i];
                if d >= x.shape()[i] {
                    op_bail!("index position {d} beyond the data's axis {i}");
                }
            }
            Ok(p)
        };
        let mut positions = Vec::with_capacity(idx.len());
        for (pos, &v) in idx.indexed_iter() {
            positions.push(gather(pos, v)?);
        }
        let shape = idx.shape().to_vec();
        Ok(vec![same_kind!(x, |a| ArrayD::from_shape_vec(
            IxDyn(&shape),
            positions.iter().map(|p| a[p.clone()]).collect()
        )
        .expect("shape"))])
    }
}

#[derive(Debug)]
struct GatherNd {
    batch_dims: usize,
}

impl Kernel for GatherNd {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, ind) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let idx = ind.ints()?;
        let (xs, is) = (x.shape(), idx.shape());
        let b = self.batch_dims;
        let Some(&k) = is.last() else {
            op_bail!("indices must have rank >= 1");
        };
        if b >= is.len() || b >= xs.len() || k + b > xs.len() || xs[..b] != is[..b] {
            op_bail!("indices {is:?} do not index data {xs:?} with batch_dims {b}");
        }
        let batch: usize = xs[..b].iter().product();
        let slice_shape = &xs[b + k..];
        let slice_len: usize = slice_shape.iter().product();
        let per_batch: usize = is[b..is.len() - 1].iter().product();
        let mut out_shape: Vec<usize> = is[..is.len() - 1].to_vec();
        out_shape.extend(slice_shape);
        checked_numel(&out_shape)?;
        let idx_flat: Vec<i64> = idx.iter().copied().collect();
        let data_batch: usize = xs[b..].iter().product();
        // Flat offsets of each gathered slice.
        let mut offsets = Vec::with_capacity(batch * per_batch);
        for bi in 0..batch {
            for j in 0..per_batch {
                let ix = &idx_flat[(bi * per_batch + j) * k..(bi * per_batch + j + 1) * k];
                let mut off = 0usize;
                for (d, &v) in ix.iter().enumerate() {
                    off = off * xs[b + d] + index(v, xs[b + d])?;
                }
                offsets.push(bi * data_batch + off * slice_len);
            }
        }
        Ok(vec![same_kind!(x, |a| {
            let flat: Vec<_> = a.iter().cloned().collect();
            let mut out = Vec::with_capacity(offsets.len() * slice_len);
            for &o in &offsets {
                out.extend_from_slice(&flat[o..o + slice_len]);
            }
            ArrayD::from_shape_vec(IxDyn(&out_shape), out).expect("shape")
        })])
    }
}

#[derive(Debug)]
struct Expand;

impl Kernel for Expand {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let spec = usizes(&arg(inputs, 1)?.to_i64_vec()?, "an Expand dimension")?;
        let shape = super::broadcast_shape(x.shape(), &spec)?;
        Ok(vec![same_kind!(x, |a| a
            .broadcast(IxDyn(&shape))
            .expect("broadcast")
            .to_owned())])
    }
}

#[derive(Debug)]
struct Tile;

impl Kernel for Tile {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let reps = usizes(&arg(inputs, 1)?.to_i64_vec()?, "a repeat")?;
        if reps.len() != x.shape().len() {
            op_bail!("{} repeats for rank {}", reps.len(), x.shape().len());
        }
        let shape: Vec<usize> = x
            .shape()
            .iter()
            .zip(&reps)
            .map(|(&d, &r)| d.saturating_mul(r))
            .collect();
        checked_numel(&shape)?;
        let mut out = x.clone();
        for (ax, &r) in reps.iter().enumerate() {
            if r != 1 {
                out = same_kind!(&out, |a| {
                    let views = vec![a.view(); r];
                    concatenate(ax, &views)?
                });
            }
        }
        Ok(vec![out])
    }
}

/// `Pad` (constant, reflect, edge, wrap).
#[derive(Debug)]
struct Pad {
    mode: String,
    /// Opset < 11: pads and value are attributes.
    attrs: Option<(Vec<i64>, f32)>,
}

impl Kernel for Pad {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let r = x.shape().len();
        let (pads, value) = match &self.attrs {
            Some((p, v)) => (p.clone(), Some(Tensor::scalar_f32(*v))),
            None => (arg(inputs, 1)?.to_i64_vec()?, opt(inputs, 2).cloned()),
        };
        let axes: Vec<usize> = match opt(inputs, 3) {
            Some(t) => t
                .to_i64_vec()?
                .iter()
                .map(|&a| axis(a, r))
                .collect::<Result<_, _>>()?,
            None => (0..r).collect(),
        };
        if pads.len() != 2 * axes.len() {
            op_bail!("{} pads for {} axes", pads.len(), axes.len());
        }
        let mut out = x.clone();
        for (k, &ax) in axes.iter().enumerate() {
            let (before, after) = (pads[k], pads[k + axes.len()]);
            if before < 0 || after < 0 {
                // Negative padding crops.
                let dim = i64::try_from(out.shape()[ax]).expect("dim");
                let lo = usize::try_from((-before).max(0)).expect("non-negative");
                let hi = usize::try_from((dim + after.min(0)).max(0)).expect("non-negative");
                if lo > hi {
                    op_bail!("pads {pads:?} crop more than axis {ax} holds");
                }
                out = same_kind!(&out, |a| a
                    .slice_axis(Axis(ax), NdSlice::from(lo..hi))
                    .to_owned());
            }
            let (b, e) = (
                usize::try_from(before.max(0)).expect("non-negative"),
                usize::try_from(after.max(0)).expect("non-negative"),
            );
            if b == 0 && e == 0 {
                continue;
            }
            let dim = out.shape()[ax];
            let mut shape = out.shape().to_vec();
            shape[ax] = dim.saturating_add(b).saturating_add(e);
            checked_numel(&shape)?;
            let src = |i: usize| -> Option<usize> {
                let p = i64::try_from(i).expect("i") - i64::try_from(b).expect("b");
                let n = i64::try_from(dim).expect("dim");
                if (0..n).contains(&p) {
                    return usize::try_from(p).ok();
                }
                match self.mode.as_str() {
                    "edge" => usize::try_from(p.clamp(0, n - 1)).ok(),
                    "reflect" if n > 1 => {
                        let period = 2 * (n - 1);
                        let m = p.rem_euclid(period);
                        usize::try_from(if m < n { m } else { period - m }).ok()
                    }
                    "reflect" => Some(0),
                    "wrap" => usize::try_from(p.rem_euclid(n)).ok(),
                    _ => None,
                }
            };
            if dim == 0 && self.mode != "constant" {
                op_bail!("{} padding of an empty axis", self.mode);
            }
            let map: Vec<Option<usize>> = (0..shape[ax]).map(src).collect();
            out = match out.data() {
                Data::Float(a) => {
                    let v = value
                        .as_ref()
                        .map_or(0.0, |t| t.to_f32().iter().copied().next().unwrap_or(0.0));
                    Tensor::float(pad_axis(a, ax, &map, v), out.dtype())
                }
                Data::Int(a) => {
                    let v = match &value {
                        Some(t) => t
                            .cast(DType::I64)
                            .to_i64_vec()?
                            .first()
                            .copied()
                            .unwrap_or(0),
                        None => 0,
                    };
                    Tensor::int(pad_axis(a, ax, &map, v), out.dtype())
                }
            };
        }
        Ok(vec![out])
    }
}

fn pad_axis<T: Clone>(a: &ArrayD<T>, ax: usize, map: &[Option<usize>], fill: T) -> ArrayD<T> {
    let mut shape = a.shape().to_vec();
    shape[ax] = map.len();
    let mut out = ArrayD::from_elem(IxDyn(&shape), fill);
    for (i, m) in map.iter().enumerate() {
        if let Some(j) = m {
            out.index_axis_mut(Axis(ax), i)
                .assign(&a.index_axis(Axis(ax), *j));
        }
    }
    out
}

#[derive(Debug)]
struct Range;

impl Kernel for Range {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (s, l, d) = (arg(inputs, 0)?, arg(inputs, 1)?, arg(inputs, 2)?);
        let count = |start: f64, limit: f64, delta: f64| -> Result<usize, OpError> {
            if delta == 0.0 || !delta.is_finite() || !start.is_finite() || !limit.is_finite() {
                op_bail!("Range({start}, {limit}, {delta}) is not a finite range");
            }
            let n = ((limit - start) / delta).ceil().max(0.0);
            if n > f64::from(u32::MAX) {
                op_bail!("Range({start}, {limit}, {delta}) has too many elements");
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = n as usize;
            checked_numel(&[n])?;
            Ok(n)
        };
        Ok(vec![match s.data() {
            Data::Float(_) => {
                let f = |t: &Tensor| f64::from(t.to_f32().iter().copied().next().unwrap_or(0.0));
                let (a, b, c) = (f(s), f(l), f(d));
                let n = count(a, b, c)?;
                #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
                let v: Vec<f32> = (0..n).map(|i| (a + c * i as f64) as f32).collect();
                Tensor::float(
                    ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"),
                    s.dtype(),
                )
            }
            Data::Int(_) => {
                let f = |t: &Tensor| -> Result<i64, OpError> {
                    Ok(t.ints()?.iter().copied().next().unwrap_or(0))
                };
                let (a, b, c) = (f(s)?, f(l)?, f(d)?);
                #[allow(clippy::cast_precision_loss)]
                let n = count(a as f64, b as f64, c as f64)?;
                let v: Vec<i64> = (0..n)
                    .map(|i| a.wrapping_add(c.wrapping_mul(i64::try_from(i).expect("n"))))
                    .collect();
                Tensor::int(
                    ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"),
                    s.dtype(),
                )
            }
        }])
    }
}

#[derive(Debug)]
struct ConstantOfShape {
    value: Option<Tensor>,
}

impl Kernel for ConstantOfShape {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let shape = usizes(&arg(inputs, 0)?.to_i64_vec()?, "a dimension")?;
        checked_numel(&shape)?;
        Ok(vec![match &self.value {
            None => Tensor::f32(ArrayD::zeros(IxDyn(&shape))),
            Some(v) => match v.data() {
                Data::Float(a) => Tensor::float(
                    ArrayD::from_elem(IxDyn(&shape), a.iter().copied().next().unwrap_or(0.0)),
                    v.dtype(),
                ),
                Data::Int(a) => Tensor::int(
                    ArrayD::from_elem(IxDyn(&shape), a.iter().copied().next().unwrap_or(0)),
                    v.dtype(),
                ),
            },
        }])
    }
}

/// `DepthToSpace` (DCR or CRD) and `SpaceToDepth` on `[N, C, H, W]`.
#[derive(Debug)]
struct DepthSpace {
    to_space: bool,
    block: usize,
    crd: bool,
}

impl Kernel for DepthSpace {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let &[n, c, h, w] = x.shape() else {
            op_bail!("expects [N, C, H, W], got {:?}", x.shape());
        };
        let b = self.block;
        if b == 0 {
            op_bail!("blocksize 0");
        }
        let (mid, perm, out): (Vec<usize>, Vec<usize>, Vec<usize>) = if self.to_space {
            if c % (b * b) != 0 {
                op_bail!("{c} channels are not a multiple of blocksize^2 = {}", b * b);
            }
            let co = c / (b * b);
            if self.crd {
                (
                    vec![n, co, b, b, h, w],
                    vec![0, 1, 4, 2, 5, 3],
                    vec![n, co, h * b, w * b],
                )
            } else {
                (
                    vec![n, b, b, co, h, w],
                    vec![0, 3, 4, 1, 5, 2],
                    vec![n, co, h * b, w * b],
                )
            }
        } else {
            if h % b != 0 || w % b != 0 {
                op_bail!("{h} x {w} is not a multiple of blocksize {b}");
            }
            (
                vec![n, c, h / b, b, w / b, b],
                // CRD (opset 28): channels outermost; DCR: the block offsets.
                if self.crd {
                    vec![0, 1, 3, 5, 2, 4]
                } else {
                    vec![0, 3, 5, 1, 2, 4]
                },
                vec![n, c * b * b, h / b, w / b],
            )
        };
        Ok(vec![same_kind!(x, |a| {
            let m = reshaped(a, &mid)?;
            let p = m
                .permuted_axes(IxDyn(&perm))
                .as_standard_layout()
                .into_owned();
            reshaped(&p, &out)?
        })])
    }
}

/// Builds a kernel of this family.
///
/// # Errors
/// Bad attributes.
#[allow(clippy::too_many_lines)]
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Option<Box<dyn Kernel>>, OpError> {
    let opset = ctx.opset;
    Ok(Some(match op {
        "Shape" => Box::new(Shape {
            start: a.int_or("start", 0)?,
            end: a.int("end")?,
        }),
        "Size" => Box::new(Size),
        "Reshape" => Box::new(Reshape {
            allowzero: a.int_or("allowzero", 0)? != 0,
            shape: if opset < 5 { a.ints("shape")? } else { None },
        }),
        "Flatten" => Box::new(Flatten {
            axis: a.int_or("axis", 1)?,
        }),
        "Squeeze" => Box::new(Squeeze {
            axes: if opset < 13 { a.ints("axes")? } else { None },
        }),
        "Unsqueeze" => Box::new(Unsqueeze {
            axes: if opset < 13 {
                Some(
                    a.ints("axes")?
                        .ok_or_else(|| OpError("Unsqueeze needs `axes`".into()))?,
                )
            } else {
                None
            },
        }),
        "Transpose" => Box::new(Transpose {
            perm: a.ints("perm")?,
        }),
        "Concat" => Box::new(Concat {
            // Optional (default 1) before opset 4.
            axis: match a.int("axis")? {
                Some(v) => v,
                None if opset < 4 => 1,
                None => op_bail!("Concat needs the attribute `axis`"),
            },
        }),
        "Split" => Box::new(Split {
            axis: a.int_or("axis", 0)?,
            split: if opset < 13 { a.ints("split")? } else { None },
            num_outputs: a
                .int("num_outputs")?
                .map(|n| to_usize(n, "num_outputs"))
                .transpose()?,
            outputs: ctx.outputs,
        }),
        "Slice" => Box::new(SliceOp {
            attrs: if opset < 10 {
                Some((
                    a.ints("starts")?
                        .ok_or_else(|| OpError("Slice needs `starts`".into()))?,
                    a.ints("ends")?
                        .ok_or_else(|| OpError("Slice needs `ends`".into()))?,
                    a.ints("axes")?,
                ))
            } else {
                None
            },
        }),
        "Gather" => Box::new(Gather {
            axis: a.int_or("axis", 0)?,
        }),
        "GatherElements" => Box::new(GatherElements {
            axis: a.int_or("axis", 0)?,
        }),
        "GatherND" => Box::new(GatherNd {
            batch_dims: to_usize(a.int_or("batch_dims", 0)?, "batch_dims")?,
        }),
        "Expand" => Box::new(Expand),
        "Tile" => Box::new(Tile),
        "Pad" => {
            let mode = a.string_or("mode", "constant")?;
            if !matches!(mode.as_str(), "constant" | "reflect" | "edge" | "wrap") {
                op_bail!("attribute `mode` = \"{mode}\": expected constant, reflect, edge or wrap");
            }
            Box::new(Pad {
                attrs: if opset < 11 {
                    Some((
                        a.ints("pads")?
                            .ok_or_else(|| OpError("Pad needs `pads`".into()))?,
                        a.float_or("value", 0.0)?,
                    ))
                } else {
                    None
                },
                mode,
            })
        }
        "Range" => Box::new(Range),
        "ConstantOfShape" => Box::new(ConstantOfShape {
            value: a.tensor("value")?,
        }),
        "DepthToSpace" | "SpaceToDepth" => Box::new(DepthSpace {
            to_space: op == "DepthToSpace",
            block: to_usize(
                a.int("blocksize")?
                    .ok_or_else(|| OpError(format!("{op} needs `blocksize`")))?,
                "blocksize",
            )?,
            crd: a.string_or("mode", "DCR")? == "CRD",
        }),
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, ArrayD};

    /// The standard-layout join gives ndarray's values on every axis, for
    /// parts of different lengths and non-standard (transposed) inputs.
    #[test]
    fn concatenate_matches_ndarray_on_every_axis() {
        let a: ArrayD<i64> = Array::from_iter(0..2 * 3 * 4)
            .into_shape_with_order(IxDyn(&[2, 3, 4]))
            .unwrap();
        for ax in 0..3 {
            let mut shape = vec![2, 3, 4];
            shape[ax] = 5;
            let len = i64::try_from(shape.iter().product::<usize>()).unwrap();
            let b: ArrayD<i64> = Array::from_iter(100..100 + len)
                .into_shape_with_order(IxDyn(&shape))
                .unwrap();
            // A transposed copy viewed back: the same values, not standard layout.
            let bt = b.t().as_standard_layout().into_owned();
            let bv = bt.t();
            assert!(!bv.is_standard_layout());
            let got = concatenate(ax, &[a.view(), bv.clone(), a.view()]).unwrap();
            let want = ndarray::concatenate(Axis(ax), &[a.view(), bv, a.view()]).unwrap();
            assert_eq!(got, want);
            assert!(got.is_standard_layout());
        }
        let bad = ArrayD::<i64>::zeros(IxDyn(&[2, 4, 4]));
        let e = concatenate(2, &[a.view(), bad.view()]).unwrap_err();
        assert!(
            e.0.contains("[2, 3, 4]") && e.0.contains("[2, 4, 4]"),
            "{}",
            e.0
        );
        assert!(concatenate(3, &[a.view()]).is_err());
    }
}
