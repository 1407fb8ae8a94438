//! Models for tests: tiny random ones in the real on-disk formats (Hugging Face directories;
//! weights from a seeded generator, so the same seed writes the same files), and the real ones
//! that `tests/fetch_models.sh` puts in `.models/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{Value, json};

use crate::random::SplitMix64;
use crate::{ModelError, Result};

/// Texts for the tiny models: ordinary words, one word, a long text, the empty text and
/// unknown words.
pub const SAMPLE_TEXTS: [&str; 5] = [
    "the model is in the data",
    "a",
    "what do we train first and how long will it take to find the order of the words",
    "",
    "zzz unknown words",
];

/// A tiny Llama configuration (vocabulary 17, hidden 8, 2 layers, 2 query heads sharing 1
/// key/value head) for models built in memory; tests change fields with `..`.
pub fn tiny_llama_config() -> crate::llama::LlamaConfig {
    crate::llama::LlamaConfig {
        model_type: Some("llama".into()),
        vocab_size: 17,
        hidden_size: 8,
        intermediate_size: 12,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_key_value_heads: Some(1),
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: false,
        rope_scaling: None,
    }
}

/// The words both tiny tokenizers know (anything else is the unknown token).
pub const WORDS: &[&str] = &[
    "the", "a", "of", "and", "to", "in", "is", "it", "that", "was", "for", "on", "are", "with",
    "as", "be", "at", "by", "this", "have", "from", "or", "one", "had", "not", "but", "what",
    "all", "were", "when", "we", "there", "can", "an", "your", "which", "their", "said", "if",
    "do", "will", "each", "about", "how", "up", "out", "them", "then", "she", "many", "some", "so",
    "these", "would", "other", "into", "has", "more", "her", "two", "like", "him", "see", "time",
    "could", "no", "make", "than", "first", "been", "its", "who", "now", "people", "my", "made",
    "over", "did", "down", "only", "way", "find", "use", "may", "water", "long", "little", "very",
    "after", "words", "called", "just", "where", "most", "know", "data", "model", "train", "order",
    "score", ".", ",",
];

/// Named tensors of deterministic uniform noise (splitmix64), `center + scale * [-1, 1)`.
struct Weights {
    rng: SplitMix64,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            tensors: HashMap::new(),
        }
    }

    fn add(&mut self, name: String, dims: &[usize], center: f32, scale: f32) -> Result<()> {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| center + scale * self.rng.symmetric() as f32)
            .collect();
        self.tensors
            .insert(name, Tensor::from_vec(values, dims, &Device::Cpu)?);
        Ok(())
    }

    /// A layer norm's weight (near 1) and bias.
    fn norm(&mut self, prefix: &str, size: usize) -> Result<()> {
        self.add(format!("{prefix}.weight"), &[size], 1.0, 0.1)?;
        self.add(format!("{prefix}.bias"), &[size], 0.0, 0.1)
    }

    /// A linear layer's weight `[out, in]` and bias.
    fn dense(&mut self, prefix: &str, out: usize, inp: usize) -> Result<()> {
        self.add(format!("{prefix}.weight"), &[out, inp], 0.0, 0.3)?;
        self.add(format!("{prefix}.bias"), &[out], 0.0, 0.1)
    }

    fn save(self, dir: &Path) -> Result<()> {
        let path = dir.join("model.safetensors");
        candle_core::safetensors::save(&self.tensors, &path)
            .map_err(|e| ModelError::file(&path, e.to_string()))
    }
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| ModelError::Config(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| ModelError::file(path, e.to_string()))
}

/// A word-level `tokenizer.json` over `specials` then [`WORDS`]; `template` (for example
/// `["[CLS]", "$A", "[SEP]"]`) adds special tokens around each text.
fn tokenizer_json(specials: &[&str], template: &[&str]) -> Value {
    let vocab: serde_json::Map<String, Value> = specials
        .iter()
        .chain(WORDS)
        .enumerate()
        .map(|(i, w)| (w.to_string(), json!(i)))
        .collect();
    let id = |t: &str| {
        specials
            .iter()
            .position(|s| *s == t)
            .expect("special token")
    };
    let single: Vec<Value> = template
        .iter()
        .map(|t| match *t {
            "$A" => json!({"Sequence": {"id": "A", "type_id": 0}}),
            t => json!({"SpecialToken": {"id": t, "type_id": 0}}),
        })
        .collect();
    let special_tokens: serde_json::Map<String, Value> = template
        .iter()
        .filter(|t| **t != "$A")
        .map(|t| {
            (
                t.to_string(),
                json!({"id": t, "ids": [id(t)], "tokens": [t]}),
            )
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": specials.iter().enumerate().map(|(i, s)| json!({
            "id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true
        })).collect::<Vec<_>>(),
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": single,
                           "special_tokens": special_tokens},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": specials[1]}
    })
}

/// The largest absolute difference between two tensors of the same shape, as f64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok(
        (a.to_dtype(candle_core::DType::F64)? - b.to_dtype(candle_core::DType::F64)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar()?,
    )
}

