//! Spatial sampling: `GridSample` (any number of spatial dimensions; nearest,
//! linear and cubic; zeros, border and reflection padding), `AffineGrid`, and
//! `DeformConv` (2-D; a convolution whose taps sample the input bilinearly at
//! learned offsets, optionally masked), as spatial transformers and deformable
//! detectors export them; after onnx's reference.

use ndarray::{ArrayD, IxDyn};

use super::{Ctx, Kernel, arg, opt, to_usize};
use crate::attrs::Attrs;
use crate::tensor::Tensor;
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &["AffineGrid", "DeformConv", "GridSample"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interp {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

#[derive(Debug)]
struct GridSample {
    mode: Interp,
    padding: Padding,
    align_corners: bool,
}

/// Reflects `x` into `[lo, hi]` by its nearer border, as often as needed.
#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
fn reflect(x: f32, lo: f32, hi: f32) -> f32 {
    let rng = hi - lo;
    if x < lo {
        let dx = lo - x;
        let n = (dx / rng) as i64;
        let r = dx - n as f32 * rng;
        if n % 2 == 0 { lo + r } else { hi - r }
    } else if x > hi {
        let dx = x - hi;
        let n = (dx / rng) as i64;
        let r = dx - n as f32 * rng;
        if n % 2 == 0 { hi - r } else { lo + r }
    } else {
        x
    }
}

fn cubic(x: f32) -> [f32; 4] {
    let a = -0.75f32;
    let x = x.abs();
    let (p, q, r) = (x + 1.0, 1.0 - x, 2.0 - x);
    [
        ((a * p - 5.0 * a) * p + 8.0 * a) * p - 4.0 * a,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
        ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
        ((a * r - 5.0 * a) * r + 8.0 * a) * r - 4.0 * a,
    ]
}

impl Kernel for GridSample {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        clippy::cast_sign_loss
    )]
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        let grid = arg(inputs, 1)?.to_f32();
        let xs = xa.shape();
        let gs = grid.shape();
        let nd = xs.len().saturating_sub(2);
        if nd == 0 || gs.len() != nd + 2 || gs[0] != xs[0] || gs[nd + 1] != nd {
            op_bail!("X {xs:?} and grid {gs:?}: expected [N, C, D1..Dk] and [N, O1..Ok, {nd}]");
        }
        if nd > 3 {
            op_bail!("{nd}-D sampling is not supported (1-D to 3-D are)");
        }
        let (n, c) = (xs[0], xs[1]);
        let dims = &xs[2..];
        let plane: usize = dims.iter().product();
        let outs = &gs[1..=nd];
        let no: usize = outs.iter().product();
        let mut oshape = vec![n, c];
        oshape.extend(outs);
        crate::tensor::checked_numel(&oshape)?;
        let (lo, hi): (Vec<f32>, Vec<f32>) = dims
            .iter()
            .map(|&d| {
                if self.align_corners {
                    (0.0, d as f32 - 1.0)
                } else {
                    (-0.5, d as f32 - 0.5)
                }
            })
            .unzip();
        let mut st = vec![1usize; nd];
        for i in (0..nd.saturating_sub(1)).rev() {
            st[i] = st[i + 1] * dims[i + 1];
        }
        let src = xa.as_slice().expect("standard layout");
        let g = grid.as_slice().expect("standard layout");
        let mut out = vec![0.0f32; n * c * no];
        let taps: usize = match self.mode {
            Interp::Nearest => 1,
            Interp::Linear => 2,
            Interp::Cubic => 4,
        };
        for b in 0..n {
            for o in 0..no {
                // The grid's last axis is (x, y, ...): reversed to the data's order.
                let gv = &g[(b * no + o) * nd..(b * no + o + 1) * nd];
                let mut coord: Vec<f32> = (0..nd)
                    .map(|i| {
                        let v = gv[nd - 1 - i];
                        let len = dims[i] as f32;
                        if self.align_corners {
                            (v + 1.0) / 2.0 * (len - 1.0)
                        } else {
                            ((v + 1.0) * len - 1.0) / 2.0
                        }
                    })
                    .collect();
                if self.mode == Interp::Nearest {
                    for v in &mut coord {
                        *v = v.round_ties_even();
                    }
                }
                for i in 0..nd {
                    let v = coord[i];
                    if v < lo[i] || v > hi[i] {
                        match self.padding {
                            Padding::Border => coord[i] = v.clamp(0.0, dims[i] as f32 - 1.0),
                            Padding::Reflection => coord[i] = reflect(v, lo[i], hi[i]),
                            Padding::Zeros => {}
                        }
                    }
                }
                // Per axis: (index, weight) taps.
                let axis_taps: Vec<Vec<(i64, f32)>> = coord
                    .iter()
                    .map(|&v| match self.mode {
                        Interp::Nearest => vec![(v as i64, 1.0)],
                        Interp::Linear => {
                            let f = v.floor();
                            let t = v - f;
                            vec![(f as i64, 1.0 - t), (f as i64 + 1, t)]
                        }
                        Interp::Cubic => {
                            let f = v.floor();
                            let w = cubic(v - f);
                            (0..4).map(|k| (f as i64 - 1 + k as i64, w[k])).collect()
                        }
                    })
                    .collect();
                // A pixel's flat offset within a plane, or None (zero padding).
                let fetch = |idx: &[i64]| -> Option<usize> {
                    let mut off = 0;
                    for i in 0..nd {
                        let d = dims[i] as i64;
                        let j = match self.padding {
                            Padding::Zeros => {
                                if idx[i] < 0 || idx[i] >= d {
                                    return None;
                                }
                                idx[i]
                            }
                            Padding::Border => idx[i].clamp(0, d - 1),
                            Padding::Reflection => {
                                (reflect(idx[i] as f32, lo[i], hi[i]) as i64).clamp(0, d - 1)
                            }
                        };
                        off += j as usize * st[i];
                    }
                    Some(off)
                };
                let combos = taps.pow(u32::try_from(nd).expect("rank"));
                let mut terms: Vec<(usize, f32)> = Vec::with_capacity(combos);
                let mut idx = vec![0i64; nd];
                for k in 0..combos {
                    let (mut r, mut w) = (k, 1.0f32);
                    for i in (0..nd).rev() {
                        let (j, wt) = axis_taps[i][r % taps];
                        r /= taps;
                        idx[i] = j;
                        w *= wt;
                    }
                    if let Some(off) = fetch(&idx) {
                        terms.push((off, w));
                    }
                }
                for ch in 0..c {
                    let p = &src[(b * c + ch) * plane..(b * c + ch + 1) * plane];
                    out[(b * c + ch) * no + o] = terms.iter().map(|&(off, w)| w * p[off]).sum();
                }
            }
        }
        let mut shape = vec![n, c];
        shape.extend(outs);
        Ok(vec![Tensor::float(
            ArrayD::from_shape_vec(IxDyn(&shape), out).expect("shape"),
            x.dtype(),
        )])
    }
}

