//! Indexing and selection operators: `TopK`, `NonZero`, `Compress`, `OneHot`,
//! `Trilu`, `EyeLike`, `ScatterElements` (and the old `Scatter`), `ScatterND`,
//! `ReverseSequence`, `Unique`, `CenterCropPad`, `TensorScatter` (KV-cache
//! writes). Values move without arithmetic (except the scatter
//! reductions), so every dtype works.

use ndarray::{ArrayD, Axis, Dimension, IxDyn};

use super::{Ctx, Kernel, arg, axis, opt, to_usize};
use crate::attrs::Attrs;
use crate::tensor::{DType, Data, Tensor, checked_numel};
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &[
    "CenterCropPad",
    "Compress",
    "EyeLike",
    "NonZero",
    "OneHot",
    "ReverseSequence",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "TensorScatter",
    "TopK",
    "Trilu",
    "Unique",
];

/// An index in `[-dim, dim)` as a position.
fn index(v: i64, dim: usize, what: &str) -> Result<usize, OpError> {
    let d = i64::try_from(dim).expect("dim");
    let i = if v < 0 { v + d } else { v };
    if i < 0 || i >= d {
        op_bail!("{what} {v} is out of range for a dimension of {dim}");
    }
    Ok(usize::try_from(i).expect("checked"))
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

#[derive(Debug)]
struct TopK {
    axis: i64,
    largest: bool,
    /// Opset 1: `k` is an attribute.
    k: Option<i64>,
}

impl Kernel for TopK {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let k = match self.k {
            Some(k) => k,
            None => arg(inputs, 1)?
                .to_i64_vec()?
                .first()
                .copied()
                .ok_or_else(|| OpError("K is empty".into()))?,
        };
        let k = to_usize(k, "K")?;
        let ax = axis(self.axis, x.shape().len())?;
        let n = x.shape()[ax];
        if k > n {
            op_bail!("K = {k} is larger than the axis ({n})");
        }
        let largest = self.largest;
        // Order of a lane: by value, ties to the lower index.
        let order = |vals: &[f64]| -> Vec<usize> {
            let mut idx: Vec<usize> = (0..vals.len()).collect();
            idx.sort_by(|&i, &j| {
                let (a, b) = (vals[i], vals[j]);
                let c = if largest {
                    b.partial_cmp(&a)
                } else {
                    a.partial_cmp(&b)
                };
                c.unwrap_or(std::cmp::Ordering::Equal).then(i.cmp(&j))
            });
            idx.truncate(k);
            idx
        };
        let mut oshape = x.shape().to_vec();
        oshape[ax] = k;
        let mut indices = ArrayD::<i64>::zeros(IxDyn(&oshape));
        #[allow(clippy::cast_precision_loss)]
        let vals: ArrayD<f64> = match x.data() {
            Data::Float(a) => a.mapv(f64::from),
            Data::Int(a) => a.mapv(|v| v as f64),
        };
        for (lane, mut out) in vals
            .lanes(Axis(ax))
            .into_iter()
            .zip(indices.lanes_mut(Axis(ax)))
        {
            let v: Vec<f64> = lane.iter().copied().collect();
            for (o, i) in out.iter_mut().zip(order(&v)) {
                *o = i64::try_from(i).expect("index");
            }
        }
        let values = same_kind!(x, |a| {
            let mut o = ArrayD::from_elem(IxDyn(&oshape), Default::default());
            for ((lane, ilane), mut olane) in a
                .lanes(Axis(ax))
                .into_iter()
                .zip(indices.lanes(Axis(ax)))
                .zip(o.lanes_mut(Axis(ax)))
            {
                for (d, &i) in olane.iter_mut().zip(ilane.iter()) {
                    *d = lane[usize::try_from(i).expect("index")];
                }
            }
            o
        });
        Ok(vec![values, Tensor::i64(indices)])
    }
}

#[derive(Debug)]
struct NonZero;

