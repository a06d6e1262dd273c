//! Window operators beyond forward pooling: `MaxPool` with its `Indices`
//! output (built here when a MaxPool node declares two outputs), `MaxUnpool`
//! (segmentation decoders), and `Col2Im`.

use ndarray::{ArrayD, IxDyn};

use super::nn::{Window, col2im, nchw, window};
use super::{Ctx, Kernel, arg, opt, to_usize};
use crate::attrs::Attrs;
use crate::tensor::{Tensor, checked_numel};
use crate::{OpError, op_bail};

/// The ops of this family (MaxPool is listed by `nn`).
pub const OPS: &[&str] = &["Col2Im", "MaxUnpool"];

/// MaxPool returning the flat index of each maximum in the input tensor
/// (row-major, or column-major within each plane when `storage_order = 1`).
#[derive(Debug)]
pub struct MaxPoolIndices {
    win: Window,
    col_major: bool,
}

impl Kernel for MaxPoolIndices {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.to_f32();
        let win = &self.win;
        let [n, c, h, w] = nchw(xa.shape(), win.one_d)?;
        let (oh, ow, pads) = win.out_hw(h, w)?;
        checked_numel(&[n, c, oh, ow])?;
        let src = xa.as_slice().expect("standard layout");
        let mut vals = Vec::with_capacity(n * c * oh * ow);
        let mut idx = Vec::with_capacity(n * c * oh * ow);
        for plane in 0..n * c {
            let p = &src[plane * h * w..(plane + 1) * h * w];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best: Option<(f32, usize, usize)> = None;
                    for ky in 0..win.kernel[0] {
                        let iy = (oy * win.stride[0] + ky * win.dilation[0]).wrapping_sub(pads[0]);
                        for kx in 0..win.kernel[1] {
                            let ix =
                                (ox * win.stride[1] + kx * win.dilation[1]).wrapping_sub(pads[1]);
                            if iy < h && ix < w {
                                let v = p[iy * w + ix];
                                if best.is_none_or(|(b, _, _)| v > b) {
                                    best = Some((v, iy, ix));
                                }
                            }
                        }
                    }
                    let (v, iy, ix) = best.unwrap_or((f32::NEG_INFINITY, 0, 0));
                    let within = if self.col_major {
                        ix * h + iy
                    } else {
                        iy * w + ix
                    };
                    vals.push(v);
                    idx.push(i64::try_from(plane * h * w + within).expect("index"));
                }
            }
        }
        let shape: Vec<usize> = if win.one_d {
            vec![n, c, ow]
        } else {
            vec![n, c, oh, ow]
        };
        let y = ArrayD::from_shape_vec(IxDyn(&shape), vals).expect("shape");
        let y = if x.dtype().is_float() {
            Tensor::float(y, x.dtype())
        } else {
            Tensor::f32(y).cast(x.dtype())
        };
        Ok(vec![
            y,
            Tensor::i64(ArrayD::from_shape_vec(IxDyn(&shape), idx).expect("shape")),
        ])
    }
}

/// The MaxPool kernel with indices.
///
/// # Errors
/// Bad attributes.
pub fn max_pool_indices(a: &Attrs<'_>) -> Result<Box<dyn Kernel>, OpError> {
    Ok(Box::new(MaxPoolIndices {
        win: window(a, None)?,
        col_major: a.int_or("storage_order", 0)? != 0,
    }))
}

#[derive(Debug)]
struct MaxUnpool {
    win: Window,
}

