//! Where a CPU training step spends its time, layer by layer, at the shapes of issue 6's three configs:
//! GPT-2 124M (d12) at B=4 T=64, d4 (L4 C256, GPT-2's vocabulary) at B=8 T=256, and bytes6 (L6 C384 NH6, a
//! 256-token byte vocabulary) at B=16 T=256.
//!
//! Each config builds a model on the CPU backend wrapped in a recorder, runs two untimed steps (allocations,
//! AdamW state), then records the backend calls of RECORDED_STEPS full steps (zero_grad, forward, classifier,
//! backward, global norm, AdamW), timing each call as it runs. Criterion then times the whole step, and every
//! distinct call (layer and shape) replayed on its own against the model's own buffers, so each layer runs on
//! the data layout and sizes it has in training. The table printed at the end gives per layer: calls per step,
//! ms per call, ms per step (calls x ms per call), its share of the step, its rate, and "in step": the mean time
//! its calls took inside the recorded steps (one sample per call, so noisier than criterion's, but with the
//! caches as a real step leaves them; compare the two columns to see what running in sequence costs). Rates:
//! GFLOP/s for matmuls and attention (useful FLOPs: attention counts the causal pairs only), GB/s for the
//! element-wise layers (bytes each must move at least). The step's GFLOP/s (the trainer's nominal count) is
//! compared with the GEMM ceiling measured here first (the best of a few large sgemms), the fastest any
//! matmul-bound step could go on this machine.
//!
//! Replaying a call overwrites or accumulates into the buffers it writes; the values drift, the work does not.
//!
//! Run: `cargo bench --bench cpu_layers` (3-4 min on 2 cores), or `-- bytes6` (any substring of a config's
//! name) for some configs only. Threads: rayon's global pool (`RAYON_NUM_THREADS`).

mod common;

use common::CallTimer;
use criterion::{BenchmarkId, Criterion, SamplingMode};
use llmrs::backend::{Backend, Precision};
use llmrs::config::{padded_vocab, GPT2Config};
use llmrs::cpu::adamw::AdamWStep;
use llmrs::cpu::backend::CpuBackend;
use llmrs::cpu::global_norm::clip_scale;
use llmrs::error::Result;
use llmrs::layout::{Buf, Tensor};
use llmrs::model::{AdamWConfig, GPT2};
use llmrs::rng::Rng;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

const MODEL_SEED: u64 = 1337;
const TOKEN_SEED: u64 = 42;
const ADAMW: AdamWConfig = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
const F32: u64 = 4;
/// Steps whose calls are recorded: the in-step times are their mean.
const RECORDED_STEPS: usize = 3;

/// Issue 6's configs: (name, preset, vocabulary size or None for the preset's, B, T).
const CONFIGS: &[(&str, &str, Option<usize>, usize, usize)] = &[
    ("d12_B4_T64", "d12", None, 4, 64),
    ("d4_B8_T256", "d4", None, 8, 256),
    ("bytes6_B16_T256", "d6", Some(256), 16, 256),
];

/// What a call's rate is measured in.
#[derive(Clone, Copy)]
enum Work {
    Bytes(u64),
    Flops(u64),
}

/// A recorded call, run again on the backend it ran on.
type Replay = Box<dyn Fn(&mut CpuBackend) -> Result<()>>;

/// One backend call of the recorded step, replayable on the backend it ran on.
struct Call {
    layer: &'static str,
    shape: String,
    work: Work,
    replay: Replay,
    /// How long the call took inside the recorded step (one sample, with the caches as the step left them).
    in_step: Duration,
}

/// A CPU backend that, while `recording` is set, keeps every layer call it forwards.
struct Recorder {
    inner: Rc<RefCell<CpuBackend>>,
    calls: Rc<RefCell<Vec<Call>>>,
    recording: Rc<Cell<bool>>,
}

impl Recorder {
    /// Runs `f` on the CPU backend, and keeps it when recording.
    fn call(
        &mut self,
        layer: &'static str,
        shape: String,
        work: Work,
        f: impl Fn(&mut CpuBackend) -> Result<()> + 'static,
    ) -> Result<()> {
        let start = Instant::now();
        let result = f(&mut self.inner.borrow_mut());
        let in_step = start.elapsed();
        if self.recording.get() {
            self.calls.borrow_mut().push(Call { layer, shape, work, replay: Box::new(f), in_step });
        }
        result
    }
}