#[derive(Debug)]
struct AffineGrid {
    align_corners: bool,
}

impl Kernel for AffineGrid {
    #[allow(clippy::cast_precision_loss)]
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let theta = arg(inputs, 0)?;
        let t = theta.to_f32();
        let size: Vec<usize> = arg(inputs, 1)?
            .to_i64_vec()?
            .iter()
            .map(|&v| to_usize(v, "a size"))
            .collect::<Result<_, _>>()?;
        let nd = size.len().saturating_sub(2);
        if !(2..=3).contains(&nd) || t.shape() != [size[0], nd, nd + 1] {
            op_bail!(
                "theta {:?} for size {size:?}: expected [N, {nd}, {}] and 2-D or 3-D sizes",
                t.shape(),
                nd + 1
            );
        }
        let dims = &size[2..];
        // Normalised base coordinates along one axis.
        let base = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|i| {
                    if self.align_corners {
                        if len == 1 {
                            0.0
                        } else {
                            -1.0 + 2.0 * i as f32 / (len - 1) as f32
                        }
                    } else {
                        (2.0 * i as f32 + 1.0) / len as f32 - 1.0
                    }
                })
                .collect()
        };
        let axes: Vec<Vec<f32>> = dims.iter().map(|&d| base(d)).collect();
        let mut shape = vec![size[0]];
        shape.extend(dims);
        shape.push(nd);
        crate::tensor::checked_numel(&shape)?;
        let no: usize = dims.iter().product();
        let mut out = Vec::with_capacity(size[0] * no * nd);
        for b in 0..size[0] {
            for o in 0..no {
                // Position (z, y, x) as grid coordinates (x, y, z, 1).
                let mut r = o;
                let mut p = vec![0.0f32; nd];
                for i in (0..nd).rev() {
                    p[nd - 1 - i] = axes[i][r % dims[i]];
                    r /= dims[i];
                }
                p.push(1.0);
                for row in 0..nd {
                    out.push((0..=nd).map(|k| t[[b, row, k]] * p[k]).sum::<f32>());
                }
            }
        }
        Ok(vec![Tensor::float(
            ArrayD::from_shape_vec(IxDyn(&shape), out).expect("shape"),
            theta.dtype(),
        )])
    }
}