impl Kernel for NonZero {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let nz: Vec<bool> = match x.data() {
            Data::Float(a) => a.iter().map(|&v| v != 0.0).collect(),
            Data::Int(a) => a.iter().map(|&v| v != 0).collect(),
        };
        let shape = x.shape();
        let st = strides(shape);
        let hits: Vec<usize> = (0..nz.len()).filter(|&i| nz[i]).collect();
        let r = shape.len();
        let mut out = ArrayD::<i64>::zeros(IxDyn(&[r, hits.len()]));
        for (j, &flat) in hits.iter().enumerate() {
            for d in 0..r {
                out[[d, j]] = i64::try_from((flat / st[d]) % shape[d]).expect("index");
            }
        }
        Ok(vec![Tensor::i64(out)])
    }
}

#[derive(Debug)]
struct Compress {
    axis: Option<i64>,
}

impl Kernel for Compress {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, c) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let cond = c.to_f32();
        let (x, ax) = match self.axis {
            Some(a) => (x.clone(), axis(a, x.shape().len())?),
            None => (super::reshape(x, &[x.len()])?, 0),
        };
        let n = x.shape()[ax];
        if cond.len() > n {
            op_bail!("condition has {} values for an axis of {n}", cond.len());
        }
        let keep: Vec<usize> = cond
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(i, _)| i)
            .collect();
        Ok(vec![same_kind!(&x, |a| a.select(Axis(ax), &keep))])
    }
}

#[derive(Debug)]
struct OneHot {
    axis: i64,
}

impl Kernel for OneHot {
    #[allow(clippy::cast_possible_truncation)]
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (ind, depth, values) = (arg(inputs, 0)?, arg(inputs, 1)?, arg(inputs, 2)?);
        let Some(&d) = depth.to_f32().iter().next() else {
            op_bail!("depth is empty");
        };
        let depth = to_usize(d as i64, "depth")?;
        if values.len() != 2 {
            op_bail!("values must hold [off, on], has {} values", values.len());
        }
        let ishape = ind.shape();
        let r = ishape.len() + 1;
        let ax = axis(self.axis, r)?;
        let mut oshape = ishape.to_vec();
        oshape.insert(ax, depth);
        checked_numel(&oshape)?;
        let idx: Vec<i64> = ind.to_f32().iter().map(|&v| v as i64).collect();
        let di = i64::try_from(depth).expect("depth");
        let hot = |p: &IxDyn| -> bool {
            let mut src = p.slice().to_vec();
            let k = src.remove(ax);
            let flat = src
                .iter()
                .zip(strides(ishape))
                .map(|(a, s)| a * s)
                .sum::<usize>();
            let v = idx[flat];
            let v = if v < 0 { v + di } else { v };
            v == i64::try_from(k).expect("k")
        };
        Ok(vec![same_kind!(values, |a| {
            let (off, on) = (a[0], a[1]);
            ArrayD::from_shape_fn(IxDyn(&oshape), |p| if hot(&p) { on } else { off })
        })])
    }
}

#[derive(Debug)]
struct Trilu {
    upper: bool,
}

impl Kernel for Trilu {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let k = match opt(inputs, 1) {
            Some(t) => t.to_i64_vec()?.first().copied().unwrap_or(0),
            None => 0,
        };
        let r = x.shape().len();
        if r < 2 {
            op_bail!("input of rank {r}: expected at least 2");
        }
        let upper = self.upper;
        let keep = |p: &IxDyn| -> bool {
            let (i, j) = (
                i64::try_from(p[r - 2]).expect("i"),
                i64::try_from(p[r - 1]).expect("j"),
            );
            if upper { j - i >= k } else { j - i <= k }
        };
        Ok(vec![same_kind!(x, |a| {
            let mut o = a.clone();
            for (p, v) in o.indexed_iter_mut() {
                if !keep(&p) {
                    *v = Default::default();
                }
            }
            o
        })])
    }
}

#[derive(Debug)]
struct EyeLike {
    dtype: Option<DType>,
    k: i64,
}

