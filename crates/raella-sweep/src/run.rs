//! Running a sweep: per model, the references once, then every design x seed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use std::collections::HashMap;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use raella_network::files::{FileKind, open_file, read_text};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use ndarray::{Array2, ArrayView2, s};
use raella_network::{
    CrossbarBackend, ExactBackend, IdxDataset, QuantModel, argmax_rows, eval_float_features,
    eval_quant, import_onnx_file, mean_row_cosine,
};
use raella_runtime::LayerStats;
use serde::Serialize;

use crate::names::file_component;
use crate::spec::{ImageRange, ModelSpec, Spec};

/// Calibration images whose crossbar-layer inputs calibrate adaptive slicing
/// and the `search` center rule (the activation scales use all of them).
pub const AWS_CALIBRATION_IMAGES: usize = 32;

/// One crossbar layer's statistics in one result row.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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
    /// The layer's own output error: relative RMS error of sampled outputs
    /// against exact integer MACs on the same 8-bit inputs.
    #[serde(default)]
    pub layer_rel_err: f64,
}

/// One model x design x seed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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
    pub top1: Option<f64>,
    /// Top-1 of the float32 reference.
    pub top1_fp32: Option<f64>,
    /// Top-1 of the 8-bit digital reference.
    pub top1_int8: Option<f64>,
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
    /// Mean cosine similarity of the penultimate features (the last crossbar
    /// layer's input; a text encoder's embeddings) to the 8-bit reference's.
    #[serde(default)]
    pub feature_cosine_int8: f64,
    /// The same against the float32 reference.
    #[serde(default)]
    pub feature_cosine_fp32: f64,
    /// Text encoders: Pearson correlation of embedding cosines with the human
    /// similarity scores (Lee-50).
    #[serde(default)]
    pub pearson: Option<f64>,
    /// Text encoders: Spearman correlation, likewise.
    #[serde(default)]
    pub spearman: Option<f64>,
    /// Per-layer statistics.
    pub layers: Vec<LayerRow>,
}

/// Per model: what is shared by all designs.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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
    pub top1_fp32: Option<f64>,
    /// 8-bit digital top-1.
    pub top1_int8: Option<f64>,
    /// Agreement of the 8-bit reference with float32.
    pub agreement_int8_fp32: f64,
    /// Mean cosine of the 8-bit reference's penultimate features (embeddings)
    /// to float32's.
    #[serde(default)]
    pub feature_cosine_int8_fp32: f64,
    /// Text encoders: Pearson / Spearman of the float32 and 8-bit references.
    #[serde(default)]
    pub correlations: Option<ReferenceCorrelations>,
    /// Column-sum histograms of one layer per encoding (see [`ColumnSumHistogram`]).
    pub histograms: Vec<ColumnSumHistogram>,
}

/// Pearson and Spearman correlations of the references with human scores.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ReferenceCorrelations {
    /// float32 Pearson.
    pub pearson_fp32: f64,
    /// float32 Spearman.
    pub spearman_fp32: f64,
    /// 8-bit digital Pearson.
    pub pearson_int8: f64,
    /// 8-bit digital Spearman.
    pub spearman_int8: f64,
}

/// The distribution of a layer's analog column sums under one design (before
/// the ADC), from calibration vectors: counts in bins of [`HISTOGRAM_BIN`] LSBs
/// from [`HISTOGRAM_MIN`], the extreme bins collecting everything beyond.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ColumnSumHistogram {
    /// The design.
    pub arch: String,
    /// The layer.
    pub layer: String,
    /// The design's ADC code range `[min, max]`.
    pub adc_range: (i32, i32),
    /// Counts per bin.
    pub counts: Vec<u64>,
}

/// Lowest histogram bin edge, LSBs.
pub const HISTOGRAM_MIN: i64 = -512;
/// Histogram bin width, LSBs.
pub const HISTOGRAM_BIN: i64 = 8;
/// Number of histogram bins.
pub const HISTOGRAM_BINS: usize = 129;
const HISTOGRAM_LAST: i64 = 128;
/// Calibration vectors the histograms use at most.
pub const HISTOGRAM_VECTORS: usize = 64;

