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

/// A GPU test: run under the emulator in an `emu` build; in a `cuda`-only build marked ignored, so a machine
/// without a GPU reports it as such and dev/scripts/gpu_check.sh runs it with `--ignored`; ignored without either.
#[allow(unused_macros)] // recompute.rs marks its one GPU test by hand
macro_rules! gpu_test {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        $(#[$meta])*
        #[test]
        #[cfg_attr(
            not(feature = "emu"),
            ignore = "needs the emulator (--features emu) or a GPU (--features cuda, run with --ignored)"
        )]
        fn $name() $body
    };
}

/// Helpers of the bf16 kernel tests (gpu_bf16.rs, gpu_flash_tc.rs).
#[allow(dead_code)] // each test file uses some of them
pub mod bf16 {
    use llmrs::rng::Rng;

    /// x rounded to the nearest bf16 (ties to even), widened back.
    pub fn round_bf16(x: f32) -> f32 {
        half::bf16::from_f32(x).to_f32()
    }

    /// `n` normal values of std `std`, already rounded to bf16, so the CPU reference sees the GPU's inputs.
    pub fn randn16(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
        let mut v = vec![0.0; n];
        rng.fill_normal(&mut v, std);
        v.iter().map(|&x| round_bf16(x)).collect()
    }

    /// Root mean square, the scale of a tensor in the bf16 tolerance.
    pub fn rms(xs: &[f32]) -> f32 {
        (xs.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / xs.len().max(1) as f64).sqrt() as f32
    }
}
