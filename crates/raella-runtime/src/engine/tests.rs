//! Unit tests of the engine that need its private parts (the integer path
//! switch) or compare `run_columns` with `run`.

use super::*;
use raella_compiler::{CenterRule, CompileConfig, Encoding, Slicing, compile};
use raella_device::{CrossbarGeometry, stream_rng};
use rand::RngExt;

thread_local! {
    /// Forces [`DenseBits::pays`]'s answer on this thread (tests only).
    pub(super) static FORCE_DENSE: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    /// Sends real-valued conductances' recovery through [`recover`] instead
    /// of [`recover_real`] on this thread (tests only).
    pub(super) static GENERAL_RECOVERY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Recovery on real-valued conductances in phases ([`recover_real`]) gives
/// the same outputs and statistics as the general loop ([`recover`]): under
/// programming variation on 2T2R (Center+Offset) and on 1T1R with a finite
/// OFF state (ISAAC's offset, the nominal OFF current removed from each
/// recovered bit), on a wide crossbar (vectors with many flagged columns:
/// the reads by rows) and a narrow one (a few columns: the column reads).
#[test]
fn real_recovery_equals_the_general_loop() {
    let mut rng = stream_rng(8, &[]);
    let cases = [
        (
            raella_device::CellKind::TwoT2R,
            Encoding::CenterOffset(CenterRule::Mean),
            DeviceNoise::new(0.05, 0.0, 0.0).unwrap(),
            Adc::new(5, true).unwrap(),
        ),
        (
            raella_device::CellKind::OneT1R,
            Encoding::UnsignedOffset { bit_flip: true },
            DeviceNoise::new(0.02, 0.0, 0.0)
                .unwrap()
                .with_on_off_ratio(15.0)
                .unwrap(),
            Adc::new(5, false).unwrap(),
        ),
    ];
    for (cell, encoding, noise, adc) in cases {
        for (filters, ins) in [(40, 200), (1, 9)] {
            let g = CrossbarGeometry::new(128, 128, cell, 4).unwrap();
            let weights = Array2::from_shape_fn((filters, ins), |_| rng.random_range(-127i8..=127));
            let ccfg = CompileConfig {
                geometry: g,
                encoding,
                weight_slicing: Slicing::new(vec![4, 4], 8).unwrap(),
            };
            let mapped = compile(weights.view(), &ccfg, None).unwrap();
            let layer = ProgrammedLayer::program(mapped, &noise, 5);
            assert!(layer.crossbars().iter().all(|p| !p.is_integral()));
            let x = Array2::from_shape_fn((300, ins), |_| match rng.random_range(0u32..3) {
                0 => 0u8,
                _ => rng.random(),
            });
            let cfg = RunConfig {
                adc,
                input: InputMode::Speculative {
                    slicing: Slicing::new(vec![4, 2, 2], 8).unwrap(),
                    recovery: true,
                },
                column_noise: ColumnNoise::new(0.0).unwrap(),
                seed: 3,
            };
            let run = |general: bool| {
                GENERAL_RECOVERY.set(general);
                let out = layer.run(x.view(), &cfg).unwrap();
                GENERAL_RECOVERY.set(false);
                out
            };
            let (phased, general) = (run(false), run(true));
            assert!(
                general.stats.recovery_out_of_range > 0,
                "{cell:?} {filters}x{ins}: out-of-range recovered bits exercised"
            );
            assert_eq!(phased, general, "{cell:?} {filters}x{ins}");
        }
    }
}

/// Recovery's reads by the kernel for whole vectors ([`DenseBits`]) give the
/// same outputs and statistics as the one-column popcount reads, on 2T2R
/// (Center+Offset) and 1T1R (ISAAC's offset, whose magnitudes are its sums)
/// crossbars, without noise (exact recovery), with lumped read noise, and
/// through ADC instances that shift the sums (exact recovery of the shifted
/// bits, [`instance_shift`]) or move codes (gain and INL: every flagged
/// column through its instance, [`recover_exact_instances`]), all on one
/// thread (the reads' buffers reused from run to run).
#[test]
fn dense_recovery_reads_equal_the_column_reads() {
    let mut rng = stream_rng(6, &[]);
    let cells = [
        (
            raella_device::CellKind::TwoT2R,
            Encoding::CenterOffset(CenterRule::Mean),
        ),
        (
            raella_device::CellKind::OneT1R,
            Encoding::UnsignedOffset { bit_flip: true },
        ),
    ];
    // One thread for every run, so each reuses the buffers the one before
    // left (a 1T1R run after a 2T2R one's magnitudes).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for (cell, encoding) in cells {
        let g = CrossbarGeometry::new(128, 128, cell, 4).unwrap();
        let weights = Array2::from_shape_fn((40, 200), |_| rng.random_range(-127i8..=127));
        let ccfg = CompileConfig {
            geometry: g,
            encoding,
            weight_slicing: Slicing::new(vec![4, 4], 8).unwrap(),
        };
        let mapped = compile(weights.view(), &ccfg, None).unwrap();
        let ideal = ProgrammedLayer::ideal(mapped.clone());
        let offsets = ProgrammedLayer::program(
            mapped.clone(),
            &DeviceNoise::default()
                .with_adc(raella_device::AdcVariation::new(1.0, 0.0, 0.0).unwrap()),
            4,
        );
        // Gain and INL that move codes: recovery through every column's
        // instance ([`recover_exact_instances`]).
        let curved = ProgrammedLayer::program(
            mapped,
            &DeviceNoise::default()
                .with_adc(raella_device::AdcVariation::new(0.5, 0.1, 1.0).unwrap()),
            4,
        );
        let x = Array2::from_shape_fn((500, 200), |_| match rng.random_range(0u32..3) {
            0 => 0u8,
            _ => rng.random(),
        });
        for (layer, noise) in [
            (&ideal, ColumnNoise::new(0.0).unwrap()),
            (&ideal, ColumnNoise::new(0.08).unwrap()),
            (&offsets, ColumnNoise::new(0.0).unwrap()),
            (&curved, ColumnNoise::new(0.0).unwrap()),
        ] {
            let cfg = RunConfig {
                // 1T1R: a wide unsigned ADC, so that most 1-bit reads lie
                // in range and their magnitudes (the noise) decide codes.
                adc: match cell {
                    raella_device::CellKind::TwoT2R => Adc::new(5, true),
                    raella_device::CellKind::OneT1R => Adc::new(9, false),
                }
                .unwrap(),
                input: InputMode::Speculative {
                    slicing: Slicing::new(vec![4, 2, 2], 8).unwrap(),
                    recovery: true,
                },
                column_noise: noise,
                seed: 3,
            };
            // The offsets-only layer takes the shifted path: every column
            // has a shift under this ADC; the curved layer's crossbars each
            // have a column without one (so none takes that path).
            if let Some(adcs) = layer.adc_instances() {
                let (lo, hi) = (cfg.adc.min_code() as f32, cfg.adc.max_code() as f32);
                if std::ptr::eq(layer, &offsets) {
                    assert!(
                        adcs.iter()
                            .flatten()
                            .all(|a| instance_shift(a, lo, hi).is_some())
                    );
                } else {
                    assert!(
                        adcs.iter()
                            .all(|xb| xb.iter().any(|a| instance_shift(a, lo, hi).is_none()))
                    );
                }
            }
            let run = |dense: bool| {
                pool.install(|| {
                    FORCE_DENSE.set(Some(dense));
                    let out = layer.run(x.view(), &cfg).unwrap();
                    FORCE_DENSE.set(None);
                    out
                })
            };
            let (dense, columns) = (run(true), run(false));
            assert!(
                columns.stats.recovery_out_of_range > 0,
                "{cell:?} {noise:?}"
            );
            assert_eq!(dense, columns, "{cell:?} {noise:?}");
        }
    }
}

