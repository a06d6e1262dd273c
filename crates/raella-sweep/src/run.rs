//! Running a sweep: per model, the references once, then every design x seed.

use std::time::Instant;

use ndarray::{Array2, ArrayView2, s};
use raella_network::{
    CrossbarBackend, ExactBackend, IdxDataset, QuantModel, argmax_rows, eval_float, eval_quant,
    import_onnx_file,
};
use raella_runtime::LayerStats;
use serde::Serialize;

use crate::spec::{ImageRange, ModelSpec, Spec};

/// Calibration images whose crossbar-layer inputs calibrate adaptive slicing
/// and the `search` center rule (the activation scales use all of them).
pub const AWS_CALIBRATION_IMAGES: usize = 32;

/// One crossbar layer's statistics in one result row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerRow {
    /// Node name.
    pub layer: String,
    /// `Conv` or `Linear`.
    pub kind: String,
    /// Matrix shape `outputs x inputs` (per group) and groups.
    pub matrix: String,
    /// Weight slicing used.
    pub weight_slicing: String,
    /// Input vectors per image.
    pub vectors_per_image: f64,
    /// Share of column sums inside the ADC range.
    pub in_range_fraction: f64,
    /// Share of column-slices that contributed their exact value.
    pub exact_fraction: f64,
    /// Speculation failures per speculative conversion.
    pub recovery_rate: f64,
    /// ADC conversions per 8b x 8b MAC.
    pub converts_per_mac: f64,
    /// Conversions relative to 1-bit input slicing on the same mapping.
    pub adc_action_share: f64,
    /// Average normalised cell value seen by reads.
    pub average_cell_value: f64,
    /// Average normalised input pulses per row drive.
    pub average_input_pulses: f64,
    /// Columns (weight slices) per weight.
    pub cim_units_per_weight: usize,
    /// Speculation on.
    pub speculation: bool,
    /// Crossbars per group.
    pub crossbars: usize,
    /// Cell utilisation of those crossbars.
    pub utilisation: f64,
    /// Groups of the layer.
    pub groups: usize,
    /// Rows of one group's matrix.
    pub rows: usize,
    /// Filters of one group.
    pub filters: usize,
    /// Input passes (2 for signed inputs).
    pub passes: f64,
    /// Input feature-map elements per image.
    pub in_elems: f64,
    /// Output feature-map elements per image.
    pub out_elems: f64,
    /// ADC conversions per image.
    pub conversions_per_image: f64,
    /// Row drives per image.
    pub row_drives_per_image: f64,
    /// Input pulses per image.
    pub input_pulses_per_image: f64,
    /// Pulses x normalised level over read cells, per image.
    pub cell_charge_per_image: f64,
}

/// One model x design x seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRow {
    /// Model name.
    pub model: String,
    /// Design name.
    pub arch: String,
    /// Seed.
    pub seed: u64,
    /// Evaluation images.
    pub images: usize,
    /// Top-1 accuracy of the design.
    pub top1: f64,
    /// Top-1 of the float32 reference.
    pub top1_fp32: f64,
    /// Top-1 of the 8-bit digital reference.
    pub top1_int8: f64,
    /// Share of images whose top-1 class equals the 8-bit reference's.
    pub agreement_int8: f64,
    /// Mean over images of `||y - y_int8|| / ||y_int8||` on the final outputs.
    pub output_rel_err_int8: f64,
    /// Share of column sums inside the ADC range (all layers).
    pub in_range_fraction: f64,
    /// Speculation failures per speculative conversion (0 without speculation).
    pub recovery_rate: f64,
    /// ADC conversions per 8b x 8b MAC (all layers, per inference).
    pub converts_per_mac: f64,
    /// Share of column-slices contributing their exact value (after recovery).
    pub exact_fraction: f64,
    /// Share of images whose top-1 equals the float32 reference's.
    pub agreement_fp32: f64,
    /// Per-layer statistics.
    pub layers: Vec<LayerRow>,
}

