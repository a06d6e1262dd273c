//! The digital operations and the im2col lowering, on batch tensors
//! (`batch x product(shape)`, one image per row).
//!
//! These are shared by the float32 reference and by the quantised execution:
//! everything but the multiply-accumulates of Conv/Linear is computed here, in
//! f32, exactly as written (no approximations).

use ndarray::{Array2, ArrayView2, linalg::general_mat_mul};
use rayon::prelude::*;

use crate::graph::{ConvSpec, PoolSpec};

/// im2col of one group of a batch of `[C, H, W]` images: rows are output
/// positions `(image, oh, ow)`, columns `(c, kh, kw)` of the group's channels,
/// padding reads `T::default()` (zero).
#[must_use]
pub fn im2col<T: Copy + Default + Send + Sync>(
    x: ArrayView2<'_, T>,
    (c, h, w): (usize, usize, usize),
    conv: &ConvSpec,
    group: usize,
) -> Array2<T> {
    let (oh, ow) = conv.out_hw(h, w).expect("shape checked at import");
    let (kh, kw) = conv.kernel();
    let cg = c / conv.groups;
    let k = cg * kh * kw;
    let n = x.nrows();
    let mut out = Array2::<T>::default((n * oh * ow, k));
    let [sh, sw] = conv.stride;
    let [dh, dw] = conv.dilation;
    let (pt, pl) = (conv.pads[0], conv.pads[1]);
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let numel = x.ncols();
    if k == 0 || ow == 0 {
        return out;
    }
    // One output row of positions (image, y) per work item, in parallel.
    out.as_slice_mut()
        .expect("standard layout")
        .par_chunks_mut(ow * k)
        .enumerate()
        .for_each(|(iy_row, rows)| {
            let (img, y) = (iy_row / oh, iy_row % oh);
            let image = &xs[img * numel..(img + 1) * numel];
            for (xo, o) in rows.chunks_exact_mut(k).enumerate() {
                let mut col = 0;
                for ci in group * cg..(group + 1) * cg {
                    let plane = &image[ci * h * w..(ci + 1) * h * w];
                    for i in 0..kh {
                        let iy = (y * sh + i * dh).wrapping_sub(pt);
                        for j in 0..kw {
                            let ix = (xo * sw + j * dw).wrapping_sub(pl);
                            if iy < h && ix < w {
                                o[col] = plane[iy * w + ix];
                            }
                            col += 1;
                        }
                    }
                }
            }
        });
    out
}

/// Scatters a group's `(batch * OH * OW) x Mg` result into the `(batch, M*OH*OW)`
/// output, adding `f(value, channel)`.
pub fn scatter_group(
    out: &mut Array2<f32>,
    res: ArrayView2<'_, f32>,
    group: usize,
    (m, oh, ow): (usize, usize, usize),
    groups: usize,
) {
    let mg = m / groups;
    let p = oh * ow;
    for (img, mut orow) in out.rows_mut().into_iter().enumerate() {
        for pos in 0..p {
            let r = res.row(img * p + pos);
            for f in 0..mg {
                orow[(group * mg + f) * p + pos] = r[f];
            }
        }
    }
}

/// Float convolution of a batch.
#[must_use]
pub fn conv_f32(
    x: ArrayView2<'_, f32>,
    chw: (usize, usize, usize),
    conv: &ConvSpec,
) -> Array2<f32> {
    let (oh, ow) = conv.out_hw(chw.1, chw.2).expect("shape checked at import");
    let m = conv.out_channels();
    let mut out = Array2::<f32>::zeros((x.nrows(), m * oh * ow));
    for g in 0..conv.groups {
        let cols = im2col(x, chw, conv, g);
        let wg = conv.group_matrix(g);
        let mut res = Array2::<f32>::zeros((cols.nrows(), wg.nrows()));
        general_mat_mul(1.0, &cols, &wg.t(), 0.0, &mut res);
        scatter_group(&mut out, res.view(), g, (m, oh, ow), conv.groups);
    }
    add_channel_bias(&mut out, &conv.bias, oh * ow);
    out
}

/// Adds `bias[c]` to every element of channel `c` (`p` elements per channel).
pub fn add_channel_bias(x: &mut Array2<f32>, bias: &[f32], p: usize) {
    for mut row in x.rows_mut() {
        for (c, &b) in bias.iter().enumerate() {
            for v in row.slice_mut(ndarray::s![c * p..(c + 1) * p]) {
                *v += b;
            }
        }
    }
}

