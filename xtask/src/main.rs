//! `cargo xtask`: the project's driver.
//!
//! * `cargo xtask demo [--out DIR]`: the core demo on the committed real MNIST CNN
//!   fixture; prints the report and writes `DIR/report.md` (default `results/demo`).
//! * `cargo xtask sweep [SPEC.toml] [--out DIR]`: the main job. Runs a sweep spec
//!   (default `fixtures/sweeps/default.toml`) from an optimised build of
//!   `raella-sweep`; results go to `DIR` (default `results/<spec name>/`).
//!   `--shard K/N` runs one of N disjoint slices of the points;
//!   `--images-shard J/M` runs the J-th of M contiguous, batch-aligned ranges
//!   of every selected point's evaluation images (documents);
//!   `cargo xtask sweep merge --out DIR SHARD_DIR...` merges shard outputs.
//! * `cargo xtask calibrate-cost`: fits the cost model's two coefficients on the
//!   paper's ResNet18 ablation energies and prints them (`fixtures/cost/calibration.toml`).
//! * `cargo xtask fetch-models [--cache DIR]`: fetches the real-scale models and data (nsfwjs
//!   CNNs as ONNX, all-MiniLM-L6-v2, the Lee-50 benchmark, sample photographs) into
//!   `.cache/models/`, with its own Python venv (`.cache/models/venv`, pinned
//!   `scripts/fetch/requirements.txt`).
//! * `cargo xtask typical-stats [--from DIR] [--out FILE]`: regenerates
//!   `fixtures/cost/typical_stats.toml` from a measured run of the default sweep
//!   (runs it into `results/default/` unless `--from` names a finished one).
//! * `cargo xtask cost-whatif`: the paper's seven DNNs' throughput and energy under
//!   each mapping/timing assumption of the cost model, alone and combined.
//! * `cargo xtask inspect-onnx MODEL.onnx`: imports a model and prints its inputs,
//!   outputs, operators (after constant folding) and weight layers.
//! * `cargo xtask run-onnx MODEL.onnx --input NAME=FILE.npy ... --design fp32|int8|PRESET
//!   [--calibration NAME=FILE.npy ...] [--set knob=value ...] [--seed N] --out DIR`: runs
//!   any model on any tensors; writes `DIR/output_<i>.npy` (float32, graph-output order)
//!   and, for a simulated design, `DIR/stats.json` (per-layer statistics).
//! * `cargo xtask bench [--real-scale]`: whole networks in their own 8-bit MACs
//!   per second beside onnxruntime float32 on the same model, threads and inputs
//!   (a private venv `.cache/bench-venv` with `scripts/bench/requirements.txt`):
//!   the MNIST CNN, and with `--real-scale` MobileNetV2, InceptionV3 and MiniLM
//!   (after `fetch-models`); then the core kernel's slice-MAC rate against the
//!   f32 GEMM rate (`core-throughput: ...`).

mod demo;
mod fixture;
mod onnx_cmd;
mod typical;
mod venv;
mod whatif;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The global allocator (see `mimalloc` in the workspace's `Cargo.toml`):
/// glibc's returns large freed blocks to the kernel and faults them in again on
/// the next layer; mimalloc keeps them ([`raella_sweep::keep_freed_memory`]
/// turns off its delayed return of freed memory too). No result depends on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn usage() -> &'static str {
    "usage: cargo xtask <sweep [SPEC.toml] [--out DIR] [--shard K/N] [--images-shard J/M] [--no-cache] | sweep merge --out DIR SHARD_DIR... | demo [--out DIR] | bench [--real-scale] | calibrate-cost | inspect-onnx MODEL.onnx | run-onnx MODEL.onnx --input NAME=FILE.npy [...] [--calibration NAME=FILE.npy ...] --design fp32|int8|PRESET [--set knob=value ...] [--seed N] --out DIR | fetch-models [--cache DIR] | typical-stats [--from DIR] [--out FILE] | cost-whatif>"
}

