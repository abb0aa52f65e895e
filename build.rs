//! Build script. The CPU engine needs nothing from it; the CUDA kernels in kernels/ are compiled here (with nvcc,
//! or with the host C++ compiler for the emulator) once the GPU backend exists. Until then it only tells cargo
//! that kernel edits matter, so adding that step later does not change when the crate rebuilds.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
}