impl Kernel for EyeLike {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let &[rows, cols] = x.shape() else {
            op_bail!("expects a 2-D input, got {:?}", x.shape());
        };
        let k = self.k;
        let eye = ArrayD::from_shape_fn(IxDyn(&[rows, cols]), |p| {
            i64::try_from(p[1]).expect("j") - i64::try_from(p[0]).expect("i") == k
        });
        let d = self.dtype.unwrap_or(x.dtype());
        Ok(vec![Tensor::bool(eye).cast(d)])
    }
}

/// A scatter's reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

fn reduction(a: &Attrs<'_>) -> Result<Reduction, OpError> {
    Ok(match a.string_or("reduction", "none")?.as_str() {
        "none" => Reduction::None,
        "add" => Reduction::Add,
        "mul" => Reduction::Mul,
        "max" => Reduction::Max,
        "min" => Reduction::Min,
        r => op_bail!("reduction \"{r}\" is not supported"),
    })
}

/// `dst = reduce(dst, v)`.
trait Combine: Copy {
    fn combine(self, v: Self, r: Reduction) -> Self;
}

impl Combine for f32 {
    fn combine(self, v: Self, r: Reduction) -> Self {
        match r {
            Reduction::None => v,
            Reduction::Add => self + v,
            Reduction::Mul => self * v,
            Reduction::Max => self.max(v),
            Reduction::Min => self.min(v),
        }
    }
}

impl Combine for i64 {
    fn combine(self, v: Self, r: Reduction) -> Self {
        match r {
            Reduction::None => v,
            Reduction::Add => self.wrapping_add(v),
            Reduction::Mul => self.wrapping_mul(v),
            Reduction::Max => self.max(v),
            Reduction::Min => self.min(v),
        }
    }
}

/// Writes `updates` into a copy of `data` at the flat offsets `at`.
fn scatter_flat<T: Combine>(
    data: &ArrayD<T>,
    at: &[(usize, usize)],
    updates: &ArrayD<T>,
    r: Reduction,
) -> ArrayD<T> {
    let mut out = data.clone();
    let dst = out.as_slice_mut().expect("standard layout");
    let src = updates.as_slice().expect("standard layout");
    for &(d, s) in at {
        dst[d] = dst[d].combine(src[s], r);
    }
    out
}

#[derive(Debug)]
struct ScatterElements {
    axis: i64,
    reduction: Reduction,
}

impl Kernel for ScatterElements {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, ind, upd) = (arg(inputs, 0)?, arg(inputs, 1)?, arg(inputs, 2)?);
        let shape = x.shape();
        let r = shape.len();
        let ax = axis(self.axis, r)?;
        let idx = ind.ints()?;
        if idx.shape() != upd.shape() || idx.ndim() != r {
            op_bail!(
                "indices {:?} and updates {:?} must have the same shape, of rank {r}",
                idx.shape(),
                upd.shape()
            );
        }
        if x.dtype() != upd.dtype() {
            op_bail!(
                "updates of type {} for data of type {}",
                upd.dtype().name(),
                x.dtype().name()
            );
        }
        let st = strides(shape);
        let mut at = Vec::with_capacity(idx.len());
        for (s, (p, &v)) in idx.indexed_iter().enumerate() {
            let mut flat = 0;
            for d in 0..r {
                let i = if d == ax {
                    index(v, shape[d], "index")?
                } else {
                    if p[d] >= shape[d] {
                        op_bail!("indices {:?} exceed data {shape:?}", idx.shape());
                    }
                    p[d]
                };
                flat += i * st[d];
            }
            at.push((flat, s));
        }
        let red = self.reduction;
        Ok(vec![match (x.data(), upd.data()) {
            (Data::Float(a), Data::Float(u)) => {
                Tensor::float(scatter_flat(a, &at, u, red), x.dtype())
            }
            (Data::Int(a), Data::Int(u)) => Tensor::int(scatter_flat(a, &at, u, red), x.dtype()),
            _ => unreachable!("same dtype"),
        }])
    }
}

#[derive(Debug)]
struct ScatterNd {
    reduction: Reduction,
}

