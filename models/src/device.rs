//! Where a model runs: `cpu`, `cuda`, `cuda:N` or `auto`.

use std::str::FromStr;

use candle_core::Device;

use crate::{ModelError, Result};

/// A device as requested in an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// The CPU.
    Cpu,
    /// The CUDA GPU with this ordinal.
    Cuda(usize),
    /// The first CUDA GPU when this build has CUDA and one is present, else the CPU.
    Auto,
}

impl FromStr for DeviceRequest {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            ModelError::Config(format!(
                "device '{s}' is not one of 'cpu', 'cuda', 'cuda:N', 'auto'"
            ))
        };
        match s {
            "cpu" => Ok(Self::Cpu),
            "auto" => Ok(Self::Auto),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(bad),
        }
    }
}

/// Whether this build was compiled with CUDA support (the `cuda` feature).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

impl DeviceRequest {
    /// Opens the device. `Auto` falls back to the CPU; an explicit `cuda` that cannot be
    /// honoured is an error that says why.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) if !CUDA_BUILT => Err(ModelError::Device(format!(
                "device 'cuda:{n}' requested, but this build has no CUDA support: rebuild it \
                 (the plugin, or delt) with `--features cuda`, or use device 'cpu' or 'auto'"
            ))),
            Self::Cuda(n) => Device::new_cuda(n)
                .map_err(|e| ModelError::Device(format!("cannot open CUDA device {n}: {e}"))),
            Self::Auto if CUDA_BUILT && candle_core::utils::cuda_is_available() => {
                Ok(Device::new_cuda(0).unwrap_or(Device::Cpu))
            }
            Self::Auto => Ok(Device::Cpu),
        }
    }
}

/// A short name of a device for log lines: `cpu` or `cuda:N`.
pub fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Why `auto` chose what it chose, for the log line.
pub fn auto_reason(device: &Device) -> &'static str {
    if device.is_cuda() {
        "a CUDA GPU is present"
    } else if CUDA_BUILT {
        "built with CUDA but no GPU was found"
    } else {
        "built without CUDA"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        assert_eq!("cpu".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(3)
        );
        assert_eq!(
            "auto".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Auto
        );
        let e = "gpu".parse::<DeviceRequest>().unwrap_err().to_string();
        assert!(e.contains("'gpu'") && e.contains("cuda:N"), "{e}");
    }

    #[test]
    fn auto_always_opens_something() {
        let device = DeviceRequest::Auto.open().unwrap();
        assert!(!auto_reason(&device).is_empty());
        if !CUDA_BUILT {
            assert_eq!(describe(&device), "cpu");
            let e = DeviceRequest::Cuda(0).open().unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
