//! Whole-network throughput: images per second for each model x design of a
//! sweep spec, and the simulated slice-MAC rate as a ratio to the f32 GEMM
//! rate of the same machine, measured in the same process on all threads.
//!
//! ```text
//! cargo bench -p raella-sweep --bench network_throughput -- [SPEC] [--images N]
//! ```
//!
//! `SPEC` defaults to `fixtures/sweeps/default.toml` (the MNIST CNN);
//! `fixtures/sweeps/real-scale.toml` runs MobileNetV2, InceptionV3 and MiniLM
//! after `cargo xtask fetch-models`. Each design is built once (compile,
//! adaptive slicing, programming: reported separately), then the first `N`
//! evaluation images (default 16) run twice; the faster run is reported.
//! Text models (`bert`) embed the first `N` Lee-50 documents (the column
//! reads documents per second).
//! A slice-MAC is one used row x one used column x one input vector x one
//! primary input slice (recovery work is done but not counted, so it lowers
//! the ratio). The GEMM reference is one `1024 x 512 . 512 x 512` f32 product
//! per thread, all threads at once (ndarray / matrixmultiply).

use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array2, linalg::general_mat_mul, s};
use raella_network::{BertModel, CrossbarBackend, Lee50, QuantModel, eval_quant};
use raella_runtime::LayerStats;
use raella_sweep::{AWS_CALIBRATION_IMAGES, Spec, load_model};
use rayon::prelude::*;

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
    let mut spec_path = PathBuf::from("fixtures/sweeps/default.toml");
    let mut images = 16usize;
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
    let spec = Spec::load(&spec_path, &root.join("fixtures/presets.toml"))?;
    let gflops = gemm_gflops();
    println!(
        "network-throughput: {} on {} threads; f32 GEMM {gflops:.1} GFLOP/s (all threads)",
        spec_path.display(),
        rayon::current_num_threads()
    );
    println!(
        "{:<14} {:<22} {:>8} {:>9} {:>10} {:>14} {:>7}",
        "model", "design", "build s", "images/s", "GMAC/img", "G slice-MAC/s", "ratio"
    );
    for m in &spec.models {
        if let Some(b) = &m.bert {
            // Text: up to `N` Lee-50 documents; "images/s" are documents/s.
            let model = BertModel::load(&b.model)?;
            // The spec's ranges: calibration lines of `texts`, evaluation documents.
            let (c, e) = (m.calibration, m.evaluation);
            let docs: Vec<String> = Lee50::load(&b.lee50)?
                .documents
                .into_iter()
                .skip(e.start)
                .take(images.min(e.count))
                .collect();
            let text = std::fs::read_to_string(&b.texts)?;
            let cal: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .skip(c.start)
                .take(c.count)
                .collect();
            let quant = model.quantize(&cal)?;
            let captured = quant.capture_inputs(&cal)?;
            let layers = quant.crossbar_layers();
            for arch in &spec.archs {
                let t0 = Instant::now();
                let backend = CrossbarBackend::build_layers(
                    &layers,
                    &arch.config(),
                    &captured,
                    spec.seeds[0],
                )?;
                let build = t0.elapsed().as_secs_f64();
                let (best, total) = best_of_two(|| Ok(quant.embed(&backend, &docs)?.layer_stats))?;
                report(&m.name, &arch.name, build, docs.len(), best, &total, gflops);
            }
            continue;
        }
        let (graph, cal, eval, _) = load_model(m)?;
        let n = images.min(eval.nrows());
        let eval = eval.slice(s![..n, ..]).to_owned();
        let model = QuantModel::calibrate(graph, cal.view())?;
        let ncap = cal.nrows().min(AWS_CALIBRATION_IMAGES);
        let captured = model.capture_inputs(cal.slice(s![..ncap, ..]).to_owned())?;
        for arch in &spec.archs {
            let cfg = arch.config();
            let t0 = Instant::now();
            let backend = CrossbarBackend::build(&model, &cfg, &captured, spec.seeds[0])?;
            let build = t0.elapsed().as_secs_f64();
            let (best, total) =
                best_of_two(|| Ok(eval_quant(&model, &backend, eval.view())?.layer_stats))?;
            report(&m.name, &arch.name, build, n, best, &total, gflops);
        }
    }
    Ok(())
}

/// Runs `run` twice; the faster time and the (identical) statistics summed over layers.
fn best_of_two(
    mut run: impl FnMut() -> anyhow::Result<Vec<Option<LayerStats>>>,
) -> anyhow::Result<(f64, LayerStats)> {
    let mut best = f64::INFINITY;
    let mut total = LayerStats::default();
    for _ in 0..2 {
        let t = Instant::now();
        let stats = run()?;
        best = best.min(t.elapsed().as_secs_f64());
        total = LayerStats::default();
        for st in stats.iter().flatten() {
            total += st;
        }
    }
    Ok((best, total))
}

fn report(
    model: &str,
    arch: &str,
    build: f64,
    n: usize,
    secs: f64,
    total: &LayerStats,
    gflops: f64,
) {
    let rate = total.slice_macs as f64 / secs / 1e9;
    println!(
        "{:<14} {:<22} {:>8.1} {:>9.3} {:>10.3} {:>14.2} {:>7.3}",
        model,
        arch,
        build,
        n as f64 / secs,
        total.macs as f64 / n as f64 / 1e9,
        rate,
        2.0 * rate / gflops
    );
}
