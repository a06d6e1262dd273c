//! Detection operators: `NonMaxSuppression` (torchvision, Ultralytics and
//! TF exports with NMS inside the graph) and `RoiAlign` (two-stage detectors).
//! Both follow onnx's reference (itself onnxruntime's algorithm) step by step.

use ndarray::{ArrayD, IxDyn};

use super::{Ctx, Kernel, arg, opt, to_usize};
use crate::attrs::Attrs;
use crate::tensor::Tensor;
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &["NonMaxSuppression", "RoiAlign"];

#[derive(Debug)]
struct Nms {
    center_point_box: bool,
}

/// `[x_min, x_max, y_min, y_max]` of a box in either encoding.
fn extent(b: &[f32], center: bool) -> [f32; 4] {
    if center {
        let (hw, hh) = (b[2] / 2.0, b[3] / 2.0);
        [b[0] - hw, b[0] + hw, b[1] - hh, b[1] + hh]
    } else {
        [
            b[1].min(b[3]),
            b[1].max(b[3]),
            b[0].min(b[2]),
            b[0].max(b[2]),
        ]
    }
}

/// True when `a` and `b` overlap by more than `threshold` (intersection over union).
fn suppresses(a: &[f32], b: &[f32], center: bool, threshold: f32) -> bool {
    let (p, q) = (extent(a, center), extent(b, center));
    let (x0, x1) = (p[0].max(q[0]), p[1].min(q[1]));
    if x1 <= x0 {
        return false;
    }
    let (y0, y1) = (p[2].max(q[2]), p[3].min(q[3]));
    if y1 <= y0 {
        return false;
    }
    let inter = (x1 - x0) * (y1 - y0);
    let area_a = (p[1] - p[0]) * (p[3] - p[2]);
    let area_b = (q[1] - q[0]) * (q[3] - q[2]);
    let union = area_a + area_b - inter;
    if inter <= 0.0 || area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > threshold
}

impl Kernel for Nms {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (boxes, scores) = (arg(inputs, 0)?.to_f32(), arg(inputs, 1)?.to_f32());
        let (&[nb, nbox, 4], &[nb2, nc, nbox2]) = (boxes.shape(), scores.shape()) else {
            op_bail!(
                "boxes {:?} and scores {:?}: expected [B, N, 4] and [B, C, N]",
                boxes.shape(),
                scores.shape()
            );
        };
        if nb != nb2 || nbox != nbox2 {
            op_bail!(
                "boxes {:?} and scores {:?} disagree",
                boxes.shape(),
                scores.shape()
            );
        }
        let scalar = |i: usize| opt(inputs, i).filter(|t| !t.is_empty());
        let max_out = match scalar(2) {
            Some(t) => usize::try_from(t.to_i64_vec()?[0].max(0)).unwrap_or(usize::MAX),
            None => 0,
        };
        let iou = scalar(3).map_or(0.0, |t| t.to_f32().iter().copied().next().unwrap_or(0.0));
        let score_threshold = scalar(4).map(|t| t.to_f32().iter().copied().next().unwrap_or(0.0));
        let bx = boxes.as_slice().expect("standard layout");
        let sc = scores.as_slice().expect("standard layout");
        let mut selected: Vec<[i64; 3]> = Vec::new();
        for b in 0..nb {
            for c in 0..nc {
                let s = &sc[(b * nc + c) * nbox..(b * nc + c + 1) * nbox];
                let mut cand: Vec<usize> = (0..nbox)
                    .filter(|&i| score_threshold.is_none_or(|t| s[i] > t))
                    .collect();
                // Highest score first, ties to the lower index.
                cand.sort_by(|&i, &j| {
                    s[j].partial_cmp(&s[i])
                        .unwrap_or(std::cmp::Ordering::Equal)
                        .then(i.cmp(&j))
                });
                let mut kept: Vec<usize> = Vec::new();
                for i in cand {
                    if kept.len() >= max_out {
                        break;
                    }
                    let bi = &bx[(b * nbox + i) * 4..(b * nbox + i + 1) * 4];
                    let clash = kept.iter().any(|&k| {
                        let bk = &bx[(b * nbox + k) * 4..(b * nbox + k + 1) * 4];
                        suppresses(bi, bk, self.center_point_box, iou)
                    });
                    if !clash {
                        kept.push(i);
                        let id = |v: usize| i64::try_from(v).expect("index");
                        selected.push([id(b), id(c), id(i)]);
                    }
                }
            }
        }
        let n = selected.len();
        let flat: Vec<i64> = selected.into_iter().flatten().collect();
        Ok(vec![Tensor::i64(
            ArrayD::from_shape_vec(IxDyn(&[n, 3]), flat).expect("shape"),
        )])
    }
}

#[derive(Debug)]
struct RoiAlign {
    max: bool,
    out_h: usize,
    out_w: usize,
    sampling_ratio: usize,
    spatial_scale: f32,
    half_pixel: bool,
}

/// A bilinear sample: four flat positions and their weights.
type Sample = ([usize; 4], [f32; 4]);

