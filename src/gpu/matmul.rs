//! Launchers for kernels/matmul.cu (mirrors the bias part of src/cpu/matmul.rs; the products themselves go to
//! cuBLAS on a GPU and to the CPU GEMM under the emulator).

use super::driver::{Arg, DeviceSlice, Driver};
use super::{blocks_for, BLOCK, BLOCK_SIZE};
use crate::error::Result;

/// dbias: (OC) accumulates the column sums of dout: (B, T, OC). One thread per output channel.
pub fn matmul_backward_bias(
    driver: &dyn Driver,
    dbias: DeviceSlice,
    dout: DeviceSlice,
    b: usize,
    t: usize,
    oc: usize,
) -> Result<()> {
    let args = [dbias.arg(), dout.arg(), Arg::I32(b as i32), Arg::I32(t as i32), Arg::I32(oc as i32)];
    driver.launch("matmul_backward_bias", (blocks_for(oc, BLOCK), 1, 1), (BLOCK_SIZE, 1, 1), 0, &args)
}