#[derive(Debug)]
struct DeformConv {
    attrs: Vec<crate::proto::AttributeProto>,
}

/// `plane [h, w]` sampled bilinearly at `(y, x)`; taps outside are zero.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]
fn bilinear_zero(plane: &[f32], h: usize, w: usize, y: f32, x: f32) -> f32 {
    let (y0, x0) = (y.floor(), x.floor());
    let (ly, lx) = (y - y0, x - x0);
    let mut v = 0.0;
    for (dy, wy) in [(0.0, 1.0 - ly), (1.0, ly)] {
        for (dx, wx) in [(0.0, 1.0 - lx), (1.0, lx)] {
            let (yy, xx) = (y0 + dy, x0 + dx);
            if yy >= 0.0 && xx >= 0.0 && (yy as usize) < h && (xx as usize) < w {
                v += wy * wx * plane[yy as usize * w + xx as usize];
            }
        }
    }
    v
}

impl Kernel for DeformConv {
    #[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, wt, off) = (arg(inputs, 0)?, arg(inputs, 1)?, arg(inputs, 2)?);
        let xa = x.floats()?;
        let (w, offs) = (wt.to_f32(), off.to_f32());
        let a = Attrs::new(&self.attrs);
        let g = super::nn::conv_geom(&a, w.shape(), false)?;
        let (&[n, c, h, wd], &[m, cg, kh, kw]) = (xa.shape(), w.shape()) else {
            op_bail!(
                "X {:?} and W {:?}: 2-D DeformConv takes 4-D tensors",
                xa.shape(),
                w.shape()
            );
        };
        let groups = g.groups;
        if c != cg * groups {
            op_bail!(
                "{c} input channels for weights {:?} in {groups} groups",
                w.shape()
            );
        }
        let og = usize::try_from(a.int_or("offset_group", 1)?)
            .ok()
            .filter(|&v| v > 0 && c % v == 0)
            .ok_or_else(|| OpError("offset_group must divide the channels".into()))?;
        let &[n2, oc2, oh, ow] = offs.shape() else {
            op_bail!(
                "offset of shape {:?}: expected [N, 2 * groups * kh * kw, oh, ow]",
                offs.shape()
            );
        };
        if n2 != n || oc2 != og * kh * kw * 2 {
            op_bail!(
                "offset of shape {:?} for {og} offset groups of {kh} x {kw}",
                offs.shape()
            );
        }
        crate::tensor::checked_numel(&[n, m, oh, ow])?;
        crate::tensor::checked_numel(&[cg, kh * kw, oh, ow])?;
        let mask = opt(inputs, 4).map(Tensor::to_f32);
        if let Some(mk) = &mask
            && mk.shape() != [n, og * kh * kw, oh, ow]
        {
            op_bail!("mask of shape {:?}", mk.shape());
        }
        let bias = opt(inputs, 3).map(Tensor::to_f32);
        let src = xa.as_slice().expect("standard layout");
        let (os, ws) = (
            offs.as_slice().expect("standard layout"),
            w.as_slice().expect("standard layout"),
        );
        let ms = mask
            .as_ref()
            .map(|t| t.as_slice().expect("standard layout").to_vec());
        let mg = m / groups;
        let kk = kh * kw;
        let per_og = c / og;
        let mut out = vec![0.0f32; n * m * oh * ow];
        for b in 0..n {
            for gi in 0..groups {
                // Columns: (channel of the group, ky, kx) x output position.
                let mut cols = vec![0.0f32; cg * kk * oh * ow];
                for ci in 0..cg {
                    let ch = gi * cg + ci;
                    let ogi = ch / per_og;
                    let plane = &src[(b * c + ch) * h * wd..(b * c + ch + 1) * h * wd];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let k = ky * kw + kx;
                            for i in 0..oh {
                                for j in 0..ow {
                                    let at = |comp: usize| {
                                        os[(((b * og + ogi) * kk + k) * 2 + comp) * oh * ow
                                            + i * ow
                                            + j]
                                    };
                                    let y = (i * g.stride[0] + ky * g.dilation[0]) as f32
                                        - g.pads[0] as f32
                                        + at(0);
                                    let xx = (j * g.stride[1] + kx * g.dilation[1]) as f32
                                        - g.pads[1] as f32
                                        + at(1);
                                    let mut v = bilinear_zero(plane, h, wd, y, xx);
                                    if let Some(ms) = &ms {
                                        v *= ms[((b * og + ogi) * kk + k) * oh * ow + i * ow + j];
                                    }
                                    cols[(ci * kk + k) * oh * ow + i * ow + j] = v;
                                }
                            }
                        }
                    }
                }
                for mo in 0..mg {
                    let oc = gi * mg + mo;
                    let wrow = &ws[oc * cg * kk..(oc + 1) * cg * kk];
                    let dst = &mut out[(b * m + oc) * oh * ow..(b * m + oc + 1) * oh * ow];
                    for (r, &wv) in wrow.iter().enumerate() {
                        if wv == 0.0 {
                            continue;
                        }
                        for (d, &cv) in dst.iter_mut().zip(&cols[r * oh * ow..(r + 1) * oh * ow]) {
                            *d += wv * cv;
                        }
                    }
                    if let Some(bv) = &bias {
                        let bb = bv.iter().nth(oc).copied().unwrap_or(0.0);
                        for d in dst.iter_mut() {
                            *d += bb;
                        }
                    }
                }
            }
        }
        Ok(vec![Tensor::float(
            ArrayD::from_shape_vec(IxDyn(&[n, m, oh, ow]), out).expect("shape"),
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
    let align_corners = a.int_or("align_corners", 0)? != 0;
    Ok(Some(match op {
        "GridSample" => Box::new(GridSample {
            mode: match a.string_or("mode", "linear")?.as_str() {
                "nearest" => Interp::Nearest,
                "linear" | "bilinear" => Interp::Linear,
                "cubic" | "bicubic" => Interp::Cubic,
                m => op_bail!("mode \"{m}\" is not supported"),
            },
            padding: match a.string_or("padding_mode", "zeros")?.as_str() {
                "zeros" => Padding::Zeros,
                "border" => Padding::Border,
                "reflection" => Padding::Reflection,
                m => op_bail!("padding_mode \"{m}\" is not supported"),
            },
            align_corners,
        }),
        "AffineGrid" => Box::new(AffineGrid { align_corners }),
        "DeformConv" => Box::new(DeformConv {
            attrs: a.list().to_vec(),
        }),
        _ => return Ok(None),
    }))
}
