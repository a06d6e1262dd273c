//! Writing a sweep's results: `results.csv`, `results.json`, `report.md`, the
//! per-layer statistics files in the RAELLA artifact's `KEY=VALUE` format, and
//! `timings.csv` (wall clock, the only non-deterministic file).
//!
//! Everything is written into a staging folder first and then renamed into
//! place ([`crate::output`]), so an interrupted or failed run leaves no
//! half-written result file. CSV files go through the CSV writer; text from
//! model files (layer names) and paths are escaped in Markdown ([`cell`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::names::file_component;

use crate::run::SweepResults;
use crate::spec::Spec;

/// The CSV columns, in order (the first twelve are the required ones).
pub const CSV_COLUMNS: [&str; 19] = [
    "model",
    "arch",
    "seed",
    "images",
    "top1",
    "top1_fp32",
    "top1_int8",
    "agreement_int8",
    "output_rel_err_int8",
    "in_range_fraction",
    "recovery_rate",
    "converts_per_mac",
    "exact_fraction",
    "agreement_fp32",
    "feature_cosine_int8",
    "feature_cosine_fp32",
    "pearson",
    "spearman",
    "weight_slicing",
];

fn csv_text(res: &SweepResults) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_COLUMNS)?;
    for r in &res.rows {
        let slicing = r
            .layers
            .iter()
            .map(|l| l.weight_slicing.clone())
            .collect::<Vec<_>>()
            .join(";");
        w.write_record([
            r.model.clone(),
            r.arch.clone(),
            r.seed.to_string(),
            r.images.to_string(),
            r.top1.map_or_else(String::new, |v| format!("{v:.6}")),
            r.top1_fp32.map_or_else(String::new, |v| format!("{v:.6}")),
            r.top1_int8.map_or_else(String::new, |v| format!("{v:.6}")),
            format!("{:.6}", r.agreement_int8),
            format!("{:.6e}", r.output_rel_err_int8),
            format!("{:.6}", r.in_range_fraction),
            format!("{:.6}", r.recovery_rate),
            format!("{:.6}", r.converts_per_mac),
            format!("{:.6}", r.exact_fraction),
            format!("{:.6}", r.agreement_fp32),
            format!("{:.6}", r.feature_cosine_int8),
            format!("{:.6}", r.feature_cosine_fp32),
            r.pearson.map_or_else(String::new, |v| format!("{v:.6}")),
            r.spearman.map_or_else(String::new, |v| format!("{v:.6}")),
            slicing,
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// The `energy.csv` columns (the first ten are the required ones).
pub const ENERGY_COLUMNS: [&str; 19] = [
    "dnn",
    "arch",
    "batch",
    "energy_mj",
    "energy_efficiency_vs_isaac",
    "throughput_vs_isaac",
    "area_mm2",
    "stats_source",
    "paper_efficiency_vs_isaac",
    "paper_throughput_vs_isaac",
    "fj_per_mac",
    "tops_per_w",
    "inferences_per_s",
    "tiles",
    "crossbars",
    "conversions_per_inference",
    "adc_pj_per_conversion",
    "digital_macs_per_inference",
    "digital_energy_mj",
];

fn opt(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| format!("{x:.4}"))
}

/// `timings.csv`, through the CSV writer (names are quoted as needed).
fn timings_csv(res: &SweepResults) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "model",
        "arch",
        "seed",
        "build_seconds",
        "images_per_second",
        "crossbar_share",
        "digital_share",
        "glue_share",
    ])?;
    let share = |v: Option<f64>| v.map_or_else(String::new, |x| format!("{x:.3}"));
    for x in &res.timings {
        w.write_record([
            x.model.clone(),
            x.arch.clone(),
            x.seed.to_string(),
            format!("{:.2}", x.build_seconds),
            format!("{:.3}", x.images_per_second),
            share(x.crossbar_share),
            share(x.digital_share),
            share(x.glue_share),
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

fn energy_csv(res: &SweepResults) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(ENERGY_COLUMNS)?;
    for r in &res.energy {
        w.write_record([
            r.dnn.clone(),
            r.arch.clone(),
            r.batch.to_string(),
            format!("{:.6}", r.energy_mj),
            opt(r.energy_efficiency_vs_isaac),
            opt(r.throughput_vs_isaac),
            format!("{:.3}", r.area_mm2),
            r.stats_source.clone(),
            opt(r.paper_efficiency_vs_isaac),
            opt(r.paper_throughput_vs_isaac),
            format!("{:.2}", r.fj_per_mac),
            format!("{:.3}", r.tops_per_w),
            format!("{:.2}", r.inferences_per_s),
            r.tiles.to_string(),
            r.crossbars.to_string(),
            format!("{:.1}", r.conversions_per_inference),
            format!("{:.4}", r.adc_pj_per_conversion),
            format!("{:.0}", r.digital_macs_per_inference),
            format!("{:.6}", r.digital_energy_mj),
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

fn layers_csv(res: &SweepResults) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = ["dnn", "arch", "layer", "energy_pj_per_inference"]
        .map(String::from)
        .to_vec();
    header.extend(
        raella_cost::Energy::default()
            .categories()
            .map(|c| format!("{}_pj", c.0)),
    );
    header.extend(
        [
            "crossbars",
            "replicas",
            "time_ns",
            "utilisation",
            "stats_source",
        ]
        .map(String::from),
    );
    w.write_record(&header)?;
    for r in &res.energy {
        for l in &r.layers {
            let mut rec = vec![
                r.dnn.clone(),
                r.arch.clone(),
                l.layer.clone(),
                format!("{:.3}", l.energy_pj),
            ];
            rec.extend(l.breakdown.categories().map(|c| format!("{:.3}", c.1)));
            rec.extend([
                l.crossbars.to_string(),
                l.replicas.to_string(),
                format!("{:.1}", l.time_ns),
                format!("{:.4}", l.utilisation),
                l.stats_source.clone(),
            ]);
            w.write_record(&rec)?;
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

fn breakdown_csv(res: &SweepResults) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["dnn", "arch", "batch", "category", "energy_mj", "share"])?;
    for r in &res.energy {
        let total = r.breakdown.total_pj().max(1e-30);
        for (cat, pj) in r.breakdown.categories() {
            w.write_record([
                r.dnn.clone(),
                r.arch.clone(),
                r.batch.to_string(),
                cat.to_string(),
                format!("{:.6}", pj * 1e-9),
                format!("{:.4}", pj / total),
            ])?;
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

fn energy_section(md: &mut String, spec: &Spec, res: &SweepResults) -> anyhow::Result<()> {
    if res.energy.is_empty() {
        return Ok(());
    }
    writeln!(
        md,
        "## Energy, area and throughput
"
    )?;
    writeln!(
        md,
        "Energy per batch from the cost model (`fixtures/cost/`): event counts from the simulation of this run \
        (`stats_source = simulation`) or, for workloads given as layer shapes, from typical statistics (`typical`). \
        Throughput is pipelined inferences per second at iso-area with the chip of `{}` (`area_mm2`). \
        Every design is costed as configured in this spec (its ADC bits, rows, cells, slicing, ...).\n",
        spec.cost
            .as_ref()
            .map_or("isaac8b", |c| c.iso_area_reference.name.as_str())
    )?;
    writeln!(
        md,
        "| DNN | design | batch | energy (mJ) | paper (mJ) | diff | fJ / MAC | TOPS/W | efficiency vs ISAAC | paper | diff | throughput vs ISAAC | paper | diff | area (mm^2) | ADC share of energy | source |"
    )?;
    writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    let diff = |ours: Option<f64>, paper: Option<f64>| match (ours, paper) {
        (Some(o), Some(p)) => format!("{:+.0}%", (o / p - 1.0) * 100.0),
        _ => String::new(),
    };
    for r in &res.energy {
        writeln!(
            md,
            "| {} | {} | {} | {:.4} | {} | {} | {:.1} | {:.2} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0}% | {} |",
            cell(&r.dnn),
            cell(&r.arch),
            r.batch,
            r.energy_mj,
            opt(r.paper_energy_mj),
            diff(Some(r.energy_mj), r.paper_energy_mj),
            r.fj_per_mac,
            r.tops_per_w,
            opt(r.energy_efficiency_vs_isaac),
            opt(r.paper_efficiency_vs_isaac),
            diff(r.energy_efficiency_vs_isaac, r.paper_efficiency_vs_isaac),
            opt(r.throughput_vs_isaac),
            opt(r.paper_throughput_vs_isaac),
            diff(r.throughput_vs_isaac, r.paper_throughput_vs_isaac),
            r.area_mm2,
            r.breakdown.adc_pj / r.breakdown.total_pj().max(1e-30) * 100.0,
            r.stats_source
        )?;
    }
    let raella: Vec<&crate::cost::EnergyRow> = res
        .energy
        .iter()
        .filter(|r| r.paper_efficiency_vs_isaac.is_some())
        .collect();
    if !raella.is_empty() {
        let geo = |rows: &[&crate::cost::EnergyRow],
                   f: &dyn Fn(&crate::cost::EnergyRow) -> Option<f64>| {
            let v: Vec<f64> = rows.iter().filter_map(|r| f(r)).collect();
            (v.iter().map(|x| x.ln()).sum::<f64>() / v.len().max(1) as f64).exp()
        };
        let line = |rows: &[&crate::cost::EnergyRow]| {
            format!(
                "efficiency vs ISAAC ours {:.2}x, paper {:.2}x; throughput ours {:.2}x, paper {:.2}x",
                geo(rows, &|r| r.energy_efficiency_vs_isaac),
                geo(rows, &|r| r.paper_efficiency_vs_isaac),
                geo(rows, &|r| r.throughput_vs_isaac),
                geo(rows, &|r| r.paper_throughput_vs_isaac)
            )
        };
        let calibrated = spec
            .cost
            .as_ref()
            .and_then(|c| c.paper_ablation.as_ref())
            .and_then(|_| res.calibrated_on.clone());
        match calibrated {
            Some(c) if raella.iter().any(|r| r.dnn == c) => {
                let validation: Vec<_> = raella.iter().copied().filter(|r| r.dnn != c).collect();
                writeln!(
                    md,
                    "\nGeomean over the {} workloads not used for calibration (the cost model's two \
                     coefficients are fitted on `{c}` only): {}. Over all {}, `{c}` included: {}.\n",
                    validation.len(),
                    line(&validation),
                    raella.len(),
                    line(&raella)
                )?;
            }
            _ => writeln!(
                md,
                "\nGeomean over the workloads with published figures: {}.\n",
                line(&raella)
            )?,
        }
    }
    if !res.not_costed.is_empty() {
        writeln!(
            md,
            "\nNot costed on shape-only workloads (typical statistics describe a design as measured; \
            a design that changes a simulation knob needs its own entry in the typical-statistics file):\n"
        )?;
        for (what, why) in &res.not_costed {
            writeln!(md, "- {what}: {why}")?;
        }
        writeln!(md)?;
    }
    Ok(())
}

/// Text for a Markdown table cell or code span: `|` escaped, backticks and
/// line breaks (and other control characters) replaced, so a name from a model
/// file cannot break a table or a paragraph.
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '`' => out.push('\''),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn stats_file(l: &crate::run::LayerRow) -> String {
    format!(
        "AVERAGE_WEIGHT_VALUE={:.6}\nAVERAGE_INPUT_VALUE={:.6}\nADC_ACTION_SHARE={:.6}\nCIM_UNITS_PER_WEIGHT={}\nSPECULATION_ENABLED={}\n",
        l.average_cell_value,
        l.average_input_pulses,
        l.adc_action_share,
        l.cim_units_per_weight,
        u8::from(l.speculation)
    )
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

fn opct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a (unlabelled)".to_string(), pct)
}

fn pp(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:+.2}", (a - b) * 100.0),
        _ => "n/a".into(),
    }
}

/// Mean, sample standard deviation (0 for one value), least and greatest.
pub(crate) fn spread(v: &[f64]) -> (f64, f64, f64, f64) {
    #[allow(clippy::cast_precision_loss)]
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, sd, lo, hi)
}

/// With more than one seed, a row per design of the model: each fidelity
/// figure's mean, standard deviation and range over the seeds (what the
/// seed draws: programming errors, stuck devices, ADC instances and read
/// noise; an ideal design gives the same figure for every seed).
fn seeds_section(
    md: &mut String,
    spec: &Spec,
    res: &SweepResults,
    model: &str,
) -> anyhow::Result<()> {
    if spec.seeds.len() < 2 {
        return Ok(());
    }
    let rows: Vec<_> = res.rows.iter().filter(|r| r.model == model).collect();
    let mut designs: Vec<&str> = Vec::new();
    for r in &rows {
        if !designs.contains(&r.arch.as_str()) {
            designs.push(&r.arch);
        }
    }
    let labelled = rows.iter().any(|r| r.top1.is_some());
    let text = rows.iter().any(|r| r.pearson.is_some());
    let figure_name = if text {
        "Lee-50 Pearson"
    } else if labelled {
        "top-1"
    } else {
        "agreement with 8-bit ref"
    };
    writeln!(
        md,
        "\n### Across seeds ({} seeds)\n\nMean +- standard deviation [least, greatest] over the seeds.\n",
        spec.seeds.len()
    )?;
    writeln!(
        md,
        "| design | seeds | {figure_name} | output rel. error vs 8-bit | feature cosine vs 8-bit |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    let fmt = |v: &[f64], scale: f64, digits: usize| -> String {
        let (m, sd, lo, hi) = spread(v);
        format!(
            "{:.d$} +- {:.d$} [{:.d$}, {:.d$}]",
            m * scale,
            sd * scale,
            lo * scale,
            hi * scale,
            d = digits
        )
    };
    for d in designs {
        let of = crate::plots::seed_rows(spec, res, model, d);
        let figure: Vec<f64> = of
            .iter()
            .map(|r| {
                if text {
                    r.pearson.unwrap_or(f64::NAN)
                } else if labelled {
                    r.top1.unwrap_or(f64::NAN)
                } else {
                    r.agreement_int8
                }
            })
            .collect();
        let errs: Vec<f64> = of.iter().map(|r| r.output_rel_err_int8).collect();
        let cos: Vec<f64> = of.iter().map(|r| r.feature_cosine_int8).collect();
        let figure = if text {
            fmt(&figure, 1.0, 4)
        } else {
            fmt(&figure, 100.0, 2)
        };
        let errs = {
            let (m, sd, lo, hi) = spread(&errs);
            format!("{m:.2e} +- {sd:.1e} [{lo:.2e}, {hi:.2e}]")
        };
        writeln!(
            md,
            "| {} | {} | {figure} | {errs} | {} |",
            cell(d),
            of.len(),
            fmt(&cos, 1.0, 6)
        )?;
    }
    Ok(())
}

/// Per non-ideality knob with a curve (`plots::STRENGTHS`), a row per
/// strength: each base design's output error vs the 8-bit reference and its
/// fidelity (top-1, else agreement with the 8-bit reference; Lee-50 Pearson
/// for text models); with several seeds their mean +- standard deviation.
/// Nothing when the spec has no such curve.
fn robustness_section(
    md: &mut String,
    spec: &Spec,
    res: &SweepResults,
    model: &str,
) -> anyhow::Result<()> {
    use crate::plots::{ROBUSTNESS_BASES, STRENGTHS, curve_points};
    let mut rows: Vec<String> = Vec::new();
    let mut seeds = 0;
    for strength in &STRENGTHS {
        let per_base: Vec<Vec<crate::plots::CurvePoint>> = ROBUSTNESS_BASES
            .iter()
            .map(|b| curve_points(spec, res, model, b, strength))
            .collect();
        if per_base.iter().all(|p| p.len() < 2) {
            continue;
        }
        let mut xs: Vec<f64> = per_base.iter().flatten().map(|p| p.x).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        for x in xs.into_iter().filter(|&x| x != 0.0) {
            let mut line = format!("| `{}` | {} = {x:.4} |", strength.name, strength.label);
            for pts in &per_base {
                match pts.iter().find(|p| p.x == x) {
                    Some(p) if p.rows.len() > 1 => {
                        seeds = seeds.max(p.rows.len());
                        write!(
                            line,
                            " {:.2e} +- {:.1e} | {:.4} +- {:.4} |",
                            p.error.0, p.error.1, p.fidelity.0, p.fidelity.1
                        )?;
                    }
                    Some(p) => write!(line, " {:.2e} | {:.4} |", p.error.0, p.fidelity.0)?,
                    None => line.push_str(" - | - |"),
                }
            }
            rows.push(line);
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let over = if seeds > 1 {
        format!("mean +- standard deviation over {seeds} seeds")
    } else {
        "first seed".to_string()
    };
    writeln!(
        md,
        "\n### Robustness ({over}; `docs/DEVICES.md`)\n\nOne non-ideality at a time on each design; fidelity is the Lee-50 Pearson (text), top-1 (labelled images) or agreement with the 8-bit reference. The unperturbed designs are in the table above.\n"
    )?;
    let mut head = String::from("| knob | strength |");
    let mut rule = String::from("|---|---|");
    for b in ROBUSTNESS_BASES {
        write!(head, " {b} output error | {b} fidelity |")?;
        rule.push_str("---|---|");
    }
    writeln!(md, "{head}\n{rule}")?;
    for r in rows {
        writeln!(md, "{r}")?;
    }
    Ok(())
}

/// A row per design and crossbar layer of the model. With several seeds the
/// activity figures (in-range, recovery rate, conversions per MAC, ADC
/// share, average cell value and input pulses) are means over the seeds and
/// the layer's own error is mean +- standard deviation; the layer's shape,
/// slicing and crossbars are the first seed's (the seed changes none of them).
fn per_layer_section(
    md: &mut String,
    spec: &Spec,
    res: &SweepResults,
    model: &str,
) -> anyhow::Result<()> {
    let several = spec.seeds.len() > 1;
    if several {
        writeln!(
            md,
            "\n### Per layer (mean over {} seeds; layer rel. error mean +- standard deviation)\n",
            spec.seeds.len()
        )?;
    } else {
        writeln!(md, "\n### Per layer (first seed)\n")?;
    }
    writeln!(
        md,
        "| design | layer | matrix | weight slicing | crossbars | utilisation | vectors / image | in-range | recovery rate | converts / MAC | ADC share vs 1b | avg cell value | avg input pulses | layer rel. error |"
    )?;
    writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    let first = spec.seeds[0];
    for r in res
        .rows
        .iter()
        .filter(|r| r.model == model && r.seed == first)
    {
        let seeds = crate::plots::seed_rows(spec, res, model, &r.arch);
        for (i, l) in r.layers.iter().enumerate() {
            let same: Vec<&crate::run::LayerRow> = seeds
                .iter()
                .filter_map(|o| o.layers.get(i).filter(|x| x.layer == l.layer))
                .collect();
            let mean = |f: fn(&crate::run::LayerRow) -> f64| {
                spread(&same.iter().map(|x| f(x)).collect::<Vec<f64>>()).0
            };
            let error = if several {
                let (m, sd, _, _) =
                    spread(&same.iter().map(|x| x.layer_rel_err).collect::<Vec<f64>>());
                format!("{m:.2e} +- {sd:.1e}")
            } else {
                format!("{:.2e}", l.layer_rel_err)
            };
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.4} | {:.0} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3} | {:.3} | {error} |",
                cell(&r.arch),
                cell(&l.layer),
                l.matrix,
                l.weight_slicing,
                l.crossbars,
                l.utilisation,
                l.vectors_per_image,
                mean(|x| x.in_range_fraction),
                mean(|x| x.recovery_rate),
                mean(|x| x.converts_per_mac),
                mean(|x| x.adc_action_share),
                mean(|x| x.average_cell_value),
                mean(|x| x.average_input_pulses),
            )?;
        }
    }
    writeln!(md)?;
    Ok(())
}

fn report_text(spec: &Spec, res: &SweepResults) -> anyhow::Result<String> {
    let mut md = String::new();
    writeln!(md, "# Sweep `{}`\n", cell(&spec.name))?;
    if !spec.description.is_empty() {
        writeln!(md, "{}\n", spec.description)?;
    }
    writeln!(
        md,
        "Spec: `{}`; seeds {:?}. Every figure below is measured by this run; none is copied from the paper. \
        Weights are only quantised (int8 per output channel) and encoded, never retrained.\n",
        cell(&spec.path.display().to_string()),
        spec.seeds
    )?;
    for (m, ms) in spec.models.iter().zip(&res.models) {
        writeln!(md, "## Model `{}`\n", cell(&m.name))?;
        if let Some(b) = &m.text {
            writeln!(
                md,
                "- Text encoder (ONNX): `{}`; tokenizer `{}` (truncation at {} tokens); Lee-50 documents `{}`; calibration texts `{}`",
                cell(&m.onnx.display().to_string()),
                cell(&b.tokenizer.display().to_string()),
                b.max_tokens,
                cell(&b.lee50.display().to_string()),
                cell(&b.texts.display().to_string())
            )?;
            writeln!(
                md,
                "- Split: calibration texts {}..{} (activation scales, adaptive slicing), Lee-50 documents {}..{} ({} documents, every pair among them scored)",
                ms.calibration.start,
                ms.calibration.start + ms.calibration.count,
                ms.evaluation.start,
                ms.evaluation.start + ms.evaluation.count,
                ms.evaluation.count
            )?;
            writeln!(
                md,
                "- For documents, `top-1` does not apply; agreement is the share of documents whose nearest neighbour \
                (embedding cosine) is the reference's; output error and feature cosine are on the embeddings."
            )?;
        } else {
            writeln!(
                md,
                "- ONNX: `{}`; images `{}`, labels `{}`",
                cell(&m.onnx.display().to_string()),
                cell(&m.images.display().to_string()),
                match (&m.labels, m.class_folders) {
                    (_, true) => "(class sub-folders)".to_string(),
                    (Some(l), false) => cell(&l.display().to_string()),
                    (None, false) => "(none: unlabelled photographs)".to_string(),
                }
            )?;
            writeln!(
                md,
                "- Preprocessing: `x = (pixel * {} - mean) / std`, mean {:?}, std {:?}",
                m.scale, m.mean, m.std
            )?;
            writeln!(
                md,
                "- Split: calibration images {}..{} (activation scales; the first {} also calibrate adaptive slicing), evaluation images {}..{} ({} images); disjoint",
                ms.calibration.start,
                ms.calibration.start + ms.calibration.count,
                ms.calibration.count.min(crate::run::AWS_CALIBRATION_IMAGES),
                ms.evaluation.start,
                ms.evaluation.start + ms.evaluation.count,
                ms.evaluation.count
            )?;
        }
        let per = if m.text.is_some() {
            "document (mean)"
        } else {
            "image"
        };
        writeln!(
            md,
            "- Crossbar layers: {}; {} MACs per {per}",
            cell(&ms.layers.join("; ")),
            ms.macs_per_image,
        )?;
        if ms.digital_macs_per_image > 0 {
            writeln!(
                md,
                "- Digital matrix products (activation by activation, e.g. attention): {} MACs per {per}, costed apart (`digital_energy_mj` in `energy.csv`)",
                ms.digital_macs_per_image
            )?;
        }
        if m.text.is_some() {
            writeln!(
                md,
                "- References on the evaluation documents: the 8-bit reference's nearest-neighbour agreement with float32 {}\n",
                pct(ms.agreement_int8_fp32)
            )?;
        } else {
            writeln!(
                md,
                "- References on the evaluation images: **float32 top-1 {}**, **8-bit digital top-1 {}** (agreement with float32 {})\n",
                opct(ms.top1_fp32),
                opct(ms.top1_int8),
                pct(ms.agreement_int8_fp32)
            )?;
        }
        writeln!(
            md,
            "- Penultimate features (embeddings): mean cosine of the 8-bit reference's to float32's {:.6}\n",
            ms.feature_cosine_int8_fp32
        )?;
        if let Some(c) = &ms.correlations {
            writeln!(
                md,
                "- Lee-50 correlation of embedding cosine with the human ratings: **float32 Pearson {:.4}, Spearman {:.4}**; \
                **8-bit digital Pearson {:.4}, Spearman {:.4}**\n",
                c.pearson_fp32, c.spearman_fp32, c.pearson_int8, c.spearman_int8
            )?;
            writeln!(
                md,
                "| design | seed | Pearson | Spearman | embedding cosine vs 8-bit | vs float32 |"
            )?;
            writeln!(md, "|---|---|---|---|---|---|")?;
            for r in res.rows.iter().filter(|r| r.model == m.name) {
                writeln!(
                    md,
                    "| {} | {} | {} | {} | {:.6} | {:.6} |",
                    cell(&r.arch),
                    r.seed,
                    r.pearson
                        .map_or_else(|| "n/a".into(), |v| format!("{v:.4}")),
                    r.spearman
                        .map_or_else(|| "n/a".into(), |v| format!("{v:.4}")),
                    r.feature_cosine_int8,
                    r.feature_cosine_fp32
                )?;
            }
            writeln!(md)?;
        }
        if m.name.contains("mnist") {
            writeln!(
                md,
                "> These MNIST digits come from MNIST's *training* split, which the model was trained on, so absolute \
                accuracy is optimistic. The meaningful figures are the drop against the float32 and 8-bit references on \
                the same images, the agreement with them, and the output error.\n"
            )?;
        }
        writeln!(
            md,
            "| design | seed | top-1 | vs 8-bit ref (pp) | vs float32 (pp) | agreement with 8-bit ref | output rel. error vs 8-bit | feature cosine vs 8-bit | in-range column sums | exact column-slices | recovery rate | converts / MAC |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
        for r in res.rows.iter().filter(|r| r.model == m.name) {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {:.2e} | {:.6} | {:.4} | {:.4} | {:.4} | {:.4} |",
                cell(&r.arch),
                r.seed,
                opct(r.top1),
                pp(r.top1, r.top1_int8),
                pp(r.top1, r.top1_fp32),
                pct(r.agreement_int8),
                r.output_rel_err_int8,
                r.feature_cosine_int8,
                r.in_range_fraction,
                r.exact_fraction,
                r.recovery_rate,
                r.converts_per_mac
            )?;
        }
        seeds_section(&mut md, spec, res, &m.name)?;
        robustness_section(&mut md, spec, res, &m.name)?;
        per_layer_section(&mut md, spec, res, &m.name)?;
    }
    energy_section(&mut md, spec, res)?;
    writeln!(md, "## Designs\n")?;
    for a in &spec.archs {
        let k = &a.knobs;
        writeln!(
            md,
            "- `{}`: {} [{}x{} {}, {}b/device, {}{}, weights {}{}, inputs {} {}{}, {}-bit {} ADC{}]",
            cell(&a.name),
            cell(k.description.as_deref().unwrap_or_default()),
            k.rows.unwrap_or(0),
            k.cols.unwrap_or(0),
            k.cell.clone().unwrap_or_default(),
            k.bits_per_device.unwrap_or(0),
            k.encoding.clone().unwrap_or_default(),
            if k.encoding.as_deref() == Some("center_offset") {
                format!(" ({})", k.center_rule.clone().unwrap_or_default())
            } else {
                String::new()
            },
            k.weight_slicing.clone().unwrap_or_default(),
            if k.adaptive == Some(true) {
                format!(
                    " -> adaptive {:?} budget {} (last layer {})",
                    k.adaptive_candidates.clone().unwrap_or_default(),
                    k.adaptive_budget
                        .map_or_else(|| "auto".to_string(), |b| b.to_string()),
                    k.last_layer_slicing.clone().unwrap_or_default()
                )
            } else {
                String::new()
            },
            k.input.clone().unwrap_or_default(),
            k.input_slicing.clone().unwrap_or_default(),
            if k.input.as_deref() == Some("speculative") {
                if k.recovery == Some(true) {
                    " + recovery"
                } else {
                    " (no recovery)"
                }
            } else {
                ""
            },
            k.adc_bits.unwrap_or(0),
            if k.adc_signed == Some(true) {
                "signed"
            } else {
                "unsigned"
            },
            if k.noise_e.unwrap_or(0.0) > 0.0 {
                format!(", read noise E = {}", k.noise_e.unwrap_or(0.0))
            } else {
                String::new()
            }
        )?;
    }
    writeln!(
        md,
        "\nFiles: `results.csv`, `results.json`, per-layer statistics in `stats/<model>/<design>/<layer>.txt` \
        (RAELLA artifact `KEY=VALUE` format, first seed), wall-clock throughput in `timings.csv`."
    )?;
    Ok(md)
}

/// Writes all result files into `out` (created if needed) through
/// [`crate::output::write_output`]: the slots a previous sweep wrote there are
/// replaced, and on any failure `out` is left as it was.
///
/// # Errors
/// The output folder's refusals (see [`crate::check_output_folder`]) or a
/// file-system error, naming the path.
pub fn write_results(spec: &Spec, res: &SweepResults, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<(PathBuf, String)> = vec![
        (PathBuf::from("results.csv"), csv_text(res)?),
        (
            PathBuf::from("results.json"),
            serde_json::to_string_pretty(&serde_json::json!({
                "spec": spec.name, "spec_path": spec.path, "spec_sha256": crate::merge::spec_hash(spec)?,
                "models": res.models, "rows": res.rows,
            }))? + "\n",
        ),
        (PathBuf::from("report.md"), report_text(spec, res)?),
    ];
    let plots = crate::plots::plots(spec, res)?;
    if !plots.is_empty() {
        let mut md = String::from("\n## Plots\n\n");
        for (path, title, _) in &plots {
            writeln!(md, "- [{title}]({})", path.display())?;
        }
        files[2].1.push_str(&md);
    }
    for (path, _, svg) in plots {
        files.push((path, svg));
    }
    if !res.energy.is_empty() {
        files.push((PathBuf::from("energy.csv"), energy_csv(res)?));
        files.push((PathBuf::from("energy_breakdown.csv"), breakdown_csv(res)?));
        files.push((PathBuf::from("energy_layers.csv"), layers_csv(res)?));
    }
    files.push((PathBuf::from("timings.csv"), timings_csv(res)?));
    let first = spec.seeds[0];
    for r in res.rows.iter().filter(|r| r.seed == first) {
        for l in &r.layers {
            files.push((
                PathBuf::from("stats")
                    .join(file_component(&r.model))
                    .join(file_component(&r.arch))
                    .join(format!("{}.txt", file_component(&l.layer))),
                stats_file(l),
            ));
        }
    }
    Ok(crate::output::write_output(out, &files)?)
}
