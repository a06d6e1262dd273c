//! `Resize` and `Upsample`: nearest, linear and cubic interpolation on any
//! axes, every coordinate transformation mode, `axes`, `keep_aspect_ratio_policy`,
//! `exclude_outside`, `antialias` and `tf_crop_and_resize`'s region of interest.
//!
//! Resizing is separable: one axis at a time, each output index a weighted sum
//! of a few input indices (its taps). The taps are computed as onnx's
//! reference implementation computes them (coordinates in f64, the neighbours of
//! the source coordinate found in an edge-padded axis), so results match it.

use ndarray::{ArrayD, Axis, IxDyn};

use super::{Ctx, Kernel, arg, opt, to_usize};
use crate::attrs::Attrs;
use crate::tensor::{Tensor, checked_numel};
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &["Resize", "Upsample"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

/// How a fractional source coordinate picks its nearest index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nearest {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Before `nearest_mode` (Upsample, Resize-10): as onnxruntime does,
    /// rounded up when downsampling, down when upsampling.
    Simple,
}

/// `output index -> source coordinate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
    TfCropAndResize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AspectPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

#[derive(Debug)]
struct Resize {
    mode: Mode,
    coord: Coord,
    nearest: Nearest,
    cubic_a: f64,
    exclude_outside: bool,
    extrapolation: f64,
    antialias: bool,
    policy: AspectPolicy,
    axes: Option<Vec<i64>>,
    /// Upsample before opset 9: scales as an attribute.
    scales_attr: Option<Vec<f32>>,
    /// Input index of the region of interest (Resize-11+ 1).
    roi_input: Option<usize>,
    /// Input index of the scales (Upsample 1, Resize-10 1, Resize-11+ 2).
    scales_input: usize,
    /// Input index of the sizes (Resize-11+ 3).
    sizes_input: Option<usize>,
}

