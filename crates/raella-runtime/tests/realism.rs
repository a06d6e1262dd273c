//! The engine under the device non-idealities of `raella_device::realism`,
//! checked against direct computations from the programmed conductances:
//!
//! 1. A finite OFF state on 1T1R: the ADC sees every OFF current, the digital
//!    side subtracts its nominal value, so with an integral OFF conductance and
//!    a wide ADC the outputs are exact; 2T2R pairs cancel it.
//! 2. Per-ADC offset, gain and INL: every crossbar column's measured value
//!    (`run_columns`) equals a direct evaluation: each input slice's exact
//!    sum through its column's ADC transfer, flagged when that non-ideal code
//!    saturates, and a flagged slice re-read bit by bit, every bit converted
//!    (none derived from the exact sums).
//! 3. Reproducible for a seed, different for another.

use ndarray::Array2;
use raella_compiler::{CenterRule, CompileConfig, Encoding, Slicing, compile};
use raella_device::{Adc, AdcVariation, CellKind, CrossbarGeometry, DeviceNoise, stream_rng};
use raella_runtime::reference::exact_outputs;
use raella_runtime::{InputMode, ProgrammedLayer, RunConfig};
use rand::RngExt;

fn weights(filters: usize, inputs: usize, seed: u64) -> Array2<i8> {
    let mut rng = stream_rng(seed, &[]);
    Array2::from_shape_fn((filters, inputs), |_| rng.random_range(-40..=40))
}

/// Post-ReLU-like inputs: mostly small, a third zero.
fn inputs(vectors: usize, rows: usize, seed: u64) -> Array2<u8> {
    let mut rng = stream_rng(seed, &[1]);
    Array2::from_shape_fn((vectors, rows), |_| {
        if rng.random_range(0..3) == 0 {
            0
        } else {
            u8::try_from(rng.random_range(0..=255u32).pow(2).div_ceil(255)).unwrap()
        }
    })
}

