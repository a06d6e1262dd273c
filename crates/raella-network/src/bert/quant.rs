//! The encoder's linear layers as 8-bit crossbar layers, following the CNN
//! path's convention (`crate::quant`): int8 per-output-channel weights; one
//! activation scale per layer input, calibrated with the float32 model on
//! calibration texts (`max / 255` as uint8 if the input was never negative
//! there, else `max |x| / 127` as int8, run as two crossbar passes);
//! `y = y_int * s_w[f] * s_x + b[f]`.

use std::cell::RefCell;
use std::sync::Mutex;

use ndarray::{Array1, Array2, ArrayView2, Axis, concatenate};
use raella_compiler::{QuantizedMatrix, quantize_per_channel};
use raella_runtime::LayerStats;
use rayon::prelude::*;

use super::forward::{Linears, add_bias, encode, float_linear};
use super::{BertModel, stack_rows};
use crate::NetworkError;
use crate::quant::{ExactBackend, MacBackend, QInput, quantize_input};

/// One crossbar layer of the encoder.
#[derive(Debug, Clone)]
pub struct BertQuantLayer {
    /// Name, e.g. `layer0.q`, `layer5.ffn2`.
    pub name: String,
    /// Input activation scale: real value = code * scale.
    pub input_scale: f32,
    /// Inputs are int8 (two crossbar passes) instead of uint8.
    pub signed_input: bool,
    /// Int8 weights (outputs x inputs) and per-output scales.
    pub weights: QuantizedMatrix,
    /// Float bias per output.
    pub bias: Vec<f32>,
}

/// A [`BertModel`] with its 8-bit crossbar layers.
#[derive(Debug, Clone)]
pub struct QuantBert<'m> {
    /// The float model (embeddings, LayerNorms, tokenizer).
    pub model: &'m BertModel,
    /// The crossbar layers in execution order (`BertModel::linears` order).
    pub layers: Vec<BertQuantLayer>,
}

/// Embeddings of a set of documents and the crossbar statistics.
#[derive(Debug, Clone)]
pub struct BertEmbeddings {
    /// L2-normalised embeddings, documents x hidden.
    pub embeddings: Array2<f32>,
    /// Per crossbar layer, statistics summed over the documents (simulated
    /// designs only).
    pub layer_stats: Vec<Option<LayerStats>>,
    /// Tokens per document (crossbar input vectors per layer; signed layers
    /// run each vector twice).
    pub tokens: Vec<usize>,
}

/// One document's quantised run.
struct DocRun {
    embedding: Array1<f32>,
    stats: Vec<Option<LayerStats>>,
    tokens: usize,
    inputs: Option<Vec<QInput>>,
}

/// Records min and max of each linear layer's input during float runs.
struct RangeRecorder<'a> {
    model: &'a BertModel,
    ranges: Mutex<Vec<(f32, f32)>>,
}

impl Linears for RangeRecorder<'_> {
    fn linear(&self, layer: usize, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, NetworkError> {
        crate::quant::widen_range(
            &mut self.ranges.lock().expect("no panics while held")[layer],
            x,
        );
        Ok(float_linear(self.model, layer, x))
    }
}

/// One document's quantised run: statistics and (optionally) the 8-bit inputs.
struct QuantLinears<'a, B> {
    q: &'a QuantBert<'a>,
    backend: &'a B,
    doc: u64,
    stats: RefCell<Vec<Option<LayerStats>>>,
    capture: Option<RefCell<Vec<Option<QInput>>>>,
}

impl<B: MacBackend> Linears for QuantLinears<'_, B> {
    fn linear(&self, layer: usize, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, NetworkError> {
        let ql = &self.q.layers[layer];
        let xq = quantize_input(x, ql.input_scale, ql.signed_input);
        let (y, st) = self.backend.mac(layer, 0, &xq, self.doc)?;
        if y.dim() != (x.nrows(), ql.bias.len()) {
            return Err(NetworkError::BadInput(format!(
                "layer `{}`: the backend returned {:?} outputs, expected {:?}",
                ql.name,
                y.dim(),
                (x.nrows(), ql.bias.len())
            )));
        }
        if let Some(cap) = &self.capture {
            cap.borrow_mut()[layer] = Some(xq);
        }
        if let Some(st) = st {
            self.stats.borrow_mut()[layer] = Some(st);
        }
        let sx = f64::from(ql.input_scale);
        let mut out = Array2::<f32>::zeros(y.dim());
        for (yrow, mut orow) in y.rows().into_iter().zip(out.rows_mut()) {
            for ((o, &v), &sw) in orow.iter_mut().zip(yrow).zip(&ql.weights.scales) {
                // Exact integer times the combined scale; the narrowing is the
                // requantisation's own rounding.
                #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
                {
                    *o = (v as f64 * f64::from(sw) * sx) as f32;
                }
            }
        }
        add_bias(&mut out, &ql.bias);
        Ok(out)
    }
}

