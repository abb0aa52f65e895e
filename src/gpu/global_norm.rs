//! Launchers for kernels/global_norm.cu (mirrors src/cpu/global_norm.rs): 64 blocks each sum the squares of one
//! fixed slice of the gradients, then the host adds the 64 partial sums in order (deterministic, like the CPU).

use super::driver::{Arg, DeviceBuffer, DeviceSlice, Driver};
use super::BLOCK_SIZE;
use crate::error::Result;

/// Slices of the gradient buffer, as on the CPU.
pub const SLICES: usize = 64;

/// sum of squares of grads: (N). `partials` is a device buffer of at least SLICES floats.
pub fn global_norm_squared(driver: &dyn Driver, partials: &DeviceBuffer, grads: DeviceSlice) -> Result<f64> {
    let args = [partials.slice().arg(), grads.arg(), Arg::I32(grads.len as i32)];
    partials.slice().expect_f32("global_norm_squared", "partials")?;
    driver.launch("global_norm_squared", grads.dtype, (SLICES as u32, 1, 1), (BLOCK_SIZE, 1, 1), 0, &args)?;
    let host = partials.read()?;
    Ok(host[..SLICES].iter().map(|&p| p as f64).sum())
}