#[allow(clippy::too_many_arguments)]
impl Backend for Recorder {
    fn name(&self) -> String {
        self.inner.borrow().name()
    }
    fn memory_available(&self) -> Option<usize> {
        self.inner.borrow().memory_available()
    }
    fn precision(&self) -> Precision {
        Precision::Fp32
    }
    fn reserve(&mut self, buf: Buf, len: usize) -> Result<()> {
        self.inner.borrow_mut().reserve(buf, len)
    }
    fn load(&mut self, buf: Buf, data: Vec<f32>) -> Result<()> {
        self.inner.borrow_mut().load(buf, data)
    }
    fn read(&self, src: Tensor, dst: &mut [f32]) -> Result<()> {
        self.inner.borrow().read(src, dst)
    }
    fn zero(&mut self, dst: Tensor) -> Result<()> {
        self.call("zero", format!("{:?} {}", dst.buf, dst.len), Work::Bytes(dst.len as u64 * F32), move |k| k.zero(dst))
    }
    fn set_tokens(&mut self, inputs: &[u32], targets: Option<&[u32]>) -> Result<()> {
        self.inner.borrow_mut().set_tokens(inputs, targets)
    }
    fn encoder_forward(&mut self, out: Tensor, wte: Tensor, wpe: Tensor, b: usize, t: usize, c: usize) -> Result<()> {
        let work = Work::Bytes(3 * (b * t * c) as u64 * F32);
        self.call("encoder_forward", format!("{b}x{t}x{c}"), work, move |k| k.encoder_forward(out, wte, wpe, b, t, c))
    }
    fn encoder_backward(
        &mut self,
        dwte: Tensor,
        dwpe: Tensor,
        dout: Tensor,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        // dout read, a row of dwte and of dwpe read and written per position.
        let work = Work::Bytes(5 * (b * t * c) as u64 * F32);
        self.call("encoder_backward", format!("{b}x{t}x{c}"), work, move |k| {
            k.encoder_backward(dwte, dwpe, dout, b, t, c)
        })
    }
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
    ) -> Result<()> {
        let work = Work::Bytes(2 * (b * t * c) as u64 * F32);
        self.call("layernorm_forward", format!("{b}x{t}x{c}"), work, move |k| {
            k.layernorm_forward(out, mean, rstd, inp, weight, bias, b, t, c)
        })
    }
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
    ) -> Result<()> {
        let work = Work::Bytes(4 * (b * t * c) as u64 * F32);
        self.call("residual_layernorm_forward", format!("{b}x{t}x{c}"), work, move |k| {
            k.fused_residual_layernorm_forward(residual, out, mean, rstd, inp1, inp2, weight, bias, b, t, c)
        })
    }
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
    ) -> Result<()> {
        // dout and inp read, dinp read and written.
        let work = Work::Bytes(4 * (b * t * c) as u64 * F32);
        self.call("layernorm_backward", format!("{b}x{t}x{c}"), work, move |k| {
            k.layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, b, t, c)
        })
    }
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
    ) -> Result<()> {
        let work = Work::Flops(2 * (b * t * c * oc) as u64);
        self.call("matmul_forward", format!("{}x{c} -> {oc}", b * t), work, move |k| {
            k.matmul_forward(out, inp, weight, bias, b, t, c, oc)
        })
    }
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
    ) -> Result<()> {
        let work = Work::Flops(4 * (b * t * c * oc) as u64);
        self.call("matmul_backward", format!("{}x{c} -> {oc}", b * t), work, move |k| {
            k.matmul_backward(dinp, dweight, dbias, dout, inp, weight, b, t, c, oc)
        })
    }
    fn attention_forward(
        &mut self,
        out: Tensor,
        lse: Tensor,
        qkv: Tensor,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
    ) -> Result<()> {
        // Causal pairs only: S = Q Kᵀ and P V, HS multiply-adds each per (query, key) pair.
        let work = Work::Flops(2 * 2 * (b * t * (t + 1) / 2 * c) as u64);
        self.call("attention_forward", format!("{b}x{t}x{c} NH={nh}"), work, move |k| {
            k.attention_forward(out, lse, qkv, b, t, c, nh)
        })
    }
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
    ) -> Result<()> {
        // dP, dQ, dK, dV per causal pair (the recomputed S is not useful work).
        let work = Work::Flops(4 * 2 * (b * t * (t + 1) / 2 * c) as u64);
        self.call("attention_backward", format!("{b}x{t}x{c} NH={nh}"), work, move |k| {
            k.attention_backward(dqkv, dout, qkv, out, lse, b, t, c, nh)
        })
    }
    fn gelu_forward(&mut self, out: Tensor, inp: Tensor, n: usize) -> Result<()> {
        self.call("gelu_forward", n.to_string(), Work::Bytes(2 * n as u64 * F32), move |k| k.gelu_forward(out, inp, n))
    }
    fn gelu_backward(&mut self, dinp: Tensor, inp: Tensor, dout: Tensor, n: usize) -> Result<()> {
        self.call("gelu_backward", n.to_string(), Work::Bytes(4 * n as u64 * F32), move |k| {
            k.gelu_backward(dinp, inp, dout, n)
        })
    }
    fn residual_forward(&mut self, out: Tensor, inp1: Tensor, inp2: Tensor, n: usize) -> Result<()> {
        self.call("residual_forward", n.to_string(), Work::Bytes(3 * n as u64 * F32), move |k| {
            k.residual_forward(out, inp1, inp2, n)
        })
    }
    fn residual_backward(&mut self, dinp1: Tensor, dinp2: Tensor, dout: Tensor, n: usize) -> Result<()> {
        self.call("residual_backward", n.to_string(), Work::Bytes(5 * n as u64 * F32), move |k| {
            k.residual_backward(dinp1, dinp2, dout, n)
        })
    }
    fn fused_classifier(
        &mut self,
        logits: Tensor,
        losses: Tensor,
        b: usize,
        t: usize,
        v: usize,
        vp: usize,
        dloss: Option<f32>,
    ) -> Result<()> {
        let work = Work::Bytes(2 * (b * t * vp) as u64 * F32);
        self.call("fused_classifier", format!("{}x{vp}", b * t), work, move |k| {
            k.fused_classifier(logits, losses, b, t, v, vp, dloss)
        })
    }
    fn global_norm_squared(&mut self, grads: Tensor) -> Result<f64> {
        let start = Instant::now();
        let norm = self.inner.borrow_mut().global_norm_squared(grads);
        let in_step = start.elapsed();
        if self.recording.get() {
            let replay: Replay = Box::new(move |k: &mut CpuBackend| {
                k.global_norm_squared(grads).map(|norm| {
                    black_box(norm);
                })
            });
            let work = Work::Bytes(grads.len as u64 * F32);
            let shape = grads.len.to_string();
            self.calls.borrow_mut().push(Call { layer: "global_norm", shape, work, replay, in_step });
        }
        norm
    }
    fn adamw_update(&mut self, params: Tensor, grads: Tensor, m: Tensor, v: Tensor, hp: &AdamWStep) -> Result<()> {
        let hp = *hp;
        // params, m, v read and written; grads read.
        let work = Work::Bytes(7 * params.len as u64 * F32);
        self.call("adamw", params.len.to_string(), work, move |k| k.adamw_update(params, grads, m, v, &hp))
    }
}

