//! The CPU engine against PyTorch. tools/make_fixtures.py builds two GPT-2 models with transformers (random
//! init, biases and LayerNorm parameters perturbed away from 0 and 1, float64) and records logits, loss, every
//! gradient of one batch, and 12 AdamW steps with warmup, cosine decay, weight decay and clipping. `small` has
//! power-of-two sizes; `odd` has T = 13 and V = 389 (padded to 512), so padding and remainders are exercised.

use llmrs::checkpoint::read_model;
use llmrs::data::DataLoader;
use llmrs::layout::ParamTensors;
use llmrs::model::{AdamWConfig, GPT2};
use llmrs::train::{train, Event, TrainOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Per-step train and val losses must match PyTorch's float64 run this closely (the bound).
const LOSS_TOLERANCE: f64 = 5e-5;
/// Step-0 logits: float32 forward against float64, |rust - torch| per element.
const LOGITS_TOLERANCE: f32 = 2e-5;
/// Step-0 gradients: per tensor, max |rust - torch| relative to the tensor's largest |torch| gradient.
const GRAD_RELATIVE_TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// llm.c's debug state: header (256 int32: magic 20240327, version 2, B, T), inputs, targets, logits (B, T, V),
/// the loss, and the gradients of every parameter in checkpoint order.
struct DebugState {
    b: usize,
    t: usize,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    logits: Vec<f32>,
    loss: f32,
    grads: Vec<f32>,
}

fn read_debug_state(name: &str, v: usize) -> DebugState {
    let bytes = std::fs::read(fixture(name)).expect("fixture exists");
    let ints: &[i32] = bytemuck::cast_slice(&bytes[..1024]);
    assert_eq!((ints[0], ints[1]), (20240327, 2), "debug state header");
    let (b, t) = (ints[2] as usize, ints[3] as usize);
    let words: Vec<u32> = bytes[1024..].chunks_exact(4).map(|w| u32::from_le_bytes(w.try_into().unwrap())).collect();
    let floats = |range: std::ops::Range<usize>| words[range].iter().map(|&w| f32::from_bits(w)).collect::<Vec<_>>();
    let n = b * t;
    DebugState {
        b,
        t,
        inputs: words[..n].to_vec(),
        targets: words[n..2 * n].to_vec(),
        logits: floats(2 * n..2 * n + n * v),
        loss: f32::from_bits(words[2 * n + n * v]),
        grads: floats(2 * n + n * v + 1..words.len()),
    }
}

fn check_step0(name: &str) {
    let (config, params) = read_model(&fixture(&format!("{name}_model.bin"))).expect("fixture model loads");
    let (v, vp) = (config.vocab_size, config.padded_vocab_size);
    let state = read_debug_state(&format!("{name}_debug_state.bin"), v);
    let mut model = GPT2::new(config, params).unwrap();
    assert_eq!(state.grads.len(), model.num_parameters(), "{name}: gradient count");

    let loss = model.forward(&state.inputs, Some(&state.targets), state.b, state.t).unwrap().unwrap();
    let mut max_logit_err = 0.0f32;
    let logits = model.logits().unwrap();
    for (row, expected) in state.logits.chunks_exact(v).enumerate() {
        let got = &logits[row * vp..][..v];
        for (g, e) in got.iter().zip(expected) {
            max_logit_err = max_logit_err.max((g - e).abs());
        }
    }
    assert!(max_logit_err < LOGITS_TOLERANCE, "{name}: logits differ by {max_logit_err}");
    assert!((loss - state.loss).abs() < 1e-5, "{name}: loss {loss} vs torch {}", state.loss);

    model.zero_grad().unwrap();
    let loss2 = model.forward_backward(&state.inputs, &state.targets, state.b, state.t).unwrap();
    assert_eq!(loss, loss2, "{name}: forward_backward computes the same loss as forward");
    let sizes = ParamTensors::sizes(&config);
    let expected = sizes.split(&state.grads).into_vec();
    let grads = model.grads().unwrap();
    let got = sizes.split(&grads).into_vec();
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        let scale = e.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let err = g.iter().zip(e.iter()).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let tensor = ParamTensors::<usize>::NAMES[i];
        assert!(scale > 0.0, "{name}: torch gradient of {tensor} is all zero, the fixture cannot catch bugs");
        assert!(err <= GRAD_RELATIVE_TOLERANCE * scale, "{name}: d{tensor} differs by {err} (largest |grad| {scale})");
    }
}