/// `run_columns` returns what the digital combine adds: with a wide ADC each
/// column's value is its exact dot product with the inputs, and flip
/// correction, weight-slice shifts, centers and row-block sums of those
/// values give `run`'s outputs (ISAAC with bit flips, three row blocks,
/// two column blocks, speculation with recovery on a narrow ADC).
#[test]
fn column_values_are_what_the_combine_adds() {
    let mut rng = stream_rng(8, &[]);
    let weights = Array2::from_shape_fn((45, 300), |_| rng.random_range(-127i8..=127));
    let inputs = Array2::from_shape_fn((19, 300), |_| rng.random::<u8>());
    let mapped = compile(weights.view(), &CompileConfig::isaac(), None).unwrap();
    assert!(mapped.row_blocks() == 3 && mapped.col_blocks() == 2);
    assert!(mapped.crossbars().iter().any(|x| x.flipped.contains(&true)));
    let layer = ProgrammedLayer::ideal(mapped.clone());
    let wide = RunConfig {
        adc: Adc::new(22, true).unwrap(),
        ..RunConfig::isaac()
    };
    let cols = layer.run_columns(inputs.view(), &wide).unwrap().outputs;
    let mut off = 0;
    for mx in mapped.crossbars() {
        let xb = &mx.crossbar;
        for (v, x) in inputs.rows().into_iter().enumerate() {
            let xs: Vec<u8> = x
                .iter()
                .skip(mx.row_start)
                .take(xb.used_rows())
                .copied()
                .collect();
            for (c, &want) in xb.column_sums_exact(&xs).iter().enumerate() {
                assert_eq!(i64::from(cols[[v, off + c]]), want);
            }
        }
        off += xb.used_cols();
    }
    assert_eq!(off, cols.ncols());
    let narrow = RunConfig {
        adc: Adc::new(4, true).unwrap(),
        input: InputMode::raella(),
        ..RunConfig::isaac()
    };
    let out = layer.run(inputs.view(), &narrow).unwrap();
    let columns = layer.run_columns(inputs.view(), &narrow).unwrap();
    assert!(out.stats.flagged > 0);
    assert_eq!(columns.stats, out.stats);
    let ws = mapped.weight_slicing();
    let mut y = Array2::<i64>::zeros(out.outputs.dim());
    for (v, x) in inputs.rows().into_iter().enumerate() {
        let total: i64 = x.iter().map(|&a| i64::from(a)).sum();
        for (f, &c) in mapped.centers().iter().enumerate() {
            y[[v, f]] = i64::from(c) * total;
        }
        let mut off = 0;
        for mx in mapped.crossbars() {
            let rows = mx.crossbar.used_rows();
            let block: i64 = x
                .iter()
                .skip(mx.row_start)
                .take(rows)
                .map(|&a| i64::from(a))
                .sum();
            for c in 0..mx.crossbar.used_cols() {
                let (f, k) = mapped.column_role(mx.col_start + c);
                let a = i64::from(columns.outputs[[v, off + c]]);
                let mask = (1i64 << ws.widths()[k]) - 1;
                let value = if mx.flipped[c] { mask * block - a } else { a };
                y[[v, f]] += value << ws.shifts()[k];
            }
            off += mx.crossbar.used_cols();
        }
    }
    assert_eq!(y.mapv(super::narrow), out.outputs);
}