#[test]
fn a_finite_off_state_is_subtracted_digitally() {
    let w = weights(24, 200, 1);
    let x = inputs(300, 200, 2);
    let exact = exact_outputs(w.view(), x.view());
    // 4-bit devices, ratio 16: G_off = 15 / 15 = 1 level step, integral.
    let noise = DeviceNoise::default().with_on_off_ratio(16.0).unwrap();
    for (cell, encoding) in [
        (
            CellKind::OneT1R,
            Encoding::UnsignedOffset { bit_flip: true },
        ),
        (CellKind::TwoT2R, Encoding::CenterOffset(CenterRule::Mean)),
    ] {
        let cfg = CompileConfig {
            geometry: CrossbarGeometry::new(128, 64, cell, 4).unwrap(),
            encoding,
            weight_slicing: Slicing::parse("4-4").unwrap(),
        };
        let mapped = compile(w.view(), &cfg, None).unwrap();
        let layer = ProgrammedLayer::program(mapped.clone(), &noise, 3);
        let run = RunConfig {
            adc: Adc::new(16, true).unwrap(),
            input: InputMode::Fixed(Slicing::parse("2x4").unwrap()),
            column_noise: Default::default(),
            seed: 0,
        };
        let out = layer.run(x.view(), &run).unwrap();
        assert_eq!(
            out.outputs.mapv(i64::from),
            exact,
            "{cell}: exact after the digital correction"
        );
        // A 16-bit ADC never clamps, so nothing but the correction was at work.
        assert_eq!(out.stats.activity.saturated_conversions, 0);
    }
    // A fractional OFF current (2-bit devices, ratio 15: 3/14 of a step) puts
    // the column on half-LSB ties whenever 7, 21, 35, ... rows are driven;
    // the correction is exact there too.
    let cfg = CompileConfig {
        geometry: CrossbarGeometry::new(128, 128, CellKind::OneT1R, 2).unwrap(),
        encoding: Encoding::UnsignedOffset { bit_flip: true },
        weight_slicing: Slicing::parse("2x4").unwrap(),
    };
    let mapped = compile(w.view(), &cfg, None).unwrap();
    for ratio in [5.0, 15.0, 50.0] {
        let noise = DeviceNoise::default().with_on_off_ratio(ratio).unwrap();
        let run = RunConfig {
            adc: Adc::new(16, false).unwrap(),
            ..RunConfig::isaac()
        };
        let out = ProgrammedLayer::program(mapped.clone(), &noise, 3)
            .run(x.view(), &run)
            .unwrap();
        assert_eq!(out.outputs.mapv(i64::from), exact, "ratio {ratio}");
        // And with speculation and recovery (the recovered bits' correction):
        // a 9-bit ADC holds every 1-bit sum (at most 128 rows x (3 + G_off)),
        // so recovery is exact and the outputs are the exact products.
        let spec = RunConfig {
            adc: Adc::new(9, false).unwrap(),
            input: InputMode::raella(),
            ..RunConfig::isaac()
        };
        let a = ProgrammedLayer::program(mapped.clone(), &noise, 3)
            .run(x.view(), &spec)
            .unwrap();
        assert!(
            a.stats.recovery_conversions > 0,
            "ratio {ratio}: nothing recovered"
        );
        assert_eq!(a.stats.recovery_out_of_range, 0);
        assert_eq!(
            a.outputs.mapv(i64::from),
            exact,
            "ratio {ratio}, speculation"
        );
    }
    // With an 8-bit unsigned ADC (ISAAC's), the OFF current uses up range:
    // more conversions saturate than with an ideal OFF state.
    let cfg = CompileConfig {
        geometry: CrossbarGeometry::new(128, 128, CellKind::OneT1R, 2).unwrap(),
        encoding: Encoding::UnsignedOffset { bit_flip: true },
        weight_slicing: Slicing::parse("2x4").unwrap(),
    };
    let mapped = compile(w.view(), &cfg, None).unwrap();
    let off = DeviceNoise::default().with_on_off_ratio(4.0).unwrap();
    let run = RunConfig::isaac();
    // Every bit of every input on: the largest column sums.
    let full = Array2::<u8>::from_elem((20, 200), 255);
    let real = ProgrammedLayer::program(mapped.clone(), &off, 3)
        .run(full.view(), &run)
        .unwrap();
    let ideal = ProgrammedLayer::ideal(mapped)
        .run(full.view(), &run)
        .unwrap();
    let sat = |o: &raella_runtime::LayerOutput| o.stats.activity.saturated_conversions;
    assert!(
        sat(&real) > sat(&ideal),
        "{} vs {}",
        sat(&real),
        sat(&ideal)
    );
}

