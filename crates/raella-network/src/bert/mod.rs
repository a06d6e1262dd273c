//! A BERT sentence encoder (all-MiniLM-L6-v2 and any BERT of that shape) in
//! float32 and quantised on crossbars.
//!
//! * [`BertModel::load`] reads a folder with `config.json`, `model.safetensors`
//!   (F32, F16 or BF16 tensors) and `tokenizer.json` (the `tokenizers` crate
//!   with its own normaliser, pre-tokeniser and `[CLS] ... [SEP]` template;
//!   padding off, truncation at [`MAX_TOKENS`]).
//! * [`BertModel::embed_float`]: the float32 reference: embeddings, encoder
//!   layers (self-attention, erf-GELU FFN, post-LayerNorm), mean pooling over
//!   the tokens, L2 normalisation.
//! * [`BertModel::quantize`] -> [`QuantBert`]: the `6 x num_layers` linear
//!   layers (Q, K, V, attention output, FFN1, FFN2 of every encoder layer) become
//!   crossbar layers with int8 per-channel weights and one 8-bit activation
//!   scale each, calibrated with the float model on calibration texts.
//!   [`QuantBert::embed`] runs them through any [`MacBackend`]
//!   ([`ExactBackend`]: the 8-bit digital reference; `CrossbarBackend`: a
//!   simulated design). Embeddings, LayerNorm, GELU, softmax, the attention
//!   score and value products, residual adds and pooling stay digital in f32:
//!   their operands are both activations, which a weight-stationary crossbar
//!   does not hold.
//!
//! Documents run one by one (no padding, so no pad token ever reaches a
//! crossbar), in parallel over documents; a document's index is its
//! `batch_index`, so read noise does not depend on the thread count.

mod forward;
mod load;
mod quant;

use std::path::Path;

use ndarray::{Array1, Array2};
use rayon::prelude::*;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::NetworkError;
use crate::files::FileKind;
pub use load::parse_config;
pub use quant::{BertEmbeddings, BertQuantLayer, QuantBert};

/// Truncation length (tokens, including `[CLS]` and `[SEP]`): sentence-transformers'
/// `max_seq_length` for all-MiniLM-L6-v2 (its `tokenizer.json` says 128; no
/// Lee-50 document is longer than 154 tokens, so 256 truncates none of them).
pub const MAX_TOKENS: usize = 256;

/// The names of an encoder layer's crossbar layers, in execution order.
pub const LAYER_KINDS: [&str; 6] = ["q", "k", "v", "o", "ffn1", "ffn2"];

/// The hint attached to a missing model or data file.
pub const FETCH_HINT: &str = "run `cargo xtask fetch-models` to extract it into .cache/models";

/// Reads a file of the fetched model cache (a regular file of at most
/// `kind`'s limit); a missing file is [`NetworkError::Missing`] with [`FETCH_HINT`].
pub(crate) fn read_cached(path: &Path, kind: FileKind) -> Result<Vec<u8>, NetworkError> {
    if !path.exists() {
        return Err(NetworkError::Missing {
            path: path.to_path_buf(),
            hint: FETCH_HINT,
        });
    }
    crate::files::read_file(path, kind)
}

/// The fields of a Hugging Face BERT `config.json` the encoder uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Word-piece vocabulary size.
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads (`hidden_size` must be a multiple).
    pub num_attention_heads: usize,
    /// FFN width.
    pub intermediate_size: usize,
    /// Position embeddings (longest input).
    pub max_position_embeddings: usize,
    /// Token-type (segment) embeddings.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Activation; only `gelu` (the exact erf form) is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Only `absolute` is supported.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    /// Width of one attention head.
    #[must_use]
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// A float linear layer (`weight`: outputs x inputs, as PyTorch stores it).
#[derive(Debug, Clone)]
pub struct BertLinear {
    /// Crossbar-layer name, e.g. `layer0.q`.
    pub name: String,
    /// Weights, outputs x inputs.
    pub weight: Array2<f32>,
    /// Bias per output.
    pub bias: Vec<f32>,
}

#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    pub(crate) gamma: Array1<f32>,
    pub(crate) beta: Array1<f32>,
}