/// The bits of every value of an f32 tensor, to compare results exactly.
pub fn f32_bits(t: &Tensor) -> Result<Vec<u32>> {
    let values = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(values.into_iter().map(f32::to_bits).collect())
}

/// Runs `work` on a rayon pool of `threads` threads.
pub fn on_threads<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool for a test")
        .install(work)
}

/// Writes a 2-layer BERT (hidden 32, 4 heads) with a word-level tokenizer to `dir`.
pub fn write_bert(dir: &Path, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::file(dir, e.to_string()))?;
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    let (vocab, hidden, inter, positions, layers) = (specials.len() + WORDS.len(), 32, 64, 64, 2);
    write_json(
        &dir.join("config.json"),
        &json!({
            "architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab,
            "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 4,
            "intermediate_size": inter, "hidden_act": "gelu", "max_position_embeddings": positions,
            "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "position_embedding_type": "absolute"
        }),
    )?;
    write_json(
        &dir.join("tokenizer.json"),
        &tokenizer_json(&specials, &["[CLS]", "$A", "[SEP]"]),
    )?;
    let mut w = Weights::new(seed);
    w.add(
        "embeddings.word_embeddings.weight".into(),
        &[vocab, hidden],
        0.0,
        1.0,
    )?;
    w.add(
        "embeddings.position_embeddings.weight".into(),
        &[positions, hidden],
        0.0,
        0.5,
    )?;
    w.add(
        "embeddings.token_type_embeddings.weight".into(),
        &[2, hidden],
        0.0,
        0.5,
    )?;
    w.norm("embeddings.LayerNorm", hidden)?;
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        for part in ["query", "key", "value"] {
            w.dense(&format!("{p}.attention.self.{part}"), hidden, hidden)?;
        }
        w.dense(&format!("{p}.attention.output.dense"), hidden, hidden)?;
        w.norm(&format!("{p}.attention.output.LayerNorm"), hidden)?;
        w.dense(&format!("{p}.intermediate.dense"), inter, hidden)?;
        w.dense(&format!("{p}.output.dense"), hidden, inter)?;
        w.norm(&format!("{p}.output.LayerNorm"), hidden)?;
    }
    w.save(dir)
}

/// Writes a 2-layer Llama (hidden 32, 4 query and 2 key/value heads) whose tokenizer puts
/// `<s>` before each text to `dir`.
pub fn write_llama(dir: &Path, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::file(dir, e.to_string()))?;
    let specials = ["<pad>", "<unk>", "<s>"];
    let (vocab, hidden, inter, layers, heads, kv) = (specials.len() + WORDS.len(), 32, 64, 2, 4, 2);
    write_json(
        &dir.join("config.json"),
        &json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
            "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "max_position_embeddings": 128, "tie_word_embeddings": false,
            "bos_token_id": 2
        }),
    )?;
    write_json(
        &dir.join("tokenizer.json"),
        &tokenizer_json(&specials, &["<s>", "$A"]),
    )?;
    let d = hidden / heads;
    let mut w = Weights::new(seed);
    w.add(
        "model.embed_tokens.weight".into(),
        &[vocab, hidden],
        0.0,
        1.0,
    )?;
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        w.add(format!("{p}.input_layernorm.weight"), &[hidden], 1.0, 0.1)?;
        w.add(
            format!("{p}.post_attention_layernorm.weight"),
            &[hidden],
            1.0,
            0.1,
        )?;
        for (name, o, i) in [
            ("self_attn.q_proj", heads * d, hidden),
            ("self_attn.k_proj", kv * d, hidden),
            ("self_attn.v_proj", kv * d, hidden),
            ("self_attn.o_proj", hidden, heads * d),
            ("mlp.gate_proj", inter, hidden),
            ("mlp.up_proj", inter, hidden),
            ("mlp.down_proj", hidden, inter),
        ] {
            w.add(format!("{p}.{name}.weight"), &[o, i], 0.0, 0.3)?;
        }
    }
    w.add("model.norm.weight".into(), &[hidden], 1.0, 0.1)?;
    w.add("lm_head.weight".into(), &[vocab, hidden], 0.0, 0.5)?;
    w.save(dir)
}

/// The real model `name` (for example `all-MiniLM-L6-v2`) in `$DELT_MODELS_DIR` or the
/// workspace's `.models/`. `None` when absent, unless `DELT_REQUIRE_MODELS=1` (as in CI): then
/// absence is a panic, so tests with real models cannot be skipped silently.
pub fn real_model(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("DELT_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.models"));
    let path = dir.join(name);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("DELT_REQUIRE_MODELS").is_ok_and(|v| v == "1") {
        panic!("{} is missing: run tests/fetch_models.sh", path.display());
    }
    eprintln!(
        "skipping: {} is missing (run tests/fetch_models.sh)",
        path.display()
    );
    None
}

/// Reference values computed with the original PyTorch models by
/// `tests/fixtures/models/make_reference.py`: section `minilm` or `smollm2`.
pub fn reference(section: &str) -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let all: Value = serde_json::from_str(&text).expect("reference.json is JSON");
    all[section].clone()
}