/// Per model: what is shared by all designs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSummary {
    /// Model name.
    pub model: String,
    /// Calibration images.
    pub calibration: ImageRange,
    /// Evaluation images.
    pub evaluation: ImageRange,
    /// Crossbar layers (`name: outputs x inputs [x groups]`).
    pub layers: Vec<String>,
    /// MACs per image on crossbars.
    pub macs_per_image: u64,
    /// float32 top-1.
    pub top1_fp32: f64,
    /// 8-bit digital top-1.
    pub top1_int8: f64,
    /// Agreement of the 8-bit reference with float32.
    pub agreement_int8_fp32: f64,
}

/// Everything a sweep produced. `timings` are wall-clock and not deterministic.
#[derive(Debug, Clone)]
pub struct SweepResults {
    /// Per model.
    pub models: Vec<ModelSummary>,
    /// Per model x design x seed.
    pub rows: Vec<ResultRow>,
    /// `(model, arch, seed, images per second)`.
    pub timings: Vec<(String, String, u64, f64)>,
    /// Energy, area and throughput per workload/model x design (when the spec has `[cost]`).
    pub energy: Vec<crate::cost::EnergyRow>,
}

/// Loads and preprocesses a model's images: `x = (pixel * scale - mean[c]) / std[c]`.
///
/// # Errors
/// Unreadable files, a range past the data, or a channel count mismatch.
pub fn load_images(
    m: &ModelSpec,
    data: &IdxDataset,
    range: ImageRange,
    channels: usize,
) -> anyhow::Result<(Array2<f32>, Vec<u8>)> {
    let n = data.images.nrows();
    anyhow::ensure!(
        range.start + range.count <= n,
        "model \"{}\": images {}..{} requested, {} has {n} images",
        m.name,
        range.start,
        range.start + range.count,
        m.images.display()
    );
    let per = data.images.ncols();
    anyhow::ensure!(
        channels > 0 && per.is_multiple_of(channels),
        "model \"{}\": {per} pixels per image do not split into {channels} channels",
        m.name
    );
    let plane = per / channels;
    let pick = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
    for (f, v) in [("mean", &m.mean), ("std", &m.std)] {
        anyhow::ensure!(
            v.len() == 1 || v.len() == channels,
            "model \"{}\": `{f}` has {} values for {channels} channels",
            m.name,
            v.len()
        );
    }
    let raw = data
        .images
        .slice(s![range.start..range.start + range.count, ..]);
    let x = Array2::from_shape_fn(raw.dim(), |(i, j)| {
        let c = j / plane;
        (f32::from(raw[[i, j]]) * m.scale - pick(&m.mean, c)) / pick(&m.std, c)
    });
    Ok((
        x,
        data.labels[range.start..range.start + range.count].to_vec(),
    ))
}

fn accuracy(pred: &[usize], labels: &[u8]) -> f64 {
    let ok = pred
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == usize::from(**l))
        .count();
    ok as f64 / pred.len().max(1) as f64
}

