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

/// Loads a tokenizer that encodes whole documents: a Hugging Face `tokenizer.json`, or the
/// vocabulary stored in a `.gguf` model. Truncation and padding are off, whatever the file says.
pub fn load(path: &Path) -> Result<Tokenizer> {
    let gguf = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let mut tokenizer = if gguf {
        let mut file =
            std::fs::File::open(path).map_err(|e| ModelError::file(path, e.to_string()))?;
        let content = candle_core::quantized::gguf_file::Content::read(&mut file)
            .map_err(|e| ModelError::file(path, format!("not a usable GGUF file: {e}")))?;
        crate::llama::gguf_tokenizer(&content)
            .map_err(|e| ModelError::file(path, format!("no usable tokenizer in it: {e}")))?
    } else {
        Tokenizer::from_file(path).map_err(|e| {
            ModelError::file(
                path,
                format!("not a usable tokenizer.json (or .gguf model): {e}"),
            )
        })?
    };
    tokenizer
        .with_truncation(None)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Names that mark the end of a document in common vocabularies, most specific first.
pub const EOS_NAMES: [&str; 6] = [
    "<|endoftext|>",
    "</s>",
    "<|end_of_text|>",
    "<eos>",
    "<|eot_id|>",
    "[SEP]",
];

/// Names that mark the start of a document in common vocabularies, most specific first.
pub const BOS_NAMES: [&str; 5] = [
    "<s>",
    "<|begin_of_text|>",
    "<bos>",
    "[CLS]",
    "<|endoftext|>",
];

/// The first of `names` that is a token of `tokenizer`, and its id.
pub fn find_token<'a>(tokenizer: &Tokenizer, names: &[&'a str]) -> Option<(&'a str, u32)> {
    names
        .iter()
        .find_map(|name| tokenizer.token_to_id(name).map(|id| (*name, id)))
}

/// Special tokens of the tokenizers delt trains: padding, unknown, beginning of sequence.
pub const TRAINED_SPECIALS: [&str; 3] = ["<pad>", "<unk>", "<s>"];

/// Trains a byte-level BPE tokenizer (GPT-2 style, no prefix space) of at most `vocab_size`
/// tokens on `texts`; it puts `<s>` before each text. Deterministic for the same texts.
pub fn train_bpe(texts: &[&str], vocab_size: usize) -> Result<Tokenizer> {
    use tokenizers::AddedToken;
    use tokenizers::models::TrainerWrapper;
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::processors::template::TemplateProcessing;

    let error = |e: tokenizers::Error| ModelError::Tokenizer(format!("training BPE: {e}"));
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(
            TRAINED_SPECIALS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer.train(&mut trainer, texts.iter()).map_err(error)?;
    let bos = tokenizer
        .token_to_id("<s>")
        .ok_or_else(|| ModelError::Tokenizer("trained vocabulary lacks <s>".into()))?;
    let template = TemplateProcessing::builder()
        .try_single("<s> $A")
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?
        .special_tokens(vec![("<s>".to_string(), bos)])
        .build()
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    tokenizer.with_post_processor(Some(template));
    Ok(tokenizer)
}
