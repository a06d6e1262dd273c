//! `raella-sweep SPEC --out DIR --presets FILE`: runs a sweep and writes its
//! results. Normally started by `cargo xtask sweep`, which builds it optimised.
//! `--calibrate` instead fits the cost model's two coefficients on the spec's
//! calibration workload and prints them (`cargo xtask calibrate-cost`).

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
    let mut calibrate_only = false;
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
            "--calibrate" => calibrate_only = true,
            s if s.starts_with('-') => bail!(
                "unknown option `{s}`; usage: raella-sweep SPEC.toml [--out DIR] [--presets FILE] [--calibrate]"
            ),
            s => {
                if spec.replace(PathBuf::from(s)).is_some() {
                    bail!("more than one spec given");
                }
            }
        }
    }
    let spec_path =
        spec.context("usage: raella-sweep SPEC.toml [--out DIR] [--presets FILE] [--calibrate]")?;
    let presets = presets.unwrap_or_else(|| PathBuf::from("fixtures/presets.toml"));
    let spec = Spec::load(&spec_path, &presets)?;
    if calibrate_only {
        let files = spec
            .cost
            .as_ref()
            .context("--calibrate needs a spec with a [cost] section")?;
        let cm = raella_sweep::CostModel::load(files)?;
        let (cal, fit) = raella_sweep::calibrate(&spec, &cm)?;
        println!(
            "# fitted on `{}` (paper ablation, mJ per batch)",
            cm.paper.as_ref().map_or("", |p| p.calibrate_on.as_str())
        );
        println!("cell_scale = {:.4}", cal.cell_scale);
        println!("pulse_dac_pj = {:.4}", cal.pulse_dac_pj);
        for (n, t, e) in fit {
            println!(
                "# {n}: paper {t:.3} mJ, fitted {e:.3} mJ ({:+.1}%)",
                (e / t - 1.0) * 100.0
            );
        }
        return Ok(());
    }
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
