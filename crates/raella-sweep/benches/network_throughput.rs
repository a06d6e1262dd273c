//! Whole-network throughput of simulated designs, in the network's own 8-bit
//! MACs per second, beside onnxruntime float32 on the same model, machine,
//! thread count and inputs, measured in the same run.
//!
//! ```text
//! cargo bench -p raella-sweep --bench network_throughput -- [SPEC] [--images N]
//!     [--archs a,b,...] [--rounds R] [--ort PYTHON]
//! ```
//!
//! `cargo xtask bench` runs it with a private onnxruntime venv (`--ort`).
//! `SPEC` defaults to `fixtures/sweeps/default.toml` (the MNIST CNN);
//! `fixtures/sweeps/real-scale.toml` runs MobileNetV2, InceptionV3 and MiniLM
//! after `cargo xtask fetch-models`. Each design is built 2 to 10 times (compile,
//! adaptive slicing, programming: reported separately); then `R` rounds
//! (default 2) each run the first `N` evaluation images (default 16) on every
//! design in turn, and a design's fastest run is reported. The rounds
//! interleave the designs so that a slow phase of the machine, which lasts
//! seconds to minutes on a shared machine, falls on all of them alike: the
//! ratios between designs are the figures to quote. Every design's build is
//! held in memory at once.
//! Text models embed the first `N` Lee-50 documents (the columns then count
//! documents).
//!
//! What the columns count:
//! - `build s`, `b/10 img`: the design's build (compile, adaptive slicing,
//!   programming, read structures; [`CrossbarBackend::build`]) in seconds, the
//!   fastest of 2 to 10 builds (repeated while they take under 0.2 s in all),
//!   and
//!   over the time this run took for 10 items (below 1: a build costs less than
//!   evaluating 10 items).
//! - `MAC/s` (the headline): the network's crossbar-layer 8-bit MACs per image
//!   (one weight x one activation, as the model defines them; signed inputs'
//!   two passes and zero activations count once), times images per second.
//!   Digital work (pooling, attention's activation-activation products,
//!   normalisation) is done but not counted.
//! - `ort img/s`, `vs ort`: `scripts/bench/ort_bench.py` (onnxruntime, float32,
//!   `intra_op_num_threads` = this process's thread count, batches of 64 images
//!   per call, as the simulator evaluates them; the best of at least two passes
//!   over the items, more while they took under 2 s in all, at most 50) on the
//!   model's ONNX file and the
//!   same preprocessed images; for text models on the same documents, one per
//!   call, unpadded, as the simulator runs them. `vs ort` = our images/s over
//!   onnxruntime's, printed as `1/k` (k times slower).
//! - `slice-MAC/s` (secondary): one used row x one used column x one input
//!   vector x one primary input slice, counted for every vector whether or not
//!   its pulses are zero (the sparse kernels skip zero pulses but they are
//!   counted); recovery work is done but not counted. `vs GEMM` is twice that
//!   rate over the all-thread f32 GEMM rate measured in the same process (one
//!   `1024 x 512 . 512 x 512` product per thread, ndarray / matrixmultiply).
//! - `xbar %`, `digital %`: shares of the evaluation's thread time in the
//!   weight layers' products (the crossbar simulation) and in digital nodes
//!   (everything but weight layers); the rest is the weight layers' own
//!   digital side (input quantisation, im2col, bias, layout). A grouped
//!   convolution's groups run concurrently: their products count as summed
//!   thread time, the rest of the layer as wall time, so on grouped models
//!   `xbar %` overstates the crossbar share.
//! - `grouped %`: the share of the evaluation's wall time spent in grouped
//!   weight layers (`groups > 1`: depthwise convolutions), whole layers
//!   (products, quantisation, im2col, bias); `-` for a model without them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ndarray::{Array2, linalg::general_mat_mul};
use raella_network::{CrossbarBackend, QuantModel, eval_quant};
use raella_onnx::RunProfile;
use raella_runtime::LayerStats;
use raella_sweep::{Spec, load_model};
use rayon::prelude::*;

/// The global allocator (see `mimalloc` in the workspace's `Cargo.toml`):
/// glibc's returns large freed blocks to the kernel and faults them in again on
/// the next layer; mimalloc keeps them ([`raella_sweep::keep_freed_memory`]
/// turns off its delayed return of freed memory too). No result depends on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn gemm_gflops() -> f64 {
    let threads = rayon::current_num_threads();
    let a = Array2::<f32>::from_shape_fn((1024, 512), |(i, j)| ((i * 7 + j * 3) % 16) as f32);
    let b = Array2::<f32>::from_shape_fn((512, 512), |(i, j)| ((i * 5 + j) % 31) as f32 - 15.0);
    let run = || {
        let t = Instant::now();
        (0..threads).into_par_iter().for_each(|_| {
            let mut c = Array2::<f32>::zeros((1024, 512));
            for _ in 0..4 {
                general_mat_mul(1.0, &a, &b, 0.0, &mut c);
            }
        });
        t.elapsed().as_secs_f64()
    };
    run();
    let best = (0..5).map(|_| run()).fold(f64::INFINITY, f64::min);
    (threads * 4 * 2 * 1024 * 512 * 512) as f64 / best / 1e9
}

