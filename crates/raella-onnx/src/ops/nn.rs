//! Neural-network operators: convolutions and matrix products (as float
//! kernels, for constant folding and for products of two activations; with a
//! constant weight they become weight layers), normalisations, pooling,
//! softmax, and (de)quantisation.

use ndarray::{
    Array2, ArrayD, ArrayView2, ArrayView3, Axis, Ix2, IxDyn, LinalgScalar,
    linalg::general_mat_mul, s,
};
use rayon::prelude::*;

use super::{Ctx, Kernel, arg, axis, opt, to_usize};
use crate::attrs::Attrs;
use crate::graph::ConvGeom;
use crate::tensor::{DType, Data, Tensor, checked_numel};
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &[
    "AveragePool",
    "BatchNormalization",
    "Conv",
    "ConvTranspose",
    "DequantizeLinear",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Hardmax",
    "InstanceNormalization",
    "LayerNormalization",
    "LogSoftmax",
    "LRN",
    "MatMul",
    "MaxPool",
    "QuantizeLinear",
    "Softmax",
];

/// Spatial attributes shared by convolutions and pooling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Kernel `(h, w)`.
    pub kernel: [usize; 2],
    /// Strides.
    pub stride: [usize; 2],
    /// Explicit pads `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Dilations.
    pub dilation: [usize; 2],
    /// `SAME_UPPER` / `SAME_LOWER` / `VALID`, or `None` (explicit pads).
    pub auto_pad: Option<String>,
    /// Output sizes round up (pooling).
    pub ceil_mode: bool,
    /// The op is 1-D (inputs `[N, C, L]`).
    pub one_d: bool,
}

fn pair(v: &[usize], one_d: bool, what: &str) -> Result<[usize; 2], OpError> {
    match (v, one_d) {
        ([a], true) => Ok([1, *a]),
        ([a, b], false) => Ok([*a, *b]),
        _ => op_bail!(
            "`{what}` = {v:?}: expected {} values (1-D and 2-D ops are supported)",
            if one_d { 1 } else { 2 }
        ),
    }
}

/// Reads kernel/stride/pads/dilations/auto_pad; `kernel` from the weights
/// when the attribute is absent (convolutions).
///
/// # Errors
/// Malformed attributes, or a rank other than 1-D or 2-D.
pub fn window(a: &Attrs<'_>, kernel: Option<&[usize]>) -> Result<Window, OpError> {
    let us = |name: &str| -> Result<Option<Vec<usize>>, OpError> {
        a.ints(name)?
            .map(|v| v.iter().map(|&x| to_usize(x, name)).collect())
            .transpose()
    };
    let ks = match us("kernel_shape")? {
        Some(k) => k,
        None => kernel
            .ok_or_else(|| OpError("`kernel_shape` is required".into()))?
            .to_vec(),
    };
    let one_d = match ks.len() {
        1 => true,
        2 => false,
        n => op_bail!("{n}-D windows are not supported (1-D and 2-D are)"),
    };
    let k = pair(&ks, one_d, "kernel_shape")?;
    let stride = match us("strides")? {
        Some(v) => pair(&v, one_d, "strides")?,
        None => [1, 1],
    };
    let dilation = match us("dilations")? {
        Some(v) => pair(&v, one_d, "dilations")?,
        None => [1, 1],
    };
    let pads = match us("pads")? {
        Some(p) if one_d && p.len() == 2 => [0, p[0], 0, p[1]],
        Some(p) if !one_d && p.len() == 4 => [p[0], p[1], p[2], p[3]],
        Some(p) => op_bail!(
            "`pads` = {p:?}: expected {} values",
            if one_d { 2 } else { 4 }
        ),
        None => [0; 4],
    };
    if k.contains(&0) || stride.contains(&0) || dilation.contains(&0) {
        op_bail!("kernel {k:?}, strides {stride:?} and dilations {dilation:?} must be >= 1");
    }
    for (name, vals) in [
        ("pads", &pads[..]),
        ("kernel_shape", &k[..]),
        ("strides", &stride[..]),
        ("dilations", &dilation[..]),
    ] {
        if vals.iter().any(|&v| v > 1 << 16) {
            op_bail!("`{name}` = {vals:?}: values outside 0..=65536");
        }
    }
    let auto_pad = match a.string("auto_pad")?.as_deref() {
        None | Some("NOTSET") | Some("") => None,
        Some(p @ ("SAME_UPPER" | "SAME_LOWER" | "VALID")) => Some(p.to_string()),
        Some(other) => {
            op_bail!("`auto_pad` = \"{other}\": expected NOTSET, SAME_UPPER, SAME_LOWER or VALID")
        }
    };
    Ok(Window {
        kernel: k,
        stride,
        pads,
        dilation,
        auto_pad,
        ceil_mode: a.int_or("ceil_mode", 0)? != 0,
        one_d,
    })
}

impl Window {
    /// Output size and the pads used, for an `h x w` input.
    ///
    /// # Errors
    /// The window does not fit.
    pub fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize, [usize; 4]), OpError> {
        let mut pads = self.pads;
        if let Some(mode) = &self.auto_pad {
            for (d, n) in [h, w].into_iter().enumerate() {
                let (k, s, dl) = (self.kernel[d], self.stride[d], self.dilation[d]);
                if mode == "VALID" {
                    pads[d] = 0;
                    pads[d + 2] = 0;
                    continue;
                }
                let out = n.div_ceil(s);
                let need = ((out - 1) * s + (k - 1) * dl + 1).saturating_sub(n);
                let (lo, hi) = if mode == "SAME_UPPER" {
                    (need / 2, need - need / 2)
                } else {
                    (need - need / 2, need / 2)
                };
                pads[d] = lo;
                pads[d + 2] = hi;
            }
        }
        let dim = |n: usize, d: usize| -> Result<usize, OpError> {
            let e = self.dilation[d] * (self.kernel[d] - 1) + 1;
            let padded = n + pads[d] + pads[d + 2];
            if padded < e {
                op_bail!(
                    "a {}-wide window does not fit an input of {n} (padded {padded})",
                    e
                );
            }
            let span = padded - e;
            let s = self.stride[d];
            let mut o = if self.ceil_mode {
                span.div_ceil(s) + 1
            } else {
                span / s + 1
            };
            if self.ceil_mode && (o - 1) * s >= n + pads[d] {
                o -= 1;
            }
            Ok(o)
        };
        Ok((dim(h, 0)?, dim(w, 1)?, pads))
    }
}

/// `[N, C, H, W]` (or `[N, C, L]` as `H = 1`) of a spatial input.
///
/// # Errors
/// Another rank.
pub fn nchw(shape: &[usize], one_d: bool) -> Result<[usize; 4], OpError> {
    match (shape, one_d) {
        (&[n, c, l], true) => Ok([n, c, 1, l]),
        (&[n, c, h, w], false) => Ok([n, c, h, w]),
        _ => op_bail!(
            "expects a {} input, got shape {shape:?}",
            if one_d { "[N, C, L]" } else { "[N, C, H, W]" }
        ),
    }
}

/// One image's im2col for channels `c0 .. c0 + cg`: rows are output positions
/// (row-major), columns `(c, kh, kw)`; padding reads `pad`.
#[must_use]
pub fn im2col<T: Copy + Send + Sync>(
    x: ArrayView3<'_, T>,
    c0: usize,
    cg: usize,
    win: &Window,
    out: (usize, usize),
    pads: [usize; 4],
    pad: T,
) -> Array2<T> {
    let (oh, ow) = out;
    let cols = cg * win.kernel[0] * win.kernel[1];
    let mut m = vec![pad; oh * ow * cols];
    im2col_into(x, c0, cg, win, out, pads, &mut m);
    Array2::from_shape_vec((oh * ow, cols), m).expect("shape")
}

