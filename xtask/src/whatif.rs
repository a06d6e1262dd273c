//! `cargo xtask cost-whatif`: the throughput (and energy) of the paper's seven
//! DNNs under each mapping and timing assumption of the cost model, alone and
//! combined (`docs/COST.md`'s what-if table). Shape-only workloads
//! (`fixtures/sweeps/paper.toml`); nothing is fitted here.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use raella_cost::{MappingOptions, RecoveryTiming};
use raella_sweep::{CostModel, EnergyRow, Spec, cost_workloads};

/// One assumption set: (label, recovery ADC-bound, replicas packed, first layer unsigned).
const CASES: [(&str, bool, bool, bool); 8] = [
    (
        "none (fixed 11 cycles, no packing, signed first layer)",
        false,
        false,
        false,
    ),
    ("R: recovery ADC-bound", true, false, false),
    ("P: replicas packed (the default)", false, true, false),
    ("F: first layer unsigned", false, false, true),
    ("R+P", true, true, false),
    ("R+F", true, false, true),
    ("P+F", false, true, true),
    ("R+P+F", true, true, true),
];

fn geomean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len().max(1) as f64).exp()
}

/// The table as markdown.
///
/// # Errors
/// The paper spec or the cost files cannot be read.
pub fn table(root: &Path) -> Result<String> {
    let spec = Spec::load(
        &root.join("fixtures/sweeps/paper.toml"),
        &root.join("fixtures/presets.toml"),
    )?;
    let base = CostModel::load(spec.cost.as_ref().context("paper.toml has [cost]")?)?;
    let calibrated = base
        .paper
        .as_ref()
        .map(|p| p.calibrate_on.clone())
        .unwrap_or_default();
    let dnns: Vec<String> = spec.workloads.iter().map(|w| w.name.clone()).collect();
    let mut md = String::new();
    writeln!(
        md,
        "| assumptions | throughput geomean, 6 validation DNNs (paper {:.2}x) | all 7 (paper {:.2}x) | energy efficiency geomean, 6 (paper {:.2}x) | {} |",
        1.80,
        1.94,
        3.78,
        dnns.join(" | ")
    )?;
    writeln!(md, "|---|---|---|---|{}", "---|".repeat(dnns.len()))?;
    for (label, r, p, f) in CASES {
        let mut cm = base.clone();
        cm.options.mapping = MappingOptions {
            recovery: if r {
                RecoveryTiming::AdcBound { floor_ns: 1.0 }
            } else {
                RecoveryTiming::Fixed
            },
            pack_replicas: p,
        };
        cm.options.first_layer_signed = !f;
        let (rows, _) = cost_workloads(&spec, &cm)?;
        row(&mut md, label, &rows, &dnns, &calibrated, false)?;
    }
    writeln!(
        md,
        "\nThe artifact's findings (O: offset-encoded designs read signed inputs in one pass; S: layers of at most 64 rows take 4-4 under adaptive slicing), with the default mapping (P):\n"
    )?;
    writeln!(
        md,
        "| assumptions | throughput geomean, 6 (paper 1.80x) | all 7 (paper 1.94x) | efficiency geomean, 6 (paper 3.78x) | efficiency per DNN: {} |",
        dnns.join(" | ")
    )?;
    writeln!(md, "|---|---|---|---|{}", "---|".repeat(dnns.len()))?;
    for (label, o, sl) in [
        ("neither", false, false),
        ("O", true, false),
        ("S", false, true),
        ("**O+S (the default)**", true, true),
    ] {
        let mut cm = base.clone();
        cm.options.offset_signed_one_pass = o;
        cm.options.few_row_layers_two_slices = sl;
        let (rows, _) = cost_workloads(&spec, &cm)?;
        row(&mut md, label, &rows, &dnns, &calibrated, true)?;
    }
    Ok(md)
}

/// One table row: geomeans over the six validation DNNs and all seven, then per DNN
/// the throughput (or, with `efficiency`, the energy efficiency) vs ISAAC.
fn row(
    md: &mut String,
    label: &str,
    rows: &[EnergyRow],
    dnns: &[String],
    calibrated: &str,
    efficiency: bool,
) -> Result<()> {
    let raella: Vec<&EnergyRow> = rows.iter().filter(|r| r.arch == "raella").collect();
    let pick = |six: bool, g: &dyn Fn(&EnergyRow) -> Option<f64>| {
        let v: Vec<f64> = raella
            .iter()
            .filter(|r| !six || r.dnn != calibrated)
            .filter_map(|r| g(r))
            .collect();
        geomean(&v)
    };
    let per: Vec<String> = dnns
        .iter()
        .map(|d| {
            raella
                .iter()
                .find(|r| &r.dnn == d)
                .and_then(|r| {
                    if efficiency {
                        r.energy_efficiency_vs_isaac
                    } else {
                        r.throughput_vs_isaac
                    }
                })
                .map_or_else(|| "-".into(), |t| format!("{t:.2}"))
        })
        .collect();
    writeln!(
        *md,
        "| {label} | {:.2}x | {:.2}x | {:.2}x | {} |",
        pick(true, &|r| r.throughput_vs_isaac),
        pick(false, &|r| r.throughput_vs_isaac),
        pick(true, &|r| r.energy_efficiency_vs_isaac),
        per.join(" | ")
    )?;
    Ok(())
}
