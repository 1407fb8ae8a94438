//! The candle models behind delt's scorers and training commands.
//!
//! - [`bert`]: BERT-family encoders (BERT, MiniLM, ...) from a Hugging Face directory, with
//!   mask-aware mean pooling.
//! - [`cpu_kernels`]: fused f32 kernels (linear + bias + residual, attention, GELU, RMS norm,
//!   SwiGLU) for inference on the CPU, used by the encoders and the Llama models.
//! - [`lqs`]: the DELT data scorer: an encoder, mean pooling and a linear head, stored as a
//!   scorer directory.
//! - [`llama`]: Llama-family causal language models from safetensors or quantized GGUF, and
//!   the per-document token loss that perplexity is made of; on the CPU their forward pass and
//!   output layer run in fused kernels (`llama/cpu_forward.rs`).
//! - [`annotate`]: LQS labels from the proxy LM's trajectory, co-state and per-document gradients.
//! - [`proxy_lm`]: a small Llama-architecture LM that trains and differentiates (no fused
//!   candle ops, which have no gradients).
//! - [`target_log_probs`]: the log-probability of each target token, one op with its own
//!   gradient (the proxy LM's loss without the passes of a composed log-softmax).
//! - [`train`]: training that LM on documents in a given order (AdamW, warm-up, cosine).
//! - [`device`]: `cpu`, `cuda[:N]` or `auto`.
//! - [`batching`]: length-sorted batches, so padding wastes little compute.
//! - [`inference`]: the run options every model scorer shares.
//! - [`pipeline`]: tokenizing the next chunk of texts while the model runs on this one.
//!
//! Scoring code uses candle's fast fused kernels; [`proxy_lm`], which must be differentiated,
//! avoids them (they silently drop gradients, see `shared/notes/stack.md`).

pub mod annotate;
pub mod batching;
pub mod bert;
pub mod cpu_kernels;
pub mod device;
pub mod error;
pub mod inference;
pub mod llama;
pub mod lqs;
pub mod pipeline;
pub mod proxy_lm;
pub mod random;
pub mod target_log_probs;
pub mod testing;
pub mod tokenizer;
pub mod train;

pub use candle_core;
pub use error::{ModelError, Result};
