//! The GPU backend: one launcher per kernel file (grid, block and shared memory computed here, arithmetic in
//! kernels/*.cu), over a small driver interface with two implementations: the emulator (feature `emu`, kernels run
//! on the CPU) and, next, the CUDA driver (feature `cuda`). Launchers mirror src/cpu function for function, same
//! names, same argument order, so a test can run both on the same inputs and compare every element.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod driver;
#[cfg(feature = "emu")]
pub mod emu;

/// Fat binaries built by build.rs (feature `cuda`): (kernel file, fatbin) and (kernel, kernel file).
#[cfg(feature = "cuda")]
pub mod kernels {
    include!(concat!(env!("OUT_DIR"), "/cuda_kernels.rs"));
}

/// Blocks needed to cover `n` items with `per_block` items per block.
pub fn blocks_for(n: usize, per_block: usize) -> u32 {
    n.div_ceil(per_block) as u32
}
