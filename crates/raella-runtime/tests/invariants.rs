//! The runtime's invariants, property-tested against the slow reference
//! (`raella_runtime::reference`) and the exact integer dot product.
//!
//! 2. With an ADC wide enough never to saturate and no noise, every encoding x
//!    weight slicing x input mode gives the exact dot product.
//! 3. With speculation + recovery, for any ADC: the fast path equals the
//!    reference column-slice by column-slice semantics, and is exact whenever no
//!    1-bit recovery conversion leaves the ADC range.
//! 4. Conversions = columns x vectors x slices + sum_k flagged_k x b_k, and only
//!    flagged columns convert during recovery.
//! 5. Same seed, bit-identical noisy results; different seeds differ; thread
//!    count does not matter.
//! 6. At real sizes (more than 1,024 inputs, 64+ columns, three chunks of
//!    vectors), on ideal and programmed devices (variation, stuck cells), every
//!    encoding and center rule (`search` included), signed inputs: the fast
//!    path lies within the reference's bounds on the same conductances, which
//!    are exact on integer conductances.

use ndarray::{Array2, s};
use proptest::prelude::*;
use raella_compiler::{Calibration, CenterRule, CompileConfig, Encoding, Slicing, compile};
use raella_device::{Adc, CellKind, ColumnNoise, CrossbarGeometry, DeviceNoise, stream_rng};
use raella_runtime::reference::{
    ReferenceBounds, exact_outputs, run_reference, run_reference_programmed,
};
use raella_runtime::{InputMode, ProgrammedLayer, RunConfig};
use rand::RngExt;

/// Slicings of 8 bits with every width in 1..=max.
fn slicing(max: u32) -> impl Strategy<Value = Slicing> {
    prop::collection::vec(1..=max, 8).prop_map(move |ws| {
        let mut out = vec![];
        let mut sum = 0;
        for w in ws {
            let w = w.min(8 - sum);
            if w == 0 {
                break;
            }
            out.push(w);
            sum += w;
        }
        Slicing::new(out, 8).unwrap()
    })
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![
        Just(Encoding::CenterOffset(CenterRule::Mean)),
        Just(Encoding::CenterOffset(CenterRule::Median)),
        Just(Encoding::ZeroOffset),
        Just(Encoding::UnsignedOffset { bit_flip: false }),
        Just(Encoding::UnsignedOffset { bit_flip: true }),
    ]
}

fn input_mode() -> impl Strategy<Value = InputMode> {
    prop_oneof![
        slicing(4).prop_map(InputMode::Fixed),
        (slicing(4), any::<bool>())
            .prop_map(|(slicing, recovery)| InputMode::Speculative { slicing, recovery }),
    ]
}

/// A small layer: geometry, compile config, int8 weights shaped like a trained
/// layer (a per-filter bias plus spread), and unsigned inputs (ReLU-like: many
/// zeros and small values, some large).
#[derive(Debug, Clone)]
struct Case {
    cfg: CompileConfig,
    weights: Array2<i8>,
    inputs: Array2<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        encoding(),
        1u32..=4,
        1usize..=16,
        1usize..=12,
        1usize..=6,
        1usize..=40,
        1usize..=5,
    )
        .prop_flat_map(|(enc, bits, rows, cols, outs, ins, nv)| {
            let g = CrossbarGeometry::new(rows, cols, enc.cell_kind(), bits).unwrap();
            (
                Just((enc, g)),
                slicing(bits),
                prop::collection::vec((-40i32..40, 1i32..128), outs),
                prop::collection::vec(any::<u16>(), outs * ins),
                prop::collection::vec((0u8..4, any::<u8>()), nv * ins),
            )
                .prop_map(move |((enc, g), ws, filt, wr, xr)| {
                    let weights = Array2::from_shape_fn((outs, ins), |(f, i)| {
                        let (bias, spread) = filt[f];
                        let u = i32::from(wr[f * ins + i] % 1024) - 512;
                        let w = bias + u * spread / 512;
                        i8::try_from(w.clamp(-127, 127)).unwrap()
                    });
                    let inputs = Array2::from_shape_fn((nv, ins), |(v, i)| {
                        let (kind, val) = xr[v * ins + i];
                        match kind {
                            0 => 0,
                            1 => val % 16,
                            _ => val,
                        }
                    });
                    Case {
                        cfg: CompileConfig {
                            geometry: g,
                            encoding: enc,
                            weight_slicing: ws,
                        },
                        weights,
                        inputs,
                    }
                })
        })
}

