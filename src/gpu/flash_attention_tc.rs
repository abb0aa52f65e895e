//! Launchers for kernels/flash_attention_tc.cu: the causal flash attention of src/gpu/flash_attention.rs (same out,
//! lse and dqkv, same layout), with every tile product on tensor cores (WMMA, bf16 operands, f32 accumulation). Blocks
//! own 64 positions of one (b, h), 16 per warp; the forward pass walks key tiles of 64, the backward pass (one launch
//! of key blocks for dk, dv and query blocks for dq, so nothing is written twice and nothing needs atomics) tiles of
//! 32.
//!
//! The kernels exist only for bf16 tensors: tensor cores take no f32 operands, so the fp32 build of the kernel file
//! traps, and these launchers refuse f32 tensors before launching. Heads must be a whole number of WMMA tiles of 16
//! channels and at most [`MAX_HS`] = 64 wide; [`unsupported`] says why a shape is refused, and the GPU backend then
//! uses src/gpu/flash_attention.rs (or the clear kernels).

use super::driver::{Arg, DType, DeviceSlice, Driver};
use crate::error::{Error, Result};

/// Positions a block owns, 16 per warp (OWN_ROWS in kernels/flash_attention_tc.cu).
pub const OWN_ROWS: usize = 64;
/// Keys per tile the forward pass walks (FWD_KEYS).
pub const FWD_KEYS: usize = 64;
/// Positions per tile the backward pass walks (BWD_WALK).
pub const BWD_WALK: usize = 32;
/// The largest head size HS = C / NH the kernels accept (TC_MAX_HS).
pub const MAX_HS: usize = 64;
/// HS must be a multiple of this: the m = n = k of a WMMA tile product (WMMA_DIM).
pub const WMMA_DIM: usize = 16;
/// Warps per block (TC_WARPS).
const WARPS: usize = 4;
/// Threads per block (TC_THREADS).
const THREADS: u32 = (WARPS * 32) as u32;
/// Elements of padding per shared row of bf16 and of f32 (BF16_PAD, F32_PAD).
const BF16_PAD: usize = 8;
const F32_PAD: usize = 4;
/// CUDA's limit on gridDim.y, which counts the (b, h) pairs.
const MAX_GRID_Y: usize = 65535;
const F32_BYTES: usize = 4;
const BF16_BYTES: usize = 2;

/// Why the kernels cannot compute attention at this shape, or None when they can (bf16 tensors assumed: the
/// launchers check the type).
pub fn unsupported(b: usize, t: usize, c: usize, nh: usize) -> Option<String> {
    if nh == 0 || c % nh != 0 {
        return Some(format!("C = {c} is not a whole number of heads of NH = {nh}"));
    }
    let hs = c / nh;
    if hs == 0 || hs > MAX_HS || hs % WMMA_DIM != 0 {
        return Some(format!(
            "head size HS = C / NH = {c} / {nh} = {hs} is not a multiple of {WMMA_DIM} between {WMMA_DIM} and {MAX_HS}"
        ));
    }
    if b == 0 || t == 0 {
        return Some(format!("empty batch: B = {b}, T = {t}"));
    }
    if b * nh > MAX_GRID_Y {
        return Some(format!("B * NH = {} exceeds the grid's {MAX_GRID_Y} blocks in y", b * nh));
    }
    None
}

/// Whether the kernels can compute attention at this shape (for bf16 tensors).
pub fn supports(b: usize, t: usize, c: usize, nh: usize) -> bool {
    unsupported(b, t, c, nh).is_none()
}

/// The shape is supported and the floatX tensors share one type, bf16.
fn check(kernel: &str, floatx: &[DeviceSlice], b: usize, t: usize, c: usize, nh: usize) -> Result<DType> {
    if let Some(why) = unsupported(b, t, c, nh) {
        return Err(Error::config("flash attention (tensor cores) shape", why));
    }
    let dtype = DeviceSlice::common_dtype(kernel, floatx)?;
    if dtype != DType::Bf16 {
        return Err(Error::config(
            kernel,
            format!(
                "tensors of {}: the tensor-core kernels take bf16 only (use src/gpu/flash_attention.rs for f32)",
                dtype.name()
            ),
        ));
    }
    Ok(dtype)
}

