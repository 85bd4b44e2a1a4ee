//! Is a device usable? burn's GPU runtimes initialise on first use and panic when there is no
//! adapter or driver; [`check_device`] turns that into an [`Error::Device`] up front.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use flux_io::{Error, Result};

/// Runs a two-element sum on `device` and reads it back.
///
/// # Errors
/// [`Error::Device`] with the runtime's message when the backend cannot start on `device` (no
/// Vulkan/Metal/DX12 adapter for wgpu, no CUDA driver for cuda) or computes a wrong sum. The
/// runtime's panic message is also printed by the panic hook.
pub fn check_device<B: Backend>(device: &B::Device) -> Result<()> {
    let probe = catch_unwind(AssertUnwindSafe(|| {
        Tensor::<B, 1>::from_floats([1.0, 2.0], device)
            .sum()
            .into_data()
            .to_vec::<f32>()
    }));
    let name = B::name(device);
    match probe {
        Ok(Ok(v)) if v == [3.0] => Ok(()),
        Ok(Ok(v)) => Err(Error::Device(format!("{name}: 1 + 2 gave {v:?}"))),
        Ok(Err(e)) => Err(Error::Device(format!("{name}: reading back failed: {e:?}"))),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the runtime panicked");
            Err(Error::Device(format!("{name} could not start: {message}")))
        }
    }
}