/// [`im2col`] written into `dst` (`oh * ow` rows of `cg * kh * kw`), whose
/// padding positions already hold the pad value (they are not written).
///
/// # Panics
/// If `dst` has the wrong length.
pub fn im2col_into<T: Copy + Send + Sync>(
    x: ArrayView3<'_, T>,
    c0: usize,
    cg: usize,
    win: &Window,
    out: (usize, usize),
    pads: [usize; 4],
    dst: &mut [T],
) {
    let (_, h, w) = x.dim();
    let [kh, kw] = win.kernel;
    let (oh, ow) = out;
    let cols = cg * kh * kw;
    assert_eq!(dst.len(), oh * ow * cols, "im2col output size");
    // The group's channels, contiguous (a view when they already are).
    let xg = x.slice(s![c0..c0 + cg, .., ..]);
    let xg = xg.as_standard_layout();
    let xs = xg.as_slice().expect("standard layout");
    let plane = h * w;
    let s1 = win.stride[1];
    // Copied without per-element bounds tests; the rest keep the pad value.
    // The same spans for every channel, kernel row and output row.
    let spans = column_spans(win, w, ow, pads[1]);
    // Kernels 2 to 8 columns wide, undilated: an output's `kw` cells of one
    // channel and kernel row are consecutive in the input row, so the
    // outputs whose window lies inside it take one fixed-size copy each
    // ([`copy_windows`]) instead of `kw` strided passes of one cell.
    let inner = (win.dilation[1] == 1 && (2..=8).contains(&kw)).then(|| {
        let lo = pads[1].div_ceil(s1).min(ow);
        let hi = if w + pads[1] >= kw {
            ((w + pads[1] - kw) / s1 + 1).min(ow)
        } else {
            0
        };
        (lo, hi.max(lo))
    });
    dst.par_chunks_mut((ow * cols).max(1))
        .with_min_len((4096 / (ow * cols).max(1)).max(1))
        .enumerate()
        .for_each(|(oy, rows)| {
            // One channel, a 3 x 3 window inside the input's rows (a
            // depthwise convolution's): each output's nine cells in one
            // fixed-size store ([`copy_windows_3x3`]).
            if let (1, 3, 3, Some((lo, hi))) = (cg, kh, kw, inner) {
                let iy: [usize; 3] = std::array::from_fn(|ky| {
                    (oy * win.stride[0] + ky * win.dilation[0]).wrapping_sub(pads[0])
                });
                if iy.iter().all(|&y| y < h) {
                    let r: [&[T]; 3] = std::array::from_fn(|ky| &xs[iy[ky] * w..(iy[ky] + 1) * w]);
                    if hi > lo {
                        copy_windows_3x3(r, s1, lo * s1 - pads[1], &mut rows[lo * 9..hi * 9]);
                    }
                    // The outputs whose window crosses the padding, cell by cell.
                    for ox in (0..lo).chain(hi..ow) {
                        for (ky, row) in r.iter().enumerate() {
                            for kx in 0..3 {
                                let ix = (ox * s1 + kx).wrapping_sub(pads[1]);
                                if ix < w {
                                    rows[ox * 9 + 3 * ky + kx] = row[ix];
                                }
                            }
                        }
                    }
                    return;
                }
            }
            let mut k = 0;
            for c in 0..cg {
                let xc = &xs[c * plane..(c + 1) * plane];
                for ky in 0..kh {
                    let iy = (oy * win.stride[0] + ky * win.dilation[0]).wrapping_sub(pads[0]);
                    if iy >= h {
                        k += kw;
                        continue;
                    }
                    let xrow = &xc[iy * w..(iy + 1) * w];
                    if let Some((lo, hi)) = inner {
                        // Input column of output `ox`'s first cell: `ox * s1 - pad`.
                        let n = hi - lo;
                        // (No output inside: `lo` may be `ow`, past the rows.)
                        let from = &xrow[if n > 0 { lo * s1 - pads[1] } else { 0 }..];
                        let at = &mut rows[if n > 0 { lo * cols + k } else { 0 }..];
                        match kw {
                            2 => copy_windows::<T, 2>(from, s1, at, cols, n),
                            3 => copy_windows::<T, 3>(from, s1, at, cols, n),
                            4 => copy_windows::<T, 4>(from, s1, at, cols, n),
                            5 => copy_windows::<T, 5>(from, s1, at, cols, n),
                            6 => copy_windows::<T, 6>(from, s1, at, cols, n),
                            7 => copy_windows::<T, 7>(from, s1, at, cols, n),
                            _ => copy_windows::<T, 8>(from, s1, at, cols, n),
                        }
                        // The outputs whose window crosses the padding, cell by cell.
                        for ox in (0..lo).chain(hi..ow) {
                            for kx in 0..kw {
                                let ix = (ox * s1 + kx).wrapping_sub(pads[1]);
                                if ix < w {
                                    rows[ox * cols + k + kx] = xrow[ix];
                                }
                            }
                        }
                        k += kw;
                        continue;
                    }
                    for &(lo, hi, first) in &spans {
                        if lo == hi {
                            k += 1;
                            continue;
                        }
                        let outs = rows[lo * cols + k..].iter_mut().step_by(cols);
                        let ins = xrow[first..].iter().step_by(s1);
                        for (d, &v) in outs.zip(ins).take(hi - lo) {
                            *d = v;
                        }
                        k += 1;
                    }
                }
            }
        });
}

/// The 3 x 3 windows of one channel into consecutive rows of 9 in `to`:
/// output `i`'s window starts at column `first + i stride` of the three input
/// rows `r` (all inside them). Three fixed-size reads and one fixed-size
/// store per output, where three passes of [`copy_windows`] store three
/// cells at a time.
#[inline]
fn copy_windows_3x3<T: Copy>(r: [&[T]; 3], stride: usize, first: usize, to: &mut [T]) {
    for (i, d) in to.chunks_exact_mut(9).enumerate() {
        let x = first + i * stride;
        let a: &[T; 3] = r[0][x..x + 3].try_into().expect("3 cells");
        let b: &[T; 3] = r[1][x..x + 3].try_into().expect("3 cells");
        let c: &[T; 3] = r[2][x..x + 3].try_into().expect("3 cells");
        let d: &mut [T; 9] = d.try_into().expect("9 cells");
        *d = [a[0], a[1], a[2], b[0], b[1], b[2], c[0], c[1], c[2]];
    }
}

/// `n` outputs' windows of `K` consecutive cells, `stride` apart in `from`,
/// into the first `K` values of `n` rows of `cols` in `to`: one fixed-size
/// copy per output (a few moves), where a copy of variable length calls
/// `memcpy`.
#[inline]
fn copy_windows<T: Copy, const K: usize>(
    from: &[T],
    stride: usize,
    to: &mut [T],
    cols: usize,
    n: usize,
) {
    for i in 0..n {
        let src: &[T; K] = from[i * stride..][..K].try_into().expect("K cells");
        let dst: &mut [T; K] = (&mut to[i * cols..][..K]).try_into().expect("K cells");
        *dst = *src;
    }
}

/// Per kernel column `kx`: the output columns `lo..hi` whose input column
/// `ox * stride + kx * dilation - pad` lies inside `0..w`, and the input
/// column of `lo` (`first`). Shared by im2col and pooling.
fn column_spans(win: &Window, w: usize, ow: usize, pad: usize) -> Vec<(usize, usize, usize)> {
    let s1 = win.stride[1];
    (0..win.kernel[1])
        .map(|kx| {
            let off = kx * win.dilation[1];
            let lo = pad.saturating_sub(off).div_ceil(s1);
            let hi = if w + pad > off {
                ((w - 1 + pad - off) / s1 + 1).min(ow)
            } else {
                0
            };
            let hi = hi.max(lo);
            (lo, hi, (lo * s1 + off).saturating_sub(pad))
        })
        .collect()
}

/// ConvTranspose's scatter: `cols` (input positions x `(co, kh, kw)`) summed
/// into an output of `co x oh x ow` (one group's channels).
#[must_use]
pub fn col2im(
    cols: ArrayView2<'_, f32>,
    in_hw: (usize, usize),
    co: usize,
    win: &Window,
    out: (usize, usize),
    pads: [usize; 4],
) -> ArrayD<f32> {
    let [kh, kw] = win.kernel;
    let (ih, iw) = in_hw;
    let (oh, ow) = out;
    let mut y = ArrayD::<f32>::zeros(IxDyn(&[co, oh, ow]));
    for iy in 0..ih {
        for ix in 0..iw {
            let row = cols.row(iy * iw + ix);
            let mut k = 0;
            for c in 0..co {
                for ky in 0..kh {
                    let oy = (iy * win.stride[0] + ky * win.dilation[0]).wrapping_sub(pads[0]);
                    for kx in 0..kw {
                        let ox = (ix * win.stride[1] + kx * win.dilation[1]).wrapping_sub(pads[1]);
                        if oy < oh && ox < ow {
                            y[[c, oy, ox]] += row[k];
                        }
                        k += 1;
                    }
                }
            }
        }
    }
    y
}