/// The integer products (ideal devices; converted to f32 under read noise)
/// and the real-valued path give the same outputs and statistics, ADC
/// saturation, recovery and read noise included, on crossbars of several
/// row blocks and column tiles.
#[test]
fn integer_and_real_paths_agree() {
    let mut rng = stream_rng(3, &[]);
    for (case, &(rows, cols, outs, ins, bits)) in [
        (512, 512, 70, 900, 4),
        (128, 128, 40, 300, 2),
        (64, 48, 9, 130, 3),
    ]
    .iter()
    .enumerate()
    {
        let g = CrossbarGeometry::new(rows, cols, raella_device::CellKind::TwoT2R, bits).unwrap();
        let weights = Array2::from_shape_fn((outs, ins), |(f, _)| {
            let w = i32::try_from(f % 7).unwrap() * 9 - 27 + rng.random_range(-60i32..=60);
            i8::try_from(w.clamp(-127, 127)).unwrap()
        });
        let inputs = Array2::from_shape_fn((37, ins), |_| match rng.random_range(0u32..4) {
            0 => 0u8,
            1 => rng.random_range(0u8..16),
            _ => rng.random(),
        });
        let ccfg = CompileConfig {
            geometry: g,
            encoding: Encoding::CenterOffset(CenterRule::Mean),
            // `bits`-wide weight slices, MSB first (3 -> 3-3-2).
            weight_slicing: Slicing::new(
                (0..8u32.div_ceil(bits))
                    .map(|k| bits.min(8 - k * bits))
                    .collect(),
                8,
            )
            .unwrap(),
        };
        let layer = ProgrammedLayer::ideal(compile(weights.view(), &ccfg, None).unwrap());
        assert!(layer.integer_sums);
        let mut real = layer.clone();
        real.integer_sums = false;
        for (adc_bits, e) in [(3, 0.0), (5, 0.0), (7, 0.0), (5, 0.08), (7, 0.12)] {
            for recovery in [false, true] {
                let cfg = RunConfig {
                    adc: Adc::new(adc_bits, true).unwrap(),
                    input: InputMode::Speculative {
                        slicing: Slicing::new(vec![4, 2, 2], 8).unwrap(),
                        recovery,
                    },
                    column_noise: ColumnNoise::new(e).unwrap(),
                    seed: 1,
                };
                let a = layer.run(inputs.view(), &cfg).unwrap();
                let b = real.run(inputs.view(), &cfg).unwrap();
                assert!(
                    a.stats.flagged > 0 || adc_bits == 7,
                    "case {case}: saturation exercised"
                );
                assert_eq!(a, b, "case {case}, {adc_bits}-bit ADC, recovery {recovery}");
            }
        }
    }
}

