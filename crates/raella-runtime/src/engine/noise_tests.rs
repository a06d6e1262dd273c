//! Statistical tests of read noise (distributions, not value pins): every
//! conversion draws its own Gaussian of `sigma = E * sqrt(N+ + N-)`,
//! independent of every other conversion's, in the primary pass and in
//! recovery, on the integer and the f32 path, for ideal and programmed devices.
//!
//! The layer is built so that each column measures exactly one noisy
//! conversion per vector, whose noise-free sum the test computes from the
//! programmed conductances: 512 inputs x 256 filters of `4-4` weight slices
//! (one full 512 x 512 crossbar), Zero+Offset weights `s_f (16 a + b)` with
//! `a, b` in 1..=3 (both slices of every filter non-zero, all of one sign per
//! filter, half the filters negative) and inputs 128 on exactly 48 rows per
//! vector, 0 elsewhere. Input bits 0-6 are zero, so every other conversion
//! has sum 0 and magnitude 0 and draws nothing:
//!
//! * primary: fixed `4-4` input slices, a 20-bit ADC; slice 0 applies 8 pulses
//!   per active row and is the column's only noisy conversion
//!   (`value = 16 x code`);
//! * recovery: speculation `4-4` with recovery, a 9-bit ADC; slice 0's sum
//!   (`8 x` about 96) always saturates, so every column-slice is recovered, and
//!   of its four 1-bit conversions only bit 7's (sum about 96, in range) is
//!   noisy (`value = 128 x code`).
//!
//! A code is `round(S + n)`, so its error `code - S` has variance
//! `sigma^2 + 1/12` (Sheppard's correction: the rounding error is uniform and
//! independent of `n` to within `exp(-2 pi^2 sigma^2)`, negligible at the sigmas
//! here, 2-7 LSB). Each case has 262,144 conversions (512 vectors in two
//! chunks). Budgets: the variance ratio's sampling error is about
//! `sqrt(2 / n) = 0.3%` (allowed 3%); a correlation estimated from `n` pairs
//! has standard error `1 / sqrt(n)`, 0.003 for the 131,072 weight-slice pairs
//! and at most 0.003 for each column lag (allowed 0.02).
//!
//! A second test compares whole outputs at real size with the distribution
//! the per-conversion model predicts (several row blocks and chunks, both
//! passes of signed inputs).

use super::*;
use raella_compiler::{CompileConfig, Encoding, Slicing, compile};
use raella_device::{CellKind, CrossbarGeometry, DeviceNoise};
use rand::RngExt;

const ROWS: usize = 512;
const FILTERS: usize = 256;
const ACTIVE: usize = 48;
const VECTORS: usize = 512;
const E: f64 = 0.25;
/// Column distances whose pairs are correlated, each pooled over vectors and
/// columns (at least 131,072 pairs); the mean over all pairs covers the rest.
const LAGS: [usize; 13] = [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256];

/// The layer and inputs of the module doc, and each vector's active rows.
fn setup() -> (MappedLayer, Array2<u8>, Vec<Vec<usize>>) {
    let mut rng = stream_rng(41, &[]);
    let sign: Vec<i32> = (0..FILTERS)
        .map(|_| if rng.random::<bool>() { 1 } else { -1 })
        .collect();
    let weights = Array2::from_shape_fn((FILTERS, ROWS), |(f, _)| {
        let (a, b) = (rng.random_range(1..=3), rng.random_range(1..=3));
        i8::try_from(sign[f] * (16 * a + b)).unwrap()
    });
    let mut active = Vec::with_capacity(VECTORS);
    let mut x = Array2::<u8>::zeros((VECTORS, ROWS));
    for v in 0..VECTORS {
        // The first ACTIVE of a partial Fisher-Yates shuffle.
        let mut rows: Vec<usize> = (0..ROWS).collect();
        for k in 0..ACTIVE {
            let j = rng.random_range(k..ROWS);
            rows.swap(k, j);
            x[[v, rows[k]]] = 128;
        }
        rows.truncate(ACTIVE);
        active.push(rows);
    }
    let cfg = CompileConfig {
        geometry: CrossbarGeometry::new(ROWS, 2 * FILTERS, CellKind::TwoT2R, 4).unwrap(),
        encoding: Encoding::ZeroOffset,
        weight_slicing: Slicing::parse("4-4").unwrap(),
    };
    let mapped = compile(weights.view(), &cfg, None).unwrap();
    assert_eq!(mapped.crossbars().len(), 1);
    (mapped, x, active)
}