/// A loaded BERT encoder with its tokenizer.
#[derive(Debug, Clone)]
pub struct BertModel {
    /// The configuration.
    pub config: BertConfig,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) word: Array2<f32>,
    pub(crate) position: Array2<f32>,
    pub(crate) token_type: Array2<f32>,
    pub(crate) emb_ln: LayerNorm,
    /// The crossbar layers in execution order (`6 x num_hidden_layers`).
    pub linears: Vec<BertLinear>,
    /// Per encoder layer: the LayerNorm after attention and after the FFN.
    pub(crate) norms: Vec<(LayerNorm, LayerNorm)>,
    max_tokens: usize,
}

/// Token ids of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Word-piece ids, `[CLS]` first and `[SEP]` last.
    pub ids: Vec<u32>,
    /// Segment ids (all 0 for a single text).
    pub type_ids: Vec<u32>,
}

impl BertModel {
    /// Loads `dir/config.json`, `dir/model.safetensors` and `dir/tokenizer.json`,
    /// truncating inputs at [`MAX_TOKENS`] (or at the model's position
    /// embeddings if there are fewer).
    ///
    /// # Errors
    /// A missing folder or file (naming it, with [`FETCH_HINT`]), a malformed
    /// file, a missing tensor, a tensor of the wrong shape, a NaN or infinite
    /// weight, or an unsupported configuration.
    pub fn load(dir: &Path) -> Result<Self, NetworkError> {
        load::load(dir, None)
    }

    /// As [`load`](Self::load), truncating at `max_tokens` instead.
    ///
    /// # Errors
    /// As [`load`](Self::load); also `max_tokens` below 2 or above the model's
    /// position embeddings.
    pub fn load_with_max_tokens(dir: &Path, max_tokens: usize) -> Result<Self, NetworkError> {
        load::load(dir, Some(max_tokens))
    }

    /// Inputs longer than this many tokens are truncated.
    #[must_use]
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokenises one text (no padding; truncated at [`max_tokens`](Self::max_tokens)).
    ///
    /// # Errors
    /// A tokenizer error, or an id outside the embedding tables.
    pub fn tokenize(&self, text: &str) -> Result<Tokens, NetworkError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| NetworkError::BadInput(format!("tokenizer: {e}")))?;
        let t = Tokens {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
        };
        if let Some(&id) = t
            .ids
            .iter()
            .find(|&&i| i as usize >= self.config.vocab_size)
        {
            return Err(NetworkError::BadInput(format!(
                "token id {id} is outside the vocabulary of {} embeddings",
                self.config.vocab_size
            )));
        }
        if t.ids.is_empty() || t.ids.len() > self.config.max_position_embeddings {
            return Err(NetworkError::BadInput(format!(
                "{} tokens (the model takes 1 to {})",
                t.ids.len(),
                self.config.max_position_embeddings
            )));
        }
        Ok(t)
    }

    /// Float32 embeddings (`texts x hidden`, rows L2-normalised), documents in
    /// parallel.
    ///
    /// # Errors
    /// Tokenizer errors.
    pub fn embed_float<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
    ) -> Result<Array2<f32>, NetworkError> {
        let rows: Vec<Array1<f32>> = texts
            .par_iter()
            .map(|t| {
                let tok = self.tokenize(t.as_ref())?;
                forward::encode(self, &tok, &forward::FloatLinears(self))
            })
            .collect::<Result<_, _>>()?;
        Ok(stack_rows(&rows, self.config.hidden_size))
    }

    /// Crossbar MACs per token: the sum of `outputs x inputs` over the linear layers.
    #[must_use]
    pub fn crossbar_macs_per_token(&self) -> u64 {
        self.linears
            .iter()
            .map(|l| (l.weight.nrows() * l.weight.ncols()) as u64)
            .sum()
    }

    /// Digital MACs of the attention score and value products for a document
    /// of `tokens` tokens: `2 x tokens^2 x hidden` per encoder layer.
    #[must_use]
    pub fn attention_macs(&self, tokens: usize) -> u64 {
        (2 * tokens * tokens * self.config.hidden_size * self.config.num_hidden_layers) as u64
    }
}

pub(crate) fn stack_rows(rows: &[Array1<f32>], width: usize) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((rows.len(), width));
    for (mut o, r) in out.rows_mut().into_iter().zip(rows) {
        o.assign(r);
    }
    out
}