/// A thread's reused buffers ([`Scratch`]) carry nothing from one run to the
/// next: on one worker thread, a small layer run after a larger one (whose
/// sums, magnitudes, draws and recovery values are left in the buffers) gives
/// the same outputs and statistics as on a fresh thread, and so does the
/// larger one run again; under no noise, lumped and per-device read noise,
/// with recovery, and with vectors whose slices are all zero (rows whose
/// draws are skipped).
#[test]
fn reused_buffers_carry_nothing_between_runs() {
    let mut rng = stream_rng(5, &[]);
    fn layer(outs: usize, ins: usize, rng: &mut impl rand::Rng) -> ProgrammedLayer {
        let g = CrossbarGeometry::new(128, 128, raella_device::CellKind::TwoT2R, 4).unwrap();
        let weights = Array2::from_shape_fn((outs, ins), |_| rng.random_range(-127i8..=127));
        let ccfg = CompileConfig {
            geometry: g,
            encoding: Encoding::CenterOffset(CenterRule::Mean),
            weight_slicing: Slicing::new(vec![4, 4], 8).unwrap(),
        };
        ProgrammedLayer::ideal(compile(weights.view(), &ccfg, None).unwrap())
    }
    fn inputs(n: usize, ins: usize, rng: &mut impl rand::Rng) -> Array2<u8> {
        Array2::from_shape_fn((n, ins), |(v, _)| {
            match (v % 3, rng.random_range(0u32..4)) {
                // Every third vector's low slices are zero.
                (0, _) => rng.random_range(0u8..16) << 4,
                (_, 0) => 0,
                _ => rng.random(),
            }
        })
    }
    let (big, small) = (layer(60, 300, &mut rng), layer(9, 40, &mut rng));
    let (xb, xs) = (inputs(700, 300, &mut rng), inputs(300, 40, &mut rng));
    let noises = [
        ColumnNoise::new(0.0).unwrap(),
        ColumnNoise::new(0.08).unwrap(),
        ColumnNoise::new(0.0)
            .unwrap()
            .with_device_sigma(0.05)
            .unwrap(),
    ];
    for noise in noises {
        let cfg = RunConfig {
            adc: Adc::new(5, true).unwrap(),
            input: InputMode::Speculative {
                slicing: Slicing::new(vec![4, 2, 2], 8).unwrap(),
                recovery: true,
            },
            column_noise: noise,
            seed: 9,
        };
        let one_thread = || {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
        };
        let fresh_small = one_thread().install(|| small.run(xs.view(), &cfg).unwrap());
        let fresh_big = one_thread().install(|| big.run(xb.view(), &cfg).unwrap());
        assert!(fresh_big.stats.flagged > 0 && fresh_small.stats.flagged > 0);
        one_thread().install(|| {
            assert_eq!(big.run(xb.view(), &cfg).unwrap(), fresh_big, "{noise:?}");
            assert_eq!(
                small.run(xs.view(), &cfg).unwrap(),
                fresh_small,
                "{noise:?}"
            );
            assert_eq!(big.run(xb.view(), &cfg).unwrap(), fresh_big, "{noise:?}");
        });
    }
}

