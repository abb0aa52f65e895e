//! Launchers for kernels/encoder.cu (mirrors src/cpu/encoder.rs).

use super::driver::{Arg, DeviceSlice, DeviceTokens, Driver};
use super::{blocks_for, BLOCK, BLOCK_SIZE, F128_FLOATS};
use crate::error::Result;

/// out: (B, T, C); inp: (B, T); wte: (Vp, C); wpe: (maxT, C). One thread per group of 4 channels of a (b, t) row.
#[allow(clippy::too_many_arguments)]
pub fn encoder_forward(
    driver: &dyn Driver,
    out: DeviceSlice,
    inp: &DeviceTokens,
    wte: DeviceSlice,
    wpe: DeviceSlice,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    let args = [out.arg(), inp.arg(), wte.arg(), wpe.arg(), Arg::I32(b as i32), Arg::I32(t as i32), Arg::I32(c as i32)];
    let groups = b * t * c.div_ceil(F128_FLOATS);
    driver.launch("encoder_forward", (blocks_for(groups, BLOCK), 1, 1), (BLOCK_SIZE, 1, 1), 0, &args)
}

/// dwte: (Vp, C) and dwpe: (maxT, C) accumulate; dout: (B, T, C); inp: (B, T). dwte: one thread per channel
/// walking all positions in order (rows of repeated tokens never race); dwpe: one thread per (t, c).
#[allow(clippy::too_many_arguments)]
pub fn encoder_backward(
    driver: &dyn Driver,
    dwte: DeviceSlice,
    dwpe: DeviceSlice,
    dout: DeviceSlice,
    inp: &DeviceTokens,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    let sizes = [Arg::I32(b as i32), Arg::I32(t as i32), Arg::I32(c as i32)];
    let dwte_args = [dwte.arg(), dout.arg(), inp.arg(), sizes[0], sizes[1], sizes[2]];
    driver.launch("encoder_backward_dwte", (blocks_for(c, BLOCK), 1, 1), (BLOCK_SIZE, 1, 1), 0, &dwte_args)?;
    let dwpe_args = [dwpe.arg(), dout.arg(), sizes[0], sizes[1], sizes[2]];
    driver.launch("encoder_backward_dwpe", (blocks_for(t * c, BLOCK), 1, 1), (BLOCK_SIZE, 1, 1), 0, &dwpe_args)
}