/// The output size of a transposed convolution and the pads used.
///
/// # Errors
/// Sizes that do not fit.
pub fn conv_transpose_out(
    g: &ConvGeom,
    h: usize,
    w: usize,
) -> Result<(usize, usize, [usize; 4]), OpError> {
    let mut pads = g.pads;
    let total = |d: usize, n: usize| -> usize {
        g.stride[d] * (n - 1) + g.output_padding[d] + (g.kernel[d] - 1) * g.dilation[d] + 1
    };
    if h == 0 || w == 0 {
        op_bail!("empty input");
    }
    let out = match g.output_shape {
        Some(o) => {
            for d in 0..2 {
                let t = total(d, [h, w][d]);
                let need = t.saturating_sub(o[d]);
                let (lo, hi) = if g.auto_pad.as_deref() == Some("SAME_UPPER") {
                    (need / 2, need - need / 2)
                } else {
                    (need - need / 2, need / 2)
                };
                pads[d] = lo;
                pads[d + 2] = hi;
            }
            o
        }
        None => {
            if matches!(g.auto_pad.as_deref(), Some("SAME_UPPER" | "SAME_LOWER")) {
                let o = [h * g.stride[0], w * g.stride[1]];
                for d in 0..2 {
                    let need = total(d, [h, w][d]).saturating_sub(o[d]);
                    let (lo, hi) = if g.auto_pad.as_deref() == Some("SAME_UPPER") {
                        (need / 2, need - need / 2)
                    } else {
                        (need - need / 2, need / 2)
                    };
                    pads[d] = lo;
                    pads[d + 2] = hi;
                }
                o
            } else {
                let mut o = [0; 2];
                for d in 0..2 {
                    let t = total(d, [h, w][d]);
                    if t < pads[d] + pads[d + 2] {
                        op_bail!("pads {:?} larger than the output", g.pads);
                    }
                    o[d] = t - pads[d] - pads[d + 2];
                }
                o
            }
        }
    };
    Ok((out[0], out[1], pads))
}

/// The conv geometry of a node whose weight has shape `w` (`[M, C/g, kh(, kw)]`
/// for Conv, `[C, M/g, kh(, kw)]` for ConvTranspose).
///
/// # Errors
/// Malformed attributes or weights.
pub fn conv_geom(a: &Attrs<'_>, w: &[usize], transpose: bool) -> Result<ConvGeom, OpError> {
    if w.len() < 3 {
        op_bail!("weights of shape {w:?}: expected [M, C/groups, kernel...]");
    }
    let win = window(a, Some(&w[2..]))?;
    let kernel_dims = if win.one_d {
        vec![win.kernel[1]]
    } else {
        win.kernel.to_vec()
    };
    if w[2..] != kernel_dims[..] {
        op_bail!(
            "kernel_shape {kernel_dims:?} differs from the weights' {:?}",
            &w[2..]
        );
    }
    let groups = to_usize(a.int_or("group", 1)?, "group")?;
    if groups == 0 {
        op_bail!("group = 0");
    }
    let (in_channels, out_channels) = if transpose {
        (w[0], w[1] * groups)
    } else {
        (w[1] * groups, w[0])
    };
    // Conv's M and ConvTranspose's C (both the first weight dimension) split into groups.
    if !w[0].is_multiple_of(groups) {
        op_bail!("weights {w:?} do not split into {groups} groups");
    }
    let us = |name: &str| -> Result<Option<Vec<usize>>, OpError> {
        a.ints(name)?
            .map(|v| v.iter().map(|&x| to_usize(x, name)).collect())
            .transpose()
    };
    let output_padding = match us("output_padding")? {
        Some(v) => pair(&v, win.one_d, "output_padding")?,
        None => [0, 0],
    };
    let output_shape = match us("output_shape")? {
        Some(v) => Some(pair(
            &v[v.len().saturating_sub(if win.one_d { 1 } else { 2 })..],
            win.one_d,
            "output_shape",
        )?),
        None => None,
    };
    Ok(ConvGeom {
        kernel: win.kernel,
        stride: win.stride,
        pads: win.pads,
        dilation: win.dilation,
        groups,
        in_channels,
        out_channels,
        auto_pad: win.auto_pad,
        one_d: win.one_d,
        output_padding,
        output_shape,
    })
}

impl ConvGeom {
    /// The window of this geometry.
    #[must_use]
    pub fn window(&self) -> Window {
        Window {
            kernel: self.kernel,
            stride: self.stride,
            pads: self.pads,
            dilation: self.dilation,
            auto_pad: self.auto_pad.clone(),
            ceil_mode: false,
            one_d: self.one_d,
        }
    }
}

/// Conv in float: `x [N, C, (H,) W]`, weights `[M, C/g, (kh,) kw]`.
///
/// # Errors
/// Mismatched shapes.
pub fn conv_f32(
    x: &ArrayD<f32>,
    weight: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    g: &ConvGeom,
) -> Result<ArrayD<f32>, OpError> {
    let mut y = conv(x, weight, g)?;
    let m = g.out_channels;
    if let Some(b) = bias {
        if b.len() != m {
            op_bail!("bias has {} values for {m} outputs", b.len());
        }
        for (mut plane, &bv) in y.axis_iter_mut(Axis(1)).zip(b.iter()) {
            plane += bv;
        }
    }
    Ok(y)
}

/// A convolution without bias, for any scalar (`f64` holds the integer
/// products of the quantised ops exactly).
///
/// # Errors
/// Mismatched shapes.
pub fn conv<T: LinalgScalar + Send + Sync>(
    x: &ArrayD<T>,
    weight: &ArrayD<T>,
    g: &ConvGeom,
) -> Result<ArrayD<T>, OpError> {
    let [n, c, h, w] = nchw(x.shape(), g.one_d)?;
    if c != g.in_channels {
        op_bail!(
            "input has {c} channels, the weights expect {}",
            g.in_channels
        );
    }
    let win = g.window();
    let (oh, ow, pads) = win.out_hw(h, w)?;
    let (m, cg) = (g.out_channels, g.in_channels / g.groups);
    let mg = m / g.groups;
    checked_numel(&[n, m, oh, ow])?;
    checked_numel(&[oh * ow, cg * g.kernel[0] * g.kernel[1]])?;
    let xs = x.as_standard_layout();
    let x4 = xs
        .view()
        .into_shape_with_order(IxDyn(&[n, c, h, w]))
        .map_err(|e| OpError(e.to_string()))?;
    let wmat = weight
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((m, cg * g.kernel[0] * g.kernel[1]))
        .map_err(|e| OpError(format!("weights {:?}: {e}", weight.shape())))?;
    let mut y = ArrayD::<T>::zeros(IxDyn(&[n, m, oh * ow]));
    for i in 0..n {
        let img = x4
            .index_axis(Axis(0), i)
            .into_dimensionality::<ndarray::Ix3>()
            .expect("3-D");
        for gi in 0..g.groups {
            let cols = im2col(img, gi * cg, cg, &win, (oh, ow), pads, T::zero());
            let wg = wmat.slice(s![gi * mg..(gi + 1) * mg, ..]);
            let mut out = Array2::<T>::zeros((mg, oh * ow));
            general_mat_mul(T::one(), &wg, &cols.t(), T::zero(), &mut out);
            y.slice_mut(s![i, gi * mg..(gi + 1) * mg, ..]).assign(&out);
        }
    }
    let shape: Vec<usize> = if g.one_d {
        vec![n, m, ow]
    } else {
        vec![n, m, oh, ow]
    };
    Ok(y.into_shape_with_order(IxDyn(&shape)).expect("same size"))
}

/// ConvTranspose in float: weights `[C, M/g, (kh,) kw]`.
///
/// # Errors
/// Mismatched shapes.
pub fn conv_transpose_f32(
    x: &ArrayD<f32>,
    weight: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    g: &ConvGeom,
) -> Result<ArrayD<f32>, OpError> {
    let [n, c, h, w] = nchw(x.shape(), g.one_d)?;
    if c != g.in_channels {
        op_bail!(
            "input has {c} channels, the weights expect {}",
            g.in_channels
        );
    }
    let (oh, ow, pads) = conv_transpose_out(g, h, w)?;
    let (cg, mg) = (c / g.groups, g.out_channels / g.groups);
    let k = g.kernel[0] * g.kernel[1];
    checked_numel(&[n, g.out_channels, oh, ow])?;
    let w2 = weight
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((c, mg * k))
        .map_err(|e| OpError(format!("weights {:?}: {e}", weight.shape())))?;
    let xs = x.as_standard_layout();
    let x4 = xs
        .view()
        .into_shape_with_order(IxDyn(&[n, c, h * w]))
        .map_err(|e| OpError(e.to_string()))?;
    let mut y = ArrayD::<f32>::zeros(IxDyn(&[n, g.out_channels, oh, ow]));
    let win = g.window();
    for i in 0..n {
        for gi in 0..g.groups {
            let xg = x4
                .slice(s![i, gi * cg..(gi + 1) * cg, ..])
                .into_dimensionality::<Ix2>()
                .expect("2-D");
            let wg = w2.slice(s![gi * cg..(gi + 1) * cg, ..]);
            let mut cols = Array2::<f32>::zeros((h * w, mg * k));
            general_mat_mul(1.0, &xg.t(), &wg, 0.0, &mut cols);
            let part = col2im(cols.view(), (h, w), mg, &win, (oh, ow), pads);
            y.slice_mut(s![i, gi * mg..(gi + 1) * mg, .., ..])
                .assign(&part);
        }
    }
    if let Some(b) = bias {
        for (mut plane, &bv) in y.axis_iter_mut(Axis(1)).zip(b.iter()) {
            plane += bv;
        }
    }
    let shape: Vec<usize> = if g.one_d {
        vec![n, g.out_channels, ow]
    } else {
        vec![n, g.out_channels, oh, ow]
    };
    Ok(y.into_shape_with_order(IxDyn(&shape)).expect("same size"))
}