fn main() -> anyhow::Result<()> {
    raella_sweep::keep_freed_memory();
    let mut spec_path = PathBuf::from("fixtures/sweeps/default.toml");
    let mut images = 16usize;
    let mut only: Option<Vec<String>> = None;
    let mut ort: Option<PathBuf> = None;
    let mut rounds = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {}
            "--images" => {
                images = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--images needs a number"))?;
            }
            "--archs" => {
                let v = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--archs needs a,b,..."))?;
                only = Some(v.split(',').map(str::to_string).collect());
            }
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&r| r > 0)
                    .ok_or_else(|| anyhow::anyhow!("--rounds needs a number above 0"))?;
            }
            "--ort" => {
                ort = Some(PathBuf::from(
                    args.next()
                        .ok_or_else(|| anyhow::anyhow!("--ort needs a python"))?,
                ));
            }
            _ => spec_path = PathBuf::from(a),
        }
    }
    // `cargo bench` runs benches from the crate directory.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let spec_path = if spec_path.is_relative() && !spec_path.exists() {
        root.join(spec_path)
    } else {
        spec_path
    };
    let ort = ort.map(|p| {
        if p.is_relative() && !p.exists() {
            root.join(p)
        } else {
            p
        }
    });
    let mut spec = Spec::load(&spec_path, &root.join("fixtures/presets.toml"))?;
    if let Some(names) = &only {
        for n in names {
            anyhow::ensure!(
                spec.archs.iter().any(|a| &a.name == n),
                "--archs: the spec has no design `{n}`"
            );
        }
        spec.archs.retain(|a| names.contains(&a.name));
    }
    let gflops = gemm_gflops();
    let threads = rayon::current_num_threads();
    println!(
        "network-throughput: {} on {threads} threads; f32 GEMM {gflops:.1} GFLOP/s (all threads); \
         onnxruntime {}",
        spec_path.display(),
        ort.as_ref().map_or_else(
            || "not run (no --ort)".to_string(),
            |p| p.display().to_string()
        )
    );
    println!(
        "{:<14} {:<22} {:>8} {:>9} {:>10} {:>9} {:>10} {:>10} {:>9} {:>13} {:>8} {:>6} {:>9} {:>9}",
        "model",
        "design",
        "build s",
        "b/10 img",
        "images/s",
        "GMAC/img",
        "G MAC/s",
        "ort img/s",
        "vs ort",
        "G slice-MAC/s",
        "vs GEMM",
        "xbar %",
        "digital %",
        "grouped %"
    );
    for m in &spec.models {
        // The first `N` evaluation items of the spec's range.
        let mut m = m.clone();
        m.evaluation.count = m.evaluation.count.min(images);
        let ld = load_model(&m)?;
        let n = ld.items;
        let ort_rate = match (&ort, &ld.lee50, &m.text) {
            (Some(py), Some(lee), Some(t)) => {
                let dir = tempdir()?;
                let texts = dir.join("docs.txt");
                std::fs::write(&texts, lee.documents.join("\n") + "\n")?;
                let r = ort_items_per_s(
                    py,
                    &root,
                    &m.onnx,
                    threads,
                    &[
                        "--texts".as_ref(),
                        texts.as_os_str(),
                        "--tokenizer".as_ref(),
                        t.tokenizer.as_os_str(),
                        "--max-length".as_ref(),
                        t.max_tokens.to_string().as_ref(),
                    ],
                );
                std::fs::remove_dir_all(&dir)?;
                Some(r?)
            }
            (Some(py), None, None) => {
                let dir = tempdir()?;
                let file = dir.join("images.npy");
                let parts: Vec<ndarray::ArrayD<f32>> =
                    ld.evaluation.iter().map(|b| b[0].to_f32()).collect();
                let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
                let x = ndarray::concatenate(ndarray::Axis(0), &views)?;
                ndarray_npy::write_npy(&file, &x)?;
                let mut input =
                    std::ffi::OsString::from(format!("{}=", ld.graph.name(ld.graph.inputs[0])));
                input.push(&file);
                let r = ort_items_per_s(
                    py,
                    &root,
                    &m.onnx,
                    threads,
                    &[
                        "--images".as_ref(),
                        n.to_string().as_ref(),
                        "--batch".as_ref(),
                        "64".as_ref(),
                        "--input".as_ref(),
                        &input,
                    ],
                );
                std::fs::remove_dir_all(&dir)?;
                Some(r?)
            }
            _ => None,
        };
        let model = QuantModel::calibrate(ld.graph, &ld.calibration)?;
        let captured = model.capture_inputs(&ld.aws_calibration)?;
        // Every design built first (all kept in memory), then `rounds`
        // rounds that each evaluate every design once, in the spec's order:
        // a slow phase of the machine (they last seconds to minutes here)
        // then falls on all designs alike instead of on whichever design ran
        // in it, so the ratios between designs are measured fairly.
        let mut designs = Vec::with_capacity(spec.archs.len());
        for arch in &spec.archs {
            let cfg = arch.config();
            // The fastest of at least two builds, repeated up to ten times
            // while they take under 0.2 s in all: a build of a few
            // milliseconds otherwise reports the process's first touches of
            // its memory.
            let (mut build, mut spent, mut count) = (f64::INFINITY, 0.0, 0);
            let mut built = None;
            while count < 2 || (spent < 0.2 && count < 10) {
                let t0 = Instant::now();
                let backend = CrossbarBackend::build(&model, &cfg, &captured, spec.seeds[0])?;
                let t = t0.elapsed().as_secs_f64();
                (build, spent, count) = (build.min(t), spent + t, count + 1);
                built = Some(backend);
            }
            designs.push((arch, build, built.expect("built"), Fastest::default()));
        }
        for _ in 0..rounds {
            for (_, _, backend, fastest) in &mut designs {
                let t = Instant::now();
                let ev = eval_quant(&model, backend, &ld.evaluation)?;
                fastest.add(t.elapsed().as_secs_f64(), &ev.layer_stats, ev.times);
            }
        }
        for (arch, build, _, fastest) in designs {
            report(
                &m.name,
                &arch.name,
                build,
                n,
                fastest.secs,
                &fastest.stats,
                gflops,
                ort_rate,
                fastest.times,
            );
        }
    }
    Ok(())
}