impl Kernel for ScatterNd {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, ind, upd) = (arg(inputs, 0)?, arg(inputs, 1)?, arg(inputs, 2)?);
        let shape = x.shape();
        let idx = ind.ints()?;
        let Some((&q, lead)) = idx.shape().split_last() else {
            op_bail!("indices must have rank >= 1");
        };
        if q > shape.len() {
            op_bail!("index tuples of {q} for data of rank {}", shape.len());
        }
        let mut want: Vec<usize> = lead.to_vec();
        want.extend(&shape[q..]);
        if upd.shape() != want.as_slice() {
            op_bail!("updates {:?}, expected {want:?}", upd.shape());
        }
        if x.dtype() != upd.dtype() {
            op_bail!(
                "updates of type {} for data of type {}",
                upd.dtype().name(),
                x.dtype().name()
            );
        }
        let st = strides(shape);
        let slice: usize = shape[q..].iter().product();
        let flat_idx: Vec<i64> = idx.iter().copied().collect();
        let mut at = Vec::new();
        for (t, tuple) in flat_idx
            .chunks(q.max(1))
            .enumerate()
            .take(lead.iter().product())
        {
            let mut base = 0;
            for d in 0..q {
                base += index(tuple[d], shape[d], "index")? * st[d];
            }
            for e in 0..slice {
                at.push((base + e, t * slice + e));
            }
        }
        let red = self.reduction;
        Ok(vec![match (x.data(), upd.data()) {
            (Data::Float(a), Data::Float(u)) => {
                Tensor::float(scatter_flat(a, &at, u, red), x.dtype())
            }
            (Data::Int(a), Data::Int(u)) => Tensor::int(scatter_flat(a, &at, u, red), x.dtype()),
            _ => unreachable!("same dtype"),
        }])
    }
}

#[derive(Debug)]
struct ReverseSequence {
    batch_axis: usize,
    time_axis: usize,
}

impl Kernel for ReverseSequence {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, lens) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let (ba, ta) = (self.batch_axis, self.time_axis);
        if x.shape().len() < 2 || ba.max(ta) > 1 || ba == ta {
            op_bail!("batch_axis {ba} and time_axis {ta} must be 0 and 1 (either way)");
        }
        let lens = lens.to_i64_vec()?;
        let (nb, nt) = (x.shape()[ba], x.shape()[ta]);
        if lens.len() != nb {
            op_bail!("{} sequence lengths for a batch of {nb}", lens.len());
        }
        let lens: Vec<usize> = lens
            .iter()
            .map(|&l| to_usize(l, "a sequence length").map(|l| l.min(nt)))
            .collect::<Result<_, _>>()?;
        Ok(vec![same_kind!(x, |a| {
            let mut o = a.clone();
            for b in 0..nb {
                for t in 0..lens[b] {
                    let src = a.index_axis(Axis(ba), b);
                    let src_t = src.index_axis(Axis(ta - usize::from(ta > ba)), lens[b] - 1 - t);
                    let mut dst = o.index_axis_mut(Axis(ba), b);
                    dst.index_axis_mut(Axis(ta - usize::from(ta > ba)), t)
                        .assign(&src_t);
                }
            }
            o
        })])
    }
}

