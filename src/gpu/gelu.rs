//! Launchers for kernels/gelu.cu (mirrors src/cpu/gelu.rs). One thread per group of elements (4 floats or 8
//! bf16).

use super::driver::{Arg, DeviceSlice, Driver};
use super::{blocks_for, group, BLOCK, BLOCK_SIZE};
use crate::error::Result;

/// out, inp: (N).
pub fn gelu_forward(driver: &dyn Driver, out: DeviceSlice, inp: DeviceSlice, n: usize) -> Result<()> {
    let args = [out.arg(), inp.arg(), Arg::I32(n as i32)];
    let floatx = DeviceSlice::common_dtype("gelu_forward", &[out, inp])?;
    let grid = (blocks_for(n, group(floatx) * BLOCK), 1, 1);
    driver.launch("gelu_forward", floatx, grid, (BLOCK_SIZE, 1, 1), 0, &args)
}

/// dinp: (N), overwritten; inp, dout: (N).
pub fn gelu_backward(
    driver: &dyn Driver,
    dinp: DeviceSlice,
    inp: DeviceSlice,
    dout: DeviceSlice,
    n: usize,
) -> Result<()> {
    let args = [dinp.arg(), inp.arg(), dout.arg(), Arg::I32(n as i32)];
    let floatx = DeviceSlice::common_dtype("gelu_backward", &[dinp, inp, dout])?;
    let grid = (blocks_for(n, group(floatx) * BLOCK), 1, 1);
    driver.launch("gelu_backward", floatx, grid, (BLOCK_SIZE, 1, 1), 0, &args)
}