#[test]
fn two_t2r_pairs_cancel_the_off_state() {
    // Center+Offset on 4-bit 2T2R devices, RAELLA's ADC, speculation and
    // recovery; ratio 15: G_off = 15 / 14 of a level step, fractional.
    let w = weights(40, 300, 11);
    let x = inputs(500, 300, 12);
    let cfg = CompileConfig {
        geometry: CrossbarGeometry::new(128, 64, CellKind::TwoT2R, 4).unwrap(),
        encoding: Encoding::CenterOffset(CenterRule::Mean),
        weight_slicing: Slicing::parse("4-4").unwrap(),
    };
    let mapped = compile(w.view(), &cfg, None).unwrap();
    let run = RunConfig::raella();
    let ratio = 15.0;
    let off = DeviceNoise::default().with_on_off_ratio(ratio).unwrap();
    let layer = ProgrammedLayer::program(mapped.clone(), &off, 3);
    // The programmed conductances carry the OFF state (real-valued).
    assert!(layer.crossbars().iter().all(|p| !p.is_integral()));
    // Without read noise, a run reads them as the integer levels.
    assert!(layer.crossbars_read(&run).iter().all(|p| p.is_ideal()));
    let got = layer.run_columns(x.view(), &run).unwrap();
    // Every column's value as the programmed conductances give it, each
    // read converted by the ideal ADC: the pairs' OFF currents cancel.
    let want = direct_columns(&layer, &x, &run, |_, _, _, _, (s, _, _)| run.adc.convert(s));
    assert_eq!(got.outputs.mapv(i64::from), want);
    // The same conversions as ideal devices, more cell activity: every
    // device's OFF conductance draws current (two per cell, `15 / 14` each).
    let ideal = ProgrammedLayer::ideal(mapped.clone())
        .run_columns(x.view(), &run)
        .unwrap();
    assert_eq!(got.outputs, ideal.outputs);
    assert_eq!(got.stats.flagged, ideal.stats.flagged);
    assert!(got.stats.flagged > 0, "nothing flagged");
    assert_eq!(
        got.stats.recovery_conversions,
        ideal.stats.recovery_conversions
    );
    let (a, b) = (&got.stats.activity, &ideal.stats.activity);
    assert_eq!(a.conversions, b.conversions);
    assert_eq!(a.saturated_conversions, b.saturated_conversions);
    let g_off = 15.0 / (ratio - 1.0);
    let cells: usize = layer
        .crossbars()
        .iter()
        .map(|p| p.used_rows() * p.used_cols())
        .sum();
    let cycles = a.crossbar_cycles as f64 / layer.crossbars().len() as f64;
    let want_levels = b.cell_level_reads + cycles * 2.0 * g_off * cells as f64;
    assert!(
        (a.cell_level_reads / want_levels - 1.0).abs() < 1e-6,
        "{} vs {want_levels}",
        a.cell_level_reads
    );
    assert!(a.cell_charge > b.cell_charge);
    // With ADC variation too: the instances' conversions of the same sums.
    let adc = AdcVariation::new(0.5, 0.05, 0.0).unwrap();
    let both = ProgrammedLayer::program(mapped.clone(), &off.clone().with_adc(adc), 3)
        .run_columns(x.view(), &run)
        .unwrap();
    let adc_only =
        ProgrammedLayer::program(mapped.clone(), &DeviceNoise::default().with_adc(adc), 3)
            .run_columns(x.view(), &run)
            .unwrap();
    assert_eq!(both.outputs, adc_only.outputs);
    assert_eq!(both.stats.flagged, adc_only.stats.flagged);
    // Under read noise the OFF conductances add to the magnitudes the noise
    // scales with: the programmed conductances are read, not the cancelled
    // levels (more noise than on ideal devices, the same draws).
    let noisy = RunConfig {
        column_noise: raella_device::ColumnNoise::new(0.08).unwrap(),
        ..run
    };
    assert!(
        layer
            .crossbars_read(&noisy)
            .iter()
            .all(|p| !p.is_integral())
    );
    let with_off = layer.run_columns(x.view(), &noisy).unwrap();
    let without = ProgrammedLayer::ideal(mapped)
        .run_columns(x.view(), &noisy)
        .unwrap();
    let err = |o: &raella_runtime::LayerOutput| -> i64 {
        (&o.outputs - &ideal.outputs)
            .mapv(|d| i64::from(d).abs())
            .sum()
    };
    assert!(
        err(&with_off) > err(&without),
        "{} vs {}",
        err(&with_off),
        err(&without)
    );
}

