//! Launchers for kernels/encoder.cu (mirrors src/cpu/encoder.rs).

use super::driver::{Arg, DeviceSlice, DeviceTokens, Driver};
use super::{blocks_for, group, BLOCK, BLOCK_SIZE};
use crate::error::Result;

/// out: (B, T, C); inp: (B, T); wte: (Vp, C); wpe: (maxT, C). One thread per group of channels of a (b, t) row.
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
    let floatx = DeviceSlice::common_dtype("encoder_forward", &[out, wte, wpe])?;
    let groups = b * t * c.div_ceil(group(floatx));
    driver.launch("encoder_forward", floatx, (blocks_for(groups, BLOCK), 1, 1), (BLOCK_SIZE, 1, 1), 0, &args)
}

/// dwte: (Vp, C) and dwpe: (maxT, C) accumulate; dout: (B, T, C); inp: (B, T); order: (B*T) the positions sorted
/// by token ([`token_order`]). dwte: one thread per channel walking the positions token by token (rows of repeated
/// tokens never race, each token's sum is added once); dwpe: one thread per (t, c).
#[allow(clippy::too_many_arguments)]
pub fn encoder_backward(
    driver: &dyn Driver,
    dwte: DeviceSlice,
    dwpe: DeviceSlice,
    dout: DeviceSlice,
    inp: &DeviceTokens,
    order: &DeviceTokens,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    let floatx = DeviceSlice::common_dtype("encoder_backward", &[dwte, dwpe, dout])?;
    let sizes = [Arg::I32(b as i32), Arg::I32(t as i32), Arg::I32(c as i32)];
    let dwte_args = [dwte.arg(), dout.arg(), order.arg(), inp.arg(), sizes[0], sizes[1], sizes[2]];
    let grid = (blocks_for(c, BLOCK), 1, 1);
    driver.launch("encoder_backward_dwte", floatx, grid, (BLOCK_SIZE, 1, 1), 0, &dwte_args)?;
    let dwpe_args = [dwpe.arg(), dout.arg(), sizes[0], sizes[1], sizes[2]];
    let grid = (blocks_for(t * c, BLOCK), 1, 1);
    driver.launch("encoder_backward_dwpe", floatx, grid, (BLOCK_SIZE, 1, 1), 0, &dwpe_args)
}

/// The positions 0..B*T of `inputs` sorted by token id, stable (positions of one token stay in order): the walk
/// encoder_backward_dwte makes, so that each token's contributions are summed together.
pub fn token_order(inputs: &[u32]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..inputs.len() as u32).collect();
    order.sort_by_key(|&i| inputs[i as usize]);
    order
}