/// Everything a sweep produced. `timings` are wall-clock and not deterministic.
#[derive(Debug, Clone)]
pub struct SweepResults {
    /// Per model.
    pub models: Vec<ModelSummary>,
    /// Per model x design x seed.
    pub rows: Vec<ResultRow>,
    /// Wall-clock time per computed point.
    pub timings: Vec<Timing>,
    /// Energy, area and throughput per workload/model x design (when the spec has `[cost]`).
    pub energy: Vec<crate::cost::EnergyRow>,
    /// `(design on workload, why)`: shape-only costings refused because no
    /// typical statistics describe the design as configured.
    pub not_costed: Vec<(String, String)>,
    /// The workload the cost model's coefficients were fitted on (from the
    /// paper-ablation file), when the spec has one.
    pub calibrated_on: Option<String>,
}

/// A model's graph with its calibration and evaluation images (preprocessed,
/// `images x numel(input)`) and evaluation labels (empty for photo folders).
pub type LoadedModel = (raella_network::Graph, Array2<f32>, Array2<f32>, Vec<u8>);

/// Imports a spec's model and loads its images, checking that they fit.
///
/// # Errors
/// An unreadable or unsupported model, unreadable images, or images that do
/// not fit the model's input.
pub fn load_model(m: &ModelSpec) -> anyhow::Result<LoadedModel> {
    let graph = import_onnx_file(&m.onnx).with_context(|| format!("model \"{}\"", m.name))?;
    check_graph(m, &graph)?;
    let data = if m.images.is_dir() {
        // A folder of photographs, sized and coloured as the model's input; unlabelled.
        let (c, h, w) = match graph.tensors[graph.input].shape[..] {
            [c, h, w] => (c, h, w),
            ref s => anyhow::bail!(
                "model \"{}\": image folders need a [C, H, W] input, the model takes {s:?}",
                m.name
            ),
        };
        let f = raella_network::ImageFolder::load(&m.images, c, h, w)?;
        IdxDataset {
            images: f.images,
            image_dims: vec![c, h, w],
            labels: vec![],
        }
    } else {
        let labels = m
            .labels
            .as_ref()
            .with_context(|| format!("model \"{}\": IDX images need `labels`", m.name))?;
        let d = IdxDataset::load(&m.images, labels)?;
        check_idx(m, &graph, &d)?;
        d
    };
    let in_shape = &graph.tensors[graph.input].shape;
    let channels = if in_shape.len() == 3 { in_shape[0] } else { 1 };
    let (cal, _) = load_images(m, &data, m.calibration, "calibration", channels)?;
    let (eval, labels) = load_images(m, &data, m.evaluation, "evaluation", channels)?;
    Ok((graph, cal, eval, labels))
}

/// A model the sweep can simulate: at least one crossbar layer, and crossbar
/// layer names that stay distinct as file names (they name `stats/` files).
fn check_graph(m: &ModelSpec, graph: &raella_network::Graph) -> anyhow::Result<()> {
    let layers = graph.crossbar_layers();
    anyhow::ensure!(
        !layers.is_empty(),
        "model \"{}\": {} has no crossbar layer (Conv, Gemm or MatMul): nothing to simulate",
        m.name,
        m.onnx.display()
    );
    let mut files: HashMap<String, &str> = HashMap::new();
    for &i in &layers {
        let name = &graph.nodes[i].name;
        if let Some(other) = files.insert(file_component(name), name) {
            anyhow::bail!(
                "model \"{}\": {}: crossbar layers `{other}` and `{name}` have the same statistics file name `{}.txt`; rename a node",
                m.name,
                m.onnx.display(),
                file_component(name)
            );
        }
    }
    Ok(())
}