/// The distinct slices of `a` along `ax` (every element when `ax` is `None`):
/// (first index of each, the slice each input slice maps to, counts), in
/// sorted order or in order of first occurrence.
fn unique_slices<T: Copy + PartialOrd>(
    a: &ArrayD<T>,
    ax: Option<usize>,
    sorted: bool,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let slices: Vec<Vec<T>> = match ax {
        None => a.iter().map(|&v| vec![v]).collect(),
        Some(ax) => a
            .axis_iter(Axis(ax))
            .map(|s| s.iter().copied().collect())
            .collect(),
    };
    let cmp = |x: &Vec<T>, y: &Vec<T>| {
        x.iter()
            .zip(y)
            .map(|(p, q)| p.partial_cmp(q).unwrap_or(std::cmp::Ordering::Equal))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    };
    // Groups in sorted order (stable: the first index of a group is its first occurrence).
    let mut order: Vec<usize> = (0..slices.len()).collect();
    order.sort_by(|&i, &j| cmp(&slices[i], &slices[j]));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &i in &order {
        match groups.last_mut() {
            Some(g) if cmp(&slices[g[0]], &slices[i]).is_eq() => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    if !sorted {
        groups.sort_by_key(|g| g[0]);
    }
    let mut inverse = vec![0; slices.len()];
    for (k, g) in groups.iter().enumerate() {
        for &i in g {
            inverse[i] = k;
        }
    }
    (
        groups.iter().map(|g| g[0]).collect(),
        inverse,
        groups.iter().map(Vec::len).collect(),
    )
}

#[derive(Debug)]
struct Unique {
    axis: Option<i64>,
    sorted: bool,
}

impl Kernel for Unique {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let ax = self.axis.map(|a| axis(a, x.shape().len())).transpose()?;
        let (first, inverse, counts) = match x.data() {
            Data::Float(a) => unique_slices(a, ax, self.sorted),
            Data::Int(a) => unique_slices(a, ax, self.sorted),
        };
        let y = match ax {
            Some(ax) => same_kind!(x, |a| a.select(Axis(ax), &first)),
            None => {
                let flat = super::reshape(x, &[x.len()])?;
                same_kind!(&flat, |a| a.select(Axis(0), &first))
            }
        };
        let v = |u: &[usize]| {
            Tensor::i64_vec(
                u.iter()
                    .map(|&i| i64::try_from(i).expect("index"))
                    .collect(),
            )
        };
        Ok(vec![y, v(&first), v(&inverse), v(&counts)])
    }
}

#[derive(Debug)]
struct CenterCropPad {
    axes: Option<Vec<i64>>,
}

impl Kernel for CenterCropPad {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let target = arg(inputs, 1)?.to_i64_vec()?;
        let r = x.shape().len();
        let axes: Vec<usize> = match &self.axes {
            Some(a) => a.iter().map(|&i| axis(i, r)).collect::<Result<_, _>>()?,
            None => (0..r).collect(),
        };
        if axes.len() != target.len() {
            op_bail!("{} sizes for {} axes", target.len(), axes.len());
        }
        let mut out_shape = x.shape().to_vec();
        // Per axis: the source range and where it lands (centred; an odd
        // difference puts the extra element at the end).
        let mut src = vec![(0usize, 0usize); r];
        let mut dst = vec![0usize; r];
        for (i, d) in x.shape().iter().enumerate() {
            src[i] = (0, *d);
        }
        for (&ax, &t) in axes.iter().zip(&target) {
            let t = to_usize(t, "a size")?;
            let d = x.shape()[ax];
            out_shape[ax] = t;
            if t < d {
                let lo = (d - t) / 2;
                src[ax] = (lo, lo + t);
            } else {
                dst[ax] = (t - d) / 2;
            }
        }
        checked_numel(&out_shape)?;
        Ok(vec![same_kind!(x, |a| {
            let mut o = ArrayD::from_elem(IxDyn(&out_shape), Default::default());
            let part = a.slice_each_axis(|d| {
                let (lo, hi) = src[d.axis.index()];
                ndarray::Slice::from(lo..hi)
            });
            o.slice_each_axis_mut(|d| {
                let i = d.axis.index();
                let n = src[i].1 - src[i].0;
                ndarray::Slice::from(dst[i]..dst[i] + n)
            })
            .assign(&part);
            o
        })])
    }
}

/// `TensorScatter` (opset 24): writes `update` into a copy of the cache along
/// `axis`, from each batch entry's write index (wrapping when circular).
#[derive(Debug)]
struct TensorScatter {
    axis: i64,
    circular: bool,
}

