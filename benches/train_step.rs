//! One full CPU training step, as `train::train` runs it: `zero_grad`, `forward_backward` (forward, fused
//! classifier with cross-entropy, backward), `grad_norm`, and the AdamW `update` with gradient clipping at 1.0.
//! Data loading, evaluation and logging are left out.
//!
//! Configs: the d4 preset (L=4, C=256, NH=4, 16M parameters) and GPT-2 124M (d12: L=12, C=768, NH=12), both at
//! B=4, T=64 with seeded random tokens below V = 50257. Criterion reports time per step and tokens/s
//! (`Throughput::Elements(B*T)`); the GFLOP per step (`flops_per_token(T) * B * T`) is printed once per config so
//! GFLOP/s = GFLOP per step / seconds per step.
//!
//! Threads: rayon's global pool, i.e. all cores unless `RAYON_NUM_THREADS` says otherwise. One d12 step takes
//! seconds on two cores, so each config runs 10 samples of a fixed iteration count (flat sampling) after a short
//! warm-up. One untimed step when the model is built pays for the activation and AdamW-state allocations, so the
//! warm-up estimates the steady step time.
//!
//! Run: `cargo bench --bench train_step` (or `-- d4` for one config). dev/bench/compare.sh times the same step
//! against PyTorch.
//!
//! Built with `--features cuda` on a GPU machine it also times GPT-2 124M on GPU 0 at B=8, T=1024 (the kernel
//! benches' shapes), in bf16 and in fp32, and prints tokens/s and MFU against the GPU's peak for that precision
//! (src/mfu.rs).

#[cfg(feature = "cuda")]
mod common;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use llmrs::config::GPT2Config;
use llmrs::cpu::global_norm::clip_scale;
use llmrs::model::{AdamWConfig, GPT2};
use llmrs::rng::Rng;
use std::hint::black_box;
use std::time::Duration;

/// Sequences per batch and tokens per sequence of every config.
const B: usize = 4;
const T: usize = 64;
/// Seeds of the weights and of the tokens.
const MODEL_SEED: u64 = 1337;
const TOKEN_SEED: u64 = 42;
/// A typical learning rate and the trainer's default clip; the step costs the same for any values.
const LR: f32 = 1e-4;
const GRAD_CLIP: f32 = 1.0;
const ADAMW: AdamWConfig = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };

/// (preset, measurement time in s): about ten steps' worth of time on two cores, with room for a busy machine.
const CONFIGS: &[(&str, u64)] = &[("d4", 8), ("d12", 60)];

/// B*T random token ids below V, the inputs; targets are the same ids shifted by one, as a data loader gives.
fn random_batch(vocab_size: usize) -> (Vec<u32>, Vec<u32>) {
    let mut rng = Rng::new(TOKEN_SEED);
    let tokens: Vec<u32> = (0..B * T + 1).map(|_| rng.below(vocab_size) as u32).collect();
    (tokens[..B * T].to_vec(), tokens[1..].to_vec())
}

/// One training step; returns the loss so the work cannot be optimised away.
fn train_step(model: &mut GPT2, inputs: &[u32], targets: &[u32], step: u32) -> f32 {
    model.zero_grad().expect("the CPU cannot fail");
    let loss = model.forward_backward(inputs, targets, B, T).expect("the batch fits the model");
    let norm = model.grad_norm().expect("the CPU cannot fail");
    model.update(&ADAMW, LR, clip_scale(norm, GRAD_CLIP), step).expect("the CPU cannot fail");
    loss
}