/// IDX images shaped as the model's input (`[C, H, W]`, `[H, W]` for one
/// channel, or any shape of as many values for a flat input) and labels that
/// are classes of its output.
fn check_idx(m: &ModelSpec, graph: &raella_network::Graph, d: &IdxDataset) -> anyhow::Result<()> {
    let input = &graph.tensors[graph.input].shape;
    let dims = &d.image_dims;
    let fits = dims == input
        || (input.len() == 3 && input[0] == 1 && dims[..] == input[1..])
        || (input.len() == 1 && d.images.ncols() == input[0]);
    anyhow::ensure!(
        fits,
        "model \"{}\": the images of {} are {dims:?} each, the input of {} is {input:?}: they do not match",
        m.name,
        m.images.display(),
        m.onnx.display()
    );
    let classes = graph.numel(graph.output);
    if let (Some(labels), Some((i, &l))) = (
        &m.labels,
        d.labels
            .iter()
            .enumerate()
            .find(|(_, l)| usize::from(**l) >= classes),
    ) {
        anyhow::bail!(
            "model \"{}\": {}: label {i} is {l}, but {} has {classes} output classes (0..={})",
            m.name,
            labels.display(),
            m.onnx.display(),
            classes.saturating_sub(1)
        );
    }
    Ok(())
}

/// Wall-clock time of one computed point: programming the design (compile,
/// adaptive slicing, device programming), then the evaluation images alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Model name.
    pub model: String,
    /// Design name.
    pub arch: String,
    /// Seed.
    pub seed: u64,
    /// Seconds to build the design for the model (once per point).
    pub build_seconds: f64,
    /// Evaluation images per second, programming excluded.
    pub images_per_second: f64,
}

/// Loads and preprocesses a model's images: `x = (pixel * scale - mean[c]) / std[c]`;
/// `field` names the range in errors (`calibration`, `evaluation`).
///
/// # Errors
/// Unreadable files, a range past the data, or a channel count mismatch.
pub fn load_images(
    m: &ModelSpec,
    data: &IdxDataset,
    range: ImageRange,
    field: &str,
    channels: usize,
) -> anyhow::Result<(Array2<f32>, Vec<u8>)> {
    let n = data.images.nrows();
    anyhow::ensure!(
        range
            .start
            .checked_add(range.count)
            .is_some_and(|end| end <= n),
        "model \"{}\": `{field}` = {{ start = {}, count = {} }}: past the {n} images of {}",
        m.name,
        range.start,
        range.count,
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
        if data.labels.is_empty() {
            vec![]
        } else {
            data.labels[range.start..range.start + range.count].to_vec()
        },
    ))
}

fn accuracy(pred: &[usize], labels: &[u8]) -> Option<f64> {
    if labels.is_empty() {
        return None;
    }
    Some(accuracy_of(pred, labels))
}

fn accuracy_of(pred: &[usize], labels: &[u8]) -> f64 {
    let ok = pred
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == usize::from(**l))
        .count();
    ok as f64 / pred.len().max(1) as f64
}

