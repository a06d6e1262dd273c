//! `raella-sweep SPEC --out DIR --presets FILE`: runs a sweep and writes its
//! results. Normally started by `cargo xtask sweep`, which builds it optimised.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use raella_sweep::{Spec, run, write_results};

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let mut spec = None;
    let mut out = None;
    let mut presets = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => {
                out = Some(PathBuf::from(
                    args.next().context("--out needs a directory")?,
                ))
            }
            "--presets" => {
                presets = Some(PathBuf::from(
                    args.next().context("--presets needs a file")?,
                ))
            }
            s if s.starts_with('-') => bail!(
                "unknown option `{s}`; usage: raella-sweep SPEC.toml [--out DIR] [--presets FILE]"
            ),
            s => {
                if spec.replace(PathBuf::from(s)).is_some() {
                    bail!("more than one spec given");
                }
            }
        }
    }
    let spec_path = spec.context("usage: raella-sweep SPEC.toml [--out DIR] [--presets FILE]")?;
    let presets = presets.unwrap_or_else(|| PathBuf::from("fixtures/presets.toml"));
    let spec = Spec::load(&spec_path, &presets)?;
    let out = out.unwrap_or_else(|| PathBuf::from("results").join(&spec.name));
    eprintln!(
        "sweep `{}`: {} model(s) x {} design(s) x {} seed(s) -> {}",
        spec.name,
        spec.models.len(),
        spec.archs.len(),
        spec.seeds.len(),
        out.display()
    );
    let results = run(&spec, |m| eprintln!("  {m}"))?;
    let written = write_results(&spec, &results, &out)?;
    for w in written {
        eprintln!("wrote {}", w.display());
    }
    Ok(())
}
