//! Launchers for kernels/flash_attention.cu: the same attention as src/cpu/attention.rs and src/gpu/attention.rs
//! (out and lse from qkv; dqkv accumulated), computed in tiles of 32 positions staged through shared memory with an
//! online softmax, each block owning a tile of one (b, h). The backward pass is one launch of two kinds of blocks,
//! key tiles (dk, dv) and query tiles (dq), so no float is written twice and nothing needs atomics.
//!
//! The kernels keep each row's accumulators in registers, two channels per lane, so they handle heads of at most
//! 64 channels ([`MAX_HS`]); [`unsupported`] says why a shape is refused, and the GPU backend falls back to the
//! clear kernels of src/gpu/attention.rs for such shapes.

use super::driver::{Arg, DeviceSlice, Driver};
use crate::error::{Error, Result};

/// Positions per tile, for queries and keys (TILE in kernels/flash_attention.cu).
pub const TILE: usize = 32;
/// The largest head size HS = C / NH the kernels accept (FLASH_MAX_HS).
pub const MAX_HS: usize = 64;
/// Threads per block: 4 warps, each owning 8 rows of the block's tile (FLASH_THREADS).
const THREADS: u32 = 128;
/// CUDA's limit on gridDim.y, which counts the (b, h) pairs.
const MAX_GRID_Y: usize = 65535;
const F32_BYTES: usize = std::mem::size_of::<f32>();

/// Why the kernels cannot compute attention at this shape, or None when they can.
pub fn unsupported(b: usize, t: usize, c: usize, nh: usize) -> Option<String> {
    if nh == 0 || c % nh != 0 {
        return Some(format!("C = {c} is not a whole number of heads of NH = {nh}"));
    }
    let hs = c / nh;
    if hs == 0 || hs > MAX_HS {
        return Some(format!("head size HS = C / NH = {c} / {nh} = {hs} is not between 1 and {MAX_HS}"));
    }
    if b == 0 || t == 0 {
        return Some(format!("empty batch: B = {b}, T = {t}"));
    }
    if b * nh > MAX_GRID_Y {
        return Some(format!("B * NH = {} exceeds the grid's {MAX_GRID_Y} blocks in y", b * nh));
    }
    None
}

/// Whether the kernels can compute attention at this shape.
pub fn supports(b: usize, t: usize, c: usize, nh: usize) -> bool {
    unsupported(b, t, c, nh).is_none()
}

fn check(b: usize, t: usize, c: usize, nh: usize) -> Result<()> {
    match unsupported(b, t, c, nh) {
        Some(why) => Err(Error::config("flash attention shape", why)),
        None => Ok(()),
    }
}

/// Dynamic shared memory of the forward kernel (bytes): the query tile (TILE, HS), the key tile (TILE, HS + 1), the
/// value tile (TILE, HS) and the probabilities (TILE, TILE). 28.8 KB at HS = 64.
pub fn forward_shared_bytes(hs: usize) -> usize {
    (3 * TILE * hs + TILE + TILE * TILE) * F32_BYTES
}

/// Dynamic shared memory of the backward kernel (bytes): the block's own tile of two tensors (TILE, HS), the walked
/// tile of two (TILE, HS + 1), lse and D (TILE each), p and ds (TILE, TILE each). 41.5 KB at HS = 64, under the
/// 48 KB a kernel may use without opting in.
pub fn backward_shared_bytes(hs: usize) -> usize {
    (4 * TILE * hs + 4 * TILE + 2 * TILE * TILE) * F32_BYTES
}

/// out: (B, T, C); lse: (B, T, NH); qkv: (B, T, 3C).
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_forward(
    driver: &dyn Driver,
    out: DeviceSlice,
    lse: DeviceSlice,
    qkv: DeviceSlice,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    check(b, t, c, nh)?;
    let args = [
        out.arg(),
        lse.arg(),
        qkv.arg(),
        Arg::I32(b as i32),
        Arg::I32(t as i32),
        Arg::I32(c as i32),
        Arg::I32(nh as i32),
    ];
    let grid = (t.div_ceil(TILE) as u32, (b * nh) as u32, 1);
    let shared = forward_shared_bytes(c / nh) as u32;
    let floatx = DeviceSlice::common_dtype("flash_attention_forward", &[out, qkv])?;
    lse.expect_f32("flash_attention_forward", "lse")?;
    driver.launch("flash_attention_forward", floatx, grid, (THREADS, 1, 1), shared, &args)
}

/// dqkv: (B, T, 3C) accumulates; dout, out: (B, T, C); qkv: (B, T, 3C); lse: (B, T, NH).
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward(
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
    check(b, t, c, nh)?;
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
    // z = 0: key blocks (dk, dv), z = 1: query blocks (dq).
    let grid = (t.div_ceil(TILE) as u32, (b * nh) as u32, 2);
    let shared = backward_shared_bytes(c / nh) as u32;
    let floatx = DeviceSlice::common_dtype("flash_attention_backward", &[dqkv, dout, qkv, out])?;
    lse.expect_f32("flash_attention_backward", "lse")?;
    driver.launch("flash_attention_backward", floatx, grid, (THREADS, 1, 1), shared, &args)
}
