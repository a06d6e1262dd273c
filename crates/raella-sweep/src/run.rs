//! Running a sweep: per model, the references once, then every design x seed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use std::collections::HashMap;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use raella_data::files::{FileKind, open_file, read_text};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use ndarray::{Array2, ArrayD, ArrayView2, IxDyn, s};
use raella_data::{IdxDataset, Lee50, TextEncoder};
use raella_network::{
    BATCH_ITEMS, CrossbarBackend, Evaluation, ExactBackend, QuantModel, argmax_rows, eval_float,
    eval_quant, eval_quant_batches, mean_row_cosine,
};
use raella_onnx::{DType, Dim, Graph, Tensor};
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
    /// Every graph output's mean relative error against the 8-bit reference
    /// (outputs whose size differs between items, e.g. per-token outputs of
    /// documents, are left out).
    #[serde(default)]
    pub output_errors: Vec<OutputFidelity>,
    /// Per-layer statistics.
    pub layers: Vec<LayerRow>,
}

/// One graph output's error in a result row.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct OutputFidelity {
    /// The output's name.
    pub output: String,
    /// Mean over items of `||y - y_int8|| / ||y_int8||`.
    pub rel_err_int8: f64,
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
    /// Multiply-accumulates per image of digital matrix products (attention's
    /// activation-by-activation products; `raella_onnx::RunProfile`).
    #[serde(default)]
    pub digital_macs_per_image: u64,
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
#[derive(Debug, Clone, Default)]
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

/// A model with its data: calibration and evaluation batches (one tensor per
/// graph input each), evaluation labels (empty when unlabelled) or, for a text
/// encoder, the Lee-50 documents' gold pairs.
#[derive(Debug)]
pub struct LoadedModel {
    /// The imported graph.
    pub graph: Graph,
    /// Calibration batches.
    pub calibration: Vec<Vec<Tensor>>,
    /// Calibration batches for adaptive slicing and the `search` center rule
    /// (at most [`AWS_CALIBRATION_IMAGES`] images, or every calibration text).
    pub aws_calibration: Vec<Vec<Tensor>>,
    /// Evaluation batches.
    pub evaluation: Vec<Vec<Tensor>>,
    /// Evaluation items (images or documents).
    pub items: usize,
    /// Evaluation labels (empty when unlabelled).
    pub labels: Vec<usize>,
    /// Text encoders: the evaluated documents and their gold pairs.
    pub lee50: Option<Lee50>,
    /// Index of the evaluated graph output.
    pub output: usize,
}

