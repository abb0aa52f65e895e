//! Launchers for kernels/residual.cu (mirrors src/cpu/residual.rs). One thread per group of 4 elements.

use super::driver::{Arg, DeviceSlice, Driver};
use super::{blocks_for, BLOCK, BLOCK_SIZE, F128_FLOATS};
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
    driver.launch("residual_forward", (blocks_for(n, F128_FLOATS * BLOCK), 1, 1), (BLOCK_SIZE, 1, 1), 0, &args)
}

/// dinp1, dinp2 accumulate; dout: (N).
pub fn residual_backward(
    driver: &dyn Driver,
    dinp1: DeviceSlice,
    dinp2: DeviceSlice,
    dout: DeviceSlice,
    n: usize,
) -> Result<()> {
    let args = [dinp1.arg(), dinp2.arg(), dout.arg(), Arg::I32(n as i32)];
    driver.launch("residual_backward", (blocks_for(n, F128_FLOATS * BLOCK), 1, 1), (BLOCK_SIZE, 1, 1), 0, &args)
}
