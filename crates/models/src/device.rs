//! Choosing the device once: CUDA when available, or as forced by the user.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::{Error, Result};

/// The user's device request (`--device auto|cpu|cuda`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when libtorch sees a GPU, else the CPU.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// The first GPU; an error when there is none.
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => Err(Error::Config(format!(
                "unknown device {other:?} (expected auto, cpu or cuda)"
            ))),
        }
    }
}

/// Resolves the request to a device.
pub fn select_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto if tch::Cuda::is_available() => Ok(Device::Cuda(local_gpu())),
        DeviceChoice::Auto => Ok(Device::Cpu),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(local_gpu())),
        DeviceChoice::Cuda => Err(Error::CudaUnavailable),
    }
}

/// The GPU of this process: its rank among the data-parallel ranks on its machine, over the
/// GPUs there (0 for a process alone).
fn local_gpu() -> usize {
    let group = crate::parallel::group();
    let gpus = usize::try_from(tch::Cuda::device_count())
        .unwrap_or(1)
        .max(1);
    group.local_rank() % gpus
}