/// A signed run's fused chunks (both passes of a chunk of vectors, then
/// their difference) give what two whole passes give: the same outputs
/// and statistics, under read noise (whose streams are keyed by the pass)
/// and recovery, over several chunks on two threads.
#[test]
fn signed_chunks_equal_two_whole_passes() {
    let mut rng = stream_rng(6, &[]);
    let g = CrossbarGeometry::new(128, 128, raella_device::CellKind::TwoT2R, 4).unwrap();
    let (outs, ins) = (12, 40);
    let weights = Array2::from_shape_fn((outs, ins), |_| rng.random_range(-127i8..=127));
    let ccfg = CompileConfig {
        geometry: g,
        encoding: Encoding::CenterOffset(CenterRule::Mean),
        weight_slicing: Slicing::new(vec![4, 4], 8).unwrap(),
    };
    let layer = ProgrammedLayer::ideal(compile(weights.view(), &ccfg, None).unwrap());
    for (noise, seed) in [(0.0, 3), (0.08, 9)] {
        let cfg = RunConfig {
            adc: Adc::new(5, true).unwrap(),
            input: InputMode::Speculative {
                slicing: Slicing::new(vec![4, 2, 2], 8).unwrap(),
                recovery: true,
            },
            column_noise: ColumnNoise::new(noise).unwrap(),
            seed,
        };
        // Several chunks and a partial one.
        let n = 3 * layer.chunk_vectors(&cfg) + 17;
        let x = Array2::from_shape_fn((n, ins), |_| rng.random::<i8>());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (y, stats) = pool.install(|| layer.run_signed_wide(x.view(), &cfg).unwrap());
        let pos = x.mapv(|v| u8::try_from(v.max(0)).unwrap());
        let neg = x.mapv(|v| u8::try_from(-i16::from(v.min(0))).unwrap());
        let (yp, sp) = layer.run_pass(pos.view(), &cfg, 0, Gather::Filters, false);
        let (yn, sn) = layer.run_pass(neg.view(), &cfg, 1, Gather::Filters, false);
        let mut want = sp;
        want += &sn;
        want.vectors = sn.vectors;
        want.macs = sn.macs;
        want.passes = 2;
        assert!(
            want.flagged > 0 && want.recovery_conversions > 0,
            "{want:?}"
        );
        assert_eq!(y, (yp - yn).mapv(saturate), "noise {noise}");
        assert_eq!(stats, want, "noise {noise}");
    }
}

/// `raella_device::bit_planes` (the engine's bit-planes) against the bit-by-bit
/// definition, for row counts around the word and block sizes, and
/// `add_filter_sums` against plain group sums, partial last groups included.
#[test]
fn bit_planes_and_filter_sums_match_their_definitions() {
    let mut rng = stream_rng(11, &[]);
    for rows in [1, 7, 9, 63, 64, 65, 288, 511, 512, 513] {
        let x: Vec<u8> = (0..3 * rows).map(|_| rng.random::<u8>()).collect();
        let words = ProgrammedCrossbar::row_bit_words(rows);
        let mut got = vec![0u64; 3 * 8 * words];
        for (xr, o) in x.chunks_exact(rows).zip(got.chunks_exact_mut(8 * words)) {
            raella_device::bit_planes(xr, o);
        }
        for (v, xr) in x.chunks_exact(rows).enumerate() {
            for bit in 0..8 {
                for w in 0..words {
                    let want = (0..64)
                        .filter(|&k| w * 64 + k < rows)
                        .fold(0u64, |a, k| a | u64::from((xr[w * 64 + k] >> bit) & 1) << k);
                    assert_eq!(got[(v * 8 + bit) * words + w], want, "rows {rows}");
                }
            }
        }
    }
    for nws in 1..=6 {
        for len in 0usize..20 {
            let vals: Vec<i64> = (0..len).map(|_| rng.random_range(-1000..1000)).collect();
            let mut got = vec![5i64; len.div_ceil(nws) + 1];
            let mut want = got.clone();
            add_filter_sums(&mut got, &vals, nws);
            for (f, g) in vals.chunks(nws).enumerate() {
                want[f] += g.iter().sum::<i64>();
            }
            assert_eq!(got, want, "nws {nws} len {len}");
        }
    }
}