/// The interpolation weights of one output index for a fractional part
/// `ratio` in `(0, 1]` (the reference's `_*_coeffs`).
fn coeffs(r: &Resize, ratio: f64, scale: f64) -> Vec<f64> {
    let a = r.cubic_a;
    match r.mode {
        Mode::Nearest => {
            let up = if ratio == 1.0 {
                true
            } else {
                match r.nearest {
                    Nearest::RoundPreferFloor => ratio > 0.5,
                    Nearest::RoundPreferCeil => ratio >= 0.5,
                    Nearest::Floor => false,
                    Nearest::Ceil => true,
                    Nearest::Simple => scale < 1.0,
                }
            };
            if up { vec![0.0, 1.0] } else { vec![1.0, 0.0] }
        }
        Mode::Linear if r.antialias => {
            let s = scale.min(1.0);
            let start = (-1.0 / s).floor() + 1.0;
            let footprint = 2.0 - 2.0 * start;
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let c: Vec<f64> = (0..footprint as usize)
                .map(|i| {
                    #[allow(clippy::cast_precision_loss)]
                    let x = (start + i as f64 - ratio) * s;
                    (1.0 - x.abs()).clamp(0.0, 1.0)
                })
                .collect();
            normalised(c)
        }
        Mode::Linear => vec![1.0 - ratio, ratio],
        Mode::Cubic if r.antialias => {
            let s = scale.min(1.0);
            let k = |x: f64| {
                let x = x.abs();
                let (x2, x3) = (x * x, x * x * x);
                if x <= 1.0 {
                    (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
                } else if x < 2.0 {
                    a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
                } else {
                    0.0
                }
            };
            #[allow(clippy::cast_possible_truncation)]
            let start = ((-2.0 / s).floor() + 1.0) as i64;
            let c: Vec<f64> = (start..2 - start)
                .map(|i| {
                    #[allow(clippy::cast_precision_loss)]
                    let x = s * (i as f64 - ratio);
                    k(x)
                })
                .collect();
            normalised(c)
        }
        Mode::Cubic => {
            let (p, q) = (ratio + 1.0, 1.0 - ratio);
            vec![
                ((a * p - 5.0 * a) * p + 8.0 * a) * p - 4.0 * a,
                ((a + 2.0) * ratio - (a + 3.0)) * ratio * ratio + 1.0,
                ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                ((a * (q + 1.0) - 5.0 * a) * (q + 1.0) + 8.0 * a) * (q + 1.0) - 4.0 * a,
            ]
        }
    }
}

fn normalised(mut c: Vec<f64>) -> Vec<f64> {
    let s: f64 = c.iter().sum();
    if s != 0.0 {
        for v in &mut c {
            *v /= s;
        }
    }
    c
}

/// One axis's taps: for each output index, `(input index, weight)` pairs, and
/// whether it lies outside a crop (takes the extrapolation value).
type Taps = (Vec<Vec<(usize, f64)>>, Vec<bool>);

#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]
fn axis_taps(r: &Resize, n_in: usize, n_out: usize, scale: f64, roi: (f64, f64)) -> Taps {
    let inw = n_in as f64;
    let outw = scale * inw;
    let mut taps = Vec::with_capacity(n_out);
    let mut outside = Vec::with_capacity(n_out);
    for o in 0..n_out {
        let y = o as f64;
        let mut out_of_crop = false;
        let x = match r.coord {
            Coord::AlignCorners => {
                if outw == 1.0 {
                    0.0
                } else {
                    y * (inw - 1.0) / (outw - 1.0)
                }
            }
            Coord::Asymmetric => y / scale,
            Coord::TfCropAndResize => {
                let x = if outw == 1.0 {
                    (roi.1 - roi.0) * (inw - 1.0) / 2.0
                } else {
                    y * (roi.1 - roi.0) * (inw - 1.0) / (outw - 1.0)
                } + roi.0 * (inw - 1.0);
                out_of_crop = x < 0.0 || x > inw - 1.0;
                x
            }
            Coord::PytorchHalfPixel => {
                if outw == 1.0 {
                    -0.5
                } else {
                    (y + 0.5) / scale - 0.5
                }
            }
            Coord::HalfPixel => (y + 0.5) / scale - 0.5,
            Coord::HalfPixelSymmetric => {
                let adjustment = n_out as f64 / outw;
                let offset = inw / 2.0 * (1.0 - adjustment);
                offset + (y + 0.5) / scale - 0.5
            }
            Coord::TfHalfPixelForNn => (y + 0.5) / scale,
        };
        let xi = x.floor();
        let ratio = if x == xi { 1.0 } else { x - xi };
        let mut c = coeffs(r, ratio, scale);
        let n = c.len() as i64;
        // The n indices nearest x in the edge-padded axis, ties to the smaller.
        let pad = (n + 1) / 2;
        let xp = x + pad as f64;
        let p = xp.floor();
        let frac = xp - p;
        let offset = if n % 2 == 0 {
            if frac == 0.0 { -(n / 2) } else { -(n / 2) + 1 }
        } else {
            let base = -((n - 1) / 2);
            if frac <= 0.5 { base } else { base + 1 }
        };
        let start = p as i64 + offset - pad;
        let last = n_in as i64 - 1;
        if r.exclude_outside {
            for (k, v) in c.iter_mut().enumerate() {
                let i = start + k as i64;
                if i < 0 || i > last {
                    *v = 0.0;
                }
            }
            let s: f64 = c.iter().sum();
            let s = if s == 0.0 { 1.0 } else { s };
            for v in &mut c {
                *v /= s;
            }
        }
        taps.push(
            c.iter()
                .enumerate()
                .filter(|(_, v)| **v != 0.0)
                .map(|(k, &v)| ((start + k as i64).clamp(0, last) as usize, v))
                .collect(),
        );
        outside.push(out_of_crop);
    }
    (taps, outside)
}

impl Kernel for Resize {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let xs = x.shape().to_vec();
        let r = xs.len();
        let axes: Vec<usize> = match &self.axes {
            Some(a) => {
                let v = a
                    .iter()
                    .map(|&i| super::axis(i, r))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut sorted = v.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != v.len() {
                    op_bail!("repeated axes {a:?}");
                }
                v
            }
            None => (0..r).collect(),
        };
        let present = |i: Option<usize>| i.and_then(|i| opt(inputs, i)).filter(|t| !t.is_empty());
        let scales: Option<Vec<f64>> = match &self.scales_attr {
            Some(s) => Some(s.iter().map(|&v| f64::from(v)).collect()),
            None => present(Some(self.scales_input))
                .map(|t| t.to_f32().iter().map(|&v| f64::from(v)).collect()),
        };
        let sizes: Option<Vec<usize>> = present(self.sizes_input)
            .map(|t| {
                t.to_i64_vec()?
                    .iter()
                    .map(|&v| to_usize(v, "a size"))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let roi: Option<Vec<f64>> =
            present(self.roi_input).map(|t| t.to_f32().iter().map(|&v| f64::from(v)).collect());
        let na = axes.len();
        // Per axis of the input: scale, output size, crop.
        let mut scale = vec![1.0f64; r];
        let mut out = xs.clone();
        let mut crop = vec![(0.0f64, 1.0f64); r];
        if let Some(roi) = &roi {
            if roi.len() != 2 * na {
                op_bail!("roi has {} values for {na} axes", roi.len());
            }
            for (i, &ax) in axes.iter().enumerate() {
                crop[ax] = (roi[i], roi[na + i]);
            }
        }
        match (sizes, scales) {
            (Some(s), _) => {
                if s.len() != na {
                    op_bail!("{} sizes for {na} axes", s.len());
                }
                for (i, &ax) in axes.iter().enumerate() {
                    scale[ax] = s[i] as f64 / xs[ax] as f64;
                    out[ax] = s[i];
                }
                if self.policy != AspectPolicy::Stretch {
                    let it = axes.iter().map(|&ax| scale[ax]);
                    let s = if self.policy == AspectPolicy::NotLarger {
                        it.fold(f64::INFINITY, f64::min)
                    } else {
                        it.fold(f64::NEG_INFINITY, f64::max)
                    };
                    for &ax in &axes {
                        scale[ax] = s;
                        out[ax] = (s * xs[ax] as f64 + 0.5) as usize;
                    }
                }
            }
            (None, Some(sc)) => {
                if sc.len() != na {
                    op_bail!("{} scales for {na} axes", sc.len());
                }
                if sc.iter().any(|&v| !v.is_finite() || v <= 0.0) {
                    op_bail!("scales {sc:?} must be positive");
                }
                for (i, &ax) in axes.iter().enumerate() {
                    scale[ax] = sc[i];
                    out[ax] = (sc[i] * xs[ax] as f64) as usize;
                }
            }
            (None, None) => op_bail!("neither scales nor sizes given"),
        }
        checked_numel(&out)?;
        let mut cur: ArrayD<f64> = x.to_f32().mapv(f64::from);
        for &ax in &axes {
            let identity = (scale[ax] - 1.0).abs() <= 1e-9
                && out[ax] == xs[ax]
                && (self.coord != Coord::TfCropAndResize
                    || (crop[ax].0.abs() <= 1e-9 && (crop[ax].1 - 1.0).abs() <= 1e-9));
            if identity {
                continue;
            }
            if xs[ax] == 0 {
                op_bail!("cannot resize an empty axis {ax}");
            }
            let (taps, outside) = axis_taps(self, xs[ax], out[ax], scale[ax], crop[ax]);
            let mut shape = cur.shape().to_vec();
            shape[ax] = out[ax];
            let mut next = ArrayD::<f64>::zeros(IxDyn(&shape));
            for (o, t) in taps.iter().enumerate() {
                let mut dst = next.index_axis_mut(Axis(ax), o);
                if outside[o] {
                    dst.fill(self.extrapolation);
                    continue;
                }
                for &(i, c) in t {
                    dst.scaled_add(c, &cur.index_axis(Axis(ax), i));
                }
            }
            cur = next;
        }
        Ok(vec![if x.dtype().is_float() {
            Tensor::float(cur.mapv(|v| v as f32), x.dtype())
        } else {
            // Rounded half to even and saturated, as the reference casts.
            let (lo, hi) = crate::tensor::int_range(x.dtype());
            Tensor::int(
                cur.mapv(|v| v.round_ties_even().clamp(lo as f64, hi as f64) as i64),
                x.dtype(),
            )
        }])
    }
}

/// Builds a kernel of this family.
///
/// # Errors
/// Bad attributes.
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Option<Box<dyn Kernel>>, OpError> {
    if !OPS.contains(&op) {
        return Ok(None);
    }
    let opset = ctx.opset;
    let upsample = op == "Upsample";
    // Upsample and Resize-10 have neither coordinate nor nearest modes.
    let legacy = upsample || opset < 11;
    if upsample && opset < 7 {
        op_bail!("Upsample before opset 7 (`height_scale`/`width_scale`) is not supported");
    }
    let mode = match a.string_or("mode", "nearest")?.as_str() {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        "cubic" | "bicubic" if !legacy => Mode::Cubic,
        m => op_bail!("attribute `mode` = \"{m}\" is not supported (nearest, linear, cubic)"),
    };
    let coord = if legacy {
        Coord::Asymmetric
    } else {
        match a
            .string_or("coordinate_transformation_mode", "half_pixel")?
            .as_str()
        {
            "half_pixel" => Coord::HalfPixel,
            "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
            "pytorch_half_pixel" => Coord::PytorchHalfPixel,
            "align_corners" => Coord::AlignCorners,
            "asymmetric" => Coord::Asymmetric,
            "tf_half_pixel_for_nn" => Coord::TfHalfPixelForNn,
            "tf_crop_and_resize" => Coord::TfCropAndResize,
            m => op_bail!("coordinate_transformation_mode \"{m}\" is not supported"),
        }
    };
    let nearest = if legacy {
        Nearest::Simple
    } else {
        match a.string_or("nearest_mode", "round_prefer_floor")?.as_str() {
            "round_prefer_floor" => Nearest::RoundPreferFloor,
            "round_prefer_ceil" => Nearest::RoundPreferCeil,
            "floor" => Nearest::Floor,
            "ceil" => Nearest::Ceil,
            m => op_bail!("nearest_mode \"{m}\" is not supported"),
        }
    };
    let policy = match a.string_or("keep_aspect_ratio_policy", "stretch")?.as_str() {
        "stretch" => AspectPolicy::Stretch,
        "not_larger" => AspectPolicy::NotLarger,
        "not_smaller" => AspectPolicy::NotSmaller,
        m => op_bail!("keep_aspect_ratio_policy \"{m}\" is not supported"),
    };
    let antialias = a.int_or("antialias", 0)? != 0;
    if antialias && mode == Mode::Nearest {
        op_bail!("antialias with mode nearest is not supported");
    }
    Ok(Some(Box::new(Resize {
        mode,
        coord,
        nearest,
        cubic_a: f64::from(a.float_or("cubic_coeff_a", -0.75)?),
        exclude_outside: a.int_or("exclude_outside", 0)? != 0,
        extrapolation: f64::from(a.float_or("extrapolation_value", 0.0)?),
        antialias,
        policy,
        axes: a.ints("axes")?,
        scales_attr: if upsample && opset < 9 {
            Some(
                a.floats("scales")?
                    .ok_or_else(|| OpError("Upsample needs `scales`".into()))?,
            )
        } else {
            None
        },
        roi_input: if legacy { None } else { Some(1) },
        scales_input: if legacy { 1 } else { 2 },
        sizes_input: if legacy { None } else { Some(3) },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::AttributeProto;
    use ndarray::{ArrayD, IxDyn, arr1};

    fn s_attr(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            s: Some(v.as_bytes().to_vec()),
            r#type: Some(3),
            ..Default::default()
        }
    }

    fn resize(attrs: &[AttributeProto], opset: i64, x: &Tensor, scales: &[f32]) -> Vec<f32> {
        let k = build("Resize", &Attrs::new(attrs), Ctx { opset, outputs: 1 })
            .unwrap()
            .unwrap();
        let sc = Tensor::f32(arr1(scales).into_dyn());
        let ins = if opset < 11 {
            vec![Some(x), Some(&sc)]
        } else {
            vec![Some(x), None, Some(&sc)]
        };
        k.eval(&ins).unwrap()[0].to_f32().iter().copied().collect()
    }

    #[test]
    fn align_corners_uses_the_fractional_output_width() {
        // 1 x 4 -> scale 0.6 -> 2 outputs; onnx maps output 1 to 3 / (2.4 - 1),
        // not to 3 / (2 - 1): 1 + 2.142857 = 3.142857, not 4.
        let x = Tensor::f32(
            arr1(&[1.0f32, 2.0, 3.0, 4.0])
                .into_shape_with_order(IxDyn(&[1, 4]))
                .unwrap(),
        );
        let attrs = [
            s_attr("mode", "linear"),
            s_attr("coordinate_transformation_mode", "align_corners"),
        ];
        let y = resize(&attrs, 13, &x, &[1.0, 0.6]);
        assert!((y[1] - 3.142_857).abs() < 1e-5, "{y:?}");
    }

    #[test]
    fn old_nearest_rounds_up_when_downsampling() {
        // Resize-10 (no nearest_mode): onnxruntime's rule, ceil when downsampling.
        let x = Tensor::f32(
            ArrayD::from_shape_vec(IxDyn(&[1, 5]), vec![0.0, 1.0, 2.0, 3.0, 4.0]).unwrap(),
        );
        let y = resize(&[], 10, &x, &[1.0, 0.6]);
        assert_eq!(y, vec![0.0, 2.0, 4.0]);
        let y = resize(&[], 10, &x, &[1.0, 2.0]);
        assert_eq!(&y[..4], &[0.0, 0.0, 1.0, 1.0]);
    }
}
