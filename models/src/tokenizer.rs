//! Text to token ids, truncated to a maximum length.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use crate::{ModelError, Result};

/// Tokens per byte never exceed this in practice; text beyond `max_tokens * CUT_BYTES_PER_TOKEN`
/// bytes cannot reach the first `max_tokens` tokens, so it is cut before tokenizing (a
/// 10 MB document costs no more than a short one).
const CUT_BYTES_PER_TOKEN: usize = 32;

/// A tokenizer that truncates every text to `max_tokens` ids (special tokens included).
pub struct TextTokenizer {
    inner: Tokenizer,
    max_tokens: usize,
    /// Prepended to every text when the model expects it (Llama's BOS); `None` when the
    /// tokenizer's own post-processor adds special tokens (BERT's [CLS] ... [SEP]).
    prefix: Option<u32>,
}

impl TextTokenizer {
    /// The tokenizer of `tokenizer.json` at `path`. With `prefix`, texts are encoded without
    /// the tokenizer's special tokens and `prefix` is put first.
    pub fn from_file(path: &Path, max_tokens: usize, prefix: Option<u32>) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| ModelError::file(path, format!("not a usable tokenizer.json: {e}")))?;
        Self::new(inner, max_tokens, prefix)
    }

    /// Wraps a tokenizer.
    pub fn new(mut inner: Tokenizer, max_tokens: usize, prefix: Option<u32>) -> Result<Self> {
        if max_tokens < 2 {
            return Err(ModelError::Config(format!(
                "max_tokens must be at least 2, got {max_tokens}"
            )));
        }
        let room = max_tokens - usize::from(prefix.is_some());
        inner
            .with_truncation(Some(TruncationParams {
                max_length: room,
                ..Default::default()
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self {
            inner,
            max_tokens,
            prefix,
        })
    }

    /// The most ids a text becomes.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The wrapped tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Token ids of each text, at most `max_tokens` each.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let cut = self.max_tokens.saturating_mul(CUT_BYTES_PER_TOKEN);
        let inputs: Vec<&str> = texts
            .iter()
            .map(|t| &t[..t.floor_char_boundary(cut)])
            .collect();
        let encodings = self
            .inner
            .encode_batch(inputs, self.prefix.is_none())
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(encodings
            .into_iter()
            .map(|e| match self.prefix {
                Some(first) => std::iter::once(first)
                    .chain(e.get_ids().iter().copied())
                    .collect(),
                None => e.get_ids().to_vec(),
            })
            .collect())
    }
}