#[test]
fn step0_logits_loss_and_every_gradient_match_pytorch_small() {
    check_step0("small");
}

#[test]
fn step0_logits_loss_and_every_gradient_match_pytorch_odd_sizes() {
    check_step0("odd");
}

fn check_training(name: &str) {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{name}_losses.json"))).unwrap()).unwrap();
    let tr = &expected["train"];
    let num = |key: &str| tr[key].as_f64().unwrap_or_else(|| panic!("{key} in {name}_losses.json"));
    let (b, t) = (num("batch_size") as usize, num("seq_len") as usize);
    let opts = TrainOptions {
        batch_size: b,
        seq_len: t,
        steps: num("steps") as usize,
        lr: num("lr") as f32,
        warmup: num("warmup") as usize,
        lr_final_frac: num("lr_final_frac") as f32,
        adamw: AdamWConfig {
            beta1: num("beta1") as f32,
            beta2: num("beta2") as f32,
            eps: num("eps") as f32,
            weight_decay: num("weight_decay") as f32,
        },
        grad_clip: num("grad_clip") as f32,
        val_every: num("val_every") as usize,
        val_batches: num("val_batches") as usize,
        sample_every: 0,
        gen_tokens: 0,
        sampling: llmrs::sample::SamplingOptions::default(),
        seed: 0,
        checkpoint_every: 0,
        keep_checkpoints: 0,
        inspect: false,
        skip_loss_z: 0.0,
        skip_grad_z: 0.0,
        max_skips: 10,
    };
    let (config, params) = read_model(&fixture(&format!("{name}_model.bin"))).unwrap();
    let mut model = GPT2::new(config, params).unwrap();
    let path = |split: &str| fixture(&format!("{name}_{split}.bin")).to_string_lossy().into_owned();
    let mut train_loader = DataLoader::open(&path("train"), b, t, None).unwrap();
    let mut val_loader = DataLoader::open(&path("val"), b, t, None).unwrap();
    let mut lrs = Vec::new();
    let mut norms = Vec::new();
    let summary = train(&mut model, &mut train_loader, Some(&mut val_loader), None, &opts, None, None, |event| {
        if let Event::Step(m) = event {
            lrs.push(m.lr as f64);
            norms.push(m.grad_norm as f64);
        }
    })
    .unwrap();

    let floats =
        |key: &str| -> Vec<f64> { expected[key].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    for (step, (got, want)) in summary.train_losses.iter().zip(floats("train_losses")).enumerate() {
        assert!(
            (*got as f64 - want).abs() < LOSS_TOLERANCE,
            "{name}: train loss at step {step}: {got} vs torch {want}"
        );
    }
    assert_eq!(summary.train_losses.len(), opts.steps);
    for (step, (got, want)) in lrs.iter().zip(floats("lrs")).enumerate() {
        assert!((got - want).abs() < 1e-9 + 1e-6 * want, "{name}: lr at step {step}: {got} vs {want}");
    }
    for (step, (got, want)) in norms.iter().zip(floats("grad_norms")).enumerate() {
        assert!((got - want).abs() < 1e-4 * want, "{name}: grad norm at step {step}: {got} vs torch {want}");
    }
    let want_val: Vec<(usize, f64)> = expected["val_losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap()))
        .collect();
    assert_eq!(
        summary.val_losses.iter().map(|v| v.0).collect::<Vec<_>>(),
        want_val.iter().map(|v| v.0).collect::<Vec<_>>(),
        "{name}: evaluation steps"
    );
    for ((step, got), (_, want)) in summary.val_losses.iter().zip(&want_val) {
        assert!((*got as f64 - want).abs() < LOSS_TOLERANCE, "{name}: val loss at step {step}: {got} vs torch {want}");
    }
}

#[test]
fn twelve_adamw_steps_with_clipping_and_decay_match_pytorch_small() {
    check_training("small");
}

#[test]
fn twelve_adamw_steps_with_clipping_and_decay_match_pytorch_odd_sizes() {
    check_training("odd");
}
