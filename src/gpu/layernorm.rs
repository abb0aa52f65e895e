//! Launchers for kernels/layernorm.cu (mirrors src/cpu/layernorm.rs): one warp per (b, t) row for the forward
//! pass and for dinp, one thread per channel for dweight and dbias.

use super::driver::{Arg, DeviceSlice, Driver};
use super::{blocks_for, BLOCK, BLOCK_SIZE, WARP};
use crate::error::Result;

/// out: (B, T, C); mean, rstd: (B, T); inp: (B, T, C); weight, bias: (C).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    driver: &dyn Driver,
    out: DeviceSlice,
    mean: DeviceSlice,
    rstd: DeviceSlice,
    inp: DeviceSlice,
    weight: DeviceSlice,
    bias: DeviceSlice,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    let args = [
        out.arg(),
        mean.arg(),
        rstd.arg(),
        inp.arg(),
        weight.arg(),
        bias.arg(),
        Arg::I32(b as i32),
        Arg::I32(t as i32),
        Arg::I32(c as i32),
    ];
    let floatx = DeviceSlice::common_dtype("layernorm_forward", &[out, inp, weight, bias])?;
    mean.expect_f32("layernorm_forward", "mean")?;
    rstd.expect_f32("layernorm_forward", "rstd")?;
    let grid = (blocks_for(b * t * WARP, BLOCK), 1, 1);
    driver.launch("layernorm_forward", floatx, grid, (BLOCK_SIZE, 1, 1), 0, &args)
}

/// residual = inp1 + inp2 and out = layernorm(residual) in one pass per row. residual, out, inp1, inp2:
/// (B, T, C); mean, rstd: (B, T); weight, bias: (C).
#[allow(clippy::too_many_arguments)]
pub fn fused_residual_layernorm_forward(
    driver: &dyn Driver,
    residual: DeviceSlice,
    out: DeviceSlice,
    mean: DeviceSlice,
    rstd: DeviceSlice,
    inp1: DeviceSlice,
    inp2: DeviceSlice,
    weight: DeviceSlice,
    bias: DeviceSlice,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    let args = [
        residual.arg(),
        out.arg(),
        mean.arg(),
        rstd.arg(),
        inp1.arg(),
        inp2.arg(),
        weight.arg(),
        bias.arg(),
        Arg::I32(b as i32),
        Arg::I32(t as i32),
        Arg::I32(c as i32),
    ];
    let kernel = "fused_residual_layernorm_forward";
    let floatx = DeviceSlice::common_dtype(kernel, &[residual, out, inp1, inp2, weight, bias])?;
    mean.expect_f32(kernel, "mean")?;
    rstd.expect_f32(kernel, "rstd")?;
    let grid = (blocks_for(b * t * WARP, BLOCK), 1, 1);
    driver.launch(kernel, floatx, grid, (BLOCK_SIZE, 1, 1), 0, &args)
}

/// dinp: (B, T, C), dweight, dbias: (C) accumulate; dout, inp: (B, T, C); weight: (C); mean, rstd: (B, T).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    driver: &dyn Driver,
    dinp: DeviceSlice,
    dweight: DeviceSlice,
    dbias: DeviceSlice,
    dout: DeviceSlice,
    inp: DeviceSlice,
    weight: DeviceSlice,
    mean: DeviceSlice,
    rstd: DeviceSlice,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    let floatx = DeviceSlice::common_dtype("layernorm_backward", &[dinp, dweight, dbias, dout, inp, weight])?;
    mean.expect_f32("layernorm_backward", "mean")?;
    rstd.expect_f32("layernorm_backward", "rstd")?;
    let sizes = [Arg::I32(b as i32), Arg::I32(t as i32), Arg::I32(c as i32)];
    let dinp_args =
        [dinp.arg(), dout.arg(), inp.arg(), weight.arg(), mean.arg(), rstd.arg(), sizes[0], sizes[1], sizes[2]];
    let grid = (blocks_for(b * t * WARP, BLOCK), 1, 1);
    driver.launch("layernorm_backward_dinp", floatx, grid, (BLOCK_SIZE, 1, 1), 0, &dinp_args)?;
    let dparams_args =
        [dweight.arg(), dbias.arg(), dout.arg(), inp.arg(), mean.arg(), rstd.arg(), sizes[0], sizes[1], sizes[2]];
    let grid = (blocks_for(c, BLOCK), 1, 1);
    driver.launch("layernorm_backward_dparams", floatx, grid, (BLOCK_SIZE, 1, 1), 0, &dparams_args)
}