fn run_cfg(adc: Adc, input: InputMode) -> RunConfig {
    RunConfig {
        adc,
        input,
        column_noise: ColumnNoise::default(),
        seed: 1,
    }
}

/// A crossbar whose 1-bit reads cannot leave the ADC's range whatever the
/// input (4 rows, 2T2R levels of at most 15, a 7-bit signed ADC: |read| <= 60)
/// while its 4-bit speculative slices saturate: the engine recovers those in
/// the conversion pass. The same outputs and counts as the reference, which
/// reads every bit; and with 16 rows, where some crossbar's reads can clip and
/// its flags are listed and read.
#[test]
fn flagged_sums_of_read_safe_crossbars_recover_in_place() {
    let mode = InputMode::Speculative {
        slicing: Slicing::new(vec![4, 2, 2], 8).unwrap(),
        recovery: true,
    };
    let adc = Adc::new(7, true).unwrap();
    for rows in [4usize, 16] {
        let g = CrossbarGeometry::new(rows, 8, CellKind::TwoT2R, 4).unwrap();
        let cfg = CompileConfig {
            geometry: g,
            encoding: Encoding::CenterOffset(CenterRule::Mean),
            weight_slicing: Slicing::new(vec![4, 4], 8).unwrap(),
        };
        let weights = Array2::from_shape_fn((6, rows), |(f, i)| {
            i8::try_from(i32::try_from((f * 37 + i * 91) % 255).unwrap() - 127).unwrap()
        });
        let inputs = Array2::from_shape_fn((50, rows), |(v, i)| {
            u8::try_from((v * 53 + i * 29) % 256).unwrap()
        });
        let mapped = compile(weights.view(), &cfg, None).unwrap();
        let run = run_cfg(adc, mode.clone());
        let layer = ProgrammedLayer::ideal(mapped.clone());
        // The engine's in-place test: every crossbar's extreme reads inside
        // (-64, 63) with 4 rows; at least one crossbar outside with 16.
        let inside: Vec<bool> = layer
            .crossbars()
            .iter()
            .map(|x| {
                let (lo, hi) = x.exact_bits().unwrap().read_bounds();
                lo > -64 && hi < 63
            })
            .collect();
        if rows == 4 {
            assert!(inside.iter().all(|&i| i), "4 rows: {inside:?}");
        } else {
            assert!(inside.iter().any(|&i| !i), "16 rows: {inside:?}");
        }
        let out = layer.run(inputs.view(), &run).unwrap();
        let (yref, counts) = run_reference(&mapped, inputs.view(), &run);
        assert_eq!(out.outputs.mapv(i64::from), yref, "{rows} rows");
        assert!(out.stats.flagged > 0, "{rows} rows: nothing flagged");
        assert_eq!(out.stats.flagged, counts.flagged, "{rows} rows");
        assert_eq!(
            out.stats.activity.conversions,
            counts.primary + counts.recovery,
            "{rows} rows"
        );
        assert_eq!(
            out.stats.recovery_conversions, counts.recovery,
            "{rows} rows"
        );
        if rows == 4 {
            assert_eq!(out.stats.recovery_out_of_range, 0);
            assert_eq!(
                out.outputs.mapv(i64::from),
                exact_outputs(weights.view(), inputs.view())
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn wide_adc_is_exact(c in case(), mode in input_mode(), signed_adc in any::<bool>()) {
        let signed_adc = signed_adc || c.cfg.geometry.cell() == CellKind::TwoT2R;
        let adc = Adc::new(22, signed_adc).unwrap();
        let layer = ProgrammedLayer::ideal(compile(c.weights.view(), &c.cfg, None).unwrap());
        let out = layer.run(c.inputs.view(), &run_cfg(adc, mode)).unwrap();
        prop_assert_eq!(out.outputs.mapv(i64::from), exact_outputs(c.weights.view(), c.inputs.view()));
        prop_assert_eq!(out.stats.in_range_fraction(), 1.0);
        prop_assert_eq!(out.stats.inexact_column_slices, 0);
    }

    #[test]
    fn fast_path_equals_reference_for_any_adc(c in case(), mode in input_mode(), bits in 1u32..=9, signed in any::<bool>()) {
        let signed = signed || c.cfg.geometry.cell() == CellKind::TwoT2R;
        let adc = Adc::new(bits.max(u32::from(signed) + 1), signed).unwrap();
        let mapped = compile(c.weights.view(), &c.cfg, None).unwrap();
        let cfg = run_cfg(adc, mode.clone());
        let out = ProgrammedLayer::ideal(mapped.clone()).run(c.inputs.view(), &cfg).unwrap();
        let (yref, counts) = run_reference(&mapped, c.inputs.view(), &cfg);
        prop_assert_eq!(out.outputs.mapv(i64::from), yref);
        // Invariant 4: conversions follow the formula, and match the reference's count.
        let cols: u64 = mapped.crossbars().iter().map(|x| x.crossbar.used_cols() as u64).sum();
        let nv = c.inputs.nrows() as u64;
        let ns = mode.slicing().len() as u64;
        let flagged_bits: u64 = out.stats.flagged_by_slice.iter().zip(mode.slicing().widths())
            .map(|(&f, &w)| f * u64::from(w)).sum();
        let recovery = if mode.recovers() { flagged_bits } else { 0 };
        prop_assert_eq!(out.stats.activity.conversions, cols * nv * ns + recovery);
        prop_assert_eq!(out.stats.recovery_conversions, recovery);
        prop_assert_eq!(out.stats.activity.conversions, counts.primary + counts.recovery);
        prop_assert_eq!(out.stats.flagged, counts.flagged);
        prop_assert_eq!(flagged_bits, counts.flagged_bits);
        if !matches!(mode, InputMode::Speculative { .. }) {
            prop_assert_eq!(out.stats.flagged, 0);
        }
    }

    #[test]
    fn speculation_with_recovery_is_exact_unless_a_one_bit_conversion_clips(
        c in case(), spec in slicing(4), bits in 2u32..=8,
    ) {
        prop_assume!(c.cfg.geometry.cell() == CellKind::TwoT2R);
        let adc = Adc::new(bits, true).unwrap();
        let mode = InputMode::Speculative { slicing: spec, recovery: true };
        let layer = ProgrammedLayer::ideal(compile(c.weights.view(), &c.cfg, None).unwrap());
        let out = layer.run(c.inputs.view(), &run_cfg(adc, mode)).unwrap();
        if out.stats.recovery_out_of_range == 0 {
            prop_assert_eq!(out.outputs.mapv(i64::from), exact_outputs(c.weights.view(), c.inputs.view()));
            prop_assert_eq!(out.stats.inexact_column_slices, 0);
        }
        // A flagged column-slice contributes what 1x8 input slicing gives for it:
        // when 1x8 itself never clips, so does recovery, and both are exact.
        let one_bit = layer.run(c.inputs.view(), &run_cfg(adc, InputMode::one_bit())).unwrap();
        if one_bit.stats.inexact_column_slices == 0 {
            prop_assert_eq!(out.stats.recovery_out_of_range, 0);
            prop_assert_eq!(out.outputs, one_bit.outputs);
        }
    }

    #[test]
    fn signed_inputs_take_two_exact_passes(c in case(), mode in input_mode(), raw in prop::collection::vec(any::<i8>(), 200)) {
        let (nv, ni) = c.inputs.dim();
        let x = Array2::from_shape_fn((nv, ni), |(v, i)| raw[(v * ni + i) % raw.len()]);
        let layer = ProgrammedLayer::ideal(compile(c.weights.view(), &c.cfg, None).unwrap());
        let out = layer.run_signed(x.view(), &run_cfg(Adc::new(22, true).unwrap(), mode)).unwrap();
        let exact: Array2<i64> = Array2::from_shape_fn((nv, c.weights.nrows()), |(v, f)| {
            (0..ni).map(|i| i64::from(x[[v, i]]) * i64::from(c.weights[[f, i]])).sum()
        });
        prop_assert_eq!(out.outputs.mapv(i64::from), exact);
        prop_assert_eq!(out.stats.passes, 2);
        prop_assert_eq!(out.stats.vectors, nv as u64);
    }
}

/// Devices of a real-size case.
#[derive(Debug, Clone, Copy)]
enum Devices {
    Ideal,
    /// Stuck cells only: integer conductances, but a device stuck at the
    /// maximum beside a non-zero partner sends the crossbar to the f32 path.
    Stuck,
    /// Programming variation and stuck cells: real-valued conductances.
    Programmed,
}

/// A real-size case: drawn from a few parameters and a seed (the tensors are
/// generated, not drawn element by element, so shrinking stays cheap).
#[derive(Debug, Clone)]
struct BigCase {
    encoding: Encoding,
    bits: u32,
    weight_slicing: Slicing,
    /// Crossbar rows and columns.
    geometry: (usize, usize),
    inputs: usize,
    devices: Devices,
    mode: InputMode,
    adc_bits: u32,
    signed_inputs: bool,
    seed: u64,
}

/// Vectors of a real-size case: chunks of 256, 256 and 8.
const BIG_VECTORS: usize = 520;

fn big_case() -> impl Strategy<Value = BigCase> {
    (
        prop_oneof![
            Just(Encoding::CenterOffset(CenterRule::Mean)),
            Just(Encoding::CenterOffset(CenterRule::Median)),
            Just(Encoding::CenterOffset(CenterRule::Search)),
            Just(Encoding::ZeroOffset),
            Just(Encoding::UnsignedOffset { bit_flip: false }),
            Just(Encoding::UnsignedOffset { bit_flip: true }),
        ],
        1u32..=4,
        prop::sample::select(vec![
            (128usize, 48usize),
            (512, 128),
            (1024, 72),
            (512, 512),
        ]),
        1025usize..=1300,
        prop_oneof![
            Just(Devices::Ideal),
            Just(Devices::Stuck),
            Just(Devices::Programmed)
        ],
        input_mode(),
        3u32..=9,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(
            |(encoding, bits, geometry, inputs, devices, mode, adc_bits, signed, seed)| {
                slicing(bits).prop_map(move |weight_slicing| BigCase {
                    encoding,
                    bits,
                    weight_slicing,
                    geometry,
                    inputs,
                    devices,
                    mode: mode.clone(),
                    adc_bits,
                    signed_inputs: signed,
                    seed,
                })
            },
        )
}

/// Weights shaped like a trained layer (a per-filter bias and spread), enough
/// filters for 64+ columns, and inputs: ReLU-like unsigned ones (many zeros,
/// some 255s), or signed ones over the whole `i8` range.
fn big_tensors(c: &BigCase) -> (Array2<i8>, Array2<u8>, Array2<i8>) {
    let mut rng = stream_rng(c.seed, &[]);
    let filters = 72usize.div_ceil(c.weight_slicing.len()) + rng.random_range(0..8);
    let filt: Vec<(i32, i32)> = (0..filters)
        .map(|_| (rng.random_range(-40..40), rng.random_range(1..128)))
        .collect();
    let w = Array2::from_shape_fn((filters, c.inputs), |(f, _)| {
        let (bias, spread) = filt[f];
        let w = bias + rng.random_range(-512i32..512) * spread / 512;
        i8::try_from(w.clamp(-127, 127)).unwrap()
    });
    let u = Array2::from_shape_fn((BIG_VECTORS, c.inputs), |_| {
        match rng.random_range(0u32..8) {
            0..=3 => 0,
            4 => 255,
            5 => rng.random_range(1..16),
            _ => rng.random(),
        }
    });
    let x = Array2::from_shape_fn((BIG_VECTORS, c.inputs), |_| {
        match rng.random_range(0u32..4) {
            0 => 0,
            1 => i8::MIN,
            _ => rng.random(),
        }
    });
    (w, u, x)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_lies_within_the_reference_at_real_sizes(c in big_case()) {
        let (rows, cols) = c.geometry;
        let g = CrossbarGeometry::new(rows, cols, c.encoding.cell_kind(), c.bits).unwrap();
        let cfg = CompileConfig { geometry: g, encoding: c.encoding, weight_slicing: c.weight_slicing.clone() };
        let (w, u, x) = big_tensors(&c);
        // The two passes of signed inputs: positive parts, magnitudes of negative parts.
        let pos = x.mapv(|v| u8::try_from(v.max(0)).unwrap());
        let neg = x.mapv(|v| u8::try_from(-i16::from(v.min(0))).unwrap());
        let cal = if c.signed_inputs { &pos } else { &u };
        let calibration = Calibration { inputs: cal.slice(s![..4, ..]), input_slicing: c.mode.slicing() };
        let mapped = compile(w.view(), &cfg, Some(calibration)).unwrap();
        prop_assert!(mapped.row_blocks() >= 2);
        prop_assert!(mapped.crossbars().iter().map(|x| x.crossbar.used_cols()).sum::<usize>() >= 64 * mapped.row_blocks());
        let layer = match c.devices {
            Devices::Ideal => ProgrammedLayer::ideal(mapped),
            Devices::Stuck => ProgrammedLayer::program(mapped, &DeviceNoise::new(0.0, 2e-3, 2e-3).unwrap(), c.seed),
            Devices::Programmed => ProgrammedLayer::program(mapped, &DeviceNoise::new(0.05, 1e-3, 1e-3).unwrap(), c.seed),
        };
        let signed_adc = c.encoding.cell_kind() == CellKind::TwoT2R || c.seed % 2 == 0;
        let adc = Adc::new(c.adc_bits, signed_adc).unwrap();
        let rcfg = run_cfg(adc, c.mode.clone());
        let (out, b) = if c.signed_inputs {
            let out = layer.run_signed(x.view(), &rcfg).unwrap();
            let (p, n) = (
                run_reference_programmed(&layer, pos.view(), &rcfg),
                run_reference_programmed(&layer, neg.view(), &rcfg),
            );
            let counts = raella_runtime::reference::ReferenceCounts {
                primary: p.counts.primary + n.counts.primary,
                flagged: p.counts.flagged + n.counts.flagged,
                recovery: p.counts.recovery + n.counts.recovery,
                flagged_bits: p.counts.flagged_bits + n.counts.flagged_bits,
            };
            let b = ReferenceBounds {
                lo: &p.lo - &n.hi,
                hi: &p.hi - &n.lo,
                counts,
                ambiguous_codes: p.ambiguous_codes + n.ambiguous_codes,
                ambiguous_flags: p.ambiguous_flags + n.ambiguous_flags,
                ambiguous_flag_bits: p.ambiguous_flag_bits + n.ambiguous_flag_bits,
            };
            (out, b)
        } else {
            (layer.run(u.view(), &rcfg).unwrap(), run_reference_programmed(&layer, u.view(), &rcfg))
        };
        let y = out.outputs.mapv(i64::from);
        let outside = y.iter().zip(&b.lo).zip(&b.hi).filter(|((y, lo), hi)| *y < *lo || *y > *hi).count();
        prop_assert_eq!(outside, 0, "outputs outside the reference bounds ({} ambiguous codes)", b.ambiguous_codes);
        if !matches!(c.devices, Devices::Programmed) {
            // Integer conductances: every f32 sum is exact, so is the reference.
            prop_assert_eq!(b.ambiguous_codes, 0);
            prop_assert_eq!(&y, &b.lo);
        }
        // Conversions and flags as the reference counts them, up to the flags
        // rounding may move.
        let st = &out.stats;
        let primary = st.activity.conversions - st.recovery_conversions;
        prop_assert_eq!(primary, b.counts.primary);
        prop_assert!(st.flagged.abs_diff(b.counts.flagged) <= b.ambiguous_flags);
        prop_assert!(st.recovery_conversions.abs_diff(b.counts.recovery) <= b.ambiguous_flag_bits);
        prop_assert_eq!(st.vectors, BIG_VECTORS as u64);
    }
}

fn noisy_layer() -> (ProgrammedLayer, Array2<u8>) {
    let w = Array2::from_shape_fn((40, 300), |(f, i)| {
        i8::try_from((f * 7 + i * 13) % 61).unwrap() - 30
    });
    let x = Array2::from_shape_fn((300, 300), |(v, i)| {
        u8::try_from((v * 31 + i * 17) % 256).unwrap()
    });
    let mapped = compile(w.view(), &CompileConfig::raella(), None).unwrap();
    let noise = DeviceNoise::new(0.05, 0.001, 0.001).unwrap();
    (ProgrammedLayer::program(mapped, &noise, 11), x)
}

#[test]
fn same_seed_same_bits_different_seed_differs() {
    let (layer, x) = noisy_layer();
    let mut cfg = RunConfig::raella();
    cfg.column_noise = ColumnNoise::new(0.08).unwrap();
    cfg.seed = 5;
    let a = layer.run(x.view(), &cfg).unwrap();
    let b = layer.run(x.view(), &cfg).unwrap();
    assert_eq!(a, b);
    cfg.seed = 6;
    let c = layer.run(x.view(), &cfg).unwrap();
    assert_ne!(a.outputs, c.outputs);
    // Programming with another seed gives other devices.
    let mapped = layer.mapped().clone();
    let noise = DeviceNoise::new(0.05, 0.001, 0.001).unwrap();
    let other = ProgrammedLayer::program(mapped, &noise, 12);
    cfg.seed = 5;
    assert_ne!(other.run(x.view(), &cfg).unwrap().outputs, a.outputs);
}

#[test]
fn thread_count_does_not_change_noisy_results() {
    let (layer, x) = noisy_layer();
    let mut cfg = RunConfig::raella();
    cfg.column_noise = ColumnNoise::new(0.12).unwrap();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let a = one.install(|| layer.run(x.view(), &cfg).unwrap());
    let b = two.install(|| layer.run(x.view(), &cfg).unwrap());
    assert_eq!(a, b);
}

#[test]
fn conversions_per_mac_at_full_utilisation() {
    // ISAAC: 128 inputs, 32 filters x 4 two-bit slices = 128 columns, 1-bit inputs: 4*8/128.
    let w = Array2::from_shape_fn((32, 128), |(f, i)| {
        i8::try_from((f + i) % 100).unwrap() - 50
    });
    let x = Array2::from_shape_fn((4, 128), |(v, i)| u8::try_from((v * 50 + i) % 256).unwrap());
    let isaac = ProgrammedLayer::ideal(compile(w.view(), &CompileConfig::isaac(), None).unwrap());
    let out = isaac.run(x.view(), &RunConfig::isaac()).unwrap();
    assert!((out.stats.converts_per_mac() - 0.25).abs() < 1e-12);
    assert_eq!(
        out.stats.inexact_column_slices, 0,
        "ISAAC's bit flip keeps every sum in range"
    );
    assert_eq!(
        out.outputs.mapv(i64::from),
        exact_outputs(w.view(), x.view())
    );
    // Center+Offset, 4 x 2b slices on 512 rows, 1-bit inputs: 4*8/512 = 0.0625.
    let w = Array2::from_shape_fn((128, 512), |(f, i)| {
        i8::try_from((f + 3 * i) % 40).unwrap() - 20
    });
    let x = Array2::from_shape_fn((2, 512), |(v, i)| u8::try_from((v + i) % 7).unwrap());
    let mut cfg = CompileConfig::raella();
    cfg.weight_slicing = Slicing::parse("2x4").unwrap();
    let co = ProgrammedLayer::ideal(compile(w.view(), &cfg, None).unwrap());
    let mut run = RunConfig::raella();
    run.input = InputMode::one_bit();
    let out = co.run(x.view(), &run).unwrap();
    assert!((out.stats.converts_per_mac() - 0.0625).abs() < 1e-12);
}
