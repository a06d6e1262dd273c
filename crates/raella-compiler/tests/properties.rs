//! Invariant 1: slicing then recombining is lossless, and every encoding's
//! mapping decodes back to the exact weights.

use ndarray::Array2;
use proptest::prelude::*;
use raella_compiler::{CenterRule, CompileConfig, Encoding, Slicing, compile};
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
        let cell = enc.cell_kind();
        let geometry = CrossbarGeometry::new(rows, cols, cell, bits).unwrap();
        let widths = vec![bits; 8 / bits as usize];
        let mut widths = widths;
        let rem = 8 - widths.iter().sum::<u32>();
        if rem > 0 { widths.push(rem); }
        let cfg = CompileConfig { geometry, encoding: enc, weight_slicing: Slicing::new(widths, 8).unwrap() };
        let mut state = seed;
        let w = Array2::from_shape_fn((outputs, inputs), |_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = i8::from_ne_bytes([(state >> 56) as u8]);
            v.max(-127)
        });
        let m = compile(w.view(), &cfg, None).unwrap();
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
    }
}