fn agreement(a: &[usize], b: &[usize]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

fn mean_rel_err(y: ArrayView2<'_, f32>, reference: ArrayView2<'_, f32>) -> f64 {
    let mut total = 0.0;
    for (a, b) in y.rows().into_iter().zip(reference.rows()) {
        let num: f64 = a
            .iter()
            .zip(b)
            .map(|(p, q)| f64::from(p - q).powi(2))
            .sum::<f64>()
            .sqrt();
        let den: f64 = b.iter().map(|q| f64::from(*q).powi(2)).sum::<f64>().sqrt();
        total += if den > 0.0 {
            num / den
        } else if num > 0.0 {
            1.0
        } else {
            0.0
        };
    }
    total / y.nrows().max(1) as f64
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Runs the whole sweep. `progress` is told each finished point.
///
/// # Errors
/// Unreadable models or data, or a model the importer rejects. Specs are
/// validated before anything runs.
pub fn run(spec: &Spec, mut progress: impl FnMut(&str)) -> anyhow::Result<SweepResults> {
    let mut out = SweepResults {
        models: vec![],
        rows: vec![],
        timings: vec![],
        energy: vec![],
    };
    let cost_model = spec
        .cost
        .as_ref()
        .map(crate::cost::CostModel::load)
        .transpose()?;
    if let Some(cm) = &cost_model {
        for w in &spec.workloads {
            raella_cost::Workload::load(&w.file)?;
        }
        for a in &spec.archs {
            if let Some((n, _)) = cm.arch_for(a) {
                anyhow::ensure!(
                    spec.workloads.is_empty() || cm.typical.contains_key(&n),
                    "{}: no typical statistics for design `{n}`",
                    spec.cost
                        .as_ref()
                        .map_or_else(String::new, |c| c.typical.display().to_string())
                );
            }
        }
    }
    // Load and check every model and data set first, so bad input fails before any work.
    let mut loaded = Vec::new();
    for m in &spec.models {
        let graph = import_onnx_file(&m.onnx)?;
        let data = IdxDataset::load(&m.images, &m.labels)?;
        let in_shape = graph.tensors[graph.input].shape.clone();
        let channels = if in_shape.len() == 3 { in_shape[0] } else { 1 };
        anyhow::ensure!(
            data.images.ncols() == graph.numel(graph.input),
            "model \"{}\": images of {} ({:?}) do not fit the input {:?} of {}",
            m.name,
            m.images.display(),
            data.image_dims,
            in_shape,
            m.onnx.display()
        );
        let (cal, _) = load_images(m, &data, m.calibration, channels)?;
        let (eval, labels) = load_images(m, &data, m.evaluation, channels)?;
        loaded.push((graph, cal, eval, labels));
    }
    for (m, (graph, cal, eval, labels)) in spec.models.iter().zip(loaded) {
        progress(&format!(
            "{}: references on {} images",
            m.name,
            eval.nrows()
        ));
        let float = eval_float(&graph, eval.view())?;
        let model = QuantModel::calibrate(graph, cal.view())?;
        let int8 = eval_quant(&model, &ExactBackend::new(&model), eval.view())?;
        let (pf, pi) = (argmax_rows(float.view()), argmax_rows(int8.outputs.view()));
        let (top1_fp32, top1_int8) = (accuracy(&pf, &labels), accuracy(&pi, &labels));
        let ncap = cal.nrows().min(AWS_CALIBRATION_IMAGES);
        let captured = model.capture_inputs(cal.slice(s![..ncap, ..]).to_owned())?;
        let layer_desc: Vec<String> = model
            .layers
            .iter()
            .map(|l| {
                let w = &l.groups[0].weights;
                let g = if l.groups.len() > 1 {
                    format!(" x {} groups", l.groups.len())
                } else {
                    String::new()
                };
                format!("{}: {} x {}{g}", l.name, w.nrows(), w.ncols())
            })
            .collect();
        out.models.push(ModelSummary {
            model: m.name.clone(),
            calibration: m.calibration,
            evaluation: m.evaluation,
            layers: layer_desc,
            macs_per_image: model.graph.macs_per_image(),
            top1_fp32,
            top1_int8,
            agreement_int8_fp32: agreement(&pi, &pf),
        });
        for arch in &spec.archs {
            let cfg = arch.config();
            for &seed in &spec.seeds {
                let t0 = Instant::now();
                let backend = CrossbarBackend::build(&model, &cfg, &captured, seed)?;
                let ev = eval_quant(&model, &backend, eval.view())?;
                let secs = t0.elapsed().as_secs_f64();
                let pred = argmax_rows(ev.outputs.view());
                let mut total = LayerStats::default();
                let images = eval.nrows().max(1) as f64;
                let mut layers = Vec::new();
                for (l, (ql, st)) in model.layers.iter().zip(&ev.layer_stats).enumerate() {
                    let st = st.clone().unwrap_or_default();
                    total += &st;
                    let pl = &backend.layers()[l];
                    let ms = pl[0].mapped().stats();
                    let slices = pl
                        .iter()
                        .map(|p| p.mapped().weight_slicing().len())
                        .max()
                        .unwrap_or(0);
                    let ns = cfg.run.input.slicing().len() as f64;
                    let w = &ql.groups[0].weights;
                    layers.push(LayerRow {
                        layer: ql.name.clone(),
                        kind: model.graph.nodes[ql.node].op.kind().to_string(),
                        matrix: format!(
                            "{} x {}{}",
                            w.nrows(),
                            w.ncols(),
                            if ql.groups.len() > 1 {
                                format!(" x {}", ql.groups.len())
                            } else {
                                String::new()
                            }
                        ),
                        weight_slicing: backend.slicings()[l].clone(),
                        vectors_per_image: st.vectors as f64 / eval.nrows().max(1) as f64,
                        in_range_fraction: st.in_range_fraction(),
                        exact_fraction: st.exact_fraction(),
                        recovery_rate: st.recovery_rate(),
                        converts_per_mac: st.converts_per_mac(),
                        adc_action_share: if st.column_sums == 0 {
                            0.0
                        } else {
                            st.activity.conversions as f64 / (st.column_sums as f64 * 8.0 / ns)
                        },
                        average_cell_value: st.average_cell_value(),
                        average_input_pulses: st.average_input_pulses(),
                        cim_units_per_weight: slices,
                        speculation: arch.speculative(),
                        crossbars: ms.crossbars,
                        utilisation: ms.utilisation,
                        groups: ql.groups.len(),
                        rows: w.ncols(),
                        filters: w.nrows(),
                        passes: if ql.signed_input { 2.0 } else { 1.0 },
                        in_elems: model.graph.numel(model.graph.nodes[ql.node].inputs[0]) as f64,
                        out_elems: model.graph.numel(model.graph.nodes[ql.node].output) as f64,
                        conversions_per_image: st.activity.conversions as f64 / images,
                        row_drives_per_image: st.activity.row_drives as f64 / images,
                        input_pulses_per_image: st.activity.input_pulses as f64 / images,
                        cell_charge_per_image: st.activity.cell_charge
                            / f64::from(st.activity.max_level.max(1))
                            / images,
                    });
                }
                out.rows.push(ResultRow {
                    model: m.name.clone(),
                    arch: arch.name.clone(),
                    seed,
                    images: eval.nrows(),
                    top1: accuracy(&pred, &labels),
                    top1_fp32,
                    top1_int8,
                    agreement_int8: agreement(&pred, &pi),
                    output_rel_err_int8: mean_rel_err(ev.outputs.view(), int8.outputs.view()),
                    in_range_fraction: ratio(total.column_sums_in_range, total.column_sums),
                    recovery_rate: if arch.speculative() {
                        ratio(total.flagged, total.column_sums)
                    } else {
                        0.0
                    },
                    converts_per_mac: ratio(total.activity.conversions, total.macs),
                    exact_fraction: 1.0 - ratio(total.inexact_column_slices, total.column_sums),
                    agreement_fp32: agreement(&pred, &pf),
                    layers,
                });
                let ips = eval.nrows() as f64 / secs.max(1e-9);
                out.timings
                    .push((m.name.clone(), arch.name.clone(), seed, ips));
                progress(&format!(
                    "{} / {} / seed {seed}: {:.1} images/s",
                    m.name, arch.name, ips
                ));
            }
        }
    }
    if let Some(cm) = &cost_model {
        progress("cost model");
        out.energy = crate::cost::cost_simulated(spec, cm, &out.rows)?;
        out.energy.extend(crate::cost::cost_workloads(spec, cm)?);
    }
    Ok(out)
}