pub(crate) fn agreement(a: &[usize], b: &[usize]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

pub(crate) fn mean_rel_err(y: ArrayView2<'_, f32>, reference: ArrayView2<'_, f32>) -> f64 {
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

/// Runs the whole sweep. `progress` is told each finished point.
///
/// # Errors
/// Unreadable models or data, or a model the importer rejects. Specs are
/// validated before anything runs.
pub fn run(spec: &Spec, progress: impl FnMut(&str)) -> anyhow::Result<SweepResults> {
    run_with(spec, &RunOptions::default(), progress)
}

/// How to run a sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Run only the K-th (1-based) of N disjoint slices of the points (`--shard K/N`).
    /// A shard skips the cost model; `merge` costs the merged rows.
    pub shard: Option<(usize, usize)>,
    /// Cache finished points here (keyed by configuration, model files and code version).
    pub cache_dir: Option<PathBuf>,
    /// Show a progress bar on stderr (only drawn on a terminal).
    pub progress_bar: bool,
}

/// Runs a sweep with options (sharding, caching, progress bar).
///
/// # Errors
/// As [`run`].
pub fn run_with(
    spec: &Spec,
    opts: &RunOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<SweepResults> {
    let mut out = SweepResults {
        models: vec![],
        rows: vec![],
        timings: vec![],
        energy: vec![],
        not_costed: vec![],
        calibrated_on: None,
    };
    let cost_model = spec
        .cost
        .as_ref()
        .map(crate::cost::CostModel::load)
        .transpose()?;
    if let Some(cm) = &cost_model {
        cm.check(spec)?;
        for w in &spec.workloads {
            raella_cost::Workload::load(&w.file)?;
        }
    }
    // Load and check every model and data set first, so bad input fails before any work.
    let loaded = spec
        .models
        .iter()
        .map(|m| {
            match &m.bert {
                Some(b) => crate::text::load_text(m, b).map(|t| Loaded::Text(Box::new(t))),
                None => load_model(m).map(|l| Loaded::Image(Box::new(l))),
            }
            .with_context(|| spec.path.display().to_string())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (m, ld) in spec.models.iter().zip(&loaded) {
        let shapes = match ld {
            Loaded::Image(l) => graph_shapes(&l.0),
            Loaded::Text(t) => t.crossbar_shapes(),
        };
        check_crossbars(spec, m, &shapes).with_context(|| spec.path.display().to_string())?;
    }
    let points: Vec<(usize, usize, usize)> = (0..spec.models.len())
        .flat_map(|mi| {
            (0..spec.archs.len())
                .flat_map(move |ai| (0..spec.seeds.len()).map(move |si| (mi, ai, si)))
        })
        .collect();
    let total_points = points.len();
    let selected: Vec<(usize, usize, usize)> = points
        .into_iter()
        .enumerate()
        .filter(|(g, _)| opts.shard.is_none_or(|(k, n)| g % n == k - 1))
        .map(|(_, p)| p)
        .collect();
    progress(&format!(
        "{} of {total_points} points selected",
        selected.len()
    ));
    let bar = progress_bar(selected.len(), opts.progress_bar);
    for (mi, (m, ld)) in spec.models.iter().zip(loaded).enumerate() {
        let mine: Vec<(usize, usize)> = selected
            .iter()
            .filter(|p| p.0 == mi)
            .map(|p| (p.1, p.2))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let (graph, cal, eval, labels) = match ld {
            Loaded::Image(l) => *l,
            Loaded::Text(t) => {
                progress(&format!(
                    "{}: references on {} documents",
                    m.name,
                    t.documents()
                ));
                let model_hash = if opts.cache_dir.is_some() {
                    Some(hash_model_files(m)?)
                } else {
                    None
                };
                let (summary, results) =
                    crate::text::run_text(spec, opts, m, &t, &mine, model_hash.as_deref(), &bar)?;
                out.models.push(summary);
                record(&mut out, spec, m, &mine, results, &mut progress)?;
                continue;
            }
        };
        progress(&format!(
            "{}: references on {} images",
            m.name,
            eval.nrows()
        ));
        let (float, float_features) = eval_float_features(&graph, eval.view())?;
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
            feature_cosine_int8_fp32: mean_row_cosine(int8.features.view(), float_features.view()),
            correlations: None,
            histograms: column_sum_histograms(spec, &model, &captured)?,
        });
        let ctx = PointContext {
            m,
            model: &model,
            captured: &captured,
            eval: &eval,
            labels: &labels,
            int8: &int8.outputs,
            int8_features: &int8.features,
            fp32_features: &float_features,
            pf: &pf,
            pi: &pi,
            top1_fp32,
            top1_int8,
        };
        let model_hash = if opts.cache_dir.is_some() {
            Some(hash_model_files(m)?)
        } else {
            None
        };
        let results = run_points(
            spec,
            opts,
            m,
            model_hash.as_deref(),
            &mine,
            &bar,
            eval.nrows(),
            |arch, seed| run_point(&ctx, arch, seed),
        );
        record(&mut out, spec, m, &mine, results, &mut progress)?;
    }
    bar.finish_and_clear();
    if let (Some(cm), None) = (&cost_model, opts.shard) {
        progress("cost model");
        (out.energy, out.not_costed) = crate::cost::cost_sweep(spec, cm, &out.rows)?;
        out.calibrated_on = cm.paper.as_ref().map(|p| p.calibrate_on.clone());
    }
    Ok(out)
}

/// Most crossbars a design may need for one model, counted as an upper bound
/// (each layer in its design's widest weight slicing). Tiny crossbars on a
/// large model would otherwise exhaust memory with per-crossbar state.
pub const MAX_CROSSBARS: u128 = 1 << 20;

/// `(groups, rows per group, outputs per group)` of a graph's crossbar layers.
fn graph_shapes(g: &raella_network::Graph) -> Vec<(usize, usize, usize)> {
    g.nodes
        .iter()
        .filter_map(|n| match &n.op {
            raella_network::graph::Op::Conv(c) => {
                let (m, cg, kh, kw) = c.weight.dim();
                Some((c.groups, cg * kh * kw, m / c.groups))
            }
            raella_network::graph::Op::Linear(l) => Some((1, l.weight.ncols(), l.weight.nrows())),
            _ => None,
        })
        .collect()
}

/// Checks every design's crossbar count for a model against [`MAX_CROSSBARS`].
fn check_crossbars(
    spec: &Spec,
    m: &ModelSpec,
    shapes: &[(usize, usize, usize)],
) -> anyhow::Result<()> {
    for a in &spec.archs {
        let cfg = a.config();
        let g = cfg.compile.geometry;
        let slices = cfg
            .adaptive
            .iter()
            .flat_map(|(p, _)| p.candidates().iter().map(raella_compiler::Slicing::len))
            .chain(cfg.force_last.iter().map(raella_compiler::Slicing::len))
            .fold(cfg.compile.weight_slicing.len(), usize::max);
        let n: u128 = shapes
            .iter()
            .map(|&(groups, k, mg)| {
                groups as u128
                    * k.div_ceil(g.rows()) as u128
                    * (mg as u128 * slices as u128).div_ceil(g.cols() as u128)
            })
            .sum();
        anyhow::ensure!(
            n <= MAX_CROSSBARS,
            "model \"{}\" on design \"{}\" ({} x {} crossbars, up to {slices} weight slices): {n} crossbars, more than the limit of {MAX_CROSSBARS}",
            m.name,
            a.name,
            g.rows(),
            g.cols()
        );
    }
    Ok(())
}

/// A model and its data, loaded and checked before any work.
enum Loaded {
    Image(Box<LoadedModel>),
    Text(Box<crate::text::LoadedText>),
}

/// Per point: the row and, when computed, (build seconds, images/s).
pub(crate) type Computed = (ResultRow, Option<(f64, f64)>);

/// Computes (or takes from the cache) the points `mine` of model `m` in
/// parallel; `compute` returns a row with its build and evaluation seconds
/// over `units` images (documents).
pub(crate) fn run_points(
    spec: &Spec,
    opts: &RunOptions,
    m: &ModelSpec,
    model_hash: Option<&str>,
    mine: &[(usize, usize)],
    bar: &ProgressBar,
    units: usize,
    compute: impl Fn(&crate::spec::Arch, u64) -> anyhow::Result<(ResultRow, f64, f64)> + Sync,
) -> Vec<anyhow::Result<Computed>> {
    mine.par_iter()
        .map(|&(ai, si)| {
            let (arch, seed) = (&spec.archs[ai], spec.seeds[si]);
            let cache = match (&opts.cache_dir, model_hash) {
                (Some(dir), Some(h)) => {
                    Some(dir.join(format!("{}.json", point_key(h, m, arch, seed))))
                }
                _ => None,
            };
            // A cached point is reused; an unreadable cache entry is recomputed.
            let cached = cache
                .as_ref()
                .filter(|c| c.exists())
                .and_then(|c| read_text(c, FileKind::Results).ok())
                .and_then(|t| serde_json::from_str::<ResultRow>(&t).ok());
            if let Some(row) = cached {
                bar.inc(1);
                return Ok((row, None));
            }
            let (row, build_s, eval_s) = compute(arch, seed)?;
            let ips = units as f64 / eval_s.max(1e-9);
            if let Some(c) = cache {
                write_atomic(&c, &serde_json::to_string(&row)?)?;
            }
            bar.set_message(format!("{:.2} per s ({} / {})", ips, m.name, arch.name));
            bar.inc(1);
            Ok((row, Some((build_s, ips))))
        })
        .collect()
}

/// Adds computed points to the results, in point order, with their timings.
fn record(
    out: &mut SweepResults,
    spec: &Spec,
    m: &ModelSpec,
    mine: &[(usize, usize)],
    results: Vec<anyhow::Result<Computed>>,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<()> {
    for (r, &(ai, si)) in results.into_iter().zip(mine) {
        let (row, ips) = r?;
        let arch = &spec.archs[ai];
        match ips {
            Some((build_seconds, ips)) => {
                out.timings.push(Timing {
                    model: m.name.clone(),
                    arch: arch.name.clone(),
                    seed: spec.seeds[si],
                    build_seconds,
                    images_per_second: ips,
                });
                progress(&format!(
                    "{} / {} / seed {}: built in {build_seconds:.1} s, {ips:.2} images/s",
                    m.name, arch.name, spec.seeds[si]
                ));
            }
            None => progress(&format!(
                "{} / {} / seed {}: cached",
                m.name, arch.name, spec.seeds[si]
            )),
        }
        out.rows.push(row);
    }
    Ok(())
}

/// Everything a point of one model shares.
struct PointContext<'a> {
    m: &'a ModelSpec,
    model: &'a QuantModel,
    captured: &'a [Vec<raella_network::QInput>],
    eval: &'a Array2<f32>,
    labels: &'a [u8],
    int8: &'a Array2<f32>,
    int8_features: &'a Array2<f32>,
    fp32_features: &'a Array2<f32>,
    pf: &'a [usize],
    pi: &'a [usize],
    top1_fp32: Option<f64>,
    top1_int8: Option<f64>,
}

/// The cache format; bump when a result row's meaning changes.
const CACHE_VERSION: &str = "raella-sweep-point-v4";

fn hash_model_files(m: &ModelSpec) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    let mut files = vec![m.onnx.clone()];
    if let Some(b) = &m.bert {
        files = ["config.json", "model.safetensors", "tokenizer.json"]
            .iter()
            .map(|f| b.model.join(f))
            .chain(
                ["lee.cor", "similarities0-1.txt"]
                    .iter()
                    .map(|f| b.lee50.join(f)),
            )
            .chain(std::iter::once(b.texts.clone()))
            .collect();
    } else if m.images.is_dir() {
        // The files the model reads, and only those (a large unrelated file in
        // the folder is not hashed).
        files.extend(raella_network::image_files(&m.images)?);
    } else {
        files.push(m.images.clone());
    }
    files.extend(m.labels.iter().cloned());
    for p in &files {
        h.update(
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        // Streamed, through the readers' regular-file check (each file passed
        // its own kind's size limit when the model loaded; this is the largest).
        let (mut file, _) = open_file(p, FileKind::Safetensors)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)
                .with_context(|| format!("reading {}", p.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        h.update([0u8]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Key of one point: hash of the code version, the model files, the model's
/// preprocessing and split, the design's resolved knobs and name, and the seed.
fn point_key(model_hash: &str, m: &ModelSpec, arch: &crate::spec::Arch, seed: u64) -> String {
    let mut h = Sha256::new();
    h.update(CACHE_VERSION);
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(model_hash);
    h.update(format!(
        "{}|{}|{:?}|{:?}|{:?}|{:?}",
        m.name, m.scale, m.mean, m.std, m.calibration, m.evaluation
    ));
    h.update(serde_json::to_string(&arch.knobs).unwrap_or_default());
    h.update(&arch.name);
    h.update(seed.to_le_bytes());
    hex(&h.finalize())[..32].to_string()
}

/// Writes `text` to `path` via a temporary file and a rename.
pub(crate) fn write_atomic(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(
        format!(
            "tmp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], ""),
    );
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

fn progress_bar(n: usize, wanted: bool) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    if wanted && std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} points  {msg}  ETA {eta}")
        {
            bar.set_style(style);
        }
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// What a per-layer row needs to know of a crossbar layer besides its run.
pub(crate) struct LayerShape<'a> {
    pub(crate) name: &'a str,
    pub(crate) kind: &'a str,
    /// One group's int8 weights.
    pub(crate) weights: &'a ndarray::Array2<i8>,
    pub(crate) groups: usize,
    pub(crate) signed: bool,
    /// Input and output elements per image (document).
    pub(crate) in_elems: f64,
    pub(crate) out_elems: f64,
}

/// The per-layer row of a point: `st` summed over `images` images.
pub(crate) fn layer_row(
    shape: LayerShape<'_>,
    programmed: &[raella_runtime::ProgrammedLayer],
    slicing: &str,
    st: &LayerStats,
    images: f64,
    arch: &crate::spec::Arch,
) -> LayerRow {
    let ms = programmed[0].mapped().stats();
    let slices = programmed
        .iter()
        .map(|p| p.mapped().weight_slicing().len())
        .max()
        .unwrap_or(0);
    let w = shape.weights;
    let input_slices = arch.config().run.input.slicing().len();
    LayerRow {
        layer: shape.name.to_string(),
        kind: shape.kind.to_string(),
        matrix: format!(
            "{} x {}{}",
            w.nrows(),
            w.ncols(),
            if shape.groups > 1 {
                format!(" x {}", shape.groups)
            } else {
                String::new()
            }
        ),
        weight_slicing: slicing.to_string(),
        vectors_per_image: st.vectors as f64 / images,
        in_range_fraction: st.in_range_fraction(),
        exact_fraction: st.exact_fraction(),
        recovery_rate: st.recovery_rate(),
        converts_per_mac: st.converts_per_mac(),
        adc_action_share: st.adc_action_share(input_slices),
        average_cell_value: st.average_cell_value(),
        average_input_pulses: st.average_input_pulses(),
        cim_units_per_weight: slices,
        speculation: arch.speculative(),
        crossbars: ms.crossbars,
        utilisation: ms.utilisation,
        groups: shape.groups,
        rows: w.ncols(),
        filters: w.nrows(),
        passes: if shape.signed { 2.0 } else { 1.0 },
        in_elems: shape.in_elems,
        out_elems: shape.out_elems,
        conversions_per_image: st.activity.conversions as f64 / images,
        row_drives_per_image: st.activity.row_drives as f64 / images,
        input_pulses_per_image: st.activity.input_pulses as f64 / images,
        cell_charge_per_image: st.activity.cell_charge
            / f64::from(st.activity.max_level.max(1))
            / images,
        layer_rel_err: st.checked_rel_err(),
    }
}

fn run_point(
    ctx: &PointContext<'_>,
    arch: &crate::spec::Arch,
    seed: u64,
) -> anyhow::Result<(ResultRow, f64, f64)> {
    let (model, eval) = (ctx.model, ctx.eval);
    let cfg = arch.config();
    let t0 = Instant::now();
    let backend = CrossbarBackend::build(model, &cfg, ctx.captured, seed)?;
    let t1 = Instant::now();
    let ev = eval_quant(model, &backend, eval.view())?;
    let (build_s, eval_s) = (
        t1.duration_since(t0).as_secs_f64(),
        t1.elapsed().as_secs_f64(),
    );
    let pred = argmax_rows(ev.outputs.view());
    let mut total = LayerStats::default();
    let images = eval.nrows().max(1) as f64;
    let mut layers = Vec::new();
    for (l, (ql, st)) in model.layers.iter().zip(&ev.layer_stats).enumerate() {
        let st = st.clone().unwrap_or_default();
        total += &st;
        let pl = &backend.layers()[l];
        let w = &ql.groups[0].weights;
        let g = &model.graph;
        layers.push(layer_row(
            LayerShape {
                name: &ql.name,
                kind: g.nodes[ql.node].op.kind(),
                weights: w,
                groups: ql.groups.len(),
                signed: ql.signed_input,
                in_elems: g.numel(g.nodes[ql.node].inputs[0]) as f64,
                out_elems: g.numel(g.nodes[ql.node].output) as f64,
            },
            pl,
            &backend.slicings()[l],
            &st,
            images,
            arch,
        ));
    }
    let row = ResultRow {
        model: ctx.m.name.clone(),
        arch: arch.name.clone(),
        seed,
        images: eval.nrows(),
        top1: accuracy(&pred, ctx.labels),
        top1_fp32: ctx.top1_fp32,
        top1_int8: ctx.top1_int8,
        agreement_int8: agreement(&pred, ctx.pi),
        output_rel_err_int8: mean_rel_err(ev.outputs.view(), ctx.int8.view()),
        in_range_fraction: total.in_range_fraction(),
        recovery_rate: total.recovery_rate(),
        converts_per_mac: total.converts_per_mac(),
        exact_fraction: total.exact_fraction(),
        agreement_fp32: agreement(&pred, ctx.pf),
        feature_cosine_int8: mean_row_cosine(ev.features.view(), ctx.int8_features.view()),
        feature_cosine_fp32: mean_row_cosine(ev.features.view(), ctx.fp32_features.view()),
        pearson: None,
        spearman: None,
        layers,
    };
    Ok((row, build_s, eval_s))
}

/// Column-sum histograms of the layer with the most weights (group 0), for the
/// ladder designs (names starting `ladder_`) if the spec has them, else the
/// first design of each encoding. Fixed weight slicing (adaptive designs use
/// their fallback slicing); exact integer sums, no noise.
fn column_sum_histograms(
    spec: &Spec,
    model: &QuantModel,
    captured: &[Vec<raella_network::QInput>],
) -> anyhow::Result<Vec<ColumnSumHistogram>> {
    let Some((l, ql)) = model.layers.iter().enumerate().max_by_key(|(_, ql)| {
        model.graph.nodes[ql.node].op.is_crossbar().then(|| {
            let w = &ql.groups[0].weights;
            w.len()
        })
    }) else {
        return Ok(vec![]);
    };
    let ladder: Vec<&crate::spec::Arch> = spec
        .archs
        .iter()
        .filter(|a| a.name.starts_with("ladder_"))
        .collect();
    let chosen: Vec<&crate::spec::Arch> = if ladder.is_empty() {
        let mut seen = Vec::new();
        spec.archs
            .iter()
            .filter(|a| {
                let key = a.config().compile.encoding.to_string();
                let new = !seen.contains(&key);
                seen.push(key);
                new
            })
            .collect()
    } else {
        ladder
    };
    let x = captured[l][0].crossbar_vectors();
    let nv = x.nrows().min(HISTOGRAM_VECTORS);
    let mut out = Vec::new();
    for a in chosen {
        let cfg = a.config();
        let mapped = raella_compiler::compile(ql.groups[0].weights.view(), &cfg.compile, None)?;
        let slicing = cfg.run.input.slicing();
        let mut counts = vec![0u64; HISTOGRAM_BINS];
        for v in 0..nv {
            for mx in mapped.crossbars() {
                let rows = mx.crossbar.used_rows();
                for j in 0..slicing.len() {
                    let pulses: Vec<u8> = (0..rows)
                        .map(|r| {
                            u8::try_from(slicing.slice(u32::from(x[[v, mx.row_start + r]]), j))
                                .unwrap_or(0)
                        })
                        .collect();
                    for sum in mx.crossbar.column_sums_exact(&pulses) {
                        let b = ((sum - HISTOGRAM_MIN).div_euclid(HISTOGRAM_BIN))
                            .clamp(0, HISTOGRAM_LAST);
                        counts[usize::try_from(b).unwrap_or(0)] += 1;
                    }
                }
            }
        }
        out.push(ColumnSumHistogram {
            arch: a.name.clone(),
            layer: ql.name.clone(),
            adc_range: (cfg.run.adc.min_code(), cfg.run.adc.max_code()),
            counts,
        });
    }
    Ok(out)
}