impl Kernel for TensorScatter {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (cache, upd) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let cs = cache.shape();
        let r = cs.len();
        let ax = axis(self.axis, r)?;
        let us = upd.shape();
        if us.len() != r
            || (0..r).any(|i| {
                if i == ax {
                    us[i] > cs[i]
                } else {
                    us[i] != cs[i]
                }
            })
        {
            op_bail!("update {us:?} does not fit the cache {cs:?} on axis {ax}");
        }
        if ax == 0 {
            op_bail!("the sequence axis cannot be the batch axis");
        }
        if cache.dtype() != upd.dtype() {
            op_bail!(
                "update of type {} for a cache of {}",
                upd.dtype().name(),
                cache.dtype().name()
            );
        }
        let starts: Vec<i64> = match opt(inputs, 2) {
            Some(t) => t.to_i64_vec()?,
            None => vec![0; cs[0]],
        };
        if starts.len() != cs[0] {
            op_bail!("{} write indices for a batch of {}", starts.len(), cs[0]);
        }
        let max = i64::try_from(cs[ax]).expect("dim");
        let st = strides(cs);
        let ust = strides(us);
        let mut at = Vec::with_capacity(upd.len());
        for (s, p) in ndarray::indices(us).into_iter().enumerate() {
            let mut pos = i64::try_from(p[ax]).expect("index") + starts[p[0]];
            if self.circular {
                pos = pos.rem_euclid(max);
            }
            if pos < 0 || pos >= max {
                op_bail!("write position {pos} outside the cache's {max}");
            }
            let mut flat = 0;
            for d in 0..r {
                let i = if d == ax {
                    usize::try_from(pos).expect("checked")
                } else {
                    p[d]
                };
                flat += i * st[d];
            }
            debug_assert_eq!(s, (0..r).map(|d| p[d] * ust[d]).sum::<usize>());
            at.push((flat, s));
        }
        Ok(vec![match (cache.data(), upd.data()) {
            (Data::Float(a), Data::Float(u)) => {
                Tensor::float(scatter_flat(a, &at, u, Reduction::None), cache.dtype())
            }
            (Data::Int(a), Data::Int(u)) => {
                Tensor::int(scatter_flat(a, &at, u, Reduction::None), cache.dtype())
            }
            _ => unreachable!("same dtype"),
        }])
    }
}

/// Builds a kernel of this family.
///
/// # Errors
/// Bad attributes.
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Option<Box<dyn Kernel>>, OpError> {
    Ok(Some(match op {
        // `sorted = 0` allows any order: sorted is one of them.
        "TopK" => Box::new(TopK {
            axis: a.int_or("axis", -1)?,
            largest: a.int_or("largest", 1)? != 0,
            k: if ctx.opset < 10 { a.int("k")? } else { None },
        }),
        "NonZero" => Box::new(NonZero),
        "Compress" => Box::new(Compress {
            axis: a.int("axis")?,
        }),
        "OneHot" => Box::new(OneHot {
            axis: a.int_or("axis", -1)?,
        }),
        "Trilu" => Box::new(Trilu {
            upper: a.int_or("upper", 1)? != 0,
        }),
        "EyeLike" => Box::new(EyeLike {
            dtype: match a.int("dtype")? {
                None => None,
                Some(c) => {
                    let c = i32::try_from(c).unwrap_or(-1);
                    Some(DType::from_onnx(c).ok_or_else(|| {
                        OpError(format!("dtype {} is not supported", DType::onnx_name(c)))
                    })?)
                }
            },
            k: a.int_or("k", 0)?,
        }),
        "ScatterElements" | "Scatter" => Box::new(ScatterElements {
            axis: a.int_or("axis", 0)?,
            reduction: reduction(a)?,
        }),
        "ScatterND" => Box::new(ScatterNd {
            reduction: reduction(a)?,
        }),
        "TensorScatter" => Box::new(TensorScatter {
            axis: a.int_or("axis", -2)?,
            circular: match a.string_or("mode", "linear")?.as_str() {
                "linear" => false,
                "circular" => true,
                m => op_bail!("mode \"{m}\" is not supported (linear, circular)"),
            },
        }),
        "Unique" => Box::new(Unique {
            axis: a.int("axis")?,
            sorted: a.int_or("sorted", 1)? != 0,
        }),
        "CenterCropPad" => Box::new(CenterCropPad {
            axes: a.ints("axes")?,
        }),
        "ReverseSequence" => Box::new(ReverseSequence {
            batch_axis: to_usize(a.int_or("batch_axis", 1)?, "batch_axis")?,
            time_axis: to_usize(a.int_or("time_axis", 0)?, "time_axis")?,
        }),
        _ => return Ok(None),
    }))
}