/// The devices and the product path under test.
#[derive(Debug, Clone, Copy)]
enum Devices {
    /// Ideal devices, integer products.
    Ideal,
    /// Ideal devices forced onto the f32 products.
    IdealF32,
    /// Cells stuck at 0 (levels stay integers): integer products. (A device
    /// stuck at the maximum beside a non-zero partner makes a magnitude above
    /// the device maximum, which sends the crossbar to the f32 products.)
    Stuck,
    /// Programming variation and stuck cells: f32 products.
    Programmed,
}

fn program(mapped: &MappedLayer, devices: Devices) -> ProgrammedLayer {
    let layer = match devices {
        Devices::Ideal | Devices::IdealF32 => ProgrammedLayer::ideal(mapped.clone()),
        Devices::Stuck => ProgrammedLayer::program(
            mapped.clone(),
            &DeviceNoise::new(0.0, 4e-3, 0.0).unwrap(),
            7,
        ),
        Devices::Programmed => ProgrammedLayer::program(
            mapped.clone(),
            &DeviceNoise::new(0.05, 1e-3, 1e-3).unwrap(),
            7,
        ),
    };
    let mut layer = layer;
    if matches!(devices, Devices::IdealF32) {
        layer.integer_sums = false;
    }
    let integer = matches!(devices, Devices::Ideal | Devices::Stuck);
    assert_eq!(
        layer.integer_sums, integer,
        "{devices:?} takes the intended path"
    );
    layer
}

/// Pearson correlation of the pairs.
fn correlation(pairs: impl Iterator<Item = (f64, f64)>) -> (f64, usize) {
    let (mut n, mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0usize, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (x, y) in pairs {
        n += 1;
        sx += x;
        sy += y;
        sxx += x * x;
        syy += y * y;
        sxy += x * y;
    }
    let nf = n as f64;
    let cov = sxy / nf - (sx / nf) * (sy / nf);
    let vx = sxx / nf - (sx / nf) * (sx / nf);
    let vy = syy / nf - (sy / nf) * (sy / nf);
    (cov / (vx * vy).sqrt(), n)
}

/// What one case measured.
#[derive(Debug)]
struct Measured {
    /// Mean squared error over mean `sigma^2 + 1/12`.
    variance_ratio: f64,
    /// Mean of the standardised errors.
    mean: f64,
    /// The two weight slices of one filter.
    slices: f64,
    /// The largest magnitude over the column lags [`LAGS`].
    lag_max: f64,
    /// Mean over all pairs of distinct columns of one vector.
    all_pairs: f64,
    conversions: usize,
}

/// Which read-noise model is on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    /// `sigma = E sqrt(N+ + N-)`.
    Lumped,
    /// Per device, `sigma^2 = S^2 sum_r p_r^2 (G+^2 + G-^2)`, `S = E`.
    PerDevice,
}

