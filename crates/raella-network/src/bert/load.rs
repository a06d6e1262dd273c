//! Reading a BERT folder: `config.json`, `model.safetensors`, `tokenizer.json`.
//! Every tensor is checked for presence, shape, type and finiteness here, so
//! the forward pass does not fail on the weights.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use safetensors::{Dtype, SafeTensors};
use tokenizers::{Tokenizer, TruncationParams};

use super::{
    BertConfig, BertLinear, BertModel, FETCH_HINT, LAYER_KINDS, LayerNorm, MAX_TOKENS, read_cached,
};
use crate::NetworkError;
use crate::files::FileKind;

fn config(path: &Path) -> Result<BertConfig, NetworkError> {
    parse_config(&read_cached(path, FileKind::Json)?, path)
}

/// Parses and validates the bytes of a BERT `config.json` (`path` is only used
/// in messages): every size field at least 1 and at most a bound many times
/// any published BERT (so nothing is sized by an absurd value),
/// `hidden_size` a multiple of `num_attention_heads`, `gelu`, absolute
/// positions, a finite non-negative `layer_norm_eps`.
///
/// # Errors
/// [`NetworkError::ModelFile`] naming the file, the field and the value.
pub fn parse_config(bytes: &[u8], path: &Path) -> Result<BertConfig, NetworkError> {
    let bad = |reason: String| NetworkError::ModelFile {
        path: path.to_path_buf(),
        reason,
    };
    let c: BertConfig =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a BERT config: {e}")))?;
    for (field, v, max) in [
        ("vocab_size", c.vocab_size, 1 << 22),
        ("hidden_size", c.hidden_size, 1 << 16),
        ("num_hidden_layers", c.num_hidden_layers, 1024),
        ("num_attention_heads", c.num_attention_heads, 1 << 10),
        ("intermediate_size", c.intermediate_size, 1 << 18),
        (
            "max_position_embeddings",
            c.max_position_embeddings,
            1 << 20,
        ),
        ("type_vocab_size", c.type_vocab_size, 1 << 16),
    ] {
        if !(1..=max).contains(&v) {
            return Err(bad(format!("`{field}` = {v} is outside 1..={max}")));
        }
    }
    if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err(bad(format!(
            "`hidden_size` {} is not a multiple of `num_attention_heads` {}",
            c.hidden_size, c.num_attention_heads
        )));
    }
    if c.hidden_act != "gelu" {
        return Err(bad(format!(
            "`hidden_act` `{}` is not supported (only `gelu`, the erf form)",
            c.hidden_act
        )));
    }
    if let Some(p) = &c.position_embedding_type
        && p != "absolute"
    {
        return Err(bad(format!(
            "`position_embedding_type` `{p}` is not supported (only `absolute`)"
        )));
    }
    if !(c.layer_norm_eps.is_finite() && c.layer_norm_eps >= 0.0) {
        return Err(bad(format!(
            "`layer_norm_eps` {} is not a finite non-negative number",
            c.layer_norm_eps
        )));
    }
    Ok(c)
}

struct Tensors<'a> {
    st: SafeTensors<'a>,
    path: PathBuf,
}

impl Tensors<'_> {
    /// The tensor `name` (or `bert.name`, as BERT checkpoints with a head store
    /// it) as f32, checked against `shape` and for finiteness.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, NetworkError> {
        let err = |reason: String| NetworkError::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            reason,
        };
        let t = self
            .st
            .tensor(name)
            .or_else(|_| self.st.tensor(&format!("bert.{name}")))
            .map_err(|_| err("missing".into()))?;
        if t.shape() != shape {
            return Err(err(format!("shape {:?}, expected {shape:?}", t.shape())));
        }
        let bytes = t.data();
        let v: Vec<f32> = match t.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(err(format!(
                    "data type {other:?} (expected F32, F16 or BF16)"
                )));
            }
        };
        if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(err(format!("element {i} is not finite ({x})")));
        }
        Ok(v)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Array2<f32>, NetworkError> {
        let v = self.get(name, &[rows, cols])?;
        Ok(Array2::from_shape_vec((rows, cols), v).expect("shape checked"))
    }

    fn layer_norm(&self, prefix: &str, n: usize) -> Result<LayerNorm, NetworkError> {
        Ok(LayerNorm {
            gamma: Array1::from(self.get(&format!("{prefix}.weight"), &[n])?),
            beta: Array1::from(self.get(&format!("{prefix}.bias"), &[n])?),
        })
    }

    fn linear(
        &self,
        prefix: &str,
        name: String,
        out: usize,
        inp: usize,
    ) -> Result<BertLinear, NetworkError> {
        Ok(BertLinear {
            name,
            weight: self.matrix(&format!("{prefix}.weight"), out, inp)?,
            bias: self.get(&format!("{prefix}.bias"), &[out])?,
        })
    }
}