#[derive(Debug)]
struct ConvKernel {
    attrs: Vec<crate::proto::AttributeProto>,
    transpose: bool,
}

impl Kernel for ConvKernel {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, wt) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let a = Attrs::new(&self.attrs);
        let g = conv_geom(&a, wt.shape(), self.transpose)?;
        let b = opt(inputs, 2).map(Tensor::floats).transpose()?;
        let y = if self.transpose {
            conv_transpose_f32(x.floats()?, wt.floats()?, b, &g)?
        } else {
            conv_f32(x.floats()?, wt.floats()?, b, &g)?
        };
        Ok(vec![Tensor::float(y, x.dtype())])
    }
}

/// Batched matrix product with numpy broadcasting of the leading dimensions.
///
/// # Errors
/// Incompatible shapes.
pub fn matmul_f32(a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<ArrayD<f32>, OpError> {
    matmul(a, b)
}

/// [`matmul_f32`] for any scalar (`f64` holds the integer products of the
/// quantised ops exactly).
///
/// # Errors
/// Incompatible shapes.
pub fn matmul<T: LinalgScalar + Send + Sync>(
    a: &ArrayD<T>,
    b: &ArrayD<T>,
) -> Result<ArrayD<T>, OpError> {
    let (mut sa, mut sb) = (a.shape().to_vec(), b.shape().to_vec());
    let (va, vb) = (sa.len() == 1, sb.len() == 1);
    if va {
        sa.insert(0, 1);
    }
    if vb {
        sb.push(1);
    }
    if sa.len() < 2 || sb.len() < 2 {
        op_bail!("MatMul of shapes {:?} and {:?}", a.shape(), b.shape());
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let (k2, nn) = (sb[sb.len() - 2], sb[sb.len() - 1]);
    if k != k2 {
        op_bail!(
            "MatMul of shapes {:?} and {:?}: inner dimensions {k} and {k2} differ",
            a.shape(),
            b.shape()
        );
    }
    let batch = super::broadcast_shape(&sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
    let mut out_shape = batch.clone();
    out_shape.extend([m, nn]);
    checked_numel(&out_shape)?;
    let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
    let av = a
        .view()
        .into_shape_with_order(IxDyn(&sa))
        .map_err(|e| OpError(e.to_string()))?;
    let bv = b
        .view()
        .into_shape_with_order(IxDyn(&sb))
        .map_err(|e| OpError(e.to_string()))?;
    let mut fa = batch.clone();
    fa.extend([m, k]);
    let mut fb = batch.clone();
    fb.extend([k, nn]);
    let ab = av
        .broadcast(IxDyn(&fa))
        .ok_or_else(|| OpError("broadcast".into()))?;
    let bb = bv
        .broadcast(IxDyn(&fb))
        .ok_or_else(|| OpError("broadcast".into()))?;
    let nb: usize = batch.iter().product();
    let a3 = ab
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((nb, m, k))
        .expect("3-D");
    let b3 = bb
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((nb, k, nn))
        .expect("3-D");
    let parts: Vec<Array2<T>> = (0..nb)
        .into_par_iter()
        .map(|i| {
            let mut yo = Array2::<T>::zeros((m, nn));
            general_mat_mul(
                T::one(),
                &a3.index_axis(Axis(0), i),
                &b3.index_axis(Axis(0), i),
                T::zero(),
                &mut yo,
            );
            yo
        })
        .collect();
    let mut y = ndarray::Array3::<T>::zeros((nb, m, nn));
    for (i, p) in parts.iter().enumerate() {
        y.index_axis_mut(Axis(0), i).assign(p);
    }
    let mut shape = out_shape;
    if va {
        shape.remove(shape.len() - 2);
    }
    if vb {
        shape.pop();
    }
    Ok(y.into_shape_with_order(IxDyn(&shape)).expect("same size"))
}

#[derive(Debug)]
struct MatMul;

impl Kernel for MatMul {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (arg(inputs, 0)?, arg(inputs, 1)?);
        if !a.dtype().is_float() || !b.dtype().is_float() {
            let y = matmul_f32(&a.to_f32(), &b.to_f32())?;
            return Ok(vec![Tensor::f32(y).cast(a.dtype())]);
        }
        Ok(vec![Tensor::float(
            matmul_f32(a.floats()?, b.floats()?)?,
            a.dtype(),
        )])
    }
}

/// Gemm's attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmAttrs {
    /// A is transposed.
    pub trans_a: bool,
    /// B is transposed.
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of C.
    pub beta: f32,
}

/// Reads Gemm's attributes.
///
/// # Errors
/// Mistyped attributes.
pub fn gemm_attrs(a: &Attrs<'_>) -> Result<GemmAttrs, OpError> {
    Ok(GemmAttrs {
        trans_a: a.int_or("transA", 0)? != 0,
        trans_b: a.int_or("transB", 0)? != 0,
        alpha: a.float_or("alpha", 1.0)?,
        beta: a.float_or("beta", 1.0)?,
    })
}

#[derive(Debug)]
struct Gemm(GemmAttrs);

impl Kernel for Gemm {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let two = |t: &Tensor, tr: bool| -> Result<Array2<f32>, OpError> {
            let m = t
                .to_f32()
                .into_dimensionality::<Ix2>()
                .map_err(|_| OpError(format!("Gemm takes 2-D inputs, got {:?}", t.shape())))?;
            Ok(if tr { m.t().to_owned() } else { m })
        };
        let (am, bm) = (two(a, self.0.trans_a)?, two(b, self.0.trans_b)?);
        if am.ncols() != bm.nrows() {
            op_bail!(
                "Gemm of {:?} and {:?} (after transposes): inner dimensions differ",
                am.dim(),
                bm.dim()
            );
        }
        let mut y = Array2::<f32>::zeros((am.nrows(), bm.ncols()));
        general_mat_mul(self.0.alpha, &am, &bm, 0.0, &mut y);
        let mut y = y.into_dyn();
        if let Some(c) = opt(inputs, 2) {
            let c = c.to_f32().mapv(|v| v * self.0.beta);
            y = super::zip_f32(&y, &c, |p, q| p + q)?;
        }
        Ok(vec![Tensor::float(y, a.dtype())])
    }
}

#[derive(Debug)]
struct BatchNorm {
    eps: f32,
}

impl Kernel for BatchNorm {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let p: Vec<&ArrayD<f32>> = (1..5)
            .map(|i| arg(inputs, i)?.floats())
            .collect::<Result<_, _>>()?;
        let xa = x.floats()?;
        if xa.ndim() < 2 {
            op_bail!("input of shape {:?}: expected [N, C, ...]", xa.shape());
        }
        let c = xa.shape()[1];
        if p.iter().any(|t| t.len() != c) {
            op_bail!("scale, bias, mean and variance need {c} values each");
        }
        let mut y = xa.clone();
        for (ci, mut lane) in y.axis_iter_mut(Axis(1)).enumerate() {
            let (g, b, m, v) = (
                p[0].as_slice_memory_order()
                    .map_or(p[0].iter().nth(ci).copied().unwrap_or(0.0), |s| s[ci]),
                p[1].iter().nth(ci).copied().unwrap_or(0.0),
                p[2].iter().nth(ci).copied().unwrap_or(0.0),
                p[3].iter().nth(ci).copied().unwrap_or(0.0),
            );
            let k = g / (v + self.eps).sqrt();
            lane.mapv_inplace(|t| (t - m) * k + b);
        }
        Ok(vec![Tensor::float(y, x.dtype())])
    }
}

/// `LayerNormalization` over the axes from `axis` on.
#[derive(Debug)]
struct LayerNorm {
    axis: i64,
    eps: f32,
}