/// The best GFLOP/s of a few large square sgemms through the matmul layer: what a matmul-bound step could reach.
fn gemm_ceiling() -> f64 {
    let mut best = 0.0f64;
    for m in [1024, 1536, 2048] {
        let (a, b) = (vec![0.5f32; m * m], vec![0.25f32; m * m]);
        let mut out = vec![0.0f32; m * m];
        for rep in 0..3 {
            let start = Instant::now();
            llmrs::cpu::matmul::matmul_forward(&mut out, &a, &b, None, 1, m, m, m);
            let gflops = (2 * m * m * m) as f64 / start.elapsed().as_secs_f64() / 1e9;
            if rep > 0 {
                best = best.max(gflops);
            }
        }
    }
    best
}

/// Times `f` under criterion as `group/name`; returns the mean seconds per call.
fn measure(c: &mut Criterion, group: &str, name: &str, target: Duration, mut f: impl FnMut()) -> f64 {
    let mut g = c.benchmark_group(group);
    g.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(target / 4).measurement_time(target);
    let mut timer = CallTimer::default();
    g.bench_function(BenchmarkId::from_parameter(name), |bencher| timer.iter(bencher, &mut f));
    g.finish();
    timer.mean_seconds().unwrap_or(0.0)
}

/// Benches one config and prints its table.
fn bench_config(c: &mut Criterion, name: &str, preset: &str, vocab: Option<usize>, b: usize, t: usize, ceiling: f64) {
    let mut config = GPT2Config::preset(preset).expect("preset exists");
    if let Some(v) = vocab {
        config.vocab_size = v;
        config.padded_vocab_size = padded_vocab(v);
    }
    let inner = Rc::new(RefCell::new(CpuBackend::new()));
    let calls = Rc::new(RefCell::new(Vec::new()));
    let recording = Rc::new(Cell::new(false));
    let recorder = Recorder { inner: inner.clone(), calls: calls.clone(), recording: recording.clone() };
    let params = GPT2::init_params(&config, MODEL_SEED).expect("preset is valid");
    let mut model = GPT2::with_backend(config, params, Box::new(recorder)).expect("the model fits in memory");
    let mut rng = Rng::new(TOKEN_SEED);
    let tokens: Vec<u32> = (0..b * t + 1).map(|_| rng.below(config.vocab_size) as u32).collect();
    let (inputs, targets) = (&tokens[..b * t], &tokens[1..]);
    let mut step = 0u32;
    let mut train_step = |model: &mut GPT2| {
        step += 1;
        model.zero_grad().expect("CPU step");
        let loss = model.forward_backward(inputs, targets, b, t).expect("CPU step");
        let norm = model.grad_norm().expect("CPU step");
        model.update(&ADAMW, 1e-4, clip_scale(norm, 1.0), step).expect("CPU step");
        loss
    };
    train_step(&mut model);
    train_step(&mut model);
    recording.set(true);
    for _ in 0..RECORDED_STEPS {
        train_step(&mut model);
    }
    recording.set(false);

    let gflop = config.flops_per_token(t) * (b * t) as f64 / 1e9;
    let step_s = measure(c, name, "step", Duration::from_secs(10), || {
        black_box(train_step(&mut model));
    });

    // Distinct calls in order of first appearance, with how many times a step makes each and their total time
    // inside the recorded steps.
    let calls = calls.borrow();
    let mut groups: Vec<(usize, usize, Duration)> = Vec::new(); // (first call index, count, time in the steps)
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, call) in calls.iter().enumerate() {
        let g = *index.entry((call.layer, call.shape.as_str())).or_insert_with(|| {
            groups.push((i, 0, Duration::ZERO));
            groups.len() - 1
        });
        groups[g].1 += 1;
        groups[g].2 += call.in_step;
    }
    let mut rows = Vec::new();
    for &(first, count, in_steps) in &groups {
        let call = &calls[first];
        let label = format!("{} {}", call.layer, call.shape);
        let s = measure(c, name, &label, Duration::from_secs(1), || {
            (call.replay)(&mut inner.borrow_mut()).expect("replayed call")
        });
        let in_step = in_steps.as_secs_f64() / RECORDED_STEPS as f64;
        rows.push((label, count / RECORDED_STEPS, s, call.work, in_step));
    }

    println!(
        "\n{name}: {:.2}M parameters, {gflop:.2} GFLOP per step, {} threads; GEMM ceiling {ceiling:.1} GFLOP/s",
        config.num_parameters() as f64 / 1e6,
        rayon::current_num_threads()
    );
    println!(
        "{:<44} {:>5} {:>10} {:>10} {:>7} {:>16} {:>10}",
        "layer and shape", "calls", "ms/call", "ms/step", "share", "rate", "in step"
    );
    let (mut layers_s, mut in_steps_s) = (0.0, 0.0);
    for (label, count, s, work, in_step) in &rows {
        let per_step = *count as f64 * s;
        layers_s += per_step;
        in_steps_s += in_step;
        let rate = match work {
            Work::Bytes(bytes) => format!("{:.1} GB/s", *bytes as f64 / s / 1e9),
            Work::Flops(flops) => format!("{:.1} GFLOP/s", *flops as f64 / s / 1e9),
        };
        println!(
            "{label:<44} {count:>5} {:>10.3} {:>10.1} {:>6.1}% {rate:>16} {:>10.1}",
            s * 1e3,
            per_step * 1e3,
            100.0 * per_step / step_s,
            in_step * 1e3
        );
    }
    println!(
        "{:<44} {:>5} {:>10} {:>10.1} {:>6.1}% {:>16} {:>10.1}",
        "(sum of the layers replayed alone; in step)",
        "",
        "",
        layers_s * 1e3,
        100.0 * layers_s / step_s,
        "",
        in_steps_s * 1e3
    );
    println!(
        "{:<44} {:>5} {:>10} {:>10.1} {:>6.1}% {:>16} = {:.0}% of the GEMM ceiling",
        "whole step",
        "",
        "",
        step_s * 1e3,
        100.0,
        format!("{:.1} GFLOP/s", gflop / step_s),
        100.0 * gflop / step_s / ceiling
    );
}

fn main() {
    // Positional arguments (criterion's filter) choose configs by substring, e.g. `-- bytes6`.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let ceiling = gemm_ceiling();
    let mut c = Criterion::default().configure_from_args();
    for &(name, preset, vocab, b, t) in CONFIGS {
        if filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())) {
            bench_config(&mut c, name, preset, vocab, b, t, ceiling);
        }
    }
    c.final_summary();
}
