//! `--recompute`: the backward pass rebuilds GELU's and the LayerNorms' outputs instead of keeping them for every
//! layer. Results must not change by a single bit on the CPU, and must stay within tolerance on the GPU backend.

#[macro_use]
mod common;
use common::driver;
use llmrs::backend::Precision;
use llmrs::layout::Recompute;
use llmrs::model::{AdamWConfig, MemoryPlan, GPT2};
use llmrs::rng::Rng;
use llmrs::GPT2Config;

fn config() -> GPT2Config {
    GPT2Config {
        max_seq_len: 16,
        vocab_size: 97,
        padded_vocab_size: llmrs::config::padded_vocab(97),
        num_layers: 3,
        num_heads: 3,
        channels: 48,
    }
}

/// Losses and final parameters of `steps` AdamW steps of `model` on seeded random batches of (3, 13).
fn train(model: &mut GPT2, steps: u32) -> (Vec<f32>, Vec<f32>) {
    let (b, t) = (3, 13);
    let adamw = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let mut rng = Rng::new(8);
    let mut losses = Vec::new();
    for step in 1..=steps {
        let batch: Vec<u32> = (0..b * t + 1).map(|_| rng.below(97) as u32).collect();
        model.zero_grad().unwrap();
        losses.push(model.forward_backward(&batch[..b * t], &batch[1..], b, t).unwrap());
        let norm = model.grad_norm().unwrap();
        model.update(&adamw, 3e-3, llmrs::cpu::global_norm::clip_scale(norm, 1.0), step).unwrap();
    }
    (losses, model.params().unwrap())
}

#[test]
fn recomputing_changes_no_bit_on_the_cpu_and_saves_memory() {
    let params = GPT2::init_params(&config(), 1).unwrap();
    let mut kept = GPT2::new(config(), params.clone()).unwrap();
    let reference = train(&mut kept, 6);
    for what in [Recompute::Gelu, Recompute::GeluAndLayerNorm] {
        let mut model = GPT2::new(config(), params.clone()).unwrap();
        model.set_recompute(what);
        let got = train(&mut model, 6);
        assert!(got.0 == reference.0, "{what:?}: losses {:?} vs {:?}", got.0, reference.0);
        assert!(got.1 == reference.1, "{what:?}: parameters differ");
    }
    // GPT-2 124M at B=16, T=1024: what level 2 saves.
    let d12 = GPT2Config::preset("d12").unwrap();
    let full = MemoryPlan::new(&d12, 16, 1024, Recompute::Nothing).total();
    let slim = MemoryPlan::new(&d12, 16, 1024, Recompute::GeluAndLayerNorm).total();
    let (l, bt, c) = (12, 16 * 1024, 768);
    assert_eq!(full - slim, 4 * (l - 1) * bt * (4 * c + 2 * c), "GELU and LayerNorm outputs of L - 1 layers, fp32");
    eprintln!("d12 B=16 T=1024 fp32 plan: {} MiB, with --recompute 2: {} MiB", full >> 20, slim >> 20);
}

/// Issue 5's memory target: GPT-2 124M trains at T = 1024 with B >= 16 on a 12 GB RTX 4070. The card reports 12,282
/// MiB; the CUDA context, cuBLAS's workspace and the allocator's rounding take several hundred MiB of that, so the
/// plan must stay under 11 GiB.
#[test]
fn gpt2_124m_at_t_1024_and_b_16_fits_a_12_gb_card_in_bf16_with_recompute() {
    let d12 = GPT2Config::preset("d12").unwrap();
    // With the 32 MiB cuBLASLt workspace the CUDA backend adds (src/gpu/cuda.rs).
    let plan =
        |recompute, precision| MemoryPlan::in_precision(&d12, 16, 1024, recompute, precision).with_workspace(32 << 20);
    for recompute in [Recompute::Nothing, Recompute::Gelu, Recompute::GeluAndLayerNorm] {
        eprintln!(
            "d12 B=16 T=1024 {recompute:?}: {} | {}",
            plan(recompute, Precision::Fp32),
            plan(recompute, Precision::Bf16)
        );
    }
    let bf16 = plan(Recompute::GeluAndLayerNorm, Precision::Bf16);
    assert!(bf16.total() < 11 << 30, "bf16 with --recompute 2 must fit a 12 GB card: {bf16}");
    let fp32 = plan(Recompute::GeluAndLayerNorm, Precision::Fp32);
    assert!(fp32.total() > 12 << 30, "fp32 does not fit, which is why bf16 is the GPU default: {fp32}");
    // bf16 stores parameters, gradients and activations in half the bytes and adds f32 master weights.
    let n = d12.num_parameters();
    assert_eq!((bf16.parameters, bf16.master, bf16.gradients, bf16.optimizer), (2 * n, 4 * n, 2 * n, 8 * n));
    assert!(bf16.to_string().ends_with(", workspace 32)"), "the plan names the workspace: {bf16}");
}

#[test]
#[cfg_attr(not(feature = "emu"), ignore = "needs the emulator (--features emu) or a GPU (--features cuda, --ignored)")]
fn recomputing_on_the_gpu_backend_matches_the_cpu() {
    let params = GPT2::init_params(&config(), 2).unwrap();
    let (cpu_losses, _) = train(&mut GPT2::new(config(), params.clone()).unwrap(), 4);
    let backend = Box::new(llmrs::gpu::backend::GpuBackend::new(driver(), llmrs::backend::Precision::Fp32).unwrap());
    let mut gpu = GPT2::with_backend(config(), params, backend).unwrap();
    gpu.set_recompute(Recompute::GeluAndLayerNorm);
    let (gpu_losses, _) = train(&mut gpu, 4);
    for (g, c) in gpu_losses.iter().zip(&cpu_losses) {
        assert!((g - c).abs() <= 1e-4, "gpu {g} vs cpu {c}");
    }
}