fn measure(devices: Devices, recovery: bool, model: Model) -> Measured {
    let (mapped, x, active) = setup();
    let layer = program(&mapped, devices);
    let e = match model {
        Model::Lumped => ColumnNoise::new(E).unwrap(),
        Model::PerDevice => ColumnNoise::new(0.0).unwrap().with_device_sigma(E).unwrap(),
    };
    let slicing = Slicing::parse("4-4").unwrap();
    let (cfg, pulses, scale) = if recovery {
        let cfg = RunConfig {
            adc: Adc::new(9, true).unwrap(),
            input: InputMode::Speculative {
                slicing,
                recovery: true,
            },
            column_noise: e,
            seed: 3,
        };
        (cfg, 1.0, 128)
    } else {
        let cfg = RunConfig {
            adc: Adc::new(20, true).unwrap(),
            input: InputMode::Fixed(slicing),
            column_noise: e,
            seed: 3,
        };
        (cfg, 8.0, 16)
    };
    let out = layer.run_columns(x.view(), &cfg).unwrap();
    let cols = 2 * FILTERS;
    assert_eq!(out.outputs.dim(), (VECTORS, cols));
    let st = &out.stats;
    if recovery {
        // Every slice-0 conversion saturated and was recovered, in range.
        assert_eq!(st.flagged_by_slice, vec![(VECTORS * cols) as u64, 0]);
        assert_eq!(st.recovery_conversions, (4 * VECTORS * cols) as u64);
        assert_eq!(st.recovery_out_of_range, 0);
    } else {
        assert_eq!(st.column_sums_in_range, st.column_sums);
    }
    let px = &layer.crossbars()[0];
    let mut err = Array2::<f64>::zeros((VECTORS, cols));
    let mut var = Array2::<f64>::zeros((VECTORS, cols));
    for (v, rows) in active.iter().enumerate() {
        for c in 0..cols {
            let (d, g) = (px.diff_column(c), px.magnitude_column(c));
            let sum: f64 = rows.iter().map(|&r| f64::from(d[r])).sum::<f64>() * pulses;
            let mag: f64 = rows.iter().map(|&r| f64::from(g[r])).sum::<f64>() * pulses;
            // G+^2 + G-^2 = (m^2 + d^2) / 2.
            let squares: f64 = rows
                .iter()
                .map(|&r| 0.5 * (f64::from(g[r]).powi(2) + f64::from(d[r]).powi(2)))
                .sum::<f64>()
                * pulses
                * pulses;
            let value = out.outputs[[v, c]];
            assert_eq!(value % scale, 0, "one conversion per column");
            err[[v, c]] = f64::from(value / scale) - sum;
            var[[v, c]] = match model {
                Model::Lumped => E * E * mag,
                Model::PerDevice => E * E * squares,
            } + 1.0 / 12.0;
        }
    }
    let variance_ratio = err.iter().map(|e| e * e).sum::<f64>() / var.sum();
    let u = Array2::from_shape_fn((VECTORS, cols), |i| err[i] / var[i].sqrt());
    let mean = u.mean().unwrap();
    let (slices, n) = correlation(
        (0..VECTORS)
            .flat_map(|v| (0..FILTERS).map(move |f| (v, f)))
            .map(|(v, f)| (u[[v, 2 * f]], u[[v, 2 * f + 1]])),
    );
    assert_eq!(n, VECTORS * FILTERS);
    let lag_max = LAGS
        .iter()
        .map(|&lag| {
            let pairs = u.rows().into_iter().flat_map(|r| {
                let r = r.to_slice().expect("standard layout");
                r.iter().copied().zip(r[lag..].iter().copied())
            });
            correlation(pairs).0.abs()
        })
        .fold(0.0, f64::max);
    // sum_{c != c'} u_c u_c' = (sum u)^2 - sum u^2, over the mean square.
    let ms = u.iter().map(|x| x * x).sum::<f64>() / u.len() as f64;
    let cross: f64 = u
        .rows()
        .into_iter()
        .map(|r| r.sum().powi(2) - r.iter().map(|x| x * x).sum::<f64>())
        .sum();
    let all_pairs = cross / (VECTORS * cols * (cols - 1)) as f64 / ms;
    Measured {
        variance_ratio,
        mean,
        slices,
        lag_max,
        all_pairs,
        conversions: u.len(),
    }
}

/// Every case of one path; all are measured before a failure is reported.
fn check(recovery: bool) {
    let mut failed = Vec::new();
    for (devices, model) in [
        (Devices::Ideal, Model::Lumped),
        (Devices::IdealF32, Model::Lumped),
        (Devices::Stuck, Model::Lumped),
        (Devices::Programmed, Model::Lumped),
        (Devices::Ideal, Model::PerDevice),
        (Devices::Programmed, Model::PerDevice),
    ] {
        let m = measure(devices, recovery, model);
        println!("{devices:?} {model:?}, recovery {recovery}: {m:?}");
        for (ok, what) in [
            (m.conversions >= 100_000, "conversions"),
            ((m.variance_ratio - 1.0).abs() < 0.03, "variance"),
            (m.mean.abs() < 0.01, "mean"),
            (m.slices.abs() < 0.02, "weight slices of a filter"),
            (m.lag_max < 0.02, "columns"),
            (m.all_pairs.abs() < 0.02, "all column pairs"),
        ] {
            if !ok {
                failed.push(format!("{devices:?} {model:?}: {what}"));
            }
        }
    }
    assert!(failed.is_empty(), "recovery {recovery}: {failed:?}");
}

#[test]
fn primary_noise_is_independent_with_the_stated_sigma() {
    check(false);
}

