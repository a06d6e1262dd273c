//! Text-encoder models in a sweep: a BERT encoder (all-MiniLM-L6-v2) scored on
//! the Lee-50 document-similarity benchmark.
//!
//! The float32 and 8-bit digital references run once per model; each point
//! programs the design's crossbars with the 36 linear layers and embeds the
//! evaluation documents. A row's fields mean, for documents:
//! `agreement_*` is the share of documents whose nearest neighbour (highest
//! embedding cosine among the other evaluation documents) is the reference's;
//! `output_rel_err_int8` is the mean `||e - e_int8|| / ||e_int8||` of the
//! embeddings; `feature_cosine_*` is the mean embedding cosine to the
//! reference; `pearson` / `spearman` score the embedding cosines against the
//! human ratings. Top-1 does not apply.

use std::time::Instant;

use anyhow::Context;
use indicatif::ProgressBar;
use ndarray::ArrayView2;
use raella_network::{BertModel, CrossbarBackend, Lee50, mean_row_cosine};
use raella_runtime::LayerStats;

use crate::run::{
    Computed, LayerShape, ModelSummary, ReferenceCorrelations, ResultRow, RunOptions, agreement,
    layer_row, mean_rel_err, run_points,
};
use crate::spec::{BertFiles, ModelSpec, Spec};

/// A text model with its evaluation documents and calibration texts.
pub(crate) struct LoadedText {
    model: BertModel,
    lee: Lee50,
    calibration: Vec<String>,
}

impl LoadedText {
    /// Evaluation documents.
    pub(crate) fn documents(&self) -> usize {
        self.lee.documents.len()
    }

    /// `(1, inputs, outputs)` of each crossbar layer.
    pub(crate) fn crossbar_shapes(&self) -> Vec<(usize, usize, usize)> {
        self.model
            .linears
            .iter()
            .map(|l| (1, l.weight.ncols(), l.weight.nrows()))
            .collect()
    }
}

/// Loads the encoder, the Lee-50 documents of the evaluation range (with the
/// pairs among them) and the calibration lines.
pub(crate) fn load_text(m: &ModelSpec, b: &BertFiles) -> anyhow::Result<LoadedText> {
    let ctx = || format!("model \"{}\"", m.name);
    let model = BertModel::load(&b.model).with_context(ctx)?;
    let lee = Lee50::load(&b.lee50).with_context(ctx)?;
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
        b.lee50.display()
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
    let text = raella_network::files::read_text(&b.texts, raella_network::files::FileKind::Text)
        .with_context(ctx)?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
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
        b.texts.display()
    );
    Ok(LoadedText {
        model,
        lee,
        calibration: lines[c.start..c.start + c.count].to_vec(),
    })
}

/// Index of each row's nearest other row by dot product (rows are unit vectors).
fn nearest(e: ArrayView2<'_, f32>) -> Vec<usize> {
    let g = e.dot(&e.t());
    (0..g.nrows())
        .map(|i| {
            (0..g.ncols())
                .filter(|&j| j != i)
                .fold((usize::MAX, f32::NEG_INFINITY), |b, j| {
                    if g[[i, j]] > b.1 { (j, g[[i, j]]) } else { b }
                })
                .0
        })
        .collect()
}