impl BertModel {
    /// Quantises the linear layers: int8 weights, and activation scales from
    /// float32 runs on `calibration` texts.
    ///
    /// # Errors
    /// No calibration text, tokenizer errors, or a layer the compiler rejects.
    pub fn quantize<S: AsRef<str> + Sync>(
        &self,
        calibration: &[S],
    ) -> Result<QuantBert<'_>, NetworkError> {
        if calibration.is_empty() {
            return Err(NetworkError::BadInput(
                "calibration needs at least one text".into(),
            ));
        }
        let rec = RangeRecorder {
            model: self,
            ranges: Mutex::new(vec![(f32::INFINITY, f32::NEG_INFINITY); self.linears.len()]),
        };
        calibration.par_iter().try_for_each(|t| {
            let tok = self.tokenize(t.as_ref())?;
            encode(self, &tok, &rec).map(|_| ())
        })?;
        let ranges = rec.ranges.into_inner().expect("no panics while held");
        let layers = self
            .linears
            .iter()
            .zip(ranges)
            .map(|(lin, (lo, hi))| {
                let (input_scale, signed_input) = crate::quant::activation_scale(lo, hi);
                let weights =
                    quantize_per_channel(lin.weight.view()).map_err(|e| NetworkError::Compile {
                        layer: lin.name.clone(),
                        source: e,
                    })?;
                Ok(BertQuantLayer {
                    name: lin.name.clone(),
                    input_scale,
                    signed_input,
                    weights,
                    bias: lin.bias.clone(),
                })
            })
            .collect::<Result<_, NetworkError>>()?;
        Ok(QuantBert {
            model: self,
            layers,
        })
    }
}

impl QuantBert<'_> {
    /// The crossbar layers for `CrossbarBackend::build_layers` (one group each).
    #[must_use]
    pub fn crossbar_layers(&self) -> Vec<(&str, &[QuantizedMatrix])> {
        self.layers
            .iter()
            .map(|l| (l.name.as_str(), std::slice::from_ref(&l.weights)))
            .collect()
    }

    /// The 8-bit digital reference for these layers.
    #[must_use]
    pub fn exact_backend(&self) -> ExactBackend {
        let layers: Vec<&[QuantizedMatrix]> = self
            .layers
            .iter()
            .map(|l| std::slice::from_ref(&l.weights))
            .collect();
        ExactBackend::from_layers(&layers)
    }

    fn run_doc(
        &self,
        backend: &impl MacBackend,
        text: &str,
        doc: u64,
        capture: bool,
    ) -> Result<DocRun, NetworkError> {
        let tok = self.model.tokenize(text)?;
        let n = self.layers.len();
        let lin = QuantLinears {
            q: self,
            backend,
            doc,
            stats: RefCell::new(vec![None; n]),
            capture: capture.then(|| RefCell::new(vec![None; n])),
        };
        let e = encode(self.model, &tok, &lin)?;
        let cap = lin.capture.map(|c| {
            c.into_inner()
                .into_iter()
                .map(|q| q.expect("every layer ran"))
                .collect()
        });
        Ok(DocRun {
            embedding: e,
            stats: lin.stats.into_inner(),
            tokens: tok.ids.len(),
            inputs: cap,
        })
    }

    /// Embeddings with `backend` for the linear layers (documents in parallel;
    /// document `i` runs with `batch_index = i`). Statistics are summed over
    /// documents in document order.
    ///
    /// # Errors
    /// Tokenizer or backend errors.
    pub fn embed<S: AsRef<str> + Sync>(
        &self,
        backend: &impl MacBackend,
        texts: &[S],
    ) -> Result<BertEmbeddings, NetworkError> {
        let docs: Vec<_> = texts
            .par_iter()
            .enumerate()
            .map(|(i, t)| self.run_doc(backend, t.as_ref(), i as u64, false))
            .collect::<Result<_, _>>()?;
        let mut layer_stats: Vec<Option<LayerStats>> = vec![None; self.layers.len()];
        for d in &docs {
            crate::eval::add_layer_stats(&mut layer_stats, &d.stats);
        }
        let rows: Vec<Array1<f32>> = docs.iter().map(|d| d.embedding.clone()).collect();
        Ok(BertEmbeddings {
            embeddings: stack_rows(&rows, self.model.config.hidden_size),
            layer_stats,
            tokens: docs.iter().map(|d| d.tokens).collect(),
        })
    }

    /// Every crossbar layer's 8-bit input vectors (`[layer][group 0]`, all
    /// documents' tokens in document order) from the 8-bit reference run on
    /// `texts`: the calibration data of `CrossbarBackend::build_layers`.
    ///
    /// # Errors
    /// Tokenizer errors, or no text.
    pub fn capture_inputs<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
    ) -> Result<Vec<Vec<QInput>>, NetworkError> {
        if texts.is_empty() {
            return Err(NetworkError::BadInput(
                "capturing inputs needs at least one text".into(),
            ));
        }
        let backend = self.exact_backend();
        let docs: Vec<Vec<QInput>> = texts
            .par_iter()
            .enumerate()
            .map(|(i, t)| {
                self.run_doc(&backend, t.as_ref(), i as u64, true)
                    .map(|d| d.inputs.expect("captured"))
            })
            .collect::<Result<_, _>>()?;
        Ok((0..self.layers.len())
            .map(|l| {
                let q = if self.layers[l].signed_input {
                    let v: Vec<_> = docs
                        .iter()
                        .map(|d| match &d[l] {
                            QInput::Signed(x) => x.view(),
                            QInput::Unsigned(_) => unreachable!("signed layer"),
                        })
                        .collect();
                    QInput::Signed(concatenate(Axis(0), &v).expect("same width"))
                } else {
                    let v: Vec<_> = docs
                        .iter()
                        .map(|d| match &d[l] {
                            QInput::Unsigned(x) => x.view(),
                            QInput::Signed(_) => unreachable!("unsigned layer"),
                        })
                        .collect();
                    QInput::Unsigned(concatenate(Axis(0), &v).expect("same width"))
                };
                vec![q]
            })
            .collect())
    }
}