/// `slice_into` (fixed-width windows for narrow rows) and `row_totals` (flat
/// `u32` lanes) against their definitions: row counts on both sides of the
/// window widths, strides with and without padding, vector counts around the
/// windows' reach (the last vectors go row by row) and past the 512 after
/// which four windows at a time move their `u16` sums on, garbage-free
/// padding.
#[test]
fn narrow_row_helpers_match_their_definitions() {
    let mut rng = stream_rng(12, &[]);
    for rows in [1usize, 3, 9, 12, 16, 17, 25, 32, 33, 100] {
        for stride in [
            rows,
            rows.next_multiple_of(4),
            rows + 4,
            rows.next_multiple_of(16),
        ] {
            for b in [0, 1, 2, 3, 5, 17, 40, 600] {
                let xs: Vec<u8> = (0..b * rows).map(|_| rng.random::<u8>()).collect();
                for (shift, mask) in [(0, 0xff), (2, 0x3), (5, 0x7), (7, 0x1)] {
                    let mut got = vec![0u8; b * stride];
                    slice_into(&xs, rows, (shift, mask), &mut got, stride);
                    let mut want = vec![0u8; b * stride];
                    for v in 0..b {
                        for r in 0..rows {
                            want[v * stride + r] = (xs[v * rows + r] >> shift) & mask;
                        }
                    }
                    assert_eq!(got, want, "rows {rows} stride {stride} b {b} shift {shift}");
                    // Padded slices' row totals: the padding folds into no row.
                    let mut totals = vec![0u64; rows];
                    row_totals(&got, stride, u32::from, &mut totals);
                    for (r, &t) in totals.iter().enumerate() {
                        let direct: u64 = (0..b).map(|v| u64::from(want[v * stride + r])).sum();
                        assert_eq!(t, direct, "rows {rows} stride {stride} b {b}");
                    }
                }
                // All slices and their rows' pulses in one pass (narrow
                // strides): the same planes, and the totals `row_totals`
                // gives from them and (with popcounts) from the inputs.
                if rows < stride && stride <= 16 {
                    for cuts in [
                        vec![(0, 0xff)],
                        vec![(4, 0xf), (2, 0x3), (0, 0x3)],
                        vec![(7, 0x1), (5, 0x3), (2, 0x7), (0, 0x3)],
                    ] {
                        for popcounts in [false, true] {
                            let mut got = vec![vec![0u8; b * stride]; cuts.len()];
                            let totals = slices_and_totals::<16>(
                                &xs, rows, &cuts, &mut got, stride, popcounts,
                            );
                            let mut want_totals = vec![0u64; rows];
                            for (g, &cut) in got.iter().zip(&cuts) {
                                let mut want = vec![0u8; b * stride];
                                slice_into(&xs, rows, cut, &mut want, stride);
                                assert_eq!(g, &want, "rows {rows} stride {stride} b {b} {cut:?}");
                                row_totals(&want, stride, u32::from, &mut want_totals);
                            }
                            if popcounts {
                                row_totals(&xs, rows, u8::count_ones, &mut want_totals);
                            }
                            assert_eq!(totals, want_totals, "rows {rows} stride {stride} b {b}");
                        }
                    }
                }
                let f = |v: u8| u32::from(v >> 3) + v.count_ones();
                let mut got = vec![7u64; rows];
                row_totals(&xs, rows, f, &mut got);
                let want: Vec<u64> = (0..rows)
                    .map(|r| 7 + (0..b).map(|v| u64::from(f(xs[v * rows + r]))).sum::<u64>())
                    .collect();
                assert_eq!(got, want, "rows {rows} b {b}");
            }
        }
    }
    let x = Array2::from_shape_fn((6, 11), |(i, j)| u8::try_from(i * 40 + j).unwrap());
    let want: Vec<i64> = x.rows().into_iter().map(|r| row_sum(&r)).collect();
    assert_eq!(row_sums(x.view()), want);
    // Narrow rows (a window of 16 per vector, the last vectors value by
    // value): every row count below 16, vector counts around the window's reach.
    for cols in 1..=17 {
        for n in [0, 1, 2, 3, 7, 16, 41] {
            let x = Array2::from_shape_fn((n, cols), |_| rng.random::<u8>());
            let want: Vec<i64> = x.rows().into_iter().map(|r| row_sum(&r)).collect();
            assert_eq!(row_sums(x.view()), want, "{n} x {cols}");
        }
    }
    // Views that are not one slice take the per-row path.
    let every_other = x.slice(s![.., ..;2]);
    let want2: Vec<i64> = every_other
        .rows()
        .into_iter()
        .map(|r| row_sum(&r))
        .collect();
    assert_eq!(row_sums(every_other), want2);
    let cols = x.slice(s![.., 2..7]);
    let want: Vec<i64> = cols.rows().into_iter().map(|r| row_sum(&r)).collect();
    assert_eq!(row_sums(cols), want);
}

