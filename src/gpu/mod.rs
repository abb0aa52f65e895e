//! The GPU backend: one launcher per kernel file (grid, block and shared memory computed here, arithmetic in
//! kernels/*.cu), over a small driver interface with two implementations: the emulator (feature `emu`, kernels run
//! on the CPU) and, next, the CUDA driver (feature `cuda`). Launchers mirror src/cpu function for function, same
//! names, same argument order, so a test can run both on the same inputs and compare every element.

pub mod adamw;
pub mod attention;
pub mod backend;
pub mod classifier;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod driver;
#[cfg(feature = "emu")]
pub mod emu;
pub mod encoder;
pub mod flash_attention;
pub mod flash_attention_tc;
pub mod gelu;
pub mod global_norm;
pub mod layernorm;
pub mod matmul;
pub mod residual;

/// Threads per block for every launch: 8 warps, a common choice that keeps occupancy high for simple kernels.
pub const BLOCK_SIZE: u32 = 256;
/// BLOCK_SIZE as a count of items.
pub(crate) const BLOCK: usize = BLOCK_SIZE as usize;
/// Threads in a warp; kernels that map one row to one warp need rows * WARP threads.
pub(crate) const WARP: usize = 32;
/// Elements of `floatX` in one 128-bit load or store (kernels/common.cuh `GROUP`): 4 floats or 8 bf16. The
/// memory-bound kernels give each thread a group of this many consecutive elements.
pub(crate) fn group(floatx: driver::DType) -> usize {
    16 / floatx.size()
}

/// Fat binaries built by build.rs (feature `cuda`): (kernel file, fatbin) and (kernel, kernel file).
#[cfg(feature = "cuda")]
pub mod kernels {
    include!(concat!(env!("OUT_DIR"), "/cuda_kernels.rs"));
}

/// Blocks needed to cover `n` items with `per_block` items per block.
pub fn blocks_for(n: usize, per_block: usize) -> u32 {
    n.div_ceil(per_block) as u32
}
