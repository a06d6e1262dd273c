//! Invariant 1: slicing then recombining is lossless, and every encoding's
//! mapping (every center rule, `search` included) decodes back to the exact
//! weights, at small and at real sizes.

use ndarray::Array2;
use proptest::prelude::*;
use raella_compiler::{Calibration, CenterRule, CompileConfig, Encoding, Slicing, compile};
use raella_device::{CellKind, CrossbarGeometry};

/// Random slicings of 8 bits with widths in 1..=max_width.
fn slicing(max_width: u32) -> impl Strategy<Value = Slicing> {
    prop::collection::vec(1..=max_width, 1..=8).prop_filter_map("sum to 8", move |mut w| {
        let mut sum = 0;
        w.retain(|&x| {
            let keep = sum + x <= 8;
            if keep {
                sum += x;
            }
            keep
        });
        while sum < 8 {
            let add = (8 - sum).min(max_width);
            w.push(add);
            sum += add;
        }
        Slicing::new(w, 8).ok()
    })
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![
        Just(Encoding::CenterOffset(CenterRule::Mean)),
        Just(Encoding::CenterOffset(CenterRule::Median)),
        Just(Encoding::CenterOffset(CenterRule::Search)),
        Just(Encoding::ZeroOffset),
        Just(Encoding::UnsignedOffset { bit_flip: false }),
        Just(Encoding::UnsignedOffset { bit_flip: true }),
    ]
}

proptest! {
    #[test]
    fn split_join_is_lossless(s in slicing(4), v in 0u32..256) {
        prop_assert_eq!(s.join(&s.split(v)), v);
        for (k, &w) in s.widths().iter().enumerate() {
            prop_assert!(s.slice(v, k) < (1 << w));
        }
    }

    #[test]
    fn signed_int8_magnitudes_roundtrip(s in slicing(4), w in any::<i8>()) {
        let m = u32::from(w.unsigned_abs());
        let back = i32::try_from(s.join(&s.split(m))).unwrap();
        prop_assert_eq!(if w < 0 { -back } else { back }, i32::from(w));
    }

    #[test]
    fn every_encoding_decodes_exactly(
        enc in encoding(),
        bits in 1u32..=4,
        rows in 1usize..12,
        cols in 1usize..12,
        outputs in 1usize..6,
        inputs in 1usize..30,
        seed in any::<u64>(),
    ) {
        check_decode(enc, bits, (rows, cols), outputs, inputs, seed)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Real sizes: more than 1,024 inputs (several row blocks), 64+ columns
    /// (several column blocks on the smaller crossbars).
    #[test]
    fn every_encoding_decodes_exactly_at_real_sizes(
        enc in encoding(),
        bits in 1u32..=4,
        geometry in prop::sample::select(vec![(128usize, 128usize), (512, 512), (1024, 72)]),
        outputs in 20usize..48,
        inputs in 1025usize..1400,
        seed in any::<u64>(),
    ) {
        check_decode(enc, bits, geometry, outputs, inputs, seed)?;
    }
}

/// Compiles seeded int8 weights (the `search` rule calibrated on seeded
/// inputs) and checks the mapping decodes to them exactly, and that no 2T2R
/// cell drives both devices.
fn check_decode(
    enc: Encoding,
    bits: u32,
    (rows, cols): (usize, usize),
    outputs: usize,
    inputs: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let cell = enc.cell_kind();
    let geometry = CrossbarGeometry::new(rows, cols, cell, bits).unwrap();
    let mut widths = vec![bits; 8 / bits as usize];
    let rem = 8 - widths.iter().sum::<u32>();
    if rem > 0 {
        widths.push(rem);
    }
    let cfg = CompileConfig {
        geometry,
        encoding: enc,
        weight_slicing: Slicing::new(widths, 8).unwrap(),
    };
    let mut state = seed;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 56) as u8
    };
    let w = Array2::from_shape_fn((outputs, inputs), |_| i8::from_ne_bytes([next()]).max(-127));
    let x = Array2::from_shape_fn((4, inputs), |_| next());
    let input_slicing = Slicing::parse("4-2-2").unwrap();
    let calibration = Calibration {
        inputs: x.view(),
        input_slicing: &input_slicing,
    };
    let m = compile(w.view(), &cfg, Some(calibration)).unwrap();
    prop_assert_eq!(m.decode(), w.mapv(i32::from));
    if cell == CellKind::TwoT2R {
        // A 2T2R cell never drives both devices.
        for x in m.crossbars() {
            for r in 0..x.crossbar.used_rows() {
                for c in 0..x.crossbar.used_cols() {
                    let (p, n) = x.crossbar.levels(r, c);
                    prop_assert!(p == 0 || n == 0);
                }
            }
        }
    }
    Ok(())
}