#[test]
fn a_1t1r_off_state_takes_the_integer_pass() {
    // ISAAC's 2-bit 1T1R devices and 8-bit ADC, one input bit per cycle; the
    // photograph-like inputs and all-ones inputs, which clamp many sums.
    let w = weights(24, 200, 13);
    let mut x = inputs(300, 200, 14);
    x.slice_mut(ndarray::s![..40, ..]).fill(255);
    let cfg = CompileConfig {
        geometry: CrossbarGeometry::new(128, 128, CellKind::OneT1R, 2).unwrap(),
        encoding: Encoding::UnsignedOffset { bit_flip: true },
        weight_slicing: Slicing::parse("2x4").unwrap(),
    };
    let mapped = compile(w.view(), &cfg, None).unwrap();
    let run = RunConfig::isaac();
    let slicing = run.input.slicing();
    // Ratio 2.5: G_off = 2 level steps (the all-ones inputs clamp); 3 and 4:
    // 3 / 2 and 1; 5: 3 / 4 (half-LSB ties whenever the pulses are 2 mod 4,
    // exact in `f32` either way); 30: 3 / 29, not representable. (The
    // engine's integer pass skips the OFF current where no code can clamp.)
    for ratio in [2.5, 3.0, 4.0, 5.0, 30.0] {
        let off = DeviceNoise::default().with_on_off_ratio(ratio).unwrap();
        let layer = ProgrammedLayer::program(mapped.clone(), &off, 3);
        assert!(layer.crossbars_read(&run).iter().all(|p| p.is_ideal()));
        let got = layer.run_columns(x.view(), &run).unwrap();
        // Directly from the programmed conductances (each `L + G_off`): the
        // ADC's code of the column's current, less the nominal OFF current
        // (an in-range code as `round(sum - G_off P)`, a clamped one as
        // `code - round(G_off P)`).
        let want = direct_columns(&layer, &x, &run, |xi, v, _, which, (s, _, _)| {
            let Read::Slice(j) = which else {
                unreachable!("no recovery")
            };
            let row0 = layer.mapped().crossbars()[xi].row_start;
            let px = &layer.crossbars()[xi];
            let pulses: u32 = (0..px.used_rows())
                .map(|r| slicing.slice(u32::from(x[[v, row0 + r]]), j))
                .sum();
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            let round = |f: f32| (f + 0.5f32.copysign(f)).trunc() as i32;
            #[allow(clippy::cast_precision_loss)]
            let nominal = px.off_per_pulse() * pulses as f32;
            let conv = run.adc.convert(s);
            raella_device::Conversion {
                code: if conv.in_range {
                    round(s - nominal)
                } else {
                    conv.code - round(nominal)
                },
                ..conv
            }
        });
        assert_eq!(got.outputs.mapv(i64::from), want, "ratio {ratio}");
        // The OFF current uses up range: up to ratio 5, the all-ones inputs'
        // sums clamp (30,400-30,720 of them; none on ideal devices, nor at 30).
        let ideal = ProgrammedLayer::ideal(mapped.clone())
            .run_columns(x.view(), &run)
            .unwrap();
        let sat = |o: &raella_runtime::LayerOutput| o.stats.activity.saturated_conversions;
        if ratio < 10.0 {
            assert!(
                sat(&got) > 1000 + sat(&ideal),
                "{} vs {}",
                sat(&got),
                sat(&ideal)
            );
        }
        assert_eq!(
            got.stats.activity.conversions,
            ideal.stats.activity.conversions
        );
        // With recovery, or ADC variation, the programmed conductances.
        let spec = RunConfig {
            input: InputMode::raella(),
            ..run
        };
        assert!(layer.crossbars_read(&spec).iter().all(|p| !p.is_integral()));
        let varied = off
            .clone()
            .with_adc(AdcVariation::new(0.5, 0.0, 0.0).unwrap());
        let layer = ProgrammedLayer::program(mapped.clone(), &varied, 3);
        assert!(layer.crossbars_read(&run).iter().all(|p| !p.is_integral()));
    }
}

/// Which read of a column [`direct_columns`] converts: primary input slice
/// `j`, or bit `t` of slice `j` when that slice is re-read after a flag.
#[derive(Clone, Copy)]
enum Read {
    Slice(usize),
    Bit(usize, u32),
}