/// The engine's per-vector keys give the documented slice streams:
/// `stream_child(vector_keys(..)[v], s) == slice_key(key, v0 + v, s)`.
#[test]
fn vector_keys_give_the_slice_streams() {
    let key = crossbar_key(7, 1, 3);
    let keys = vector_keys(key, 100, 5);
    assert_eq!(keys.len(), 5);
    for (v, &k) in keys.iter().enumerate() {
        for s in [0, 1, 4, 7] {
            assert_eq!(stream_child(k, s as u64), slice_key(key, 100 + v, s));
        }
    }
}

/// [`instance_shift`] gives a shift only where it is the instance's
/// conversion: for every integer sum far beyond the ADC's range, the
/// transfer and [`adc_step`] give the code, range test and flag of the
/// shifted integer; an offset of exactly half an LSB (rounded away from
/// zero, it moves positive and negative sums differently) and a gain that
/// moves codes have none; offsets alone nearly always have one.
#[test]
fn instance_shifts_are_the_instances_conversions() {
    let mut rng = stream_rng(21, &[]);
    for (bits, signed) in [(7, true), (5, false), (4, true)] {
        let adc = Adc::new(bits, signed).unwrap();
        let (lo, hi) = (adc.min_code() as f32, adc.max_code() as f32);
        let half = AdcInstance {
            gain: 1.0,
            offset: 0.5,
            inl: 0.0,
        };
        assert_eq!(instance_shift(&half, lo, hi), None);
        let steep = AdcInstance {
            gain: 1.05,
            offset: 0.0,
            inl: 0.0,
        };
        assert_eq!(instance_shift(&steep, lo, hi), None);
        // Per kind (an offset alone, a 1e-7 gain, an INL bow), the
        // instances with a shift.
        let mut shifted = [0; 3];
        for i in 0..400 {
            let (gain, inl) = match i % 4 {
                0 | 1 => (1.0, 0.0),
                2 => (1.0 + 1e-7 * rng.random_range(-1.0..1.0f32), 0.0),
                _ => (1.0, rng.random_range(-1.0..1.0f32)),
            };
            let a = AdcInstance {
                gain,
                offset: 3.0 * rng.random_range(-1.0..1.0f32),
                inl,
            };
            let Some(k) = instance_shift(&a, lo, hi) else {
                continue;
            };
            shifted[[0, 0, 1, 2][i % 4]] += 1;
            for s in -3000..=3000 {
                for drop in [false, true] {
                    let st = adc_step(a.transfer(s as f32, lo, hi), lo, hi, signed, drop);
                    let t = s + k;
                    let code = t.clamp(adc.min_code(), adc.max_code());
                    let sat = code == adc.max_code() || (signed && code == adc.min_code());
                    assert_eq!(
                        (st.code, st.ok, st.sat, st.keep),
                        (code as f32, t == code, sat, !(drop && sat)),
                        "{a:?} s {s}"
                    );
                }
            }
        }
        // Every offset alone and every gain too small to move a code; INL
        // bows only where they move none (47-50 of these 100, bows of up
        // to 1 LSB).
        assert_eq!(shifted[..2], [200, 100], "{shifted:?}");
        assert!(shifted[2] < 100, "{shifted:?}");
    }
}

/// [`FlagRows::list`] gives every set bit's `(position / cols, position %
/// cols)`, in order: flag words dense and sparse (whole runs of zero words,
/// vectors without a flag), over column counts below, at and above a word.
#[test]
fn flag_rows_list_every_set_bit() {
    let mut rng = stream_rng(11, &[]);
    for cols in [1usize, 2, 3, 7, 63, 64, 65, 200, 512] {
        for density in [0.0, 0.001, 0.02, 0.3, 1.0] {
            let n = 64 * rng.random_range(1..40usize);
            let words: Vec<u64> = (0..n / 64)
                .map(|_| (0..64).fold(0u64, |w, b| w | (u64::from(rng.random_bool(density)) << b)))
                .collect();
            let mut got = Vec::new();
            FlagRows::list(&words, cols, &mut got);
            let want: Vec<(usize, usize)> = (0..n)
                .filter(|&p| words[p / 64] >> (p % 64) & 1 == 1)
                .map(|p| (p / cols, p % cols))
                .collect();
            assert_eq!(got, want, "cols {cols}, density {density}");
        }
    }
}