#[test]
fn recovery_noise_is_independent_with_the_stated_sigma() {
    check(true);
}

/// The exact real-valued output of each (vector, filter) on a layer's
/// programmed conductances without read noise, and the variance read noise
/// `E` adds to it: every conversion with `N+ + N- = N > 0` adds an error of
/// variance `E^2 N + 1/12` (the Gaussian and the ADC's rounding; with
/// `sigma = E sqrt(N) >= 1` the rounding error is uniform and independent of
/// the noise to within `exp(-2 pi^2)`), times `4^shift`. Needs a wide ADC, no
/// speculation and no bit flips.
fn predicted(
    layer: &ProgrammedLayer,
    x: &Array2<u8>,
    slicing: &Slicing,
    e: f64,
) -> (Array2<f64>, Array2<f64>) {
    let m = layer.mapped();
    let ws = m.weight_slicing();
    let mut y = Array2::<f64>::zeros((x.nrows(), m.outputs()));
    let mut var = Array2::<f64>::zeros((x.nrows(), m.outputs()));
    // Row-major f64 copies of each crossbar's `G+ - G-` and `G+ + G-`.
    let rows_major = |px: &ProgrammedCrossbar, col: &dyn Fn(usize) -> Vec<f64>| {
        let (rows, cols) = (px.used_rows(), px.used_cols());
        let by_col: Vec<Vec<f64>> = (0..cols).map(col).collect();
        (0..rows * cols)
            .map(|i| by_col[i % cols][i / cols])
            .collect::<Vec<f64>>()
    };
    let planes: Vec<(Vec<f64>, Vec<f64>)> = layer
        .crossbars()
        .iter()
        .map(|px| {
            let d = rows_major(px, &|c| {
                px.diff_column(c).iter().map(|&g| f64::from(g)).collect()
            });
            let g = rows_major(px, &|c| {
                px.magnitude_column(c)
                    .iter()
                    .map(|&g| f64::from(g))
                    .collect()
            });
            (d, g)
        })
        .collect();
    for (v, xv) in x.rows().into_iter().enumerate() {
        let total: f64 = xv.iter().map(|&a| f64::from(a)).sum();
        for (f, &c) in m.centers().iter().enumerate() {
            y[[v, f]] = f64::from(c) * total;
        }
        for ((mx, px), (d, g)) in m.crossbars().iter().zip(layer.crossbars()).zip(&planes) {
            let cols = px.used_cols();
            for j in 0..slicing.len() {
                let (mut sum, mut mag) = (vec![0f64; cols], vec![0f64; cols]);
                for r in 0..px.used_rows() {
                    let p = f64::from(slicing.slice(u32::from(xv[mx.row_start + r]), j));
                    if p > 0.0 {
                        let (dr, gr) = (&d[r * cols..(r + 1) * cols], &g[r * cols..(r + 1) * cols]);
                        for (((s, m), &dv), &gv) in sum.iter_mut().zip(&mut mag).zip(dr).zip(gr) {
                            *s += p * dv;
                            *m += p * gv;
                        }
                    }
                }
                for c in 0..cols {
                    let (f, k) = m.column_role(mx.col_start + c);
                    let shift = f64::from(slicing.shifts()[j] + ws.shifts()[k]).exp2();
                    y[[v, f]] += shift * sum[c];
                    if mag[c] > 0.0 {
                        var[[v, f]] += shift * shift * (e * e * mag[c] + 1.0 / 12.0);
                    }
                }
            }
        }
    }
    (y, var)
}

