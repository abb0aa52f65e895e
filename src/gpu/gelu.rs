//! Launchers for kernels/gelu.cu (mirrors src/cpu/gelu.rs). One thread per group of 4 elements.

use super::driver::{Arg, DeviceSlice, Driver};
use super::{blocks_for, BLOCK, BLOCK_SIZE, F128_FLOATS};
use crate::error::Result;

/// out, inp: (N).
pub fn gelu_forward(driver: &dyn Driver, out: DeviceSlice, inp: DeviceSlice, n: usize) -> Result<()> {
    let args = [out.arg(), inp.arg(), Arg::I32(n as i32)];
    driver.launch("gelu_forward", (blocks_for(n, F128_FLOATS * BLOCK), 1, 1), (BLOCK_SIZE, 1, 1), 0, &args)
}

/// dinp accumulates; inp, dout: (N).
pub fn gelu_backward(
    driver: &dyn Driver,
    dinp: DeviceSlice,
    inp: DeviceSlice,
    dout: DeviceSlice,
    n: usize,
) -> Result<()> {
    let args = [dinp.arg(), inp.arg(), dout.arg(), Arg::I32(n as i32)];
    driver.launch("gelu_backward", (blocks_for(n, F128_FLOATS * BLOCK), 1, 1), (BLOCK_SIZE, 1, 1), 0, &args)
}
