//! Launchers for kernels/attention.cu (mirrors src/cpu/attention.rs): one warp per (b, t, h) row, forward and
//! backward; in the backward pass the warp of row r owns dq[r], dk[r] and dv[r] of its head.

use super::driver::{Arg, DeviceSlice, Driver};
use super::{blocks_for, BLOCK, BLOCK_SIZE, WARP};
use crate::error::Result;

/// out: (B, T, C); lse: (B, T, NH); qkv: (B, T, 3C).
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    driver: &dyn Driver,
    out: DeviceSlice,
    lse: DeviceSlice,
    qkv: DeviceSlice,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    let args = [
        out.arg(),
        lse.arg(),
        qkv.arg(),
        Arg::I32(b as i32),
        Arg::I32(t as i32),
        Arg::I32(c as i32),
        Arg::I32(nh as i32),
    ];
    let floatx = DeviceSlice::common_dtype("attention_forward", &[out, qkv])?;
    lse.expect_f32("attention_forward", "lse")?;
    let grid = (blocks_for(b * t * nh * WARP, BLOCK), 1, 1);
    driver.launch("attention_forward", floatx, grid, (BLOCK_SIZE, 1, 1), 0, &args)
}

/// dqkv: (B, T, 3C) accumulates; dout, out: (B, T, C); qkv: (B, T, 3C); lse: (B, T, NH).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    driver: &dyn Driver,
    dqkv: DeviceSlice,
    dout: DeviceSlice,
    qkv: DeviceSlice,
    out: DeviceSlice,
    lse: DeviceSlice,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    let args = [
        dqkv.arg(),
        dout.arg(),
        qkv.arg(),
        out.arg(),
        lse.arg(),
        Arg::I32(b as i32),
        Arg::I32(t as i32),
        Arg::I32(c as i32),
        Arg::I32(nh as i32),
    ];
    let floatx = DeviceSlice::common_dtype("attention_backward", &[dqkv, dout, qkv, out])?;
    lse.expect_f32("attention_backward", "lse")?;
    let grid = (blocks_for(b * t * nh * WARP, BLOCK), 1, 1);
    driver.launch("attention_backward", floatx, grid, (BLOCK_SIZE, 1, 1), 0, &args)
}
