//! Every integer kernel this CPU runs gives the same layer results, and the
//! `RAELLA_KERNEL` environment variable picks the kernel (or is an error).
//!
//! The kernel is chosen once per process, so each kernel runs in a child
//! process: this test binary, re-run with `RAELLA_KERNEL` set and only the
//! ignored `kernel_child` test selected, prints a digest of its results.

use std::process::Command;

use ndarray::Array2;
use raella_compiler::{CompileConfig, compile};
use raella_device::{ColumnNoise, KERNEL_ENV, Kernel, stream_rng};
use raella_runtime::{ProgrammedLayer, RunConfig, RuntimeError};
use rand::RngExt;

/// A whole layer on ideal devices (the integer products): 700 inputs (two
/// row blocks, a 188-row remainder), 230 filters of `4-2-2` (690 columns: two
/// column blocks, a 178-column remainder, not a multiple of 16), 262 vectors
/// (chunks of 256 and 6: a remainder of the four-vector blocks), inputs up to
/// 255 (15-pulse slices), speculation with recovery on the 7-bit ADC, without
/// and with read noise (which also takes the integer magnitudes).
fn layer_digest() -> u64 {
    let mut rng = stream_rng(21, &[]);
    let w = Array2::from_shape_fn((230, 700), |(f, _)| {
        let bias = i32::try_from(f % 9).unwrap() * 11 - 44;
        i8::try_from((bias + rng.random_range(-70i32..=70)).clamp(-127, 127)).unwrap()
    });
    let x = Array2::from_shape_fn((262, 700), |_| match rng.random_range(0u32..4) {
        0 | 1 => 0u8,
        2 => 255,
        _ => rng.random(),
    });
    let layer = ProgrammedLayer::ideal(compile(w.view(), &CompileConfig::raella(), None).unwrap());
    let mut h = Fnv::default();
    for e in [0.0, 0.08] {
        let cfg = RunConfig {
            column_noise: ColumnNoise::new(e).unwrap(),
            seed: 4,
            ..RunConfig::raella()
        };
        let out = layer.run(x.view(), &cfg).unwrap();
        assert!(out.stats.flagged > 0);
        h.outputs(&out.outputs);
        h.bytes(format!("{:?}", out.stats).as_bytes());
    }
    h.0
}

/// FNV-1a, a digest every process computes alike.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn outputs(&mut self, y: &Array2<i32>) {
        for &v in y {
            self.bytes(&v.to_le_bytes());
        }
    }
}

#[test]
#[ignore = "run by the tests below, in a child process"]
fn kernel_child() {
    match Kernel::selected() {
        Ok(kernel) => println!("kernel-child: {kernel} {:016x}", layer_digest()),
        Err(e) => {
            // A run reports the bad variable as an error.
            let w = Array2::<i8>::ones((2, 3));
            let layer =
                ProgrammedLayer::ideal(compile(w.view(), &CompileConfig::raella(), None).unwrap());
            let err = layer
                .run(Array2::<u8>::ones((1, 3)).view(), &RunConfig::raella())
                .unwrap_err();
            assert_eq!(err, RuntimeError::Device(e));
            println!("kernel-child-error: {err}");
        }
    }
}

/// Runs `kernel_child` with `RAELLA_KERNEL=value`; its stdout and success.
fn child(value: &str) -> (String, bool) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "kernel_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KERNEL_ENV, value)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

#[test]
fn every_kernel_gives_the_same_layer_results() {
    let kernels = Kernel::supported_kernels();
    println!("this CPU runs {kernels:?}");
    let mut digests = Vec::new();
    for k in kernels {
        let (stdout, ok) = child(k.name());
        assert!(ok, "{k}: {stdout}");
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("kernel-child: ").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("{k}: no result in {stdout}"));
        let (name, digest) = line.split_once(' ').unwrap();
        assert_eq!(name, k.name(), "the variable picked the kernel");
        digests.push((k, digest.to_string()));
    }
    // Portable (always supported, last) is the reference.
    let (_, want) = digests.last().unwrap().clone();
    for (k, d) in digests {
        assert_eq!(d, want, "{k} against portable");
    }
}

#[test]
fn a_kernel_this_cpu_lacks_or_an_unknown_name_is_an_error() {
    let mut cases = vec![("avx512", "names no kernel")];
    if let Some(missing) = Kernel::ALL.into_iter().find(|k| !k.supported()) {
        cases.push((missing.name(), "forces a kernel this CPU cannot run"));
    }
    for (value, why) in cases {
        let (stdout, ok) = child(value);
        assert!(ok, "{value}: {stdout}");
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("kernel-child-error: ").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("{value}: no error in {stdout}"));
        assert!(
            line.contains(why) && line.contains(value),
            "{value}: {line}"
        );
    }
}