impl Kernel for LayerNorm {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        let ax = axis(self.axis, xa.ndim())?;
        let outer: usize = xa.shape()[..ax].iter().product();
        let inner: usize = xa.shape()[ax..].iter().product();
        let scale = arg(inputs, 1)?.to_f32();
        let bias = opt(inputs, 2).map(Tensor::to_f32);
        let inner_shape = &xa.shape()[ax..];
        let sc = scale
            .broadcast(IxDyn(inner_shape))
            .ok_or_else(|| {
                OpError(format!(
                    "scale {:?} does not broadcast to {inner_shape:?}",
                    scale.shape()
                ))
            })?
            .iter()
            .copied()
            .collect::<Vec<f32>>();
        let bs: Vec<f32> = match &bias {
            Some(b) => b
                .broadcast(IxDyn(inner_shape))
                .ok_or_else(|| {
                    OpError(format!(
                        "bias {:?} does not broadcast to {inner_shape:?}",
                        b.shape()
                    ))
                })?
                .iter()
                .copied()
                .collect(),
            None => vec![0.0; inner],
        };
        let xs = xa.as_standard_layout();
        let flat = xs.as_slice().expect("standard layout");
        let mut out = vec![0.0f32; flat.len()];
        let (mut means, mut inv) = (vec![0.0f32; outer], vec![0.0f32; outer]);
        // Rows in parts on all threads (each row's sums in order, as one
        // thread would take them).
        let width = inner.max(1);
        let rows = (crate::exec::PARALLEL_VALUES / width).max(1);
        out.par_chunks_mut(rows * width)
            .zip(flat.par_chunks(rows * width))
            .zip(means.par_chunks_mut(rows).zip(inv.par_chunks_mut(rows)))
            .for_each(|((out, flat), (means, inv))| {
                let rows = flat.chunks(width).zip(out.chunks_mut(width));
                #[allow(clippy::cast_precision_loss)]
                for ((src, dst), (mean_out, inv_out)) in rows.zip(means.iter_mut().zip(inv)) {
                    let n = inner as f32;
                    let mean = src.iter().sum::<f32>() / n;
                    let var = src.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
                    let r = 1.0 / (var + self.eps).sqrt();
                    for (((d, &s), &g), &b) in dst.iter_mut().zip(src).zip(&sc).zip(&bs) {
                        *d = (s - mean) * r * g + b;
                    }
                    *mean_out = mean;
                    *inv_out = r;
                }
            });
        let y = ArrayD::from_shape_vec(IxDyn(xa.shape()), out).expect("shape");
        let mut stat_shape = xa.shape()[..ax].to_vec();
        stat_shape.extend(std::iter::repeat_n(1, xa.ndim() - ax));
        Ok(vec![
            Tensor::float(y, x.dtype()),
            Tensor::f32(ArrayD::from_shape_vec(IxDyn(&stat_shape), means).expect("shape")),
            Tensor::f32(ArrayD::from_shape_vec(IxDyn(&stat_shape), inv).expect("shape")),
        ])
    }
}

#[derive(Debug)]
struct InstanceNorm {
    eps: f32,
}

impl Kernel for InstanceNorm {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        if xa.ndim() < 3 {
            op_bail!("input of shape {:?}: expected [N, C, ...]", xa.shape());
        }
        let (n, c) = (xa.shape()[0], xa.shape()[1]);
        let inner: usize = xa.shape()[2..].iter().product();
        let g = arg(inputs, 1)?.to_f32();
        let b = arg(inputs, 2)?.to_f32();
        if g.len() != c || b.len() != c {
            op_bail!("scale and bias need {c} values each");
        }
        let (g, b): (Vec<f32>, Vec<f32>) =
            (g.iter().copied().collect(), b.iter().copied().collect());
        let mut y: Vec<f32> = xa.iter().copied().collect();
        #[allow(clippy::cast_precision_loss)]
        for (k, ch) in y.chunks_mut(inner.max(1)).enumerate().take(n * c) {
            let ci = k % c;
            let m = ch.iter().sum::<f32>() / inner as f32;
            let v = ch.iter().map(|t| (t - m) * (t - m)).sum::<f32>() / inner as f32;
            let r = 1.0 / (v + self.eps).sqrt();
            for t in ch.iter_mut() {
                *t = (*t - m) * r * g[ci] + b[ci];
            }
        }
        Ok(vec![Tensor::float(
            ArrayD::from_shape_vec(IxDyn(xa.shape()), y).expect("shape"),
            x.dtype(),
        )])
    }
}

#[derive(Debug)]
struct Lrn {
    alpha: f32,
    beta: f32,
    bias: f32,
    size: usize,
}

impl Kernel for Lrn {
    #[allow(clippy::cast_precision_loss)]
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        if xa.ndim() < 3 {
            op_bail!("input of shape {:?}: expected [N, C, ...]", xa.shape());
        }
        let c = xa.shape()[1];
        let (lo, hi) = ((self.size - 1) / 2, self.size.div_ceil(2) - 1);
        let sq = xa.mapv(|v| v * v);
        let mut y = xa.clone();
        for ci in 0..c {
            let a = ci.saturating_sub(lo);
            let b = (ci + hi).min(c - 1);
            let mut s = sq.index_axis(Axis(1), a).to_owned();
            for j in a + 1..=b {
                s += &sq.index_axis(Axis(1), j);
            }
            let k = self.alpha / self.size as f32;
            let mut dst = y.index_axis_mut(Axis(1), ci);
            ndarray::Zip::from(&mut dst)
                .and(&s)
                .for_each(|d, &ss| *d /= (self.bias + k * ss).powf(self.beta));
        }
        Ok(vec![Tensor::float(y, x.dtype())])
    }
}

/// Max or average pooling.
#[derive(Debug)]
struct Pool {
    win: Window,
    max: bool,
    count_include_pad: bool,
}

/// Pools `x [N, C, H, W]` (or 1-D).
///
/// # Errors
/// A window that does not fit.
pub fn pool_f32(
    x: &ArrayD<f32>,
    win: &Window,
    max: bool,
    count_include_pad: bool,
) -> Result<ArrayD<f32>, OpError> {
    pool_impl(x, win, max, count_include_pad, false)
}

/// Sums `x [N, C, H, W]` (or 1-D) over each window (padding adds nothing):
/// LpPool's inner sum.
///
/// # Errors
/// A window that does not fit.
pub fn pool_sum_f32(x: &ArrayD<f32>, win: &Window) -> Result<ArrayD<f32>, OpError> {
    pool_impl(x, win, false, false, true)
}