fn tokenizer(path: &Path, max_tokens: usize) -> Result<Tokenizer, NetworkError> {
    let bad = |reason: String| NetworkError::ModelFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = read_cached(path, FileKind::Tokenizer)?;
    let mut tok =
        Tokenizer::from_bytes(&bytes).map_err(|e| bad(format!("not a tokenizer: {e}")))?;
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length: max_tokens,
        ..TruncationParams::default()
    }))
    .map_err(|e| bad(format!("truncation at {max_tokens}: {e}")))?;
    Ok(tok)
}

pub(super) fn load(dir: &Path, max_tokens: Option<usize>) -> Result<BertModel, NetworkError> {
    if !dir.is_dir() {
        return Err(NetworkError::Missing {
            path: dir.to_path_buf(),
            hint: FETCH_HINT,
        });
    }
    let config = config(&dir.join("config.json"))?;
    let max_tokens = max_tokens.unwrap_or(MAX_TOKENS.min(config.max_position_embeddings));
    if !(2..=config.max_position_embeddings).contains(&max_tokens) {
        return Err(NetworkError::BadInput(format!(
            "truncation length {max_tokens} is outside 2..={} (the model's position embeddings)",
            config.max_position_embeddings
        )));
    }
    let tokenizer = tokenizer(&dir.join("tokenizer.json"), max_tokens)?;
    let path = dir.join("model.safetensors");
    let bytes = read_cached(&path, FileKind::Safetensors)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| NetworkError::ModelFile {
        path: path.clone(),
        reason: format!("not a valid safetensors file (truncated?): {e}"),
    })?;
    let t = Tensors { st, path };
    let (h, f) = (config.hidden_size, config.intermediate_size);
    let word = t.matrix("embeddings.word_embeddings.weight", config.vocab_size, h)?;
    let position = t.matrix(
        "embeddings.position_embeddings.weight",
        config.max_position_embeddings,
        h,
    )?;
    let token_type = t.matrix(
        "embeddings.token_type_embeddings.weight",
        config.type_vocab_size,
        h,
    )?;
    let emb_ln = t.layer_norm("embeddings.LayerNorm", h)?;
    let mut linears = Vec::with_capacity(6 * config.num_hidden_layers);
    let mut norms = Vec::with_capacity(config.num_hidden_layers);
    for l in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        let prefixes = [
            (format!("{p}.attention.self.query"), h, h),
            (format!("{p}.attention.self.key"), h, h),
            (format!("{p}.attention.self.value"), h, h),
            (format!("{p}.attention.output.dense"), h, h),
            (format!("{p}.intermediate.dense"), f, h),
            (format!("{p}.output.dense"), h, f),
        ];
        for ((prefix, out, inp), kind) in prefixes.iter().zip(LAYER_KINDS) {
            linears.push(t.linear(prefix, format!("layer{l}.{kind}"), *out, *inp)?);
        }
        norms.push((
            t.layer_norm(&format!("{p}.attention.output.LayerNorm"), h)?,
            t.layer_norm(&format!("{p}.output.LayerNorm"), h)?,
        ));
    }
    Ok(BertModel {
        config,
        tokenizer,
        word,
        position,
        token_type,
        emb_ln,
        linears,
        norms,
        max_tokens,
    })
}