/// Imports a spec's model and loads its data, checking that they fit.
///
/// # Errors
/// An unreadable or unsupported model, unreadable data, or data that do not
/// fit the model's inputs.
pub fn load_model(m: &ModelSpec) -> anyhow::Result<LoadedModel> {
    let graph =
        raella_onnx::import_file(&m.onnx).with_context(|| format!("model \"{}\"", m.name))?;
    check_graph(m, &graph)?;
    let output = match &m.output {
        Some(name) => graph
            .outputs
            .iter()
            .position(|&o| graph.name(o) == name)
            .with_context(|| {
                format!(
                    "model \"{}\": `output` = \"{name}\": {} has no such output (outputs: {})",
                    m.name,
                    m.onnx.display(),
                    graph
                        .outputs
                        .iter()
                        .map(|&o| graph.name(o).to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
        // Text encoders: the first output of rank 2 ([batch, D], an embedding).
        None if m.text.is_some() => graph
            .outputs
            .iter()
            .position(|&o| graph.values[o].shape.as_ref().is_some_and(|s| s.len() == 2))
            .unwrap_or(0),
        None => 0,
    };
    match &m.text {
        Some(t) => load_text(m, graph, t, output),
        None => load_images_model(m, graph, output),
    }
}

/// A model the sweep can simulate: at least one weight layer, and weight
/// layer names that stay distinct as file names (they name `stats/` files).
fn check_graph(m: &ModelSpec, graph: &Graph) -> anyhow::Result<()> {
    anyhow::ensure!(
        !graph.layers.is_empty(),
        "model \"{}\": {} has no weight layer (Conv, ConvTranspose, Gemm or MatMul with a constant matrix): nothing to simulate",
        m.name,
        m.onnx.display()
    );
    let mut files: HashMap<String, &str> = HashMap::new();
    for l in &graph.layers {
        let name = &l.name;
        if let Some(other) = files.insert(file_component(name), name) {
            anyhow::bail!(
                "model \"{}\": {}: weight layers `{other}` and `{name}` have the same statistics file name `{}.txt`; rename a node",
                m.name,
                m.onnx.display(),
                file_component(name)
            );
        }
    }
    Ok(())
}

/// The input's shape per item and the largest batch it takes: the model's
/// declared shape after the batch dimension, dynamic dimensions from the spec's
/// `input_shape`; a batch dimension fixed at 1 runs one item at a time.
fn item_shape(m: &ModelSpec, graph: &Graph, input: usize) -> anyhow::Result<(Vec<usize>, usize)> {
    let info = &graph.values[input];
    let name = &info.name;
    let declared = info.shape.as_ref();
    let (batch_dim, rest): (Option<&Dim>, Vec<Dim>) = match declared {
        Some(d) if !d.is_empty() => (Some(&d[0]), d[1..].to_vec()),
        _ => (None, vec![]),
    };
    let max_batch = match batch_dim {
        Some(Dim::Fixed(1)) => 1,
        Some(Dim::Fixed(k)) => anyhow::bail!(
            "model \"{}\": input `{name}` has a fixed batch of {k}; models with a batch of 1 or a dynamic batch are supported",
            m.name
        ),
        _ => BATCH_ITEMS,
    };
    let shape = match (&m.input_shape, declared) {
        (Some(given), Some(_)) => {
            anyhow::ensure!(
                given.len() == rest.len(),
                "model \"{}\": `input_shape` = {given:?} has {} dimensions; input `{name}` has {} after the batch ({:?})",
                m.name,
                given.len(),
                rest.len(),
                rest
            );
            for (i, (g, d)) in given.iter().zip(&rest).enumerate() {
                if let Dim::Fixed(f) = d {
                    anyhow::ensure!(
                        f == g,
                        "model \"{}\": `input_shape` = {given:?}: dimension {i} is {f} in the model",
                        m.name
                    );
                }
            }
            given.clone()
        }
        (Some(given), None) => given.clone(),
        (None, _) => {
            let fixed: Option<Vec<usize>> = rest
                .iter()
                .map(|d| match d {
                    Dim::Fixed(f) => Some(*f),
                    Dim::Named(_) => None,
                })
                .collect();
            match (declared, fixed) {
                (Some(_), Some(f)) if !f.is_empty() => f,
                _ => anyhow::bail!(
                    "model \"{}\": input `{name}` has dynamic or undeclared dimensions ({}); set `input_shape` in the spec's [[model]] (its shape per item, without the batch, e.g. [3, 224, 224])",
                    m.name,
                    declared.map_or_else(
                        || "no shape".to_string(),
                        |d| {
                            let dims: Vec<String> = d
                                .iter()
                                .map(|x| match x {
                                    Dim::Fixed(f) => f.to_string(),
                                    Dim::Named(n) => format!("`{n}`"),
                                })
                                .collect();
                            format!("declared [{}]", dims.join(", "))
                        }
                    )
                ),
            }
        }
    };
    Ok((shape, max_batch))
}

/// Batches of `x` (`items x numel`), each reshaped to `[b, shape...]` of `dtype`.
fn image_batches(x: &Array2<f32>, shape: &[usize], batch: usize, dtype: DType) -> Vec<Vec<Tensor>> {
    (0..x.nrows())
        .step_by(batch.max(1))
        .map(|a| {
            let b = (a + batch).min(x.nrows());
            let mut dims = vec![b - a];
            dims.extend(shape);
            let t = ArrayD::from_shape_vec(
                IxDyn(&dims),
                x.slice(s![a..b, ..]).iter().copied().collect(),
            )
            .expect("sizes checked");
            vec![if dtype.is_float() {
                Tensor::float(t, dtype)
            } else {
                Tensor::f32(t).cast(dtype)
            }]
        })
        .collect()
}

/// Images (IDX, a photo folder, or labelled photos) for an image model.
fn load_images_model(m: &ModelSpec, graph: Graph, output: usize) -> anyhow::Result<LoadedModel> {
    anyhow::ensure!(
        graph.inputs.len() == 1,
        "model \"{}\": {} takes {} inputs ({}); image models take one",
        m.name,
        m.onnx.display(),
        graph.inputs.len(),
        graph
            .inputs
            .iter()
            .map(|&i| graph.name(i).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let input = graph.inputs[0];
    let (shape, batch) = item_shape(m, &graph, input)?;
    let per = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= raella_onnx::MAX_ELEMENTS)
        .with_context(|| {
            format!(
                "model \"{}\": an input of {shape:?} per item is larger than {} values",
                m.name,
                raella_onnx::MAX_ELEMENTS
            )
        })?;
    let dtype = graph.values[input].dtype.unwrap_or(DType::F32);
    let chw = || match shape[..] {
        [c, h, w] => Ok((c, h, w)),
        ref s => anyhow::bail!(
            "model \"{}\": photographs need a [C, H, W] input, the model takes {s:?} per image",
            m.name
        ),
    };
    let (data, labels): (IdxDataset, Vec<usize>) = if m.images.is_dir() {
        let (c, h, w) = chw()?;
        if m.class_folders || m.labels.is_some() {
            let l = raella_data::LabelledImages::load(&m.images, m.labels.as_deref(), c, h, w)?;
            (
                IdxDataset {
                    images: l.images,
                    image_dims: vec![c, h, w],
                    labels: vec![],
                },
                l.labels,
            )
        } else {
            let f = raella_data::ImageFolder::load(&m.images, c, h, w)?;
            (
                IdxDataset {
                    images: f.images,
                    image_dims: vec![c, h, w],
                    labels: vec![],
                },
                vec![],
            )
        }
    } else {
        let labels = m
            .labels
            .as_ref()
            .with_context(|| format!("model \"{}\": IDX images need `labels`", m.name))?;
        let d = IdxDataset::load(&m.images, labels)?;
        let dims = &d.image_dims;
        let fits = *dims == shape
            || (shape.len() == 3 && shape[0] == 1 && dims[..] == shape[1..])
            || d.images.ncols() == per && shape.len() == 1;
        anyhow::ensure!(
            fits,
            "model \"{}\": the images of {} are {dims:?} each, the input of {} is {shape:?}: they do not match",
            m.name,
            m.images.display(),
            m.onnx.display()
        );
        let l: Vec<usize> = d.labels.iter().map(|&v| usize::from(v)).collect();
        // Labels must be classes of the evaluated output, when its size is declared.
        let declared: Option<usize> = graph.values[graph.outputs[output]]
            .shape
            .as_ref()
            .filter(|s| s.len() >= 2)
            .and_then(|s| {
                s[1..].iter().try_fold(1usize, |a, d| match d {
                    Dim::Fixed(f) => a.checked_mul(*f),
                    Dim::Named(_) => None,
                })
            });
        if let (Some(classes), Some((i, &lab))) = (
            declared,
            l.iter().enumerate().find(|(_, v)| Some(**v) >= declared),
        ) {
            anyhow::bail!(
                "model \"{}\": {}: label {i} is {lab}, but {} has {classes} output classes (0..={})",
                m.name,
                labels.display(),
                m.onnx.display(),
                classes.saturating_sub(1)
            );
        }
        (d, l)
    };
    anyhow::ensure!(
        data.images.ncols() == per,
        "model \"{}\": {} values per image, the input takes {per} ({shape:?})",
        m.name,
        data.images.ncols()
    );
    let channels = if shape.len() == 3 { shape[0] } else { 1 };
    let (cal, _) = load_images(m, &data.images, &[], m.calibration, "calibration", channels)?;
    let (eval, eval_labels) = load_images(
        m,
        &data.images,
        &labels,
        m.evaluation,
        "evaluation",
        channels,
    )?;
    let ncap = cal.nrows().min(AWS_CALIBRATION_IMAGES);
    Ok(LoadedModel {
        items: eval.nrows(),
        calibration: image_batches(&cal, &shape, batch, dtype),
        aws_calibration: image_batches(
            &cal.slice(s![..ncap, ..]).to_owned(),
            &shape,
            ncap.max(1).min(batch),
            dtype,
        ),
        evaluation: image_batches(&eval, &shape, batch, dtype),
        labels: eval_labels,
        lee50: None,
        output,
        graph,
    })
}

/// One document's tensors for the graph's inputs (`input_ids`,
/// `attention_mask`, `token_type_ids`, matched by name), `[1, tokens]` each.
fn text_inputs(
    m: &ModelSpec,
    graph: &Graph,
    enc: &raella_data::Encoded,
) -> anyhow::Result<Vec<Tensor>> {
    graph
        .inputs
        .iter()
        .map(|&i| {
            let name = graph.name(i);
            let lower = name.to_ascii_lowercase();
            let v = if lower.contains("mask") {
                &enc.mask
            } else if lower.contains("type") || lower.contains("segment") {
                &enc.type_ids
            } else if lower.contains("ids") || lower.contains("input") {
                &enc.ids
            } else {
                anyhow::bail!(
                    "model \"{}\": input `{name}` is not one of input_ids, attention_mask or token_type_ids: cannot feed it text",
                    m.name
                )
            };
            let dtype = graph.values[i].dtype.unwrap_or(DType::I64);
            let t = ArrayD::from_shape_vec(IxDyn(&[1, v.len()]), v.clone()).expect("1 x n");
            Ok(if dtype.is_float() {
                Tensor::i64(t).cast(dtype)
            } else {
                Tensor::int(t, dtype)
            })
        })
        .collect()
}

/// A text encoder: calibration lines of `texts`, the evaluated Lee-50 documents.
fn load_text(
    m: &ModelSpec,
    graph: Graph,
    t: &crate::spec::TextFiles,
    output: usize,
) -> anyhow::Result<LoadedModel> {
    let ctx = || format!("model \"{}\"", m.name);
    let encoder = TextEncoder::load(&t.tokenizer, t.max_tokens).with_context(ctx)?;
    let lee = Lee50::load(&t.lee50).with_context(ctx)?;
    let e = m.evaluation;
    anyhow::ensure!(
        e.start
            .checked_add(e.count)
            .is_some_and(|end| end <= lee.documents.len())
            && e.count >= 2,
        "model \"{}\": `evaluation` = {{ start = {}, count = {} }}: must lie within the {} Lee-50 documents of {} and hold at least 2",
        m.name,
        e.start,
        e.count,
        lee.documents.len(),
        t.lee50.display()
    );
    let lee = Lee50 {
        documents: lee.documents[e.start..e.start + e.count].to_vec(),
        pairs: lee
            .pairs
            .iter()
            .filter(|&&(i, j, _)| {
                i >= e.start && j >= e.start && i < e.start + e.count && j < e.start + e.count
            })
            .map(|&(i, j, s)| (i - e.start, j - e.start, s))
            .collect(),
    };
    let text = read_text(&t.texts, FileKind::Text).with_context(ctx)?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let c = m.calibration;
    anyhow::ensure!(
        c.start
            .checked_add(c.count)
            .is_some_and(|end| end <= lines.len()),
        "model \"{}\": `calibration` = {{ start = {}, count = {} }}: past the {} non-empty lines of {}",
        m.name,
        c.start,
        c.count,
        lines.len(),
        t.texts.display()
    );
    let batch = |text: &str| -> anyhow::Result<Vec<Tensor>> {
        text_inputs(m, &graph, &encoder.encode(text).with_context(ctx)?)
    };
    let calibration: Vec<Vec<Tensor>> = lines[c.start..c.start + c.count]
        .iter()
        .map(|l| batch(l))
        .collect::<anyhow::Result<_>>()?;
    let evaluation: Vec<Vec<Tensor>> = lee
        .documents
        .iter()
        .map(|d| batch(d))
        .collect::<anyhow::Result<_>>()?;
    Ok(LoadedModel {
        items: evaluation.len(),
        aws_calibration: calibration.clone(),
        calibration,
        evaluation,
        labels: vec![],
        lee50: Some(lee),
        output,
        graph,
    })
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
    /// Share of the evaluation's thread time in the weight layers' products
    /// (the crossbar simulation).
    pub crossbar_share: Option<f64>,
    /// Share in digital nodes (everything but weight layers).
    pub digital_share: Option<f64>,
    /// Share in the rest of weight layers (quantising inputs, im2col, bias, layout).
    pub glue_share: Option<f64>,
}

/// Preprocesses a range of images: `x = (pixel * scale - mean[c]) / std[c]`;
/// `field` names the range in errors (`calibration`, `evaluation`). Returns
/// the images and their labels (when `labels` is not empty).
///
/// # Errors
/// A range past the data, or a channel count mismatch.
pub fn load_images(
    m: &ModelSpec,
    images: &Array2<u8>,
    labels: &[usize],
    range: ImageRange,
    field: &str,
    channels: usize,
) -> anyhow::Result<(Array2<f32>, Vec<usize>)> {
    let n = images.nrows();
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
    let per = images.ncols();
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
    let raw = images.slice(s![range.start..range.start + range.count, ..]);
    let x = Array2::from_shape_fn(raw.dim(), |(i, j)| {
        let c = j / plane;
        (f32::from(raw[[i, j]]) * m.scale - pick(&m.mean, c)) / pick(&m.std, c)
    });
    Ok((
        x,
        if labels.is_empty() {
            vec![]
        } else {
            labels[range.start..range.start + range.count].to_vec()
        },
    ))
}

fn accuracy(pred: &[usize], labels: &[usize]) -> Option<f64> {
    if labels.is_empty() {
        return None;
    }
    Some(accuracy_of(pred, labels))
}

fn accuracy_of(pred: &[usize], labels: &[usize]) -> f64 {
    let ok = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
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

/// The line a sweep starts with: its name, size, shard and output folder
/// (the CLI and the Python package print the same).
#[must_use]
pub fn banner(spec: &Spec, shard: Option<(usize, usize)>, out: &std::path::Path) -> String {
    format!(
        "sweep `{}`: {} model(s) x {} design(s) x {} seed(s){} -> {}",
        spec.name,
        spec.models.len(),
        spec.archs.len(),
        spec.seeds.len(),
        shard.map_or_else(String::new, |(k, n)| format!(", shard {k}/{n}")),
        out.display()
    )
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

/// The cost model (checked against the spec) and every model with its data,
/// loaded and checked, so bad input fails before any work.
pub(crate) fn load_checked(
    spec: &Spec,
) -> anyhow::Result<(Option<crate::cost::CostModel>, Vec<LoadedModel>)> {
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
    let loaded = spec
        .models
        .iter()
        .map(|m| load_model(m).with_context(|| spec.path.display().to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (m, ld) in spec.models.iter().zip(&loaded) {
        check_crossbars(spec, m, &graph_shapes(&ld.graph))
            .with_context(|| spec.path.display().to_string())?;
    }
    Ok((cost_model, loaded))
}

/// The spec's number of points and the `(model, design, seed)` indices of
/// those `shard` K/N selects (every N-th in canonical order; all without).
pub(crate) fn select_points(
    spec: &Spec,
    shard: Option<(usize, usize)>,
) -> (usize, Vec<(usize, usize, usize)>) {
    let points: Vec<(usize, usize, usize)> = (0..spec.models.len())
        .flat_map(|mi| {
            (0..spec.archs.len())
                .flat_map(move |ai| (0..spec.seeds.len()).map(move |si| (mi, ai, si)))
        })
        .collect();
    let total = points.len();
    let selected = points
        .into_iter()
        .enumerate()
        .filter(|(g, _)| shard.is_none_or(|(k, n)| g % n == k - 1))
        .map(|(_, p)| p)
        .collect();
    (total, selected)
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
    let mut out = SweepResults::default();
    let (cost_model, loaded) = load_checked(spec)?;
    let (total_points, selected) = select_points(spec, opts.shard);
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
        progress(&format!(
            "{}: references on {} {}",
            m.name,
            ld.items,
            if ld.lee50.is_some() {
                "documents"
            } else {
                "images"
            }
        ));
        let (summary, ctx_parts) = references(spec, m, ld)?;
        out.models.push(summary);
        let ctx = ctx_parts;
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
            ctx.refs.items,
            |arch, seed| run_point(&ctx, arch, seed),
        );
        record(&mut out, spec, m, &mine, results, &mut progress)?;
    }
    bar.finish_and_clear();
    if let (Some(cm), None) = (&cost_model, opts.shard) {
        progress("cost model");
        (out.energy, out.not_costed) = crate::cost::cost_sweep(spec, cm, &out.rows, &out.models)?;
        out.calibrated_on = cm.paper.as_ref().map(|p| p.calibrate_on.clone());
    }
    Ok(out)
}

/// Most crossbars a design may need for one model, counted as an upper bound
/// (each layer in its design's widest weight slicing). Tiny crossbars on a
/// large model would otherwise exhaust memory with per-crossbar state.
pub const MAX_CROSSBARS: u128 = 1 << 20;

/// `(groups, rows per group, outputs per group)` of a graph's weight layers.
fn graph_shapes(g: &Graph) -> Vec<(usize, usize, usize)> {
    g.layers
        .iter()
        .map(|l| (l.groups(), l.inputs(), l.outputs_per_group()))
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

/// Per point: the row and, when computed, its timing.
pub(crate) type Computed = (ResultRow, Option<PointTime>);

/// Wall clock of one computed point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PointTime {
    /// Seconds to build the design (compile, adaptive slicing, programming).
    pub build_s: f64,
    /// Seconds of the evaluation.
    pub eval_s: f64,
    /// Where the evaluation's time went, summed over batches (thread time).
    pub times: raella_onnx::RunProfile,
}

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
    compute: impl Fn(&crate::spec::Arch, u64) -> anyhow::Result<(ResultRow, PointTime)> + Sync,
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
            let (row, t) = compute(arch, seed)?;
            let ips = units as f64 / t.eval_s.max(1e-9);
            if let Some(c) = cache {
                write_atomic(&c, &serde_json::to_string(&row)?)?;
            }
            bar.set_message(format!("{:.2} per s ({} / {})", ips, m.name, arch.name));
            bar.inc(1);
            Ok((row, Some(t)))
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
        let (row, t) = r?;
        let arch = &spec.archs[ai];
        match t {
            Some(t) => {
                let build_seconds = t.build_s;
                #[allow(clippy::cast_precision_loss)]
                let ips = row.images as f64 / t.eval_s.max(1e-9);
                let total = t.times.total().as_secs_f64().max(1e-12);
                out.timings.push(Timing {
                    model: m.name.clone(),
                    arch: arch.name.clone(),
                    seed: spec.seeds[si],
                    build_seconds,
                    images_per_second: ips,
                    crossbar_share: Some(t.times.products.as_secs_f64() / total),
                    digital_share: Some(t.times.digital.as_secs_f64() / total),
                    glue_share: Some(t.times.layer_glue.as_secs_f64() / total),
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

/// Everything a point of one model shares: the model, its data and the references.
struct PointContext {
    model: QuantModel,
    captured: Vec<Vec<raella_network::QInput>>,
    evaluation: Vec<Vec<Tensor>>,
    refs: RefContext,
}

/// What a model's points need of its references: the evaluated items, their
/// labels (or Lee-50 pairs) and the references' rows, features and predictions.
pub(crate) struct RefContext {
    pub(crate) model: String,
    pub(crate) items: usize,
    pub(crate) labels: Vec<usize>,
    pub(crate) lee50: Option<Lee50>,
    /// Index of the evaluated graph output, and every output's name.
    pub(crate) output: usize,
    pub(crate) output_names: Vec<String>,
    /// The 8-bit reference's evaluated output, one row per item.
    pub(crate) int8: Array2<f32>,
    /// Every output of the 8-bit reference, one row per item (where they stack).
    pub(crate) int8_outputs: Vec<(String, Option<Array2<f32>>)>,
    pub(crate) int8_features: Option<Array2<f32>>,
    pub(crate) fp32_features: Option<Array2<f32>>,
    /// Predictions (argmax, or a document's nearest neighbour).
    pub(crate) pf: Vec<usize>,
    pub(crate) pi: Vec<usize>,
    pub(crate) top1_fp32: Option<f64>,
    pub(crate) top1_int8: Option<f64>,
}

/// What a model's summary needs besides its two reference evaluations: fixed
/// by the model, its calibration and the spec, the same in every image-range
/// shard.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub(crate) struct ModelFacts {
    pub(crate) model: String,
    /// The model file, for messages.
    pub(crate) onnx: String,
    pub(crate) calibration: ImageRange,
    pub(crate) evaluation: ImageRange,
    /// Crossbar layers (`name: outputs x inputs [x groups]`).
    pub(crate) layers: Vec<String>,
    /// Per weight layer, MACs per input vector (inputs x outputs per group x groups).
    pub(crate) layer_macs: Vec<usize>,
    pub(crate) output: usize,
    pub(crate) output_names: Vec<String>,
    pub(crate) histograms: Vec<ColumnSumHistogram>,
}

/// Predictions of an evaluated output: the argmax class, or for a text
/// encoder each document's nearest other document.
fn predictions(rows: &Array2<f32>, text: bool) -> Vec<usize> {
    if text {
        nearest(rows.view())
    } else {
        argmax_rows(rows.view())
    }
}

/// Index of each row's nearest other row by cosine.
fn nearest(e: ArrayView2<'_, f32>) -> Vec<usize> {
    let norms: Vec<f32> = e
        .rows()
        .into_iter()
        .map(|r| r.dot(&r).sqrt().max(f32::MIN_POSITIVE))
        .collect();
    let g = e.dot(&e.t());
    (0..g.nrows())
        .map(|i| {
            (0..g.ncols())
                .filter(|&j| j != i)
                .fold((usize::MAX, f32::NEG_INFINITY), |b, j| {
                    let c = g[[i, j]] / (norms[i] * norms[j]);
                    if c > b.1 { (j, c) } else { b }
                })
                .0
        })
        .collect()
}

/// Every output of an evaluation, one row per item, by name (`None` where
/// batches differ in size, e.g. per-token outputs of documents).
fn all_outputs(names: &[String], ev: &Evaluation) -> Vec<(String, Option<Array2<f32>>)> {
    names
        .iter()
        .enumerate()
        .map(|(k, name)| (name.clone(), ev.output_rows(k).ok()))
        .collect()
}

/// A model's two references on `batches` (a contiguous range of its
/// evaluation batches, the first with batch index `first`): float32 and the
/// 8-bit digital reference, with the quantised model, the captured calibration
/// inputs and the model's facts.
pub(crate) struct ReferenceRun {
    pub(crate) facts: ModelFacts,
    pub(crate) model: QuantModel,
    pub(crate) captured: Vec<Vec<raella_network::QInput>>,
    pub(crate) float: Evaluation,
    pub(crate) int8: Evaluation,
}

/// Runs a model's references on `batches` (see [`ReferenceRun`]).
pub(crate) fn reference_run(
    spec: &Spec,
    m: &ModelSpec,
    graph: Graph,
    calibration: &[Vec<Tensor>],
    aws_calibration: &[Vec<Tensor>],
    batches: &[Vec<Tensor>],
    first: u64,
    output: usize,
    text: bool,
) -> anyhow::Result<ReferenceRun> {
    let ctx = || format!("model \"{}\"", m.name);
    let float = eval_float(&graph, batches).with_context(ctx)?;
    let layer_macs: Vec<usize> = graph
        .layers
        .iter()
        .map(|l| l.inputs() * l.outputs_per_group() * l.groups())
        .collect();
    let output_names: Vec<String> = graph
        .outputs
        .iter()
        .map(|&o| graph.name(o).to_string())
        .collect();
    let model = QuantModel::calibrate(graph, calibration).with_context(ctx)?;
    let runs =
        eval_quant_batches(&model, &ExactBackend::new(&model), batches, first).with_context(ctx)?;
    let int8 = Evaluation::from_batch_runs(model.layers.len(), runs);
    let captured = model.capture_inputs(aws_calibration).with_context(ctx)?;
    let layers: Vec<String> = model
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
    let facts = ModelFacts {
        model: m.name.clone(),
        onnx: m.onnx.display().to_string(),
        calibration: m.calibration,
        evaluation: m.evaluation,
        layers,
        layer_macs,
        output,
        output_names,
        histograms: if text {
            vec![]
        } else {
            column_sum_histograms(spec, &model, &captured)?
        },
    };
    Ok(ReferenceRun {
        facts,
        model,
        captured,
        float,
        int8,
    })
}

/// Labels must be classes of the evaluated output (`classes` values per item).
pub(crate) fn check_labels(
    model: &str,
    onnx: &str,
    labels: &[usize],
    first: usize,
    classes: usize,
) -> anyhow::Result<()> {
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        anyhow::bail!(
            "model \"{model}\": label {} of the evaluation is {l}, but {onnx} has {classes} output classes (0..={})",
            first + i,
            classes.saturating_sub(1)
        );
    }
    Ok(())
}

/// A model's summary and what its points share, from its facts and its two
/// reference evaluations over every evaluation batch in order (an unsharded
/// run's, or `merge`'s from image-range parts: the same computation).
pub(crate) fn summarise_references(
    facts: &ModelFacts,
    items: usize,
    labels: Vec<usize>,
    lee50: Option<Lee50>,
    float: &Evaluation,
    int8: &Evaluation,
) -> anyhow::Result<(ModelSummary, RefContext)> {
    let ctx = || format!("model \"{}\"", facts.model);
    let text = lee50.is_some();
    let fp32 = float.output_rows(facts.output).with_context(ctx)?;
    check_labels(&facts.model, &facts.onnx, &labels, 0, fp32.ncols())?;
    let n = items.max(1);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let macs_per_image = facts
        .layer_macs
        .iter()
        .zip(&float.vectors)
        .map(|(&lm, &v)| (v * lm) as f64)
        .sum::<f64>()
        / n as f64;
    let int8_rows = int8.output_rows(facts.output).with_context(ctx)?;
    let (pf, pi) = (predictions(&fp32, text), predictions(&int8_rows, text));
    let (top1_fp32, top1_int8) = (accuracy(&pf, &labels), accuracy(&pi, &labels));
    let (fp32_features, int8_features) = if text {
        (Some(fp32.clone()), Some(int8_rows.clone()))
    } else {
        (float.feature_rows(), int8.feature_rows())
    };
    let correlations = match &lee50 {
        Some(lee) => {
            let (cf, ci) = (
                lee.correlations(fp32.view())?,
                lee.correlations(int8_rows.view())?,
            );
            Some(ReferenceCorrelations {
                pearson_fp32: cf.pearson,
                spearman_fp32: cf.spearman,
                pearson_int8: ci.pearson,
                spearman_int8: ci.spearman,
            })
        }
        None => None,
    };
    let summary = ModelSummary {
        model: facts.model.clone(),
        calibration: facts.calibration,
        evaluation: facts.evaluation,
        layers: facts.layers.clone(),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        macs_per_image: macs_per_image.round() as u64,
        digital_macs_per_image: float.times.digital_macs / n as u64,
        top1_fp32,
        top1_int8,
        agreement_int8_fp32: agreement(&pi, &pf),
        feature_cosine_int8_fp32: match (&int8_features, &fp32_features) {
            (Some(a), Some(b)) => mean_row_cosine(a.view(), b.view()),
            _ => 0.0,
        },
        correlations,
        histograms: facts.histograms.clone(),
    };
    let int8_outputs = all_outputs(&facts.output_names, int8);
    Ok((
        summary,
        RefContext {
            model: facts.model.clone(),
            items,
            labels,
            lee50,
            output: facts.output,
            output_names: facts.output_names.clone(),
            int8: int8_rows,
            int8_outputs,
            int8_features,
            fp32_features,
            pf,
            pi,
            top1_fp32,
            top1_int8,
        },
    ))
}

/// The references of a model (float32 and the 8-bit digital reference), its
/// summary and what its points share.
fn references(
    spec: &Spec,
    m: &ModelSpec,
    ld: LoadedModel,
) -> anyhow::Result<(ModelSummary, PointContext)> {
    let text = ld.lee50.is_some();
    let r = reference_run(
        spec,
        m,
        ld.graph,
        &ld.calibration,
        &ld.aws_calibration,
        &ld.evaluation,
        0,
        ld.output,
        text,
    )?;
    let (summary, refs) =
        summarise_references(&r.facts, ld.items, ld.labels, ld.lee50, &r.float, &r.int8)?;
    Ok((
        summary,
        PointContext {
            model: r.model,
            captured: r.captured,
            evaluation: ld.evaluation,
            refs,
        },
    ))
}

/// The cache format; bump when a result row's meaning changes.
const CACHE_VERSION: &str = "raella-sweep-point-v6";

fn hash_model_files(m: &ModelSpec) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    let mut files = vec![m.onnx.clone()];
    if let Some(t) = &m.text {
        files.push(t.tokenizer.clone());
        files.extend(
            ["lee.cor", "similarities0-1.txt"]
                .iter()
                .map(|f| t.lee50.join(f)),
        );
        files.push(t.texts.clone());
    } else if m.images.is_dir() {
        // The files the model reads, and only those (a large unrelated file in
        // the folder is not hashed).
        if m.class_folders {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(&m.images)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            dirs.sort();
            for d in dirs {
                files.extend(raella_data::image_files(&d)?);
            }
        } else {
            files.extend(raella_data::image_files(&m.images)?);
        }
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
        "{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{:?}",
        m.name,
        m.scale,
        m.mean,
        m.std,
        m.calibration,
        m.evaluation,
        m.input_shape,
        m.output,
        m.class_folders,
        m.text.as_ref().map(|t| t.max_tokens)
    ));
    h.update(serde_json::to_string(&arch.knobs).unwrap_or_default());
    // A programming table is named by path: its content keys the point too.
    let table = arch.knobs.programming_noise.as_deref().unwrap_or("");
    if !table.is_empty()
        && let Ok(text) = read_text(std::path::Path::new(table), FileKind::Text)
    {
        h.update(text);
    }
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

pub(crate) fn progress_bar(n: usize, wanted: bool) -> ProgressBar {
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

/// What a per-layer row needs to know of a crossbar layer besides its run:
/// everything of [`LayerRow`] that statistics do not give, fixed when the
/// design is built. An image-range shard writes these with its statistics so
/// that `merge` computes the rows with [`layer_row`], as an unsharded run does.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub(crate) struct LayerStatic {
    pub(crate) name: String,
    pub(crate) kind: String,
    /// `outputs x inputs [x groups]`.
    pub(crate) matrix: String,
    pub(crate) weight_slicing: String,
    pub(crate) cim_units_per_weight: usize,
    pub(crate) speculation: bool,
    pub(crate) crossbars: usize,
    pub(crate) utilisation: f64,
    pub(crate) groups: usize,
    /// Rows (inputs) and filters (outputs) of one group's matrix.
    pub(crate) rows: usize,
    pub(crate) filters: usize,
    pub(crate) signed: bool,
    /// A linear layer's tensor sizes follow its vectors; a convolution's are
    /// `in_elems` / `out_elems`, measured on the calibration images.
    pub(crate) linear: bool,
    pub(crate) in_elems: f64,
    pub(crate) out_elems: f64,
    /// Input slices per pass of the design.
    pub(crate) input_slices: usize,
}

/// The per-layer row of a point: `st` summed over `images` images.
pub(crate) fn layer_row(shape: &LayerStatic, st: &LayerStats, images: f64) -> LayerRow {
    // A linear layer's tensors are its vectors times their width; a conv's
    // were measured on the calibration images (all images share them).
    #[allow(clippy::cast_precision_loss)]
    let (in_elems, out_elems) = if shape.linear {
        let v = st.vectors as f64 / images;
        (v * shape.rows as f64, v * shape.filters as f64)
    } else {
        (shape.in_elems, shape.out_elems)
    };
    LayerRow {
        layer: shape.name.clone(),
        kind: shape.kind.clone(),
        matrix: shape.matrix.clone(),
        weight_slicing: shape.weight_slicing.clone(),
        vectors_per_image: st.vectors as f64 / images,
        in_range_fraction: st.in_range_fraction(),
        exact_fraction: st.exact_fraction(),
        recovery_rate: st.recovery_rate(),
        converts_per_mac: st.converts_per_mac(),
        adc_action_share: st.adc_action_share(shape.input_slices),
        average_cell_value: st.average_cell_value(),
        average_input_pulses: st.average_input_pulses(),
        cim_units_per_weight: shape.cim_units_per_weight,
        speculation: shape.speculation,
        crossbars: shape.crossbars,
        utilisation: shape.utilisation,
        groups: shape.groups,
        rows: shape.rows,
        filters: shape.filters,
        passes: if shape.signed { 2.0 } else { 1.0 },
        in_elems,
        out_elems,
        conversions_per_image: st.activity.conversions as f64 / images,
        row_drives_per_image: st.activity.row_drives as f64 / images,
        input_pulses_per_image: st.activity.input_pulses as f64 / images,
        cell_charge_per_image: st.activity.cell_charge
            / f64::from(st.activity.max_level.max(1))
            / images,
        layer_rel_err: st.checked_rel_err(),
    }
}

/// The fixed part of every weight layer's row of `model` on `backend`.
pub(crate) fn layer_statics(
    model: &QuantModel,
    backend: &CrossbarBackend,
    arch: &crate::spec::Arch,
) -> Vec<LayerStatic> {
    let input_slices = arch.config().run.input.slicing().len();
    model
        .layers
        .iter()
        .enumerate()
        .map(|(l, ql)| {
            let programmed = &backend.layers()[l];
            let ms = programmed[0].mapped().stats();
            let slices = programmed
                .iter()
                .map(|p| p.mapped().weight_slicing().len())
                .max()
                .unwrap_or(0);
            let w = &ql.groups[0].weights;
            let groups = ql.groups.len();
            LayerStatic {
                name: ql.name.clone(),
                kind: ql.info.kind.to_string(),
                matrix: format!(
                    "{} x {}{}",
                    w.nrows(),
                    w.ncols(),
                    if groups > 1 {
                        format!(" x {groups}")
                    } else {
                        String::new()
                    }
                ),
                weight_slicing: backend.slicings()[l].clone(),
                cim_units_per_weight: slices,
                speculation: arch.speculative(),
                crossbars: ms.crossbars,
                utilisation: ms.utilisation,
                groups,
                rows: w.ncols(),
                filters: w.nrows(),
                signed: ql.signed_input,
                linear: ql.info.kind == "Linear",
                in_elems: ql.info.in_elems,
                out_elems: ql.info.out_elems,
                input_slices,
            }
        })
        .collect()
}

/// The per-layer rows of a design from its layers' fixed parts and `stats`
/// (per weight layer, summed over `items` items: an evaluation's or one
/// run's), and all layers' statistics summed.
pub(crate) fn rows_of_layers(
    statics: &[LayerStatic],
    stats: &[Option<LayerStats>],
    items: usize,
) -> (Vec<LayerRow>, LayerStats) {
    let mut total = LayerStats::default();
    #[allow(clippy::cast_precision_loss)]
    let items = items.max(1) as f64;
    let mut layers = Vec::new();
    for (shape, st) in statics.iter().zip(stats) {
        let st = st.clone().unwrap_or_default();
        total += &st;
        layers.push(layer_row(shape, &st, items));
    }
    (layers, total)
}

/// The per-layer rows of `model` on `backend` from `stats` (per weight layer,
/// summed over `items` items: an evaluation's or one run's), and all layers'
/// statistics summed.
pub(crate) fn layer_rows(
    model: &QuantModel,
    backend: &CrossbarBackend,
    stats: &[Option<LayerStats>],
    items: usize,
    arch: &crate::spec::Arch,
) -> (Vec<LayerRow>, LayerStats) {
    rows_of_layers(&layer_statics(model, backend, arch), stats, items)
}

fn run_point(
    ctx: &PointContext,
    arch: &crate::spec::Arch,
    seed: u64,
) -> anyhow::Result<(ResultRow, PointTime)> {
    let model = &ctx.model;
    let cfg = arch.config();
    let t0 = Instant::now();
    let backend = CrossbarBackend::build(model, &cfg, &ctx.captured, seed)?;
    let t1 = Instant::now();
    let ev = eval_quant(model, &backend, &ctx.evaluation)?;
    let (build_s, eval_s) = (
        t1.duration_since(t0).as_secs_f64(),
        t1.elapsed().as_secs_f64(),
    );
    let statics = layer_statics(model, &backend, arch);
    let row = point_row(&ctx.refs, &arch.name, seed, &statics, &ev)?;
    Ok((
        row,
        PointTime {
            build_s,
            eval_s,
            times: ev.times,
        },
    ))
}

/// A point's result row from its whole evaluation (`ev`, every batch in
/// order), its layers' fixed parts and the model's references: what an
/// unsharded run computes, and what `merge` computes from image-range parts.
pub(crate) fn point_row(
    refs: &RefContext,
    arch: &str,
    seed: u64,
    statics: &[LayerStatic],
    ev: &Evaluation,
) -> anyhow::Result<ResultRow> {
    let text = refs.lee50.is_some();
    let rows = ev.output_rows(refs.output)?;
    let pred = predictions(&rows, text);
    let (layers, total) = rows_of_layers(statics, &ev.layer_stats, refs.items);
    let outputs = all_outputs(&refs.output_names, ev);
    let output_errors: Vec<OutputFidelity> = outputs
        .iter()
        .zip(&refs.int8_outputs)
        .filter_map(|((name, y), (_, r))| match (y, r) {
            (Some(y), Some(r)) => Some(OutputFidelity {
                output: name.clone(),
                rel_err_int8: mean_rel_err(y.view(), r.view()),
            }),
            _ => None,
        })
        .collect();
    let features = if text {
        Some(rows.clone())
    } else {
        ev.feature_rows()
    };
    let cos = |r: &Option<Array2<f32>>| match (&features, r) {
        (Some(a), Some(b)) => mean_row_cosine(a.view(), b.view()),
        _ => 0.0,
    };
    let corr = match &refs.lee50 {
        Some(lee) => Some(lee.correlations(rows.view())?),
        None => None,
    };
    Ok(ResultRow {
        model: refs.model.clone(),
        arch: arch.to_string(),
        seed,
        images: refs.items,
        top1: accuracy(&pred, &refs.labels),
        top1_fp32: refs.top1_fp32,
        top1_int8: refs.top1_int8,
        agreement_int8: agreement(&pred, &refs.pi),
        output_rel_err_int8: mean_rel_err(rows.view(), refs.int8.view()),
        in_range_fraction: total.in_range_fraction(),
        recovery_rate: total.recovery_rate(),
        converts_per_mac: total.converts_per_mac(),
        exact_fraction: total.exact_fraction(),
        agreement_fp32: agreement(&pred, &refs.pf),
        feature_cosine_int8: cos(&refs.int8_features),
        feature_cosine_fp32: cos(&refs.fp32_features),
        pearson: corr.as_ref().map(|c| c.pearson),
        spearman: corr.as_ref().map(|c| c.spearman),
        output_errors,
        layers,
    })
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
    let Some((l, ql)) = model
        .layers
        .iter()
        .enumerate()
        .max_by_key(|(_, ql)| ql.groups[0].weights.len())
    else {
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