/// Runs the references and the points `mine` of a text model.
pub(crate) fn run_text(
    spec: &Spec,
    opts: &RunOptions,
    m: &ModelSpec,
    t: &LoadedText,
    mine: &[(usize, usize)],
    model_hash: Option<&str>,
    bar: &ProgressBar,
) -> anyhow::Result<(ModelSummary, Vec<anyhow::Result<Computed>>)> {
    let docs = &t.lee.documents;
    let float = t.model.embed_float(docs)?;
    let quant = t.model.quantize(&t.calibration)?;
    let int8 = quant.embed(&quant.exact_backend(), docs)?;
    let captured = quant.capture_inputs(&t.calibration)?;
    let cf = t.lee.correlations(float.view())?;
    let ci = t.lee.correlations(int8.embeddings.view())?;
    let (nf, ni) = (nearest(float.view()), nearest(int8.embeddings.view()));
    let n = docs.len();
    let tokens = int8.tokens.iter().sum::<usize>() as f64 / n as f64;
    let summary = ModelSummary {
        model: m.name.clone(),
        calibration: m.calibration,
        evaluation: m.evaluation,
        layers: quant
            .layers
            .iter()
            .map(|l| {
                let w = &l.weights.weights;
                format!("{}: {} x {}", l.name, w.nrows(), w.ncols())
            })
            .collect(),
        // Rounded mean over the documents.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        macs_per_image: (t.model.crossbar_macs_per_token() as f64 * tokens).round() as u64,
        top1_fp32: None,
        top1_int8: None,
        agreement_int8_fp32: agreement(&ni, &nf),
        feature_cosine_int8_fp32: mean_row_cosine(int8.embeddings.view(), float.view()),
        correlations: Some(ReferenceCorrelations {
            pearson_fp32: cf.pearson,
            spearman_fp32: cf.spearman,
            pearson_int8: ci.pearson,
            spearman_int8: ci.spearman,
        }),
        histograms: vec![],
    };
    let layers = quant.crossbar_layers();
    let results = run_points(spec, opts, m, model_hash, mine, bar, n, |arch, seed| {
        let cfg = arch.config();
        let t0 = Instant::now();
        let backend = CrossbarBackend::build_layers(&layers, &cfg, &captured, seed)?;
        let t1 = Instant::now();
        let ev = quant.embed(&backend, docs)?;
        let (build_s, eval_s) = (
            t1.duration_since(t0).as_secs_f64(),
            t1.elapsed().as_secs_f64(),
        );
        let mut total = LayerStats::default();
        let mut rows = Vec::new();
        for (i, (ql, st)) in quant.layers.iter().zip(&ev.layer_stats).enumerate() {
            let st = st.clone().unwrap_or_default();
            total += &st;
            let w = &ql.weights.weights;
            rows.push(layer_row(
                LayerShape {
                    name: &ql.name,
                    kind: "Linear",
                    weights: w,
                    groups: 1,
                    signed: ql.signed_input,
                    in_elems: tokens * w.ncols() as f64,
                    out_elems: tokens * w.nrows() as f64,
                },
                &backend.layers()[i],
                &backend.slicings()[i],
                &st,
                n as f64,
                arch,
            ));
        }
        let c = t.lee.correlations(ev.embeddings.view())?;
        let nd = nearest(ev.embeddings.view());
        let row = ResultRow {
            model: m.name.clone(),
            arch: arch.name.clone(),
            seed,
            images: n,
            top1: None,
            top1_fp32: None,
            top1_int8: None,
            agreement_int8: agreement(&nd, &ni),
            output_rel_err_int8: mean_rel_err(ev.embeddings.view(), int8.embeddings.view()),
            in_range_fraction: total.in_range_fraction(),
            recovery_rate: total.recovery_rate(),
            converts_per_mac: total.converts_per_mac(),
            exact_fraction: total.exact_fraction(),
            agreement_fp32: agreement(&nd, &nf),
            feature_cosine_int8: mean_row_cosine(ev.embeddings.view(), int8.embeddings.view()),
            feature_cosine_fp32: mean_row_cosine(ev.embeddings.view(), float.view()),
            pearson: Some(c.pearson),
            spearman: Some(c.spearman),
            layers: rows,
        };
        Ok((row, build_s, eval_s))
    });
    Ok((summary, results))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn nearest_skips_self_and_takes_the_highest_cosine() {
        let e = Array2::from_shape_vec((3, 2), vec![1.0, 0.0, 0.8, 0.6, 0.0, 1.0]).unwrap();
        assert_eq!(nearest(e.view()), vec![1, 0, 1]);
    }
}