/// Max or average pooling of a batch of `[C, H, W]` images.
#[must_use]
pub fn pool(
    x: ArrayView2<'_, f32>,
    (c, h, w): (usize, usize, usize),
    spec: &PoolSpec,
    max: bool,
) -> Array2<f32> {
    let (oh, ow) = spec.out_hw(h, w).expect("shape checked at import");
    let mut out = Array2::<f32>::zeros((x.nrows(), c * oh * ow));
    let (pt, pl) = (spec.pads[0], spec.pads[1]);
    if oh * ow == 0 {
        return out;
    }
    // One (image, channel) plane per work item, in parallel.
    out.as_slice_mut()
        .expect("standard layout")
        .par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(plane, orow)| {
            let (img, ch) = (plane / c, plane % c);
            let xrow = x.row(img);
            for y in 0..oh {
                for xo in 0..ow {
                    let (mut acc, mut count, mut window) =
                        (if max { f32::NEG_INFINITY } else { 0.0 }, 0u32, 0u32);
                    for i in 0..spec.kernel[0] {
                        let py = y * spec.stride[0] + i * spec.dilation[0];
                        for j in 0..spec.kernel[1] {
                            let px = xo * spec.stride[1] + j * spec.dilation[1];
                            // Positions inside input + padding count for count_include_pad.
                            if py < h + pt + spec.pads[2] && px < w + pl + spec.pads[3] {
                                window += 1;
                            }
                            let (iy, ix) = (py.wrapping_sub(pt), px.wrapping_sub(pl));
                            if iy < h && ix < w {
                                let v = xrow[ch * h * w + iy * w + ix];
                                if max {
                                    acc = acc.max(v);
                                } else {
                                    acc += v;
                                }
                                count += 1;
                            }
                        }
                    }
                    let v = if max {
                        acc
                    } else {
                        #[allow(clippy::cast_precision_loss)]
                        let d = if spec.count_include_pad {
                            window
                        } else {
                            count
                        }
                        .max(1) as f32;
                        acc / d
                    };
                    orow[y * ow + xo] = v;
                }
            }
        });
    out
}

/// Mean over the spatial positions of each channel.
#[must_use]
pub fn global_avg_pool(x: ArrayView2<'_, f32>, c: usize, p: usize) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((x.nrows(), c));
    for (xrow, mut orow) in x.rows().into_iter().zip(out.rows_mut()) {
        for ch in 0..c {
            let s: f32 = xrow.slice(ndarray::s![ch * p..(ch + 1) * p]).sum();
            #[allow(clippy::cast_precision_loss)]
            let n = p.max(1) as f32;
            orow[ch] = s / n;
        }
    }
    out
}