/// Every column's measured value computed directly: per input slice, the
/// exact sum `S`, magnitude `M = N+ + N-` and squares `Q = sum_r p_r^2
/// (G+^2 + G-^2)` of its pulses, converted by `convert(crossbar, vector,
/// column, read, (S, M, Q))`; a saturated code under speculation with
/// recovery re-read as 1-bit slices, each converted.
fn direct_columns(
    layer: &ProgrammedLayer,
    x: &Array2<u8>,
    run: &RunConfig,
    convert: impl Fn(usize, usize, usize, Read, (f32, f32, f32)) -> raella_device::Conversion,
) -> Array2<i64> {
    let slicing = run.input.slicing();
    let (widths, shifts) = (slicing.widths(), slicing.shifts());
    let total: usize = layer.crossbars().iter().map(|p| p.used_cols()).sum();
    let mut out = Array2::<i64>::zeros((x.nrows(), total));
    let mut col0 = 0;
    for (xi, (mx, px)) in layer
        .mapped()
        .crossbars()
        .iter()
        .zip(layer.crossbars())
        .enumerate()
    {
        let rows = px.used_rows();
        for v in 0..x.nrows() {
            let xr: Vec<u32> = (0..rows)
                .map(|r| u32::from(x[[v, mx.row_start + r]]))
                .collect();
            for c in 0..px.used_cols() {
                let (d, m) = (px.diff_column(c), px.magnitude_column(c));
                let read = |which: Read, pulses: &dyn Fn(u32) -> u32| {
                    let p = |r: usize| pulses(xr[r]) as f32;
                    let s: f32 = (0..rows).map(|r| p(r) * d[r]).sum();
                    let mag: f32 = (0..rows).map(|r| p(r) * m[r]).sum();
                    // G+^2 + G-^2 = (M^2 + D^2) / 2.
                    let sq: f32 = (0..rows)
                        .map(|r| p(r) * p(r) * 0.5 * (m[r] * m[r] + d[r] * d[r]))
                        .sum();
                    convert(xi, v, c, which, (s, mag, sq))
                };
                let mut value = 0i64;
                for (j, (&wd, &sh)) in widths.iter().zip(shifts).enumerate() {
                    let conv = read(Read::Slice(j), &|xv| slicing.slice(xv, j));
                    if conv.saturated && run.input.recovers() {
                        for t in 0..wd {
                            let bit = read(Read::Bit(j, t), &|xv| (xv >> (sh + t)) & 1);
                            value += i64::from(bit.code) << (sh + t);
                        }
                    } else {
                        value += i64::from(conv.code) << sh;
                    }
                }
                out[[v, col0 + c]] = value;
            }
        }
        col0 += px.used_cols();
    }
    out
}

#[test]
fn adc_non_idealities_are_seen_by_speculation_and_every_recovered_bit() {
    let cfg = CompileConfig {
        geometry: CrossbarGeometry::new(128, 64, CellKind::TwoT2R, 4).unwrap(),
        encoding: Encoding::CenterOffset(CenterRule::Mean),
        weight_slicing: Slicing::parse("4-2-2").unwrap(),
    };
    let adc = AdcVariation::new(1.5, 0.05, 1.0).unwrap();
    let noise = DeviceNoise::default().with_adc(adc);
    // 40 filters: crossbars of 64 and 56 columns; 7 filters: one of 21, a
    // narrow crossbar, converted over the chunk's flat sums. Offsets alone
    // (and with a gain too small to move a code) take the engine's integer
    // pass over shifted sums; the others the transfer of each sum (without
    // an INL bow, `gain * sum + offset`).
    for variation in [
        adc,
        AdcVariation::new(1.5, 0.0, 0.0).unwrap(),
        AdcVariation::new(0.5, 1e-7, 0.0).unwrap(),
        AdcVariation::new(0.5, 0.05, 0.0).unwrap(),
    ] {
        let noise = DeviceNoise::default().with_adc(variation);
        for filters in [7, 40] {
            let (w, x) = (weights(filters, 300, 4), inputs(600, 300, 5));
            adc_variation_against_the_direct_evaluation(&cfg, &noise, &w, &x);
        }
    }
    // Twelve rows of 2-bit slices: every 1-bit read of a crossbar, shifted
    // by its column's offset, lies inside the ADC's range, so a flagged sum
    // recovers in the conversion pass (the shifted sum, then each flagged
    // one's `k (2^w - 2)` more), without a read.
    let narrow = CompileConfig {
        weight_slicing: Slicing::parse("2-2-2-2").unwrap(),
        ..cfg.clone()
    };
    for variation in [
        AdcVariation::new(1.5, 0.0, 0.0).unwrap(),
        AdcVariation::new(3.0, 0.0, 0.0).unwrap(),
    ] {
        let noise = DeviceNoise::default().with_adc(variation);
        for (filters, rows) in [(7, 12), (40, 12)] {
            let (w, x) = (weights(filters, rows, 4), inputs(600, rows, 5));
            adc_variation_against_the_direct_evaluation(&narrow, &noise, &w, &x);
        }
    }
    // Thirty rows of the weight 40 (2-bit slices 0, 2, 2, 0), no center: the
    // largest 1-bit read, 60 with every row active (all inputs 255 here, for
    // one vector in four), lies inside the range and the shifted ones of
    // columns with a shift of 3 or more do not: those are recovered by reads.
    let plain = CompileConfig {
        encoding: Encoding::ZeroOffset,
        ..narrow.clone()
    };
    let offsets = DeviceNoise::default().with_adc(AdcVariation::new(3.0, 0.0, 0.0).unwrap());
    let w = Array2::from_elem((40, 30), 40i8);
    let mut x = inputs(600, 30, 5);
    for mut row in x.rows_mut().into_iter().step_by(4) {
        row.fill(255);
    }
    adc_variation_against_the_direct_evaluation(&plain, &offsets, &w, &x);
    let w = weights(40, 300, 4);
    let x = inputs(600, 300, 5);
    let mapped = compile(w.view(), &cfg, None).unwrap();
    // Reproducible for a seed, different for another.
    let run = RunConfig::raella();
    let a = ProgrammedLayer::program(mapped.clone(), &noise, 9)
        .run(x.view(), &run)
        .unwrap();
    let b = ProgrammedLayer::program(mapped.clone(), &noise, 9)
        .run(x.view(), &run)
        .unwrap();
    let c = ProgrammedLayer::program(mapped, &noise, 10)
        .run(x.view(), &run)
        .unwrap();
    assert_eq!(a.outputs, b.outputs);
    assert_ne!(a.outputs, c.outputs);
}