impl Kernel for MaxUnpool {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, ind) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let xa = x.to_f32();
        let win = &self.win;
        let [n, c, h, w] = nchw(xa.shape(), win.one_d)?;
        let p = win.pads;
        let size = |d: usize, len: usize| -> Result<usize, OpError> {
            ((len.max(1) - 1) * win.stride[d] + win.kernel[d])
                .checked_sub(p[d] + p[d + 2])
                .ok_or_else(|| OpError("pads larger than the output".into()))
        };
        let (ih, iw) = (size(0, h)?, size(1, w)?);
        let inferred: Vec<usize> = if win.one_d {
            vec![n, c, iw]
        } else {
            vec![n, c, ih, iw]
        };
        let total = checked_numel(&inferred)?;
        let mut y = vec![0.0f32; total];
        let idx = ind.to_i64_vec()?;
        if idx.len() != xa.len() {
            op_bail!("{} indices for {} values", idx.len(), xa.len());
        }
        for (&i, &v) in idx.iter().zip(xa.iter()) {
            let i = to_usize(i, "an index")?;
            if i >= total {
                op_bail!("index {i} outside an output of {total} values");
            }
            y[i] = v;
        }
        let inferred_y = ArrayD::from_shape_vec(IxDyn(&inferred), y).expect("shape");
        // An explicit output shape pads the inferred one with zeros at the end.
        let out = match opt(inputs, 2) {
            Some(s) => {
                let shape: Vec<usize> = s
                    .to_i64_vec()?
                    .iter()
                    .map(|&v| to_usize(v, "a size"))
                    .collect::<Result<_, _>>()?;
                if shape.len() != inferred.len() || shape.iter().zip(&inferred).any(|(a, b)| a < b)
                {
                    op_bail!("output_shape {shape:?} smaller than {inferred:?}");
                }
                checked_numel(&shape)?;
                let mut o = ArrayD::<f32>::zeros(IxDyn(&shape));
                o.slice_each_axis_mut(|ax| ndarray::Slice::from(0..inferred[ax.axis.index()]))
                    .assign(&inferred_y);
                o
            }
            None => inferred_y,
        };
        Ok(vec![if x.dtype().is_float() {
            Tensor::float(out, x.dtype())
        } else {
            Tensor::f32(out).cast(x.dtype())
        }])
    }
}

#[derive(Debug)]
struct Col2Im {
    attrs: Vec<crate::proto::AttributeProto>,
}

impl Kernel for Col2Im {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        let image: Vec<usize> = arg(inputs, 1)?
            .to_i64_vec()?
            .iter()
            .map(|&v| to_usize(v, "an image size"))
            .collect::<Result<_, _>>()?;
        let block: Vec<usize> = arg(inputs, 2)?
            .to_i64_vec()?
            .iter()
            .map(|&v| to_usize(v, "a block size"))
            .collect::<Result<_, _>>()?;
        if image.len() != 2 || block.len() != 2 {
            op_bail!("{}-D images are not supported (2-D are)", image.len());
        }
        let a = Attrs::new(&self.attrs);
        let win = window(&a, Some(&block))?;
        let &[n, ck, l] = xa.shape() else {
            op_bail!(
                "input of shape {:?}: expected [N, C * block, L]",
                xa.shape()
            );
        };
        let k = block[0] * block[1];
        if k == 0 || ck % k != 0 {
            op_bail!("{ck} rows are not a multiple of the block size {k}");
        }
        let c = ck / k;
        // The blocks form the grid a convolution over the padded image would.
        let blocks = |d: usize| -> Option<usize> {
            let span = win.dilation[d] * (block[d] - 1) + 1;
            (image[d] + win.pads[d] + win.pads[d + 2])
                .checked_sub(span)
                .map(|v| v / win.stride[d] + 1)
        };
        let (Some(bh), Some(bw)) = (blocks(0), blocks(1)) else {
            op_bail!("blocks {block:?} do not fit the image {image:?}");
        };
        if bh * bw != l {
            op_bail!("{l} blocks given, the image holds {bh} x {bw}");
        }
        checked_numel(&[n, c, image[0], image[1]])?;
        let mut out = ArrayD::<f32>::zeros(IxDyn(&[n, c, image[0], image[1]]));
        for b in 0..n {
            // Rows: block positions; columns: (c, kh, kw), as col2im expects.
            let cols = xa.index_axis(ndarray::Axis(0), b).t().to_owned();
            let part = col2im(
                cols.view().into_dimensionality().expect("2-D"),
                (bh, bw),
                c,
                &win,
                (image[0], image[1]),
                win.pads,
            );
            out.index_axis_mut(ndarray::Axis(0), b).assign(&part);
        }
        Ok(vec![Tensor::float(out, x.dtype())])
    }
}

/// Builds a kernel of this family.
///
/// # Errors
/// Bad attributes.
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Option<Box<dyn Kernel>>, OpError> {
    let _ = ctx;
    Ok(Some(match op {
        "MaxUnpool" => Box::new(MaxUnpool {
            win: window(a, None)?,
        }),
        "Col2Im" => Box::new(Col2Im {
            attrs: a.list().to_vec(),
        }),
        _ => return Ok(None),
    }))
}
