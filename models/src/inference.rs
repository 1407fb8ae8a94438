//! How a model scorer runs: device, documents per forward pass, token limit and threads, read
//! from a scorer's options (a JSON object, as delt plugins receive them).

use candle_core::Device;
use serde_json::{Map, Value};

use crate::device::{self, DeviceRequest};
use crate::{ModelError, Result};

/// Option names and docs shared by delt's model scorers.
pub const OPTIONS: [(&str, &str); 4] = [
    (
        "device",
        "'cpu' (default), 'cuda', 'cuda:N' or 'auto' (the GPU when built with CUDA and one is present)",
    ),
    (
        "forward_batch",
        "documents per forward pass (default 32); documents are grouped by length first",
    ),
    (
        "max_tokens",
        "tokens kept from the start of each document (truncation)",
    ),
    (
        "threads",
        "CPU threads for the model (default: the physical cores)",
    ),
];

/// Parsed run settings.
pub struct Inference {
    /// The opened device.
    pub device: Device,
    /// Documents per forward pass.
    pub forward_batch: usize,
    /// Truncation, when given.
    pub max_tokens: Option<usize>,
    pool: Option<rayon::ThreadPool>,
}

impl Inference {
    /// Reads the options above (others are left to the caller) and opens the device. With
    /// `device = 'auto'`, logs the choice to stderr, prefixed by `who`.
    pub fn from_options(options: &Map<String, Value>, who: &str) -> Result<Self> {
        let text = |name: &str| options.get(name).and_then(Value::as_str);
        let count = |name: &str| -> Result<Option<usize>> {
            match options.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .filter(|n| *n > 0)
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| {
                        ModelError::Config(format!(
                            "option {name} must be a positive integer, got {v}"
                        ))
                    }),
            }
        };
        let request: DeviceRequest = text("device").unwrap_or("cpu").parse()?;
        let device = request.open()?;
        if request == DeviceRequest::Auto {
            eprintln!(
                "{who}: device auto -> {} ({})",
                device::describe(&device),
                device::auto_reason(&device)
            );
        }
        let pool = count("threads")?
            .map(|n| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map_err(|e| ModelError::Config(format!("cannot start {n} threads: {e}")))
            })
            .transpose()?;
        Ok(Self {
            device,
            forward_batch: count("forward_batch")?.unwrap_or(32),
            max_tokens: count("max_tokens")?,
            pool,
        })
    }

    /// Runs `work` on the configured threads.
    pub fn run<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(work),
            None => work(),
        }
    }
}
