//! Tokenization off the model's critical path.
//!
//! A scorer call gets one batch of texts (up to delt's `batch_size` rows). Tokenizing all of it
//! before the first forward pass leaves the model idle meanwhile, and on a GPU the tokenizer
//! is the bottleneck. Instead the texts are cut into chunks of a few forward batches: a helper
//! thread tokenizes chunk k+1, on as many threads as the model leaves free (at least one),
//! while the model runs on chunk k. Chunks keep input order, and a document's score does not
//! depend on the chunk it falls in (see [`crate::batching`]), so scores are the same as
//! without the pipeline.

use std::sync::mpsc;

use crate::{ModelError, Result};

/// Forward batches per chunk: enough that sorting a chunk by length still leaves little
/// padding, few enough that the first chunk (tokenized before the model can start) is short.
const BATCHES_PER_CHUNK: usize = 8;

/// Documents per chunk for forward batches of `batch` documents.
pub fn chunk_docs(batch: usize) -> usize {
    batch.max(1) * BATCHES_PER_CHUNK
}

/// Threads for the tokenizer: the cores left over by the model's threads (the current rayon
/// pool's), at least one.
pub fn tokenizer_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(rayon::current_num_threads()).max(1)
}

/// Runs `model` on consecutive chunks of at most `chunk` texts, in order, each tokenized by
/// `tokenize` on a helper thread while `model` runs on the chunk before; returns the
/// outputs of all chunks in input order. A single chunk runs on the calling thread alone.
pub fn pipelined<T: Send, R>(
    texts: &[&str],
    chunk: usize,
    tokenize: impl Fn(&[&str]) -> Result<T> + Sync,
    mut model: impl FnMut(T) -> Result<Vec<R>>,
) -> Result<Vec<R>> {
    let chunk = chunk.max(1);
    if texts.len() <= chunk {
        return model(tokenize(texts)?);
    }
    let threads = tokenizer_threads();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("delt-tokenizer-{i}"))
        .build()
        .map_err(|e| {
            ModelError::Config(format!(
                "cannot start {threads} tokenizer threads: {e}; lower the model's `threads`"
            ))
        })?;
    std::thread::scope(|scope| {
        // One chunk waits tokenized while the model runs: memory stays at about two chunks.
        let (sender, receiver) = mpsc::sync_channel::<Result<T>>(1);
        let tokenize = &tokenize;
        scope.spawn(move || {
            pool.install(|| {
                for part in texts.chunks(chunk) {
                    // A closed channel means the model failed: stop tokenizing.
                    if sender.send(tokenize(part)).is_err() {
                        break;
                    }
                }
            })
        });
        let mut out = Vec::with_capacity(texts.len());
        for tokens in receiver {
            out.extend(model(tokens?)?);
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_back_in_order_and_errors_stop_the_pipeline() {
        let texts: Vec<String> = (0..103).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let tokenize = |part: &[&str]| -> Result<Vec<usize>> {
            Ok(part.iter().map(|t| t.parse().unwrap()).collect())
        };
        for chunk in [1, 7, 10, 103, 500] {
            let got = pipelined(&refs, chunk, tokenize, Ok).unwrap();
            assert_eq!(got, (0..103).collect::<Vec<_>>(), "chunk {chunk}");
        }
        let mut calls = 0;
        let e = pipelined(&refs, 10, tokenize, |ids: Vec<usize>| {
            calls += 1;
            if ids[0] == 20 {
                Err(ModelError::Config("model failed".into()))
            } else {
                Ok(ids)
            }
        })
        .unwrap_err();
        assert!(e.to_string().contains("model failed"), "{e}");
        assert_eq!(calls, 3, "no chunk runs after the failure");
        let e = pipelined(
            &refs,
            10,
            |part: &[&str]| {
                if part[0] == "30" {
                    Err(ModelError::Tokenizer("bad text".into()))
                } else {
                    tokenize(part)
                }
            },
            Ok,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad text"), "{e}");
    }
}