/// One layer `w` on the inputs `x` under ADC variation against the direct evaluation,
/// with and without recovery, and against the ideal ADCs.
fn adc_variation_against_the_direct_evaluation(
    cfg: &CompileConfig,
    noise: &DeviceNoise,
    w: &Array2<i8>,
    x: &Array2<u8>,
) {
    let mapped = compile(w.view(), cfg, None).unwrap();
    let layer = ProgrammedLayer::program(mapped.clone(), noise, 9);
    // Ideal devices: the integer products still apply; the ADCs are not ideal.
    assert!(layer.crossbars().iter().all(|p| p.is_ideal()));
    for input in [
        InputMode::raella(),
        InputMode::Fixed(Slicing::parse("4-2-2").unwrap()),
    ] {
        let run = RunConfig {
            adc: Adc::RAELLA,
            input,
            column_noise: Default::default(),
            seed: 0,
        };
        let got = layer.run_columns(x.view(), &run).unwrap();
        let adcs = layer.adc_instances().expect("ADC variation on");
        let (lo, hi) = (run.adc.min_code() as f32, run.adc.max_code() as f32);
        // The primary conversions in range, and the saturated ones of every read.
        let (in_range, saturated) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
        let want = direct_columns(&layer, x, &run, |xi, _, c, which, (s, _, _)| {
            let conv = run.adc.convert(adcs[xi][c].transfer(s, lo, hi));
            if matches!(which, Read::Slice(_)) {
                in_range.set(in_range.get() + u64::from(conv.in_range));
            }
            saturated.set(saturated.get() + u64::from(conv.saturated));
            conv
        });
        assert_eq!(got.outputs.mapv(i64::from), want, "{}", run.input);
        assert_eq!(
            got.stats.column_sums_in_range,
            in_range.get(),
            "{}",
            run.input
        );
        assert_eq!(
            got.stats.activity.saturated_conversions,
            saturated.get(),
            "{}",
            run.input
        );
        // The non-ideal ADCs change what is flagged.
        let ideal = ProgrammedLayer::ideal(mapped.clone())
            .run_columns(x.view(), &run)
            .unwrap();
        if run.input.recovers() {
            assert!(got.stats.flagged > 0);
            assert_ne!(got.stats.flagged, ideal.stats.flagged);
        }
        assert_ne!(got.outputs, ideal.outputs);
    }
}

