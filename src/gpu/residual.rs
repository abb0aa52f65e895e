//! Launchers for kernels/residual.cu (mirrors src/cpu/residual.rs). One thread per group of elements (4 floats or 8
//! bf16).

use super::driver::{Arg, DeviceSlice, Driver};
use super::{blocks_for, group, BLOCK, BLOCK_SIZE};
use crate::error::Result;

/// out, inp1, inp2: (N).
pub fn residual_forward(
    driver: &dyn Driver,
    out: DeviceSlice,
    inp1: DeviceSlice,
    inp2: DeviceSlice,
    n: usize,
) -> Result<()> {
    let args = [out.arg(), inp1.arg(), inp2.arg(), Arg::I32(n as i32)];
    let floatx = DeviceSlice::common_dtype("residual_forward", &[out, inp1, inp2])?;
    let grid = (blocks_for(n, group(floatx) * BLOCK), 1, 1);
    driver.launch("residual_forward", floatx, grid, (BLOCK_SIZE, 1, 1), 0, &args)
}

/// dinp1, dinp2: (N), overwritten with dout (N).
pub fn residual_backward(
    driver: &dyn Driver,
    dinp1: DeviceSlice,
    dinp2: DeviceSlice,
    dout: DeviceSlice,
    n: usize,
) -> Result<()> {
    let args = [dinp1.arg(), dinp2.arg(), dout.arg(), Arg::I32(n as i32)];
    let floatx = DeviceSlice::common_dtype("residual_backward", &[dinp1, dinp2, dout])?;
    let grid = (blocks_for(n, group(floatx) * BLOCK), 1, 1);
    driver.launch("residual_backward", floatx, grid, (BLOCK_SIZE, 1, 1), 0, &args)
}
