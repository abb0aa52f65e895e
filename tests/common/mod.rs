//! Pieces shared by the GPU test files (each `tests/*.rs` is its own crate; this module is included by those that
//! need it).

use llmrs::gpu::driver::Driver;
use std::rc::Rc;

/// The device the GPU tests run on: the emulator in an `emu` build, GPU 0 in a `cuda`-only build (where the tests
/// are marked ignored and run with `--ignored` on a GPU), nothing otherwise (the tests are ignored there).
#[cfg(feature = "emu")]
pub fn driver() -> Rc<dyn Driver> {
    Rc::new(llmrs::gpu::emu::EmuDriver::new())
}

#[cfg(all(feature = "cuda", not(feature = "emu")))]
pub fn driver() -> Rc<dyn Driver> {
    Rc::new(llmrs::gpu::cuda::CudaDriver::new(0).expect("these tests need GPU 0 (run with --ignored only on a GPU)"))
}

#[cfg(not(any(feature = "emu", feature = "cuda")))]
pub fn driver() -> Rc<dyn Driver> {
    unreachable!("GPU tests are ignored in builds without a GPU backend")
}
