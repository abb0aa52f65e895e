//! Matmul with bias (mirrors src/cpu/matmul.rs): the products, and the forward bias as their epilogue, go to the
//! driver's GEMM (cuBLASLt on a GPU, the CPU GEMM under the emulator), the bias gradient to kernels/matmul.cu.
//! Transposes are GEMM flags, never copies.

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
    let floatx = DeviceSlice::common_dtype("matmul_backward_bias", &[dbias, dout])?;
    let args = [dbias.arg(), dout.arg(), Arg::I32(b as i32), Arg::I32(t as i32), Arg::I32(oc as i32)];
    driver.launch("matmul_backward_bias", floatx, (blocks_for(oc, BLOCK), 1, 1), (BLOCK_SIZE, 1, 1), 0, &args)
}

/// out: (B, T, OC) = inp: (B, T, C) · weightᵀ, weight: (OC, C), plus bias: (OC) when given, added by the GEMM's
/// epilogue (cuBLASLt on a GPU) so the output is written once.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    driver: &dyn Driver,
    out: DeviceSlice,
    inp: DeviceSlice,
    weight: DeviceSlice,
    bias: Option<DeviceSlice>,
    b: usize,
    t: usize,
    c: usize,
    oc: usize,
) -> Result<()> {
    let floatx = DeviceSlice::common_dtype("matmul_forward", &[out, inp, weight])?;
    if let Some(bias) = bias {
        DeviceSlice::common_dtype("matmul_forward", &[out, bias])?;
    }
    // out (n, oc) = inp (n, c) · weightᵀ, weight stored (oc, c).
    driver.gemm(floatx, false, true, b * t, oc, c, inp.ptr, weight.ptr, out.ptr, false, bias.map(|bias| bias.ptr))
}

/// dinp: (B, T, C) overwritten; dweight: (OC, C), dbias: (OC) accumulate; dout: (B, T, OC); inp: (B, T, C);
/// weight: (OC, C).
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    driver: &dyn Driver,
    dinp: DeviceSlice,
    dweight: DeviceSlice,
    dbias: Option<DeviceSlice>,
    dout: DeviceSlice,
    inp: DeviceSlice,
    weight: DeviceSlice,
    b: usize,
    t: usize,
    c: usize,
    oc: usize,
) -> Result<()> {
    let n = b * t;
    let floatx = DeviceSlice::common_dtype("matmul_backward", &[dinp, dweight, dout, inp, weight])?;
    // dinp (n, c) = dout (n, oc) · weight (oc, c)
    driver.gemm(floatx, false, false, n, c, oc, dout.ptr, weight.ptr, dinp.ptr, false, None)?;
    // dweight (oc, c) += doutᵀ · inp (n, c), dout stored (n, oc).
    driver.gemm(floatx, true, false, oc, c, n, dout.ptr, inp.ptr, dweight.ptr, true, None)?;
    match dbias {
        Some(dbias) => matmul_backward_bias(driver, dbias, dout, b, t, oc),
        None => Ok(()),
    }
}