/// A design's fastest evaluation so far: its time and thread-time profile,
/// and the statistics summed over layers (the same in every run).
struct Fastest {
    secs: f64,
    stats: LayerStats,
    times: RunProfile,
}

impl Default for Fastest {
    fn default() -> Self {
        Self {
            secs: f64::INFINITY,
            stats: LayerStats::default(),
            times: RunProfile::default(),
        }
    }
}

impl Fastest {
    fn add(&mut self, secs: f64, stats: &[Option<LayerStats>], times: RunProfile) {
        // The statistics are the same in every run: the first run's.
        if self.secs.is_infinite() {
            for st in stats.iter().flatten() {
                self.stats += st;
            }
        }
        if secs < self.secs {
            self.secs = secs;
            self.times = times;
        }
    }
}

fn report(
    model: &str,
    arch: &str,
    build: f64,
    n: usize,
    secs: f64,
    total: &LayerStats,
    gflops: f64,
    ort: Option<f64>,
    times: RunProfile,
) {
    let all = times.total().as_secs_f64().max(1e-12);
    let per_s = n as f64 / secs;
    let gmac_img = total.macs as f64 / n as f64 / 1e9;
    let slice_rate = total.slice_macs as f64 / secs / 1e9;
    println!(
        "{:<14} {:<22} {:>8.3} {:>9.2} {:>10.3} {:>9.4} {:>10.3} {:>10} {:>9} {:>13.2} {:>8.3} {:>6.1} {:>9.1} {:>9}",
        model,
        arch,
        build,
        build / (10.0 / per_s),
        per_s,
        gmac_img,
        gmac_img * per_s,
        ort.map_or_else(|| "-".into(), |o| format!("{o:.2}")),
        ort.map_or_else(|| "-".into(), |o| format!("1/{:.1}", o / per_s)),
        slice_rate,
        2.0 * slice_rate / gflops,
        100.0 * times.products.as_secs_f64() / all,
        100.0 * times.digital.as_secs_f64() / all,
        if times.grouped_wall.is_zero() {
            "-".to_string()
        } else {
            format!("{:.1}", 100.0 * times.grouped_wall.as_secs_f64() / secs)
        }
    );
}

/// A fresh temporary folder of this process.
fn tempdir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "raella-bench-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// onnxruntime's items (images or documents) per second on `onnx`, from
/// `scripts/bench/ort_bench.py` run by `python` with `threads` threads.
fn ort_items_per_s(
    python: &Path,
    root: &Path,
    onnx: &Path,
    threads: usize,
    extra: &[&std::ffi::OsStr],
) -> anyhow::Result<f64> {
    let out = Command::new(python)
        .arg(root.join("scripts/bench/ort_bench.py"))
        .arg("--model")
        .arg(onnx)
        .args([
            "--threads",
            &threads.to_string(),
            "--repeat",
            "2",
            "--min-seconds",
            "2",
        ])
        .args(extra)
        .output()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", python.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "ort_bench.py on {} failed: {}",
        onnx.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["items_per_s"]
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("ort_bench.py printed no items_per_s: {v}"))
}