#[test]
fn per_device_read_noise_is_reproducible_and_changes_with_the_seed() {
    let w = weights(30, 260, 6);
    let x = inputs(400, 260, 7);
    let cfg = CompileConfig {
        geometry: CrossbarGeometry::new(128, 64, CellKind::TwoT2R, 4).unwrap(),
        encoding: Encoding::CenterOffset(CenterRule::Mean),
        weight_slicing: Slicing::parse("4-2-2").unwrap(),
    };
    let layer = ProgrammedLayer::ideal(compile(w.view(), &cfg, None).unwrap());
    let noise = raella_device::ColumnNoise::new(0.0)
        .unwrap()
        .with_device_sigma(0.05)
        .unwrap();
    let run = |seed| {
        let cfg = RunConfig {
            column_noise: noise,
            seed,
            ..RunConfig::raella()
        };
        layer.run(x.view(), &cfg).unwrap().outputs
    };
    let exact = exact_outputs(w.view(), x.view());
    let (a, b, c) = (run(1), run(1), run(2));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a.mapv(i64::from), exact);
}

/// Read noise on 1T1R, whose magnitudes are its sums (one device per cell):
/// every column's measured value has the variance the per-conversion model
/// predicts, `sum_t 4^t (E^2 S_t + 1/12)` over its 1-bit slices `t` (a wide
/// ADC, so nothing clamps; Sheppard's correction for the rounding).
#[test]
fn one_device_read_noise_has_the_predicted_variance() {
    let w = weights(48, 128, 8);
    let x = inputs(2000, 128, 9);
    let cfg = CompileConfig {
        geometry: CrossbarGeometry::new(128, 256, CellKind::OneT1R, 2).unwrap(),
        encoding: Encoding::UnsignedOffset { bit_flip: false },
        weight_slicing: Slicing::parse("2x4").unwrap(),
    };
    let layer = ProgrammedLayer::ideal(compile(w.view(), &cfg, None).unwrap());
    let e = 0.3;
    let run = RunConfig {
        adc: Adc::new(16, false).unwrap(),
        input: InputMode::Fixed(Slicing::parse("1x8").unwrap()),
        column_noise: raella_device::ColumnNoise::new(e).unwrap(),
        seed: 4,
    };
    let got = layer.run_columns(x.view(), &run).unwrap().outputs;
    let px = &layer.crossbars()[0];
    let (mut err2, mut var) = (0.0f64, 0.0f64);
    for v in 0..x.nrows() {
        for c in 0..px.used_cols() {
            let d = px.diff_column(c);
            let mut exact = 0.0;
            for t in 0..8 {
                let s: f64 = (0..128)
                    .filter(|&r| (x[[v, r]] >> t) & 1 == 1)
                    .map(|r| f64::from(d[r]))
                    .sum();
                exact += s * f64::from(1u32 << t);
                // A zero sum draws noise of sigma 0 and rounds exactly.
                if s > 0.0 {
                    var += f64::from(1u32 << (2 * t)) * (e * e * s + 1.0 / 12.0);
                }
            }
            err2 += (f64::from(got[[v, c]]) - exact).powi(2);
        }
    }
    let ratio = err2 / var;
    assert!(
        (ratio - 1.0).abs() < 0.03,
        "measured / predicted variance {ratio}"
    );
}