/// Dynamic shared memory of the forward kernel (bytes): the key and value tiles (FWD_KEYS, HS + 8) bf16, and per
/// warp a float scratch (16, FWD_KEYS + 4) for S and P V and its p (16, FWD_KEYS + 8) bf16. 44 KiB at HS = 64,
/// under the 48 KB a kernel may use without opting in.
pub fn forward_shared_bytes(hs: usize) -> usize {
    2 * FWD_KEYS * (hs + BF16_PAD) * BF16_BYTES
        + WARPS * WMMA_DIM * ((FWD_KEYS + F32_PAD) * F32_BYTES + (FWD_KEYS + BF16_PAD) * BF16_BYTES)
}

/// Dynamic shared memory of the backward kernel (bytes): the two walked tiles (BWD_WALK, HS + 8) bf16, lse and D of
/// OWN_ROWS queries (f32), and per warp s and dp (16, BWD_WALK + 4) f32 and p and ds (16, BWD_WALK + 8) bf16.
/// 37.5 KiB at HS = 64.
pub fn backward_shared_bytes(hs: usize) -> usize {
    2 * BWD_WALK * (hs + BF16_PAD) * BF16_BYTES
        + 2 * OWN_ROWS * F32_BYTES
        + WARPS * 2 * WMMA_DIM * ((BWD_WALK + F32_PAD) * F32_BYTES + (BWD_WALK + BF16_PAD) * BF16_BYTES)
}

/// out: (B, T, C) bf16; lse: (B, T, NH) f32; qkv: (B, T, 3C) bf16.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_tc_forward(
    driver: &dyn Driver,
    out: DeviceSlice,
    lse: DeviceSlice,
    qkv: DeviceSlice,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    let floatx = check("flash_attention_tc_forward", &[out, qkv], b, t, c, nh)?;
    lse.expect_f32("flash_attention_tc_forward", "lse")?;
    let args = [
        out.arg(),
        lse.arg(),
        qkv.arg(),
        Arg::I32(b as i32),
        Arg::I32(t as i32),
        Arg::I32(c as i32),
        Arg::I32(nh as i32),
    ];
    let grid = (t.div_ceil(OWN_ROWS) as u32, (b * nh) as u32, 1);
    let shared = forward_shared_bytes(c / nh) as u32;
    driver.launch("flash_attention_tc_forward", floatx, grid, (THREADS, 1, 1), shared, &args)
}

/// dqkv: (B, T, 3C) bf16, accumulates; dout, out: (B, T, C) bf16; qkv: (B, T, 3C) bf16; lse: (B, T, NH) f32.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_tc_backward(
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
    let floatx = check("flash_attention_tc_backward", &[dqkv, dout, qkv, out], b, t, c, nh)?;
    lse.expect_f32("flash_attention_tc_backward", "lse")?;
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
    let grid = (t.div_ceil(OWN_ROWS) as u32, (b * nh) as u32, 2);
    let shared = backward_shared_bytes(c / nh) as u32;
    driver.launch("flash_attention_tc_backward", floatx, grid, (THREADS, 1, 1), shared, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel gets 48 KB of shared memory per block without opting in, and the Driver has no opt-in call.
    #[test]
    fn shared_memory_fits_48_kb_at_every_supported_head_size() {
        for hs in (WMMA_DIM..=MAX_HS).step_by(WMMA_DIM) {
            assert!(forward_shared_bytes(hs) <= 48 * 1024, "forward at HS = {hs}: {}", forward_shared_bytes(hs));
            assert!(backward_shared_bytes(hs) <= 48 * 1024, "backward at HS = {hs}: {}", backward_shared_bytes(hs));
        }
        assert_eq!((forward_shared_bytes(64), backward_shared_bytes(64)), (45056, 38400));
    }

    #[test]
    fn head_sizes_must_be_whole_wmma_tiles_up_to_64() {
        assert!(supports(2, 1, 64, 1) && supports(1, 1000, 768, 12) && supports(3, 13, 48, 3));
        for (c, nh) in [(40, 5), (24, 1), (128, 1), (48, 0), (50, 3)] {
            let why = unsupported(1, 8, c, nh).unwrap();
            assert!(why.contains("HS") || why.contains("heads"), "C = {c}, NH = {nh}: {why}");
        }
        assert!(unsupported(0, 8, 64, 4).unwrap().contains("empty batch"));
    }
}