fn bench_train_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements((B * T) as u64));
    for &(preset, measure_s) in CONFIGS {
        let config = GPT2Config::preset(preset).expect("preset exists");
        group.measurement_time(Duration::from_secs(measure_s));
        // Built on first use, so a filter that skips this config skips its allocation too (d12: 2 GB).
        let mut state: Option<(GPT2, Vec<u32>, Vec<u32>)> = None;
        let mut step = 0u32;
        group.bench_function(format!("{preset}_B{B}_T{T}"), |bencher| {
            let (model, inputs, targets) = state.get_or_insert_with(|| {
                let gflop = config.flops_per_token(T) * (B * T) as f64 / 1e9;
                println!(
                    "{preset} B={B} T={T}: {:.2}M parameters, {gflop:.2} GFLOP per step, {} threads",
                    config.num_parameters() as f64 / 1e6,
                    rayon::current_num_threads()
                );
                let mut model = GPT2::random(config, MODEL_SEED).expect("preset is valid");
                let (inputs, targets) = random_batch(config.vocab_size);
                step += 1;
                train_step(&mut model, &inputs, &targets, step);
                (model, inputs, targets)
            });
            bencher.iter(|| {
                step += 1;
                black_box(train_step(model, inputs, targets, step))
            });
        });
    }
    group.finish();
}

/// GPT-2 124M steps on GPU 0, bf16 and fp32: time per step, tokens/s and MFU.
#[cfg(feature = "cuda")]
fn bench_gpu_train_step(c: &mut Criterion) {
    use llmrs::backend::{self, Device, Precision};
    const GPU_B: usize = 8;
    const GPU_T: usize = 1024;
    let config = GPT2Config::preset("d12").expect("preset exists");
    let mut rng = Rng::new(TOKEN_SEED);
    let tokens: Vec<u32> = (0..GPU_B * GPU_T + 1).map(|_| rng.below(config.vocab_size) as u32).collect();
    let (inputs, targets) = (&tokens[..GPU_B * GPU_T], &tokens[1..]);
    let flops_per_step = config.flops_per_token(GPU_T) * (GPU_B * GPU_T) as f64;
    let mut group = c.benchmark_group("gpu_train_step");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).throughput(Throughput::Elements((GPU_B * GPU_T) as u64));
    for precision in [Precision::Bf16, Precision::Fp32] {
        let backend = match backend::open(Device::Cuda, Some(precision)) {
            Ok((backend, _)) => backend,
            Err(e) => {
                eprintln!("GPU train step skipped: {e}");
                return;
            }
        };
        let device = backend.name();
        let params = GPT2::init_params(&config, MODEL_SEED).expect("preset is valid");
        let mut model = GPT2::with_backend(config, params, backend).expect("d12 fits the GPU");
        let mut step = 0u32;
        let mut run_step = |model: &mut GPT2| {
            step += 1;
            model.zero_grad().expect("GPU step");
            let loss = model.forward_backward(inputs, targets, GPU_B, GPU_T).expect("GPU step");
            let norm = model.grad_norm().expect("GPU step");
            model.update(&ADAMW, LR, clip_scale(norm, GRAD_CLIP), step).expect("GPU step");
            loss
        };
        run_step(&mut model);
        let mut timer = common::CallTimer::default();
        group.bench_function(format!("d12_B{GPU_B}_T{GPU_T}_{}", precision.name()), |bencher| {
            // Each step reads its loss and grad norm back, so it ends synchronised with the GPU.
            timer.iter(bencher, || {
                black_box(run_step(&mut model));
            })
        });
        if let Some(seconds) = timer.mean_seconds() {
            let flops_per_sec = flops_per_step / seconds;
            let mfu = llmrs::mfu::lookup(&device)
                .map(|peak| {
                    format!("MFU {:.1}%", 100.0 * llmrs::mfu::mfu(peak, flops_per_sec, precision == Precision::Bf16))
                })
                .unwrap_or_else(|| "MFU: peak unknown for this GPU".to_string());
            println!(
                "{device} d12 B={GPU_B} T={GPU_T} {}: {:.1} ms/step, {:.0} tokens/s, {:.1} TFLOP/s, {mfu}",
                precision.name(),
                seconds * 1e3,
                (GPU_B * GPU_T) as f64 / seconds,
                flops_per_sec / 1e12
            );
        }
    }
    group.finish();
}

#[cfg(not(feature = "cuda"))]
fn bench_gpu_train_step(_: &mut Criterion) {}

criterion_group!(benches, bench_train_step, bench_gpu_train_step);
criterion_main!(benches);
