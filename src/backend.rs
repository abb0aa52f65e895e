//! What the model needs from a place that computes: the flat buffers of `layout::Buf` and one method per layer.
//!
//! `model.rs` writes GPT-2's layer sequence once, in terms of `Tensor` handles (a buffer, an offset, a length);
//! a backend owns the buffers and runs each layer on the tensors it is handed. Two backends exist: the CPU
//! reference (`cpu::backend`, host memory, src/cpu) and the GPU (`gpu::backend`, device memory, kernels/*.cu through
//! a driver: a real GPU or the emulator). Layer methods take the same arguments, in the same order, as the
//! functions of src/cpu and src/gpu they call: outputs first, then inputs, then sizes (B, T, C, NH, V, Vp).
//! Backward methods ACCUMULATE into parameter gradients (micro-batches add up). Activation gradients are overwritten
//! by matmul's, GELU's and the residual's backward (each the first or only writer of its output) and accumulated
//! into by LayerNorm's and attention's, as the layers do.

use crate::cpu::adamw::AdamWStep;
use crate::error::Result;
use crate::layout::{Buf, Tensor};

#[allow(clippy::too_many_arguments)]
pub trait Backend {
    /// "cpu (2 threads, AVX-512)", "cuda (NVIDIA H200, sm_90)", ... for the trainer's first line.
    fn name(&self) -> String;
    /// Bytes the backend could still allocate (host memory for the CPU, free device memory for a GPU), or None
    /// where that cannot be known; the trainer refuses a run that cannot fit before allocating any of it.
    fn memory_available(&self) -> Option<usize>;
    /// The storage precision of parameters, activations and gradients (statistics, master weights and AdamW's
    /// moments are always f32). The CPU is always `Fp32`.
    fn precision(&self) -> Precision;
    /// Bytes of scratch memory the backend takes besides the model's buffers (cuBLASLt's workspace on a GPU).
    fn workspace_bytes(&self) -> usize {
        0
    }

    /// Makes `buf` at least `len` elements long. A buffer that grows loses its contents and reads as zero after.
    fn reserve(&mut self, buf: Buf, len: usize) -> Result<()>;
    /// Replaces `buf` with `data` (the CPU keeps the vector itself; a GPU copies it to the device, rounding to its
    /// precision; bf16 parameters keep `data` as their f32 master weights).
    fn load(&mut self, buf: Buf, data: Vec<f32>) -> Result<()>;
    /// Copies `src` to the host, widened to f32 (bf16 parameters: their f32 master weights).
    fn read(&self, src: Tensor, dst: &mut [f32]) -> Result<()>;
    /// Sets every element of `dst` to zero.
    fn zero(&mut self, dst: Tensor) -> Result<()>;
    /// The batch's token ids, (B, T) each, for the encoder (`inputs`) and the classifier (`targets`).
    fn set_tokens(&mut self, inputs: &[u32], targets: Option<&[u32]>) -> Result<()>;