impl Kernel for RoiAlign {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xa = x.floats()?;
        let rois = arg(inputs, 1)?.to_f32();
        let bidx = arg(inputs, 2)?.to_i64_vec()?;
        let &[n, c, h, w] = xa.shape() else {
            op_bail!("X of shape {:?}: expected [N, C, H, W]", xa.shape());
        };
        let &[nr, 4] = rois.shape() else {
            op_bail!("rois of shape {:?}: expected [R, 4]", rois.shape());
        };
        if bidx.len() != nr {
            op_bail!("{} batch indices for {nr} rois", bidx.len());
        }
        let (ph, pw) = (self.out_h, self.out_w);
        crate::tensor::checked_numel(&[nr, c, ph, pw])?;
        let src = xa.as_slice().expect("standard layout");
        let mut out = vec![0.0f32; nr * c * ph * pw];
        let off = if self.half_pixel { 0.5 } else { 0.0 };
        for r in 0..nr {
            let bi = to_usize(bidx[r], "a batch index")?;
            if bi >= n {
                op_bail!("batch index {bi} for a batch of {n}");
            }
            let roi: Vec<f32> = (0..4)
                .map(|k| rois[[r, k]] * self.spatial_scale - off)
                .collect();
            let (mut rw, mut rh) = (roi[2] - roi[0], roi[3] - roi[1]);
            if !self.half_pixel {
                rw = rw.max(1.0);
                rh = rh.max(1.0);
            }
            let (bh, bw) = (rh / ph as f32, rw / pw as f32);
            let gh = if self.sampling_ratio > 0 {
                self.sampling_ratio
            } else {
                (rh / ph as f32).ceil().max(0.0) as usize
            };
            let gw = if self.sampling_ratio > 0 {
                self.sampling_ratio
            } else {
                (rw / pw as f32).ceil().max(0.0) as usize
            };
            let count = (gh * gw).max(1) as f32;
            // Every bin's samples, shared by the channels.
            let mut samples: Vec<Sample> = Vec::with_capacity(ph * pw * gh * gw);
            for py in 0..ph {
                for px in 0..pw {
                    for iy in 0..gh {
                        let yy = roi[1] + py as f32 * bh + (iy as f32 + 0.5) * bh / gh as f32;
                        for ix in 0..gw {
                            let xx = roi[0] + px as f32 * bw + (ix as f32 + 0.5) * bw / gw as f32;
                            samples.push(bilinear(yy, xx, h, w));
                        }
                    }
                }
            }
            for ch in 0..c {
                let plane = &src[(bi * c + ch) * h * w..(bi * c + ch + 1) * h * w];
                for bin in 0..ph * pw {
                    let ss = &samples[bin * gh * gw..(bin + 1) * gh * gw];
                    let v = if self.max {
                        // As onnxruntime: the largest weighted corner of each sample.
                        ss.iter()
                            .map(|(p, wt)| {
                                (0..4)
                                    .map(|k| wt[k] * plane[p[k]])
                                    .fold(f32::NEG_INFINITY, f32::max)
                            })
                            .fold(None, |m: Option<f32>, v| Some(m.map_or(v, |m| m.max(v))))
                            .unwrap_or(0.0)
                    } else {
                        ss.iter()
                            .map(|(p, wt)| (0..4).map(|k| wt[k] * plane[p[k]]).sum::<f32>())
                            .sum::<f32>()
                            / count
                    };
                    out[((r * c + ch) * ph * pw) + bin] = v;
                }
            }
        }
        Ok(vec![Tensor::float(
            ArrayD::from_shape_vec(IxDyn(&[nr, c, ph, pw]), out).expect("shape"),
            x.dtype(),
        )])
    }
}

/// The bilinear sample at `(y, x)`; outside `[-1, h] x [-1, w]` it is zero.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn bilinear(y: f32, x: f32, h: usize, w: usize) -> Sample {
    if y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 {
        return ([0; 4], [0.0; 4]);
    }
    let (mut y, mut x) = (y.max(0.0), x.max(0.0));
    let (mut y0, mut x0) = (y as usize, x as usize);
    let y1 = if y0 >= h - 1 {
        y0 = h - 1;
        y = y0 as f32;
        y0
    } else {
        y0 + 1
    };
    let x1 = if x0 >= w - 1 {
        x0 = w - 1;
        x = x0 as f32;
        x0
    } else {
        x0 + 1
    };
    let (ly, lx) = (y - y0 as f32, x - x0 as f32);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    (
        [y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1],
        [hy * hx, hy * lx, ly * hx, ly * lx],
    )
}

/// Builds a kernel of this family.
///
/// # Errors
/// Bad attributes.
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Option<Box<dyn Kernel>>, OpError> {
    Ok(Some(match op {
        "NonMaxSuppression" => Box::new(Nms {
            center_point_box: a.int_or("center_point_box", 0)? != 0,
        }),
        "RoiAlign" => Box::new(RoiAlign {
            max: match a.string_or("mode", "avg")?.as_str() {
                "avg" => false,
                "max" => true,
                m => op_bail!("mode \"{m}\" is not supported (avg, max)"),
            },
            out_h: to_usize(a.int_or("output_height", 1)?, "output_height")?.max(1),
            out_w: to_usize(a.int_or("output_width", 1)?, "output_width")?.max(1),
            sampling_ratio: to_usize(a.int_or("sampling_ratio", 0)?, "sampling_ratio")?,
            spatial_scale: a.float_or("spatial_scale", 1.0)?,
            // Opset 16 added the mode, defaulting to half_pixel; opset 10 had none.
            half_pixel: if ctx.opset < 16 {
                false
            } else {
                match a
                    .string_or("coordinate_transformation_mode", "half_pixel")?
                    .as_str()
                {
                    "half_pixel" => true,
                    "output_half_pixel" => false,
                    m => op_bail!("coordinate_transformation_mode \"{m}\" is not supported"),
                }
            },
        }),
        _ => return Ok(None),
    }))
}
