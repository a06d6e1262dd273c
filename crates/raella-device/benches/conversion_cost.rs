//! `cargo bench -p raella-device --bench conversion_cost`: what one ADC
//! conversion costs with and without lumped read noise, element by element, on
//! one thread.
//!
//! Read noise adds, to every conversion whose column magnitude is not zero,
//! one standard normal draw ([`raella_device::normal`]: a SplitMix64 hash,
//! Box-Muller with polynomial `ln`, `cos` and `sin`) and a square root of the
//! magnitude. This benchmark times those pieces apart from the rest of the
//! engine, so the floor they put under a noisy run can be set beside the
//! noise-free conversion they are added to. Rows:
//!
//! - `exact conversion`: [`convert_int_sums`] (clamp, flags, shift-add) over
//!   `N` integer sums, per sum;
//! - `noisy conversion`: [`convert_noisy_sums`] over the same sums, their
//!   magnitudes and draws already made, per sum (draws not included);
//! - `normals, long streams`: [`fill_normals`] of 4,096 draws per stream, per draw;
//! - `normals, rows of 64`: [`fill_normals`] of 64 draws per stream (one
//!   vector's columns of a 64-column crossbar, as the MNIST CNN's first
//!   layer draws them), per draw;
//! - `normals, across streams`: [`normal_pairs`] over 4,096 streams, per draw.
//!
//! Each figure is the median of 9 timed runs after a warm-up, in nanoseconds
//! per element; `noise adds` is the noisy conversion plus one draw from rows
//! of 64, less the exact conversion. Sums are uniform in `[-80, 80]` (a 7-bit
//! signed ADC saturates some) and magnitudes uniform in `[1, 400]`, from a
//! seeded Xoshiro256++ stream; the ADC is 7-bit signed, flagged codes dropped
//! and listed (speculation's pass).

use std::time::{Duration, Instant};

use raella_device::normal::{fill_normals, normal_pairs, stream_key};
use raella_device::{IntConversion, convert_int_sums, convert_noisy_sums, stream_rng};
use rand::RngExt;

/// Sums per conversion run (a chunk of 1,024 vectors of 64 columns).
const N: usize = 1 << 16;
const REPS: usize = 9;

fn median_ns_per(elements: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut t: Vec<Duration> = (0..REPS)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    #[allow(clippy::cast_precision_loss)]
    let per = t[REPS / 2].as_secs_f64() * 1e9 / elements as f64;
    per
}

fn main() {
    let mut rng = stream_rng(7, &[0xC0]);
    let sums: Vec<i32> = (0..N).map(|_| rng.random_range(-80..=80)).collect();
    let mags: Vec<i32> = (0..N).map(|_| rng.random_range(1..=400)).collect();
    let mut z = vec![0f32; N];
    fill_normals(stream_key(7, &[1]), &mut z);
    let conv = IntConversion {
        lo: -64,
        hi: 63,
        signed: true,
        drop_flagged: true,
        in_place: false,
        shift: 2,
        write: false,
    };
    let mut acc = vec![0i64; N];
    let mut flags = Vec::new();
    // Checksums keep the work observable.
    let mut check = 0u64;

    let exact = median_ns_per(N, || {
        let c = convert_int_sums(&conv, &sums, &mut acc, &mut flags);
        check = check.wrapping_add(c.saturated);
    });
    let noisy = median_ns_per(N, || {
        let c = convert_noisy_sums(&conv, (&sums, &mags, &z, 0.08), &mut acc, &mut flags);
        check = check.wrapping_add(c.saturated);
    });

    let mut long = vec![0f32; 4096];
    let streams = 64u64;
    #[allow(clippy::cast_possible_truncation)]
    let long_ns = median_ns_per(streams as usize * long.len(), || {
        for k in 0..streams {
            fill_normals(stream_key(3, &[k]), &mut long);
            check = check.wrapping_add(u64::from(long[7].to_bits()));
        }
    });
    let mut row = [0f32; 64];
    let rows = 4096u64;
    #[allow(clippy::cast_possible_truncation)]
    let row_ns = median_ns_per(rows as usize * row.len(), || {
        let base = stream_key(4, &[]);
        for k in 0..rows {
            fill_normals(base ^ k, &mut row);
            check = check.wrapping_add(u64::from(row[3].to_bits()));
        }
    });
    let keys: Vec<u64> = (0..4096u64).map(|k| stream_key(5, &[k])).collect();
    let (mut a, mut b) = (vec![0f32; keys.len()], vec![0f32; keys.len()]);
    let pairs = 32u64;
    #[allow(clippy::cast_possible_truncation)]
    let across_ns = median_ns_per(2 * pairs as usize * keys.len(), || {
        for i in 0..pairs {
            normal_pairs(&keys, i, &mut a, &mut b);
            check = check.wrapping_add(u64::from(a[5].to_bits()));
        }
    });

    let kernel = raella_device::Kernel::selected()
        .map_or_else(|e| format!("none ({e})"), |k| format!("{k:?}"));
    println!("conversion-cost: one thread, kernel {kernel}, ns per element (median of {REPS})");
    println!("  exact conversion          {exact:>7.3}");
    println!("  noisy conversion          {noisy:>7.3}   (draws made beforehand)");
    println!("  normals, long streams     {long_ns:>7.3}");
    println!("  normals, rows of 64       {row_ns:>7.3}");
    println!("  normals, across streams   {across_ns:>7.3}");
    println!(
        "  noise adds                {:>7.3}   ({:.1}x the exact conversion)",
        noisy + row_ns - exact,
        (noisy + row_ns) / exact
    );
    println!("  (checksum {check:x})");
}