fn pool_impl(
    x: &ArrayD<f32>,
    win: &Window,
    max: bool,
    count_include_pad: bool,
    sum: bool,
) -> Result<ArrayD<f32>, OpError> {
    let [n, c, h, w] = nchw(x.shape(), win.one_d)?;
    let (oh, ow, pads) = win.out_hw(h, w)?;
    checked_numel(&[n, c, oh, ow])?;
    let xs = x.as_standard_layout();
    let src = xs.as_slice().expect("standard layout");
    let mut out = vec![0.0f32; n * c * oh * ow];
    // Max pooling whose windows all lie inside the input (no padding): no
    // bounds or cell counts per cell, the same maxima in the same order.
    let inside = max
        && !sum
        && pads.iter().all(|&p| p == 0)
        && (oh == 0 || (oh - 1) * win.stride[0] + (win.kernel[0].max(1) - 1) * win.dilation[0] < h)
        && (ow == 0 || (ow - 1) * win.stride[1] + (win.kernel[1].max(1) - 1) * win.dilation[1] < w);
    let nan_max = |acc: f32, v: f32| {
        if v.is_nan() || acc.is_nan() {
            f32::NAN
        } else {
            acc.max(v)
        }
    };
    let s1 = win.stride[1];
    let spans = column_spans(win, w, ow, pads[1]);
    // Per output column, the window's columns inside the padded input.
    let cols_in_pad: Vec<usize> = (0..ow)
        .map(|ox| {
            (0..win.kernel[1])
                .filter(|&kx| ox * s1 + kx * win.dilation[1] < w + pads[1] + pads[3])
                .count()
        })
        .collect();
    // Per output column, the window's columns inside the input.
    let cols_in: Vec<usize> = (0..ow)
        .map(|ox| {
            spans
                .iter()
                .filter(|&&(lo, hi, _)| (lo..hi).contains(&ox))
                .count()
        })
        .collect();
    out.par_chunks_mut((oh * ow).max(1))
        .enumerate()
        .for_each(|(plane, dst)| {
            let p = &src[plane * h * w..(plane + 1) * h * w];
            if inside {
                // A whole output row per window cell, the cells in the same
                // order for every output as one output at a time would take
                // them, so the maxima (NaN and signed zeros included) are the
                // same; the row loop vectorises.
                let sx = win.stride[1];
                for (oy, drow) in dst.chunks_exact_mut(ow.max(1)).enumerate() {
                    drow.fill(f32::NEG_INFINITY);
                    for ky in 0..win.kernel[0] {
                        let row = &p[(oy * win.stride[0] + ky * win.dilation[0]) * w..][..w];
                        for kx in 0..win.kernel[1] {
                            let cells = &row[kx * win.dilation[1]..];
                            if sx == 1 {
                                for (d, &v) in drow.iter_mut().zip(cells) {
                                    *d = nan_max(*d, v);
                                }
                            } else {
                                for (d, &v) in drow.iter_mut().zip(cells.iter().step_by(sx)) {
                                    *d = nan_max(*d, v);
                                }
                            }
                        }
                    }
                }
                return;
            }
            // A whole output row per window cell, as above: per output the
            // cells inside the input in the same order (so the same sums and
            // maxima). The window is rows times columns, so an output's cells
            // inside the input are its rows inside times its columns inside.
            let mut acc = vec![0.0f32; ow];
            for (oy, drow) in dst.chunks_exact_mut(ow.max(1)).enumerate() {
                acc.fill(if max { f32::NEG_INFINITY } else { 0.0 });
                // Cells of the padded input in the window: rows times columns.
                let rows_in_pad = (0..win.kernel[0])
                    .filter(|&ky| oy * win.stride[0] + ky * win.dilation[0] < h + pads[0] + pads[2])
                    .count();
                let mut rows_in = 0usize;
                for ky in 0..win.kernel[0] {
                    let iy = (oy * win.stride[0] + ky * win.dilation[0]).wrapping_sub(pads[0]);
                    if iy >= h {
                        continue;
                    }
                    rows_in += 1;
                    let row = &p[iy * w..(iy + 1) * w];
                    for &(lo, hi, first) in &spans {
                        let acc = &mut acc[lo..hi];
                        match (max, s1) {
                            (true, 1) => {
                                for (a, &v) in acc.iter_mut().zip(&row[first..]) {
                                    *a = nan_max(*a, v);
                                }
                            }
                            (false, 1) => {
                                for (a, &v) in acc.iter_mut().zip(&row[first..]) {
                                    *a += v;
                                }
                            }
                            (true, _) => {
                                for (a, &v) in acc.iter_mut().zip(row[first..].iter().step_by(s1)) {
                                    *a = nan_max(*a, v);
                                }
                            }
                            (false, _) => {
                                for (a, &v) in acc.iter_mut().zip(row[first..].iter().step_by(s1)) {
                                    *a += v;
                                }
                            }
                        }
                    }
                }
                for (ox, (d, &a)) in drow.iter_mut().zip(&acc).enumerate() {
                    #[allow(clippy::cast_precision_loss)]
                    let v = if max || sum {
                        a
                    } else if count_include_pad {
                        a / (rows_in_pad * cols_in_pad[ox]).max(1) as f32
                    } else {
                        a / (rows_in * cols_in[ox]).max(1) as f32
                    };
                    *d = v;
                }
            }
        });
    let shape: Vec<usize> = if win.one_d {
        vec![n, c, ow]
    } else {
        vec![n, c, oh, ow]
    };
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("shape"))
}

impl Kernel for Pool {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        if !x.dtype().is_float() {
            // MaxPool of 8-bit integers (opset 12+): exact in f32.
            if !self.max || x.dtype().size_bytes() > 2 {
                op_bail!("pooling of {} is not supported", x.dtype().name());
            }
            let y = pool_f32(&x.to_f32(), &self.win, true, false)?;
            return Ok(vec![Tensor::f32(y).cast(x.dtype())]);
        }
        let y = pool_f32(x.floats()?, &self.win, self.max, self.count_include_pad)?;
        Ok(vec![Tensor::float(y, x.dtype())])
    }
}

#[derive(Debug)]
struct GlobalPool {
    max: bool,
}

impl Kernel for GlobalPool {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        if xa.ndim() < 3 {
            op_bail!("input of shape {:?}: expected [N, C, ...]", xa.shape());
        }
        let (n, c) = (xa.shape()[0], xa.shape()[1]);
        let inner: usize = xa.shape()[2..].iter().product();
        let flat = xa.as_standard_layout();
        let src = flat.as_slice().expect("standard");
        #[allow(clippy::cast_precision_loss)]
        let v: Vec<f32> = src
            .chunks(inner.max(1))
            .take(n * c)
            .map(|ch| {
                if self.max {
                    ch.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                } else {
                    ch.iter().sum::<f32>() / inner as f32
                }
            })
            .collect();
        let mut shape = vec![n, c];
        shape.extend(std::iter::repeat_n(1, xa.ndim() - 2));
        Ok(vec![Tensor::float(
            ArrayD::from_shape_vec(IxDyn(&shape), v).expect("shape"),
            x.dtype(),
        )])
    }
}

/// `Softmax`, `LogSoftmax`, `Hardmax`; before opset 13 the input is coerced to
/// 2-D at `axis` and normalised over everything from it.
#[derive(Debug)]
struct Softmax {
    axis: i64,
    coerce: bool,
    kind: u8,
}

impl Kernel for Softmax {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        let ax = axis(self.axis, xa.ndim().max(1))?;
        let shape = xa.shape().to_vec();
        // Rows: everything before the normalised axes; lanes: the normalised span.
        let (work, lane_axis): (ArrayD<f32>, usize) = if self.coerce {
            let outer: usize = shape[..ax].iter().product();
            let inner: usize = shape[ax..].iter().product();
            (
                xa.as_standard_layout()
                    .into_owned()
                    .into_shape_with_order(IxDyn(&[outer, inner]))
                    .expect("2-D"),
                1,
            )
        } else {
            (xa.clone(), ax)
        };
        let mut out = work;
        let kind = self.kind;
        // Lanes along the last axis of a standard-layout array (attention's
        // scores): whole lanes in parts on all threads.
        if lane_axis + 1 == out.ndim() && out.shape()[lane_axis] > 0 {
            let width = out.shape()[lane_axis];
            if let Some(flat) = out.as_slice_mut() {
                let lanes = (crate::exec::PARALLEL_VALUES / width).max(1);
                flat.par_chunks_mut(lanes * width).for_each(|part| {
                    for lane in part.chunks_mut(width) {
                        softmax_lane(kind, lane);
                    }
                });
                let y = out.into_shape_with_order(IxDyn(&shape)).expect("same size");
                return Ok(vec![Tensor::float(y, x.dtype())]);
            }
        }
        // Other axes: each lane copied out, normalised the same way, copied back.
        let mut buf = Vec::new();
        for mut lane in out.lanes_mut(Axis(lane_axis)) {
            if let Some(lane) = lane.as_slice_mut() {
                softmax_lane(kind, lane);
                continue;
            }
            buf.clear();
            buf.extend(lane.iter().copied());
            softmax_lane(kind, &mut buf);
            for (d, &v) in lane.iter_mut().zip(&buf) {
                *d = v;
            }
        }
        let y = out.into_shape_with_order(IxDyn(&shape)).expect("same size");
        Ok(vec![Tensor::float(y, x.dtype())])
    }
}

/// One lane of [`Softmax`] in place: `kind` 0 softmax, 1 log-softmax, 2
/// hardmax (a one at the first largest value).
fn softmax_lane(kind: u8, lane: &mut [f32]) {
    match kind {
        2 => {
            let mut best = 0;
            for (i, &v) in lane.iter().enumerate() {
                if v > lane[best] {
                    best = i;
                }
            }
            lane.fill(0.0);
            if !lane.is_empty() {
                lane[best] = 1.0;
            }
        }
        0 => {
            let m = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            // Each exponential once, kept; summed in order.
            for v in lane.iter_mut() {
                *v = (*v - m).exp();
            }
            let s: f32 = lane.iter().sum();
            for v in lane.iter_mut() {
                *v /= s;
            }
        }
        _ => {
            let m = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s: f32 = lane.iter().map(|&v| (v - m).exp()).sum();
            let ls = s.ln();
            for v in lane.iter_mut() {
                *v = *v - m - ls;
            }
        }
    }
}