    /// out (B, T, C) = wte[inputs] + wpe[t].
    fn encoder_forward(&mut self, out: Tensor, wte: Tensor, wpe: Tensor, b: usize, t: usize, c: usize) -> Result<()>;
    fn encoder_backward(
        &mut self,
        dwte: Tensor,
        dwpe: Tensor,
        dout: Tensor,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()>;
    fn layernorm_forward(
        &mut self,
        out: Tensor,
        mean: Tensor,
        rstd: Tensor,
        inp: Tensor,
        weight: Tensor,
        bias: Tensor,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()>;
    /// residual = inp1 + inp2, then out = LayerNorm(residual).
    fn fused_residual_layernorm_forward(
        &mut self,
        residual: Tensor,
        out: Tensor,
        mean: Tensor,
        rstd: Tensor,
        inp1: Tensor,
        inp2: Tensor,
        weight: Tensor,
        bias: Tensor,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()>;
    fn layernorm_backward(
        &mut self,
        dinp: Tensor,
        dweight: Tensor,
        dbias: Tensor,
        dout: Tensor,
        inp: Tensor,
        weight: Tensor,
        mean: Tensor,
        rstd: Tensor,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()>;
    /// out (B, T, OC) = inp (B, T, C) · weightᵀ (OC, C) + bias (OC).
    fn matmul_forward(
        &mut self,
        out: Tensor,
        inp: Tensor,
        weight: Tensor,
        bias: Option<Tensor>,
        b: usize,
        t: usize,
        c: usize,
        oc: usize,
    ) -> Result<()>;
    fn matmul_backward(
        &mut self,
        dinp: Tensor,
        dweight: Tensor,
        dbias: Option<Tensor>,
        dout: Tensor,
        inp: Tensor,
        weight: Tensor,
        b: usize,
        t: usize,
        c: usize,
        oc: usize,
    ) -> Result<()>;
    /// Causal self-attention: out (B, T, C) and lse (B, T, NH) from qkv (B, T, 3C).
    fn attention_forward(
        &mut self,
        out: Tensor,
        lse: Tensor,
        qkv: Tensor,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
    ) -> Result<()>;
    fn attention_backward(
        &mut self,
        dqkv: Tensor,
        dout: Tensor,
        qkv: Tensor,
        out: Tensor,
        lse: Tensor,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
    ) -> Result<()>;
    fn gelu_forward(&mut self, out: Tensor, inp: Tensor, n: usize) -> Result<()>;
    fn gelu_backward(&mut self, dinp: Tensor, inp: Tensor, dout: Tensor, n: usize) -> Result<()>;
    fn residual_forward(&mut self, out: Tensor, inp1: Tensor, inp2: Tensor, n: usize) -> Result<()>;
    fn residual_backward(&mut self, dinp1: Tensor, dinp2: Tensor, dout: Tensor, n: usize) -> Result<()>;
    /// Softmax + cross-entropy of logits (B, T, Vp) against the targets into losses (B, T); with `dloss`, the
    /// logits are overwritten by dloss · d(loss)/d(logits).
    fn fused_classifier(
        &mut self,
        logits: Tensor,
        losses: Tensor,
        b: usize,
        t: usize,
        v: usize,
        vp: usize,
        dloss: Option<f32>,
    ) -> Result<()>;
    /// Σ grads², summed in f64 over fixed slices so the result does not depend on the thread count.
    fn global_norm_squared(&mut self, grads: Tensor) -> Result<f64>;
    fn adamw_update(&mut self, params: Tensor, grads: Tensor, m: Tensor, v: Tensor, hp: &AdamWStep) -> Result<()>;
}

/// The storage precision of parameters, activations and gradients, as `--precision` names it. Arithmetic
/// accumulates in f32 either way; with bf16, AdamW updates f32 master weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Bf16,
}

impl Precision {
    /// Bytes per stored element.
    pub fn bytes(self) -> usize {
        match self {
            Precision::Fp32 => 4,
            Precision::Bf16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Where to run, as the `--device` flag of every command names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when this build has kernels (feature `cuda`) and a GPU is present, otherwise the CPU.
    Auto,
    Cpu,
    /// GPU 0 (a build with feature `cuda`).
    Cuda,
    /// The CUDA kernels run on the CPU by the emulator (a build with feature `emu`; slow, for checking kernels).
    Emu,
}

/// The GPU backend on GPU 0.
#[cfg(feature = "cuda")]
fn cuda_backend(precision: Precision) -> Result<Box<dyn Backend>> {
    let driver = std::rc::Rc::new(crate::gpu::cuda::CudaDriver::new(0)?);
    Ok(Box::new(crate::gpu::backend::GpuBackend::new(driver, precision)?))
}

#[cfg(not(feature = "cuda"))]
fn cuda_backend(_: Precision) -> Result<Box<dyn Backend>> {
    Err(crate::Error::config(
        "--device",
        "cuda: this build has no CUDA kernels; rebuild with `cargo build --release --features cuda` (needs nvcc, \
         see the README) or use --device cpu",
    ))
}

#[cfg(feature = "emu")]
fn emu_backend(precision: Precision) -> Result<Box<dyn Backend>> {
    let driver = std::rc::Rc::new(crate::gpu::emu::EmuDriver::new());
    Ok(Box::new(crate::gpu::backend::GpuBackend::new(driver, precision)?))
}

#[cfg(not(feature = "emu"))]
fn emu_backend(_: Precision) -> Result<Box<dyn Backend>> {
    Err(crate::Error::config("--device", "emu: this build has no emulator; rebuild with `--features emu`"))
}

/// The backend `device` asks for, and for `auto` a few words on why it was chosen (empty otherwise).
/// `precision`: the storage precision, or None for the device's default (bf16 on a GPU, as llm.c trains; fp32 on
/// the CPU, which has only fp32 kernels and refuses bf16).
pub fn open(device: Device, precision: Option<Precision>) -> Result<(Box<dyn Backend>, String)> {
    let gpu_precision = precision.unwrap_or(Precision::Bf16);
    let cpu = || -> Result<Box<dyn Backend>> {
        match precision {
            Some(Precision::Bf16) => Err(crate::Error::config(
                "--precision",
                "bf16 needs a GPU (--device cuda, or emu to check the kernels); the CPU computes in fp32 only",
            )),
            _ => Ok(Box::new(crate::cpu::backend::CpuBackend::new())),
        }
    };
    Ok(match device {
        Device::Cpu => (cpu()?, String::new()),
        Device::Cuda => (cuda_backend(gpu_precision)?, String::new()),
        Device::Emu => (emu_backend(gpu_precision)?, String::new()),
        Device::Auto if cfg!(feature = "cuda") => match cuda_backend(gpu_precision) {
            Ok(backend) => (backend, "auto: found a GPU".to_string()),
            Err(e) => (cpu()?, format!("auto: no usable GPU ({e})")),
        },
        Device::Auto => (cpu()?, "auto: this build has no CUDA kernels".to_string()),
    })
}