/// `p` made absolute against the caller's working directory (cargo runs the
/// sweep from the workspace root).
fn absolute(p: &str) -> Result<String> {
    let path = Path::new(p);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    Ok(abs.display().to_string())
}

/// Writes `text` to `path` atomically (temporary file, then rename).
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().context("output path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    raella_sweep::keep_freed_memory();
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    // `std::env::args` would panic on an argument that is not UTF-8.
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string().map_err(|a| {
                anyhow::anyhow!(
                    "argument `{}` is not UTF-8 (run target/release/raella-sweep directly for such paths)",
                    a.to_string_lossy()
                )
            })
        })
        .collect::<Result<_>>()?;
    match args.first().map(String::as_str) {
        Some("demo") => {
            let mut out = root().join("results").join("demo");
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--out" => out = PathBuf::from(it.next().context("--out needs a directory")?),
                    other => bail!("unknown argument `{other}` for demo\n{}", usage()),
                }
            }
            let md = demo::run_demo(&root())?;
            print!("{md}");
            let path = out.join("report.md");
            write_atomic(&path, &md)?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
        Some("sweep") => {
            let root = root();
            let mut pass: Vec<String> = Vec::new();
            let mut positional = 0;
            let merging = args.get(1).map(String::as_str) == Some("merge");
            let mut it = args[1..].iter().skip(usize::from(merging));
            if merging {
                pass.push("merge".into());
            }
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--out" | "--presets" => {
                        let v = it.next().with_context(|| format!("{a} needs a value"))?;
                        pass.extend([a.clone(), absolute(v)?]);
                    }
                    "--shard" | "--images-shard" => {
                        let v = it.next().with_context(|| format!("{a} needs K/N"))?;
                        pass.extend([a.clone(), v.clone()]);
                    }
                    "--no-cache" => pass.push(a.clone()),
                    s if s.starts_with('-') => bail!("unknown option `{s}` for sweep\n{}", usage()),
                    s => {
                        positional += 1;
                        pass.push(absolute(s)?);
                    }
                }
            }
            if !merging && positional == 0 {
                pass.insert(
                    0,
                    root.join("fixtures/sweeps/default.toml")
                        .display()
                        .to_string(),
                );
            }
            if !pass.iter().any(|a| a == "--presets") {
                pass.extend([
                    "--presets".to_string(),
                    root.join("fixtures/presets.toml").display().to_string(),
                ]);
            }
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(&root)
                .args(["run", "--quiet", "--release", "-p", "raella-sweep", "--"])
                .args(&pass)
                .status()
                .context("running cargo run -p raella-sweep")?;
            if !status.success() {
                bail!("sweep failed ({status})");
            }
            Ok(())
        }
        Some("fetch-models") => {
            let root = root();
            let mut cache = root.join(".cache").join("models");
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--cache" => {
                        cache = PathBuf::from(absolute(
                            it.next().context("--cache needs a directory")?,
                        )?);
                    }
                    other => bail!("unknown argument `{other}` for fetch-models\n{}", usage()),
                }
            }
            venv::require_tools(
                "fetch-models",
                &[
                    ("python3", "Python 3.9 or newer, for the converter"),
                    ("node", "Node.js 18 or newer: nsfwjs is an npm package"),
                    ("npm", "npm, to fetch nsfwjs and tfjs"),
                ],
            )?;
            let python = venv::ensure(
                &cache.join("venv"),
                &root.join("scripts/fetch/requirements.txt"),
            )?;
            let status = Command::new(&python)
                .current_dir(&root)
                .arg(root.join("scripts/fetch/fetch_models.py"))
                .arg("--cache")
                .arg(&cache)
                .status()
                .with_context(|| {
                    format!("running {} scripts/fetch/fetch_models.py", python.display())
                })?;
            if !status.success() {
                bail!("fetch-models failed ({status})");
            }
            Ok(())
        }
        Some("inspect-onnx") => {
            let path = args
                .get(1)
                .context("usage: cargo xtask inspect-onnx MODEL.onnx")?;
            print!("{}", onnx_cmd::inspect(Path::new(&absolute(path)?))?);
            Ok(())
        }
        Some("run-onnx") => {
            let a = onnx_cmd::parse_args(&args[1..], absolute)?;
            print!("{}", onnx_cmd::run(&root(), &a)?);
            Ok(())
        }
        Some("typical-stats") => {
            let root = root();
            let mut from = None;
            let mut out = root.join("fixtures/cost/typical_stats.toml");
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--from" => {
                        from = Some(PathBuf::from(absolute(
                            it.next().context("--from needs a results folder")?,
                        )?));
                    }
                    "--out" => {
                        out = PathBuf::from(absolute(it.next().context("--out needs a file")?)?);
                    }
                    other => bail!("unknown argument `{other}` for typical-stats\n{}", usage()),
                }
            }
            let dir = match from {
                Some(d) => d,
                None => {
                    // The measured run: the default sweep (cached per point).
                    let dir = root.join("results/default");
                    let status =
                        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                            .current_dir(&root)
                            .args(["run", "--quiet", "--release", "-p", "raella-sweep", "--"])
                            .arg(root.join("fixtures/sweeps/default.toml"))
                            .arg("--out")
                            .arg(&dir)
                            .arg("--presets")
                            .arg(root.join("fixtures/presets.toml"))
                            .status()
                            .context("running cargo run -p raella-sweep")?;
                    if !status.success() {
                        bail!("the default sweep failed ({status})");
                    }
                    dir
                }
            };
            let text = typical::write(&root, &dir, &out)?;
            print!("{text}");
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        Some("cost-whatif") => {
            print!("{}", whatif::table(&root())?);
            Ok(())
        }
        Some("calibrate-cost") => {
            let root = root();
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(&root)
                .args(["run", "--quiet", "--release", "-p", "raella-sweep", "--"])
                .arg(root.join("fixtures/sweeps/paper.toml"))
                .args([
                    "--presets",
                    &root.join("fixtures/presets.toml").display().to_string(),
                    "--calibrate",
                ])
                .status()
                .context("running cargo run -p raella-sweep")?;
            if !status.success() {
                bail!("calibration failed ({status})");
            }
            Ok(())
        }
        Some("bench") => {
            let root = root();
            let mut real_scale = false;
            for a in &args[1..] {
                match a.as_str() {
                    "--real-scale" => real_scale = true,
                    other => bail!("unknown argument `{other}` for bench\n{}", usage()),
                }
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            // onnxruntime, the float32 reference the headline is compared with.
            let python = venv::ensure(
                &root.join(".cache/bench-venv"),
                &root.join("scripts/bench/requirements.txt"),
            )?;
            let mut runs = vec![(
                "fixtures/sweeps/default.toml",
                "2000",
                "isaac8b,raella,raella_e8",
            )];
            if real_scale {
                runs.push((
                    "fixtures/sweeps/real-scale.toml",
                    "8",
                    "isaac8b,raella,raella_e8",
                ));
            }
            for (spec, images, archs) in runs {
                let status = Command::new(&cargo)
                    .current_dir(&root)
                    .args([
                        "bench",
                        "-p",
                        "raella-sweep",
                        "--bench",
                        "network_throughput",
                        "--",
                    ])
                    .args([spec, "--images", images, "--archs", archs, "--ort"])
                    .arg(&python)
                    .status()
                    .context("running cargo bench")?;
                if !status.success() {
                    bail!("network benchmark failed: {status}");
                }
            }
            // The core kernel on one thread (slice-MACs vs the f32 GEMM rate): secondary.
            let status = Command::new(&cargo)
                .current_dir(&root)
                .args([
                    "bench",
                    "-p",
                    "raella-runtime",
                    "--bench",
                    "core_throughput",
                ])
                .status()
                .context("running cargo bench")?;
            if !status.success() {
                bail!("benchmark failed: {status}");
            }
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n{}", usage()),
        None => bail!("{}", usage()),
    }
}