/// Concatenation along a per-image axis; `shapes` are the inputs' per-image shapes.
#[must_use]
pub fn concat(inputs: &[ArrayView2<'_, f32>], shapes: &[Vec<usize>], axis: usize) -> Array2<f32> {
    let n = inputs[0].nrows();
    let outer: usize = shapes[0][..axis].iter().product();
    let inners: Vec<usize> = shapes.iter().map(|s| s[axis..].iter().product()).collect();
    let total: usize = inners.iter().sum::<usize>() * outer;
    let mut out = Array2::<f32>::zeros((n, total));
    for img in 0..n {
        let mut k = 0;
        for o in 0..outer {
            for (x, &inner) in inputs.iter().zip(&inners) {
                for v in x.row(img).slice(ndarray::s![o * inner..(o + 1) * inner]) {
                    out[[img, k]] = *v;
                    k += 1;
                }
            }
        }
    }
    out
}

/// Softmax along a per-image axis of `shape`.
#[must_use]
pub fn softmax(x: ArrayView2<'_, f32>, shape: &[usize], axis: usize) -> Array2<f32> {
    let outer: usize = shape[..axis].iter().product();
    let dim = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = x.to_owned();
    for mut row in out.rows_mut() {
        for o in 0..outer {
            for i in 0..inner {
                let idx = |d: usize| (o * dim + d) * inner + i;
                let m = (0..dim)
                    .map(|d| row[idx(d)])
                    .fold(f32::NEG_INFINITY, f32::max);
                let mut s = 0.0;
                for d in 0..dim {
                    let e = (row[idx(d)] - m).exp();
                    row[idx(d)] = e;
                    s += e;
                }
                for d in 0..dim {
                    row[idx(d)] /= s;
                }
            }
        }
    }
    out
}

// Test data generation and the naive reference index with plain casts.
#[cfg(test)]
#[allow(
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
mod tests {
    use super::*;
    use ndarray::{Array4, array};

    fn conv(weight: Array4<f32>, stride: usize, pad: usize, dil: usize, groups: usize) -> ConvSpec {
        let m = weight.dim().0;
        ConvSpec {
            weight,
            bias: (0..m).map(|i| i as f32 * 0.5).collect(),
            stride: [stride; 2],
            pads: [pad; 4],
            dilation: [dil; 2],
            groups,
        }
    }

    /// The definition, one output at a time.
    fn naive(x: &[f32], (_c, h, w): (usize, usize, usize), cv: &ConvSpec) -> Vec<f32> {
        let (m, cg, kh, kw) = cv.weight.dim();
        let (oh, ow) = cv.out_hw(h, w).unwrap();
        let mg = m / cv.groups;
        let mut out = vec![0.0; m * oh * ow];
        for f in 0..m {
            let g = f / mg;
            for y in 0..oh {
                for xo in 0..ow {
                    let mut s = cv.bias[f];
                    for ci in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (y * cv.stride[0] + i * cv.dilation[0]) as isize
                                    - cv.pads[0] as isize;
                                let ix = (xo * cv.stride[1] + j * cv.dilation[1]) as isize
                                    - cv.pads[1] as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    let cin = g * cg + ci;
                                    s += cv.weight[[f, ci, i, j]]
                                        * x[cin * h * w + iy as usize * w + ix as usize];
                                }
                            }
                        }
                    }
                    out[(f * oh + y) * ow + xo] = s;
                }
            }
        }
        out
    }

    #[test]
    fn conv_matches_definition_with_stride_pad_dilation_groups() {
        let (c, h, w) = (4, 7, 6);
        let x: Vec<f32> = (0..2 * c * h * w)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let xb = Array2::from_shape_vec((2, c * h * w), x.clone()).unwrap();
        for (stride, pad, dil, groups, m) in [
            (1, 1, 1, 1, 3),
            (2, 0, 1, 2, 4),
            (1, 2, 2, 4, 4),
            (2, 1, 1, 4, 8),
        ] {
            let wt = Array4::from_shape_fn((m, c / groups, 3, 3), |(a, b, i, j)| {
                ((a * 7 + b * 5 + i * 3 + j) % 11) as f32 / 5.0 - 1.0
            });
            let cv = conv(wt, stride, pad, dil, groups);
            let got = conv_f32(xb.view(), (c, h, w), &cv);
            for img in 0..2 {
                let want = naive(&x[img * c * h * w..(img + 1) * c * h * w], (c, h, w), &cv);
                for (a, b) in got.row(img).iter().zip(&want) {
                    assert!(
                        (a - b).abs() < 1e-4,
                        "{stride} {pad} {dil} {groups}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn pools() {
        let x = Array2::from_shape_vec((1, 16), (0..16).map(|v| v as f32).collect()).unwrap();
        let mp = PoolSpec {
            kernel: [2, 2],
            stride: [2, 2],
            pads: [0; 4],
            dilation: [1, 1],
            ceil_mode: false,
            count_include_pad: false,
        };
        assert_eq!(
            pool(x.view(), (1, 4, 4), &mp, true),
            array![[5.0, 7.0, 13.0, 15.0]]
        );
        assert_eq!(
            pool(x.view(), (1, 4, 4), &mp, false),
            array![[2.5, 4.5, 10.5, 12.5]]
        );
        let ap = PoolSpec {
            kernel: [3, 3],
            stride: [1, 1],
            pads: [1; 4],
            dilation: [1, 1],
            ceil_mode: false,
            count_include_pad: true,
        };
        let y = pool(x.view(), (1, 4, 4), &ap, false);
        assert!((y[[0, 0]] - (0.0 + 1.0 + 4.0 + 5.0) / 9.0).abs() < 1e-6);
        let ap2 = PoolSpec {
            count_include_pad: false,
            ..ap
        };
        let y = pool(x.view(), (1, 4, 4), &ap2, false);
        assert!((y[[0, 0]] - 2.5).abs() < 1e-6);
        assert_eq!(global_avg_pool(x.view(), 1, 16), array![[7.5]]);
        let cm = PoolSpec {
            kernel: [3, 3],
            stride: [2, 2],
            pads: [0; 4],
            dilation: [1, 1],
            ceil_mode: true,
            count_include_pad: false,
        };
        assert_eq!(cm.out_hw(4, 4), Some((2, 2)));
        assert_eq!(
            PoolSpec {
                ceil_mode: false,
                ..cm
            }
            .out_hw(4, 4),
            Some((1, 1))
        );
    }

    #[test]
    fn concat_and_softmax() {
        let a = array![[1.0f32, 2.0, 3.0, 4.0]]; // [2, 2]
        let b = array![[5.0f32, 6.0]]; // [1, 2]
        let y = concat(&[a.view(), b.view()], &[vec![2, 2], vec![1, 2]], 0);
        assert_eq!(y, array![[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]);
        let y = concat(&[a.view(), b.view()], &[vec![2, 2], vec![2, 1]], 1);
        assert_eq!(y, array![[1.0, 2.0, 5.0, 3.0, 4.0, 6.0]]);
        let s = softmax(array![[0.0f32, 0.0, (2.0f32).ln(), 0.0]].view(), &[4], 0);
        assert!((s[[0, 2]] - 0.4).abs() < 1e-6);
    }
}