/// Per-tensor, per-axis or (opset 21+, `block_size > 0`) blocked scale and
/// zero point, broadcast to `shape`.
fn qparams(
    shape: &[usize],
    scale: &Tensor,
    zero: Option<&Tensor>,
    axis_attr: i64,
    block: usize,
) -> Result<(ArrayD<f32>, ArrayD<f32>), OpError> {
    let s = scale.to_f32();
    let z = zero.map_or_else(|| ArrayD::zeros(s.raw_dim()), Tensor::to_f32);
    if z.shape() != s.shape() {
        op_bail!(
            "zero point of shape {:?} for a scale of shape {:?}",
            z.shape(),
            s.shape()
        );
    }
    let expand = |t: ArrayD<f32>| -> Result<ArrayD<f32>, OpError> {
        if t.len() == 1 && t.ndim() <= 1 {
            let v = t.iter().copied().next().unwrap_or(0.0);
            return Ok(ArrayD::from_elem(IxDyn(shape), v));
        }
        let ax = axis(axis_attr, shape.len())?;
        if block > 0 {
            // One value per `block` elements along the axis, the others equal.
            let ok = t.ndim() == shape.len()
                && (0..shape.len()).all(|d| {
                    if d == ax {
                        t.shape()[d] == shape[d].div_ceil(block)
                    } else {
                        t.shape()[d] == shape[d]
                    }
                });
            if !ok {
                op_bail!(
                    "blocked parameters of shape {:?} for blocks of {block} on axis {ax} of {shape:?}",
                    t.shape()
                );
            }
            let idx: Vec<usize> = (0..shape[ax]).map(|i| i / block).collect();
            return Ok(t.select(Axis(ax), &idx));
        }
        if t.ndim() != 1 || t.len() != shape[ax] {
            op_bail!(
                "per-axis parameters of shape {:?} for axis {ax} of {shape:?}",
                t.shape()
            );
        }
        let mut bshape = vec![1; shape.len()];
        bshape[ax] = shape[ax];
        let b = t.into_shape_with_order(IxDyn(&bshape)).expect("same size");
        Ok(b.broadcast(IxDyn(shape)).expect("broadcast").to_owned())
    };
    Ok((expand(s)?, expand(z)?))
}

#[derive(Debug)]
struct Dequantize {
    axis: i64,
    block: usize,
    /// `output_dtype` (opset 23+), else the scale's type.
    out: Option<DType>,
}

impl Kernel for Dequantize {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let scale = arg(inputs, 1)?;
        let (s, z) = qparams(x.shape(), scale, opt(inputs, 2), self.axis, self.block)?;
        let v = x.to_f32();
        let y = ndarray::Zip::from(&v)
            .and(&s)
            .and(&z)
            .map_collect(|&q, &sc, &zp| (q - zp) * sc);
        let dtype = self.out.unwrap_or(scale.dtype());
        if !dtype.is_float() {
            op_bail!("DequantizeLinear to {} is not supported", dtype.name());
        }
        Ok(vec![Tensor::float(y, dtype)])
    }
}

#[derive(Debug)]
struct Quantize {
    axis: i64,
    block: usize,
    /// `output_dtype` (opset 21+), when there is no zero point to give the type.
    out: Option<DType>,
}

impl Kernel for Quantize {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let zero = opt(inputs, 2);
        let dtype = zero.map(Tensor::dtype).or(self.out).unwrap_or(DType::U8);
        if !matches!(dtype, DType::U8 | DType::I8 | DType::U16 | DType::I16) {
            op_bail!("QuantizeLinear to {} is not supported", dtype.name());
        }
        let (s, z) = qparams(x.shape(), arg(inputs, 1)?, zero, self.axis, self.block)?;
        let (lo, hi) = crate::tensor::int_range(dtype);
        let v = x.to_f32();
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        let q = ndarray::Zip::from(&v)
            .and(&s)
            .and(&z)
            .map_collect(|&t, &sc, &zp| {
                ((t / sc).round_ties_even() + zp).clamp(lo as f32, hi as f32) as i64
            });
        Ok(vec![Tensor::int(q, dtype)])
    }
}

/// The `output_dtype` attribute of the quantisation ops (0 or absent: none).
fn output_dtype(a: &Attrs<'_>) -> Result<Option<DType>, OpError> {
    match a.int_or("output_dtype", 0)? {
        0 => Ok(None),
        code => {
            let c = i32::try_from(code).unwrap_or(-1);
            DType::from_onnx(c).map(Some).ok_or_else(|| {
                OpError(format!(
                    "output_dtype {} ({code}) is not supported",
                    DType::onnx_name(c)
                ))
            })
        }
    }
}

/// Builds a kernel of this family.
///
/// # Errors
/// Bad attributes.
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Option<Box<dyn Kernel>>, OpError> {
    let opset = ctx.opset;
    Ok(Some(match op {
        "Conv" | "ConvTranspose" => Box::new(ConvKernel {
            attrs: Vec::new(),
            transpose: op == "ConvTranspose",
        }),
        "MatMul" => Box::new(MatMul),
        "Gemm" => Box::new(Gemm(gemm_attrs(a)?)),
        "BatchNormalization" => {
            if a.int_or("training_mode", 0)? != 0 {
                op_bail!("training_mode = 1 is not supported (inference only)");
            }
            Box::new(BatchNorm {
                eps: a.float_or("epsilon", 1e-5)?,
            })
        }
        "LayerNormalization" => Box::new(LayerNorm {
            axis: a.int_or("axis", -1)?,
            eps: a.float_or("epsilon", 1e-5)?,
        }),
        "InstanceNormalization" => Box::new(InstanceNorm {
            eps: a.float_or("epsilon", 1e-5)?,
        }),
        "LRN" => Box::new(Lrn {
            alpha: a.float_or("alpha", 1e-4)?,
            beta: a.float_or("beta", 0.75)?,
            bias: a.float_or("bias", 1.0)?,
            size: to_usize(
                a.int("size")?
                    .ok_or_else(|| OpError("LRN needs `size`".into()))?,
                "size",
            )?
            .max(1),
        }),
        "MaxPool" | "AveragePool" => {
            if op == "MaxPool" && ctx.outputs > 1 {
                return super::window::max_pool_indices(a).map(Some);
            }
            Box::new(Pool {
                win: window(a, None)?,
                max: op == "MaxPool",
                count_include_pad: a.int_or("count_include_pad", 0)? != 0,
            })
        }
        "GlobalAveragePool" => Box::new(GlobalPool { max: false }),
        "GlobalMaxPool" => Box::new(GlobalPool { max: true }),
        "Softmax" | "LogSoftmax" | "Hardmax" => Box::new(Softmax {
            axis: a.int_or("axis", if opset < 13 { 1 } else { -1 })?,
            coerce: opset < 13,
            kind: match op {
                "Softmax" => 0,
                "LogSoftmax" => 1,
                _ => 2,
            },
        }),
        "DequantizeLinear" => Box::new(Dequantize {
            axis: a.int_or("axis", 1)?,
            block: to_usize(a.int_or("block_size", 0)?, "block_size")?,
            out: output_dtype(a)?,
        }),
        "QuantizeLinear" => {
            if a.int_or("precision", 0)? != 0 {
                op_bail!("QuantizeLinear's `precision` is not supported");
            }
            Box::new(Quantize {
                axis: a.int_or("axis", 1)?,
                block: to_usize(a.int_or("block_size", 0)?, "block_size")?,
                out: output_dtype(a)?,
            })
        }
        _ => return Ok(None),
    }))
}

/// A Conv/ConvTranspose kernel that carries its attributes (they are parsed
/// against the weight shape at run time when the weights are not constant).
#[must_use]
pub fn conv_kernel(attrs: &[crate::proto::AttributeProto], transpose: bool) -> Box<dyn Kernel> {
    Box::new(ConvKernel {
        attrs: attrs.to_vec(),
        transpose,
    })
}

/// The float values of input `i` as 2-D.
///
/// # Errors
/// Not 2-D.
pub fn as_2d(t: &Tensor) -> Result<Array2<f32>, OpError> {
    t.to_f32()
        .into_dimensionality::<Ix2>()
        .map_err(|_| OpError(format!("expected a 2-D tensor, got {:?}", t.shape())))
}