/// Read noise at real size (1,100 inputs on three row blocks, 40 filters of
/// `4-4`, 1,040 vectors in five chunks), compared as distributions: the
/// errors against the exact noise-free value, standardised by the predicted
/// variance, have mean 0 and variance 1 (within 3%; the sampling error of
/// 41,600 outputs is about 0.7%), and the errors of neighbouring filters and of
/// consecutive vectors (across chunk boundaries too) are uncorrelated (below
/// 0.03; sampling error about 0.005). Ideal devices (integer products),
/// programmed ones (f32), and signed inputs (two passes whose noise must be
/// independent: shared streams would shrink the variance of the difference).
#[test]
fn read_noise_at_real_sizes_has_the_predicted_distribution() {
    let mut rng = stream_rng(17, &[]);
    let (filters, inputs, vectors) = (40, 1100, 1040);
    let w = Array2::from_shape_fn((filters, inputs), |(f, _)| {
        let bias = i32::try_from(f % 9).unwrap() * 9 - 36;
        i8::try_from((bias + rng.random_range(-60i32..=60)).clamp(-127, 127)).unwrap()
    });
    let draw = |rng: &mut raella_device::Xoshiro256PlusPlus| -> u8 {
        if rng.random::<bool>() {
            0
        } else {
            rng.random_range(1..=255)
        }
    };
    let pos = Array2::from_shape_fn((vectors, inputs), |_| draw(&mut rng));
    let neg = Array2::from_shape_fn((vectors, inputs), |(v, i)| {
        if pos[[v, i]] == 0 {
            draw(&mut rng).min(128)
        } else {
            0
        }
    });
    let signed = Array2::from_shape_fn((vectors, inputs), |(v, i)| {
        i8::try_from(i16::from(pos[[v, i]] / 2) - i16::from(neg[[v, i]])).unwrap()
    });
    let mut cfg = CompileConfig::raella();
    cfg.weight_slicing = Slicing::parse("4-4").unwrap();
    let mapped = compile(w.view(), &cfg, None).unwrap();
    assert_eq!((mapped.row_blocks(), mapped.col_blocks()), (3, 1));
    let slicing = Slicing::parse("4-4").unwrap();
    let e = 1.0;
    let run = RunConfig {
        adc: Adc::new(20, true).unwrap(),
        input: InputMode::Fixed(slicing.clone()),
        column_noise: ColumnNoise::new(e).unwrap(),
        seed: 9,
    };
    let ideal = ProgrammedLayer::ideal(mapped.clone());
    let programmed =
        ProgrammedLayer::program(mapped, &DeviceNoise::new(0.05, 1e-3, 1e-3).unwrap(), 4);
    let mut failed = Vec::new();
    for (name, layer, signed_inputs) in [
        ("ideal", &ideal, false),
        ("programmed", &programmed, false),
        ("ideal, signed", &ideal, true),
    ] {
        let (y, var) = if signed_inputs {
            let out = layer.run_signed(signed.view(), &run).unwrap();
            let p = signed.mapv(|v| u8::try_from(v.max(0)).unwrap());
            let n = signed.mapv(|v| u8::try_from(-i16::from(v.min(0))).unwrap());
            let ((yp, vp), (yn, vn)) = (
                predicted(layer, &p, &slicing, e),
                predicted(layer, &n, &slicing, e),
            );
            let err = out.outputs.mapv(f64::from) - (yp - yn);
            (err, vp + vn)
        } else {
            let out = layer.run(pos.view(), &run).unwrap();
            let (yp, vp) = predicted(layer, &pos, &slicing, e);
            (out.outputs.mapv(f64::from) - yp, vp)
        };
        let z = &y / &var.mapv(f64::sqrt);
        let n = z.len() as f64;
        let mean = z.sum() / n;
        let variance = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let corr = |pairs: Vec<(f64, f64)>| {
            let k = pairs.len() as f64;
            pairs
                .iter()
                .map(|(a, b)| (a - mean) * (b - mean))
                .sum::<f64>()
                / k
                / variance
        };
        let filters_corr = corr(
            z.rows()
                .into_iter()
                .flat_map(|r| {
                    r.iter()
                        .zip(r.iter().skip(1))
                        .map(|(&a, &b)| (a, b))
                        .collect::<Vec<_>>()
                })
                .collect(),
        );
        let vectors_corr = corr(
            (1..vectors)
                .flat_map(|v| (0..filters).map(move |f| (v, f)))
                .map(|(v, f)| (z[[v - 1, f]], z[[v, f]]))
                .collect(),
        );
        println!(
            "{name}: mean {mean:.4}, variance {variance:.4}, filters {filters_corr:.4}, vectors {vectors_corr:.4}"
        );
        for (ok, what) in [
            (mean.abs() < 0.03, "mean"),
            ((variance - 1.0).abs() < 0.03, "variance"),
            (filters_corr.abs() < 0.03, "neighbouring filters"),
            (vectors_corr.abs() < 0.03, "consecutive vectors"),
        ] {
            if !ok {
                failed.push(format!("{name}: {what}"));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:?}");
}