/// Read noise on ideal devices, on the three crossbar kinds whose integer
/// paths differ (2T2R Center+Offset drawn row by row, the same with 8
/// columns drawn across rows, 1T1R whose magnitudes are its sums): every
/// column's measured value equals a direct evaluation from the documented
/// streams. Primary slice `j` of vector `v` on crossbar `xi` draws column
/// `c`'s normal as draw `c` of `stream_key(seed, [pass, xi, v, j])`; a
/// flagged slice's bit `t` draws draw `t` of `stream_key(seed, [pass, xi, v,
/// ns + j, c])`. `slice(S, M, Q, z)` and `bit(S, M, Q, z)` give the value at
/// the ADC; the weights and inputs come from `data` seeds. Recovery must
/// run, and the noise must change the outputs.
fn read_noise_equals_a_direct_evaluation(
    noise: raella_device::ColumnNoise,
    (seed, data): (u64, (u64, u64)),
    check: impl Fn(&ProgrammedLayer),
    slice: impl Fn((f32, f32, f32), f32) -> f32,
    bit: impl Fn((f32, f32, f32), f32) -> f32,
) {
    use raella_device::ColumnNoise;
    use raella_device::normal::{fill_normals, stream_key};
    let w = weights(24, 300, data.0);
    let x = inputs(300, 300, data.1);
    for (cell, encoding, columns) in [
        (
            CellKind::TwoT2R,
            Encoding::CenterOffset(CenterRule::Mean),
            64,
        ),
        (
            CellKind::TwoT2R,
            Encoding::CenterOffset(CenterRule::Mean),
            8,
        ),
        // Narrow crossbars of an odd column count (three filters of three
        // slices): the last column takes the first half of a pair alone.
        (
            CellKind::TwoT2R,
            Encoding::CenterOffset(CenterRule::Mean),
            9,
        ),
        (
            CellKind::OneT1R,
            Encoding::UnsignedOffset { bit_flip: true },
            64,
        ),
    ] {
        let cfg = CompileConfig {
            geometry: CrossbarGeometry::new(128, columns, cell, 4).unwrap(),
            encoding,
            weight_slicing: Slicing::parse("4-2-2").unwrap(),
        };
        let layer = ProgrammedLayer::ideal(compile(w.view(), &cfg, None).unwrap());
        check(&layer);
        let run = RunConfig {
            adc: Adc::RAELLA,
            input: InputMode::raella(),
            column_noise: noise,
            seed,
        };
        let ns = run.input.slicing().widths().len();
        let want = direct_columns(&layer, &x, &run, |xi, v, c, which, smq| {
            let (xi, v) = (xi as u64, v as u64);
            match which {
                Read::Slice(j) => {
                    let mut z = vec![0f32; c + 1];
                    fill_normals(stream_key(seed, &[0, xi, v, j as u64]), &mut z);
                    run.adc.convert(slice(smq, z[c]))
                }
                Read::Bit(j, t) => {
                    let mut z = vec![0f32; t as usize + 1];
                    let key = [0, xi, v, (ns + j) as u64, c as u64];
                    fill_normals(stream_key(seed, &key), &mut z);
                    run.adc.convert(bit(smq, z[t as usize]))
                }
            }
        });
        let got = layer.run_columns(x.view(), &run).unwrap();
        assert!(got.stats.flagged > 0, "{cell:?}: recovery must run");
        assert_eq!(got.outputs.mapv(i64::from), want, "{cell:?}");
        // The noise is there to be checked: the noise-free columns differ.
        let quiet = RunConfig {
            column_noise: ColumnNoise::default(),
            ..run.clone()
        };
        assert_ne!(
            layer.run_columns(x.view(), &quiet).unwrap().outputs,
            got.outputs
        );
    }
}

/// Per-device read noise (the engine's integer path: exact squares, the
/// fused conversion, batched recovery): the noisy sum is `S + s sqrt(Q) z`,
/// `Q = sum_r p_r^2 (G+^2 + G-^2)`; recovered bits use `sqrt(s^2 Q_t) z`,
/// each bit's own squares.
#[test]
fn per_device_read_noise_equals_a_direct_evaluation() {
    let s = 0.05f32;
    let noise = raella_device::ColumnNoise::new(0.0)
        .unwrap()
        .with_device_sigma(f64::from(s))
        .unwrap();
    read_noise_equals_a_direct_evaluation(
        noise,
        (12, (16, 17)),
        // The integer path applies: squares fit a byte, products exact.
        |layer| {
            assert!(
                layer
                    .crossbars()
                    .iter()
                    .all(|p| p.squares_int_limit().is_some_and(|l| l * 225 < 1 << 24))
            );
        },
        |(sum, _, q), z| sum + s * q.sqrt() * z,
        |(sum, _, q), z| sum + (s * s * q).sqrt() * z,
    );
}

/// Lumped read noise (the engine's fused integer path and its batched
/// recovery): the noisy sum is `S + E sqrt(M) z` (`M = N+ + N-`), recovered
/// bits use `sqrt(E^2 M) z`.
#[test]
fn lumped_read_noise_equals_a_direct_evaluation() {
    let e = 0.08f32;
    read_noise_equals_a_direct_evaluation(
        raella_device::ColumnNoise::new(f64::from(e)).unwrap(),
        (11, (6, 7)),
        |_| {},
        |(sum, m, _), z| sum + e * m.sqrt() * z,
        |(sum, m, _), z| sum + (e * e * m).sqrt() * z,
    );
}