/// The values of a float input, or an error naming `what`.
///
/// # Errors
/// Not a float tensor.
pub fn float_input<'a>(t: &'a Tensor, what: &str) -> Result<&'a ArrayD<f32>, OpError> {
    match t.data() {
        Data::Float(a) => Ok(a),
        Data::Int(_) => Err(OpError(format!(
            "{what} must be a float tensor, got {}",
            t.dtype().name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::AttributeProto;

    /// Softmax, log-softmax and hardmax in parts on all threads (rows of the
    /// last axis) and lane by lane (another axis) give, bit for bit, the
    /// formulas taken one lane at a time: each exponential `(v - m).exp()`,
    /// their sum in order, `e / s`; `v - m - ln s`.
    #[test]
    fn softmax_lanes_equal_the_formulas() {
        let shape = [3usize, 5, 70, 111];
        let n: usize = shape.iter().product();
        let mut state = 7u64;
        let values: Vec<f32> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                #[allow(clippy::cast_precision_loss)]
                let u = (state >> 40) as f32 / (1u64 << 24) as f32;
                (u - 0.5) * 30.0
            })
            .collect();
        let x = Tensor::f32(ArrayD::from_shape_vec(IxDyn(&shape), values).expect("shape"));
        for kind in 0..3u8 {
            for axis in [3i64, 2] {
                let k = Softmax {
                    axis,
                    coerce: false,
                    kind,
                };
                let got = k.eval(&[Some(&x)]).expect("runs").remove(0);
                let got = got.floats().expect("floats");
                let mut want = x.floats().expect("floats").clone();
                #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
                for mut lane in want.lanes_mut(Axis(axis as usize)) {
                    let m = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let s: f32 = lane.iter().map(|&v| (v - m).exp()).sum();
                    match kind {
                        0 => lane.mapv_inplace(|v| (v - m).exp() / s),
                        1 => lane.mapv_inplace(|v| v - m - s.ln()),
                        _ => {
                            let best = lane
                                .iter()
                                .enumerate()
                                .fold(0, |b, (i, &v)| if v > lane[b] { i } else { b });
                            lane.fill(0.0);
                            lane[best] = 1.0;
                        }
                    }
                }
                let bits = |a: &ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert!(bits(got) == bits(&want), "kind {kind}, axis {axis}");
            }
        }
    }

    /// A 2-D window with explicit pads.
    fn window(
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        pads: [usize; 4],
        ceil_mode: bool,
    ) -> Window {
        Window {
            kernel,
            stride,
            pads,
            dilation,
            auto_pad: None,
            ceil_mode,
            one_d: false,
        }
    }

    /// Max pooling equals the plain definition (the maximum over the window's
    /// cells inside the input, NaN if any is NaN) for windows inside the
    /// input (the fast path) and with padding, dilation and ceil mode (the
    /// general one).
    #[test]
    fn max_pooling_is_the_window_maximum() {
        let (h, w) = (7usize, 9usize);
        #[allow(clippy::cast_precision_loss)]
        let mut data: Vec<f32> = (0..2 * h * w)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.5)
            .collect();
        data[20] = f32::NAN;
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 2, h, w]), data.clone()).unwrap();
        for (kernel, stride, dilation, pads, ceil_mode) in [
            ([2, 2], [2, 2], [1, 1], [0; 4], false),
            ([3, 2], [1, 2], [1, 1], [0; 4], false),
            ([2, 3], [2, 1], [2, 2], [0; 4], false),
            ([3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
            ([2, 2], [2, 2], [1, 1], [0; 4], true),
        ] {
            let win = window(kernel, stride, dilation, pads, ceil_mode);
            let y = pool_f32(&x, &win, true, false).unwrap();
            let (oh, ow, pads) = win.out_hw(h, w).unwrap();
            assert_eq!(y.shape(), &[1, 2, oh, ow]);
            for c in 0..2 {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut cells = Vec::new();
                        for ky in 0..kernel[0] {
                            for kx in 0..kernel[1] {
                                let iy = (oy * stride[0] + ky * dilation[0]).wrapping_sub(pads[0]);
                                let ix = (ox * stride[1] + kx * dilation[1]).wrapping_sub(pads[1]);
                                if iy < h && ix < w {
                                    cells.push(data[(c * h + iy) * w + ix]);
                                }
                            }
                        }
                        let want = if cells.iter().any(|v| v.is_nan()) {
                            f32::NAN
                        } else {
                            cells.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                        };
                        let got = y[[0, c, oy, ox]];
                        assert!(
                            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                            "{kernel:?} {stride:?} {dilation:?} at {c} {oy} {ox}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// im2col equals the plain definition (each row the window's cells in
    /// `(channel, ky, kx)` order, the pad value outside the input) for
    /// strides, dilations, pads wider than the kernel reach, and channel
    /// groups.
    #[test]
    fn im2col_is_the_window_cells() {
        let (ch, h, w) = (3usize, 6usize, 7usize);
        let data: Vec<i32> = (0..ch * h * w)
            .map(|i| i32::try_from(i).unwrap() + 1)
            .collect();
        let x = ndarray::Array3::from_shape_vec((ch, h, w), data.clone()).unwrap();
        for (kernel, stride, dilation, pads, c0, cg) in [
            ([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 0, 3),
            ([1, 1], [1, 1], [1, 1], [0; 4], 0, 3),
            ([3, 2], [2, 3], [1, 1], [0, 2, 1, 0], 1, 2),
            ([2, 3], [1, 2], [2, 2], [2, 1, 2, 3], 2, 1),
            ([1, 3], [3, 1], [1, 3], [4, 5, 4, 5], 0, 1),
            // Each undilated width of the fixed-size copies, with strides and
            // pads on either side (and windows wider than the input).
            ([3, 3], [2, 2], [1, 1], [1, 1, 1, 1], 0, 3),
            ([1, 7], [1, 1], [1, 1], [0, 3, 0, 3], 1, 2),
            ([5, 5], [1, 2], [1, 1], [2, 2, 2, 2], 0, 3),
            ([2, 4], [1, 1], [1, 1], [0, 0, 1, 2], 0, 3),
            ([1, 6], [2, 1], [1, 1], [0, 1, 0, 0], 2, 1),
            ([2, 8], [1, 1], [1, 1], [0, 1, 0, 1], 0, 2),
            ([1, 8], [1, 2], [1, 1], [0, 1, 0, 0], 0, 1),
            ([1, 2], [1, 3], [1, 1], [0, 0, 0, 2], 0, 3),
            // No output whose window lies inside the input.
            ([2, 8], [1, 2], [1, 1], [0, 1, 0, 0], 0, 2),
            // One channel's 3 x 3 windows (depthwise): strides 1 and 2, pads
            // on either side or none, a dilated one (the general path).
            ([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1, 1),
            ([3, 3], [2, 2], [1, 1], [0, 1, 1, 0], 2, 1),
            ([3, 3], [1, 2], [1, 1], [0, 0, 0, 0], 0, 1),
            ([3, 3], [1, 1], [1, 1], [2, 3, 2, 3], 0, 1),
            ([3, 3], [1, 1], [2, 1], [1, 1, 1, 1], 0, 1),
        ] {
            let win = window(kernel, stride, dilation, pads, false);
            let (oh, ow, pads) = win.out_hw(h, w).unwrap();
            let got = im2col(x.view(), c0, cg, &win, (oh, ow), pads, 0);
            assert_eq!(got.dim(), (oh * ow, cg * kernel[0] * kernel[1]));
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut want = Vec::new();
                    for c in c0..c0 + cg {
                        for ky in 0..kernel[0] {
                            for kx in 0..kernel[1] {
                                let iy = (oy * stride[0] + ky * dilation[0]).wrapping_sub(pads[0]);
                                let ix = (ox * stride[1] + kx * dilation[1]).wrapping_sub(pads[1]);
                                want.push(if iy < h && ix < w {
                                    data[(c * h + iy) * w + ix]
                                } else {
                                    0
                                });
                            }
                        }
                    }
                    assert_eq!(
                        got.row(oy * ow + ox).to_vec(),
                        want,
                        "{kernel:?} {stride:?} {dilation:?} {pads:?} at {oy} {ox}"
                    );
                }
            }
        }
    }

    #[test]
    fn blocked_dequantisation_repeats_each_scale_over_its_block() {
        // block_size 2 on axis 1: x [1, 4] with scales [1, 2] -> [s0, s0, s1, s1].
        let a = [AttributeProto {
            name: Some("block_size".into()),
            i: Some(2),
            r#type: Some(2),
            ..Default::default()
        }];
        let k = build(
            "DequantizeLinear",
            &Attrs::new(&a),
            Ctx {
                opset: 21,
                outputs: 1,
            },
        )
        .unwrap()
        .unwrap();
        let x = Tensor::int(
            ArrayD::from_shape_vec(IxDyn(&[1, 4]), vec![1, 1, 1, 1]).unwrap(),
            DType::I8,
        );
        let s = Tensor::f32(ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1.0, 2.0]).unwrap());
        let y = k.eval(&[Some(&x), Some(&s)]).unwrap().remove(0);
        assert_eq!(
            y.to_f32().iter().copied().collect::<Vec<_>>(),
            vec![1.0, 1.0, 2.0, 2.0]
        );
    }
}
