//! Text to transformer inputs: a Hugging Face `tokenizer.json` (the
//! `tokenizers` crate, pure-Rust regex backend, no hub access) turns each text
//! into the token ids, attention mask and token-type ids an ONNX export of an
//! encoder takes. Padding is off (each text runs alone, so no pad token ever
//! reaches the model) and truncation is at a length the caller sets.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use crate::DataError;
use crate::files::{FileKind, read_cached};

/// The longest truncation length accepted.
pub const MAX_TOKENS_LIMIT: usize = 1 << 16;

/// One text's model inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids (`input_ids`).
    pub ids: Vec<i64>,
    /// All ones: every token is real (`attention_mask`).
    pub mask: Vec<i64>,
    /// Segment ids (`token_type_ids`).
    pub type_ids: Vec<i64>,
}

/// A tokenizer with fixed truncation.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_tokens: usize,
}

impl TextEncoder {
    /// Reads `tokenizer.json`, truncating texts at `max_tokens` tokens.
    ///
    /// # Errors
    /// A missing or malformed file, or a truncation length outside `2..=65536`.
    pub fn load(path: &Path, max_tokens: usize) -> Result<Self, DataError> {
        let bytes = read_cached(path, FileKind::Tokenizer)?;
        Self::from_bytes(&bytes, path, max_tokens)
    }

    /// Parses the bytes of `tokenizer.json` (`path` names it in errors).
    ///
    /// # Errors
    /// Bytes that are not a tokenizer, or a truncation length outside `2..=65536`.
    pub fn from_bytes(bytes: &[u8], path: &Path, max_tokens: usize) -> Result<Self, DataError> {
        let bad = |reason: String| DataError::ModelFile {
            path: path.to_path_buf(),
            reason,
        };
        if !(2..=MAX_TOKENS_LIMIT).contains(&max_tokens) {
            return Err(bad(format!(
                "truncation length {max_tokens} is outside 2..={MAX_TOKENS_LIMIT}"
            )));
        }
        // The `tokenizers` crate (0.22) panics instead of failing on some
        // malformed JSON (`.expect` in its decoder and normaliser
        // deserialisers, found by the `tokenizer` fuzz target): the bytes are
        // parsed as JSON here first, so it only ever sees well-formed JSON,
        // and a panic that still escapes it becomes an error.
        serde_json::from_slice::<serde_json::Value>(bytes)
            .map_err(|e| bad(format!("not JSON: {e}")))?;
        let parsed = std::panic::catch_unwind(|| Tokenizer::from_bytes(bytes))
            .map_err(|_| bad("not a tokenizer (the tokenizers crate panicked on it)".into()))?;
        let mut tokenizer = parsed.map_err(|e| bad(format!("not a tokenizer: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| bad(format!("truncation at {max_tokens}: {e}")))?;
        Ok(Self {
            tokenizer,
            max_tokens,
        })
    }

    /// The truncation length.
    #[must_use]
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Encodes one text (special tokens added as the tokenizer's template says).
    ///
    /// # Errors
    /// The tokenizer's own failure.
    pub fn encode(&self, text: &str) -> Result<Encoded, DataError> {
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.tokenizer.encode(text, true)
        }))
        .map_err(|_| DataError::BadInput(format!("tokenising {text:?}: the tokenizer panicked")))?
        .map_err(|e| DataError::BadInput(format!("tokenising {text:?}: {e}")))?;
        let ids: Vec<i64> = e.get_ids().iter().map(|&v| i64::from(v)).collect();
        let type_ids: Vec<i64> = e.get_type_ids().iter().map(|&v| i64::from(v)).collect();
        Ok(Encoded {
            mask: vec![1; ids.len()],
            ids,
            type_ids,
        })
    }
}
