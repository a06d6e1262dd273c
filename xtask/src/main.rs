//! `cargo xtask`: the project's driver.
//!
//! * `cargo xtask demo [--out DIR]`: the core demo on the committed real MNIST CNN
//!   fixture; prints the report and writes `DIR/report.md` (default `results/demo`).
//! * `cargo xtask bench`: the core throughput benchmark (optimised build), one line
//!   `core-throughput: ...` with the ratio to the machine's f32 GEMM rate.

mod demo;
mod fixture;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn usage() -> &'static str {
    "usage: cargo xtask <demo [--out DIR] | bench>"
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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
        Some("bench") => {
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(root())
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
